"""The model an interpretation command works on: a checkpoint, or a model brought by the user.

``--checkpoint RUN/best.pt`` rebuilds the model a run recorded (any model of the registry,
:func:`audioconv.training.checkpoint.load_model`). ``--model SPEC --weights FILE --labels FILE``
builds ``SPEC`` with :func:`audioconv.models.registry.build_model` (``cnn``, ``bcresnet`` or
``package.module:factory``, called with ``n_classes`` and ``sample_rate``; a backbone on log-mel gets
the package's LogMel front end) and loads a state dict into it. The weights may be a plain
``state_dict()`` file, an audioconv checkpoint (the weights ``--checkpoint`` would load: the EMA copy of
a run trained with ``--ema``, :func:`~audioconv.training.checkpoint.checkpoint_weights`), another
checkpoint dict holding one under ``"model"`` or ``"state_dict"``, or a TorchScript file (its
``state_dict()`` is read). Keys of a backbone's own state dict (without the
``backbone.`` prefix) are accepted too.

A TorchScript file cannot be the model itself: the projector follows the model's torch calls in
Python, which a compiled graph does not make; give the Python factory of the same architecture
and the TorchScript file as ``--weights``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from audioconv.training.config import TrainConfig

__all__ = ["add_model_arguments", "load_cli_model", "clip_length_s", "snapshot_loader", "read_labels"]


def add_model_arguments(p, checkpoint: bool = True) -> None:
    """``--checkpoint`` (unless ``checkpoint=False``) or ``--model``/``--weights``/``--labels`` (+ the front
    end of a brought model)."""
    g = p.add_argument_group("model (--checkpoint, or --model with --weights)" if checkpoint else
                             "a run trained elsewhere (its snapshots are state dicts of --model)")
    if checkpoint:
        g.add_argument("--checkpoint", help="RUN/best.pt, last.pt or a snapshot")
    g.add_argument("--model", metavar="SPEC",
                   help="bring your own model: 'package.module:factory' (called with n_classes=, sample_rate=; "
                        "may return a backbone on log-mel (B, 1, F, T)), 'cnn' or 'bcresnet'")
    if checkpoint:  # (a run's snapshots are its weights)
        g.add_argument("--weights", help="state dict for --model: a torch.save(model.state_dict()) file, a "
                                         "checkpoint dict with 'model' or 'state_dict', or a TorchScript file of "
                                         "the same model")
    g.add_argument("--labels", help="class names for --model: a run's labels.json, a JSON list, or a text file with "
                                    "one name per line (their number is n_classes)")
    g.add_argument("--n-classes", type=int, help="outputs of --model when there is no --labels file")
    g.add_argument("--sample-rate", type=int, default=16000, help="Hz of --model's front end (default 16000)")
    g.add_argument("--n-mels", type=int, default=None,
                   help="log-mel bins of --model's front end (default: those of the mel filters in --weights "
                        f"when it holds them, else {TrainConfig.n_mels} as `audioconv train`; a factory's full model "
                        "its own)")
    g.add_argument("--width", type=float, default=None, help="--model size multiplier (built-ins, or passed to "
                                                              "the factory as width=)")


def read_labels(path) -> list[str]:
    """Class names from ``--labels``: the ``labels.json`` a training run writes (``{"labels": [...]}``) or a
    JSON list of names (a ``.json`` file, or text starting with ``[`` or ``{``), else a text file with one
    name per line (blank lines skipped)."""
    from audioconv.data.dataset import load_labels

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--labels file not found: {p}")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{"):
        try:
            labels = load_labels(p)
        except ValueError as e:
            raise ValueError(f"--labels: {e}") from None
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    if len(labels) < 2:
        raise ValueError(f"--labels {p} lists {len(labels)} class name(s); a classifier needs at least 2")
    return labels


def _state_dict(path) -> dict:
    """The state dict in ``path`` (module docstring)."""
    from audioconv.training.checkpoint import FORMAT, checkpoint_weights

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    try:
        with warnings.catch_warnings():  # torch.load hands a TorchScript archive to torch.jit.load, with a warning
            warnings.simplefilter("ignore")
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as first:  # not a pickle of tensors: perhaps TorchScript
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.jit.load(str(p), map_location="cpu")
        except Exception:
            raise ValueError(f"weights file {p} is neither a state dict (torch.save) nor a TorchScript file "
                             f"({type(first).__name__}: {str(first).splitlines()[0] if str(first) else ''})") from None
    if isinstance(obj, torch.nn.Module):  # a TorchScript module: its weights
        obj = obj.state_dict()
    if isinstance(obj, dict) and obj.get("format") == FORMAT and isinstance(obj.get("model"), dict):
        obj, _ = checkpoint_weights(obj, "auto", f"weights file {p}")  # as --checkpoint: EMA weights when kept
    elif isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {p} holds no state dict (a dict of tensors)")
    return dict(obj)


def _load_weights(model: torch.nn.Module, state: dict, source: str) -> None:
    from audioconv.training.checkpoint import load_model_state

    backbone = getattr(model, "backbone", None)
    own = model.state_dict()
    if backbone is not None and not any(k in own for k in state):  # the backbone's own keys
        load_model_state(backbone, state, source=source)
        return
    if backbone is not None and all(k.startswith("backbone.") for k in state):  # the front end has no weights
        state = {**{k: v for k, v in own.items() if not k.startswith("backbone.")}, **state}
    load_model_state(model, state, source=source)


def load_cli_model(args, device) -> tuple[torch.nn.Module, list[str], dict | None]:
    """``(model in eval mode on device, labels, checkpoint)`` from ``--checkpoint`` (``checkpoint``: the dict
    :func:`~audioconv.training.checkpoint.load_checkpoint` read, so that nothing reads the file again) or
    ``--model``/``--weights`` (``checkpoint`` is ``None``)."""
    from audioconv.training.checkpoint import load_checkpoint, model_from_checkpoint
    from audioconv.utils import resolve_device

    if getattr(args, "checkpoint", None) and args.model:
        raise ValueError("give --checkpoint or --model (with --weights), not both")
    if getattr(args, "checkpoint", None):
        device = resolve_device(device)
        ckpt = load_checkpoint(args.checkpoint, map_location="cpu")
        model, labels = model_from_checkpoint(ckpt, f"checkpoint {args.checkpoint}")
        return model.to(device).eval(), labels, ckpt
    if not args.model:
        raise ValueError("--checkpoint or --model is required")
    return (*_brought_model(args, device), None)


def clip_length_s(args, checkpoint: dict | None) -> float:
    """The probe clips' length in seconds: ``--clip-s`` when given, else the clip length the checkpoint's run
    trained on (:func:`~audioconv.training.checkpoint.run_clip_s`), else (``--model``)
    :data:`~audioconv.training.checkpoint.DEFAULT_CLIP_S`."""
    from audioconv.training.checkpoint import DEFAULT_CLIP_S, run_clip_s

    if args.clip_s is not None:
        return args.clip_s
    return run_clip_s(checkpoint) if checkpoint is not None else DEFAULT_CLIP_S


def snapshot_loader(args):
    """``None`` without ``--model``; else ``(path, device) → model``: ``--model``'s architecture with the
    weights of one snapshot file (a state dict, a checkpoint, or TorchScript)."""
    if not args.model:
        return None
    import copy

    def key(frontend):
        return tuple(sorted((frontend or {}).items()))

    templates = {key(_frontend(args, None)): _brought_model(args, "cpu", weights=False)[0]}  # one per front end

    def load(path, device):
        state = _state_dict(path)
        front = key(_frontend(args, state))
        if front not in templates:
            templates[front] = _brought_model(args, "cpu", weights=False, state=state)[0]
        model = copy.deepcopy(templates[front])
        _load_weights(model, state, f"snapshot {path}")
        return model.to(device).eval()

    return load


def _frontend(args, state: dict | None) -> dict | None:
    """The front end's overrides for ``--model`` (``{"n_mels": 40}``, with ``"f_max_hz"`` when the weights'
    mel filters stop below the Nyquist frequency): the bands are ``--n-mels``, else those of the weights'
    mel filters (``state``: a whole model's weights, a run of any version), else for ``cnn``/``bcresnet``
    ``audioconv train``'s default; ``None`` for a factory with neither (``_brought_model`` then gives a
    backbone ``audioconv train``'s bands, a full model its own). Filters that fit no front end at
    ``--sample-rate`` are an error for a built-in model, and a factory's own business."""
    from audioconv.features import mel_top_hz
    from audioconv.models.registry import BUILTIN

    filters = (state or {}).get("frontend.mel.mel_scale.fb")  # (frequencies, bands)
    filters = filters if isinstance(filters, torch.Tensor) and filters.dim() == 2 else None
    if args.n_mels is not None:
        frontend = {"n_mels": int(args.n_mels)}
    elif filters is not None:  # a whole model's weights (a run's checkpoint): its own bands
        frontend = {"n_mels": int(filters.shape[1])}
    elif str(args.model) not in BUILTIN:
        return None
    else:
        frontend = {"n_mels": TrainConfig.n_mels}
    if filters is not None and filters.shape[1] == frontend["n_mels"]:
        try:
            top_hz = mel_top_hz(filters, int(args.sample_rate))
        except ValueError as e:
            if str(args.model) not in BUILTIN:  # a factory's own front end, made its own way: its filters load as they are
                return frontend
            raise ValueError(f"the weights' front end does not fit --sample-rate {args.sample_rate}: {e}; give the "
                             f"sample rate the model was trained at") from None
        if top_hz is not None:
            frontend["f_max_hz"] = top_hz
    return frontend


def _brought_model(args, device, weights: bool = True, state: dict | None = None):
    """``(model, labels)`` for ``--model``; with ``weights``, ``--weights`` loaded (``state``: weights already
    read, whose mel bands and top frequency the front end takes; ``--n-mels`` overrides the bands)."""
    from audioconv.features import LogMelConfig
    from audioconv.models.classifier import LogMelClassifier
    from audioconv.models.registry import build_model, is_factory

    spec = str(args.model)
    if Path(spec).is_file() and not is_factory(spec):
        raise ValueError(f"--model {spec} is a file; a TorchScript model cannot be projected (the projector follows "
                         "the model's torch calls in Python): give --model package.module:factory of the same "
                         f"architecture and --weights {spec}")
    if args.labels:
        labels = read_labels(args.labels)
        if args.n_classes is not None and args.n_classes != len(labels):
            raise ValueError(f"--n-classes {args.n_classes} differs from the {len(labels)} names in --labels")
    elif args.n_classes is not None:
        if args.n_classes < 2:
            raise ValueError(f"--n-classes must be >= 2, got {args.n_classes}")
        labels = [str(i) for i in range(args.n_classes)]
    else:
        raise ValueError("--model needs --labels (a file of class names) or --n-classes")
    if weights and getattr(args, "weights", None):
        state = _state_dict(args.weights)
    frontend = _frontend(args, state)
    # the output check runs on the log-mel of a clip of `audioconv train`'s default length (a head over
    # flattened features needs the frames it was trained on)
    n_frames = int(args.sample_rate * TrainConfig.clip_s) // LogMelConfig.hop_length + 1
    model = build_model(spec, len(labels), int(args.sample_rate), width=args.width, frontend=frontend or {},
                        n_frames=None if frontend is None else n_frames)
    if frontend is None:  # a factory: a backbone gets `audioconv train`'s bands, a full model keeps its own
        backbone = isinstance(model, LogMelClassifier)
        model = build_model(spec, len(labels), int(args.sample_rate), width=args.width,
                            frontend={"n_mels": TrainConfig.n_mels} if backbone else {}, n_frames=n_frames)
    if not weights:
        pass
    elif getattr(args, "weights", None):
        _load_weights(model, state, f"--weights {args.weights}")
    elif spec in ("cnn", "bcresnet"):
        raise ValueError(f"--model {spec} needs --weights (its random initial weights would explain nothing)")
    return model.to(device).eval(), labels
