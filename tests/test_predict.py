"""`predict`: sliding windows over files of any format, rate, channel count and length, checked
against the model's own forward on windows cut here by hand from an independent decode."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from audioconv.cli import main
from audioconv.training.checkpoint import save_checkpoint
from audioconv.training.predict import predict_file, predict_files, window_starts

from _corpus import FORMATS, write_clip
from _tiny_cnn import SR, tiny_cnn


@pytest.fixture()
def checkpoint(tmp_path):
    m = tiny_cnn(1)
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(path, {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(),
                           "labels": ["dog", "rain"], "epoch": 1, "train_config": {"clip_s": 0.5}})
    return path, m


def _reference(model, path, starts, window):
    """Decode with soundfile, average the channels, resample with torchaudio, cut the windows by hand,
    zero-pad a short signal, run the model's forward, softmax."""
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = AF.resample(torch.from_numpy(data.mean(axis=1)), rate, SR)
    mono = torch.nn.functional.pad(mono, (0, max(0, window - mono.numel())))
    wins = torch.stack([mono[s:s + window] for s in starts])[:, None]
    with torch.no_grad():
        return torch.softmax(model(wins).double(), dim=-1).numpy(), mono


def test_windows_and_scores_match_the_models_own_forward(tmp_path, checkpoint):
    ckpt, model = checkpoint
    rate, seconds = 44100, 2.3
    t = np.arange(int(seconds * rate)) / rate
    left = np.where(t >= 0.8, 0.3 * np.sin(2 * np.pi * 600 * t), 0.0)  # 0.8 s of digital silence first
    right = np.where(t >= 0.8, 0.2 * np.sin(2 * np.pi * 1500 * t), 0.0)
    path = tmp_path / "long.flac"
    sf.write(path, np.stack([left, right], 1).astype(np.float32), rate)
    pred = predict_file(model, ["dog", "rain"], path, window_s=0.5, hop_s=0.25)
    starts = [0, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 14400]  # 18400 samples at 8 kHz: a last window at the end
    np.testing.assert_array_equal(pred.starts_s * SR, starts)
    expected, _ = _reference(model, path, starts, 4000)
    np.testing.assert_allclose(pred.window_probs, expected, atol=1e-6)
    # windows that hold only the leading silence (0-0.5 s, 0.25-0.75 s) do not vote
    np.testing.assert_array_equal(pred.silent, [True, True] + [False] * 7)
    np.testing.assert_allclose(pred.probs, expected[2:].mean(axis=0), atol=1e-6)
    assert (pred.sample_rate, pred.channels, pred.duration_s) == (rate, 2, pytest.approx(2.3))
    assert pred.top(1)[0] == (["dog", "rain"][int(np.argmax(pred.probs))], pytest.approx(pred.probs.max()))


def test_a_short_file_is_one_zero_padded_window(tmp_path, checkpoint):
    ckpt, model = checkpoint
    x = 0.3 * np.sin(2 * np.pi * 900 * np.arange(1600) / SR)
    sf.write(tmp_path / "short.wav", x.astype(np.float32), SR)
    (pred,) = predict_files(ckpt, [tmp_path / "short.wav"], device="cpu", progress=False)
    expected, mono = _reference(model, tmp_path / "short.wav", [0], 4000)
    assert mono.numel() == 4000 and pred.window_s == 0.5 and pred.hop_s == 0.25  # the run's clip_s
    np.testing.assert_allclose(pred.window_probs, expected, atol=1e-6)
    np.testing.assert_allclose(pred.probs, expected[0], atol=1e-6)


def test_a_short_file_shows_its_own_extent_not_the_window(tmp_path, checkpoint, capsys):
    """A 0.2-s file in a 0.5-s window: the window covers 0.00-0.20 s of the file (the rest is padding)."""
    ckpt, _ = checkpoint
    sf.write(tmp_path / "short.wav", (0.3 * np.sin(2 * np.pi * 900 * np.arange(1600) / SR)).astype(np.float32), SR)
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "short.wav"), "--windows", "--device", "cpu",
                 "--no-progress"]) == 0
    assert "     0.00-0.20 s: " in capsys.readouterr().out
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "short.wav"), "--json", "--device", "cpu",
                 "--no-progress"]) == 0
    (window,) = json.loads(capsys.readouterr().out)["files"][0]["windows"]
    assert (window["start_s"], window["end_s"]) == (0.0, 1600 / SR)


