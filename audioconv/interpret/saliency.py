"""Input-space maps of a class or unit score: gradient, guided backprop and deconvnet, by autograd.

``saliency(model, inputs, target, mode)`` → ``(B, F, T)``: the derivative of the target's score
(a class logit or a unit's activation, see :mod:`audioconv.interpret.targets`) with respect to the
log-mel input, under the backward rule of ``mode``:

========  ================================  ==============================  ===========================
mode      ReLU                              LeakyReLU(a)                    Tanh
========  ================================  ==============================  ===========================
gradient  ``g · [x > 0]``                   ``g · leaky_a'(x)``             ``g · (1 − tanh² x)``
deconv    ``relu(g)``                       ``leaky_a(g)``                  ``g``
guided    ``relu(g) · [x > 0]``             ``leaky_a(g) · leaky_a'(x)``    ``g · (1 − tanh² x)``
========  ================================  ==============================  ===========================

These are the projector's rules (:mod:`audioconv.interpret.rules`, ``docs/projection.md``); every
other operation (convolution, BatchNorm in eval mode, max-pool switches, average pooling, residual
additions, concatenation) is differentiated by autograd, which for these linear or routing
operations is the same rule in all three modes. So for a unit, ``activation × saliency`` equals
the :class:`~audioconv.interpret.projector.Projector`'s map, and for a class it equals Captum's
``Saliency(abs=False)`` / ``GuidedBackprop`` / ``Deconvolution`` (tested in float64).

Why this exists next to the projector: the projector seeds hidden units of a feature map and is
fast for many units at once; a class logit is not a feature map, and Grad-CAM's guided variant
needs guided backprop of a class. Here the rules are applied **while the model runs**: a
``TorchFunctionMode`` swaps every ReLU / LeakyReLU / tanh call — module or functional
(``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu_()``) — for an autograd function with the mode's
backward rule, so residual graphs and functional calls work. In ``deconv`` and ``guided`` modes a
nonlinearity without a rule (GELU, SiLU, sigmoid, ELU, softplus, hardtanh/ReLU6, clamp, softmax …)
raises ``ValueError`` naming it and the module that called it; nothing falls back to the gradient
silently. ``gradient`` accepts any differentiable model.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from audioconv.interpret.rules import MODES
from audioconv.interpret.targets import forward_scores
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["saliency", "input_saliency", "RULE_FUNCTIONS"]

_RELU = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_LEAKY = {F.leaky_relu, F.leaky_relu_}
_TANH = {torch.tanh, torch.tanh_, F.tanh, torch.Tensor.tanh, torch.Tensor.tanh_}
_IN_PLACE = {torch.relu_, torch.Tensor.relu_, F.leaky_relu_, torch.tanh_, torch.Tensor.tanh_}
_NO_RULE = ("gelu", "elu", "selu", "celu", "silu", "mish", "sigmoid", "softplus", "hardtanh", "relu6",
            "hardswish", "hardsigmoid", "logsigmoid", "softsign", "tanhshrink", "threshold", "prelu", "rrelu",
            "glu", "softmax", "log_softmax", "softmin", "clamp", "clamp_min", "clamp_max", "clip")
RULE_FUNCTIONS = "ReLU, LeakyReLU and Tanh (as modules or functional calls)"


class _Rectified(torch.autograd.Function):
    """``leaky_a(x)`` forward (``a = 0``: ReLU); backward ``leaky_a(g)`` (deconv) or ``leaky_a(g)·leaky_a'(x)`` (guided)."""

    @staticmethod
    def forward(ctx, x, slope: float, guided: bool):
        ctx.slope, ctx.guided = slope, guided
        ctx.save_for_backward(x > 0)  # the sign, not x: an in-place caller overwrites x
        return F.leaky_relu(x, slope) if slope else F.relu(x)

    @staticmethod
    def backward(ctx, g):
        (positive,) = ctx.saved_tensors
        out = F.leaky_relu(g, ctx.slope) if ctx.slope else F.relu(g)
        if ctx.guided:
            out = torch.where(positive, out, out * ctx.slope)
        return out, None, None


class _TanhRule(torch.autograd.Function):
    """``tanh(x)`` forward; backward ``g`` (deconv: nothing to rectify) or ``g·(1 − tanh² x)`` (guided)."""

    @staticmethod
    def forward(ctx, x, guided: bool):
        y = torch.tanh(x)
        ctx.guided = guided
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return (g * (1 - y * y) if ctx.guided else g), None


