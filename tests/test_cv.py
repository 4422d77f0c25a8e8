"""Fold corpora: `train --train-split/--val-split`, the hint that lists the splits, and `audioconv cv`
(one model per held-out fold; mean ± sample std of accuracy and macro-F1). The per-fold numbers are
checked against a clip-by-clip reference (soundfile + the fold's model + the textbook formulas) and
the summary against numpy."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from _tones import CLASSES, CLIP_S, SAMPLE_RATE, make_corpus
from audioconv.cli import main
from audioconv.training.batches import natural_key
from audioconv.training.checkpoint import load_model
from audioconv.training.config import TrainConfig
from audioconv.training.cv import cross_validate, fold_plan

SETTINGS = dict(sample_rate=SAMPLE_RATE, clip_s=CLIP_S, channels=(8, 16), n_mels=32, epochs=6, batch_size=4,
                augment="none", specaugment=False, workers=0, threads=1, seed=0)
FLAGS = ["--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
         "--batch-size", "8", "--augment", "none", "--no-specaugment", "--workers", "0", "--threads", "1",
         "--no-progress"]


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """A 3-fold corpus (8 clips per class and fold), manifest with split = fold1..fold3."""
    return make_corpus(tmp_path_factory.mktemp("folds"), per_class={"fold1": 8, "fold2": 8, "fold3": 8})["all"]


def reference_scores(checkpoint, manifest: Path, fold: str) -> tuple[float, float, int]:
    """Accuracy and macro-F1 of a checkpoint on one fold, clip by clip, by hand."""
    model, labels = load_model(checkpoint, "cpu")
    truth, pred = [], []
    for line in manifest.read_text().splitlines():
        rec = json.loads(line)
        if rec["split"] != fold:
            continue
        x, sr = sf.read(manifest.parent / rec["audio_filepath"], dtype="float32")
        assert sr == SAMPLE_RATE and len(x) == int(CLIP_S * SAMPLE_RATE)
        with torch.no_grad():
            pred.append(int(model(torch.from_numpy(x)[None, None]).argmax()))
        truth.append(labels.index(rec["label"]))
    truth, pred = np.array(truth), np.array(pred)
    f1 = []
    for c in range(len(labels)):
        tp, fp, fn = np.sum((pred == c) & (truth == c)), np.sum((pred == c) & (truth != c)), np.sum((pred != c) & (truth == c))
        if tp + fp + fn:
            f1.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(truth == pred)), float(np.mean(f1)), len(truth)


def test_cross_validation_scores_each_held_out_fold(folds, tmp_path):
    config = TrainConfig(manifest=str(folds), out=str(tmp_path / "cv"), **SETTINGS)
    notes = []
    result = cross_validate(config, progress=False, log=notes.append)
    assert [r["fold"] for r in result["folds"]] == ["fold1", "fold2", "fold3"]  # every fold* split by default
    for row in result["folds"]:
        # trained on the other folds only, without validation; its run folder says so
        saved = json.loads((Path(row["out"]) / "config.json").read_text())["train_config"]
        assert saved["train_split"] == [f for f in ("fold1", "fold2", "fold3") if f != row["fold"]]
        assert saved["val_split"] == [] and row["val_split"] is None
        assert row["best_epoch"] == 6  # no validation: the last epoch is scored
        acc, f1, n = reference_scores(row["checkpoint"], folds, row["fold"])
        assert row["n"] == n == 24
        assert row["accuracy"] == pytest.approx(acc) and row["macro_f1"] == pytest.approx(f1)
    accs = [r["accuracy"] for r in result["folds"]]
    f1s = [r["macro_f1"] for r in result["folds"]]
    assert result["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert result["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert result["macro_f1_mean"] == pytest.approx(np.mean(f1s))
    assert result["macro_f1_std"] == pytest.approx(np.std(f1s, ddof=1))
    pooled = np.array(result["pooled"]["confusion"])
    assert pooled.sum() == result["n"] == 72 and result["pooled"]["labels"] == sorted(CLASSES)
    assert result["pooled"]["accuracy"] == pytest.approx(sum(a * 24 for a in accs) / 72)
    assert result["accuracy_mean"] > 0.8  # the tiny CNN does learn the tones from two folds
    assert notes[0] == "fold 1/3: fold1 held out; training on fold2,fold3"


def test_fold_plans():
    assert fold_plan(["f1", "f2", "f3"], "next") == [
        {"fold": "f1", "val_split": "f2", "train_splits": ["f3"]},
        {"fold": "f2", "val_split": "f3", "train_splits": ["f1"]},
        {"fold": "f3", "val_split": "f1", "train_splits": ["f2"]}]
    with pytest.raises(ValueError, match="needs at least 3 folds"):
        fold_plan(["f1", "f2"], "next")
    with pytest.raises(ValueError, match="at least 2 folds"):
        fold_plan(["f1"])


def test_split_names_sort_by_the_value_of_every_number_in_them():
    names = ["us8k_fold10", "fold10a", "fold2", "us8k_fold2", "fold1", "fold01", "fold2a", "fold10"]
    assert sorted(names, key=natural_key) == ["fold01", "fold1", "fold2", "fold2a", "fold10", "fold10a",
                                              "us8k_fold2", "us8k_fold10"]


def test_cv_command(folds, tmp_path, capsys):
    out = tmp_path / "cv"
    args = ["cv", "--manifest", str(folds), "--folds", "fold1,fold2,fold3", "--validation", "next", "--epochs", "2",
            "--out", str(out), *FLAGS]
    assert main(args + ["--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["validation"] == "next" and [r["val_split"] for r in result["folds"]] == ["fold2", "fold3", "fold1"]
    assert json.loads((out / "cv.json").read_text()) == result
    saved = json.loads((out / "fold1" / "config.json").read_text())["train_config"]
    assert saved["train_split"] == ["fold3"] and saved["val_split"] == ["fold2"]
    assert "audioconv cv: fold 1/3: fold1 held out; training on fold3, validating on fold2" in captured.err
    # run again: the folds exist (an error says what to do); --resume only re-scores the finished runs
    assert main(args) == 2 and "already holds a training run" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    table = capsys.readouterr().out
    assert f"accuracy   {result['accuracy_mean']:.4f} ± {result['accuracy_std']:.4f}" in table
    assert json.loads((out / "cv.json").read_text())["folds"] == result["folds"]


def test_cv_bad_input(folds, tmp_path, capsys):
    assert main(["cv", "--manifest", str(folds), "--folds", "fold1,fold9", "--out", str(tmp_path), *FLAGS]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: folds (--folds): manifest" in last
    assert "has no split(s) ['fold9']; its fold splits: ['fold1', 'fold2', 'fold3']" in last
    assert main(["cv", "--manifest", str(folds), "--train-split", "fold1", "--out", str(tmp_path), *FLAGS]) == 2
    assert "--train-split is not an option of cv" in capsys.readouterr().err
    assert main(["cv", "--out", str(tmp_path), *FLAGS]) == 2
    assert "--manifest is required" in capsys.readouterr().err


def test_cv_warns_once_about_groups_in_more_than_one_fold(folds, tmp_path, capsys):
    """Groups (speakers, recordings) split across folds make every held-out score optimistic: cv says
    so once, with the same wording as train, and the folds' own runs do not repeat it."""
    rows = [json.loads(line) for line in folds.read_text().splitlines()]
    for i, r in enumerate(rows):  # fold1 and fold2 share rec0 and rec1; fold3 has its own groups
        r["audio_filepath"] = str(folds.parent / r["audio_filepath"])
        r["group"] = f"{'own' if r['split'] == 'fold3' else 'rec'}{i % 2}"
    grouped = tmp_path / "grouped.jsonl"
    grouped.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["cv", "--manifest", str(grouped), "--validation", "next", "--epochs", "1",
                 "--out", str(tmp_path / "cv"), *FLAGS]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "groups (speakers" in line]
    assert warned == ["audioconv cv: warning: 2 groups (speakers or source recordings) have clips in more than one "
                      "fold (1 of 3 pairs of folds share groups: fold1/fold2) (e.g. 'rec0'); held-out fold scores "
                      "will be optimistic — keep each group in one fold"]


