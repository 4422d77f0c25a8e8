"""What an explanation explains: a class logit or a hidden unit, as one score per example.

Every method of :mod:`audioconv.interpret.saliency`, :mod:`~audioconv.interpret.gradcam`,
:mod:`~audioconv.interpret.actmax`, :mod:`~audioconv.interpret.sanity` and
:mod:`~audioconv.interpret.faithfulness` explains a *target*:

* a **class**: an int (the same class for every example), a sequence or ``(B,)`` tensor of class
  indices (one per example), or ``None`` — the class the model predicts for each example. The
  score is that class's **logit** (before softmax), as in Captum's ``target=``.
* a **unit**: :class:`Unit` ``(layer, channel, position)``. The score is the unit's activation
  (the layer's output): at its strongest position (``"max"``), at a feature-map cell ``(f, t)``,
  or averaged over the whole map (``"mean"``).

:func:`forward_scores` runs a model on log-mel with autograd on, captures any layer's output — a
module's with a forward hook (removed in ``finally``), an operation's (``layer1:add``) by tracing the
forward pass (:func:`~audioconv.interpret.graph.capture`) — and returns the scores. Layer names are
resolved as everywhere else (:meth:`~audioconv.interpret.traced.TracedModel.module`: short names,
module names, a wrapped backbone's own names, operations). It works on any differentiable model
— chains, residual graphs, functional calls — because it only reads outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from audioconv.interpret.graph import capture as graph_capture
from audioconv.interpret.traced import TracedModel

__all__ = ["Unit", "class_indices", "forward_scores", "describe_target"]


@dataclass(frozen=True)
class Unit:
    """A hidden unit: channel ``channel`` of layer ``layer``'s feature map ``(B, C, H, W)``.

    Attributes:
        layer: ``"conv3"`` (a built-in model's short name) or a module name (``"layer1.0.relu"``).
        channel: channel index.
        position: ``"max"`` (the unit's strongest cell in each example), ``(f, t)`` (one
            feature-map cell) or ``"mean"`` (the mean over the whole map).
    """

    layer: str
    channel: int
    position: object = "max"

    def __post_init__(self):
        if isinstance(self.channel, bool) or not isinstance(self.channel, int) or self.channel < 0:
            raise ValueError(f"Unit channel must be a non-negative int, got {self.channel!r}")
        p = self.position
        if isinstance(p, str):
            if p not in ("max", "mean"):
                raise ValueError(f"Unit position must be 'max', 'mean' or a cell (f, t), got {p!r}")
        elif not (isinstance(p, (tuple, list)) and len(p) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)):
            raise ValueError(f"Unit position must be 'max', 'mean' or a cell (f, t) of non-negative ints, got {p!r}")
        else:
            object.__setattr__(self, "position", (int(p[0]), int(p[1])))

    def select(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The unit's score ``(B,)`` from the layer's output ``(B, C, H, W)``."""
        if feature_map.dim() != 4:
            raise ValueError(f"layer {self.layer!r} gives a {feature_map.dim()}-D output {tuple(feature_map.shape)}; "
                             "a unit needs a feature map (B, C, H, W)")
        B, C, H, W = feature_map.shape
        if self.channel >= C:
            raise ValueError(f"channel {self.channel} does not exist in layer {self.layer!r}; valid channels: 0..{C - 1}")
        m = feature_map[:, self.channel]
        if self.position == "max":
            return m.flatten(1).amax(dim=1)
        if self.position == "mean":
            return m.mean(dim=(1, 2))
        f, t = self.position
        if f >= H or t >= W:
            raise ValueError(f"position (f={f}, t={t}) is outside layer {self.layer!r}'s {H} x {W} feature map")
        return m[:, f, t]


def describe_target(target) -> str:
    """A short human-readable name: ``"class 3"``, ``"predicted class"``, ``"conv3 unit 5 (max)"``."""
    if target is None:
        return "predicted class"
    if isinstance(target, Unit):
        pos = target.position if isinstance(target.position, str) else f"cell {target.position}"
        return f"{target.layer} unit {target.channel} ({pos})"
    if isinstance(target, int):
        return f"class {target}"
    return "class per example"


def class_indices(target, logits: torch.Tensor) -> torch.Tensor:
    """Class target → ``(B,)`` long on ``logits``' device (``None`` → ``logits.argmax(1)``).

    Raises ``ValueError`` for a count that is not 1 or B, a non-integer, or an index outside
    ``0..n_classes-1``.
    """
    if logits.dim() != 2:
        raise ValueError(f"a class target needs a model whose output is logits (B, n_classes); "
                         f"got an output of shape {tuple(logits.shape)}")
    B, n = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise ValueError(f"target must be a class index, a sequence of them, None or a Unit; got {target!r}")
    try:
        idx = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"target must be a class index, a sequence of them, None or a Unit; got {target!r}") from None
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.dim() > 1:
        raise ValueError(f"class targets must be integers (one, or one per example), got {target!r}")
    idx = idx.long().flatten().to(logits.device)
    if idx.numel() == 1:
        idx = idx.expand(B)
    if idx.numel() != B:
        raise ValueError(f"target must be one class index or one per example ({B}), got {idx.numel()}")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.numel():
        raise ValueError(f"class index {int(bad[0])} is out of range: the model has classes 0..{n - 1}")
    return idx


