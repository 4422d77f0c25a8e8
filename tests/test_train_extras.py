"""Trainer extras against their formulas: the EMA of the weights (the debiased closed form), mixup
(λ ~ Beta(α, α) by a KS test against scipy, the loss formula with label smoothing), early stopping
(the epoch a scripted metric sequence predicts), metrics.csv (= metrics.jsonl), TensorBoard (events
read back with tensorboard's own reader), and a resume that stays bit-identical with all of them on."""
import copy
import csv
import io
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from _tones import CLIP_S, SAMPLE_RATE, make_corpus
from test_train import Stop, chain_stopping_after, tiny as tiny_run
from audioconv.cli import main
from audioconv.training import loop
from audioconv.training.batches import TrainingWarning
from audioconv.training.checkpoint import load_checkpoint, load_model
from audioconv.training.config import TrainConfig, lr_at
from audioconv.training.ema import debiased_decay, ema_decay_advice, make_ema
from audioconv.training.evaluate import evaluate
from audioconv.training.loop import fit, setup, train_step
from audioconv.training.mixup import MixDraw, draw_mixup, mix_inputs, mixup_correct, mixup_loss
from audioconv.utils import mix_seed

FLAGS = ["--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
         "--batch-size", "4", "--augment", "none", "--no-specaugment", "--workers", "0", "--threads", "1",
         "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("tones"))


def tiny(corpus, out, **kw) -> TrainConfig:
    """test_train's tiny run, 3 epochs unless told otherwise."""
    return tiny_run(corpus, out, **{"epochs": 3, **kw})


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def closed_form_ema(history: list[dict], decay: float) -> dict:
    """Σ_k (1 − δ) δ^(n−k) w_k / (1 − δ^n) over the recorded states w_1 … w_n, in float64."""
    n = len(history)
    coef = [(1 - decay) * decay ** (n - k) / (1 - decay ** n) for k in range(1, n + 1)]
    assert math.isclose(sum(coef), 1.0, rel_tol=1e-12)
    return {name: sum(c * w[name].double() for c, w in zip(coef, history)) for name in history[0]}


# ------------------------------------------------------------------------------ EMA
def test_ema_is_the_debiased_average_of_the_weights():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4))
    ema, decay, history = make_ema(model, 0.8), 0.8, []
    for _ in range(7):  # any sequence of weights and BatchNorm statistics, as steps would leave them
        with torch.no_grad():
            for t in model.parameters():
                t.copy_(torch.randn_like(t))
        model.train()(torch.randn(16, 5))  # moves running_mean/var, counts num_batches_tracked
        ema.update_parameters(model)
        history.append({k: v.clone() for k, v in model.state_dict().items()})
    expected = closed_form_ema([{k: v for k, v in h.items() if v.is_floating_point()} for h in history], decay)
    got = ema.module.state_dict()
    for name, want in expected.items():  # weights and float buffers (running mean/var) averaged
        torch.testing.assert_close(got[name].double(), want, rtol=1e-6, atol=1e-7)
    assert int(got["1.num_batches_tracked"]) == 7 == int(ema.n_averaged)  # integer buffers copied
    # the first update copies; the share kept tends to the decay
    assert debiased_decay(0.8, 0) == 0.0 and debiased_decay(0.8, 1) == pytest.approx(0.8 / 1.8)
    assert debiased_decay(0.8, 200) == pytest.approx(0.8, rel=1e-12)
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_in_training_follows_every_optimizer_step(corpus, tmp_path):
    state = setup(tiny(corpus, tmp_path / "run", ema=0.7, dropout=0.3), progress=False)
    history = []
    for i, (x, y, lengths) in enumerate(state.data.epoch_loader(0)):
        if i == 6:
            break
        train_step(state, x, y, lengths)
        history.append({k: v.clone() for k, v in state.model.state_dict().items() if v.is_floating_point()})
    got = state.ema.module.state_dict()
    for name, want in closed_form_ema(history, 0.7).items():
        torch.testing.assert_close(got[name].double(), want, rtol=1e-5, atol=1e-6)
    # the raw weights moved on; the EMA is not them
    assert any(not torch.equal(got[k], v) for k, v in state.model.state_dict().items() if v.is_floating_point())