def test_train_refuses_an_unknown_split_among_known_ones(folds, tmp_path, capsys):
    """A misspelt fold next to real ones used to drop out of the run without a word."""
    run = tmp_path / "x"
    assert main(["train", "--manifest", str(folds), "--train-split", "fold1,fold9", "--val-split", "fold3",
                 "--out", str(run), "--epochs", "1", *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"audioconv train: error: train_split (--train-split): manifest {folds} has no split 'fold9' "
                       f"(splits present: fold1, fold2, fold3)")
    assert main(["train", "--manifest", str(folds), "--train-split", "fold1", "--val-split", "fold3,fold7",
                 "--out", str(run), "--epochs", "1", *FLAGS]) == 2
    assert "val_split (--val-split): manifest" in capsys.readouterr().err and not (run / "last.pt").exists()


def test_train_on_chosen_splits_and_the_hint_for_fold_corpora(folds, tmp_path, capsys):
    # the default splits (train / validation) are not in a fold corpus: the error lists what is
    assert main(["train", "--manifest", str(folds), "--out", str(tmp_path / "a"), "--epochs", "1", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert (f"training set is empty: manifest {folds} has no clips in split 'train' (splits present: fold1 (24), "
            f"fold2 (24), fold3 (24)); cross-validate over the folds (audioconv cv --manifest {folds}) or choose the "
            f"splits, e.g. --train-split fold1,fold2 --val-split fold3") in err
    # several training splits, one validation split
    run = tmp_path / "b"
    assert main(["train", "--manifest", str(folds), "--train-split", "fold1,fold2", "--val-split", "fold3",
                 "--out", str(run), "--epochs", "1", "--json", *FLAGS]) == 0
    summary = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "config.json").read_text())["train_config"]
    assert saved["train_split"] == ["fold1", "fold2"] and saved["val_split"] == ["fold3"]
    assert summary["steps"] == 6  # 48 training clips in batches of 8
    assert summary["final"]["val_accuracy"] is not None
    # no validation at all
    assert main(["train", "--manifest", str(folds), "--train-split", "fold1", "--val-split", "none",
                 "--out", str(tmp_path / "c"), "--epochs", "1", "--json", *FLAGS]) == 0
    assert json.loads(capsys.readouterr().out)["final"]["val_accuracy"] is None
    with pytest.raises(ValueError, match=r"splits \['fold1'\] are in both train_split and val_split"):
        TrainConfig(manifest="m.jsonl", train_split="fold1,fold2", val_split="fold1").validate()
