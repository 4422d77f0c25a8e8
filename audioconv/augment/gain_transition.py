"""A fade from one gain to another over a drawn stretch of each example."""
from __future__ import annotations

import math

import torch

from .base import Augmentation, uniform
from .dsp import cache_slices
from .validation import check_range, check_sample_rate

__all__ = ["GainTransition", "transition_gain_db", "fade_span", "ramp_gain"]

FACTOR_SAMPLES = 128  # the ramp is raised per block of this many samples (see ramp_gain)
FACTOR_MAX_EXPONENT = 60.0  # ... while no factor's power of two exceeds this in magnitude


def ramp_gain(slope: torch.Tensor, offset: torch.Tensor, low: torch.Tensor, high: torch.Tensor,
              time: int) -> torch.Tensor:
    """``2 ** clamp(offset + slope * t, low, high)`` for ``t = 0 .. time - 1``: ``(N, time)``.

    ``slope`` ``(N,)``, ``offset``, ``low``, ``high`` ``(N, 1)``, one dtype (float32 or float64).
    The power of two of the line is factored as ``2 ** (offset + slope * k * K) * 2 ** (slope *
    j)`` for ``t = k * K + j`` (``K = FACTOR_SAMPLES``, or a smaller power of two for a steep
    slope): two short tables raised and one product per sample instead of a power per sample,
    1.7x as fast on the CPU. The first factor's exponent is held within ``slope * K`` of
    ``[low, high]`` (exact where the result is not clamped, on the right side of the bound where it
    is) so nothing overflows; a line too steep for a block of 8 samples, or bounds beyond about
    ±700 dB, is raised sample by sample. Float32 or float64 (``Augmentation.apply`` raises half
    precision to float32 first).
    """
    steep, bound = (torch.stack([slope.abs().max(), torch.maximum(low.abs(), high.abs()).max()]).tolist()
                    if slope.numel() else (0.0, 0.0))  # one read back from the device
    block = FACTOR_SAMPLES
    while block >= 8 and (steep * block > FACTOR_MAX_EXPONENT or bound + steep * block > 2 * FACTOR_MAX_EXPONENT):
        block //= 2
    if block < 8:  # sample by sample
        e = torch.outer(slope, torch.arange(time, device=slope.device, dtype=slope.dtype)).add_(offset)
        return torch.minimum(torch.maximum(e, low, out=e), high, out=e).exp2_()
    blocks = -(-time // block)
    margin = (slope.abs() * block)[:, None]
    coarse = torch.outer(slope, torch.arange(0, blocks * block, block, device=slope.device, dtype=slope.dtype))
    coarse = torch.minimum(torch.maximum(coarse.add_(offset), low - margin), high + margin).exp2_()  # (N, blocks)
    fine = torch.outer(slope, torch.arange(block, device=slope.device, dtype=slope.dtype)).exp2_()  # (N, block)
    gain = (coarse[:, :, None] * fine[:, None, :]).reshape(len(slope), blocks * block)[:, :time]
    return torch.minimum(torch.maximum(gain, low.exp2(), out=gain), high.exp2(), out=gain)


def fade_span(params: dict, lengths: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each drawn fade lies, ``(t0, d)``, each ``(N,)`` float64 in samples: it starts at
    ``t0 = start_pos * (L - d)`` and lasts ``d = duration_s * sample_rate`` (at least 1e-9), with
    ``L`` the example's real length (``lengths``): a fade shorter than the example lies inside it; a
    longer one covers it and goes on past its ends."""
    d = (params["duration_s"].double() * sample_rate).clamp(min=1e-9)
    return params["start_pos"].double() * (lengths.double() - d), d


def transition_gain_db(params: dict, lengths: torch.Tensor, time: int, sample_rate: int) -> torch.Tensor:
    """The gain curve in dB ``(N, time)`` a ``GainTransition`` draw describes:
    ``g(t) = g0 + (g1 - g0) * clamp((t - t0) / d, 0, 1)`` at sample ``t``, with ``g0``/``g1`` the
    drawn start/end gains in dB and the fade's start ``t0`` and length ``d`` from ``fade_span``.
    """
    t0, d = fade_span(params, lengths, sample_rate)
    t = torch.arange(time, device=d.device, dtype=torch.float64)
    ramp = ((t - t0[:, None]) / d[:, None]).clamp_(0, 1)
    g0, g1 = params["start_gain_db"].double(), params["end_gain_db"].double()
    return g0[:, None] + (g1 - g0)[:, None] * ramp


class GainTransition(Augmentation):
    """Fade each example from one gain to another, linearly in dB, over a drawn duration.

    Per example: a start gain and an end gain, each drawn evenly in ``gain_db``; a duration drawn
    evenly in ``duration_s``; and where the fade sits, drawn evenly so that a fade shorter than the
    example lies within it (a longer one covers the whole example and runs past both ends). Before
    the fade the example has the start gain, after it the end gain; in between the gain in dB moves
    linearly: ``y[t] = x[t] * 10 ** (g(t) / 20)`` (``transition_gain_db`` gives ``g``). It
    mimics a speaker walking towards or away from the microphone, or a level control moved.

    Args:
        sample_rate (int): Hz.
        gain_db ((min, max) in dB): gains at the two ends of the fade. Default (-24, 6).
        duration_s ((min, max) in s, > 0): length of the fade. Default (0.2, 2.0).
        p (float): per-example probability. Default 0.5.

    Params: ``start_gain_db``, ``end_gain_db``, ``duration_s``, ``start_pos`` (in [0, 1)), each ``(B,)``.
    """

    param_keys = ("start_gain_db", "end_gain_db", "duration_s", "start_pos")

    def __init__(self, sample_rate: int, gain_db=(-24.0, 6.0), duration_s=(0.2, 2.0), p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.gain_db = check_range("gain_db", gain_db, unit="dB")
        self.duration_s = check_range("duration_s", duration_s, low=0.0, low_inclusive=False, unit="s")

    def _draw(self, batch, generator, device):
        return {"start_gain_db": uniform(*self.gain_db, (batch,), generator, device),
                "end_gain_db": uniform(*self.gain_db, (batch,), generator, device),
                "duration_s": uniform(*self.duration_s, (batch,), generator, device),
                "start_pos": torch.rand(batch, generator=generator, device=device)}

    def _transform(self, x, params, lengths):
        batch, _, time = x.shape
        real = lengths if lengths is not None else torch.full((batch,), time, device=x.device)
        # the gain as a power of two: exponent e(t) = clamp(offset + slope t, low, high), per row (float64)
        to_log2 = math.log2(10) / 20
        t0, d = fade_span(params, real, self.sample_rate)
        g0, g1 = params["start_gain_db"].double() * to_log2, params["end_gain_db"].double() * to_log2
        slope = (g1 - g0) / d
        offset, low, high = (v.to(x.dtype)[:, None] for v in (g0 - slope * t0, torch.minimum(g0, g1),
                                                                  torch.maximum(g0, g1)))
        slope = slope.to(x.dtype)

        if x.requires_grad:
            return x * ramp_gain(slope, offset, low, high, time)[:, None, :]
        y = torch.empty_like(x)
        for rows in cache_slices(batch, x[0].numel(), x.device):  # each slice's gain made and used in cache
            torch.mul(x[rows], ramp_gain(slope[rows], offset[rows], low[rows], high[rows], time)[:, None, :],
                      out=y[rows])
        return y

    def describe(self, params, index):
        g0, g1 = float(params["start_gain_db"][index]), float(params["end_gain_db"][index])
        return f"{g0:+.0f} to {g1:+.0f} dB over {float(params['duration_s'][index]):.2f} s"
