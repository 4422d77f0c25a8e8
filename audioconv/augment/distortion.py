"""Soft (tanh) distortion at a drawn drive."""
from __future__ import annotations

import numpy as np
import torch

from .base import Augmentation, uniform
from .dsp import real_peak, ufunc
from .validation import check_range

__all__ = ["Distortion"]


class Distortion(Augmentation):
    """Saturate each example through ``tanh`` at a drawn drive, keeping its peak level.

    ``y = peak * tanh(g * x / peak) / tanh(g)`` with ``g = 10 ** (drive_db / 20)`` and ``peak``
    the example's largest ``|x|`` over channels and real samples: the peak stays where it was,
    small samples are amplified by ``g / tanh(g)`` relative to it, and the waveform flattens more
    the larger ``drive_db`` is (at -20 dB it is nearly linear; at +20 dB nearly a square wave).
    Being relative to the peak, a draw distorts a quiet and a loud recording alike. A silent
    example stays silent.

    Args:
        drive_db ((min, max) in dB): the drive ``20 log10 g``, drawn evenly. Default (0, 24).
        p (float): per-example probability. Default 0.5.

    Params: ``drive_db`` ``(B,)``.
    """

    param_keys = ("drive_db",)

    def __init__(self, drive_db=(0.0, 24.0), p: float = 0.5):
        super().__init__(p)
        self.drive_db = check_range("drive_db", drive_db, low=-40.0, high=60.0, unit="dB")

    def _draw(self, batch, generator, device):
        return {"drive_db": uniform(*self.drive_db, (batch,), generator, device)}

    def _transform(self, x, params, lengths):
        peak = real_peak(x, lengths)
        drive = 10.0 ** (params["drive_db"].to(x.dtype) / 20)
        scale = torch.where(peak > 0, drive / peak.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(peak))
        out = peak / torch.tanh(drive)  # (N,): tanh(g x / peak) times this
        y = ufunc(torch.tanh, np.tanh, torch.mul(x, scale[:, None, None]), speedup=12)  # numpy's: 12x on one thread
        return y * out[:, None, None] if y.requires_grad else y.mul_(out[:, None, None])

    def describe(self, params, index):
        return f"drive {float(params['drive_db'][index]):+.1f} dB"
