"""Input-space maps of a class or unit score: gradient, guided backprop and deconvnet.

``saliency(model, inputs, target, mode)`` → ``(B, F, T)``: the derivative of the target's score
(a class logit or a unit's activation, see :mod:`audioconv.interpret.targets`) with respect to the
log-mel input, under the backward rule of ``mode``.

**One engine.** ``deconv`` and ``guided`` run the projector's own backward pass
(:func:`audioconv.interpret.graph.backward` with the rules of :mod:`audioconv.interpret.rules`): the
model is traced from its log-mel input to its output, the logits ``(B, n_classes)`` are seeded with
1 at the class (a unit: 1 at its cell, or ``1/(H·W)`` over its map for ``"mean"``), and the signal
goes down through every operation with the rule the projector uses — ReLU, LeakyReLU, tanh, the
SiLU/GELU family, max-pool switches, residual sums, broadcasts. So class saliency and projections
agree on every model the projector accepts (BC-ResNet included), and an operation without a rule
raises the projector's ``ValueError`` naming it and its module; nothing falls back to the gradient.
``gradient`` is autograd's own derivative: the graph's gradient rules equal it (tested), and it
works on any differentiable model, whatever operations it uses.

For a unit whose activation ``a`` is positive, ``a × saliency`` is the
:class:`~audioconv.interpret.projector.Projector`'s map of that unit; for a class on a ReLU network
it equals Captum's ``Saliency(abs=False)`` / ``GuidedBackprop`` / ``Deconvolution`` (both tested in
float64). :func:`class_maps` gives the maps of K classes per input in one backward pass (what
:meth:`Projector.project_classes <audioconv.interpret.projector.Projector.project_classes>` and
``audioconv project --target`` use).
"""
from __future__ import annotations

import numpy as np
import torch

from audioconv.interpret.graph import Graph, backward
from audioconv.interpret.rules import MODES, Mode
from audioconv.interpret.signal import Signal
from audioconv.interpret.targets import Unit, class_indices, forward_scores
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["saliency", "input_saliency", "class_maps", "class_choice"]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


def _maps_from_seed(graph: Graph, seed: Signal, mode: str, logmel: torch.Tensor) -> torch.Tensor:
    """Run the graph's backward pass from ``seed`` (``B × K`` signals) → maps ``(B, K, F, T)`` on the input."""
    B, K = seed.g.shape[:2]
    out = logmel.new_zeros(B, K, *logmel.shape[-2:])
    backward(graph, seed, Mode(mode)).add_to(out)
    return out


def class_choice(classes, logits: torch.Tensor) -> torch.Tensor:
    """Classes to explain → ``(B, K)`` long on ``logits``' device.

    ``classes``: ``None`` (the predicted class of each input, ``K = 1``), an int or a sequence of K
    ints (the same classes for every input), or a ``(B, K)`` long tensor (per input).
    ``ValueError`` names an index outside ``0..n_classes-1``.
    """
    B, n = logits.shape
    if classes is None:
        return logits.argmax(dim=1, keepdim=True)
    if isinstance(classes, (bool, np.bool_)):
        raise ValueError(f"classes must be class indices, got {classes!r}")
    try:
        idx = torch.as_tensor(classes)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"classes must be class indices (an int, a list of ints or a (B, K) tensor), "
                         f"got {classes!r}") from None
    if idx.is_floating_point() or idx.dtype == torch.bool or idx.dim() > 2 or idx.numel() == 0:
        raise ValueError(f"classes must be a non-empty int, list of ints or (B, K) tensor, got {classes!r}")
    idx = idx.long().to(logits.device)
    if idx.dim() == 2 and idx.shape[0] != B:
        raise ValueError(f"per-input classes must be (B={B}, K), got {tuple(idx.shape)}")
    idx = idx.reshape(1, -1).expand(B, -1) if idx.dim() < 2 else idx
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.numel():
        raise ValueError(f"class index {int(bad[0])} is out of range: the model has classes 0..{n - 1}")
    return idx.contiguous()


def class_maps(traced: TracedModel, logmel: torch.Tensor, classes=None, mode: str = "deconv"):
    """Class saliency of K classes per input by the projector's backward pass (the graph engine).

    Args:
        traced: the model on its device.
        logmel: ``(B, 1, F, T)`` on ``traced.device``.
        classes: see :func:`class_choice` (``None``: the predicted class).
        mode: ``"deconv"``, ``"guided"`` or ``"gradient"`` (here the graph's gradient rules).

    Returns:
        ``(maps (B, K, F, T), logits (B, n_classes), classes (B, K))`` on the device; each map is the
        derivative of its class's logit (seeded with 1, not with the logit).
    """
    return _class_maps(traced, logmel, lambda logits: class_choice(classes, logits), mode)


