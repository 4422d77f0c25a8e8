"""`audioconv project`, `topk` and `evolve` end to end on a tiny checkpoint."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.io import audio
from audioconv.training.checkpoint import save_checkpoint
from audioconv.cli import main
from audioconv.features import LogMel
from audioconv.interpret.projector import Projector
from audioconv.interpret.sonify import masked_audio

from _tiny_cnn import SR, tiny_cnn


@pytest.fixture()
def setup(tmp_path):
    m = tiny_cnn(0)
    ckpt = {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(), "labels": ["a", "b"],
            "epoch": 1, "train_config": {"clip_s": 0.5}}
    save_checkpoint(tmp_path / "run" / "best.pt", ckpt)
    save_checkpoint(tmp_path / "run" / "snapshots" / "epoch_001.pt", ckpt)
    save_checkpoint(tmp_path / "run" / "snapshots" / "epoch_002.pt", ckpt)
    t = np.arange(int(0.5 * SR)) / SR
    rng = np.random.default_rng(0)
    rows = []
    for i, f in enumerate((700.0, 1500.0, 2500.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) * (t > 0.2) + 0.01 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, m


def test_project_one_unit(setup, capsys):
    root, model = setup
    out = root / "out"
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone1.wav"),
               "--layer", "conv2", "--unit", "5", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    for name in ("projection.png", "masked.wav", "griffinlim.wav", "projection.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "projection.json").read_text())
    # the numbers agree with the library called directly
    wav, _ = audio.load(root / "tone1.wav")
    proj = Projector(model, device="cpu").project(wav[None], "conv2", [5], progress=False)
    assert info["activation"] == pytest.approx(float(proj.activations[0, 0]), rel=1e-5)
    assert info["position"] == proj.positions[0, 0].tolist()
    assert info["receptive_field"]["cells"] == proj.receptive_fields[0, 0].tolist()
    f0, f1, t0, t1 = info["receptive_field"]["cells"]
    lm = LogMel(model.frontend.config)
    assert info["receptive_field"]["hz"] == pytest.approx([lm.mel_hz()[f0], lm.mel_hz()[f1 - 1]])
    assert info["receptive_field"]["seconds"] == pytest.approx([t0 * 0.01, (t1 - 1) * 0.01])
    masked, sr = audio.load(out / "masked.wav")
    assert sr == SR and masked.shape == wav.shape
    expected = masked_audio(wav, proj.maps[0, 0], lm)
    np.testing.assert_allclose(masked.numpy(), expected.numpy(), atol=1e-4)  # 16-bit WAV rounding
    assert "conv2 unit 5" in capsys.readouterr().out


def test_project_several_units_and_positions(setup):
    root, _ = setup
    out = root / "multi"
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--layer", "conv1", "--unit", "0,2", "--position", "3,10", "--mode", "guided",
               "--device", "cpu", "-o", str(out)])
    assert rc == 0
    info = json.loads((out / "projection.json").read_text())
    assert [u["channel"] for u in info["units"]] == [0, 2]
    assert all(u["position"] == [3, 10] for u in info["units"])
    assert info["units"][0]["receptive_field"]["cells"] == [2, 5, 9, 12]  # one 3×3 conv around (3, 10)
    for unit in (0, 2):
        for name in ("projection.png", "masked.wav", "griffinlim.wav"):
            assert (out / f"unit_{unit}" / name).is_file()
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--layer", "conv2", "--unit", "1", "--position", "map", "--device", "cpu", "-o", str(root / "map")])
    assert rc == 0


@pytest.mark.parametrize("args, message", [
    (["--layer", "conv9", "--unit", "1"], "valid layers: conv1, conv2"),
    (["--layer", "conv2", "--unit", "8"], "valid units are 0..7"),
    (["--layer", "conv2", "--unit", "x"], "--unit must be"),
    (["--layer", "conv2", "--unit", "1", "--position", "1;2"], "--position must be"),
    (["--layer", "conv2", "--unit", "1", "--position", "99,0"], "outside the feature map"),
])
def test_project_errors(setup, capsys, args, message):
    root, _ = setup
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--device", "cpu", "-o", str(root / "bad"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err



@pytest.mark.parametrize("target", [["--layer", "conv2", "--unit", "1"], ["--target", "predicted"]])
def test_project_a_clip_shorter_than_half_an_fft_is_one_line_naming_it(setup, capsys, target):
    root, m = setup
    n = m.frontend.config.n_fft // 2
    sf.write(root / "click.wav", np.full(n, 0.3, np.float32), SR)
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "click.wav"),
               "--device", "cpu", "-o", str(root / "out"), *target])
    assert rc == 2
    assert f"click.wav is too short for the log-mel front end: {n} samples" in capsys.readouterr().err

def test_topk_and_evolve_commands(setup, capsys):
    root, _ = setup
    out = root / "topk"
    rc = main(["topk", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "m.jsonl"),
               "--layers", "conv1,conv2", "--k", "2", "--units", "3", "--device", "cpu", "--no-progress",
               "-o", str(out)])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert index["clip_s"] == 0.5 and index["n_clips"] == 3
    assert [u["channel"] for u in index["layers"]["conv2"]["units"]] == [0, 1, 2]
    assert (out / "topk_conv1.png").is_file() and (out / "topk_conv2.png").is_file()
    top = index["layers"]["conv2"]["units"][0]["top"]
    assert len(top) == 2 and top[0]["activation"] >= top[1]["activation"]
    rc = main(["evolve", str(root / "run"), "--probe", str(root / "m.jsonl"), "--units-per-layer", "2",
               "--cka", "linear", "--baseline", "2", "--device", "cpu", "--no-progress", "-o", str(root / "evo")])  # 3 clips
    assert rc == 0
    summary = json.loads((root / "evo" / "evolve.json").read_text())
    assert summary["epochs"] == [1, 2] and summary["layers"]["conv1"]["cka"] == pytest.approx([1.0, 1.0])
    base = summary["layers"]["conv1"]["baseline"]["linear"]
    assert summary["cka_estimator"] == "linear" and len(base) == 2 and all(0 < v < 1 for v in base)
    assert f"| {sum(base) / 2:5.3f}" in capsys.readouterr().out  # printed next to the curve


def _padded_tone(root, name="padded.wav"):
    """0.2 s of digital silence, a 0.3-s 1 kHz tone in noise, then 1 s of silence (an ESC-50-like clip)."""
    t = np.arange(int(0.3 * SR)) / SR
    x = np.zeros(int(1.5 * SR))
    noise = 0.05 * np.random.default_rng(7).standard_normal(t.size)
    x[int(0.2 * SR):int(0.2 * SR) + t.size] = 0.3 * np.sin(2 * np.pi * 1000 * t) + noise
    sf.write(root / name, x.astype(np.float32), SR)
    return root / name


def _allowed_max(model, wav, layer, unit):
    """Brute force: the strongest activation of the unit among positions whose receptive field (public
    ``receptive_field``) is centred on a frame whose loudest mel bin is more than 6 dB above the clip's floor."""
    from audioconv.interpret.receptive_field import receptive_field

    out = {}
    h = model.feature_module(layer).register_forward_hook(lambda m, a, o: out.setdefault("x", o))
    with torch.no_grad():
        logmel = model.frontend(wav[None])
        model.classify(logmel)
    h.remove()
    fmap = out["x"][0, unit].numpy()
    lm = logmel[0, 0].numpy()
    ok = lm.max(axis=0) > lm.min() + 6.0
    T = lm.shape[1]
    # conv2 column t reads frames [2t-3, 2t+5) (3x3 conv, 2x2 pool, 3x3 conv), clipped to the input
    box = [(max(2 * t - 3, 0), min(2 * t + 5, T)) for t in range(fmap.shape[1])]
    assert receptive_field(model, layer, 0, 5, input_size=lm.shape)[2:] == box[5]
    best = (-np.inf, None)
    for f in range(fmap.shape[0]):
        for t in range(fmap.shape[1]):
            if ok[(box[t][0] + box[t][1] - 1) // 2] and fmap[f, t] > best[0]:
                best = (float(fmap[f, t]), [f, t])
    return best


def test_project_max_on_a_padded_clip_lands_on_the_sound(setup, capsys):
    """The defect: on a clip that is mostly silence, 'max' picked a position over the silence and
    masked.wav was all zeros. Now it is the strongest position centred on a non-silent frame."""
    root, model = setup
    clip = _padded_tone(root)
    out = root / "pad"
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(clip),
               "--layer", "conv2", "--unit", "0", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    info = json.loads((out / "projection.json").read_text())
    wav, _ = audio.load(clip)
    activation, position = _allowed_max(model, wav, "conv2", 0)
    assert info["activation"] == pytest.approx(activation, rel=1e-5) and info["position"] == position
    assert 0.2 - 0.016 <= info["centre_s"] <= 0.5 + 0.016  # the tone (± half an FFT window)
    masked, _ = audio.load(out / "masked.wav")
    assert float(masked.abs().max()) > 1e-3  # not silence
    # --keep-silence restores the unrestricted maximum (over the silence, for this unit)
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(clip), "--keep-silence",
               "--layer", "conv2", "--unit", "0", "--device", "cpu", "-o", str(root / "keep")])
    assert rc == 0
    free = json.loads((root / "keep" / "projection.json").read_text())
    proj = Projector(model, device="cpu").project(wav[None], "conv2", [0], progress=False)
    assert free["activation"] == pytest.approx(float(proj.activations[0, 0]), rel=1e-5)
    assert free["activation"] > info["activation"] and free["centre_s"] < 0.1  # over the leading silence


