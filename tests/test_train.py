"""Trainer: learns a tiny tone corpus, writes the run folder, resumes bit-exactly after SIGKILL,
and fails clearly on bad input. Tiny model (channels 8,16), 8 kHz, 0.5 s clips."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from _tones import CLASSES, CLIP_S, SAMPLE_RATE, make_corpus, write_manifest
from audioconv.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from audioconv.data.dataset import ManifestDataset
from audioconv.training.config import TrainConfig, lr_at, snapshot_epochs
from audioconv.training import loop
from audioconv.training.loop import (NonFiniteBatchError, NonFiniteLossError, TrainingWarning, build_augment, fit,
                                     save, setup, train_step)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("tones"))


def tiny(corpus, out, **kw) -> TrainConfig:
    base = dict(train=str(corpus["train"]), val=str(corpus["val"]), out=str(out), sample_rate=SAMPLE_RATE,
                clip_s=CLIP_S, channels=(8, 16), n_mels=32, epochs=6, batch_size=4, lr=3e-3, augment="none",
                specaugment=False, workers=0, threads=1, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------ learning + files
def test_learns_and_writes_the_run_folder(corpus, tmp_path):
    run = tmp_path / "run"
    summary = fit(tiny(corpus, run, specaugment=True, freq_mask_bins=3, time_mask_frames=3, freq_warp=0.1),
                  progress=False)
    lines = read_metrics(run)
    assert [m["epoch"] for m in lines] == list(range(1, 7))
    keys = {"epoch", "step", "train_loss", "train_acc", "val_loss", "val_accuracy", "val_macro_f1", "lr",
            "clips_per_s", "time_s"}
    assert all(keys <= set(m) for m in lines)
    assert lines[-1]["step"] == summary["steps"] == 6 * (3 * 24 // 4)
    assert lines[-1]["val_accuracy"] > 0.9 and summary["final"] == lines[-1]

    assert json.loads((run / "labels.json").read_text())["labels"] == sorted(CLASSES)
    saved = json.loads((run / "config.json").read_text())
    assert TrainConfig.from_dict(saved["train_config"]) == tiny(corpus, run, specaugment=True, freq_mask_bins=3,
                                                                time_mask_frames=3, freq_warp=0.1)
    assert saved["specaugment"]["freq_warp"] == 0.1
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "epoch_001.pt", "epoch_002.pt", "epoch_005.pt", "epoch_006.pt"]
    for name in ("last.pt", "best.pt", "snapshots/epoch_002.pt"):  # plain tensors/primitives only
        assert isinstance(torch.load(run / name, weights_only=True), dict)

    # best.pt is the epoch with the highest val macro-F1 (ties: the lowest val loss) ...
    best = load_checkpoint(run / "best.pt")
    ranked = max(lines, key=lambda m: (m["val_macro_f1"], -m["val_loss"]))
    assert best["epoch"] == ranked["epoch"] == summary["best_epoch"]
    # ... and its recorded val accuracy is what the model really scores, clip by clip
    model, labels = load_model(run / "best.pt", "cpu")
    assert not model.training and labels == sorted(CLASSES)
    ds = ManifestDataset(corpus["val"], SAMPLE_RATE, CLIP_S, labels=labels, crop="center")
    with torch.no_grad():
        hits = sum(int(model(x[None]).argmax()) == y for x, y, _ in ds)
    assert hits / len(ds) == pytest.approx(best["metrics"]["val_accuracy"])
    # last.pt holds the final weights
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 6 and last["step"] == summary["steps"]
    assert {"optimizer", "scheduler", "scaler", "rng", "progress"} <= set(last)


def test_manifest_with_splits_and_default_augmentation(corpus, tmp_path):
    summary = fit(tiny(corpus, tmp_path / "run", train=None, val=None, manifest=str(corpus["all"]),
                       augment="default", specaugment=True, epochs=1), progress=False)
    assert summary["epochs"] == 1 and summary["final"]["val_accuracy"] is not None
    assert summary["final"]["train_loss"] > 0 and math.isfinite(summary["final"]["train_loss"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["augment"] is not None  # the chain's own config is recorded


def test_schedule_and_snapshot_epochs():
    # "onecycle" is torch's OneCycleLR; check it against torch itself
    cfg = TrainConfig(train="x", lr=2e-3, warmup_frac=0.2, min_lr_frac=0.01)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=50, pct_start=0.2, anneal_strategy="cos",
                                                div_factor=25, final_div_factor=1 / (25 * 0.01), cycle_momentum=False)
    for step in range(50):
        assert lr_at(step, 50, cfg) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        if step < 49:
            sched.step()
    cos = TrainConfig(train="x", lr=1.0, schedule="cosine", warmup_frac=0.1, min_lr_frac=0.0)
    assert lr_at(0, 100, cos) == pytest.approx(0.1) and lr_at(9, 100, cos) == pytest.approx(1.0)
    assert lr_at(10 + 89 // 2, 100, cos) == pytest.approx(0.5 * (1 + math.cos(math.pi * 44 / 89)))
    assert lr_at(99, 100, cos) == pytest.approx(0.0, abs=1e-12)
    assert snapshot_epochs(300) == [1, 2, 5, 10, 20, 30, 40, 64, 128, 256, 300]
    assert snapshot_epochs(3) == [1, 2, 3]


# ------------------------------------------------------------------------------ resume after SIGKILL
EXTRAS = {"ema": ("--ema", "0.9"), "mixup": ("--mixup", "0.4"), "early_stopping": ("--early-stopping", "2")}


@pytest.mark.parametrize("extras", [{}, {"ema": 0.9, "mixup": 0.4, "early_stopping": 2}], ids=["plain", "ema-mixup-stop"])
def test_resume_after_sigkill_gives_identical_weights(corpus, tmp_path, extras):
    settings = dict(epochs=3, deterministic=True, checkpoint_every_steps=1, dropout=0.3, **extras)
    # the reference: one uninterrupted run
    ref = fit(tiny(corpus, tmp_path / "ref", **settings), progress=False)

    # the same run in a subprocess, killed with SIGKILL as soon as its first checkpoint exists
    run = tmp_path / "killed"
    args = [sys.executable, "-m", "audioconv", "train", "--train", str(corpus["train"]), "--val", str(corpus["val"]),
            "--out", str(run), "--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16",
            "--n-mels", "32", "--epochs", "3", "--batch-size", "4", "--lr", "3e-3", "--augment", "none",
            "--no-specaugment", "--workers", "0", "--threads", "1", "--seed", "0", "--deterministic",
            "--checkpoint-every-steps", "1", "--dropout", "0.3", "--no-progress",
            *(flag for name in extras for flag in EXTRAS[name])]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # generous: a loaded machine takes long to import torch
    while not (run / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()
    killed_at = load_checkpoint(run / "last.pt")
    assert killed_at["step"] < ref["steps"]
    assert killed_at["progress"]["batches_done"] > 0  # killed in the middle of an epoch

    # resume through the command line (settings come from RUN/config.json)
    from audioconv.cli import main
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0

    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(run / "last.pt")
    assert a["step"] == b["step"] == ref["steps"]
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert same(a["ema"], b["ema"]) and (a["ema"] is None) == (not extras)  # the EMA weights and update count
    # every epoch's numbers agree too (the interrupted epoch's running sums were restored)
    for x, y in zip(read_metrics(tmp_path / "ref"), read_metrics(run), strict=True):
        for key in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_accuracy", "val_macro_f1", "lr"):
            assert x[key] == y[key], (key, x, y)


def test_a_run_records_the_files_it_names_absolute(tmp_path, monkeypatch):
    """train/val/manifest and a chain file, relative to the working folder, become absolute (shard lists
    part by part, URLs kept, ~ expanded); 'default' and 'none' stay names."""
    monkeypatch.chdir(tmp_path)
    here = os.getcwd()
    cfg = TrainConfig(train="d/train-{000..003}.tar :: https://host/x-{0..1}.tar", val="../v.tar",
                      augment="chains/c.json").with_absolute_paths()
    assert cfg.train == f"{here}/d/train-{{000..003}}.tar::https://host/x-{{0..1}}.tar"
    assert (cfg.val, cfg.augment) == (os.path.dirname(here) + "/v.tar", f"{here}/chains/c.json")
    cfg = TrainConfig(manifest="~/m.jsonl", augment="default").with_absolute_paths()
    assert (cfg.manifest, cfg.augment, cfg.train) == (os.path.expanduser("~/m.jsonl"), "default", None)
    assert TrainConfig(train="/abs/t.jsonl", augment="none").with_absolute_paths().augment == "none"


def write_chain(path: Path, gain_db: tuple[float, float], p: float) -> Path:
    path.write_text(json.dumps([{"type": "Gain", "gain_db": list(gain_db), "p": p},
                                {"type": "AddNoise", "snr_db": [5.0, 30.0], "p": 0.8}]), encoding="utf-8")
    return path


def test_the_chain_config_is_computed_once_per_run_not_at_every_save(corpus, tmp_path, monkeypatch):
    """The chain never changes within a run, so its config (recorded in config.json and in every
    last.pt) is computed once in setup, not at each of the run's checkpoint saves."""
    import audioconv.augment.chain as chain_module
    calls = []
    real = chain_module.chain_to_config
    monkeypatch.setattr(chain_module, "chain_to_config", lambda *a, **k: calls.append(1) or real(*a, **k))
    chain = write_chain(tmp_path / "chain.json", (-6.0, 6.0), 0.5)
    fit(tiny(corpus, tmp_path / "run", augment=str(chain), epochs=2, checkpoint_every_steps=1), progress=False)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["augment_chain"]
    assert [s["type"] for s in saved["transforms"]] == ["Gain", "AddNoise"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["augment"] == saved
    assert len(calls) == 1


def test_resume_trains_with_the_recorded_chain_when_the_chain_file_was_edited(corpus, tmp_path, monkeypatch):
    """The chain a run trained with is recorded in last.pt; a resumed run rebuilds it from there, so
    an edited chain file changes nothing (bit-identical to an uninterrupted run) and says so once."""
    chain_file = write_chain(tmp_path / "chain.json", (-12.0, 6.0), 0.7)
    settings = dict(epochs=2, augment=str(chain_file), checkpoint_every_steps=1, dropout=0.3, deterministic=True)
    ref = fit(tiny(corpus, tmp_path / "ref", **settings), progress=False)

    run = tmp_path / "killed"
    cfg = tiny(corpus, run, **settings)
    fit_interrupted(cfg, monkeypatch, 18 + 7)  # in epoch 2, after step 18 + 7 (last.pt of that step)
    assert load_checkpoint(run / "last.pt")["progress"]["batches_done"] == 7

    write_chain(chain_file, (-40.0, -30.0), 1.0)  # edited between the two halves
    with pytest.warns(TrainingWarning) as caught:
        resumed = fit(TrainConfig.from_dict({**cfg.to_dict(), "resume": True}), progress=False)
    notes = [str(w.message) for w in caught if issubclass(w.category, TrainingWarning)]
    assert notes == [f"resume: augment={chain_file} (--augment) now gives another chain; continuing with the chain "
                     f"this run was trained with, recorded in {run / 'last.pt'}"]
    assert resumed["steps"] == ref["steps"] == 36 and resumed["state_sha1"] == ref["state_sha1"]
    for x, y in zip(read_metrics(tmp_path / "ref"), read_metrics(run), strict=True):
        assert x["train_loss"] == y["train_loss"] and x["val_loss"] == y["val_loss"], (x, y)
    # the recorded chain is the file's first version: equal to the chain that version builds
    first = build_augment(TrainConfig(augment=str(write_chain(tmp_path / "first.json", (-12.0, 6.0), 0.7)),
                                      sample_rate=SAMPLE_RATE))
    recorded = json.loads((run / "config.json").read_text())["augment"]
    assert recorded == load_checkpoint(run / "last.pt")["augment_chain"] == first.to_config()


def test_resume_from_another_folder_with_the_run_chain(corpus, tmp_path, monkeypatch, capsys):
    """A run started with relative --train/--val/--augment resumes from another working folder (the
    run records them absolute); --augment naming another chain file is refused, the run's own file
    named another way is not a change; a deleted chain file resumes with the recorded chain."""
    from audioconv.cli import main

    first, second = tmp_path / "A", tmp_path / "B"
    first.mkdir(), second.mkdir()
    write_chain(first / "c.json", (-6.0, 6.0), 0.5)
    write_chain(first / "other.json", (-3.0, 3.0), 0.5)
    flags = ["--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
             "--batch-size", "8", "--no-specaugment", "--workers", "0", "--threads", "1", "--no-progress"]
    monkeypatch.chdir(first)
    assert main(["train", "--train", os.path.relpath(corpus["train"]), "--val", os.path.relpath(corpus["val"]),
                 "--augment", "c.json", "--out", "runs/x", "--epochs", "1", *flags]) == 0
    saved = json.loads((first / "runs/x/config.json").read_text())["train_config"]
    assert (saved["train"], saved["val"], saved["augment"]) == (str(corpus["train"]), str(corpus["val"]),
                                                                str(first / "c.json"))
    capsys.readouterr()
    assert main(["train", "--out", "runs/x", "--resume", "--epochs", "2", "--augment", "other.json"]) == 2
    assert capsys.readouterr().err.strip().startswith(
        f"audioconv train: error: --resume continues the run with the settings in runs/x/config.json; these options "
        f"would change them: --augment other.json (was {first / 'c.json'}) (only --epochs")

    monkeypatch.chdir(second)
    (first / "c.json").unlink()
    assert main(["train", "--out", str(first / "runs/x"), "--resume", "--epochs", "2",
                 "--augment", os.path.relpath(first / "c.json"), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"audioconv train: warning: resume: augment={first / 'c.json'} (--augment) is gone; continuing "
                      f"with the chain this run was trained with, recorded in {first / 'runs/x/last.pt'}")
    assert [m["epoch"] for m in read_metrics(first / "runs/x")] == [1, 2]


# ------------------------------------------------------------------------------ the step and the state on their own
class Stop(Exception):
    """Raised by a chain to interrupt fit() at a chosen step (after last.pt of the step before)."""


def fit_interrupted(cfg: TrainConfig, monkeypatch, steps: int) -> None:
    """``fit(cfg)`` stopped (``Stop``) when it starts training step ``steps + 1``; ``train_step`` restored after."""
    real_step, calls = loop.train_step, []

    def stopping_step(*args, **kw):
        calls.append(1)
        if len(calls) > steps:
            raise Stop
        return real_step(*args, **kw)

    monkeypatch.setattr(loop, "train_step", stopping_step)
    with pytest.raises(Stop):
        fit(cfg, progress=False)
    monkeypatch.setattr(loop, "train_step", real_step)


def chain_stopping_after(cfg, n_steps: int):
    """The config's augmentation chain, raising Stop when called for step n_steps + 1."""
    chain, calls = build_augment(cfg), []

    def augment(x, generator=None, lengths=None):
        calls.append(1)
        if len(calls) > n_steps:
            raise Stop
        return x if chain is None else chain(x, generator=generator, lengths=lengths)
    return augment


def same(a, b) -> bool:
    """Equal nested checkpoint contents (tensors bit for bit, with their dtypes)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_train_step_alone_is_the_step_inside_fit(corpus, tmp_path):
    settings = dict(epochs=1, checkpoint_every_steps=1, dropout=0.3, deterministic=True, augment="default",
                    specaugment=True, freq_mask_bins=3, time_mask_frames=3)
    # fit, stopped right after its first step: last.pt holds the weights after exactly one step
    cfg = tiny(corpus, tmp_path / "fit", **settings)
    with pytest.raises(Stop):
        fit(cfg, progress=False, augment=chain_stopping_after(cfg, 1))
    after_fit = load_checkpoint(tmp_path / "fit" / "last.pt")
    assert after_fit["step"] == 1

    # the same step by hand: set-up, the first batch of epoch 0, one train_step
    cfg = tiny(corpus, tmp_path / "alone", **settings)
    state = setup(cfg, augment=chain_stopping_after(cfg, 10**6), progress=False)
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    x, y, lengths = next(iter(state.data.epoch_loader(0)))
    stats = train_step(state, x, y, lengths)
    assert state.step == 1 and stats.clips == 4 and torch.isfinite(stats.loss_sum)
    assert stats.lr == lr_at(0, state.total_steps, cfg)
    assert 0 < float(stats.loss_sum) / 4 < 5 and 0 <= int(stats.correct) <= 4
    now = {k: v.clone() for k, v in state.model.state_dict().items()}
    assert any(not torch.equal(before[k], now[k]) for k, _ in state.model.named_parameters())
    for k in now:
        assert torch.equal(now[k], after_fit["model"][k]), k

    # a batch with a NaN clip stops the step before the optimizer moves a weight, naming the step and the clip
    poisoned = x.clone()
    poisoned[2, 0, 100] = float("nan")
    names = ["a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "a.jsonl:4"]
    with pytest.raises(NonFiniteBatchError, match=r"non-finite samples \(NaN or inf\) in the training batch at step 2 "
                                                  r"\(epoch 1, batch 1 of 18\): a.jsonl:3; not training on them"):
        train_step(state, poisoned, y, lengths, clips=names)
    assert state.step == 1 and all(torch.equal(p, now[k]) for k, p in state.model.named_parameters())


def test_train_state_round_trip_through_last_pt(corpus, tmp_path):
    run = tmp_path / "run"
    cfg = tiny(corpus, run, epochs=2, checkpoint_every_steps=1, dropout=0.3, deterministic=True)
    with pytest.raises(Stop):  # stopped in the middle of epoch 1, after step 5
        fit(cfg, progress=False, augment=chain_stopping_after(cfg, 5))
    saved = load_checkpoint(run / "last.pt")
    assert saved["step"] == 5 and saved["progress"]["batches_done"] == 5 and saved["progress"]["seen"] == 20

    state = setup(TrainConfig.from_dict({**cfg.to_dict(), "resume": True}), augment=chain_stopping_after(cfg, 0),
                  progress=False)
    assert (state.epoch, state.step, state.batches_done) == (0, 5, 5)
    assert state.tally.carried == {k: saved["progress"][k] for k in ("loss", "correct", "seen", "train_s")}
    assert torch.equal(torch.get_rng_state(), saved["rng"]["per_rank"][0]["cpu"])
    save(state)  # what setup restored, written back: the same checkpoint
    again = load_checkpoint(run / "last.pt")
    assert again["train_config"]["resume"] and not saved["train_config"]["resume"]
    again["train_config"]["resume"] = False  # the one setting that tells the two apart
    assert again.keys() == saved.keys()
    for key in saved:
        assert same(saved[key], again[key]), key


# ------------------------------------------------------------------------------ bad input
def test_empty_train_set(corpus, tmp_path):
    empty = write_manifest(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="training set is empty.*has no clips"):
        fit(tiny(corpus, tmp_path / "run", train=str(empty)), progress=False)


def test_one_class_only(corpus, tmp_path):
    recs = [json.loads(line) for line in corpus["train"].read_text().splitlines()]
    one = write_manifest(corpus["train"].parent / "one_class.jsonl", [r for r in recs if r["label"] == "chirp"])
    with pytest.raises(ValueError, match="only one class .'chirp'."):
        fit(tiny(corpus, tmp_path / "run", train=str(one)), progress=False)


def test_val_label_not_in_train(corpus, tmp_path):
    recs = [json.loads(line) for line in corpus["train"].read_text().splitlines()]
    two = write_manifest(corpus["train"].parent / "two_classes.jsonl", [r for r in recs if r["label"] != "beeps"])
    with pytest.raises(ValueError, match=r"validation set .* not in the training set: \['beeps'\]"):
        fit(tiny(corpus, tmp_path / "run", train=str(two)), progress=False)


def test_nan_loss_names_the_step(corpus, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf) at step \d+ \(epoch 1, batch \d+ of 18"):
        fit(tiny(corpus, tmp_path / "run", lr=1e30), progress=False)

    def poison(x, generator=None):  # an augmentation that makes NaN of the second clip of every batch
        x = x.clone()
        x[1] = float("nan")
        return x

    with pytest.raises(NonFiniteBatchError, match=r"the augmentation chain made non-finite samples \(NaN or inf\) at "
                                                  r"step 1 \(epoch 1, batch 1 of 18\) from .*train.jsonl:\d+ \(.*\.wav\); "
                                                  r"not training on them"):
        fit(tiny(corpus, tmp_path / "run2"), progress=False, augment=poison)
    # the command line turns it into a one-line error and exit code 2
    r = subprocess.run([sys.executable, "-m", "audioconv", "train", "--train", str(corpus["train"]), "--val",
                        str(corpus["val"]), "--out", str(tmp_path / "cli"), "--sample-rate", str(SAMPLE_RATE),
                        "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32", "--augment", "none",
                        "--lr", "1e30", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "error: training loss is nan at step" in r.stderr, r.stderr


def test_resume_with_another_model_shape(corpus, tmp_path):
    fit(tiny(corpus, tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"another model shape \(channels: checkpoint \[8, 16\] vs this run \[8, 32\]"):
        fit(tiny(corpus, tmp_path / "run", channels=(8, 32), epochs=2, resume=True), progress=False)
    # a checkpoint whose weights do not fit its own config names the parameter and both shapes
    ckpt = load_checkpoint(tmp_path / "run" / "best.pt")
    ckpt["model_config"]["channels"] = [8, 32]
    save_checkpoint(tmp_path / "mismatch.pt", ckpt)
    with pytest.raises(ValueError, match=r"another model shape: features.conv2.weight has shape \(16, 8, 3, 3\) "
                                         r"in the checkpoint but \(32, 8, 3, 3\) in the model"):
        load_model(tmp_path / "mismatch.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        fit(tiny(corpus, tmp_path / "fresh", resume=True), progress=False)
    # a fresh run does not silently mix with an earlier one in the same folder
    with pytest.raises(ValueError, match="already holds a training run"):
        fit(tiny(corpus, tmp_path / "run", epochs=1), progress=False)
    fit(tiny(corpus, tmp_path / "run", epochs=1, overwrite=True), progress=False)
    assert len(read_metrics(tmp_path / "run")) == 1


def test_corrupt_checkpoints(corpus, tmp_path):
    fit(tiny(corpus, tmp_path / "run", epochs=1), progress=False)
    good = (tmp_path / "run" / "last.pt").read_bytes()
    cases = {"truncated.pt": good[: len(good) // 2], "empty.pt": b"",
             **{f"garbage{i}.pt": random.Random(i).randbytes(4096) for i in range(40)},
             **{f"legacy{i}.pt": bytes([0x80, 2]) + random.Random(i).randbytes(300) for i in range(40)}}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match="corrupt"):
            load_model(tmp_path / name)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an audioconv checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": "audioconv-checkpoint", "obj": Path("x")}, tmp_path / "pickled.pt")  # not weights-only
    with pytest.raises(ValueError, match="holds pickled Python objects"):
        load_checkpoint(tmp_path / "pickled.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    # a corrupt last.pt stops a resume with the same clear error
    (tmp_path / "run" / "last.pt").write_bytes(good[:100])
    with pytest.raises(ValueError, match="last.pt is corrupt"):
        fit(tiny(corpus, tmp_path / "run", epochs=2, resume=True), progress=False)


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "new_folder" / "last.pt"
    ckpt = {"model": {"w": torch.arange(3.0)}, "model_config": {}, "labels": ["a", "b"]}
    save_checkpoint(path, ckpt)
    good = path.read_bytes()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(3.0))

    class Unsavable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    # a write that fails half-way leaves the old checkpoint as it was, and no temporary file
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {**ckpt, "extra": Unsavable()})
    assert path.read_bytes() == good and [p.name for p in path.parent.iterdir()] == ["last.pt"]
    # the data reach the disk (fsync) before the new file replaces the old one
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(path.read_bytes() == good), real_fsync(fd)))
    save_checkpoint(path, {**ckpt, "labels": ["a", "c"]})
    assert synced == [True] and load_checkpoint(path)["labels"] == ["a", "c"]


def test_best_epoch_is_the_lowest_loss_or_the_highest_accuracy_ties_to_the_lower_loss():
    """_update_best over a made-up run whose loss is lowest at epoch 4 while its accuracy is 1.0 at
    epochs 2 and 5: val_loss picks 4; val_accuracy and val_macro_f1 pick 5, the tie going to the
    lower loss (0.35 against 0.40)."""
    from audioconv.training.loop import _update_best

    history = [(0.90, 0.50), (1.00, 0.40), (0.98, 0.30), (0.98, 0.20), (1.00, 0.35)]  # (accuracy, loss)
    picked = {}
    for metric in ("val_loss", "val_accuracy", "val_macro_f1"):
        state = SimpleNamespace(data=SimpleNamespace(val_loader=[]), config=SimpleNamespace(best_metric=metric),
                                best_value=-math.inf, best_loss=math.inf, best_epoch=0, epoch=0)
        for state.epoch, (acc, loss) in enumerate(history, 1):
            _update_best(state, {"val_loss": loss, "val_accuracy": acc, "val_macro_f1": acc})
        picked[metric] = (state.best_epoch, state.best_value)
    assert picked == {"val_loss": (4, 0.20), "val_accuracy": (5, 1.00), "val_macro_f1": (5, 1.00)}


def test_best_checkpoint_of_a_run_is_its_lowest_val_loss_epoch(corpus, tmp_path):
    """best.pt (its epoch, the summary) is the epoch of the lowest val loss in metrics.jsonl."""
    summary = fit(tiny(corpus, tmp_path, best_metric="val_loss", epochs=3), progress=False)
    expected = min(read_metrics(tmp_path), key=lambda r: (r["val_loss"], r["epoch"]))
    assert (summary["best_epoch"], summary["best_metric"]) == (expected["epoch"], "val_loss")
    assert summary["best_value"] == pytest.approx(expected["val_loss"])
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == expected["epoch"]


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown TrainConfig keys \\['epoch'\\]"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ValueError, match="batch_size must be > 0"):
        TrainConfig(train="x", batch_size=0).validate()
    with pytest.raises(ValueError, match="freq_warp must be in"):
        TrainConfig(train="x", freq_warp=0.7).validate()
    with pytest.raises(ValueError, match="best_metric must be one of val_loss, val_macro_f1, val_accuracy, got 'loss'"):
        TrainConfig(train="x", best_metric="loss").validate()
    with pytest.raises(ValueError, match="amp='fp16' needs a CUDA device"):
        from audioconv.training.loop import resolve_amp
        resolve_amp("fp16", torch.device("cpu"))


def test_freq_warp_option_and_the_resume_of_a_run_saved_before_it(tmp_path):
    from audioconv.cli import build_parser
    from audioconv.commands.train import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["train", "--train", "t.jsonl"])).freq_warp == 0.2
    assert config_from_args(parser.parse_args(["train", "--train", "t.jsonl", "--freq-warp", "0.05"])).freq_warp == 0.05
    with pytest.raises(ValueError, match="freq_warp must be in"):
        config_from_args(parser.parse_args(["train", "--train", "t.jsonl", "--freq-warp", "-0.1"])).validate()
    # a run folder written before the warp existed has no freq_warp: it resumes without a warp
    old = TrainConfig(train="t.jsonl", out=str(tmp_path)).to_dict()
    del old["freq_warp"], old["best_metric"]  # nor a best_metric: it keeps macro-F1, the default of its time
    (tmp_path / "config.json").write_text(json.dumps({"train_config": old}))
    (tmp_path / "last.pt").write_bytes(b"")  # the run's checkpoint (only its presence matters here)
    resumed = config_from_args(parser.parse_args(["train", "--out", str(tmp_path), "--resume"]))
    assert resumed.freq_warp == 0.0 and resumed.best_metric == "val_macro_f1" and resumed.resume
    assert config_from_args(parser.parse_args(["train", "--train", "t.jsonl"])).best_metric == "val_loss"


def test_mask_options_reach_the_config_and_the_specaugment_of_the_run():
    """--freq-masks/--freq-mask-bins/--time-masks/--time-mask-frames set SpecAugment's masks; a bad
    value is refused by the config, naming the setting."""
    from audioconv.cli import build_parser
    from audioconv.commands.train import config_from_args
    from audioconv.training.loop import _specaugment

    parser = build_parser()
    args = ["train", "--train", "t.jsonl", "--freq-masks", "3", "--freq-mask-bins", "12",
            "--time-masks", "4", "--time-mask-frames", "15"]
    config = config_from_args(parser.parse_args(args))
    model = SimpleNamespace(frontend=SimpleNamespace(mel_hz=lambda: torch.linspace(100.0, 7000.0, config.n_mels)))
    aug = _specaugment(config, model)
    assert (aug.n_freq_masks, aug.freq_mask_bins, aug.n_time_masks, aug.time_mask_frames) == (3, 12, 4, 15)
    default = config_from_args(parser.parse_args(["train", "--train", "t.jsonl"]))
    assert (default.n_freq_masks, default.freq_mask_bins, default.n_time_masks, default.time_mask_frames) == (2, 8, 2, 10)
    for option, name in (("--freq-masks", "n_freq_masks"), ("--time-mask-frames", "time_mask_frames")):
        with pytest.raises(ValueError, match=f"^{name} must be an integer >= 0, got -1$"):
            config_from_args(parser.parse_args(["train", "--train", "t.jsonl", option, "-1"])).validate()


def test_f_max_option_sets_the_top_of_the_mel_filters_of_the_model(sample_rate=16000):
    """--f-max-hz reaches the config and the model's front end (its highest mel filter ends there, as
    librosa's HTK bank for that range); a value above the Nyquist frequency, at or below the lowest band
    or not finite is refused naming the setting and the limits."""
    import librosa

    from audioconv.cli import build_parser
    from audioconv.commands.train import config_from_args
    from audioconv.training.loop import build_model

    parser = build_parser()
    config = config_from_args(parser.parse_args(["train", "--train", "t.jsonl", "--f-max-hz", "5000"]))
    config.validate()
    front = build_model(config, 3).frontend
    assert config.f_max_hz == 5000.0 and front.config.f_max == 5000.0
    ref = librosa.filters.mel(sr=sample_rate, n_fft=front.config.n_fft, n_mels=config.n_mels, fmin=20.0,
                              fmax=5000.0, htk=True, norm=None)
    np.testing.assert_allclose(front.mel.mel_scale.fb.T.numpy(), ref, atol=1e-4)
    assert build_model(config_from_args(parser.parse_args(["train", "--train", "t.jsonl"])), 3).frontend.config.f_max == 8000
    for value in ("8001", "20", "nan"):
        with pytest.raises(ValueError, match=r"^f_max_hz must be a frequency in Hz above 20 and at most the Nyquist "
                                             r"frequency \(8000 Hz at sample_rate 16000\), got"):
            config_from_args(parser.parse_args(["train", "--train", "t.jsonl", "--f-max-hz", value])).validate()
    with pytest.raises(ValueError, match=r"^f_max_hz=60 leaves 38 of the 40 mel bands without a frequency bin \(the "
                                         r"bins are 31.25 Hz apart\): raise f_max_hz or lower n_mels$"):
        TrainConfig(train="t.jsonl", f_max_hz=60.0).validate()  # one bin, 31.25 Hz, lies in 20-60 Hz: two bands hold it
    TrainConfig(train="t.jsonl", f_max_hz=np.float32(4000.0)).validate()  # a numpy number is a number
    # without a top of one's own: more bands than the FFT's 257 frequency bins are refused the same way
    with pytest.raises(ValueError, match=r"^n_mels=500 leaves 140 of the 500 mel bands without a frequency bin \(the "
                                         r"bins are 31.25 Hz apart\): use at most 257 bands, one per frequency bin of "
                                         r"the 512-point FFT$"):
        TrainConfig(train="t.jsonl", n_mels=500).validate()
    TrainConfig(train="t.jsonl", n_mels=128).validate()  # a few narrow empty low bands: torchaudio warns, it trains


@pytest.mark.parametrize("name", ["weight_decay", "grad_clip_norm"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.1, True])
def test_weight_decay_and_grad_clip_norm_must_be_finite_numbers(name, value):
    """NaN passed the ``< 0`` check before and surfaced as a NaN loss blamed on the learning rate."""
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number >= 0, got {value!r}$"):
        TrainConfig(train="t.jsonl", **{name: value}).validate()


def test_normalize_option_offers_every_normalisation_of_the_front_end(capsys):
    """The CLI lists the modes itself (it does not import the front end to parse arguments): the
    list must be ``features.NORMALIZATIONS``, and each mode reaches the config."""
    from audioconv.cli import build_parser
    from audioconv.commands.train import config_from_args
    from audioconv.features import NORMALIZATIONS

    parser = build_parser()
    for mode in NORMALIZATIONS:
        args = parser.parse_args(["train", "--train", "t.jsonl", "--normalize", mode])
        assert config_from_args(args).normalize == mode
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--train", "t.jsonl", "--normalize", "pcn"])
    assert "invalid choice: 'pcn'" in capsys.readouterr().err


# ------------------------------------------------------------------------------ other models
def model_run(corpus, out, model, **kw) -> TrainConfig:
    """tiny() for a model other than the CNN (the CNN-only settings back at their defaults)."""
    return tiny(corpus, out, model=model, channels=TrainConfig().channels, **kw)


def assert_round_trip(cfg: TrainConfig):
    """A model trained one step, saved (last.pt) and loaded back gives bit-identical logits."""
    state = setup(cfg, progress=False)
    x, y, lengths = next(iter(state.data.epoch_loader(0)))
    train_step(state, x, y, lengths)
    save(state)
    loaded, labels = load_model(Path(cfg.out) / "last.pt", "cpu")
    assert type(loaded) is type(state.model) and labels == state.labels
    probe = torch.randn(5, 1, int(CLIP_S * SAMPLE_RATE)) * 0.1
    with torch.no_grad():
        assert torch.equal(state.model.eval()(probe), loaded(probe))
    return loaded


def test_bcresnet_learns_evaluates_and_reloads(corpus, tmp_path):
    from audioconv.models import BCResNet
    from audioconv.training.evaluate import evaluate

    run = tmp_path / "run"
    fit(model_run(corpus, run, "bcresnet", width=1.0), progress=False)
    lines = read_metrics(run)
    # measured: train loss 1.10 → 0.64 and val accuracy 0.33 → 0.96 over the 6 epochs (chance 1/3)
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] - 0.3
    assert max(m["val_accuracy"] for m in lines) >= 0.75
    best = load_checkpoint(run / "best.pt")
    assert best["model_spec"] == "bcresnet" and best["model_config"]["width"] == 1.0
    assert json.loads((run / "config.json").read_text())["model_spec"] == "bcresnet"
    # `evaluate` rebuilds it and scores the validation set as the trainer did
    scores = evaluate(run / "best.pt", corpus["val"], device="cpu", progress=False)
    assert scores["accuracy"] == pytest.approx(best["metrics"]["val_accuracy"])
    assert isinstance(assert_round_trip(model_run(corpus, tmp_path / "rt", "bcresnet", width=1.5)), BCResNet)
    # a run is resumed with the model it was trained with
    with pytest.raises(ValueError, match="last.pt holds model 'bcresnet', this run asks for 'cnn'"):
        fit(tiny(corpus, run, epochs=7, resume=True), progress=False)
    with pytest.raises(ValueError, match=r"another model shape \(width: checkpoint 1.0 vs this run 2.0"):
        fit(model_run(corpus, run, "bcresnet", width=2.0, epochs=7, resume=True), progress=False)


def test_bring_your_own_model_trains_and_reloads(corpus, tmp_path):
    from audioconv.models import LogMelClassifier

    run = tmp_path / "run"
    fit(model_run(corpus, run, "_byo_models:backbone", epochs=4), progress=False)  # tests/ is on sys.path
    assert max(m["val_accuracy"] for m in read_metrics(run)) >= 0.75
    best = load_checkpoint(run / "best.pt")
    assert best["model_spec"] == "_byo_models:backbone" and best["model_config"]["wrapped"]
    model, labels = load_model(run / "best.pt")
    assert isinstance(model, LogMelClassifier) and model.frontend.config.n_mels == 32
    ds = ManifestDataset(corpus["val"], SAMPLE_RATE, CLIP_S, labels=labels, crop="center")
    with torch.no_grad():
        hits = sum(int(model(x[None]).argmax()) == y for x, y, _ in ds)
    assert hits / len(ds) == pytest.approx(best["metrics"]["val_accuracy"])
    # a full model (its own front end and classify) with a width, saved and loaded bit for bit
    loaded = assert_round_trip(model_run(corpus, tmp_path / "full", "_byo_models:full", width=2.0, epochs=1))
    assert type(loaded).__name__ == "Full" and loaded.body[1].out_channels == 16
    # the factory must be importable where the checkpoint is loaded
    best["model_spec"] = "_gone_module_xyz:backbone"
    save_checkpoint(tmp_path / "gone.pt", best)
    with pytest.raises(ValueError, match=r"gone.pt cannot rebuild its model: model '_gone_module_xyz:backbone': "
                                         r"cannot import module '_gone_module_xyz' \(ModuleNotFoundError"):
        load_model(tmp_path / "gone.pt")
    with pytest.raises(ValueError, match="dropout=0.5 applies to model cnn or bcresnet only"):
        fit(model_run(corpus, tmp_path / "x", "_byo_models:backbone", dropout=0.5), progress=False)


def test_resume_keeps_the_run_settings_and_a_finished_run_its_config(corpus, tmp_path, capsys):
    """--resume with an option that changes a setting (--lr) is refused in one line; a resume with
    nothing left to train leaves config.json as it was; --epochs may extend the run."""
    from audioconv.cli import main

    run = tmp_path / "run"
    fit(tiny(corpus, run, epochs=1, channels=(4, 8), n_mels=16), progress=False)
    saved = (run / "config.json").read_bytes()
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.1", "--seed", "0", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        f"audioconv train: error: --resume continues the run with the settings in {run / 'config.json'}; these "
        f"options would change them: --lr 0.1 (was 0.003) (only --epochs, --early-stopping, --device, --workers, "
        f"--threads, --checkpoint-every-steps, --tensorboard may change on resume; start a new run in another "
        f"--out to change the rest)")  # --seed 0 is the run's own seed: not listed
    # nothing to train (epochs 1 of 1 done, and a device given): the run folder stays as it was; the
    # run's own training manifest named by another path to the same file is not a change
    same_train = os.path.relpath(json.loads(saved)["train_config"]["train"])
    assert main(["train", "--out", str(run), "--resume", "--device", "cpu", "--train", same_train, "--no-progress"]) == 0
    assert (run / "config.json").read_bytes() == saved
    assert "nothing to train" in capsys.readouterr().err
    fit(tiny(corpus, run, epochs=1, channels=(4, 8), n_mels=16, lr=0.1, resume=True), progress=False)  # (library)
    assert (run / "config.json").read_bytes() == saved
    # more epochs: it trains at the run's own learning rate and records the new length
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress"]) == 0
    now = json.loads((run / "config.json").read_text())["train_config"]
    assert now["epochs"] == 2 and now["lr"] == 3e-3
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]


def test_resume_of_a_checkpoint_without_a_chain_record_uses_the_chain_config_json_describes(tmp_path):
    """A last.pt from before runs recorded their chain: the resumed run rebuilds the chain its
    config.json described (so a changed default chain does not change the run), with one warning;
    with no description either, it warns that the chain is read anew."""
    from audioconv.augment import Compose, Gain
    from audioconv.augment.chain import chain_to_config

    before = chain_to_config(Compose([Gain(gain_db=(-3.0, 3.0), p=0.5)]))
    (tmp_path / "config.json").write_text(json.dumps({"train_config": {}, "augment": before}))
    cfg = TrainConfig(augment="default", sample_rate=SAMPLE_RATE)
    with pytest.warns(TrainingWarning, match=r"augment=default \(--augment\) now gives another chain; .* recorded "
                                             r"in .*config\.json"):
        chain = loop._run_chain(cfg, {"kind": "train"}, tmp_path)
    assert chain.to_config() == before
    (tmp_path / "config.json").unlink()
    with pytest.warns(TrainingWarning, match="older version that did not record its augmentation chain"):
        chain = loop._run_chain(cfg, {"kind": "train"}, tmp_path)
    assert chain.to_config() == build_augment(cfg).to_config()


@pytest.mark.parametrize("spec", ["_byo_models:backbone", "_byo_models:full"])
def test_a_run_of_a_brought_model_resumes_bit_identically(corpus, tmp_path, monkeypatch, spec):
    """--model package.module:factory (a backbone the package wraps, or a full model): a run
    interrupted in epoch 2 and resumed ends with the weights of an uninterrupted run (the resume
    compared the checkpoint's model record with the wrapper's own config and then called a
    from_config that only the built-in models have: an AttributeError)."""
    settings = dict(model=spec, channels=TrainConfig.channels, epochs=2, checkpoint_every_steps=1,
                    deterministic=True)
    ref = fit(tiny(corpus, tmp_path / "ref", **settings), progress=False)
    fit_interrupted(tiny(corpus, tmp_path / "run", **settings), monkeypatch, 18 + 5)  # in epoch 2
    resumed = fit(tiny(corpus, tmp_path / "run", **settings, resume=True), progress=False)
    assert resumed["steps"] == ref["steps"] == 36 and resumed["state_sha1"] == ref["state_sha1"]


def test_resume_takes_no_f_max_as_the_nyquist_frequency(tmp_path):
    """--f-max-hz at the Nyquist frequency is the run's own bands when the run gave none (not a
    change to refuse); another top is refused naming both tops in Hz, not ``None``."""
    from audioconv.commands.train import _refuse_changed_settings
    from audioconv.training.config import TrainConfig

    saved = TrainConfig(train="t.jsonl", sample_rate=16000).to_dict()
    where = tmp_path / "config.json"
    _refuse_changed_settings(saved, {"f_max_hz": 8000.0}, where)
    _refuse_changed_settings({**saved, "f_max_hz": 8000.0}, {"f_max_hz": 8000}, where)
    with pytest.raises(ValueError, match=r"--f-max-hz 4000.0 \(was 8000.0\)"):
        _refuse_changed_settings(saved, {"f_max_hz": 4000.0}, where)
    with pytest.raises(ValueError, match=r"--f-max-hz 8000.0 \(was 4000.0\)"):
        _refuse_changed_settings({**saved, "f_max_hz": 4000.0}, {"f_max_hz": 8000.0}, where)


def test_resume_after_the_training_clips_changed_says_so(corpus, tmp_path):
    """The manifest edited in place between the stop and the resume (half its lines gone): the run
    goes on, with one warning naming both counts; the same clips resume without one."""
    from audioconv.training.batches import TrainingWarning

    train = Path(corpus["train"]).with_name("train_edited.jsonl")  # beside it: its paths are relative
    lines = Path(corpus["train"]).read_text().splitlines(keepends=True)
    train.write_text("".join(lines))
    run = tmp_path / "run"
    fit(tiny(corpus, run, epochs=1, train=str(train), channels=(4, 8), n_mels=16), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingWarning)
        fit(tiny(corpus, run, epochs=2, train=str(train), channels=(4, 8), n_mels=16, resume=True), progress=False)
    train.write_text("".join(lines[::2]))
    with pytest.warns(TrainingWarning, match=rf"resume: the training clips changed since .*last\.pt was written "
                                             rf"\({len(lines)} clips then, {len(lines[::2])} now\)"):
        fit(tiny(corpus, run, epochs=3, train=str(train), channels=(4, 8), n_mels=16, resume=True), progress=False)
