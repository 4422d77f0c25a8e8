"""`evaluate`: its numbers equal a clip-by-clip reference (soundfile + the model + textbook formulas);
unknown labels raise or are counted; the confusion PNG and the command line work."""
import json
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from _tones import CLIP_S, SAMPLE_RATE, make_corpus, tone, write_manifest
from audioconv.training.checkpoint import load_model
from audioconv.app.figures import save_figure
from audioconv.plots.confusion import plot_confusion
from audioconv.training.config import TrainConfig
from audioconv.training.evaluate import evaluate
from audioconv.training.loop import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    corpus = make_corpus(root / "tones")
    # 2 short epochs: a model that is right on most but (usually) not all clips
    cfg = TrainConfig(train=str(corpus["train"]), val=str(corpus["val"]), out=str(root / "run"), sample_rate=SAMPLE_RATE,
                      clip_s=CLIP_S, channels=(8, 16), n_mels=32, epochs=2, batch_size=8, augment="none",
                      specaugment=False, workers=0, threads=1)
    fit(cfg, progress=False)
    return corpus, root / "run" / "best.pt"


def reference(checkpoint, manifest):
    """Clip by clip: read with soundfile, pad/crop to the centre, run the model, score by hand."""
    model, labels = load_model(checkpoint, "cpu")
    n_samples = int(round(CLIP_S * SAMPLE_RATE))
    truth, pred, losses = [], [], []
    for line in Path(manifest).read_text().splitlines():
        rec = json.loads(line)
        x, sr = sf.read(Path(manifest).parent / rec["audio_filepath"], dtype="float32")
        assert sr == SAMPLE_RATE
        if len(x) >= n_samples:
            start = (len(x) - n_samples) // 2
            x = x[start:start + n_samples]
        else:
            x = np.pad(x, (0, n_samples - len(x)))
        with torch.no_grad():
            logits = model(torch.from_numpy(x)[None, None])
        y = labels.index(rec["label"])
        truth.append(y)
        pred.append(int(logits.argmax()))
        losses.append(float(F.cross_entropy(logits, torch.tensor([y]))))
    k = len(labels)
    confusion = [[sum(1 for t, p in zip(truth, pred) if t == i and p == j) for j in range(k)] for i in range(k)]
    f1 = []
    for c in range(k):
        tp = confusion[c][c]
        fn = sum(confusion[c]) - tp
        fp = sum(confusion[i][c] for i in range(k)) - tp
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    recall = {lab: confusion[i][i] / sum(confusion[i]) for i, lab in enumerate(labels) if sum(confusion[i])}
    return {"truth": truth, "pred": pred,
            "accuracy": sum(t == p for t, p in zip(truth, pred)) / len(truth), "macro_f1": sum(f1) / len(f1),
            "n": len(truth), "confusion": confusion, "per_class_recall": recall, "loss": float(np.mean(losses))}


