"""Receptive fields: which input (log-mel) cells a feature-map position can see, from the architecture.

Every operation on the path maps an output window ``[o, o + n)`` to the input window
``[o·stride − pad, o·stride − pad + (n − 1)·stride + extent)`` along each axis (``extent`` =
``(kernel − 1)·dilation + 1``; 1 for pointwise operations). Composing these from the layer down to
the input through the traced graph (:class:`~audioconv.interpret.graph.Graph`) gives a position's
receptive field; where branches meet (a residual block) the windows are united, and an axis the
model reduces (a mean over frequency, a global pool) is seen whole. Boxes are half-open
``(f0, f1, t0, t1)`` in input cells (mel bins, frames); :func:`receptive_field` clips them to the
input, :func:`receptive_field_size` gives the unclipped size.
"""
from __future__ import annotations

import torch
from torch import nn

from audioconv.interpret.graph import Graph
from audioconv.interpret.traced import TracedModel
from audioconv.utils import model_device

__all__ = ["receptive_field", "receptive_field_size", "receptive_field_boxes", "path_to"]


def path_to(model: nn.Module, layer: str, input_size: tuple[int, int] | None = None,
            example: torch.Tensor | None = None) -> Graph:
    """The traced :class:`~audioconv.interpret.graph.Graph` from the input to ``layer``.

    Traced with ``example`` (``(b, 1, F, T)``) or, without one, a zero input of ``input_size``
    (default: the model's own size, else 64 × 128). The model runs in eval mode and is restored.
    """
    return TracedModel(model, model_device(model)).path(layer, example, input_size)


def receptive_field_boxes(path: Graph, positions: torch.Tensor,
                          input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Feature-map positions ``(..., 2)`` (f, t) → input boxes ``(..., 4)`` (f0, f1, t0, t1), long.

    Clipped to ``[0, F) × [0, T)`` when ``input_size = (F, T)`` is given, else only at 0.
    """
    positions = torch.as_tensor(positions, dtype=torch.long)
    f0, sf, t0, st = path.window(positions[..., 0], positions[..., 1])
    f1, t1 = f0 + sf, t0 + st
    f0, t0 = f0.clamp_min(0), t0.clamp_min(0)
    if input_size is not None:
        f1, t1 = f1.clamp_max(int(input_size[0])), t1.clamp_max(int(input_size[1]))
    return torch.stack([f0, f1, t0, t1], dim=-1)


def receptive_field_size(model: nn.Module, layer: str,
                         input_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Unclipped receptive field of one position of ``layer``: ``(mel bins, frames)``.

    Example: conv2 of a 3×3 conv / 2×2 max-pool stack sees 8 × 8 cells (conv3: 18 × 18).
    ``input_size`` is only used to trace the path (default: the model's own size, else 64 × 128).
    """
    _, sf, _, st = path_to(model, layer, input_size).window(0, 0)
    return int(sf), int(st)


def receptive_field(model: nn.Module, layer: str, f: int, t: int,
                    input_size: tuple[int, int] | None = None) -> tuple[int, int, int, int]:
    """Input box ``(f0, f1, t0, t1)`` (half-open, in log-mel cells) seen by position ``(f, t)`` of ``layer``.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` or a CNN taking ``(B, 1, F, T)``.
        layer: ``"conv2"`` or a module name from ``model.named_modules()``.
        f, t: position in the layer's feature map (rows, columns).
        input_size: ``(F, T)`` of the input. When given, the position is checked against the
            layer's feature map for that input (``ValueError`` listing the valid range) and the box
            is clipped to it. Without it the box is clipped at 0 and, for a SpectrogramCNN, at
            ``n_mels`` (the clip length is unknown, so ``t1`` is not clipped).
    """
    traced = TracedModel(model, model_device(model))
    default = traced.default_size
    path = traced.path(layer, input_size=input_size or default)
    f, t = _position(f, "f"), _position(t, "t")
    clip = input_size
    if input_size is not None:
        zeros = torch.zeros(1, 1, *map(int, input_size), dtype=traced.dtype, device=traced.device)
        H, W = traced.feature_maps(zeros, layer)[layer].shape[-2:]
        if not (f < H and t < W):
            raise ValueError(f"position (f={f}, t={t}) is outside layer {layer!r}'s feature map of "
                             f"{H} x {W} for input {tuple(input_size)}; valid f: 0..{H - 1}, t: 0..{W - 1}")
    elif default is not None:
        clip = (default[0], 1 << 62)
    box = receptive_field_boxes(path, torch.tensor([f, t]), clip)
    return tuple(int(v) for v in box)


def _position(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, torch.Tensor)) or int(v) != v or int(v) < 0:
        raise ValueError(f"{name} must be a non-negative int, got {v!r}")
    return int(v)