def test_window_starts():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(3, 4, 2) == [0]
    with pytest.raises(ValueError, match="window and hop"):
        window_starts(10, 4, 0)


def test_predict_command_on_every_format(tmp_path, checkpoint, capsys):
    ckpt, model = checkpoint
    rng = np.random.default_rng(0)
    files = [write_clip(tmp_path / f"clip{i}", "mid", fmt, rng, clip_s=1.3) for i, fmt in enumerate(FORMATS)]
    rc = main(["predict", "--checkpoint", str(ckpt), *map(str, files), "--json", "--top-k", "1", "--device", "cpu",
               "--no-progress"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["labels"] == ["dog", "rain"] and "mean of the window probabilities" in out["aggregation"]
    for f, entry in zip(files, out["files"]):
        assert entry["file"] == str(f) and entry["n_windows"] == 5 == len(entry["windows"])  # 1.3 s: 0, .25, .5, .75, .8
        assert len(entry["top"]) == 1 and 0 <= entry["top"][0]["probability"] <= 1
        expected, _ = _reference(model, f, [int(w["start_s"] * SR) for w in entry["windows"]], 4000)
        best = expected.mean(axis=0).max()
        assert entry["top"][0]["probability"] == pytest.approx(best, abs=1e-5)
    rc = main(["predict", "--checkpoint", str(ckpt), str(files[0]), "--windows", "--device", "cpu", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and text.startswith(f"{files[0]}: ") and "5 window(s) of 0.5 s every 0.25 s" in text
    assert text.count(" s: ") == 5


@pytest.mark.parametrize("args, message", [
    (["missing.wav"], "audio file not found: missing.wav"),
    (["notaudio.wav"], "cannot decode audio file notaudio.wav"),
    (["ok.wav", "--top-k", "0"], "--top-k must be >= 1"),
    (["ok.wav", "--hop-s", "0"], "hop_s must be > 0 seconds"),
    (["ok.wav", "--window-s", "0.00001"], "less than one sample"),
    (["ok.wav", "--window-s", "0.01"], "a window of window_s=0.01 s is too short for the log-mel front end: 80 "
                                       "samples (10.0 ms at 8000 Hz)"),
])
def test_predict_errors(tmp_path, checkpoint, capsys, monkeypatch, args, message):
    ckpt, _ = checkpoint
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notaudio.wav").write_text("hello")
    sf.write(tmp_path / "ok.wav", np.zeros(800, dtype=np.float32), SR)
    rc = main(["predict", "--checkpoint", str(ckpt), "--device", "cpu", "--no-progress", *args])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("audioconv predict: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_text_file_given_as_checkpoint_is_said_to_be_no_checkpoint(tmp_path, capsys):
    """A manifest (JSON lines) or notes passed as --checkpoint is text, not 'pickled Python objects'."""
    from audioconv.training.checkpoint import load_checkpoint

    sf.write(tmp_path / "a.wav", np.zeros(800, np.float32), SR)
    manifest = tmp_path / "sc.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav", "label": "yes", "split": "train"}\n' * 3)
    assert main(["predict", "--checkpoint", str(manifest), str(tmp_path / "a.wav"), "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"audioconv predict: error: {manifest} is not a checkpoint: it is a text file (JSON / JSON lines); give a .pt "
        f"file a training run wrote (RUN/best.pt, RUN/last.pt)")
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on fold1–fold4, lr 3e-3\n")  # UTF-8 text with a non-ASCII dash
    with pytest.raises(ValueError, match=r"notes\.txt is not a checkpoint: it is a text file \(plain text\)"):
        load_checkpoint(notes)


def test_a_file_with_every_window_silent_says_each_one_counted(tmp_path, checkpoint, capsys):
    """Digital silence: no window is louder than another, so the file score is the mean over all
    of them; the text says so instead of marking the only windows "not counted"."""
    ckpt, model = checkpoint
    sf.write(tmp_path / "zeros.wav", np.zeros(int(0.75 * SR), dtype=np.float32), SR)  # windows at 0 and 0.25 s
    assert main(["predict", "--checkpoint", str(ckpt), str(tmp_path / "zeros.wav"), "--windows", "--device", "cpu",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 window(s) of 0.5 s every 0.25 s, 2 silent (all: each one counted)" in text
    assert text.count("  (silent)\n") == 2 and "not counted" not in text
    (pred,) = predict_files(ckpt, [tmp_path / "zeros.wav"], device="cpu", progress=False)
    np.testing.assert_allclose(pred.probs, pred.window_probs.mean(axis=0))
