"""Input-free filter projection: what each channel of a layer would look for, through the linear path.

For channel ``c`` of ``layer``, seed a single 1 at one position of its feature map and send it down
the traced graph (:mod:`audioconv.interpret.graph`) through the linear part of every operation only
(the ``linear`` rules of :mod:`audioconv.interpret.rules`):

* convolutions: transposed convolution (so ``conv1``'s filter is exactly its weights);
* BatchNorm: multiplied by its scale ``γ/√(σ²+ε)`` (``batchnorm=True``, the default — that is the
  linear part of the eval-mode affine map; its shift is not part of a filter) or skipped;
* ReLU / LeakyReLU / Tanh / Dropout: identity (no input, so no forward sign and nothing to rectify);
* max-pooling: no switches without an input, so each value is unpooled to a fixed cell of its
  window: ``unpool="center"`` puts it at cell ``((kh−1)//2, (kw−1)//2)`` (the top-left cell for a
  2×2 window), ``unpool="spread"`` spreads it evenly over the window (the expected filter when
  every cell is equally likely to win);
* residual additions: both branches, summed where they meet; average pooling, reshapes, means:
  their own linear transposes.

The result covers exactly the receptive field of one position, on an unbounded plane (no border),
except along an axis the model reduces (a mean over frequency), which is covered whole.
"""
from __future__ import annotations

import torch
from torch import nn

from audioconv.interpret.graph import backward, whole_input_axes
from audioconv.interpret.projector import _seed
from audioconv.interpret.rules import Mode
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode, model_device

__all__ = ["project_filters"]


@torch.no_grad()
def project_filters(model: nn.Module, layer: str, *, unpool: str = "center", batchnorm: bool = True,
                    input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Composed linear filter of each channel of ``layer`` in input (log-mel) space.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or any CNN the projector
            accepts, taking ``(B, 1, F, T)``.
        layer: ``"conv2"``, a module name from ``model.named_modules()`` or an operation name.
        unpool: ``"center"`` or ``"spread"`` (see the module docstring).
        batchnorm: include BatchNorm scales (``True``) or skip BatchNorm entirely.
        input_size: ``(F, T)`` used to trace the graph (default: the model's own size, else 64 × 128).

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
        H, W = path.feature_size()
        chan = torch.arange(K, device=traced.device).view(1, K)
        pos = torch.tensor([H // 2, W // 2], device=traced.device).view(1, 1, 2).expand(1, K, 2)
        fm = path.feature_map
        sel = fm.new_ones(1, K, H, W)
        seed = _seed(fm, sel, chan, pos, sel[:, :, 0, 0], "position", True)
        sig = backward(path, seed, Mode("linear", unpool, batchnorm), bounded=False)
        g = sig.g[0]  # (K, C_in, F_rf, T_rf) on an unbounded plane
        for axis, whole in enumerate(whole_input_axes(path)):  # a reduced axis: the input's own extent
            if whole:
                start = sig.start[axis]
                start = int(start) if isinstance(start, int) else int(start.flatten()[0])
                n = path.input_size[axis]
                g = g.narrow(2 + axis, -start, n) if -start >= 0 and n - start <= g.shape[2 + axis] else g
    g = g.cpu()
    return g[:, 0] if g.shape[1] == 1 else g
