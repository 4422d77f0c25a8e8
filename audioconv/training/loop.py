"""Train a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` from manifests: ``fit(TrainConfig(...))``.

Reads top to bottom like nanoGPT's ``train.py``, as small functions over one explicit
:class:`TrainState`: :func:`setup` (device, processes, resume, data, model, optimizer, augmentation),
:func:`train_step` (one optimizer step on one batch), :func:`run_epoch` (the batches of one epoch),
:func:`validate` (a no-grad pass over the validation set), :func:`save` (complete checkpoints and
the metrics line), and :func:`fit`, which composes them. The settings and the pure learning-rate
schedule live in :mod:`audioconv.training.config`, the datasets, samplers and loaders in
:mod:`audioconv.training.batches`. Where each piece of work happens:

* DataLoader workers only decode, resample and crop (``ManifestDataset``) — no CUDA in workers;
* the augmentation chain, the log-mel front end and SpecAugment run on the training device in the
  main process, on whole batches;
* with ``mixup`` the log-mel batch is mixed (:mod:`audioconv.training.mixup`) before the model;
* the model's forward/backward runs under autocast (bf16, or fp16 with a ``GradScaler``) on CUDA;
* with ``ema`` an average of the weights (:mod:`audioconv.training.ema`) follows every optimizer
  step; validation, ``best.pt`` and the snapshots then use it (``last.pt`` keeps both).

Randomness, so that a run is a pure function of its settings and ``seed`` (for a fixed device and
number of processes), and a resumed run continues bit for bit (every seed below is
:func:`audioconv.utils.mix_seed` of the parts named):

* the clip order of epoch ``e`` comes from ``DistributedSampler(seed=seed)`` with ``set_epoch(e)``;
* random crops are a function of ``(seed, epoch, clip index)`` (``ManifestDataset(seed=...)``);
* augmentation and SpecAugment draw from one ``torch.Generator`` per process, re-seeded at every
  step from ``(seed, rank, step)`` — ranks draw differently, and nothing needs saving to resume;
  mixup draws from a CPU generator seeded the same way on its own stream;
* dropout uses torch's global RNG, seeded from ``(seed, rank)`` and saved in every checkpoint.

Files written to ``config.out`` (by rank 0 only, each one atomically)::

    config.json       the TrainConfig, the model config, the augmentation chain
    labels.json       class names in output order
    metrics.jsonl     one line per epoch: epoch, step, train_loss, train_acc, val_loss,
                      val_accuracy, val_macro_f1, lr, clips_per_s, time_s
    metrics.csv       the same rows and columns as CSV (:mod:`audioconv.training.logs`)
    last.pt           everything needed to resume (also every ``checkpoint_every_steps`` steps)
    best.pt           weights of the epoch with the best ``best_metric`` (the lowest val loss by
                      default; for accuracy or macro-F1, ties go to the lower val loss)
    snapshots/epoch_001.pt ...   weights at epochs 1, 2, 5, 10, 20, 30, 40, 64, 128, ... and the last
                      (the epoch an early stop ends on included)
    tensorboard/      event files, with ``tensorboard`` on
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.io.files import ensure_folder, write_json
from audioconv.training import distributed, logs
from audioconv.training.batches import (TrainData, TrainingWarning, available_cores, build_data, data_report,
                                        data_workers)
from audioconv.training.checkpoint import (checkpoint_labels, load_checkpoint, load_model_state, rng_state,
                                           save_checkpoint, set_rng_state)
from audioconv.training.config import TrainConfig, augment_off, lr_at, snapshot_epochs
from audioconv.training.ema import ema_decay_advice, ema_state, load_ema_state, make_ema
from audioconv.training.evaluate import run_validation
from audioconv.training.metrics import accuracy, macro_f1
from audioconv.training.mixup import MixDraw, draw_mixup, mix_inputs, mixup_correct, mixup_loss
from audioconv.training.shard_data import build_shard_data, uses_shards
from audioconv.utils import accepts_keyword, mix_seed, resolve_device

__all__ = [
    "TrainState",
    "StepStats",
    "EpochSums",
    "NonFiniteLossError",
    "NonFiniteBatchError",
    "TrainingWarning",
    "setup",
    "train_step",
    "run_epoch",
    "validate",
    "save",
    "fit",
    "resolve_amp",
    "build_model",
    "build_augment",
]

# Streams of the run's seed, mix_seed(config.seed, STREAM, ...); batches.py uses 1, 3 and 5.
_AUGMENT, _DROPOUT, _MIXUP = 2, 4, 6


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step, epoch and batch."""


class NonFiniteBatchError(NonFiniteLossError):
    """A batch holds NaN/inf samples, as loaded or after the augmentation chain; the message names
    the clips. Raised before the backward pass: no weight is trained on them."""

# the loss of one step above this many times the loss at the start (or ln(n_classes)) is a divergence
_DIVERGENCE_FACTOR = 10.0


