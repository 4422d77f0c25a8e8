"""What defines a training run: :class:`TrainConfig`, and the pure functions of it that the loop asks
"when?" — the learning rate of each optimizer step (:func:`lr_at`) and the epochs that get a
snapshot (:func:`snapshot_epochs`)."""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, fields, replace

__all__ = ["TrainConfig", "lr_at", "snapshot_epochs", "parse_splits", "augment_off", "is_chain_file", "LEGACY_DEFAULTS",
           "BEST_METRICS"]

BEST_METRICS = ("val_loss", "val_macro_f1", "val_accuracy")  # what picks best.pt: the lowest loss, the highest others
#: Fields added to :class:`TrainConfig` after runs were written without them, with the value such a run
#: used (a resumed run's saved settings are read on top of these, not on top of today's defaults).
LEGACY_DEFAULTS = {"normalize": "none", "freq_warp": 0.0,  # (no frequency warp before it existed)
                   "best_metric": "val_macro_f1"}


def parse_splits(value) -> tuple[str, ...]:
    """Split names as a tuple: ``"fold1,fold2"`` → ``("fold1", "fold2")``; a list or tuple is kept;
    ``None``, ``""`` and ``"none"`` → ``()`` (no such set, e.g. no validation)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [] if value.strip().lower() == "none" else value.split(",")
    names = tuple(str(v).strip() for v in value if str(v).strip())
    if len(set(names)) != len(names):
        raise ValueError(f"split names repeat: {list(names)}")
    return names


def _absolute(spec: str | None) -> str | None:
    """``spec`` (a file, or shards ``a.tar::DIR/b-{000..009}.tar``) with each local path made absolute
    against the working folder (``~`` expanded; URLs such as ``https://…`` and ``pipe:…`` kept)."""
    from audioconv.data.shards import is_shard_spec

    if not spec:
        return spec
    parts = [p.strip() for p in spec.split("::")] if is_shard_spec(spec) else [spec]
    return "::".join(p if "://" in p or p.startswith("pipe:") else os.path.abspath(os.path.expanduser(p))
                     for p in parts)


def augment_off(augment: str | None) -> bool:
    """Whether ``TrainConfig.augment`` turns the waveform chain off (``"none"``; ``None`` and ``""`` read so)."""
    return augment in (None, "", "none")


def is_chain_file(augment: str | None) -> bool:
    """Whether ``TrainConfig.augment`` names a chain JSON file (anything but ``"default"`` and ``"none"``)."""
    return not augment_off(augment) and augment != "default"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Times in seconds, rates in Hz.

    Data: ``train`` and ``val`` manifests, or one ``manifest`` whose ``split`` key says
    ``train_split`` / ``val_split`` (each a tuple of split names, e.g. ``("fold1", "fold2", "fold3",
    "fold4")``; a string ``"fold1,fold2"`` is accepted; ``val_split=()`` trains without validation).
    ``val`` may be left out (then ``best.pt`` is the last epoch).
    ``train``/``val`` may name WebDataset shards instead (``DIR/train-{000000..000123}.tar``,
    :mod:`audioconv.training.shard_data`), shuffled by each DataLoader worker in a buffer of ``shuffle_buffer`` clips.
    Model: ``model`` is ``"cnn"`` (:class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`:
    ``channels`` per conv block, ``activation``, ``dropout`` before the head), ``"bcresnet"``
    (:class:`~audioconv.models.bcresnet.BCResNet`; ``dropout`` on each block's temporal feature) or
    ``"package.module:factory"`` (:mod:`audioconv.models.registry`); ``width`` scales it (cnn:
    channels × width; bcresnet: BC-ResNet-width, default 1; a factory gets ``width=``; ``None`` = the
    model's own size); ``n_mels`` log-mel bins up to ``f_max_hz`` (``None``: the Nyquist frequency); ``normalize`` the front end's per-example
    normalisation (:data:`audioconv.features.NORMALIZATIONS`). Augmentation: ``augment`` is
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
    and metrics of an earlier run in ``out`` (otherwise that is an error); ``best_metric`` one of :data:`BEST_METRICS`
    (``"val_loss"``: the lowest validation cross-entropy; ``"val_macro_f1"``, ``"val_accuracy"``: the
    highest, ties to the lower loss).
    Extras (all off by default): ``ema`` the decay of an exponential moving average of the weights
    (:mod:`audioconv.training.ema`; 0 = off; when on, validation, ``best.pt`` and the snapshots use
    the EMA weights); ``mixup`` the α of mixup with label mixing (:mod:`audioconv.training.mixup`;
    0 = off); ``early_stopping`` stops after that many epochs without a new best ``best_metric``
    (0 = off; needs a validation set); ``tensorboard`` also writes TensorBoard logs to
    ``out/tensorboard`` (needs the optional ``tensorboard`` package).
    """

    # data
    train: str | None = None
    val: str | None = None
    manifest: str | None = None
    train_split: tuple[str, ...] = ("train",)
    val_split: tuple[str, ...] = ("validation",)
    out: str = "runs/train"
    sample_rate: int = 16000
    clip_s: float = 1.0
    skip_bad: bool = False
    shuffle_buffer: int = 1000
    # model
    model: str = "cnn"
    width: float | None = None
    channels: tuple[int, ...] = (32, 64, 128, 128)
    activation: str = "relu"
    dropout: float = 0.2
    n_mels: int = 40
    f_max_hz: float | None = None
    normalize: str = "none"
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
    weight_decay: float = 0.15  # 0.05 until round 9 of docs/augmentation_study.md
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
    best_metric: str = "val_loss"  # "val_macro_f1" until round 10 of docs/augmentation_study.md
    # extras: weight averaging, mixup, early stopping, logs
    ema: float = 0.0
    mixup: float = 0.0
    early_stopping: int = 0
    tensorboard: bool = False

    def __post_init__(self):
        self.train_split, self.val_split = parse_splits(self.train_split), parse_splits(self.val_split)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples as lists); inverse of :meth:`from_dict`."""
        d = asdict(self)
        for key in ("channels", "train_split", "val_split"):
            d[key] = list(d[key])
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

    def with_absolute_paths(self) -> "TrainConfig":
        """A copy with the files it names — ``train``, ``val``, ``manifest`` and a chain file
        ``augment`` — given relative to the working folder made absolute (URLs in shard specs kept),
        as a run records them: resumed from another folder, it reads the same files."""
        return replace(self, train=_absolute(self.train), val=_absolute(self.val), manifest=_absolute(self.manifest),
                       augment=_absolute(self.augment) if is_chain_file(self.augment) else self.augment)

    def validate(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first bad setting; returns ``self``."""
        if self.manifest is None and self.train is None:
            raise ValueError("give a training manifest (train=..., --train) or one manifest with splits "
                             "(manifest=..., --manifest)")
        if self.manifest is not None and not self.train_split:
            raise ValueError("train_split (--train-split) names no split")
        overlap = sorted(set(self.train_split) & set(self.val_split)) if self.manifest is not None else []
        if overlap:
            raise ValueError(f"splits {overlap} are in both train_split and val_split (--train-split/--val-split); "
                             f"validating on training clips measures nothing")
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
        self._check_sample_rate()
        self._check_f_max()
        if not self.channels or min(self.channels) <= 0:
            raise ValueError(f"channels must be positive integers, got {self.channels}")
        self._validate_model()
        self._validate_extras()
        if self.schedule not in ("onecycle", "cosine", "constant"):
            raise ValueError(f"schedule must be 'onecycle', 'cosine' or 'constant', got {self.schedule!r}")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0.0 <= self.min_lr_frac <= 1.0:
            raise ValueError(f"min_lr_frac must be in [0, 1], got {self.min_lr_frac}")
        from audioconv.features import NORMALIZATIONS

        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if not 0.0 <= self.freq_warp < 0.5:
            raise ValueError(f"freq_warp must be in [0, 0.5), got {self.freq_warp}")
        for name in ("n_freq_masks", "freq_mask_bins", "n_time_masks", "time_mask_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for name in ("weight_decay", "grad_clip_norm"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.amp not in ("auto", "none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'auto', 'none', 'bf16' or 'fp16', got {self.amp!r}")
        if self.best_metric not in BEST_METRICS:
            raise ValueError(f"best_metric must be one of {', '.join(BEST_METRICS)}, got {self.best_metric!r}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 clips, got {self.shuffle_buffer}")
        if self.checkpoint_every_steps < 0 or self.threads < 0 or self.workers < -1:
            raise ValueError(f"checkpoint_every_steps and threads must be >= 0, workers >= -1; got "
                             f"{self.checkpoint_every_steps}, {self.threads}, {self.workers}")
        return self

    def _validate_model(self) -> None:
        """The model spec's form, ``width``, and no model-specific setting given for another model."""
        from audioconv.models.registry import BUILTIN, check_spec

        check_spec(self.model)
        w = self.width
        if w is not None and not (isinstance(w, (int, float)) and math.isfinite(w) and w > 0):
            raise ValueError(f"width must be > 0, got {w!r}")
        default = TrainConfig()
        for name, models in (("channels", ("cnn",)), ("activation", ("cnn",)), ("dropout", tuple(BUILTIN))):
            value = getattr(self, name)
            if self.model not in models and (tuple(value) if name == "channels" else value) != getattr(default, name):
                raise ValueError(f"{name}={value!r} applies to model {' or '.join(models)} only, "
                                 f"not to model {self.model!r}")


    def has_validation(self) -> bool:
        """Whether the run has a validation set (``val``, or ``manifest`` with a ``val_split``)."""
        return bool(self.val_split) if self.manifest is not None else self.val is not None

    def _validate_extras(self) -> None:
        """``ema`` in [0, 1), ``mixup`` >= 0, ``early_stopping`` a whole number of epochs with validation."""
        if not (isinstance(self.ema, (int, float)) and 0.0 <= self.ema < 1.0):
            raise ValueError(f"ema must be a decay in [0, 1) (e.g. 0.999; 0 = off), got {self.ema!r}")
        if not (isinstance(self.mixup, (int, float)) and math.isfinite(self.mixup) and self.mixup >= 0):
            raise ValueError(f"mixup must be an alpha >= 0 (e.g. 0.2; 0 = off), got {self.mixup!r}")
        es = self.early_stopping
        if isinstance(es, bool) or not isinstance(es, int) or es < 0:
            raise ValueError(f"early_stopping must be a whole number of epochs >= 0 (0 = off), got {es!r}")
        if es and not self.has_validation():
            raise ValueError(f"early_stopping={es} needs a validation set to watch (--val, or --val-split with "
                             f"--manifest; audioconv cv: --validation next)")

    def _check_f_max(self) -> None:
        """``f_max_hz`` (the top of the highest mel band; ``None``: the Nyquist frequency) lies above
        the lowest band's start and at or below the Nyquist frequency, and the ``n_mels`` bands up
        to it each hold a frequency bin."""
        from audioconv.features import LogMelConfig, htk_mel_bank

        low, nyquist = LogMelConfig.f_min_hz, self.sample_rate / 2
        v = self.f_max_hz
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                              or not low < v <= nyquist):
            raise ValueError(f"f_max_hz must be a frequency in Hz above {low:g} and at most the Nyquist "
                             f"frequency ({nyquist:g} Hz at sample_rate {self.sample_rate}), got {v!r}")
        n_fft = LogMelConfig.n_fft
        bins = n_fft // 2 + 1
        bank = htk_mel_bank(bins, low, nyquist if v is None else float(v), int(self.n_mels), int(self.sample_rate))
        empty = int((bank.sum(dim=0) == 0).sum())
        # a top of one's own must leave no band empty; up to the Nyquist frequency a few narrow low bands
        # may be (torchaudio warns), but not more bands than the FFT has frequency bins
        if empty and (v is not None or self.n_mels > bins):
            what, fix = (f"f_max_hz={v:g}", "raise f_max_hz or lower n_mels") if v is not None else \
                (f"n_mels={self.n_mels}", f"use at most {bins} bands, one per frequency bin of the {n_fft}-point FFT")
            raise ValueError(f"{what} leaves {empty} of the {self.n_mels} mel bands without a frequency bin "
                             f"(the bins are {self.sample_rate / n_fft:g} Hz apart): {fix}")

    def _check_sample_rate(self) -> None:
        """The log-mel front end needs its lowest band (``f_min_hz``) below the Nyquist frequency and
        clips longer than half its FFT (the frames are centred with reflection padding)."""
        from audioconv.features import LogMelConfig

        front = LogMelConfig()
        need = [(int(2 * front.f_min_hz) + 1, f"its lowest mel band starts at {front.f_min_hz:g} Hz, which must be "
                                              f"below the Nyquist frequency (sample_rate / 2)"),
                (math.ceil((front.n_fft // 2 + 1) / self.clip_s),
                 f"a {self.clip_s:g}-s clip must hold more than n_fft / 2 = {front.n_fft // 2} samples")]
        failing = [(rate, why) for rate, why in need if self.sample_rate < rate]
        if failing:
            lowest = max(rate for rate, _ in need)
            raise ValueError(f"sample_rate {self.sample_rate} Hz is too low for the log-mel front end: "
                             + "; ".join(why for _, why in failing)
                             + f". Use --sample-rate {lowest} or more (speech and sound corpora are usually "
                               f"8000-48000 Hz)")


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
