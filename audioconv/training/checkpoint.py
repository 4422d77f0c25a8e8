"""Checkpoints: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and Python primitives (no pickled classes), so it can be
opened without running arbitrary code:

=====================  =====================================================================
``format``             ``"audioconv-checkpoint"``; ``version`` (int; 2 since the front end reads
                       dB re full scale: a version-1 checkpoint loads with
                       ``frontend["db_reference"] = "unit_power"``, the scale it was trained on)
``kind``               ``"train"`` (``RUN/last.pt``: everything needed to resume) or
                       ``"model"`` (``RUN/best.pt``, snapshots: weights only)
``model``              ``model.state_dict()``: in ``last.pt`` the raw (trained) weights; in
                       ``best.pt`` and snapshots the weights validation scored (``weights``)
``weights``            ``"raw"`` or ``"ema"`` (the EMA of the weights, ``--ema``): what ``model`` holds
``ema``                (train) ``{"weights": EMA state_dict, "updates": n}`` with ``--ema``, else ``None``
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

import errno
import os
from pathlib import Path

import torch

from audioconv.io.files import atomic_write
from audioconv.utils import resolve_device

__all__ = ["FORMAT", "VERSION", "save_checkpoint", "load_checkpoint", "load_model", "load_model_state", "run_clip_s",
           "checkpoint_labels", "model_from_checkpoint", "checkpoint_weights", "rng_state", "set_rng_state"]

FORMAT = "audioconv-checkpoint"
VERSION = 2
_REQUIRED = ("model", "model_config", "labels")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (:func:`audioconv.io.files.atomic_write`: a temporary
    file in the same folder, flushed and fsynced, then ``os.replace``) — a reader (or a crash) never
    sees a half-written file.

    ``format``/``version`` keys are added. Returns the path written.
    """
    payload = {"format": FORMAT, "version": VERSION, **checkpoint}
    with atomic_write(path, "wb") as f:  # a full disk or an unwritable folder: OutputError naming the path
        try:
            torch.save(payload, f)
        except RuntimeError as e:  # torch's zip writer reports a failed write as "[enforce fail at ...]"
            hidden = e.__context__ or e.__cause__
            if isinstance(hidden, OSError) or ("inline_container" not in str(e) and "PytorchStreamWriter" not in str(e)):
                raise  # atomic_write names the OSError (a full disk...) it hides
            raise OSError(errno.EIO, f"torch.save could not write the file ({str(e).strip()})") from e
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
    if int(ckpt.get("version", 1)) < 2 and isinstance(ckpt["model_config"], dict):  # trained on dB re power 1.0
        frontend = dict(ckpt["model_config"].get("frontend") or {})
        frontend.setdefault("db_reference", "unit_power")
        ckpt["model_config"] = {**ckpt["model_config"], "frontend": frontend}
    return ckpt


