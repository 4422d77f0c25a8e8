"""Random gain."""
from __future__ import annotations

from .base import Augmentation, uniform
from .validation import check_range

__all__ = ["Gain"]


class Gain(Augmentation):
    """Scale each example by a gain drawn evenly in dB (no clipping is applied).

    Args:
        gain_db (float or (min, max)): gains in dB. Default (-6, 6).
        p (float): per-example probability. Default 0.5.

    Params: ``gain_db`` ``(B,)``.
    """

    param_keys = ("gain_db",)

    def __init__(self, gain_db=(-6.0, 6.0), p: float = 0.5):
        super().__init__(p)
        self.gain_db = check_range("gain_db", gain_db, unit="dB")

    def _draw(self, batch, generator, device):
        return {"gain_db": uniform(*self.gain_db, (batch,), generator, device)}

    def _scale(self, params):
        return 10.0 ** (params["gain_db"].double() / 20)

    def describe(self, params, index):
        return f"{float(params['gain_db'][index]):+.1f} dB"
