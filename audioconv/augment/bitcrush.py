"""Bit-depth reduction (quantisation to fewer bits)."""
from __future__ import annotations

import torch

from .base import Augmentation
from .dsp import cache_slices
from .validation import check_int_range

__all__ = ["BitCrush"]


class BitCrush(Augmentation):
    """Quantise each example to a drawn number of bits, as a fixed-point PCM file would.

    ``y = round(x / step) * step`` with ``step = 2 ** (1 - bits)``: the full-scale range
    ``[-1, 1)`` holds ``2 ** bits`` levels (16 bits: CD quality; 8 bits: old games; 4 bits: very
    crunchy). Rounding is to the nearest level, ties to even (``torch.round``, like
    ``numpy.round``). The level is full scale, not the example's own: a quiet example loses more
    of its detail than a loud one, as in a real recording. Samples beyond ±1 are not clipped. Its
    gradient is zero almost everywhere (rounding).

    Args:
        bits (int or (min, max) ints in [1, 24]): bit depth, drawn evenly among the integers.
            Default (4, 10).
        p (float): per-example probability. Default 0.5.

    Params: ``bits`` ``(B,)`` int64.
    """

    param_keys = ("bits",)

    def __init__(self, bits=(4, 10), p: float = 0.5):
        super().__init__(p)
        self.bits = check_int_range("bits", bits, low=1, high=24)

    def _draw(self, batch, generator, device):
        return {"bits": torch.randint(self.bits[0], self.bits[1] + 1, (batch,), generator=generator, device=device)}

    def _transform(self, x, params, lengths):
        levels = torch.pow(2.0, params["bits"].to(x.dtype) - 1)[:, None, None]  # 1 / step
        if x.requires_grad:
            return (x * levels).round_().div_(levels)
        step = 1 / levels  # a power of two: multiplying by it divides exactly
        y = torch.empty_like(x)
        for rows in cache_slices(x.shape[0], x[0].numel(), x.device):  # the three passes over a slice in cache
            torch.mul(x[rows], levels[rows], out=y[rows]).round_().mul_(step[rows])
        return y

    def describe(self, params, index):
        return f"{int(params['bits'][index])} bits"
