"""What the trainer and the checkpoint readers no longer do silently: drop clips, validate on training
clips, diverge, evaluate NaN weights or a label list that does not fit, resume nothing, accept a
sample rate the front end cannot use, load an old checkpoint on the new dB scale."""
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from _tones import CLASSES, CLIP_S, SAMPLE_RATE, make_corpus, write_manifest
from audioconv.cli import main
from audioconv.training.batches import TrainingWarning, even_batches
from audioconv.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from audioconv.training.config import TrainConfig
from audioconv.training.evaluate import evaluate
from audioconv.training.loop import NonFiniteLossError, fit

FLAGS = ["--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
         "--augment", "none", "--no-specaugment", "--workers", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    fit(tiny(corpus, out, epochs=2), progress=False)
    return out


def tiny(corpus, out, **kw) -> TrainConfig:
    base = dict(train=str(corpus["train"]), val=str(corpus["val"]), out=str(out), sample_rate=SAMPLE_RATE,
                clip_s=CLIP_S, channels=(8, 16), n_mels=32, epochs=1, batch_size=4, augment="none",
                specaugment=False, workers=0, threads=1, seed=0)
    return TrainConfig(**{**base, **kw})


def records(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines()]


def batch_sizes_of(corpus, out, **kw) -> tuple[list[int], list]:
    """The batch sizes fit() trains on (recorded by a pass-through augmentation), and its warnings."""
    sizes = []

    def record(x, generator=None):
        sizes.append(int(x.shape[0]))
        return x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tiny(corpus, out, **kw), progress=False, augment=record)
    return sizes, [w for w in caught if issubclass(w.category, TrainingWarning)]


# ------------------------------------------------------------------------------ every clip, every epoch
def test_every_training_clip_is_used_every_epoch(corpus, tmp_path):
    # 72 clips in batches of at most 64: two batches of 36 (it was one batch of 64, 8 clips dropped)
    sizes, said = batch_sizes_of(corpus, tmp_path / "a", batch_size=64, epochs=2)
    assert sizes == [36, 36, 36, 36] and not said
    # 72 clips in batches of 5: 15 batches of 5 or 4, 72 in all (was 14 batches of 5: 2 dropped)
    sizes, _ = batch_sizes_of(corpus, tmp_path / "b", batch_size=5)
    assert sum(sizes) == 72 and len(sizes) == 15 and set(sizes) == {4, 5}
    # larger than the training set: said, and the whole set is one batch
    sizes, said = batch_sizes_of(corpus, tmp_path / "c", batch_size=100)
    assert sizes == [72]
    assert [str(w.message) for w in said] == [
        "batch size 100 is larger than the training set (72 clips): each epoch is one step of 72 clips"]


@pytest.mark.parametrize("n, k", [(10, 3), (72, 2), (7, 7), (100, 1), (65, 2)])
def test_even_batches_cover_the_order_once(n, k):
    order = list(range(100, 100 + n))
    batches = even_batches(order, k)
    assert len(batches) == k and [i for b in batches for i in b] == order
    assert max(map(len, batches)) - min(map(len, batches)) <= 1 and len(batches[0]) == math.ceil(n / k)


# ------------------------------------------------------------------------------ leakage
def test_validation_clips_that_are_training_clips_are_said(corpus, tmp_path):
    with pytest.warns(TrainingWarning, match=r"72 of the 72 validation clips are also training clips \(e\.g\. .*"
                                             r"beeps_train_000\.wav\); validation scores \(and best\.pt\) will be "
                                             r"optimistic"):
        fit(tiny(corpus, tmp_path / "a", val=str(corpus["train"])), progress=False)
    # two training clips copied into the validation manifest, paths written differently
    val = records(corpus["val"]) + [{**r, "audio_filepath": "./" + r["audio_filepath"]} for r in records(corpus["train"])[:2]]
    leaky = write_manifest(corpus["val"].parent / "leaky_val.jsonl", val)
    with pytest.warns(TrainingWarning, match=r"2 of the 26 validation clips are also training clips"):
        fit(tiny(corpus, tmp_path / "b", val=str(leaky)), progress=False)
    # the same speaker (group) on both sides
    train = [{**r, "group": f"spk{i % 5}"} for i, r in enumerate(records(corpus["train"]))]
    val = [{**r, "group": "spk3"} for r in records(corpus["val"])]
    grouped_train = write_manifest(corpus["train"].parent / "grouped_train.jsonl", train)
    grouped_val = write_manifest(corpus["val"].parent / "grouped_val.jsonl", val)
    with pytest.warns(TrainingWarning, match=r"1 groups \(speakers or source recordings\) have clips in both training "
                                             r"and validation \(e\.g\. 'spk3'\)"):
        fit(tiny(corpus, tmp_path / "c", train=str(grouped_train), val=str(grouped_val)), progress=False)


