"""Speed perturbation (tempo and pitch together), keeping the length."""
from __future__ import annotations

from fractions import Fraction

import torch
import torchaudio.functional as AF

from .base import Augmentation, real_lengths
from .dsp import replace_tails
from .validation import check_sample_rate

__all__ = ["SpeedPerturb"]


def _ratio(factor: float) -> Fraction:
    """The speed factor as the fraction the resampler uses (denominator at most 1000)."""
    return Fraction(factor).limit_denominator(1000)


class SpeedPerturb(Augmentation):
    """Play each example faster or slower by a factor drawn from ``factors``, keeping its length.

    A factor ``f`` resamples the example's real samples — ``L = lengths[b]``, or the whole clip —
    to ``ceil(L / f)`` samples (band-limited, ``torchaudio.functional.resample``) as if played
    ``f`` times faster; the result is cut at ``L`` samples or followed by zeros up to ``L``
    (samples from ``L`` on — padding — stay as they were). Examples sharing a factor are
    resampled together (one call per distinct factor, not per example). ``f`` is used as the
    nearest fraction with a denominator up to 1000 (0.9 is exactly 9/10).

    Where the real samples now end: ``output_lengths(params, lengths, time)`` gives
    ``min(L, ceil(L / f))`` for the examples it applied to; a chain passes those lengths to its
    later steps and ``ManifestDataset`` reports them as the item's length.

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

    @staticmethod
    def _sped(factors: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``min(L, ceil(L / f))`` ``(N,)`` int64, ``f`` as the resampler's fraction ``num / den``."""
        out = real.clone()
        for value in factors.unique().tolist():
            ratio, rows = _ratio(value), factors == value
            out[rows] = torch.minimum(real[rows], -(-real[rows] * ratio.denominator // ratio.numerator))
        return out

    def _output_lengths(self, params, lengths, time):
        """``min(L, ceil(L / f))`` where applied, ``L`` elsewhere (``L = lengths``, or ``time``)."""
        real = real_lengths(params, lengths, time)
        apply, factors = params["apply"].to(real.device, torch.bool), params["factor"].to(real.device)
        return torch.where(apply, self._sped(factors, real), real)

    def _transform(self, x, params, lengths):
        time = x.shape[-1]
        if lengths is not None:  # the padding takes no part
            x = replace_tails(x.clone(), lengths)
        y = torch.empty_like(x)
        factors = params["factor"]
        for value in factors.unique().tolist():
            rows = (factors == value).nonzero().squeeze(1)
            ratio = _ratio(value)
            out = AF.resample(x[rows], ratio.numerator, ratio.denominator) if ratio != 1 else x[rows]
            out = out[..., :time] if out.shape[-1] >= time else torch.nn.functional.pad(out, (0, time - out.shape[-1]))
            y[rows] = out
        return y if lengths is None else replace_tails(y, self._sped(factors, lengths))

    def describe(self, params, index):
        return f"x{float(params['factor'][index]):.2f}"
