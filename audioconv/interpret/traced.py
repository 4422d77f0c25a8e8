"""A model put on a device once and run up to its layers along traced paths.

:class:`TracedModel` is the one way the interpretation code runs a model up to a layer: the
:class:`~audioconv.interpret.projector.Projector`, :func:`~audioconv.interpret.topk.top_k`,
:func:`~audioconv.interpret.evolve.evolve` and :func:`~audioconv.interpret.occlusion.occlusion`
all go through it. It

* puts the model on the device **once** (the caller's model itself when it already lives there,
  else one copy made at construction; the caller's model is never moved),
* turns waveforms into log-mel with the model's own front end (:meth:`TracedModel.to_logmel`),
* resolves layer names (package short names, module names, operation names; see
  :mod:`audioconv.interpret.graph`) against one census of the model's forward pass,
* traces the graph from the log-mel input to a layer (:meth:`TracedModel.path` for its structure,
  :meth:`TracedModel.trace` with a batch's records for the projector; :meth:`TracedModel.trace_output`
  to the logits, for class saliency) and runs the model's own
  forward up to its layers (:meth:`TracedModel.feature_maps`: one pass for several layers).

Models: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (or any module with a
:class:`~audioconv.features.LogMel` ``frontend`` and a ``classify(logmel)`` method) is entered at
``classify``; any other ``nn.Module`` CNN is entered at its ``forward`` and takes log-mel
``(B, 1, F, T)``.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from audioconv.features import LogMel
from audioconv.interpret import graph as graphs
from audioconv.interpret.graph import Graph
from audioconv.interpret.rules import Mode, resolve_layer
from audioconv.utils import eval_mode, model_device, model_dtype, resolve_device

__all__ = ["TracedModel", "model_entry", "LayerNameError"]

_DEFAULT_SIZE = (64, 128)  # (F, T) traced with when a plain CNN gives no size and no example
_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.SiLU, nn.GELU, nn.ELU, nn.Mish, nn.ReLU6, nn.Hardswish)


class LayerNameError(ValueError):
    """A layer name the model does not have (or an ambiguous one): raised by :meth:`TracedModel.key`, so
    that a command can say which of its flags named it."""


def model_entry(model: nn.Module):
    """(function taking log-mel ``(B, 1, F, T)``, default input size ``(F, T)`` or ``None``).

    For a model with a :class:`~audioconv.features.LogMel` ``frontend`` and a ``classify`` method
    (a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN`) that is ``model.classify`` and
    ``(n_mels, frames of 1 s)``; for any other module, the module itself and ``None``.
    """
    fe = getattr(model, "frontend", None)
    if isinstance(fe, LogMel) and callable(getattr(model, "classify", None)):
        return model.classify, (fe.config.n_mels, fe.n_frames(fe.config.sample_rate))
    return model, None


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` if it lives on ``device`` (or holds no tensors), else a copy moved there."""
    has_tensors = next(iter(model.parameters()), None) is not None or next(iter(model.buffers()), None) is not None
    if not has_tensors or model_device(model) == device:
        return model
    return copy.deepcopy(model).to(device)


class TracedModel:
    """A model on one device, run up to its layers along traced paths (module docstring).

    Args:
        model: a SpectrogramCNN-like model or any ``nn.Module`` CNN taking log-mel ``(B, 1, F, T)``.
        device: ``"auto"``/``None`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a
            ``torch.device``.

    Attributes:
        source: the caller's model (never moved or modified).
        model: the model the computations run on: ``source`` itself when it already lives on
            ``device``, else a copy made once, here — it holds ``source``'s weights as they were
            when this object was made.
        device, dtype: where and in which floating-point type the computations run.
        entry: the function taking log-mel (``model.classify`` or ``model``).
        frontend: the model's :class:`~audioconv.features.LogMel`, or ``None``.
    """

    def __init__(self, model: nn.Module, device: str | torch.device | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.source = model
        self.device = resolve_device(device)
        self.model = _on_device(model, self.device)
        self.dtype = model_dtype(self.model)
        self.entry, self.default_size = model_entry(self.model)
        self.frontend = self.model.frontend if self.default_size is not None else None
        self._paths: dict = {}
        self._census: dict = {}

    @property
    def layer_names(self) -> list[str]:
        """The model's short layer names (``conv1`` …, ``stage1`` …) when it has them, else the names of its
        activation modules (ReLU, LeakyReLU, Tanh, SiLU, …: the usual feature maps), else all module names."""
        names = list(getattr(self.model, "layer_names", []) or [])
        if names:
            return names
        acts = [n for n, m in self.model.named_modules() if n and isinstance(m, _ACTIVATIONS)]
        return acts or [n for n, _ in self.model.named_modules() if n]

    # ---- inputs -----------------------------------------------------------------------------
    def input_kind(self, inputs, input_kind: str = "auto") -> tuple[torch.Tensor, str]:
        """``(inputs as a float tensor, "waveform" or "logmel")``: what :meth:`to_logmel` is given
        (``input_kind`` as there; ``"auto"`` decided from the shape and the model's front end)."""
        x = torch.as_tensor(inputs)
        if not x.is_floating_point():
            raise ValueError(f"inputs must be a float tensor, got dtype {x.dtype}")
        if input_kind not in ("auto", "logmel", "waveform"):
            raise ValueError(f"input_kind must be 'auto', 'logmel' or 'waveform', got {input_kind!r}")
        kind = input_kind
        if kind == "auto":
            n_mels = self.frontend.config.n_mels if self.frontend is not None else None
            logmel = x.dim() == 4 or self.frontend is None or (x.dim() == 3 and x.shape[1] == n_mels)
            kind = "logmel" if logmel else "waveform"
        if kind == "waveform" and self.frontend is None:
            raise ValueError("waveform inputs need a model with a LogMel front end (a SpectrogramCNN)")
        return x, kind

    def to_logmel(self, inputs, input_kind: str = "auto") -> torch.Tensor:
        """Inputs → log-mel ``(B, 1, F, T)`` on the device in the model's dtype.

        Args:
            inputs: waveforms ``(B, C, T)`` / ``(B, T)`` (models with a front end) or log-mel
                ``(B, 1, F, T)`` / ``(B, F, T)``.
            input_kind: ``"auto"`` (4-D, or 3-D with ``n_mels`` rows, or any input of a model
                without front end is log-mel; other input is a waveform), ``"logmel"`` or ``"waveform"``.
        """
        x, kind = self.input_kind(inputs, input_kind)
        x = x.to(self.device)
        if kind == "waveform":
            with torch.no_grad():
                x = self.frontend(x)
        elif x.dim() == 3:
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"log-mel inputs must be (batch, 1, F, T) or (batch, F, T), got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("inputs hold no examples (batch size 0)")
        return x.to(self.dtype)

    def loudness_logmel(self, inputs, input_kind: str = "auto", logmel: torch.Tensor | None = None) -> torch.Tensor:
        """The log-mel in dB ``(B, 1, F, T)`` that silence is judged on (``frames.active_frames``): the
        model's input (``logmel`` when given, else :meth:`to_logmel`), except that for waveforms
        through a front end that normalises (``normalize`` other than ``"none"``: PCEN's unitless
        values, per-bin or per-clip z-scores) it is the front end's dB before that."""
        x, kind = self.input_kind(inputs, input_kind)
        if kind == "waveform" and self.frontend.config.normalize != "none":
            with torch.no_grad():
                return self.frontend.db(self.frontend.power(x.to(self.device)))
        return logmel if logmel is not None else self.to_logmel(x, kind)

    def axes(self, n_mels: int, n_frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(Hz ``(F,)`` of each mel bin, s ``(T,)`` of each frame), or ``(None, None)`` without a front end."""
        if self.frontend is None:
            return None, None
        hz = np.asarray(self.frontend.mel_hz(), dtype=np.float64)
        return (hz if len(hz) == n_mels else None), np.asarray(self.frontend.frame_s(n_frames), dtype=np.float64)

    # ---- layers and graphs ----------------------------------------------------------------------
    def _example(self, example: torch.Tensor | None, input_size) -> torch.Tensor:
        if example is None:
            F_, T_ = input_size or self.default_size or _DEFAULT_SIZE
            return torch.zeros(1, 1, int(F_), int(T_), dtype=self.dtype, device=self.device)
        return example[:1].to(self.device, self.dtype)

    def census(self, example: torch.Tensor | None = None, input_size=None) -> graphs.Census:
        """Module calls and operations of one whole forward pass (cached per input size)."""
        x = self._example(example, input_size)
        key = tuple(x.shape[-2:])
        if key not in self._census:
            with eval_mode(self.model):
                self._census[key] = graphs.census(self.model, self.entry, x)
        return self._census[key]

    def key(self, layer: str, example: torch.Tensor | None = None, input_size=None) -> str:
        """Canonical name of ``layer`` (``"conv2"`` → ``"features.act2#1"``); ``ValueError`` listing the
        valid layers for an unknown one, or the calls of an ambiguous one.

        A model that wraps the user's network as ``backbone`` (a brought model behind the package's
        front end) also takes the backbone's own names: ``layer1.0:add`` for ``backbone.layer1.0:add``.
        """
        try:
            return self._key(layer, example, input_size)
        except ValueError as first:
            for inner in self._backbone_names(layer):
                try:
                    return self._key(inner, example, input_size)
                except ValueError as e:
                    if "ambiguous" in str(e) or "call number" in str(e):  # the name exists inside the backbone
                        raise LayerNameError(str(e).replace(repr(inner), repr(layer), 1)) from None
            raise LayerNameError(str(first)) from None

    def module(self, layer: str, example: torch.Tensor | None = None, input_size=None) -> tuple:
        """``(module, None)`` when ``layer`` names a module's output, ``(None, canonical key)`` when it names an
        operation (``"layer1:add"``); the names :meth:`key` takes (``ValueError`` for an unknown one).

        Module names are looked up directly first, as forward hooks see them (a module called several
        times gives its last output there); the other names go through :meth:`key`."""
        try:
            _, module = resolve_layer(self.model, layer)
        except ValueError:
            module = None
        if module is not None:
            return module, None
        key = self.key(layer, example, input_size)
        base = key.rsplit("#", 1)[0]
        if ":" in base:
            return None, key
        return dict(self.model.named_modules())[base], None

    def last_feature_map(self, before: str | None = None, example: torch.Tensor | None = None,
                         input_size=None) -> str:
        """The name of the last output with feature maps ``(B, C, F', T')`` (more than one cell) in the
        forward pass — before the output of layer ``before`` when given — preferring the module that
        made it over its operation (``"backbone.layer2"``, else ``"backbone.layer2:relu"``).

        The default Grad-CAM layer of a model without short layer names. ``ValueError`` when there is none."""
        c = self.census(example, input_size)
        limit, inside = None, ()
        if before is not None:
            own = self.key(before, example, input_size)
            limit, own = c.order[own][0], own.rsplit("#", 1)[0]
            inside = () if ":" in own else (own + ".", own + ":")  # the layer's own parts are not below it
        best = None
        for key, (node, shape) in c.order.items():
            spatial = len(shape) == 4 and shape[2] * shape[3] > 1
            if not spatial or (limit is not None and node >= limit) or node == 0 or (inside and key.startswith(inside)):
                continue
            if best is None or node > best[1] or (node == best[1] and ":" in best[0]):  # a module beats its op
                best = (key, node)
        if best is None:
            where = f" below layer {before!r}" if before is not None else ""
            raise ValueError(f"the model has no layer with feature maps (B, C, F, T){where}")
        base, n = best[0].rsplit("#", 1)
        count = c.ops.get(base, 0) if ":" in base else c.calls.get(base, 0)
        return base if count == 1 else best[0]

    def _key(self, layer, example, input_size) -> str:
        try:
            _, module = resolve_layer(self.model, layer)
        except ValueError:  # not a module: perhaps an operation of the model's own forward ("relu")
            base = layer.rsplit("#", 1)[0] if isinstance(layer, str) else layer
            if not isinstance(layer, str) or f":{base}" not in self.census(example, input_size).ops:
                raise
            module = None
        module_name = None if module is None else self._module_names().get(module)
        return self.census(example, input_size).key(layer, module_name)

    def _backbone_names(self, layer: str) -> list[str]:
        """``layer`` seen from inside ``model.backbone`` (none when the model has no backbone): a module
        or operation path under it, and for a bare name (``relu``) also the backbone's own operation."""
        if not isinstance(getattr(self.model, "backbone", None), nn.Module) or not isinstance(layer, str) or not layer:
            return []
        if layer.startswith(":"):
            return ["backbone" + layer]
        bare = ":" not in layer and "." not in layer.rsplit("#", 1)[0]
        return [f"backbone.{layer}"] + ([f"backbone:{layer}"] if bare else [])

    def _module_names(self) -> dict:
        if "_names" not in self._census:
            self._census["_names"] = {m: n for n, m in reversed(list(self.model.named_modules()))}
        return self._census["_names"]

    def path(self, layer: str, example: torch.Tensor | None = None,
             input_size: tuple[int, int] | None = None) -> Graph:
        """The traced :class:`~audioconv.interpret.graph.Graph` from the log-mel input to ``layer`` (cached).

        Traced with ``example`` (log-mel ``(b, 1, F, T)``) or, without one, a zero input of
        ``input_size`` (default: the model's own size, else 64 × 128), in eval mode. Its structure
        (channels, receptive fields) is what callers use; the records are those of one example.
        ``layer``: ``"conv2"``, a module name from ``model.named_modules()`` or an operation name.
        """
        x = self._example(example, input_size)
        key = (layer, tuple(x.shape[-2:]))
        if key not in self._paths:
            self._paths[key] = self.trace(layer, x, None)
        return self._paths[key]

    def trace(self, layer: str, logmel: torch.Tensor, mode: Mode | None) -> Graph:
        """The graph from log-mel ``(B, 1, F, T)`` to ``layer`` with this batch's records for ``mode``."""
        key = self.key(layer, logmel)
        with eval_mode(self.model):
            return graphs.trace(self.model, self.entry, logmel, layer, key, mode)

    def trace_output(self, logmel: torch.Tensor, mode: Mode | None) -> Graph:
        """The graph from log-mel ``(B, 1, F, T)`` to the model's output (its logits ``(B, n_classes)``,
        named ``"logits"`` in messages), with this batch's records for ``mode``: the whole forward pass."""
        with eval_mode(self.model):
            return graphs.trace(self.model, self.entry, logmel, "logits", graphs.OUTPUT, mode)

    @torch.no_grad()
    def feature_maps(self, logmel: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Feature maps ``{layer: (B, C_l, H_l, W_l)}`` of log-mel ``(B, 1, F, T)`` (eval mode, no grad):
        one run of the model's own forward pass, stopped once every layer has been seen. A ``(B, C)``
        output (a linear head) is ``(B, C, 1, 1)``, a ``(B, C, L)`` one ``(B, C, 1, L)``."""
        layers = [layers] if isinstance(layers, str) else list(layers)
        logmel = logmel.to(self.device, self.dtype)
        keys = {name: self.key(name, logmel) for name in layers}
        with eval_mode(self.model):
            maps = graphs.feature_maps(self.model, self.entry, logmel, keys)
        return {name: graphs.as_4d(a) for name, a in maps.items()}

    def activations(self, logmel: torch.Tensor, layers, batch_size: int = 32,
                    reduce: str | None = None) -> dict[str, torch.Tensor]:
        """:meth:`feature_maps` over ``(N, 1, F, T)`` in batches, on the CPU in float32.

        Args:
            logmel: log-mel inputs (any device; moved batch by batch).
            layers: layer names.
            batch_size: inputs per forward pass.
            reduce: ``None`` → ``{layer: (N, C, H, W)}``; ``"mean"`` / ``"max"`` over positions →
                ``{layer: (N, C)}``.
        """
        if reduce not in (None, "mean", "max"):
            raise ValueError(f"reduce must be None, 'mean' or 'max', got {reduce!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        layers = list(layers)
        out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
        for lo in range(0, logmel.shape[0], int(batch_size)):
            x = logmel[lo:lo + int(batch_size)].to(self.device, self.dtype)
            for name, a in self.feature_maps(x, layers).items():
                if reduce == "mean":
                    a = a.mean(dim=(2, 3))
                elif reduce == "max":
                    a = a.amax(dim=(2, 3))
                out[name].append(a.float().cpu())
        return {name: torch.cat(v) for name, v in out.items()}

    @torch.no_grad()
    def logits(self, logmel: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """The model's logits ``(N, n_classes)`` (CPU) for log-mel ``(N, 1, F, T)``, in eval mode."""
        with eval_mode(self.model):
            return torch.cat([self.entry(logmel[lo:lo + batch_size].to(self.device, self.dtype)).cpu()
                              for lo in range(0, logmel.shape[0], batch_size)])