def load_model_state(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict(state)`` with a clear error when the shapes do not fit.

    Raises:
        ValueError: names the first missing/unexpected key or the first parameter whose shape
            differs, e.g. ``features.conv2.weight: checkpoint (16, 8, 3, 3) vs model (32, 8, 3, 3)``.
    """
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise ValueError(f"{source} holds non-finite weights: {k} has {bad} NaN/inf value(s) of {v.numel()}; "
                             f"the run that wrote it diverged — use an earlier checkpoint (best.pt, snapshots/)")
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


def checkpoint_labels(checkpoint: dict, n_outputs: int, source: str = "checkpoint") -> list[str]:
    """The class names of a checkpoint, checked against the model's number of outputs.

    Raises:
        ValueError: the labels are not a list of distinct non-empty strings, or there are not
            exactly ``n_outputs`` of them (naming both counts).
    """
    labels = checkpoint.get("labels")
    if not isinstance(labels, (list, tuple)) or not all(isinstance(lab, str) and lab for lab in labels):
        raise ValueError(f"{source}: 'labels' must be a list of class names, got {labels!r:.80}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{source}: duplicate class names in 'labels' {sorted({x for x in labels if labels.count(x) > 1})}")
    if len(labels) != n_outputs:
        raise ValueError(f"{source} lists {len(labels)} labels for a model with {n_outputs} outputs; "
                         f"the label list does not belong to these weights")
    return list(labels)


def load_model(path: str | os.PathLike, device="cpu", weights: str = "auto"):
    """Rebuild the model stored in a checkpoint.

    Args:
        path: ``RUN/best.pt``, ``RUN/last.pt`` or a snapshot.
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` = CUDA if
            available; see :func:`audioconv.utils.resolve_device`).
        weights: ``"auto"`` (the weights the run validates: the EMA weights of a run trained with
            ``--ema``, else the trained ones), ``"ema"`` or ``"raw"`` (see :func:`checkpoint_weights`).

    Returns:
        ``(model, labels)``: the model ``model_spec`` names (a
        :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`, a
        :class:`~audioconv.models.bcresnet.BCResNet`, or a factory's model — its module must be
        importable here) in eval mode on ``device``, and the class names in output order.

    Raises:
        ValueError: a corrupt checkpoint, an unreadable model config, a factory that cannot be
            imported or called (naming the spec), weights that do not fit the model,
            NaN/inf weights (naming the first such tensor), a label list that does not fit the model's outputs.
    """
    device = resolve_device(device)
    model, labels = model_from_checkpoint(load_checkpoint(path, map_location="cpu"), f"checkpoint {path}", weights)
    return model.to(device).eval(), labels


def checkpoint_weights(checkpoint: dict, weights: str = "auto", source: str = "checkpoint") -> tuple[dict, str]:
    """``(state_dict, "ema" or "raw")``: the weights of a checkpoint to load.

    ``"auto"``: the weights the run validates — the EMA weights where the checkpoint has them
    (``last.pt`` of a run with ``--ema`` keeps both; ``best.pt`` and snapshots hold only the weights
    that were validated), else the trained weights. ``"ema"`` / ``"raw"``: those, or a ``ValueError``
    saying where they are.
    """
    if weights not in ("auto", "ema", "raw"):
        raise ValueError(f"weights must be 'auto', 'ema' or 'raw', got {weights!r}")
    held = checkpoint.get("weights", "raw")  # what checkpoint["model"] holds
    ema = checkpoint.get("ema")
    if weights in ("auto", "ema") and ema is not None:
        return ema["weights"], "ema"
    if weights == "ema" and held != "ema":
        raise ValueError(f"{source} has no EMA weights (its run was trained without --ema); use weights 'raw' or 'auto'")
    if weights == "raw" and held == "ema":
        raise ValueError(f"{source} holds only the EMA weights (the ones validation scored); the raw weights of "
                         f"the run's last epoch are in its last.pt")
    return checkpoint["model"], held


def model_from_checkpoint(checkpoint: dict, source: str = "checkpoint", weights: str = "auto"):
    """``(model, labels)`` from a checkpoint dict read by :func:`load_checkpoint`: the architecture its
    ``model_spec``/``model_config`` name (CPU, eval mode), its weights loaded (``weights``, see
    :func:`checkpoint_weights`; shapes and finiteness checked), its labels checked against its
    outputs. The one way the package turns a checkpoint into a model.

    Raises:
        ValueError: as :func:`load_model`; messages start with ``source``.
    """
    from audioconv.models.registry import rebuild

    spec = checkpoint.get("model_spec", "cnn")
    state, _ = checkpoint_weights(checkpoint, weights, source)
    try:
        model = rebuild(spec, checkpoint["model_config"])
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{source} cannot rebuild its model: {e}") from None
    load_model_state(model, state, source=source)
    n_classes = int(checkpoint["model_config"].get("n_classes", -1))
    return model.eval(), checkpoint_labels(checkpoint, n_classes, source)


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