# ------------------------------------------------------------------------------ divergence
def test_an_exploding_loss_is_said_once_naming_the_step_and_the_lr(corpus, tmp_path):
    with pytest.warns(TrainingWarning) as caught, pytest.raises(NonFiniteLossError, match="loss is nan at step 6"):
        fit(tiny(corpus, tmp_path / "a", lr=1e6, schedule="constant", weight_decay=0.05),  # warned at step 2
            progress=False)  # (the step of the NaN depends on the decay: pinned)
    said = [str(w.message) for w in caught if "exploded" in str(w.message)]
    assert len(said) == 1
    assert said[0].startswith("the training loss exploded to ")
    assert "at step 2 (epoch 1), more than 10 x its start" in said[0]
    assert "the learning rate (1e+06 at this step, peak 1e+06) is too high — lower --lr" in said[0]
    # a sane run says nothing
    _, said = batch_sizes_of(corpus, tmp_path / "b", epochs=2)
    assert said == []


def test_warnings_on_the_command_line_are_one_line(corpus, tmp_path, capsys):
    assert main(["train", "--train", str(corpus["train"]), "--out", str(tmp_path / "r"), "--batch-size", "100",
                 "--epochs", "1", *FLAGS]) == 0
    err = [s for s in capsys.readouterr().err.splitlines() if s.strip()]
    assert err == ["audioconv train: warning: batch size 100 is larger than the training set (72 clips): "
                   "each epoch is one step of 72 clips"]


# ------------------------------------------------------------------------------ checkpoints that lie
def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(trained, corpus, tmp_path, capsys):
    ckpt = load_checkpoint(trained / "best.pt")
    ckpt["model"]["features.bn2.running_var"][3] = float("nan")
    bad = save_checkpoint(tmp_path / "nan.pt", ckpt)
    message = (rf"checkpoint {bad} holds non-finite weights: features.bn2.running_var has 1 NaN/inf value\(s\) of 16; "
               rf"the run that wrote it diverged")
    with pytest.raises(ValueError, match=message):
        load_model(bad)
    with pytest.raises(ValueError, match=message):  # it used to score a silent 33 % here
        evaluate(bad, corpus["test"], device="cpu", progress=False)
    assert main(["evaluate", "--checkpoint", str(bad), "--manifest", str(corpus["test"]), "--no-progress"]) == 2
    assert "holds non-finite weights" in capsys.readouterr().err


def test_a_label_list_that_does_not_fit_the_outputs_is_refused(trained, corpus, tmp_path):
    ckpt = load_checkpoint(trained / "best.pt")
    short = save_checkpoint(tmp_path / "short.pt", {**ckpt, "labels": ["beeps", "chirp"]})
    for load in (lambda: load_model(short), lambda: evaluate(short, corpus["test"], device="cpu", progress=False)):
        with pytest.raises(ValueError, match=rf"checkpoint {short} lists 2 labels for a model with 3 outputs"):
            load()
    twice = save_checkpoint(tmp_path / "twice.pt", {**ckpt, "labels": ["beeps", "beeps", "steady"]})
    with pytest.raises(ValueError, match=r"duplicate class names in 'labels' \['beeps'\]"):
        evaluate(twice, corpus["test"], device="cpu", progress=False)
    # the training state too: a resume with a last.pt whose labels do not fit stops at once
    run = tmp_path / "run"
    run.mkdir()
    last = load_checkpoint(trained / "last.pt")
    save_checkpoint(run / "last.pt", {**last, "labels": list(CLASSES)[:2]})
    with pytest.raises(ValueError, match=r"last.pt lists 2 labels for a model with 3 outputs"):
        fit(tiny(corpus, run, epochs=3, resume=True), progress=False)