# =============================================================================== the state
class EpochSums:
    """Running sums of the epoch in progress: what a checkpoint carried over (a resumed epoch) plus
    this process's sums since :meth:`start` (kept on the device, so a step never waits for them)."""

    def __init__(self, device: torch.device, carried: dict | None = None):
        self.carried = dict(carried or {"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0})
        self.loss = torch.zeros((), dtype=torch.float64, device=device)  # summed cross-entropy, nats
        self.correct = torch.zeros((), dtype=torch.int64, device=device)  # this rank's right answers
        self.seen = 0  # clips of all ranks
        self.t0: float | None = None  # perf_counter at start; None = not started

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def add(self, stats: "StepStats", world_size: int) -> None:
        self.loss += stats.loss_sum.double()
        self.correct += stats.correct
        self.seen += stats.clips * world_size

    def running(self, info: distributed.DistInfo) -> dict:
        """``{"loss", "correct", "seen", "train_s"}`` over all ranks so far (collective once started)."""
        if self.t0 is None:
            return dict(self.carried)
        c = self.carried
        return {"loss": c["loss"] + float(self.loss), "seen": c["seen"] + self.seen,
                "correct": c["correct"] + int(distributed.all_reduce_sum(self.correct.clone(), info)),
                "train_s": c["train_s"] + time.perf_counter() - self.t0}


@dataclass(eq=False, repr=False)
class TrainState:
    """Everything a run holds between two steps. :func:`setup` builds it (fresh or from ``last.pt``);
    :func:`train_step` and :func:`run_epoch` advance it; :func:`save` writes it.

    ``epoch`` counts completed epochs, ``step`` optimizer steps, ``batches_done`` the batches done in
    the epoch in progress; ``best_*`` describe the best epoch so far; ``elapsed_s`` is the wall time
    of the completed epochs (validation included); ``last_metrics`` the last metrics line. ``ema``
    is the weight average (``config.ema``), ``tb`` the TensorBoard log (rank 0, ``config.tensorboard``).
    """

    config: TrainConfig
    info: distributed.DistInfo
    device: torch.device
    out: Path
    labels: list[str]
    model: nn.Module  # the model (front end + classifier: frontend, classify)
    net: nn.Module  # what the optimizer step runs: the classifier, wrapped in DDP under torchrun
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    chain: Callable | None  # waveform augmentation, (x (B, C, T), generator=g[, lengths=]) -> x
    chain_takes_lengths: bool
    chain_config: dict | None  # what rebuilds the chain (_chain_config), computed once: it never changes in a run
    specaug: nn.Module | None
    generator: torch.Generator  # augmentation + SpecAugment draws, re-seeded every step
    data: TrainData
    tally: EpochSums
    train_data: dict | None = None  # _train_data_record, computed once: the clips never change in a run
    progress: bool = False  # show tqdm bars (rank 0, when asked for)
    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    best_value: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    elapsed_s: float = 0.0
    last_metrics: dict | None = None
    start_loss: float | None = None  # mean loss of the first step of this process (divergence warning)
    diverged_warned: bool = False
    resumed_from: dict | None = None  # checkpoint, epoch, step, batches_done of a resumed run
    ema: nn.Module | None = None  # torch.optim.swa_utils.AveragedModel; .module is the EMA model
    tb: logs.TensorBoardLog | None = None

    @property
    def total_steps(self) -> int:
        return self.data.steps_per_epoch * int(self.config.epochs)

    @property
    def eval_model(self) -> nn.Module:
        """The weights validation scores and ``best.pt`` holds: the EMA model with ``ema`` on, else the model."""
        return self.model if self.ema is None else self.ema.module

    @property
    def stopped_early(self) -> bool:
        """Early stopping is on, ``best.pt`` has not improved for ``early_stopping`` epochs, and epochs
        are left (a pure function of the counters, so a resumed run knows it without saving more)."""
        patience = int(self.config.early_stopping)
        return (patience > 0 and self.data.val_loader is not None and self.epoch < int(self.config.epochs)
                and self.epoch - self.best_epoch >= patience)

    def __repr__(self) -> str:
        return (f"TrainState(out={str(self.out)!r}, device={str(self.device)!r}, rank={self.info.rank}/"
                f"{self.info.world_size}, epoch={self.epoch}, step={self.step}/{self.total_steps}, "
                f"batches_done={self.batches_done}, best_epoch={self.best_epoch})")


class StepStats(NamedTuple):
    """What :func:`train_step` returns: ``loss_sum`` = cross-entropy (nats) summed over the batch of
    every rank (0-d float32 tensor on the device), ``correct`` = this rank's right predictions (0-d
    int64 tensor), ``clips`` = this rank's batch size, ``lr`` = the learning rate used."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    clips: int
    lr: float


# =============================================================================== building blocks
def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for the ``amp`` setting on ``device``."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "none"
    if amp == "none":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' or 'none' on CPU")
        return torch.float16, True
    raise ValueError(f"amp must be 'auto', 'none', 'bf16' or 'fp16', got {amp!r}")


def build_model(config: TrainConfig, n_classes: int):
    """The model ``config.model`` names (:func:`audioconv.models.registry.build_model`), on CPU:
    ``cnn`` with ``channels``/``activation``/``dropout``, ``bcresnet`` with ``dropout``, or a
    factory's model (checked with one forward of a clip-sized log-mel); ``width``, ``n_mels`` and ``f_max_hz`` for all."""
    from audioconv.features import LogMelConfig
    from audioconv.models.registry import BUILTIN, build_model as build

    options = {}
    if config.model == "cnn":
        options = dict(channels=tuple(config.channels), activation=config.activation)
    if config.model in BUILTIN:
        options["dropout"] = config.dropout
    n_frames = int(round(config.clip_s * config.sample_rate)) // LogMelConfig.hop_length + 1
    frontend = {"n_mels": int(config.n_mels), **({"normalize": config.normalize} if config.normalize != "none" else {}),
                **({"f_max_hz": float(config.f_max_hz)} if config.f_max_hz is not None else {})}
    return build(config.model, n_classes, int(config.sample_rate), width=config.width,
                 frontend=frontend, n_frames=n_frames, **options)


def build_augment(config: TrainConfig):
    """The waveform augmentation chain for ``config.augment``: a callable ``(x, generator=g) -> x``
    on ``(B, C, T)``, or ``None`` for ``"none"``."""
    spec = config.augment
    if augment_off(spec):
        return None
    from audioconv.augment import chain as chain_mod

    if spec == "default":
        return _default_chain(chain_mod, int(config.sample_rate))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"augment must be 'default', 'none' or a chain JSON file; not found: {path}")
    return chain_mod.load_chain(path, int(config.sample_rate))


def _default_chain(chain_mod, sample_rate: int):
    """The default chain at ``sample_rate``; too low a rate is an error that gives the lowest rate the
    chain accepts (found by bisection: its filters need their frequency ranges below Nyquist)."""
    try:
        return chain_mod.default_chain(sample_rate)
    except ValueError as e:
        low, high = sample_rate, 48000
        while high - low > 1:
            mid = (low + high) // 2
            try:
                chain_mod.default_chain(mid)
                high = mid
            except ValueError:
                low = mid
        raise ValueError(f"sample_rate {sample_rate} Hz is too low for the default augmentation chain, which needs "
                         f"at least {high} Hz (at {sample_rate} Hz: {e}); use --sample-rate {high} or more, or "
                         f"--augment none") from None


def _chain_config(chain) -> dict | None:
    """The config that rebuilds ``chain`` from any folder (``chain_to_config``, file paths absolute), or
    ``None`` where there is none: no chain, a custom callable, a transform class of the user's own
    (``chain_from_config`` knows only the registry's), a chain holding in-memory tensors."""
    from audioconv.augment.chain import chain_to_config

    if chain is None or not _registered(chain):
        return None
    try:
        return chain_to_config(chain, absolute_paths=True)
    except ValueError:
        return None


def _registered(aug) -> bool:
    """Whether ``aug`` and every transform it holds are classes of the chain registry (``TRANSFORMS``)."""
    from audioconv.augment.chain import TRANSFORMS

    return (TRANSFORMS.get(type(aug).__name__) is type(aug)
            and all(_registered(t) for t in getattr(aug, "transforms", ())))


def _chain_description(state: TrainState) -> object:
    """What ``config.json`` records of the run's chain: its config (:func:`_chain_config`), else its repr."""
    return None if state.chain is None else state.chain_config or repr(state.chain)


def _run_chain(cfg: TrainConfig, ckpt: dict | None, out: Path):
    """The run's waveform chain: resumed, the one the run recorded (:func:`_recorded_chain`), so
    that an edited or deleted chain file or a changed default changes nothing — with one
    :class:`TrainingWarning` when ``cfg.augment`` now gives another chain; fresh, :func:`build_augment`."""
    recorded, where = _recorded_chain(cfg, ckpt, out)
    if recorded is None:
        return build_augment(cfg)
    from audioconv.augment.chain import chain_from_config

    try:
        why = None if _chain_config(build_augment(cfg)) == recorded else "now gives another chain"
    except FileNotFoundError:
        why = "is gone"
    except ValueError as e:
        why = f"no longer loads ({e})"
    if why:
        warnings.warn(f"resume: augment={cfg.augment} (--augment) {why}; continuing with the chain this run was "
                      f"trained with, recorded in {where}", TrainingWarning, stacklevel=5)
    return chain_from_config(recorded, int(cfg.sample_rate))


def _recorded_chain(cfg: TrainConfig, ckpt: dict | None, out: Path) -> tuple[dict | None, Path | None]:
    """The chain config a resumed run recorded, and where: ``last.pt``'s ``augment_chain``; for a
    checkpoint from before that record, the chain ``config.json`` described (a warning says when
    neither has one, as a changed default would then change the run). ``(None, None)`` when fresh."""
    if ckpt is None or "augment_chain" in ckpt:
        chain = (ckpt or {}).get("augment_chain")
        return (chain, out / "last.pt") if isinstance(chain, dict) else (None, None)
    try:
        described = json.loads((out / "config.json").read_text(encoding="utf-8")).get("augment")
    except (OSError, ValueError, AttributeError):
        described = None
    if isinstance(described, dict):
        return described, out / "config.json"
    if not augment_off(cfg.augment):
        warnings.warn(f"resume: {out / 'last.pt'} comes from an older version that did not record its augmentation "
                      f"chain; continuing with augment={cfg.augment} as it reads now", TrainingWarning, stacklevel=6)
    return None, None


class _Classifier(nn.Module):
    """``model.classify`` as a module's forward, so DistributedDataParallel can wrap it (the front end
    has no trainable parameters and runs outside, under no_grad, after augmentation)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.model.classify(logmel)


def _state_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter and buffer (names, dtypes and bytes): equal digests = equal weights."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# =============================================================================== set-up: the rest
def _configure_torch(cfg: TrainConfig, device: torch.device, info: distributed.DistInfo) -> int:
    """CPU threads and kernel choice for this process; returns the number of processes on this machine."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.is_distributed else 1))
    torch.set_num_threads(cfg.threads or max(1, available_cores() // local_world))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return local_world


def _resume_checkpoint(cfg: TrainConfig, out: Path, main: bool) -> dict | None:
    """``out/last.pt`` when resuming; otherwise ``None``, after clearing an earlier run if ``overwrite``."""
    last = out / "last.pt"
    if cfg.resume:
        if not last.exists():
            raise FileNotFoundError(f"resume: no checkpoint to resume from at {last}")
        ckpt = load_checkpoint(last, map_location="cpu")
        if ckpt.get("kind") != "train":
            raise ValueError(f"resume: {last} holds weights only (kind={ckpt.get('kind')!r}), not a training state")
        checkpoint_labels(ckpt, int(ckpt["model_config"].get("n_classes", -1)), f"checkpoint {last}")
        return ckpt
    if last.exists():
        if not cfg.overwrite:
            raise ValueError(f"{out} already holds a training run (last.pt); resume it (--resume), "
                             f"replace it (--overwrite) or choose another output folder")
        if main:
            for path in [out / "metrics.jsonl", out / "metrics.csv", out / "best.pt", last,
                         *(out / "snapshots").glob("epoch_*.pt"), *(out / "tensorboard").glob("events.out.tfevents.*")]:
                path.unlink(missing_ok=True)
    return None


def _without_db_reference(model_config: dict) -> dict:
    frontend = {k: v for k, v in (model_config.get("frontend") or {}).items() if k != "db_reference"}
    return {**model_config, "frontend": frontend}


def _model(cfg: TrainConfig, n_classes: int, ckpt: dict | None, out: Path, device: torch.device) -> nn.Module:
    """The model, with the same initial weights on every rank, or the checkpoint's; on ``device``.
    A resumed run keeps the dB reference its front end was trained with (a run from before version 2
    continues on the old scale)."""
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, n_classes)
    if ckpt is not None:
        from audioconv.models.registry import describe, rebuild

        spec, current = describe(model)
        saved_spec, saved = ckpt.get("model_spec", "cnn"), ckpt["model_config"]
        saved, wanted = _without_db_reference(saved), _without_db_reference(current)
        if saved_spec != spec:
            raise ValueError(f"resume: {out / 'last.pt'} holds model {saved_spec!r}, this run asks for {spec!r}; "
                             f"use the same --model or a new output folder")
        diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"resume: {out / 'last.pt'} is from another model shape ({detail}); "
                             f"use the same settings or a new output folder")
        if ckpt["model_config"] != current:  # an older front-end calibration (db_reference): the run's own
            model = rebuild(spec, ckpt["model_config"])
        load_model_state(model, ckpt["model"], source=f"checkpoint {out / 'last.pt'}")
    return model.to(device)


def _optimizer(cfg: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; weight decay on conv/linear weights only (not on biases and norm scales)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99),
                             fused=device.type == "cuda")