def test_ema_weights_are_validated_saved_and_loaded(corpus, tmp_path):
    run = tmp_path / "run"
    summary = fit(tiny(corpus, run, ema=0.9), progress=False)
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert summary["weights"] == best["weights"] == "ema" and last["weights"] == "raw"
    assert last["ema"]["updates"] == summary["steps"]
    # best.pt holds the EMA weights of its epoch, and they score what the run recorded for them
    scores = evaluate(run / "best.pt", corpus["val"], device="cpu", progress=False)
    assert scores["weights"] == "ema"
    assert scores["accuracy"] == pytest.approx(best["metrics"]["val_accuracy"])
    assert scores["loss"] == pytest.approx(best["metrics"]["val_loss"], rel=1e-5)
    # last.pt keeps both: "auto" and "ema" give the EMA, "raw" the trained weights
    ema_model, _ = load_model(run / "last.pt")
    raw_model, _ = load_model(run / "last.pt", weights="raw")
    for k, v in ema_model.state_dict().items():
        assert torch.equal(v, last["ema"]["weights"][k]) and torch.equal(raw_model.state_dict()[k], last["model"][k])
    if best["epoch"] == last["epoch"]:
        assert all(torch.equal(v, best["model"][k]) for k, v in ema_model.state_dict().items())
    final = read_metrics(run)[-1]
    assert evaluate(run / "last.pt", corpus["val"], device="cpu", progress=False)["loss"] == pytest.approx(
        final["val_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="best.pt holds only the EMA weights .*last.pt"):
        evaluate(run / "best.pt", corpus["val"], device="cpu", progress=False, weights="raw")
    # the command line chooses with --weights
    assert main(["evaluate", "--checkpoint", str(run / "last.pt"), "--manifest", str(corpus["val"]), "--device",
                 "cpu", "--weights", "raw", "--json", "--no-png", "--no-progress"]) == 0


def test_ema_decay_too_slow_for_the_run_is_said(corpus, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        setup(tiny(corpus, tmp_path / "run", ema=0.999), progress=False)
    said = [str(w.message) for w in caught if issubclass(w.category, TrainingWarning)]
    assert said == [ema_decay_advice(0.999, 3 * 18)]
    assert "about 1000 steps" in said[0] and "54 steps" in said[0] and "e.g. 0.9)" in said[0]
    assert ema_decay_advice(0.99, 600) is None and ema_decay_advice(0.999, 20000) is None


# ------------------------------------------------------------------------------ mixup
@pytest.mark.parametrize("alpha", [0.2, 1.0, 3.0])
def test_mixup_weights_are_beta_distributed(alpha):
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(1)
    draws = torch.cat([draw_mixup(250, alpha, g).weight for _ in range(40)]).double().numpy()
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    assert abs(draws.mean() - 0.5) < 0.02
    again = draw_mixup(9, alpha, torch.Generator().manual_seed(5))
    same = draw_mixup(9, alpha, torch.Generator().manual_seed(5))
    assert torch.equal(again.weight, same.weight) and torch.equal(again.partner, same.partner)
    assert sorted(again.partner.tolist()) == list(range(9))


def smoothed_ce(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Label-smoothed cross-entropy per example, written out: −(1 − ε) log p_y − (ε / K) Σ_k log p_k."""
    logp = logits.double().log_softmax(dim=1)
    return -(1 - eps) * logp.gather(1, y[:, None])[:, 0] - eps / logits.shape[1] * logp.sum(dim=1)


def test_mixup_loss_is_the_formula():
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(8, 5, generator=g) * 3, torch.randint(0, 5, (8,), generator=g)
    draw = draw_mixup(8, 0.4, g)
    lam, b = draw.weight.double(), draw.partner
    want = (lam * smoothed_ce(logits, y, 0.1) + (1 - lam) * smoothed_ce(logits, y[b], 0.1)).mean()
    assert float(mixup_loss(logits, y, draw, 0.1)) == pytest.approx(float(want), rel=1e-6)
    # one λ for the batch: λ·CE(y_a) + (1 − λ)·CE(y_b), each the batch mean
    one = MixDraw(torch.full((8,), 0.3), draw.partner)
    want = 0.3 * smoothed_ce(logits, y, 0.1).mean() + 0.7 * smoothed_ce(logits, y[b], 0.1).mean()
    assert float(mixup_loss(logits, y, one, 0.1)) == pytest.approx(float(want), rel=1e-6)
    assert float(mixup_loss(logits, y, None, 0.1)) == pytest.approx(float(smoothed_ce(logits, y, 0.1).mean()), rel=1e-6)
    # inputs: λ x_i + (1 − λ) x_π(i); accuracy: against the dominant label
    x = torch.randn(8, 1, 4, 6, generator=g)
    torch.testing.assert_close(mix_inputs(x, draw), lam.float()[:, None, None, None] * x
                               + (1 - lam.float())[:, None, None, None] * x[b])
    dominant = [int(y[i]) if lam[i] >= 0.5 else int(y[b[i]]) for i in range(8)]
    pred = logits.argmax(dim=1).tolist()
    assert int(mixup_correct(logits, y, draw)) == sum(p == d for p, d in zip(pred, dominant))


def test_mixup_in_the_training_step(corpus, tmp_path):
    """The step's loss is the formula on the log-mel batch mixed with the draw of (seed, rank, step)."""
    state = setup(tiny(corpus, tmp_path / "run", mixup=0.4, dropout=0.0, label_smoothing=0.1), progress=False)
    before = copy.deepcopy(state.model)
    x, y, lengths = next(iter(state.data.epoch_loader(0)))
    g = torch.Generator().manual_seed(mix_seed(0, loop._MIXUP, 0, 0))
    draw = draw_mixup(4, 0.4, g)
    with torch.no_grad():
        logits = before.train().classify(mix_inputs(before.frontend(x), draw))
    lam, b = draw.weight.double(), draw.partner
    want = (lam * smoothed_ce(logits, y, 0.1) + (1 - lam) * smoothed_ce(logits, y[b], 0.1)).mean()
    stats = train_step(state, x, y, lengths)
    assert float(stats.loss_sum) / 4 == pytest.approx(float(want), rel=1e-5)
    assert int(stats.correct) == int(mixup_correct(logits, y, draw))
    assert not torch.allclose(lam, torch.ones(4, dtype=torch.float64))  # the batch was really mixed


# ------------------------------------------------------------------------------ early stopping
# (val_macro_f1, val_loss) per epoch. New best: higher F1, or the same F1 with a lower loss.
SCRIPT = [(0.5, 1.0), (0.7, 0.9), (0.7, 0.95), (0.6, 0.8), (0.7, 0.85), (0.65, 0.7), (0.69, 0.7), (0.6, 0.7),
          (0.8, 0.6), (0.75, 0.6), (0.7, 0.6), (0.7, 0.6)]
# best epochs 1, 2, 5 (tie, lower loss), 9; with patience 3: epochs 6, 7, 8 without a new best -> stop after 8


def scripted(real=False):
    """validate() replaced: the scripted F1 and loss of the epoch just finished (with real=True, the
    real validation's other numbers, so the EMA model is really scored)."""
    def validate(state):
        f1, loss = SCRIPT[state.epoch - 1]
        base = real_validate(state) if real else {"val_accuracy": f1, "val_clips": 24}
        return {**base, "val_loss": loss, "val_macro_f1": f1}
    return validate


real_validate = loop.validate


def test_early_stopping_stops_at_the_predicted_epoch(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "validate", scripted())
    run = tmp_path / "run"
    assert main(["train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out", str(run), *FLAGS,
                 "--epochs", "12", "--early-stopping", "3", "--best-metric", "val_macro_f1"]) == 0
    out = capsys.readouterr().out
    assert "stopped early after epoch 8 of 12: val_macro_f1 has not improved for 3 epochs since epoch 5" in out
    assert "trained 8 epochs" in out
    lines = read_metrics(run)
    assert [m["epoch"] for m in lines] == list(range(1, 9))
    assert load_checkpoint(run / "best.pt")["epoch"] == 5
    assert sorted(p.name for p in (run / "snapshots").iterdir()) == [
        "epoch_001.pt", "epoch_002.pt", "epoch_005.pt", "epoch_008.pt"]  # the last epoch trained has one
    # resuming a stopped run says it is finished and trains nothing
    notes = []
    summary = fit(TrainConfig.from_dict({**json.loads((run / "config.json").read_text())["train_config"],
                                         "resume": True}), progress=False, log=notes.append)
    assert notes == [f"{run / 'last.pt'}: the run is finished (stopped early after epoch 8 of 12: val_macro_f1 has "
                     f"not improved for 3 epochs since epoch 5 (--early-stopping 3)); nothing to train (a larger "
                     f"--early-stopping continues it)"]
    assert summary["stopped_early"]["epoch"] == 8 and summary["epochs"] == 8 and len(read_metrics(run)) == 8
    # more patience on resume continues: best at 9, then 10, 11, 12 without one (3 < 5): all 12 epochs
    assert main(["train", "--out", str(run), "--resume", "--early-stopping", "5", "--no-progress"]) == 0
    assert "stopped early" not in capsys.readouterr().out
    assert len(read_metrics(run)) == 12 and load_checkpoint(run / "best.pt")["epoch"] == 9


def test_early_stopping_needs_validation(corpus, tmp_path, capsys):
    with pytest.raises(ValueError, match="early_stopping=2 needs a validation set"):
        fit(tiny(corpus, tmp_path / "a", val=None, early_stopping=2), progress=False)
    assert main(["train", "--train", str(corpus["train"]), "--out", str(tmp_path / "b"), *FLAGS,
                 "--early-stopping", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: early_stopping=2 needs a validation set to watch" in err
    for flags, message in ((["--ema", "1"], "ema must be a decay in [0, 1)"),
                           (["--mixup", "-0.5"], "mixup must be an alpha >= 0"),
                           (["--early-stopping", "-1"], "early_stopping must be a whole number of epochs >= 0")):
        assert main(["train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out",
                     str(tmp_path / "c"), *FLAGS, *flags]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# ------------------------------------------------------------------------------ logs
def assert_csv_is_jsonl(run: Path) -> None:
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    lines = read_metrics(run)
    assert len(rows) == len(lines) and all(list(row) == list(line) for row, line in zip(rows, lines))
    for row, line in zip(rows, lines):
        for key, value in line.items():
            assert (row[key] == "") if value is None else (float(row[key]) == value), (key, row[key], value)


def test_metrics_csv_equals_metrics_jsonl(corpus, tmp_path):
    fit(tiny(corpus, tmp_path / "run", epochs=2), progress=False)
    assert_csv_is_jsonl(tmp_path / "run")
    notes = []  # (a finished run, resumed, says so)
    fit(tiny(corpus, tmp_path / "run", epochs=2, resume=True), progress=False, log=notes.append)
    assert notes == [f"{tmp_path / 'run' / 'last.pt'}: the run is finished (all 2 epochs are done); nothing to train"]
    fit(tiny(corpus, tmp_path / "noval", epochs=2, val=None), progress=False)  # val columns empty
    assert_csv_is_jsonl(tmp_path / "noval")
    assert "val_loss" in (tmp_path / "noval" / "metrics.csv").read_text().splitlines()[0]


# ------------------------------------------------------------------------------ resume


def test_resume_is_bit_identical_with_ema_mixup_and_early_stopping(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "validate", scripted(real=True))  # the EMA model scored; the stop scripted
    settings = dict(epochs=12, ema=0.9, mixup=0.4, early_stopping=3, best_metric="val_macro_f1", dropout=0.3,
                    checkpoint_every_steps=1, deterministic=True, augment="default", specaugment=True,
                    freq_mask_bins=3, time_mask_frames=3)
    ref = fit(tiny(corpus, tmp_path / "ref", **settings), progress=False)
    assert ref["stopped_early"]["epoch"] == 8 and ref["steps"] == 8 * 18

    run = tmp_path / "killed"
    cfg = tiny(corpus, run, **settings)
    with pytest.raises(Stop):  # interrupted in epoch 6, after step 5 * 18 + 7 (last.pt of that step)
        fit(cfg, progress=False, augment=chain_stopping_after(cfg, 5 * 18 + 7))
    assert load_checkpoint(run / "last.pt")["progress"]["batches_done"] == 7
    (run / "metrics.csv").write_text("epoch\n")  # as if killed between metrics.jsonl and metrics.csv
    resumed = fit(TrainConfig.from_dict({**cfg.to_dict(), "resume": True}), progress=False)

    a, b = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(run / "last.pt")
    assert resumed["stopped_early"] == ref["stopped_early"] and b["step"] == a["step"]
    assert a["ema"]["updates"] == b["ema"]["updates"] == ref["steps"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["ema"]["weights"][k], b["ema"]["weights"][k]), k
    assert resumed["state_sha1"] == ref["state_sha1"] and resumed["ema_sha1"] == ref["ema_sha1"]
    best_a, best_b = load_checkpoint(tmp_path / "ref" / "best.pt"), load_checkpoint(run / "best.pt")
    assert best_a["epoch"] == best_b["epoch"] == 5
    assert all(torch.equal(best_a["model"][k], best_b["model"][k]) for k in best_a["model"])
    for x, y in zip(read_metrics(tmp_path / "ref"), read_metrics(run), strict=True):
        for key in ("epoch", "step", "train_loss", "train_acc", "val_loss", "val_accuracy", "val_macro_f1", "lr"):
            assert x[key] == y[key], (key, x, y)
    assert_csv_is_jsonl(run)


# ------------------------------------------------------------------------------ TensorBoard
def test_tensorboard_logs_what_the_run_measured(corpus, tmp_path):
    pytest.importorskip("tensorboard")
    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    cfg = tiny(corpus, run, epochs=2, tensorboard=True)
    summary = fit(cfg, progress=False)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    lines = read_metrics(run)
    for name in ("train_loss", "train_acc", "val_loss", "val_accuracy", "val_macro_f1", "lr", "clips_per_s"):
        logged = events.Scalars(f"epoch/{name}")
        assert [e.step for e in logged] == [m["step"] for m in lines]
        assert [e.value for e in logged] == pytest.approx([m[name] for m in lines], rel=1e-6)
    lrs = events.Scalars("step/lr")
    assert [e.step for e in lrs] == list(range(1, summary["steps"] + 1))
    assert [e.value for e in lrs] == pytest.approx([lr_at(s, summary["steps"], cfg) for s in range(summary["steps"])],
                                                   rel=1e-6)
    assert len(events.Scalars("step/train_loss")) == summary["steps"]
    # the first batch's log-mel inputs, low frequencies at the bottom, each scaled min → 0, max → 255
    other = setup(tiny(corpus, tmp_path / "other", epochs=2), progress=False)
    x = next(iter(other.data.epoch_loader(0)))[0]
    with torch.no_grad():
        spec = other.model.frontend(x)[:, 0].double()  # (4, F, T')
    for i in range(4):
        (image,) = events.Images(f"input/logmel_{i}")
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string))).astype(float)
        pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)[..., 0]
        s = spec[i].flip(0).numpy()
        want = 255 * (s - s.min()) / (s.max() - s.min())
        assert pixels.shape == (32, spec.shape[-1]) and np.abs(pixels - want).max() <= 1.0


def test_tensorboard_missing_is_one_line_before_training(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out", str(run), *FLAGS,
                 "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert err == ("audioconv train: error: --tensorboard needs the tensorboard package: pip install "
                   "'audioconv[tensorboard]' (or leave out --tensorboard; metrics.csv and metrics.jsonl are always "
                   "written)\n")
    assert not (run / "last.pt").exists()


def test_train_options_reach_the_config():
    from audioconv.cli import build_parser
    from audioconv.commands.train import config_from_args

    args = build_parser().parse_args(["train", "--train", "t.jsonl", "--ema", "0.999", "--mixup", "0.2",
                                      "--early-stopping", "5", "--tensorboard"])
    cfg = config_from_args(args)
    assert (cfg.ema, cfg.mixup, cfg.early_stopping, cfg.tensorboard) == (0.999, 0.2, 5, True)
    off = config_from_args(build_parser().parse_args(["train", "--train", "t.jsonl"]))
    assert (off.ema, off.mixup, off.early_stopping, off.tensorboard) == (0.0, 0.0, 0, False)


# ------------------------------------------------------------------------------ two processes
def test_two_processes_end_with_the_same_ema(corpus, tmp_path):
    """Under torchrun the EMA's BatchNorm statistics drift apart per rank inside an epoch (each rank
    averages its own batches' statistics); rank 0's are given to every rank before validation."""
    import subprocess

    from test_ddp import REPO, SCRIPT

    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), "train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out",
           str(tmp_path / "run"), *FLAGS, "--epochs", "2", "--ema", "0.9", "--mixup", "0.4", "--early-stopping", "5"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text())["summary"] for i in (0, 1)]
    assert ranks[0]["weights"] == "ema" and ranks[0]["steps"] == 18
    assert ranks[0]["state_sha1"] == ranks[1]["state_sha1"] and ranks[0]["ema_sha1"] == ranks[1]["ema_sha1"]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["ema"]["updates"] == 18
