"""G.711 mu-law and A-law (8-bit companding) round trips, batched on any device.

The same levels libsndfile gives for a float WAV written as ``ULAW`` / ``ALAW`` and read back (so
``Codec`` needs no CPU round trip for these two): libsndfile scales a float sample to a 14-bit
(mu-law) or 13-bit (A-law, in steps of 2) signed magnitude, rounding half to even, and G.711
(ITU-T, 1988) quantises that magnitude on a segmented logarithmic scale of 8 segments of 16
steps each; decoding returns the middle of the step. Samples beyond ±1 clip; NaN is coded as
magnitude 0 (mu-law: 0; A-law, which has no zero: ±1/4096). The decoded level of every magnitude
is computed once (``_levels``) and looked up.
"""
from __future__ import annotations

from functools import lru_cache

import torch

__all__ = ["mulaw_round_trip", "alaw_round_trip"]

MULAW_SCALE = 32767 / 4  # float sample -> 14-bit magnitude (0 .. 8192)
ALAW_SCALE = 32767 / 16  # float sample -> half the 13-bit magnitude (0 .. 2048)
FULL_SCALE = 32768  # 16-bit values -> float


def _mulaw_level(magnitude: int) -> int:
    """The 16-bit value a 14-bit magnitude decodes to: bias 33, segment = the highest set bit
    above bit 5, 4 mantissa bits below it, decoded at the middle of the step."""
    biased = min(magnitude + 33, 8191)
    segment = biased.bit_length() - 6
    mantissa = (biased >> (segment + 1)) & 15
    return (((2 * mantissa + 33) << segment) - 33) * 4


def _alaw_level(magnitude: int) -> int:
    """The 16-bit value a 13-bit magnitude decodes to: segment 0 is linear below 32, segment k
    covers [2 ** (k + 4), 2 ** (k + 5)) with 4 mantissa bits, decoded at the middle of the step."""
    magnitude = min(magnitude, 4095)
    segment = max(magnitude.bit_length() - 5, 0)
    if segment == 0:
        return ((magnitude >> 1) * 2 + 1) * 8
    mantissa = (magnitude >> segment) & 15
    return ((2 * mantissa + 33) << (segment - 1)) * 8


@lru_cache(maxsize=None)
def _levels(law: str, device: torch.device) -> torch.Tensor:
    """Decoded float level per scaled magnitude index, float32 on ``device``."""
    if law == "mulaw":
        values = [_mulaw_level(k) for k in range(int(round(MULAW_SCALE)) + 1)]
    else:
        values = [_alaw_level(2 * k) for k in range(int(round(ALAW_SCALE)) + 1)]
    return torch.tensor(values, dtype=torch.float32, device=device) / FULL_SCALE


def _round_trip(x: torch.Tensor, law: str, scale: float) -> torch.Tensor:
    xf = x.float()
    index = torch.nan_to_num(xf, nan=0.0).abs_().clamp_(max=1.0).mul_(scale).round_().to(torch.int32)
    level = _levels(law, xf.device)[index]
    sign = torch.sign(xf) if law == "mulaw" else torch.where(xf >= 0, 1.0, -1.0)  # A-law has no zero level
    return level.mul_(sign).to(x.dtype)


def mulaw_round_trip(x: torch.Tensor) -> torch.Tensor:
    """``x`` (any shape, float) through G.711 mu-law and back: every sample becomes the level of
    the 256 it is coded as, in ``x``'s dtype (0 stays 0)."""
    return _round_trip(x, "mulaw", MULAW_SCALE)


def alaw_round_trip(x: torch.Tensor) -> torch.Tensor:
    """``x`` (any shape, float) through G.711 A-law and back: every sample becomes the level of
    the 256 it is coded as, in ``x``'s dtype (A-law has no zero: 0 becomes +1/4096)."""
    return _round_trip(x, "alaw", ALAW_SCALE)