def _specaugment(cfg: TrainConfig, model: nn.Module):
    if not cfg.specaugment:
        return None
    from audioconv.training.specaugment import SpecAugment

    return SpecAugment(cfg.freq_mask_bins, cfg.time_mask_frames, cfg.n_freq_masks, cfg.n_time_masks,
                       freq_warp=cfg.freq_warp, mel_hz=model.frontend.mel_hz())


def _restore(state: TrainState, ckpt: dict) -> None:
    """Continue where ``ckpt`` (a ``last.pt``) stopped: optimizer, scaler, counters, sums, best, RNG."""
    cfg, info = state.config, state.info
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt["step"])
    prog = ckpt["progress"]
    state.batches_done = int(prog["batches_done"])
    state.tally = EpochSums(state.device, {k: prog[k] for k in ("loss", "correct", "seen", "train_s")})
    state.best_value, state.best_epoch = float(prog["best_value"]), int(prog["best_epoch"])
    state.best_loss, state.elapsed_s = float(prog.get("best_loss", math.inf)), float(prog["elapsed_s"])
    state.last_metrics = ckpt.get("metrics")
    state.resumed_from = {"checkpoint": str(state.out / "last.pt"), "epoch": state.epoch, "step": state.step,
                          "batches_done": state.batches_done}
    ranks = ckpt["rng"]["per_rank"]
    if len(ranks) == info.world_size:
        set_rng_state(ranks[info.rank], state.device)
    else:  # another number of processes: continue, but not bit-exactly
        torch.manual_seed(mix_seed(cfg.seed, _DROPOUT, info.rank, state.step))
    if state.ema is not None and ckpt.get("ema") is not None:  # else (EMA newly on) it starts at this step
        load_ema_state(state.ema, ckpt["ema"], source=f"checkpoint {state.out / 'last.pt'}")
    _warn_if_data_changed(ckpt.get("train_data"), state.train_data, state.out / "last.pt")
    if info.is_main:
        logs.truncate_metrics(state.out, state.epoch)