def _class_maps(traced: TracedModel, logmel: torch.Tensor, choose, mode: str):
    """:func:`class_maps` with the classes chosen by ``choose(logits (B, n)) → (B, K)``."""
    _check_mode(mode)
    with eval_mode(traced.model), torch.no_grad():
        graph = traced.trace_output(logmel, Mode(mode))
        logits = graph.feature_map
        if logits.dim() != 2:
            raise ValueError(f"a class target needs a model whose output is logits (B, n_classes); got an output "
                             f"of shape {tuple(logits.shape)}")
        idx = choose(logits)
        B, K = idx.shape
        g = logits.new_zeros(B, K, logits.shape[1])
        g.scatter_(2, idx.unsqueeze(-1), 1.0)
        return _maps_from_seed(graph, Signal(g), mode, logmel), logits, idx


def _unit_maps(traced: TracedModel, logmel: torch.Tensor, unit: Unit, mode: str) -> torch.Tensor:
    """A unit's saliency ``(B, F, T)`` by the graph engine: 1 at its cell (``"max"``: its strongest, first
    in row-major order on ties) or ``1/(H·W)`` over its map (``"mean"``)."""
    with eval_mode(traced.model), torch.no_grad():
        graph = traced.trace(unit.layer, logmel, Mode(mode))
        fm = graph.feature_map
        unit.select(fm)  # ValueError for a layer without feature maps, a channel or cell outside it
        B, _, H, W = fm.shape
        g = fm.new_zeros(B, 1, 1, H, W)
        if unit.position == "mean":
            g.fill_(1.0 / (H * W))
        else:
            if unit.position == "max":
                flat = fm[:, unit.channel].flatten(1).argmax(dim=1)
                f, t = flat // W, flat % W
            else:
                f, t = (torch.full((B,), int(v), device=fm.device) for v in unit.position)
            g[torch.arange(B, device=fm.device), 0, 0, f, t] = 1.0
        chan = torch.full((B, 1), unit.channel, dtype=torch.long, device=fm.device)
        return _maps_from_seed(graph, Signal(g, chan, [0, 0]), mode, logmel)[:, 0]


def input_saliency(traced: TracedModel, logmel: torch.Tensor, target, mode: str = "gradient") -> torch.Tensor:
    """:func:`saliency` on log-mel ``(B, 1, F, T)`` already on ``traced.device`` → ``(B, F, T)`` there."""
    _check_mode(mode)
    if mode != "gradient":
        if isinstance(target, Unit):
            return _unit_maps(traced, logmel, target, mode)
        return _class_maps(traced, logmel, lambda logits: class_indices(target, logits)[:, None], mode)[0][:, 0]
    x = logmel.detach().clone().requires_grad_(True)
    with eval_mode(traced.model), torch.enable_grad():
        scores, _, _ = forward_scores(traced, x, target)
        (g,) = torch.autograd.grad(scores.sum(), x, allow_unused=True)
    return torch.zeros_like(logmel[:, 0]) if g is None else g[:, 0].detach()


def saliency(model: torch.nn.Module, inputs, target=None, mode: str = "gradient", *, input_kind: str = "auto",
             device: str | torch.device | None = None) -> torch.Tensor:
    """Derivative of a class logit or unit activation w.r.t. the log-mel input, under ``mode``'s rule.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (entered at ``classify``)
            or any ``nn.Module`` taking log-mel ``(B, 1, F, T)`` — chain or residual graph; for
            ``deconv``/``guided`` built from operations the projector has rules for. Run in eval mode
            (flags restored); no hook or change is left on it.
        inputs: waveforms ``(B, C, T)`` / ``(B, T)`` (models with a LogMel front end) or log-mel
            ``(B, 1, F, T)`` / ``(B, F, T)``, as the projector takes them.
        target: class index, ``(B,)`` indices, ``None`` (the predicted class) or a
            :class:`~audioconv.interpret.targets.Unit`.
        mode: ``"gradient"`` (plain saliency, autograd), ``"guided"`` (guided backprop) or
            ``"deconv"`` (Zeiler & Fergus deconvnet), the last two by the projector's rules (module
            docstring).
        input_kind: ``"auto"``, ``"logmel"`` or ``"waveform"``.
        device: where to compute (default CUDA if available); the model is never moved (a copy is).

    Returns:
        ``(B, F, T)`` signed map on the CPU in the model's dtype (log-mel cells; units of score per dB).

    Raises:
        ValueError: a bad mode, target or layer; in ``deconv``/``guided`` an operation without a
            projection rule on the way to the target (naming it and its module).
    """
    traced = TracedModel(model, device)
    return input_saliency(traced, traced.to_logmel(inputs, input_kind), target, mode).cpu()
