"""Random time shift."""
from __future__ import annotations

import torch

from .base import Augmentation, uniform
from .validation import check_range, check_sample_rate

__all__ = ["TimeShift"]


class TimeShift(Augmentation):
    """Delay (positive) or advance (negative) each example by a drawn time, keeping its length.

    Args:
        sample_rate (int): Hz.
        shift_s (float or (min, max)): shifts in seconds, drawn evenly. Default (-0.1, 0.1).
        mode (str): ``"zero"`` fills the vacated samples with zeros; ``"roll"`` wraps around.
        p (float): per-example probability. Default 0.5.

    Params: ``shift_s`` ``(B,)``; the shift in samples is ``round(shift_s * sample_rate)``.
    """

    param_keys = ("shift_s",)

    def __init__(self, sample_rate: int, shift_s=(-0.1, 0.1), mode: str = "zero", p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.shift_s = check_range("shift_s", shift_s, unit="s")
        if mode not in ("zero", "roll"):
            raise ValueError(f"mode must be 'zero' or 'roll', got {mode!r}")
        self.mode = mode

    def _draw(self, batch, generator, device):
        return {"shift_s": uniform(*self.shift_s, (batch,), generator, device)}

    def _transform(self, x, params, lengths):
        batch, channels, time = x.shape
        shift = torch.round(params["shift_s"].double() * self.sample_rate).long()  # (B,)
        source = torch.arange(time, device=x.device) - shift[:, None]  # y[t] = x[t - shift]
        if self.mode == "roll":
            return torch.gather(x, -1, (source % time)[:, None, :].expand(batch, channels, time))
        inside = (source >= 0) & (source < time)
        y = torch.gather(x, -1, source.clamp(0, time - 1)[:, None, :].expand(batch, channels, time))
        return y * inside[:, None, :]

    def describe(self, params, index):
        return f"{1000 * float(params['shift_s'][index]):+.0f} ms"
