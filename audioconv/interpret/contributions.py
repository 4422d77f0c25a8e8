"""How much each unit of a layer adds to a class logit: activation × gradient, summed over positions.

For unit ``c`` of a layer with feature map ``A_c`` (``H × W``) and a class logit ``y``::

    contribution_c = Σ_{f,t} A_c[f, t] · ∂y/∂A_c[f, t]

computed with autograd through the model's own forward pass. When everything after the layer is
piecewise linear in it and ends in global average pooling and a linear layer (a SpectrogramCNN's
last conv layer: max-pool, average pool, dropout, linear), this is exactly that unit's share of the
logit, ``w[y, c] · mean(pool(A_c))``, so the contributions plus the bias sum to the logit.
"""
from __future__ import annotations

import torch
from torch import nn

from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["logit_contributions"]


def logit_contributions(model: nn.Module | TracedModel, logmel: torch.Tensor, layer: str, classes,
                        device=None) -> torch.Tensor:
    """Each unit's contribution to each input's class logit (module docstring).

    Args:
        model: any model :class:`~audioconv.interpret.traced.TracedModel` accepts, or a TracedModel
            (then its device and device copy are used). Run in eval mode, restored afterwards; a
            forward hook on the layer's module is removed before returning.
        logmel: log-mel ``(B, 1, F, T)``.
        layer: ``"conv4"`` or a module name from ``model.named_modules()``.
        classes: the class index per input, an int or ``(B,)``.
        device: where to compute when ``model`` is a module (default CUDA if available).

    Returns:
        ``(B, C)`` float tensor on the CPU.
    """
    traced = model if isinstance(model, TracedModel) else TracedModel(model, device)
    module, _ = traced.module(layer)
    if module is None:
        raise ValueError(f"layer {layer!r} is an operation; logit contributions need a module's output")
    x = traced.to_logmel(logmel, "logmel").detach().requires_grad_(True)
    cls = torch.as_tensor(classes, dtype=torch.long, device=traced.device).flatten()
    cls = cls.expand(x.shape[0]) if cls.numel() == 1 else cls
    if cls.numel() != x.shape[0]:
        raise ValueError(f"classes must be one index or one per input ({x.shape[0]}), got {cls.numel()}")
    captured: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with eval_mode(traced.model), torch.enable_grad():
            logits = traced.entry(x)
            if not 0 <= int(cls.min()) <= int(cls.max()) < logits.shape[-1]:
                raise ValueError(f"classes must be in 0..{logits.shape[-1] - 1}, got {cls.tolist()}")
            fm = captured[0]
            (grad,) = torch.autograd.grad(logits.gather(1, cls[:, None]).sum(), fm)
    finally:
        handle.remove()
    return (fm * grad).sum(dim=(2, 3)).detach().float().cpu()