def test_an_old_checkpoint_keeps_the_db_scale_it_was_trained_on(trained):
    """Version-1 checkpoints were trained on dB re power 1.0: they load with that front end, so their
    input normalisation (learned on that scale) still fits."""
    ckpt = load_checkpoint(trained / "best.pt")
    assert ckpt["version"] == 2 and "db_reference" not in ckpt["model_config"]["frontend"]
    model, _ = load_model(trained / "best.pt")
    assert model.frontend.config.db_reference == "full_scale_sine"
    old = {**ckpt, "version": 1}
    torch.save(old, trained / "v1.pt")  # what version 1 wrote (no db_reference anywhere)
    legacy, _ = load_model(trained / "v1.pt")
    assert legacy.frontend.config.db_reference == "unit_power"
    x = torch.randn(2, 1, int(SAMPLE_RATE * CLIP_S)) * 0.1
    with torch.no_grad():
        shift = legacy.frontend(x) - model.frontend(x)
    assert torch.allclose(shift, torch.full_like(shift, 10 * math.log10(model.frontend.reference_power)), atol=1e-3)


# ------------------------------------------------------------------------------ resume
def test_resume_says_what_is_missing_and_where_it_continues(corpus, tmp_path, capsys):
    nothing = tmp_path / "nothing"
    assert main(["train", "--out", str(nothing), "--resume"]) == 2
    assert capsys.readouterr().err.strip() == f"audioconv train: error: --resume: there is no run to resume at {nothing}/last.pt"
    # a run without its config.json resumes from the settings stored in last.pt, and says where it continues
    run = tmp_path / "run"
    assert main(["train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out", str(run),
                 "--epochs", "1", "--batch-size", "8", *FLAGS]) == 0
    (run / "config.json").unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--no-progress", "--json"]) == 0
    captured = capsys.readouterr()
    assert f"audioconv train: resuming from {run}/last.pt: step 9, after epoch 1" in captured.err
    summary = json.loads(captured.out)
    assert summary["epochs"] == 2 and summary["resumed_from"] == {"checkpoint": str(run / "last.pt"), "epoch": 1,
                                                                  "step": 9, "batches_done": 0}


# ------------------------------------------------------------------------------ messages in the user's terms
def test_unknown_labels_name_the_command_line_flag(trained, corpus, tmp_path, capsys):
    manifest = write_manifest(corpus["test"].parent / "unknown.jsonl",
                              records(corpus["test"]) + [{**records(corpus["val"])[0], "label": "whistle"}])
    assert main(["evaluate", "--checkpoint", str(trained / "best.pt"), "--manifest", str(manifest), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "label 'whistle' is not in the label map" in err and "add --allow-unknown" in err


def test_a_sample_rate_too_low_says_what_needs_more_and_the_minimum(corpus, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"sample_rate 100 Hz is too low for the log-mel front end: a 0.5-s clip must "
                                         r"hold more than n_fft / 2 = 256 samples\. Use --sample-rate 514 or more"):
        TrainConfig(train="t.jsonl", sample_rate=100, clip_s=0.5).validate()
    with pytest.raises(ValueError, match=r"its lowest mel band starts at 20 Hz, which must be below the Nyquist "
                                         r"frequency \(sample_rate / 2\); a 1-s clip must hold more than"):
        TrainConfig(train="t.jsonl", sample_rate=30, clip_s=1.0).validate()
    flags = [f for f in FLAGS if f not in ("none",)]
    flags[flags.index("--augment") + 1:flags.index("--augment") + 1] = ["default"]
    assert main(["train", "--train", str(corpus["train"]), "--out", str(tmp_path / "r"), *flags,
                 "--sample-rate", "300", "--clip-s", "2"]) == 2
    err = capsys.readouterr().err
    assert ("sample_rate 300 Hz is too low for the default augmentation chain, which needs at least 601 Hz (at 300 Hz: "
            "low_shelf_hz must be < 150.0 Hz") in err and "use --sample-rate 601 or more, or --augment none" in err