def _arg(args, kwargs, index: int, name: str, default):
    return args[index] if len(args) > index else (kwargs or {}).get(name, default)


class _Rules(TorchFunctionMode):
    """Replace ReLU / LeakyReLU / tanh calls by the ``deconv`` or ``guided`` rule; refuse other nonlinearities."""

    def __init__(self, mode: str, where: list[str]):
        super().__init__()
        self.guided, self.where = mode == "guided", where
        self.mode = mode

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELU or func in _LEAKY:
            slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01)) if func in _LEAKY else 0.0
            out = _Rectified.apply(args[0], slope, self.guided)
        elif func in _TANH:
            out = _TanhRule.apply(args[0], self.guided)
        else:
            name = getattr(func, "__name__", "")
            if name.rstrip("_") in _NO_RULE:
                where = self.where[-1] if self.where else "the model's top level"
                raise ValueError(f"{self.mode} backprop has no rule for {name}() (called in {where}); "
                                 f"rules exist for {RULE_FUNCTIONS} — use mode='gradient' for this model")
            return func(*args, **(kwargs or {}))
        in_place = func in _IN_PLACE or (func in (F.relu, F.leaky_relu) and bool(
            _arg(args, kwargs, 1 if func is F.relu else 2, "inplace", False)))
        if in_place:  # keep the caller's view of an in-place call: its tensor now holds the result
            return args[0].copy_(out)
        return out


@contextlib.contextmanager
def _backward_rules(model: torch.nn.Module, mode: str):
    """While active, the model's forward records ``mode``'s backward rules (no-op for ``gradient``)."""
    if mode == "gradient":
        yield
        return
    where: list[str] = []
    handles = []
    try:
        def enter(label):
            def hook(module, args):
                where.append(label)
            return hook

        def leave(module, args, out):
            where.pop()

        for name, module in model.named_modules():
            label = f"module {name!r} ({type(module).__name__})" if name else f"{type(module).__name__}.forward"
            handles.append(module.register_forward_pre_hook(enter(label)))
            handles.append(module.register_forward_hook(leave))
        with _Rules(mode, where):
            yield
    finally:
        for h in handles:
            h.remove()


def input_saliency(traced: TracedModel, logmel: torch.Tensor, target, mode: str = "gradient") -> torch.Tensor:
    """:func:`saliency` on log-mel ``(B, 1, F, T)`` already on ``traced.device`` → ``(B, F, T)`` there."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    x = logmel.detach().clone().requires_grad_(True)
    with eval_mode(traced.model), torch.enable_grad():
        with _backward_rules(traced.model, mode):
            scores, _, _ = forward_scores(traced, x, target)
        (g,) = torch.autograd.grad(scores.sum(), x, allow_unused=True)
    return torch.zeros_like(logmel[:, 0]) if g is None else g[:, 0].detach()


def saliency(model: torch.nn.Module, inputs, target=None, mode: str = "gradient", *, input_kind: str = "auto",
             device: str | torch.device | None = None) -> torch.Tensor:
    """Derivative of a class logit or unit activation w.r.t. the log-mel input, under ``mode``'s rule.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (entered at ``classify``)
            or any differentiable ``nn.Module`` taking log-mel ``(B, 1, F, T)`` — chain or residual
            graph. Run in eval mode (flags restored); no hook or change is left on it.
        inputs: waveforms ``(B, C, T)`` / ``(B, T)`` (models with a LogMel front end) or log-mel
            ``(B, 1, F, T)`` / ``(B, F, T)``, as the projector takes them.
        target: class index, ``(B,)`` indices, ``None`` (the predicted class) or a
            :class:`~audioconv.interpret.targets.Unit`.
        mode: ``"gradient"`` (plain saliency), ``"guided"`` (guided backprop) or ``"deconv"``
            (Zeiler & Fergus deconvnet); see the module docstring.
        input_kind: ``"auto"``, ``"logmel"`` or ``"waveform"``.
        device: where to compute (default CUDA if available); the model is never moved (a copy is).

    Returns:
        ``(B, F, T)`` signed map on the CPU in the model's dtype (log-mel cells; units of score per dB).
    """
    traced = TracedModel(model, device)
    return input_saliency(traced, traced.to_logmel(inputs, input_kind), target, mode).cpu()
