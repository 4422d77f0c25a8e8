"""Train a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` from manifests: ``fit(TrainConfig(...))``.

Reads top to bottom like nanoGPT's ``train.py``: settings (:class:`TrainConfig`), set-up (device,
processes, data, model, optimizer, resume), a pure learning-rate schedule (:func:`lr_at`), the loop,
a no-grad validation, complete checkpoints. Where each piece of work happens:

* DataLoader workers only decode, resample and crop (``ManifestDataset``) — no CUDA in workers;
* the augmentation chain, the log-mel front end and SpecAugment run on the training device in the
  main process, on whole batches;
* the model's forward/backward runs under autocast (bf16, or fp16 with a ``GradScaler``) on CUDA.

Randomness, so that a run is a pure function of its settings and ``seed`` (for a fixed device and
number of processes), and a resumed run continues bit for bit:

* the clip order of epoch ``e`` comes from ``DistributedSampler(seed=seed)`` with ``set_epoch(e)``;
* random crops are a function of ``(seed, epoch, clip index)`` (``ManifestDataset(seed=...)``);
* augmentation and SpecAugment draw from one ``torch.Generator`` per process, re-seeded at every
  step from ``(seed, rank, step)`` — ranks draw differently, and nothing needs saving to resume;
* dropout uses torch's global RNG, seeded from ``(seed, rank)`` and saved in every checkpoint.

Files written to ``config.out`` (by rank 0 only)::

    config.json       the TrainConfig, the model config, the augmentation chain
    labels.json       class names in output order
    metrics.jsonl     one line per epoch: epoch, step, train_loss, train_acc, val_loss,
                      val_accuracy, val_macro_f1, lr, clips_per_s, time_s
    last.pt           everything needed to resume (also every ``checkpoint_every_steps`` steps)
    best.pt           weights of the epoch with the best ``best_metric`` (ties: the lower val loss)
    snapshots/epoch_001.pt ...   weights at epochs 1, 2, 5, 10, 20, 30, 40, 64, 128, ... and the last
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from audioconv.training import distributed
from audioconv.training.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from audioconv.training.metrics import accuracy, confusion_matrix, macro_f1

__all__ = [
    "TrainConfig",
    "NonFiniteLossError",
    "fit",
    "lr_at",
    "snapshot_epochs",
    "resolve_device",
    "resolve_amp",
    "build_model",
    "build_augment",
    "run_validation",
]


# =============================================================================== settings
@dataclass
class TrainConfig:
    """Everything that defines a training run. Times in seconds, rates in Hz.

    Data: ``train`` and ``val`` manifests, or one ``manifest`` whose ``split`` key says
    ``train_split`` / ``val_split``. ``val`` may be left out (then ``best.pt`` is the last epoch).
    Model: ``channels`` per conv block, ``n_mels`` log-mel bins. Augmentation: ``augment`` is
    ``"default"`` (:func:`audioconv.augment.chain.default_chain`), ``"none"`` or the path of a
    chain JSON (:func:`~audioconv.augment.chain.chain_from_config`); SpecAugment masks up to
    ``freq_mask_bins`` mel bins / ``time_mask_frames`` frames, ``n_freq_masks`` / ``n_time_masks``
    times, after a frequency warp by up to ``±freq_warp`` (VTLP; 0 = off). Optimisation: AdamW
    (``weight_decay`` on conv/linear weights only), schedule
    ``"onecycle"`` (cosine warm-up from lr/25 over ``warmup_frac`` of the steps, then cosine
    down to ``lr * min_lr_frac``), ``"cosine"`` (linear warm-up, cosine down) or ``"constant"``.
    System: ``device`` ``"auto"``/``"cpu"``/``"cuda"``; ``amp`` ``"auto"`` (bf16 on CUDA, none on
    CPU), ``"none"``, ``"bf16"``, ``"fp16"`` (CUDA only; uses a GradScaler); ``workers`` DataLoader
    processes (-1 = auto); ``threads`` torch CPU threads (0 = cores / local processes);
    ``checkpoint_every_steps`` also writes ``last.pt`` every that many steps (0 = at epoch ends only);
    ``resume`` continues from ``out/last.pt``; ``overwrite`` lets a fresh run replace the checkpoints
    and metrics of an earlier run in ``out`` (otherwise that is an error); ``best_metric`` ``"val_macro_f1"`` or ``"val_accuracy"``.
    """

    # data
    train: str | None = None
    val: str | None = None
    manifest: str | None = None
    train_split: str = "train"
    val_split: str = "validation"
    out: str = "runs/train"
    sample_rate: int = 16000
    clip_s: float = 1.0
    skip_bad: bool = False
    # model
    channels: tuple[int, ...] = (32, 64, 128, 128)
    activation: str = "relu"
    dropout: float = 0.2
    n_mels: int = 64
    # augmentation
    augment: str = "default"
    specaugment: bool = True
    freq_mask_bins: int = 8
    time_mask_frames: int = 10
    n_freq_masks: int = 2
    n_time_masks: int = 2
    freq_warp: float = 0.2
    # optimisation
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    schedule: str = "onecycle"
    warmup_frac: float = 0.1
    min_lr_frac: float = 0.01
    label_smoothing: float = 0.1
    grad_clip_norm: float = 5.0
    # system
    device: str = "auto"
    amp: str = "auto"
    workers: int = -1
    threads: int = 0
    seed: int = 0
    deterministic: bool = False
    resume: bool = False
    overwrite: bool = False
    checkpoint_every_steps: int = 0
    best_metric: str = "val_macro_f1"

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (``channels`` as a list); inverse of :meth:`from_dict`."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Build from :meth:`to_dict` output; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(int(c) for c in d["channels"])
        return cls(**d)

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first bad setting; returns ``self``."""
        if self.manifest is None and self.train is None:
            raise ValueError("give a training manifest (train=...) or one manifest with splits (manifest=...)")
        if self.manifest is not None and (self.train is not None or self.val is not None):
            raise ValueError("give either manifest=... (with splits) or train=/val=..., not both")
        positive = dict(sample_rate=self.sample_rate, clip_s=self.clip_s, epochs=self.epochs,
                        batch_size=self.batch_size, lr=self.lr, n_mels=self.n_mels)
        for name, v in positive.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be > 0, got {v!r}")
        for name in ("epochs", "batch_size", "sample_rate", "n_mels"):
            if int(getattr(self, name)) != getattr(self, name):
                raise ValueError(f"{name} must be an integer, got {getattr(self, name)!r}")
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"channels must be positive integers, got {self.channels}")
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {self.schedule!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0.0 <= self.min_lr_frac <= 1.0:
            raise ValueError(f"min_lr_frac must be in [0, 1], got {self.min_lr_frac}")
        if not 0.0 <= self.freq_warp < 0.5:
            raise ValueError(f"freq_warp must be in [0, 0.5), got {self.freq_warp}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("weight_decay", "grad_clip_norm"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'auto', 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if self.best_metric not in ("val_macro_f1", "val_accuracy"):
            raise ValueError(f"best_metric must be 'val_macro_f1' or 'val_accuracy', got {self.best_metric!r}")
        if self.checkpoint_every_steps < 0 or self.threads < 0 or self.workers < -1:
            raise ValueError("checkpoint_every_steps and threads must be >= 0, workers >= -1")
        return self


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step, epoch and batch."""


# =============================================================================== small pure helpers
def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def lr_at(step: int, total_steps: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps`` — a pure function.

    ``"onecycle"`` equals ``torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps,
    pct_start=warmup_frac, anneal_strategy="cos", div_factor=25, final_div_factor=1 / (25 *
    min_lr_frac))``: cosine up from ``lr / 25`` to ``lr`` by step ``warmup_frac * total_steps - 1``,
    then cosine down to ``lr * min_lr_frac`` at the last step. ``"cosine"``: linear warm-up from 0
    over ``round(warmup_frac * total_steps)`` steps, then cosine down to ``lr * min_lr_frac``.
    """
    peak = float(config.lr)
    low = peak * config.min_lr_frac
    if config.schedule == "constant" or total_steps <= 1:
        return peak
    if config.schedule == "onecycle":
        end1 = float(config.warmup_frac * total_steps) - 1.0
        if step <= end1:
            return _cos_anneal(peak / 25.0, peak, step / end1 if end1 > 0 else 1.0)
        return _cos_anneal(peak, low, min(1.0, (step - end1) / (total_steps - 1 - end1)))
    warmup = int(round(config.warmup_frac * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    return _cos_anneal(peak, low, min(1.0, (step - warmup) / max(1, total_steps - 1 - warmup)))


def snapshot_epochs(n_epochs: int) -> list[int]:
    """Epochs (1-based) that get a snapshot: 1, 2, 5, 10, 20, 30, 40, 64, 128, 256, ... and the last."""
    marks = [e for e in (1, 2, 5, 10, 20, 30, 40) if e <= n_epochs]
    e = 64
    while e <= n_epochs:
        marks.append(e)
        e *= 2
    if n_epochs not in marks:
        marks.append(n_epochs)
    return marks


def _mix(*parts: int) -> int:
    """A well-spread 63-bit seed from small integers (numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)
    return int(state[0]) & 0x7FFFFFFFFFFFFFFF


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` → ``cuda:LOCAL_RANK`` if CUDA is available, else ``cpu``; ``"cuda"`` → ``cuda:LOCAL_RANK``."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None


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


def _state_digest(model: nn.Module) -> str:
    """SHA-1 of every parameter and buffer (names, dtypes and bytes): equal digests = equal weights."""
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# =============================================================================== building blocks
def build_model(config: TrainConfig, n_classes: int):
    """The :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` a config asks for (on CPU)."""
    from audioconv.models.spectrogram_cnn import SpectrogramCNN

    return SpectrogramCNN(n_classes, sample_rate=int(config.sample_rate), channels=config.channels,
                          activation=config.activation, dropout=config.dropout,
                          frontend={"n_mels": int(config.n_mels)})


def build_augment(config: TrainConfig):
    """The waveform augmentation chain for ``config.augment``: a callable ``(x, generator=g) -> x``
    on ``(B, C, T)``, or ``None`` for ``"none"``."""
    spec = config.augment
    if spec in (None, "", "none"):
        return None
    from audioconv.augment import chain as chain_mod

    if spec == "default":
        return chain_mod.default_chain(int(config.sample_rate))
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"augment must be 'default', 'none' or a chain JSON file; not found: {path}")
    return chain_mod.load_chain(path, int(config.sample_rate))


def _chain_description(chain) -> object:
    if chain is None:
        return None
    try:
        from audioconv.augment.chain import chain_to_config

        return chain_to_config(chain)
    except Exception:  # a custom callable that is not a chain of our augmentations
        return repr(chain)


def _accepts(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class _Classifier(nn.Module):
    """``model.classify`` as a module's forward, so DistributedDataParallel can wrap it (the front end
    has no trainable parameters and runs outside, under no_grad, after augmentation)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.model.classify(logmel)


class _SkipSampler(torch.utils.data.Sampler[int]):
    """Yields a sampler's indices after dropping the first ``skip`` (resuming mid-epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, int(skip)

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


# =============================================================================== data
def _manifest_labels(path: str, split: str | None, role: str) -> list[str]:
    """Labels of a manifest's records (of one split), with clear errors for empty inputs."""
    from audioconv.io.manifest import iter_manifest

    labels = [r["label"] for r in iter_manifest(path) if split is None or r.get("split") == split]
    if not labels:
        where = f"manifest {path}" + (f" (split {split!r})" if split is not None else "")
        raise ValueError(f"{role} set is empty: {where} has no clips")
    return labels


def _datasets(cfg: TrainConfig, labels: list[str] | None):
    """``(train_ds, val_ds or None, labels)`` from the config's manifests."""
    from audioconv.data.dataset import ManifestDataset

    if cfg.manifest is not None:
        train_src, train_split = cfg.manifest, cfg.train_split
        val_src, val_split = cfg.manifest, cfg.val_split
    else:
        train_src, train_split, val_src, val_split = cfg.train, None, cfg.val, None
    train_labels = _manifest_labels(train_src, train_split, "training")
    found = sorted(set(train_labels))
    if len(found) < 2:
        raise ValueError(f"training set {train_src} has only one class ({found[0]!r}); a classifier needs >= 2")
    if labels is None:
        labels = found
    elif sorted(labels) != found:
        raise ValueError(f"the checkpoint's labels {sorted(labels)} differ from the training set's {found}")
    if val_src is not None:
        val_labels = sorted(set(_manifest_labels(val_src, val_split, "validation")))
        extra = [lab for lab in val_labels if lab not in labels]
        if extra:
            raise ValueError(f"validation set {val_src} has labels that are not in the training set: {extra}")
    common = dict(sample_rate=int(cfg.sample_rate), clip_s=float(cfg.clip_s), labels=labels,
                  skip_bad=cfg.skip_bad, return_length=True)
    train_ds = ManifestDataset(train_src, crop="random", split=train_split, seed=_mix(cfg.seed, 1), **common)
    val_ds = None if val_src is None else ManifestDataset(val_src, crop="center", split=val_split, **common)
    return train_ds, val_ds, labels


def _auto_workers(device: torch.device, local_world: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(1, min(8, cores // local_world - 1))
    return 1 if cores // local_world >= 2 else 0


def _loader(dataset, sampler, batch_size: int, workers: int, device: torch.device, drop_last: bool, seed: int):
    from audioconv.data.dataset import collate

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),  # worker base seed: never touches the global RNG
    )


# =============================================================================== validation
@torch.no_grad()
def run_validation(model: nn.Module, loader, device: torch.device, n_classes: int,
                   amp_dtype: torch.dtype | None = None, progress: bool = False, desc: str = "val"):
    """Run ``model`` (eval mode, restored to its previous mode afterwards) over ``loader``.

    Returns:
        ``(confusion (K, K) int64 on device, summed cross-entropy (float64 tensor), clip count)``.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            if x.shape[0] == 0:
                continue
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            confusion += confusion_matrix(y, logits.argmax(dim=1), n_classes)
    finally:
        model.train(was_training)
    return confusion, loss_sum, int(confusion.sum())


# =============================================================================== checkpoints
def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _gather_rng(device: torch.device, info: distributed.DistInfo) -> list[dict]:
    """Every rank's RNG state (collective in DDP; rank order)."""
    mine = _rng_state(device)
    if not info.is_distributed:
        return [mine]
    everyone: list = [None] * info.world_size
    torch.distributed.all_gather_object(everyone, {k: v.cpu() for k, v in mine.items()})
    return everyone


def _model_only(model, labels, cfg, epoch, step, metrics) -> dict:
    return {"kind": "model", "model": model.state_dict(), "model_config": model.config.to_dict(),
            "labels": list(labels), "train_config": cfg.to_dict(), "epoch": epoch, "step": step,
            "metrics": metrics}


# =============================================================================== the run
def fit(config: TrainConfig, progress: bool = True, augment=None) -> dict:
    """Train a model as ``config`` says; write the run folder; return a summary.

    Works in one process and under ``torchrun`` (one process per GPU or CPU worker; see
    :mod:`audioconv.training.distributed`): ranks split each epoch with a ``DistributedSampler``, draw
    different augmentations, average gradients with DistributedDataParallel, and rank 0 writes.

    Args:
        config: a :class:`TrainConfig`.
        progress: show tqdm bars (epochs, steps) on rank 0.
        augment: override ``config.augment`` with any callable ``(x (B, C, T), generator=g) -> x``
            (a ``Compose`` chain, a recorder for tests...). It must be passed again on resume.

    Returns:
        JSON-ready dict: ``out``, ``labels``, ``epochs``, ``steps``, ``best_epoch``, ``best_metric``,
        ``best_value``, ``best_checkpoint``, ``last_checkpoint``, ``final`` (the last metrics line),
        ``time_s``, ``world_size``, ``device``, ``state_sha1`` (digest of the final weights).

    Raises:
        ValueError / FileNotFoundError: bad settings or data (empty training set, one class, labels
            in validation that are not in training, a resume checkpoint of another model shape).
        NonFiniteLossError: the loss became NaN/inf (the message names the step).
    """
    cfg = TrainConfig.from_dict(config.to_dict()).validate()
    info = distributed.detect()
    device = resolve_device(cfg.device, info.local_rank)
    info = distributed.setup(device.type)
    try:
        return _fit(cfg, info, device, progress, augment)
    finally:
        distributed.cleanup(info)


def _fit(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, progress: bool, augment) -> dict:
    # ---------------------------------------------------------------- set-up
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size if info.is_distributed else 1))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cfg.threads or max(1, cores // local_world))
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp_dtype, use_scaler = resolve_amp(cfg.amp, device)
    out = Path(cfg.out)
    main = info.is_main
    bars = progress and main

    resume_ckpt = None
    if cfg.resume:
        last = out / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"resume: no checkpoint to resume from at {last}")
        resume_ckpt = load_checkpoint(last, map_location="cpu")
        if resume_ckpt.get("kind") != "train":
            raise ValueError(f"resume: {last} holds weights only (kind={resume_ckpt.get('kind')!r}), not a training state")
    elif (out / "last.pt").exists():
        if not cfg.overwrite:
            raise ValueError(f"{out} already holds a training run (last.pt); resume it (--resume), "
                             f"replace it (--overwrite) or choose another output folder")
        if main:
            stale = [out / "metrics.jsonl", out / "best.pt", out / "last.pt", *(out / "snapshots").glob("epoch_*.pt")]
            for path in stale:
                path.unlink(missing_ok=True)

    train_ds, val_ds, labels = _datasets(cfg, resume_ckpt["labels"] if resume_ckpt else None)
    n_classes = len(labels)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg, n_classes)
    if resume_ckpt is not None:
        saved, wanted = resume_ckpt["model_config"], model.config.to_dict()
        diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"resume: {out / 'last.pt'} is from another model shape ({detail}); "
                             f"use the same settings or a new output folder")
        load_model_state(model, resume_ckpt["model"], source=f"checkpoint {out / 'last.pt'}")
    model.to(device)
    net: nn.Module = _Classifier(model)
    if info.is_distributed:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99),
                                  fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    chain = augment if augment is not None else build_augment(cfg)
    if isinstance(chain, nn.Module):
        chain.to(device)
    chain_takes_lengths = chain is not None and _accepts(chain, "lengths")
    specaug = None
    if cfg.specaugment:
        from audioconv.training.specaugment import SpecAugment

        specaug = SpecAugment(cfg.freq_mask_bins, cfg.time_mask_frames, cfg.n_freq_masks, cfg.n_time_masks,
                              freq_warp=cfg.freq_warp, mel_hz=model.frontend.mel_hz())
    aug_gen = torch.Generator(device=device)

    # the data order: the same sampler on every rank, each takes its shard
    workers = cfg.workers if cfg.workers >= 0 else _auto_workers(device, local_world)
    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=cfg.seed, drop_last=False)
    shard = len(sampler)
    batch_size = min(int(cfg.batch_size), shard)
    drop_last = shard >= batch_size
    steps_per_epoch = shard // batch_size if drop_last else 1
    total_steps = steps_per_epoch * int(cfg.epochs)
    val_loader = None
    if val_ds is not None:
        val_shard = list(range(info.rank, len(val_ds), info.world_size))  # no padding: every clip once
        val_loader = _loader(val_ds, val_shard, batch_size, workers, device, False, _mix(cfg.seed, 3))

    # ---------------------------------------------------------------- state (fresh or resumed)
    epoch, step, batches_done = 0, 0, 0  # epochs completed, optimizer steps, batches done in `epoch`
    sums = {"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0}
    best_value, best_loss, best_epoch, elapsed_s = -math.inf, math.inf, 0, 0.0
    last_metrics = None
    torch.manual_seed(_mix(cfg.seed, 4, info.rank))  # dropout: different per rank
    if resume_ckpt is not None:
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        if resume_ckpt.get("scaler"):
            scaler.load_state_dict(resume_ckpt["scaler"])
        epoch, step = int(resume_ckpt["epoch"]), int(resume_ckpt["step"])
        prog = resume_ckpt["progress"]
        batches_done = int(prog["batches_done"])
        sums = {k: prog[k] for k in sums}
        best_value, best_epoch, elapsed_s = float(prog["best_value"]), int(prog["best_epoch"]), float(prog["elapsed_s"])
        best_loss = float(prog.get("best_loss", math.inf))
        last_metrics = resume_ckpt.get("metrics")
        ranks = resume_ckpt["rng"]["per_rank"]
        if len(ranks) == info.world_size:
            _set_rng_state(ranks[info.rank], device)
        else:  # another number of processes: continue, but not bit-exactly
            torch.manual_seed(_mix(cfg.seed, 4, info.rank, step))
        if main:
            _truncate_metrics(out / "metrics.jsonl", epoch)

    if main:
        from audioconv.data.dataset import save_labels

        out.mkdir(parents=True, exist_ok=True)
        save_labels(out / "labels.json", labels)
        run_info = {"train_config": cfg.to_dict(), "model_config": model.config.to_dict(),
                    "augment": _chain_description(chain),
                    "specaugment": specaug.to_dict() if specaug is not None else None,
                    "labels": labels, "world_size": info.world_size, "device": str(device),
                    "steps_per_epoch": steps_per_epoch, "batch_size_per_process": batch_size,
                    "torch": torch.__version__}
        _write_json(out / "config.json", run_info)
    snapshots = set(snapshot_epochs(int(cfg.epochs)))

    def training_state(running: dict) -> dict:
        """Everything to continue after the current step; ``running`` = sums of the unfinished epoch.
        A collective call under DDP (every rank calls it; rank 0 saves it)."""
        rng = _gather_rng(device, info)
        return {"kind": "train", "model": model.state_dict(), "model_config": model.config.to_dict(),
                "labels": list(labels), "train_config": cfg.to_dict(), "epoch": epoch, "step": step,
                "metrics": last_metrics, "optimizer": optimizer.state_dict(),
                "scheduler": {"name": cfg.schedule, "step": step, "total_steps": total_steps},
                "scaler": scaler.state_dict() if use_scaler else None,
                "rng": {"per_rank": rng, "world_size": info.world_size,
                        "sampler": {"seed": int(cfg.seed), "epoch": epoch, "batches_done": batches_done}},
                "progress": {"batches_done": batches_done, **running, "best_value": best_value,
                             "best_loss": best_loss, "best_epoch": best_epoch, "elapsed_s": elapsed_s}}

    # ---------------------------------------------------------------- the loop
    epoch_bar = tqdm(total=int(cfg.epochs), initial=epoch, desc="epochs", unit="epoch", disable=not bars)
    net.train()
    while epoch < cfg.epochs:
        t_epoch = time.perf_counter()
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        loader = _loader(train_ds, _SkipSampler(sampler, batches_done * batch_size), batch_size, workers,
                         device, drop_last, _mix(cfg.seed, 5, epoch, info.rank))
        step_bar = tqdm(total=steps_per_epoch, initial=batches_done, desc=f"epoch {epoch + 1}", unit="step",
                        leave=False, disable=not bars)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        t_train = time.perf_counter()
        for x, y, lengths in loader:
            if y.shape[0] == 0:  # every clip of the batch was unreadable and skipped (skip_bad)
                if info.is_distributed:
                    raise ValueError(f"a whole batch of unreadable clips at epoch {epoch + 1}, batch "
                                     f"{batches_done + 1}; fix or remove them (see the warnings) to train with torchrun")
                continue
            lr = lr_at(step, total_steps, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            aug_gen.manual_seed(_mix(cfg.seed, 2, info.rank, step))
            with torch.no_grad():  # augmentation + front end + SpecAugment, on the device
                if chain is not None:
                    x = chain(x, generator=aug_gen, lengths=lengths.to(device)) if chain_takes_lengths \
                        else chain(x, generator=aug_gen)
                spec = model.frontend(x)
                if specaug is not None:
                    spec = specaug(spec, generator=aug_gen)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = net(spec)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            batch_loss = loss.detach() * y.shape[0]
            distributed.all_reduce_sum(batch_loss, info)  # every rank sees a NaN anywhere
            if not torch.isfinite(batch_loss).item():
                raise NonFiniteLossError(
                    f"training loss is {float(batch_loss)} at step {step + 1} (epoch {epoch + 1}, batch "
                    f"{batches_done + 1} of {steps_per_epoch}, lr {lr:.3g}); lower the learning rate (--lr) "
                    f"or check the input audio for NaN/inf"
                    + (f"; last good checkpoint: {out / 'last.pt'}" if (out / "last.pt").exists() else ""))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()

            step += 1
            batches_done += 1
            loss_sum += batch_loss.double()
            correct += (logits.argmax(dim=1) == y).sum()
            seen += y.shape[0] * info.world_size
            step_bar.update(1)
            if bars:
                step_bar.set_postfix(loss=f"{float(batch_loss) / (y.shape[0] * info.world_size):.3f}", lr=f"{lr:.2e}")
            every = cfg.checkpoint_every_steps
            if every and step % every == 0 and batches_done < steps_per_epoch:
                running = {"loss": sums["loss"] + float(loss_sum), "seen": sums["seen"] + seen,
                           "correct": sums["correct"] + int(distributed.all_reduce_sum(correct.clone(), info)),
                           "train_s": sums["train_s"] + time.perf_counter() - t_train}
                state = training_state(running)
                if main:
                    save_checkpoint(out / "last.pt", state)
        step_bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        distributed.all_reduce_sum(correct, info)
        train_s = sums["train_s"] + time.perf_counter() - t_train
        seen_all = sums["seen"] + seen
        train_loss = (sums["loss"] + float(loss_sum)) / max(1, seen_all)
        train_acc = (sums["correct"] + int(correct)) / max(1, seen_all)

        # ---------------------------------------------------------------- end of epoch
        epoch += 1
        batches_done = 0
        sums = {"loss": 0.0, "correct": 0, "seen": 0, "train_s": 0.0}
        distributed.broadcast_module_state(model, info)  # identical BatchNorm statistics on every rank
        metrics = {"epoch": epoch, "step": step, "train_loss": train_loss, "train_acc": train_acc,
                   "val_loss": None, "val_accuracy": None, "val_macro_f1": None, "lr": lr_at(step - 1, total_steps, cfg),
                   "clips_per_s": seen_all / max(train_s, 1e-9)}
        if val_loader is not None:
            confusion, vloss, _ = run_validation(model, val_loader, device, n_classes, amp_dtype, bars)
            distributed.all_reduce_sum(confusion, info)
            distributed.all_reduce_sum(vloss, info)
            n_val = int(confusion.sum())
            metrics.update(val_loss=float(vloss) / max(1, n_val), val_accuracy=accuracy(confusion.cpu()),
                           val_macro_f1=macro_f1(confusion.cpu()))
        elapsed_s += time.perf_counter() - t_epoch
        metrics["time_s"] = elapsed_s
        last_metrics = metrics
        # best: highest best_metric; ties (common on small validation sets) go to the lower val loss
        value = metrics[cfg.best_metric] if val_loader is not None else float(epoch)
        loss_now = metrics["val_loss"] if val_loader is not None else 0.0
        is_best = value > best_value or (value == best_value and loss_now < best_loss)
        if is_best:
            best_value, best_loss, best_epoch = value, loss_now, epoch
        state = training_state(sums)
        if main:
            with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(metrics) + "\n")
            weights = _model_only(model, labels, cfg, epoch, step, metrics)
            if is_best:
                save_checkpoint(out / "best.pt", weights)
            if epoch in snapshots:
                save_checkpoint(out / "snapshots" / f"epoch_{epoch:03d}.pt", weights)
            save_checkpoint(out / "last.pt", state)
        epoch_bar.update(1)
        if bars:
            shown = {k: round(v, 4) for k, v in metrics.items() if k in ("train_loss", "val_accuracy", "val_macro_f1")
                     and v is not None}
            epoch_bar.set_postfix(shown)
    epoch_bar.close()
    distributed.barrier(info)

    return {"out": str(out), "labels": list(labels), "epochs": epoch, "steps": step,
            "best_epoch": best_epoch, "best_metric": cfg.best_metric if val_loader is not None else "epoch",
            "best_value": best_value, "best_checkpoint": str(out / "best.pt"),
            "last_checkpoint": str(out / "last.pt"), "final": last_metrics, "time_s": elapsed_s,
            "world_size": info.world_size, "device": str(device), "state_sha1": _state_digest(model)}


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only metrics lines of epochs ``<= epochs_done`` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                if int(json.loads(line)["epoch"]) <= epochs_done:
                    keep.append(line)
            except (ValueError, KeyError, TypeError):
                continue
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(s + "\n" for s in keep), encoding="utf-8")
    os.replace(tmp, path)