def _train_data_record(data: TrainData) -> dict | None:
    """``{"clips", "sha1"}`` of the training clips (file, offset, duration, label, in order) a run
    records in ``last.pt``; ``None`` for data without a clip list (shards)."""
    records = getattr(data.train_ds, "records", None)
    if records is None:
        return None
    h = hashlib.sha1()
    for r in records:
        h.update(json.dumps([r["audio_filepath"], r.get("offset"), r.get("duration"), r["label"]]).encode())
    return {"clips": len(records), "sha1": h.hexdigest()}


def _warn_if_data_changed(then: dict | None, now: dict | None, where: Path) -> None:
    """A resumed run whose training clips are not those it started with trains on, but says so."""
    if then is None or now is None or then == now:
        return
    what = (f"{then['clips']} clips then, {now['clips']} now" if then["clips"] != now["clips"] else
            f"the same number of clips, {now['clips']}, but not the same ones")
    warnings.warn(f"resume: the training clips changed since {where} was written ({what}); the run goes on with "
                  f"today's clips, so it is not what an uninterrupted run would have been (epochs of another "
                  f"length, another order)", TrainingWarning, stacklevel=2)


def _write_run_info(state: TrainState) -> None:
    """``labels.json`` and ``config.json`` (the settings, the model, the augmentation) in the run folder."""
    from audioconv.data.dataset import save_labels

    state.out.mkdir(parents=True, exist_ok=True)
    save_labels(state.out / "labels.json", state.labels)
    d = state.data
    write_json(state.out / "config.json", {
        "train_config": state.config.to_dict(), **_model_record(state.model),
        "augment": _chain_description(state),
        "specaugment": state.specaug.to_dict() if state.specaug is not None else None,
        "labels": state.labels, "world_size": state.info.world_size, "device": str(state.device),
        "steps_per_epoch": d.steps_per_epoch, "batch_size_per_process": d.batch_size, "torch": torch.__version__})


def _build_state(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, augment, progress: bool):
    local_world = _configure_torch(cfg, device, info)
    amp_dtype, use_scaler = resolve_amp(cfg.amp, device)
    out = Path(cfg.out)
    if info.is_main:
        ensure_folder(out)  # a file in the way or a read-only folder: an error now, not after the data scan
    if cfg.tensorboard and info.is_main:
        logs.require_tensorboard()  # a missing package: an error now, not after the data scan
    ckpt = _resume_checkpoint(cfg, out, info.is_main)
    chain = augment if augment is not None else _run_chain(cfg, ckpt, out)
    build = build_shard_data if uses_shards(cfg) else build_data  # shards: --train 'DIR/train-{000000..000123}.tar'
    data, labels = build(cfg, info, device, data_workers(cfg, device, local_world), ckpt["labels"] if ckpt else None)
    model = _model(cfg, len(labels), ckpt, out, device)
    net: nn.Module = _Classifier(model)
    if info.is_distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if isinstance(chain, nn.Module):
        chain.to(device)
    state = TrainState(
        config=cfg, info=info, device=device, out=out, labels=list(labels), model=model, net=net,
        optimizer=_optimizer(cfg, model, device), scaler=torch.amp.GradScaler(device.type, enabled=use_scaler),
        amp_dtype=amp_dtype, chain=chain, chain_takes_lengths=chain is not None and accepts_keyword(chain, "lengths"),
        chain_config=_chain_config(chain), specaug=_specaugment(cfg, model), generator=torch.Generator(device=device),
        data=data, tally=EpochSums(device), train_data=_train_data_record(data),
        progress=progress and info.is_main, ema=make_ema(model, cfg.ema) if cfg.ema > 0 else None)
    torch.manual_seed(mix_seed(cfg.seed, _DROPOUT, info.rank))  # dropout: different per rank
    if ckpt is not None:
        _restore(state, ckpt)
    if info.is_main:
        if ckpt is None or not _finished(state):  # a finished run resumed trains nothing: its config.json stays
            _write_run_info(state)
        _warn_ema_horizon(state)
        if cfg.tensorboard:
            state.tb = logs.TensorBoardLog(out / "tensorboard", purge_step=state.step if ckpt is not None else None)
    return state


