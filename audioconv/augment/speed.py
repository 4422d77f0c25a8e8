"""Speed perturbation (tempo and pitch together), keeping the length."""
from __future__ import annotations

from fractions import Fraction

import torch
import torchaudio.functional as AF

from .base import Augmentation
from .validation import check_sample_rate

__all__ = ["SpeedPerturb"]


class SpeedPerturb(Augmentation):
    """Play each example faster or slower by a factor drawn from ``factors``, keeping its length.

    A factor ``f`` resamples the waveform to ``T / f`` samples (band-limited,
    ``torchaudio.functional.resample``) as if played ``f`` times faster; the result is cut to
    ``T`` samples or padded with zeros at the end. Examples sharing a factor are resampled
    together (one call per distinct factor, not per example).

    Args:
        sample_rate (int): Hz (kept for the chain's config; the factor alone sets the change).
        factors (list of float): candidate speed factors (> 0), drawn with equal probability.
            Default (0.9, 1.0, 1.1).
        p (float): per-example probability. Default 0.5.

    Params: ``factor`` ``(B,)``.
    """

    param_keys = ("factor",)

    def __init__(self, sample_rate: int, factors=(0.9, 1.0, 1.1), p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        try:
            self.factors = [float(f) for f in factors]
        except (TypeError, ValueError):
            raise ValueError(f"factors must be a list of numbers, got {factors!r}") from None
        if not self.factors or any(not 0.25 <= f <= 4.0 for f in self.factors):
            raise ValueError(f"factors must be a non-empty list of speed factors in [0.25, 4], got {factors!r}")

    def _draw(self, batch, generator, device):
        choice = torch.randint(len(self.factors), (batch,), generator=generator, device=device)
        return {"factor": torch.tensor(self.factors, device=device)[choice]}

    def _transform(self, x, params, lengths):
        time = x.shape[-1]
        y = torch.empty_like(x)
        factors = params["factor"]
        for value in factors.unique().tolist():
            rows = (factors == value).nonzero().squeeze(1)
            ratio = Fraction(value).limit_denominator(1000)
            out = AF.resample(x[rows], ratio.numerator, ratio.denominator) if ratio != 1 else x[rows]
            out = out[..., :time] if out.shape[-1] >= time else torch.nn.functional.pad(out, (0, time - out.shape[-1]))
            y[rows] = out
        return y

    def describe(self, params, index):
        return f"x{float(params['factor'][index]):.2f}"