def test_project_a_unit_that_never_fires_says_so_and_writes_no_sounds(setup, capsys):
    root, model = setup
    dead = tiny_cnn(0)
    with torch.no_grad():
        dead.features.bn2.bias[3] = -1e3  # conv2 unit 3 is 0 everywhere
    save_checkpoint(root / "dead.pt", {"kind": "model", "model": dead.state_dict(), "model_config": dead.config.to_dict(),
                                       "labels": ["a", "b"], "epoch": 1})
    out = root / "dead"
    rc = main(["project", "--checkpoint", str(root / "dead.pt"), "--audio", str(root / "tone1.wav"),
               "--layer", "conv2", "--unit", "3,5", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "conv2 unit 3: no activation above zero on the clip's non-silent frames" in printed
    assert not (out / "unit_3").exists() and (out / "unit_5" / "masked.wav").is_file()
    info = json.loads((out / "projection.json").read_text())
    assert info["units"][0]["files"] == {} and "no sounds" in info["units"][0]["note"]
    assert info["units"][0]["activation"] == 0.0


def test_project_max_on_a_silent_file_is_an_error(setup, capsys):
    root, _ = setup
    sf.write(root / "silence.wav", np.zeros(SR // 2, dtype=np.float32), SR)
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "silence.wav"),
               "--layer", "conv2", "--unit", "0", "--device", "cpu", "-o", str(root / "s")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "silence.wav: every frame is silent" in err and "--keep-silence" in err
    assert not (root / "s" / "masked.wav").exists()


def test_topk_command_on_an_esc50_like_corpus_gives_one_hit_per_clip_on_the_sound(setup, capsys):
    """5-s clips that are mostly zeros and 1-s clips the loader pads to 5 s, in mixed formats: every
    hit comes from its own clip and its receptive field is centred where the file has sound."""
    from _corpus import CLASSES, FORMATS, write_clip

    root, _ = setup
    rng = np.random.default_rng(0)
    rows = []
    for i in range(9):
        long = i % 3 != 0
        path = write_clip(root / "esc" / f"clip{i}", CLASSES[i % 3], FORMATS[i % 4], rng, clip_s=5.0 if long else 1.0,
                          event_s=0.6 if long else None)
        rows.append({"audio_filepath": str(path), "label": "ab"[i % 2]})
    (root / "esc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = root / "esc_topk"
    rc = main(["topk", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "esc.jsonl"),
               "--layers", "conv1,conv2", "--k", "4", "--clip-s", "5", "--device", "cpu", "--no-progress",
               "-o", str(out)])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    for layer in ("conv1", "conv2"):
        for unit in index["layers"][layer]["units"]:
            clips = [hit["clip_id"] for hit in unit["top"]]
            assert len(set(clips)) == len(clips) == unit["n_hits"]
            for hit in unit["top"]:
                wav, sr = audio.load(hit["clip_id"])
                centre_s = sum(hit["seconds_range"]) / 2
                a, b = int((centre_s - 0.02) * sr), int((centre_s + 0.02) * sr)
                assert b > 0 and a < wav.shape[-1] and float(wav[:, max(a, 0):b].abs().max()) > 0.01, hit


def test_topk_command_reports_units_without_hits_and_silent_clips(setup, capsys):
    root, _ = setup
    dead = tiny_cnn(0)
    with torch.no_grad():
        dead.features.bn1.bias[2] = -1e3  # conv1 unit 2 is 0 everywhere
    save_checkpoint(root / "dead.pt", {"kind": "model", "model": dead.state_dict(), "model_config": dead.config.to_dict(),
                                       "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}})
    sf.write(root / "silence.wav", np.zeros(SR // 2, dtype=np.float32), SR)
    with open(root / "m.jsonl", "a") as f:
        f.write(json.dumps({"audio_filepath": "silence.wav", "label": "a"}) + "\n")
    rc = main(["topk", "--checkpoint", str(root / "dead.pt"), "--manifest", str(root / "m.jsonl"), "--layers", "conv1",
               "--k", "3", "--device", "cpu", "--no-progress", "-o", str(root / "dead_topk")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "conv1: no activation above zero on the real, non-silent frames of any clip: unit(s) 2" in printed
    assert "conv1: 1 of 4 clips have no non-silent frames and were left out" in printed
    unit = json.loads((root / "dead_topk" / "index.json").read_text())["layers"]["conv1"]["units"][2]
    assert unit == {"channel": 2, "n_hits": 0, "top": []}
    rc = main(["topk", "--checkpoint", str(root / "dead.pt"), "--manifest", str(root / "m.jsonl"), "--layers", "conv1",
               "--max-per-clip", "-1", "--device", "cpu", "-o", str(root / "x")])
    assert rc == 2 and "--max-per-clip must be >= 1, or 0 for no limit; got -1" in capsys.readouterr().err