def _finished(state: TrainState) -> bool:
    """No epoch is left to train: all ``config.epochs`` are done, or early stopping ended the run."""
    return state.epoch >= int(state.config.epochs) or state.stopped_early


def _warn_ema_horizon(state: TrainState) -> None:
    advice = ema_decay_advice(state.config.ema, state.total_steps) if state.ema is not None else None
    if advice and state.epoch == 0 and state.batches_done == 0:
        warnings.warn(advice, TrainingWarning, stacklevel=5)


def setup(config: TrainConfig, augment=None, progress: bool = True) -> TrainState:
    """Everything a run needs, fresh or (``config.resume``) continued from ``config.out/last.pt``.

    Validates ``config``, picks the device, joins the process group under ``torchrun`` (then call
    ``distributed.cleanup(state.info)`` when done; :func:`fit` does), sets CPU threads, builds the
    datasets, model, optimizer and augmentation, restores a checkpoint, and (rank 0) writes
    ``labels.json`` and ``config.json``.

    Args:
        config: a :class:`~audioconv.training.config.TrainConfig`.
        augment: a callable ``(x (B, C, T), generator=g) -> x`` used instead of ``config.augment``.
        progress: tqdm bars on rank 0.

    Raises:
        ValueError / FileNotFoundError: bad settings or data (see :func:`fit`).
    """
    cfg = TrainConfig.from_dict(config.to_dict()).validate().with_absolute_paths()
    info = distributed.detect()
    device = resolve_device(cfg.device, info.local_rank)
    info = distributed.setup(device.type)
    try:
        return _build_state(cfg, info, device, augment, progress)
    except BaseException:
        distributed.cleanup(info)
        raise


