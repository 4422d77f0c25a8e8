"""Input-free filter projection: what each channel of a layer would look for, through the linear path.

For channel ``c`` of ``layer``, seed a single 1 at one position of its feature map and send it down
the path through the linear part of every module only:

* Conv2d: transposed convolution (so ``conv1``'s filter is exactly its weights);
* BatchNorm2d: multiplied by its scale ``γ/√(σ²+ε)`` (``batchnorm=True``, the default — that is the
  linear part of the eval-mode affine map; its shift is not part of a filter) or skipped;
* ReLU / LeakyReLU / Tanh / Dropout: identity (no input, so no forward sign and nothing to rectify);
* MaxPool2d: no switches without an input, so each value is unpooled to a fixed cell of its
  window: ``unpool="center"`` puts it at cell ``((kh−1)//2, (kw−1)//2)`` (the top-left cell for a
  2×2 window), ``unpool="spread"`` spreads it evenly over the window (the expected filter when
  every cell is equally likely to win).

The result covers exactly the receptive field of one position, on an unbounded plane (no border).
"""
from __future__ import annotations

import torch
from torch import nn

from audioconv.interpret.rules import BatchNormStep
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode, model_device

__all__ = ["project_filters"]


@torch.no_grad()
def project_filters(model: nn.Module, layer: str, *, unpool: str = "center", batchnorm: bool = True,
                    input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Composed linear filter of each channel of ``layer`` in input (log-mel) space.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or a CNN taking ``(B, 1, F, T)``.
        layer: ``"conv2"`` or a module name from ``model.named_modules()``.
        unpool: ``"center"`` or ``"spread"`` (see the module docstring).
        batchnorm: include BatchNorm scales (``True``) or skip BatchNorm entirely.
        input_size: ``(F, T)`` used to trace the path (default: the model's own size, else 64 × 128).

    Returns:
        ``(K, F_rf, T_rf)`` tensor (model dtype, CPU), ``K`` = channels of the layer and
        ``(F_rf, T_rf)`` = :func:`~audioconv.interpret.receptive_field.receptive_field_size`; row 0 / column 0
        is the top-left cell of the receptive field. For a model whose input has ``C > 1`` channels
        the shape is ``(K, C, F_rf, T_rf)``.
    """
    if unpool not in ("center", "spread"):
        raise ValueError(f"unpool must be 'center' or 'spread', got {unpool!r}")
    traced = TracedModel(model, model_device(model))
    with eval_mode(model):
        path = traced.path(layer, input_size=input_size)
        K = path.channels
        g = torch.eye(K, dtype=traced.dtype, device=traced.device).view(K, K, 1, 1)
        for step in reversed(path.steps):
            if isinstance(step, BatchNormStep) and not batchnorm:
                continue
            g = step.linear_backward(g, unpool)
    g = g.cpu()
    return g[:, 0] if g.shape[1] == 1 else g