def test_numbers_match_a_clip_by_clip_reference(trained):
    corpus, ckpt = trained
    result = evaluate(ckpt, corpus["test"], device="cpu", batch_size=5, progress=False)
    ref = reference(ckpt, corpus["test"])
    assert result["confusion"] == ref["confusion"]
    assert result["n"] == ref["n"] == 24 and result["unknown"] == 0
    assert result["accuracy"] == pytest.approx(ref["accuracy"])
    assert result["macro_f1"] == pytest.approx(ref["macro_f1"])
    assert result["per_class_recall"] == pytest.approx(ref["per_class_recall"])
    assert result["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert result["labels"] == ["beeps", "chirp", "steady"]
    json.dumps(result)  # JSON-ready
    # the same clips picked from a manifest with splits
    by_split = evaluate(ckpt, corpus["all"], device="cpu", progress=False, split="test")
    assert by_split["confusion"] == result["confusion"]


def test_unknown_labels(trained, tmp_path):
    corpus, ckpt = trained
    records = [json.loads(s) for s in corpus["test"].read_text().splitlines()]
    rng = np.random.default_rng(0)
    for i in range(3):
        path = tmp_path / f"whistle_{i}.wav"
        sf.write(path, tone("steady", rng), SAMPLE_RATE)
        records.append({"audio_filepath": str(path), "label": "whistle"})
    manifest = write_manifest(corpus["test"].parent / "with_unknown.jsonl", records)
    with pytest.raises(ValueError, match=r"with_unknown.jsonl:25: label 'whistle' is not in the label map"):
        evaluate(ckpt, manifest, device="cpu", progress=False)
    result = evaluate(ckpt, manifest, device="cpu", progress=False, allow_unknown=True)
    assert result["unknown"] == 3 and result["unknown_labels"] == {"whistle": 3}
    assert result["n"] == 24 and result["confusion"] == reference(ckpt, corpus["test"])["confusion"]


def test_accuracy_by_a_manifest_key_matches_the_clip_by_clip_reference(trained, tmp_path, capsys):
    corpus, ckpt = trained
    records = [json.loads(s) for s in corpus["test"].read_text().splitlines()]
    for i, r in enumerate(records):
        if i % 7:  # every seventh clip has no speaker
            r["speaker"] = f"spk{i % 4}"
        r["audio_filepath"] = str(corpus["test"].parent / r["audio_filepath"])
    manifest = write_manifest(tmp_path / "speakers.jsonl", records)
    ref = reference(ckpt, corpus["test"])
    expected = {}
    for i, (t, p) in enumerate(zip(ref["truth"], ref["pred"])):
        expected.setdefault(f"spk{i % 4}" if i % 7 else "(none)", []).append(t == p)
    result = evaluate(ckpt, manifest, device="cpu", progress=False, by="speaker")
    got = {g["value"]: (g["n"], g["accuracy"]) for g in result["by"]["groups"]}
    assert got == {v: (len(h), pytest.approx(sum(h) / len(h))) for v, h in expected.items()}
    accuracies = [g["accuracy"] for g in result["by"]["groups"]]
    assert result["by"]["key"] == "speaker" and accuracies == sorted(accuracies)
    # a clip that cannot be read, left out by skip_bad: the groups count only the clips scored
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    broken = write_manifest(tmp_path / "broken.jsonl",
                            records + [{**records[1], "audio_filepath": str(tmp_path / "broken.wav")}])
    with pytest.warns(Warning):
        skipping = evaluate(ckpt, broken, device="cpu", progress=False, by="speaker", skip_bad=True)
    assert len(skipping["skipped"]) == 1 and skipping["by"] == result["by"]
    with pytest.raises(ValueError, match=r"by 'fold': no clip of .*speakers.jsonl has that key; its keys: "
                                         r"audio_filepath, .*speaker"):
        evaluate(ckpt, manifest, device="cpu", progress=False, by="fold")
    from audioconv.cli import main
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(manifest), "--by", "speaker", "--no-png",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "accuracy by speaker (worst first)" in out and "(none)" in out
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(manifest), "--by", "fold", "--no-png",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no clip of" in err[0] and "'fold'" in err[0]


def test_a_key_no_clip_has_is_refused_before_any_clip_is_scored(trained, monkeypatch):
    """``by`` is checked against the manifest first: a misspelt key costs no pass over the data."""
    from audioconv.training import evaluate as evaluate_module

    corpus, ckpt = trained

    def no_scoring(*args, **kwargs):
        raise AssertionError("clips were scored before the key was checked")

    monkeypatch.setattr(evaluate_module, "run_validation", no_scoring)
    with pytest.raises(ValueError, match=r"^by 'speakr': no clip of .* has that key; its keys: audio_filepath"):
        evaluate(ckpt, corpus["test"], device="cpu", progress=False, by="speakr")


def test_confusion_png(tmp_path):
    result = {"confusion": [[5, 1, 0], [0, 6, 0], [2, 0, 4]], "labels": ["a", "b", "c"], "accuracy": 15 / 18,
              "macro_f1": 0.83, "n": 18}
    path = save_figure(plot_confusion(result), tmp_path / "sub" / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    with pytest.raises(ValueError, match="3 labels"):
        plot_confusion({**result, "confusion": [[1, 0], [0, 1]]})


def test_command_line(trained, tmp_path, capsys):
    corpus, ckpt = trained
    cmd = [sys.executable, "-m", "audioconv", "evaluate", "--checkpoint", str(ckpt), "--manifest", str(corpus["test"]),
           "--no-progress"]
    r = subprocess.run(cmd + ["--json"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["n"] == 24 and result["confusion"] == reference(ckpt, corpus["test"])["confusion"]
    assert Path(result["png"]) == ckpt.parent / "best_confusion_test.png" and Path(result["png"]).is_file()
    # in-process: a readable table and a chosen PNG path; a missing checkpoint is a one-line error
    from audioconv.cli import main
    png = tmp_path / "mine.png"
    assert main(cmd[3:] + ["--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "chirp" in out and png.is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "nope.pt"), "--manifest", str(corpus["test"])]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_a_negative_worker_count_is_refused_naming_the_option(trained):
    """Not torch's DataLoader text (``num_workers option should be non-negative``)."""
    corpus, ckpt = trained
    with pytest.raises(ValueError, match=r"^workers must be >= 0 DataLoader processes \(0: decode in this one\), "
                                         r"got -5$"):
        evaluate(ckpt, corpus["test"], device="cpu", progress=False, workers=-5)


def test_clips_longer_than_the_run_clip_are_counted_and_said_to_be_scored_on_their_centre(trained, tmp_path,
                                                                                          capsys):
    """A 3-s clip with the sound at its start scores on its central 0.5 s (the run's clip): the result
    counts such clips by their headers (``duration`` shortens one: it counts by what it selects), and
    the text says so instead of a silent 0 %."""
    import soundfile as sf

    from audioconv.cli import main

    corpus, ckpt = trained
    x = np.zeros(3 * SAMPLE_RATE, np.float32)
    x[:int(CLIP_S * SAMPLE_RATE)] = tone("steady", np.random.default_rng(0))
    sf.write(tmp_path / "long.wav", x, SAMPLE_RATE)
    m = write_manifest(tmp_path / "m.jsonl", [{"audio_filepath": str(tmp_path / "long.wav"), "label": "steady"},
                                              {"audio_filepath": str(tmp_path / "long.wav"), "label": "steady",
                                               "offset": 1.0, "duration": 0.5}])
    result = evaluate(ckpt, m, device="cpu", progress=False)
    assert (result["n"], result["n_longer"], result["clip_s"]) == (2, 1, CLIP_S)
    assert main(["evaluate", "--checkpoint", str(ckpt), "--manifest", str(m), "--no-png", "--no-progress",
                 "--device", "cpu"]) == 0
    assert ("longer     1 clips last longer than the run's 0.5 s: each was scored on its central 0.5 s "
            "(`audioconv predict` scores every window)") in capsys.readouterr().out
    assert evaluate(ckpt, corpus["test"], device="cpu", progress=False)["n_longer"] == 0
