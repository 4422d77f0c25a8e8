"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and Python primitives (no pickled classes), so it can be
opened without running arbitrary code:

=====================  =====================================================================
``format``             ``"audioconv-checkpoint"``; ``version`` (int)
``kind``               ``"train"`` (``RUN/last.pt``: everything needed to resume) or
                       ``"model"`` (``RUN/best.pt``, snapshots: weights only)
``model``              ``model.state_dict()``
``model_spec``         ``"cnn"`` (also when absent), ``"bcresnet"`` or ``"package.module:factory"``
``model_config``       the model's config (:func:`audioconv.models.registry.describe`): what
                       :func:`audioconv.models.registry.rebuild` needs with ``model_spec``
``labels``             class names, index order
``train_config``       :meth:`audioconv.training.config.TrainConfig.to_dict`
``epoch``, ``step``    epochs completed, optimizer steps taken
``metrics``            the last epoch's metrics line (dict) or ``None``
``optimizer``          (train) ``optimizer.state_dict()``
``scheduler``          (train) the schedule's name and step (the schedule is a pure function of step)
``scaler``             (train) ``GradScaler.state_dict()`` or ``None``
``rng``                (train) every rank's torch CPU / CUDA RNG states (``per_rank``, see
                       :func:`rng_state`), ``world_size``, and the sampler position (``seed``,
                       ``epoch``, ``batches_done`` in that epoch); the augmentation generator is
                       re-seeded every step, so it needs no saving
``progress``           (train) running sums of the unfinished epoch, best metric so far
=====================  =====================================================================
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from audioconv.io.files import atomic_write
from audioconv.utils import resolve_device

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "load_model", "model_from_checkpoint",
           "load_model_state", "run_clip_s",
           "rng_state", "set_rng_state"]

FORMAT = "audioconv-checkpoint"
VERSION = 1
_REQUIRED = ("model", "model_config", "labels")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (:func:`audioconv.io.files.atomic_write`: a temporary
    file in the same folder, flushed and fsynced, then ``os.replace``) — a reader (or a crash) never
    sees a half-written file.

    ``format``/``version`` keys are added. Returns the path written.
    """
    payload = {"format": FORMAT, "version": VERSION, **checkpoint}
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated or not a torch file ("corrupt"), holds objects
            that are not tensors/primitives, or is not an audioconv checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(f"checkpoint path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); it is corrupt")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError:
        raise
    except Exception as e:  # garbage bytes can fail anywhere in the unpickler (IndexError, KeyError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights only load failed" in msg.lower():
            raise ValueError(f"checkpoint {path} holds pickled Python objects, not only tensors and primitives; "
                             f"refusing to load it (torch.load(weights_only=True) failed)") from None
        raise ValueError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                         f"(torch.load(weights_only=True) failed: {msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an audioconv checkpoint (no format={FORMAT!r} key)")
    if int(ckpt.get("version", -1)) > VERSION:
        raise ValueError(f"checkpoint {path} has format version {ckpt.get('version')}; "
                         f"this audioconv reads up to version {VERSION}")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint {path} lacks {missing}; it is corrupt")
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` with a clear error when the shapes do not fit.

    Raises:
        ValueError: names the first missing/unexpected key or the first parameter whose shape
            differs, e.g. ``features.conv2.weight: checkpoint (16, 8, 3, 3) vs model (32, 8, 3, 3)``.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{source} is from another model architecture: "
                         f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{source} is from another model shape: {k} has shape {tuple(state[k].shape)} "
                             f"in the checkpoint but {tuple(v.shape)} in the model")
    model.load_state_dict(state)


def load_model(path: str | os.PathLike, device="cpu"):
    """Rebuild the model stored in a checkpoint.

    Args:
        path: ``RUN/best.pt``, ``RUN/last.pt`` or a snapshot.
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` = CUDA if
            available; see :func:`audioconv.utils.resolve_device`).

    Returns:
        ``(model, labels)``: the model ``model_spec`` names (a
        :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`, a
        :class:`~audioconv.models.bcresnet.BCResNet`, or a factory's model — its module must be
        importable here) in eval mode on ``device``, and the class names in output order.

    Raises:
        ValueError: a corrupt checkpoint, an unreadable model config, a factory that cannot be
            imported or called (naming the spec), weights that do not fit the model.
    """
    device = resolve_device(device)
    model, labels = model_from_checkpoint(load_checkpoint(path, map_location="cpu"), f"checkpoint {path}")
    return model.to(device).eval(), labels


def model_from_checkpoint(ckpt: dict, source: str = "checkpoint"):
    """``(model, labels)`` from a checkpoint dict read by :func:`load_checkpoint`: the architecture
    its ``model_spec``/``model_config`` name, with its weights, on CPU (train mode).

    Raises:
        ValueError: as :func:`load_model`; messages start with ``source``.
    """
    from audioconv.models.registry import rebuild

    spec = ckpt.get("model_spec", "cnn")
    try:
        model = rebuild(spec, ckpt["model_config"])
    except ValueError as e:
        raise ValueError(f"{source} cannot rebuild its model: {e}") from None
    load_model_state(model, ckpt["model"], source=source)
    labels = list(ckpt["labels"])
    n_classes = ckpt["model_config"].get("n_classes")
    if len(labels) != n_classes:
        raise ValueError(f"{source} lists {len(labels)} labels for a model with {n_classes} outputs")
    return model, labels


DEFAULT_CLIP_S = 1.0  # TrainConfig's default clip length; the one fallback for checkpoints that lack it


def run_clip_s(checkpoint: dict) -> float:
    """The clip length in seconds the checkpoint's model was trained on.

    Every reader of a run's clip length (evaluate, top-k, evolve, report) calls this one function:
    ``checkpoint["train_config"]["clip_s"]`` when the checkpoint has it, else :data:`DEFAULT_CLIP_S`.
    """
    value = (checkpoint.get("train_config") or {}).get("clip_s")
    return float(value) if value else DEFAULT_CLIP_S


def rng_state(device: torch.device) -> dict:
    """This process's torch RNG states for a checkpoint: ``{"cpu": ByteTensor, "cuda": ByteTensor}``
    (``"cuda"`` only when ``device`` is a CUDA device)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore RNG states saved by :func:`rng_state` (the CUDA one only on a CUDA ``device``)."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
