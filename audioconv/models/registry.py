"""Which model a run trains: ``"cnn"``, ``"bcresnet"`` or a factory ``"package.module:factory"``.

:func:`build_model` makes the model a spec names; :func:`describe` gives the ``(spec, config)``
pair a checkpoint records; :func:`rebuild` turns that pair back into the same architecture.

A factory is any importable callable (``package.module:name``; ``name`` may be dotted,
``module:Class.create``). It is called with keywords ``n_classes`` and ``sample_rate`` (Hz), and
``width`` when one is given (then the factory must accept it). It returns either

* a **full model**: a module with a :class:`~audioconv.features.LogMel` ``frontend`` and a
  ``classify(logmel)`` method (``forward(waveform)`` = ``classify(frontend(waveform))``), or
* a **backbone**: a module mapping log-mel ``(B, 1, F, T)`` to logits ``(B, n_classes)``; it is
  wrapped in a :class:`~audioconv.models.classifier.LogMelClassifier` with the package's front end.

Either way one dummy forward on log-mel checks the output is ``(batch, n_classes)``. Every failure
(unknown name, module not importable, no such attribute, the factory raising, a wrong output) is
a one-line ``ValueError`` naming the spec.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from contextlib import contextmanager

import torch
from torch import nn

from audioconv.features import LogMel
from audioconv.models.bcresnet import BCResNet
from audioconv.models.classifier import LogMelClassifier
from audioconv.models.spectrogram_cnn import ModelConfig, SpectrogramCNN
from audioconv.utils import accepts_keyword, eval_mode

__all__ = ["BUILTIN", "build_model", "describe", "rebuild", "check_spec", "is_factory", "count_parameters"]

BUILTIN = {"cnn": SpectrogramCNN, "bcresnet": BCResNet}
_FACTORY = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_RECORD = "_audioconv_factory"  # attribute holding a factory model's (spec, config)


def is_factory(spec: str) -> bool:
    """Whether ``spec`` has the form ``package.module:factory``."""
    return isinstance(spec, str) and bool(_FACTORY.match(spec))


def check_spec(spec: str) -> str:
    """``spec`` if it is a built-in name or has the form ``package.module:factory``; else ``ValueError``."""
    if spec in BUILTIN or is_factory(spec):
        return spec
    raise ValueError(f"unknown model {spec!r}: use {', '.join(map(repr, BUILTIN))} or 'package.module:factory'")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# =============================================================================== factories
@contextmanager
def _cwd_on_path():
    """The current folder on ``sys.path`` (last) for an import, as ``python -m`` would have it."""
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _resolve_factory(spec: str):
    """The callable ``package.module:name`` names (module docstring)."""
    module_name, _, attr_path = spec.partition(":")
    try:
        with _cwd_on_path():
            obj = importlib.import_module(module_name)
    except Exception as e:  # ModuleNotFoundError, or anything the module raises while importing
        raise ValueError(f"model {spec!r}: cannot import module {module_name!r} "
                         f"({type(e).__name__}: {_one_line(e)})") from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: module {module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r}: {attr_path!r} is a {type(obj).__name__}, not a callable factory")
    return obj


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _call_factory(spec: str, n_classes: int, sample_rate: int, width: float | None) -> nn.Module:
    factory = _resolve_factory(spec)
    kwargs = {"n_classes": int(n_classes), "sample_rate": int(sample_rate)}
    if width is not None:
        if not accepts_keyword(factory, "width"):
            raise ValueError(f"model {spec!r}: the factory takes no 'width' argument; leave out width (--width)")
        kwargs["width"] = float(width)
    for name in ("n_classes", "sample_rate"):
        if not accepts_keyword(factory, name):
            raise ValueError(f"model {spec!r}: the factory must accept keyword {name!r} "
                             f"(it is called as factory(n_classes=..., sample_rate=...[, width=...]))")
    call = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    try:
        model = factory(**kwargs)
    except Exception as e:
        raise ValueError(f"model {spec!r}: the factory raised {type(e).__name__}: {_one_line(e)} "
                         f"(called with {call})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {spec!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _is_full_model(model: nn.Module) -> bool:
    return hasattr(model, "frontend") and callable(getattr(model, "classify", None))


def _check_full_model(spec: str, model: nn.Module, sample_rate: int, frontend: dict) -> None:
    fe = model.frontend
    if not isinstance(fe, LogMel):
        raise ValueError(f"model {spec!r}: the model's frontend is a {type(fe).__name__}; a model with "
                         f"frontend/classify must use audioconv.features.LogMel (or return a backbone taking "
                         f"log-mel and let audioconv add the front end)")
    if fe.config.sample_rate != int(sample_rate):
        raise ValueError(f"model {spec!r}: the model's front end runs at {fe.config.sample_rate} Hz "
                         f"but the run's sample_rate is {sample_rate} Hz")
    for key, value in frontend.items():
        if getattr(fe.config, key) != value:
            raise ValueError(f"model {spec!r}: the model's front end has {key}={getattr(fe.config, key)!r} "
                             f"but the run asks for {key}={value!r} (set it to match, e.g. --n-mels)")


def _check_output(spec: str, model: nn.Module, n_classes: int, n_frames: int) -> None:
    """One forward of a zero log-mel ``(2, 1, n_mels, n_frames)`` in eval mode: logits ``(2, n_classes)``."""
    fe = model.frontend
    x = torch.zeros(2, 1, fe.config.n_mels, int(n_frames))
    try:
        with torch.no_grad(), eval_mode(model):
            y = model.classify(x)
    except Exception as e:
        raise ValueError(f"model {spec!r} fails on log-mel input {tuple(x.shape)}: "
                         f"{type(e).__name__}: {_one_line(e)}") from None
    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if shape != (2, int(n_classes)):
        raise ValueError(f"model {spec!r} gives output {shape} for log-mel input {tuple(x.shape)}; "
                         f"expected logits (2, {n_classes}) (batch, n_classes)")


def _factory_model(spec: str, n_classes: int, sample_rate: int, width: float | None, frontend: dict,
                   n_frames: int | None) -> nn.Module:
    model = _call_factory(spec, n_classes, sample_rate, width)
    wrapped = not _is_full_model(model)
    if wrapped:
        model = LogMelClassifier(model, n_classes, sample_rate, frontend)
    else:
        _check_full_model(spec, model, sample_rate, frontend)
    if n_frames is not None:
        _check_output(spec, model, n_classes, n_frames)
    config = {"n_classes": int(n_classes), "sample_rate": int(sample_rate),
              "width": None if width is None else float(width), "frontend": dict(frontend), "wrapped": wrapped}
    setattr(model, _RECORD, (spec, config))  # a plain attribute: survives deepcopy, not in the state_dict
    return model


# =============================================================================== the public three
def build_model(spec: str, n_classes: int, sample_rate: int = 16000, *, width: float | None = None,
                frontend: dict | None = None, n_frames: int | None = None, **options) -> nn.Module:
    """The model ``spec`` names, on CPU, in train mode.

    Args:
        spec: ``"cnn"`` (:class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`), ``"bcresnet"``
            (:class:`~audioconv.models.bcresnet.BCResNet`) or ``"package.module:factory"`` (module docstring).
        n_classes: number of outputs.
        sample_rate: waveform sample rate in Hz.
        width: ``cnn``: its ``channels`` times ``width``; ``bcresnet``: the width multiplier
            (default 1); a factory: passed as ``width=`` (``None``: not passed).
        frontend: :class:`~audioconv.features.LogMelConfig` overrides (``{"n_mels": 64}``); a
            factory's full model must already match them.
        n_frames: log-mel frames of one clip, for a factory model's output check (``None``: no check).
        options: the built-in model's other arguments (``channels``, ``activation``, ``dropout`` for
            ``cnn``; ``sub_bands``, ``dropout`` for ``bcresnet``); none for a factory.

    Returns:
        a module with ``frontend`` (LogMel), ``classify(logmel (B, 1, F, T)) → (B, n_classes)`` and
        ``forward(waveform (B, C, T)) → (B, n_classes)``.

    Raises:
        ValueError: a bad spec or factory, one line naming the spec.
    """
    check_spec(spec)
    frontend = dict(frontend or {})
    if width is not None and not (isinstance(width, (int, float)) and 0 < width < float("inf")):
        raise ValueError(f"width must be a positive number, got {width!r}")
    if spec == "cnn":
        if width is not None:
            channels = options.get("channels", ModelConfig.channels)
            options["channels"] = tuple(max(1, int(round(c * width))) for c in channels)
        return SpectrogramCNN(n_classes, sample_rate, frontend=frontend, **options)
    if spec == "bcresnet":
        return BCResNet(n_classes, sample_rate, width=1.0 if width is None else width, frontend=frontend, **options)
    if options:
        raise ValueError(f"model {spec!r}: options {sorted(options)} apply to the built-in models only")
    return _factory_model(spec, n_classes, sample_rate, width, frontend, n_frames)


def describe(model: nn.Module) -> tuple[str, dict]:
    """``(spec, config)`` that :func:`rebuild` turns back into ``model``'s architecture (a
    checkpoint's ``model_spec`` and ``model_config``)."""
    record = getattr(model, _RECORD, None)
    if record is not None:
        return record[0], dict(record[1])
    for spec, cls in BUILTIN.items():
        if type(model) is cls:
            return spec, model.config.to_dict()
    raise ValueError(f"cannot describe a {type(model).__name__}: build it with audioconv.models.build_model "
                     f"(a built-in name or a 'package.module:factory' spec) so that it can be rebuilt")


def rebuild(spec: str, config: dict) -> nn.Module:
    """The architecture :func:`describe` recorded (fresh weights), on CPU, in train mode.

    Raises:
        ValueError: the config does not fit the spec, or the factory cannot be imported or called.
    """
    check_spec(spec)
    if not isinstance(config, dict):
        raise ValueError(f"model {spec!r}: model_config must be a dict, got {type(config).__name__}")
    try:
        if spec in BUILTIN:
            return BUILTIN[spec].from_config(dict(config))
        model = _factory_model(spec, config["n_classes"], config["sample_rate"], config.get("width"),
                               dict(config.get("frontend") or {}), None)
    except (TypeError, KeyError) as e:
        raise ValueError(f"model {spec!r}: unreadable model_config ({type(e).__name__}: {_one_line(e)})") from None
    if bool(config.get("wrapped", True)) != isinstance(model, LogMelClassifier):
        raise ValueError(f"model {spec!r}: the factory now returns a "
                         f"{'backbone' if isinstance(model, LogMelClassifier) else 'full model'}, "
                         f"unlike when the checkpoint was written")
    return model