class _Capture:
    """Forward hooks that keep the output of some modules (the last call of each); removed by :meth:`close`.

    Each captured output is replaced, for the rest of the forward, by a clone, so that an in-place
    operation after the layer (``ReLU(inplace=True)``) cannot overwrite the captured tensor.
    """

    def __init__(self, modules: dict[str, nn.Module]):
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for key, module in modules.items():
            self._handles.append(module.register_forward_hook(self._hook(key)))

    def _hook(self, key):
        def hook(module, args, out):
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"layer {key!r} ({type(module).__name__}) returns {type(out).__name__}, not a tensor")
            self.outputs[key] = out
            return out.clone()
        return hook

    def close(self):
        for h in self._handles:
            h.remove()
        self._handles = []


def forward_scores(traced: TracedModel, logmel: torch.Tensor, target, layers=()) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """Run the model on log-mel with autograd and return the target's scores.

    Args:
        traced: the model on its device (:class:`~audioconv.interpret.traced.TracedModel`).
        logmel: ``(B, 1, F, T)`` on ``traced.device`` (may require grad).
        target: a class target or a :class:`Unit` (module docstring).
        layers: layer names whose outputs to return as well (e.g. the Grad-CAM layer).

    Returns:
        ``(scores (B,), {layer: output}, logits)`` — scores and outputs are part of the autograd graph.
        A layer run more than once in a forward pass gives its **last** output (as Captum).
    """
    names = list(dict.fromkeys([*layers, *([target.layer] if isinstance(target, Unit) else [])]))
    modules, ops = {}, {}
    for name in names:  # (one resolution of layer names: TracedModel.module)
        module, key = traced.module(name, logmel)
        if module is not None:
            modules[name] = module
        else:
            ops[name] = key
    capture = _Capture(modules)
    try:
        if ops:  # operations (layer1:add) are seen by tracing the forward pass
            logits, outputs = graph_capture(traced.model, traced.entry, logmel, ops)
            capture.outputs.update(outputs)
        else:
            logits = traced.entry(logmel)
    finally:
        capture.close()
    missing = [n for n in names if n not in capture.outputs]
    if missing:
        raise ValueError(f"layer {missing[0]!r} was not reached by the model's forward pass")
    if isinstance(target, Unit):
        scores = target.select(capture.outputs[target.layer])
    else:
        idx = class_indices(target, logits)
        scores = logits.gather(1, idx[:, None])[:, 0]
    return scores, capture.outputs, logits
