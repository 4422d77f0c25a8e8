"""End to end on corpora of the kind users bring (tests/_corpus.py: ESC-50, UrbanSound8K and
folder layouts; 44.1 kHz stereo, 24-bit 48 kHz, 8 kHz WAV, FLAC, Ogg Vorbis, MP3; 5-s clips that
are mostly zero padding), named by relative paths and used from another working directory:
imported, checked, trained for one epoch, evaluated and scanned with top-k through the command line,
without a single error. Then the same with broken files and ``--skip-bad``: every bad clip is
reported once, with its reason, and evaluate says how many clips it scored out of how many.

References: the clip counts and file names we wrote, soundfile's own decoding of the files, and the
per-class counts of the confusion matrix against the manifests."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _corpus import CLASSES, FORMATS, cut_short, make_esc50, make_folder, make_urbansound8k, write_clip
from audioconv.cli import main as cli_main
from audioconv.io.manifest import read_manifest, write_manifest



def tiny(epochs: int = 1, workers: int = 0) -> list[str]:
    """Training options for a model that trains in a second or two."""
    return ["--epochs", str(epochs), "--batch-size", "4", "--workers", str(workers), "--channels", "4,8",
            "--n-mels", "32", "--augment", "none", "--no-specaugment", "--device", "cpu", "--no-progress", "--seed", "0"]


def _run(capsys, *args: str) -> dict | str:
    """``audioconv ARGS``; must exit 0 and print nothing on stderr but progress; returns its JSON (or text)."""
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        return out


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    make_esc50(root / "corpora" / "esc50", n_per_class=5, n_folds=5)
    make_urbansound8k(root / "corpora" / "us8k", n_per_class=3, n_folds=3)
    make_folder(root / "corpora" / "words", n_per_class=6)
    return root


def test_mixed_format_corpora_from_relative_paths_import_check_train_evaluate_and_topk(corpora, capsys, monkeypatch):
    monkeypatch.chdir(corpora)  # the corpora are named as a user in this folder would name them
    made = {
        "esc50": _run(capsys, "manifest", "esc50", "corpora/esc50", "-o", "manifests/esc50.jsonl", "--split-files", "-q"),
        "us8k": _run(capsys, "manifest", "urbansound8k", "corpora/us8k", "-o", "manifests/us8k.jsonl", "--split-files", "-q"),
        "words": _run(capsys, "manifest", "folder", "corpora/words", "-o", "manifests/words.jsonl", "--split-files",
                      "--exact", "--val", "0.25", "--test", "0.25", "-q"),
    }
    assert {k: v["n"] for k, v in made.items()} == {"esc50": 15, "us8k": 9, "words": 18}
    assert made["esc50"]["splits"] == {f"fold{k}": 3 for k in range(1, 6)}
    splits = made["words"]["splits"]  # 4 speakers (groups): 2 for train, 1 each for validation and test
    assert set(splits) == {"train", "validation", "test"} and sum(splits.values()) == 18 and min(splits.values()) >= 4

    work = corpora / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)  # from here on nothing is where the importers were run
    m = corpora / "manifests"
    for name in ("esc50", "us8k", "words"):
        report = _run(capsys, "manifest", "check", m / f"{name}.jsonl", "-q")
        assert report["ok"] and report["n_bad"] == 0 and report["warnings"] == []
        assert report["n_ok"] == made[name]["n"]
    formats = report["subtypes"]  # the folder corpus: every format of tests/_corpus.py
    assert set(formats) == {f[2] for f in FORMATS}
    # every MP3 decodes to exactly its header's length (a check that decodes as the loader does)
    mp3 = [r for r in read_manifest(m / "words.jsonl") if r["audio_filepath"].endswith(".mp3")]
    assert mp3 and all(len(sf.read(r["audio_filepath"])[0]) == sf.info(r["audio_filepath"]).frames for r in mp3)

    # training: one epoch of a tiny model on the folder corpus's own splits
    summary = _run(capsys, "train", "--manifest", m / "words.jsonl", "--out", work / "run", "--json", *tiny())
    assert summary["epochs"] == 1 and summary["labels"] == sorted(CLASSES)
    assert summary["data"] == {"train": {"clips": splits["train"], "skipped": {}},
                               "validation": {"clips": splits["validation"], "skipped": {}}}
    assert summary["final"]["val_clips"] == splits["validation"]
    # ... and on ESC-50 folds: train on folds 1-4, validate on fold 5 ...
    esc = read_manifest(m / "esc50.jsonl")
    write_manifest(work / "esc_train.jsonl", [r for r in esc if r["fold"] != 5])
    esc_run = _run(capsys, "train", "--train", work / "esc_train.jsonl", "--val", m / "esc50_fold5.jsonl",
                   "--out", work / "esc_run", "--json", *tiny())
    assert esc_run["data"]["train"]["clips"] == 12 and esc_run["final"]["val_clips"] == 3
    # ... and cross-validated over the five folds (one tiny model per held-out fold)
    cv = _run(capsys, "cv", "--manifest", m / "esc50.jsonl", "--out", work / "esc_cv", "--json", *tiny())
    assert [row["fold"] for row in cv["folds"]] == [f"fold{k}" for k in range(1, 6)]
    accuracies = [row["accuracy"] for row in cv["folds"]]
    assert cv["accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert cv["accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))

    # evaluation on the held-out split and on another corpus with the same classes (UrbanSound8K layout)
    for manifest, n in ((m / "words_test.jsonl", splits["test"]), (m / "us8k.jsonl", 9)):
        result = _run(capsys, "evaluate", "--checkpoint", work / "run" / "best.pt", "--manifest", manifest, "--json",
                      "--png", work / f"{Path(manifest).stem}.png", "--device", "cpu", "--no-progress")
        assert result["n"] == result["n_clips"] == n and result["skipped"] == {}
        truth = Counter(r["label"] for r in read_manifest(manifest))
        assert [sum(row) for row in result["confusion"]] == [truth[lab] for lab in result["labels"]]
        assert 0.0 <= result["accuracy"] <= 1.0 and np.isfinite(result["loss"])

    # top-k over the long, zero-padded clips of ESC-50
    _run(capsys, "topk", "--checkpoint", work / "esc_run" / "best.pt", "--manifest", m / "esc50.jsonl",
         "--layers", "conv1,conv2", "--units", "2", "--k", "3", "--device", "cpu", "--no-progress", "-o", work / "topk")
    index = json.loads((work / "topk" / "index.json").read_text())
    assert index["n_clips"] == 15 and index["skipped"] == {}
    assert set(index["layers"]) == {"conv1", "conv2"} and (work / "topk" / index["layers"]["conv2"]["png"]).is_file()


# ----------------------------------------------------------------------------- broken files and --skip-bad
@pytest.fixture()
def broken(tmp_path) -> dict:
    """Train / validation manifests over good clips of every format plus: a file deleted after the
    import (found when the dataset is built), a WAV with a NaN sample (found only when decoded), a
    WAV cut short (refused: truncated), and an MP3 and a FLAC cut short (good: what decodes is used)."""
    rng = np.random.default_rng(3)
    good = {s: [write_clip(tmp_path / "c" / f"{s}_{lab}_{i}", lab, FORMATS[(i + 2 * j) % len(FORMATS)], rng)
                for j, lab in enumerate(CLASSES) for i in range(3 if s == "train" else 2)] for s in ("train", "val")}
    nan = write_clip(tmp_path / "c" / "nan", "low", FORMATS[1], rng)
    data, sr = sf.read(nan, dtype="float32")
    data[1000] = np.nan
    sf.write(tmp_path / "c" / "nan.wav", data, sr, subtype="FLOAT")
    long_wav = write_clip(tmp_path / "c" / "whole", "mid", FORMATS[2], rng, clip_s=2.0)
    cut_wav = cut_short(long_wav, tmp_path / "c" / "cut.wav", keep=0.5)
    cut_mp3 = cut_short(write_clip(tmp_path / "c" / "whole_high", "high", FORMATS[5], rng, clip_s=2.0),
                        tmp_path / "c" / "cut.mp3", keep=0.7)
    cut_flac = cut_short(write_clip(tmp_path / "c" / "whole_low", "low", FORMATS[3], rng, clip_s=2.0),
                         tmp_path / "c" / "cut.flac", keep=0.7)
    train = [{"audio_filepath": str(p), "label": p.stem.split("_")[1]} for p in good["train"]]
    train += [{"audio_filepath": str(tmp_path / "c" / "deleted.wav"), "label": "low"},
              {"audio_filepath": str(nan), "label": "low"}, {"audio_filepath": str(cut_wav), "label": "mid"},
              {"audio_filepath": str(cut_mp3), "label": "high"}, {"audio_filepath": str(cut_flac), "label": "low"}]
    val = [{"audio_filepath": str(p), "label": p.stem.split("_")[1]} for p in good["val"]]
    val += [{"audio_filepath": str(nan), "label": "low"}]
    return {"train": write_manifest(tmp_path / "train.jsonl", train), "val": write_manifest(tmp_path / "val.jsonl", val),
            "root": tmp_path}


def test_check_finds_the_broken_files_and_accepts_the_cut_compressed_ones(broken, capsys):
    assert cli_main(["manifest", "check", str(broken["train"]), "-q"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad = {Path(b["audio_filepath"]).name: b["error"] for b in report["bad"]}
    assert set(bad) == {"deleted.wav", "nan.wav", "cut.wav"}
    assert bad["deleted.wav"].startswith("audio file not found") and "non-finite samples" in bad["nan.wav"]
    assert "truncated WAV file" in bad["cut.wav"] and "declares 16000 frames (32000 bytes)" in bad["cut.wav"]  # 2 s at 8 kHz
    warned = {Path(w["audio_filepath"]).name: w["error"] for w in report["warnings"]}
    assert set(warned) == {"cut.mp3", "cut.flac"} and all("the decoded length is used" in w for w in warned.values())
    assert report["n_ok"] == 9 + 2


def test_skip_bad_reports_every_bad_clip_once_in_train_evaluate_and_topk(broken, capsys):
    root = broken["root"]
    code = cli_main([str(a) for a in ("train", "--train", broken["train"], "--val", broken["val"], "--out",
                                      root / "run", "--skip-bad", "--json", *tiny(epochs=3))])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["epochs"] == 3
    train_skipped, val_skipped = summary["data"]["train"]["skipped"], summary["data"]["validation"]["skipped"]
    lines = {Path(k.rsplit(":", 1)[0]).name + ":" + k.rsplit(":", 1)[1]: v for k, v in train_skipped.items()}
    assert sorted(lines) == ["train.jsonl:10", "train.jsonl:11", "train.jsonl:12"]  # deleted, nan, cut.wav
    assert lines["train.jsonl:11"].endswith("nan.wav contains non-finite samples (NaN or inf)")
    assert summary["data"]["train"]["clips"] == 14 and summary["data"]["validation"]["clips"] == 7
    assert list(val_skipped.values()) == [train_skipped[f"{broken['train']}:11"]]
    assert summary["final"]["val_clips"] == 6  # validation scored 6 of its 7 clips, and says so
    # one warning for the clips the scan left out, one per clip found bad when read: not one per epoch
    # (the command line shows each library warning as one line "audioconv train: warning: ...")
    skip_warnings = [line for line in err.splitlines() if line.startswith("audioconv train: warning: ")
                     and "skipping" in line]
    assert len(skip_warnings) == 1 + 1 + 1, err  # train scan, train nan, validation nan

    result = _run(capsys, "evaluate", "--checkpoint", root / "run" / "best.pt", "--manifest", broken["val"],
                  "--skip-bad", "--json", "--png", root / "c.png", "--device", "cpu", "--no-progress")
    assert (result["n"], result["n_clips"]) == (6, 7) and list(result["skipped"]) == [f"{broken['val']}:7"]
    text = _run(capsys, "evaluate", "--checkpoint", root / "run" / "best.pt", "--manifest", broken["val"],
                "--skip-bad", "--png", root / "c.png", "--device", "cpu", "--no-progress")
    assert "n          6 of 7 clips" in text and "evaluate: skipped 1 of 7 clips that cannot be used" in text

    _run(capsys, "topk", "--checkpoint", root / "run" / "best.pt", "--manifest", broken["train"], "--layers", "conv2",
         "--units", "1", "--k", "2", "--skip-bad", "--device", "cpu", "--no-progress", "-o", root / "topk")
    index = json.loads((root / "topk" / "index.json").read_text())
    assert index["n_clips"] == 14 and sorted(index["skipped"]) == sorted(train_skipped)


def test_without_skip_bad_a_bad_clip_stops_training_with_one_line_from_a_worker(broken, capsys):
    args = ["train", "--train", str(broken["train"]), "--out", str(broken["root"] / "run"), *tiny(workers=1)]
    assert cli_main(args) == 2  # the clip fails in a DataLoader worker process, as with the default workers
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"audioconv train: error: {broken['train']}:1")
    assert any(f"{broken['train']}:{n}: " in err for n in (10, 11, 12)), err  # the manifest line, then the reason


def test_skip_bad_with_no_readable_clip_left_is_an_error_not_an_empty_run(broken, capsys):
    """Every clip of the training set, or of the validation set, unreadable (found only when
    decoded): one line and exit 2, not 0 steps, a loss of 0 and NaN metrics; evaluate the same."""
    root = broken["root"]
    nan = [r for r in read_manifest(broken["val"]) if "nan" in r["audio_filepath"]]
    (root / "c" / "nan2.wav").write_bytes(Path(nan[0]["audio_filepath"]).read_bytes())
    nan_only = write_manifest(root / "nan.jsonl", nan + [{"audio_filepath": str(root / "c" / "nan2.wav"),
                                                          "label": "mid"}])  # two classes
    for data, which in ((["--train", nan_only], "training"), (["--train", broken["train"], "--val", nan_only], "validation")):
        code = cli_main([str(a) for a in ("train", *data, "--out", root / which, "--skip-bad", *tiny(epochs=1))])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err[-1].startswith(f"audioconv train: error: no clip of the {which} set could be read")
        assert not (root / which / "best.pt").exists()
    ok = cli_main([str(a) for a in ("train", "--train", broken["train"], "--out", root / "run", "--skip-bad",
                                    *tiny(epochs=1))])
    assert ok == 0
    capsys.readouterr()
    code = cli_main([str(a) for a in ("evaluate", "--checkpoint", root / "run" / "best.pt", "--manifest", nan_only,
                                      "--skip-bad", "--json", "--no-png", "--device", "cpu", "--no-progress")])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.strip().splitlines()[-1] == (f"audioconv evaluate: error: no clip of {nan_only} could be scored: "
                                                    "all 2 selected were unreadable and skipped (see the warnings above)")