# =============================================================================== one step
@torch.no_grad()
def _augment(state: TrainState, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The waveform chain on the device, drawing from the generator seeded by ``(seed, rank, step)``."""
    state.generator.manual_seed(mix_seed(state.config.seed, _AUGMENT, state.info.rank, state.step))
    if state.chain is None:
        return x
    if state.chain_takes_lengths:
        return state.chain(x, generator=state.generator, lengths=lengths.to(state.device))
    return state.chain(x, generator=state.generator)


@torch.no_grad()
def _features(state: TrainState, x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T)`` waveforms → ``(B, 1, F, T')`` log-mel, SpecAugmented (same generator, after the chain)."""
    spec = state.model.frontend(x)
    if state.specaug is not None:
        spec = state.specaug(spec, generator=state.generator)
    return spec


def _mixup(state: TrainState, spec: torch.Tensor) -> tuple[torch.Tensor, MixDraw | None]:
    """With ``config.mixup`` > 0: the log-mel batch mixed with a permutation of itself, and the draw
    (from a CPU generator seeded by ``(seed, _MIXUP, rank, step)``); else ``(spec, None)``."""
    if not state.config.mixup:
        return spec, None
    g = torch.Generator().manual_seed(mix_seed(state.config.seed, _MIXUP, state.info.rank, state.step))
    draw = draw_mixup(spec.shape[0], float(state.config.mixup), g, spec.device)
    return mix_inputs(spec, draw), draw


def _where(state: TrainState, extra: str = "") -> str:
    return (f"step {state.step + 1} (epoch {state.epoch + 1}, batch {state.batches_done + 1} of "
            f"{state.data.steps_per_epoch}{extra})")


def _name_clips(bad: torch.Tensor, clips: Sequence[str] | None) -> str:
    """The clips at the ``True`` rows of ``bad`` (or, when the names do not line up with the rows
    because unreadable clips were skipped, the clips of the whole batch)."""
    rows = bad.nonzero().flatten().tolist()
    if clips is not None and len(clips) == bad.numel():
        names, lead = [clips[i] for i in rows], ""
    elif clips is not None:
        names, lead = list(clips), "one of "
    else:
        names, lead = [f"batch row {i}" for i in rows], ""
    return lead + ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _check_step(state: TrainState, checks: torch.Tensor, bad_in: torch.Tensor, bad_aug: torch.Tensor, lr: float,
                clips: Sequence[str] | None) -> float:
    """Stop on non-finite input, augmentation output or loss; return the batch's summed loss.

    ``checks`` = ``[summed loss, clips with NaN/inf as loaded, clips with NaN/inf after augmentation]``
    summed over all ranks (one collective and one device sync per step), so every rank stops together.
    """
    loss_sum, n_bad_in, n_bad_aug = checks.tolist()
    last = state.out / "last.pt"
    tail = f"; last good checkpoint: {last}" if last.exists() else ""
    if n_bad_in:
        raise NonFiniteBatchError(
            f"non-finite samples (NaN or inf) in the training batch at {_where(state)}: "
            f"{_name_clips(bad_in, clips) if bad_in.any() else 'clips of another process'}; not training on them "
            f"(fix or remove these clips)" + tail)
    if n_bad_aug:
        raise NonFiniteBatchError(
            f"the augmentation chain made non-finite samples (NaN or inf) at {_where(state)} from "
            f"{_name_clips(bad_aug, clips) if bad_aug.any() else 'clips of another process'}; not training on them "
            f"(check the chain, --augment)" + tail)
    if not math.isfinite(loss_sum):
        raise NonFiniteLossError(
            f"training loss is {loss_sum} at {_where(state, f', lr {lr:.3g}')}; lower the learning rate (--lr) "
            f"or check the input audio for NaN/inf" + tail)
    return loss_sum


def _watch_divergence(state: TrainState, mean_loss: float, lr: float) -> None:
    """Warn once (rank 0) when a step's loss exceeds ``_DIVERGENCE_FACTOR`` times the larger of the
    first step's loss and ``ln(n_classes)`` (the loss of a uniform guess): the run is diverging."""
    if state.start_loss is None:
        state.start_loss = mean_loss
    reference = max(state.start_loss, math.log(len(state.labels)))
    if state.diverged_warned or mean_loss <= _DIVERGENCE_FACTOR * reference:
        return
    state.diverged_warned = True
    if state.info.is_main:
        warnings.warn(f"the training loss exploded to {mean_loss:.3g} at step {state.step + 1} (epoch "
                      f"{state.epoch + 1}), more than {_DIVERGENCE_FACTOR:g} x its start ({reference:.3g}): the learning "
                      f"rate ({lr:.3g} at this step, peak {state.config.lr:g}) is too high — lower --lr", TrainingWarning, stacklevel=4)


def _bad_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: which examples of ``x`` (B, ...) hold a NaN or inf, without a device sync.

    Tested on each row's sum: NaN and inf propagate through it, and one pass of a sum is ~20x cheaper
    than ``torch.isfinite`` on the CPU. (A finite row whose sum overflows float32 counts as bad too:
    samples near 1e38, which the front end's power could not hold either.)"""
    return ~torch.isfinite(x.flatten(1).sum(dim=1))


def _optimize(state: TrainState, spec: torch.Tensor, y: torch.Tensor, lr: float, bad_in: torch.Tensor,
              bad_aug: torch.Tensor, clips: Sequence[str] | None, mix: MixDraw | None = None) -> StepStats:
    """Forward under autocast, cross-entropy (mixed with ``mix``), the NaN/inf checks (on every rank),
    backward, clip, step, and the EMA update."""
    cfg = state.config
    with torch.autocast(state.device.type, dtype=state.amp_dtype or torch.float32, enabled=state.amp_dtype is not None):
        logits = state.net(spec)
    loss = mixup_loss(logits.float(), y, mix, cfg.label_smoothing)
    checks = torch.stack([loss.detach() * y.shape[0], bad_in.sum().float(), bad_aug.sum().float()])
    distributed.all_reduce_sum(checks, state.info)  # every rank sees a NaN anywhere
    loss_sum = _check_step(state, checks, bad_in, bad_aug, lr, clips)
    _watch_divergence(state, loss_sum / (y.shape[0] * state.info.world_size), lr)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if cfg.grad_clip_norm > 0:
        state.scaler.unscale_(state.optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), cfg.grad_clip_norm)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    return StepStats(checks[0], mixup_correct(logits, y, mix), int(y.shape[0]), lr)


def train_step(state: TrainState, x: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor,
               on_phase: Callable[[str], None] | None = None, clips: Sequence[str] | None = None) -> StepStats:
    """One optimizer step on one batch; advances ``state.step``.

    Sets the learning rate :func:`~audioconv.training.config.lr_at` gives for ``state.step``, moves
    the batch to the device, augments it (seeded by ``(seed, rank, step)``, with the clips' real
    lengths), computes the log-mel front end and SpecAugment, mixes the log-mel batch (``mixup``),
    then forward under autocast, label-smoothed cross-entropy (of both labels, weighted, with
    mixup), the NaN/inf checks, backward, gradient clipping, the optimizer step (through the
    GradScaler) and the EMA update (``ema``). Warns once (:class:`TrainingWarning`) when the loss
    explodes. The run's first batch goes to TensorBoard as images (``tensorboard``).

    Args:
        state: from :func:`setup`.
        x: ``(B, C, T)`` float32 waveforms. y: ``(B,)`` int64 class indices. lengths: ``(B,)``
            samples of real audio per clip.
        on_phase: called with ``"transfer"``, ``"augment"``, ``"features"``, ``"model"`` as each part
            ends (benchmarks time the parts with it).
        clips: names of the batch's clips (row order), for the messages; :func:`run_epoch` gives them.

    Returns:
        :class:`StepStats`; with mixup, ``loss_sum`` is the mixed loss and ``correct`` counts the
        predictions of each example's dominant label (:func:`~audioconv.training.mixup.mixup_correct`).

    Raises:
        NonFiniteBatchError: NaN/inf samples in the batch as given, or after the augmentation chain
            (naming the clips). NonFiniteLossError: the loss of the batch (any rank's) is NaN or
            infinite. Both are raised before the backward pass, so no weight moved (BatchNorm
            running statistics did see the batch).
    """
    mark = on_phase or (lambda name: None)
    lr = lr_at(state.step, state.total_steps, state.config)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    x, y = x.to(state.device, non_blocking=True), y.to(state.device, non_blocking=True)
    bad_in = _bad_rows(x)
    mark("transfer")
    x = _augment(state, x, lengths)
    bad_aug = _bad_rows(x)
    mark("augment")
    spec, mix = _mixup(state, _features(state, x))
    if state.tb is not None and state.step == 0:
        state.tb.inputs(spec, 0)
    mark("features")
    stats = _optimize(state, spec, y, lr, bad_in, bad_aug, clips, mix)
    mark("model")
    state.step += 1
    return stats


# =============================================================================== one epoch
def run_epoch(state: TrainState) -> dict:
    """Train through the rest of epoch ``state.epoch`` (all of it unless resumed mid-epoch).

    Writes ``last.pt`` every ``checkpoint_every_steps`` steps (collective under DDP). Afterwards
    ``state.epoch`` is one higher and ``batches_done`` 0.

    Returns:
        ``{"train_loss", "train_acc", "clips_per_s"}`` of the whole epoch over all ranks (with mixup:
        the mixed loss, and the accuracy on each example's dominant label).
    """
    cfg, info, d = state.config, state.info, state.data
    loader = d.epoch_loader(state.epoch, state.batches_done)
    bar = tqdm(total=d.steps_per_epoch, initial=state.batches_done, desc=f"epoch {state.epoch + 1}", unit="step",
               leave=False, disable=not state.progress)
    batches = d.epoch_batches(state.epoch)  # the clips of each batch, for messages
    state.tally.start()
    read = 0  # batches the loader gave in this call
    for x, y, lengths in loader:
        read += 1
        if y.shape[0] == 0:  # every clip of the batch was unreadable and skipped (skip_bad)
            if info.is_distributed:
                raise ValueError(f"a whole batch of unreadable clips at epoch {state.epoch + 1}, batch "
                                 f"{state.batches_done + 1}; fix or remove them (see the warnings) to train with torchrun")
            state.batches_done += 1  # counted, so that a resume skips it too
            bar.update(1)
            continue
        stats = train_step(state, x, y, lengths, clips=batches[state.batches_done])
        state.batches_done += 1
        state.tally.add(stats, info.world_size)
        bar.update(1)
        if state.progress or state.tb is not None:
            mean_loss = float(stats.loss_sum) / (stats.clips * info.world_size)
            if state.progress:
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{stats.lr:.2e}")
            if state.tb is not None:
                state.tb.step(state.step, mean_loss, stats.lr)
        every = cfg.checkpoint_every_steps
        if every and state.step % every == 0 and state.batches_done < d.steps_per_epoch:
            save(state)
    bar.close()
    if state.device.type == "cuda":
        torch.cuda.synchronize(state.device)
    sums = state.tally.running(info)
    if read and not sums["seen"]:
        raise ValueError(f"no clip of the training set could be read in epoch {state.epoch + 1}: every batch was "
                         f"unreadable clips, skipped (see the warnings above); fix or remove them")
    state.epoch += 1
    state.batches_done = 0
    state.tally = EpochSums(state.device)
    seen = max(1, sums["seen"])
    return {"train_loss": sums["loss"] / seen, "train_acc": sums["correct"] / seen,
            "clips_per_s": sums["seen"] / max(sums["train_s"], 1e-9)}


def validate(state: TrainState) -> dict:
    """``{"val_loss", "val_accuracy", "val_macro_f1"}`` of ``state.eval_model`` (the EMA weights with
    ``ema`` on) on the validation set, summed over all ranks (collective); ``None`` values without a
    validation set."""
    if state.data.val_loader is None:
        return {"val_loss": None, "val_accuracy": None, "val_macro_f1": None, "val_clips": None}
    confusion, loss_sum, _ = run_validation(state.eval_model, state.data.val_loader, state.device, len(state.labels),
                                            state.amp_dtype, state.progress)
    distributed.all_reduce_sum(confusion, state.info)
    distributed.all_reduce_sum(loss_sum, state.info)
    n_val = int(confusion.sum())
    if n_val == 0:
        raise ValueError("no clip of the validation set could be read: every one was unreadable and skipped (see "
                         "the warnings above); fix or remove them, or train without a validation set")
    return {"val_loss": float(loss_sum) / max(1, n_val), "val_accuracy": accuracy(confusion.cpu()),
            "val_macro_f1": macro_f1(confusion.cpu()), "val_clips": n_val}


def _update_best(state: TrainState, metrics: dict) -> bool:
    """Whether this epoch is the best so far: lowest ``val_loss`` or highest ``val_macro_f1`` /
    ``val_accuracy`` (``best_metric``; the epoch number without a validation set); ties (common
    for accuracy on small validation sets) go to the lower val loss."""
    has_val = state.data.val_loader is not None
    value = metrics[state.config.best_metric] if has_val else float(state.epoch)
    loss_now = metrics["val_loss"] if has_val else 0.0
    if has_val and state.config.best_metric == "val_loss":
        is_best = state.best_epoch == 0 or loss_now < state.best_loss
    else:
        is_best = value > state.best_value or (value == state.best_value and loss_now < state.best_loss)
    if is_best:
        state.best_value, state.best_loss, state.best_epoch = value, loss_now, state.epoch
    return is_best


# =============================================================================== checkpoints
def _model_record(model: nn.Module) -> dict:
    """``{"model_spec", "model_config"}``: what :func:`~audioconv.training.checkpoint.load_model` rebuilds."""
    from audioconv.models.registry import describe

    spec, config = describe(model)
    return {"model_spec": spec, "model_config": config}


def _weights_checkpoint(state: TrainState) -> dict:
    """``best.pt`` / snapshot: the weights validation scored (``weights``: ``"ema"`` or ``"raw"``)."""
    return {"kind": "model", "model": state.eval_model.state_dict(), **_model_record(state.model),
            "weights": "raw" if state.ema is None else "ema", "labels": list(state.labels),
            "train_config": state.config.to_dict(), "epoch": state.epoch, "step": state.step,
            "metrics": state.last_metrics}


def _training_checkpoint(state: TrainState) -> dict:
    """Everything to continue after the current step: the raw weights in ``model``, the EMA (weights
    and update count) in ``ema``. Collective under DDP (every rank's RNG state)."""
    cfg, info = state.config, state.info
    mine = {k: v.cpu() for k, v in rng_state(state.device).items()}
    rng = distributed.all_gather_object(mine, info)
    return {**_weights_checkpoint(state), "kind": "train", "model": state.model.state_dict(), "weights": "raw",
            "ema": None if state.ema is None else ema_state(state.ema), "augment_chain": state.chain_config,
            "optimizer": state.optimizer.state_dict(), "train_data": state.train_data,
            "scheduler": {"name": cfg.schedule, "step": state.step, "total_steps": state.total_steps},
            "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
            "rng": {"per_rank": rng, "world_size": info.world_size,
                    "sampler": {"seed": int(cfg.seed), "epoch": state.epoch, "batches_done": state.batches_done}},
            "progress": {"batches_done": state.batches_done, **state.tally.running(info),
                         "best_value": state.best_value, "best_loss": state.best_loss,
                         "best_epoch": state.best_epoch, "elapsed_s": state.elapsed_s}}


def save(state: TrainState, metrics: dict | None = None, is_best: bool = False) -> None:
    """Write the run's checkpoints; every rank calls it (collective under DDP), rank 0 writes.

    Mid-epoch (``metrics`` None): ``last.pt`` only. At the end of an epoch: the ``metrics`` line
    appended to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard), ``best.pt`` when
    ``is_best``, the epoch's snapshot when it is one of
    :func:`~audioconv.training.config.snapshot_epochs` or an early stop ends the run here, then ``last.pt``.
    """
    ckpt = _training_checkpoint(state)
    if not state.info.is_main:
        return
    out = state.out
    if metrics is not None:
        logs.append_metrics(out, metrics)
        if state.tb is not None:
            state.tb.epoch(metrics)
        weights = _weights_checkpoint(state)
        if is_best:
            save_checkpoint(out / "best.pt", weights)
        if state.epoch in snapshot_epochs(int(state.config.epochs)) or state.stopped_early:
            save_checkpoint(out / "snapshots" / f"epoch_{state.epoch:03d}.pt", weights)
    save_checkpoint(out / "last.pt", ckpt)


# =============================================================================== the run
def _end_epoch(state: TrainState, train: dict, t_epoch: float) -> tuple[dict, bool]:
    """The epoch's metrics line (validation included) and whether it is the best epoch so far."""
    distributed.broadcast_module_state(state.model, state.info)  # identical BatchNorm statistics on every rank
    if state.ema is not None:
        distributed.broadcast_module_state(state.ema.module, state.info)
    metrics = {"epoch": state.epoch, "step": state.step, "train_loss": train["train_loss"],
               "train_acc": train["train_acc"], **validate(state),
               "lr": lr_at(state.step - 1, state.total_steps, state.config), "clips_per_s": train["clips_per_s"]}
    state.elapsed_s += time.perf_counter() - t_epoch
    metrics["time_s"] = state.elapsed_s
    state.last_metrics = metrics
    return metrics, _update_best(state, metrics)


def _summary(state: TrainState) -> dict:
    out = state.out
    return {"out": str(out), "labels": list(state.labels), "epochs": state.epoch, "steps": state.step,
            "best_epoch": state.best_epoch,
            "best_metric": state.config.best_metric if state.data.val_loader is not None else "epoch",
            "best_value": state.best_value, "best_checkpoint": str(out / "best.pt"),
            "last_checkpoint": str(out / "last.pt"), "final": state.last_metrics, "time_s": state.elapsed_s,
            "world_size": state.info.world_size, "device": str(state.device), "state_sha1": _state_digest(state.model),
            "data": data_report(state.data, state.info), "resumed_from": state.resumed_from,
            "weights": "raw" if state.ema is None else "ema",
            "ema_sha1": None if state.ema is None else _state_digest(state.ema.module),
            "stopped_early": _stop_record(state)}


def _stop_record(state: TrainState) -> dict | None:
    """``{"epoch", "best_epoch", "patience", "metric", "note"}`` when early stopping ended the run, else ``None``."""
    if not state.stopped_early:
        return None
    cfg = state.config
    note = (f"stopped early after epoch {state.epoch} of {cfg.epochs}: {cfg.best_metric} has not improved for "
            f"{state.epoch - state.best_epoch} epochs since epoch {state.best_epoch} (--early-stopping "
            f"{cfg.early_stopping})")
    return {"epoch": state.epoch, "best_epoch": state.best_epoch, "patience": int(cfg.early_stopping),
            "metric": cfg.best_metric, "note": note}


def _resume_note(state: TrainState) -> str:
    r, steps_per_epoch = state.resumed_from, state.data.steps_per_epoch
    stop = _stop_record(state)
    if stop is not None:
        return (f"{r['checkpoint']}: the run is finished ({stop['note']}); nothing to train (a larger "
                f"--early-stopping continues it)")
    if state.epoch >= state.config.epochs:
        return f"{r['checkpoint']}: the run is finished (all {state.config.epochs} epochs are done); nothing to train"
    where = (f"after epoch {r['epoch']}" if not r["batches_done"] else
             f"in epoch {r['epoch'] + 1} after batch {r['batches_done']} of {steps_per_epoch}")
    return f"resuming from {r['checkpoint']}: step {r['step']}, {where}"


def fit(config: TrainConfig, progress: bool = True, augment=None, log: Callable[[str], None] | None = None) -> dict:
    """Train a model as ``config`` says; write the run folder; return a summary.

    Works in one process and under ``torchrun`` (one process per GPU or CPU worker; see
    :mod:`audioconv.training.distributed`): ranks split each epoch with a ``DistributedSampler``, draw
    different augmentations, average gradients with DistributedDataParallel, and rank 0 writes.

    Args:
        config: a :class:`~audioconv.training.config.TrainConfig`.
        progress: show tqdm bars (epochs, steps) on rank 0.
        augment: override ``config.augment`` with any callable ``(x (B, C, T), generator=g) -> x``
            (a ``Compose`` chain, a recorder for tests...). A chain of the registry's transforms is
            recorded in ``last.pt`` and a resume continues with it; any other callable must be passed again.
        log: called (rank 0) with one-line notes as the run goes: where a resumed run continues from.

    Returns:
        JSON-ready dict: ``out``, ``labels``, ``epochs``, ``steps``, ``best_epoch``, ``best_metric``,
        ``best_value``, ``best_checkpoint``, ``last_checkpoint``, ``final`` (the last metrics line),
        ``time_s``, ``world_size``, ``device``, ``state_sha1`` (digest of the final weights), ``data``
        (per set: ``clips`` selected and ``skipped`` ``{"manifest:line": reason}`` by ``skip_bad``),
        ``resumed_from`` (``None``, or the checkpoint, epoch, step and batches_done a resume started at),
        ``weights`` (``"ema"`` or ``"raw"``: what validation and ``best.pt`` used), ``ema_sha1``
        (digest of the final EMA weights, or ``None``), ``stopped_early`` (``None``, or the epoch
        it stopped after, ``best_epoch``, ``patience``, ``metric`` and a one-line ``note``).

    Warns:
        TrainingWarning: a batch size above the training set's size, validation clips that are also
            training clips, a loss that explodes (the learning rate is too high). Under torchrun
            only rank 0 shows them (:func:`~audioconv.training.distributed.warnings_on_main`).

    Raises:
        ValueError / FileNotFoundError: bad settings or data (empty training set, one class, labels
            in validation that are not in training, a resume checkpoint of another model shape).
        OutputError: the run folder cannot be written (it is a file, read-only, the disk is full).
        NonFiniteLossError: the loss became NaN/inf (the message names the step);
            NonFiniteBatchError: NaN/inf samples in a batch (the message names the clips).
    """
    with distributed.warnings_on_main():  # under torchrun: one copy of each warning, from rank 0
        state = setup(config, augment, progress)
        if log is not None and state.resumed_from is not None and state.info.is_main:
            log(_resume_note(state))
        try:
            bar = tqdm(total=int(state.config.epochs), initial=state.epoch, desc="epochs", unit="epoch",
                       disable=not state.progress)
            state.net.train()
            while state.epoch < state.config.epochs and not state.stopped_early:
                t_epoch = time.perf_counter()
                metrics, is_best = _end_epoch(state, run_epoch(state), t_epoch)
                save(state, metrics, is_best)
                bar.update(1)
                if state.progress:
                    bar.set_postfix({k: round(v, 4) for k, v in metrics.items()
                                     if k in ("train_loss", "val_accuracy", "val_macro_f1") and v is not None})
            bar.close()
            summary = _summary(state)
            distributed.barrier(state.info)  # (after the summary: no rank tears the group down while another works)
            return summary
        finally:
            if state.tb is not None:
                state.tb.close()
            distributed.cleanup(state.info)
