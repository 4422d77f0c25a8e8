"""Time stretch by a drawn rate, keeping the pitch."""
from __future__ import annotations

import torch

from .base import Augmentation, real_lengths, uniform
from .dsp import replace_tails
from .validation import check_range, check_sample_rate
from .vocoder import stretch_frames, vocode

__all__ = ["TimeStretch"]


class TimeStretch(Augmentation):
    """Play each example faster or slower by its own drawn rate, keeping its pitch.

    Per example a rate drawn evenly in ``rate`` (> 1 faster): the example's real samples —
    ``L = lengths[b]``, or the whole clip — last ``L / rate`` afterwards. A phase vocoder
    (``vocoder.stretch_frames``; 64 ms Hann windows, 75 % overlap) reads the example's frames at
    ``rate`` times the usual pace, so the whole batch, with a rate per example, is one set of
    tensor operations on any device.

    The output keeps the input's length: a slowed example (rate < 1) is cut at ``L`` samples,
    a sped-up one ends after ``round(L / rate)`` samples and is followed by zeros up to ``L``
    (samples from ``L`` on — padding — stay as they were). Where the real samples now end:
    ``output_lengths(params, lengths, time)`` gives ``min(L, round(L / rate))`` for the examples
    it applied to; a chain (``Compose``) passes those lengths to its later steps (an
    ``AddNoise`` after it adds no noise to the new silence) and returns them from its own
    ``output_lengths``.

    Args:
        sample_rate (int): Hz (sets the window: 64 ms).
        rate ((min, max), in [0.25, 4]): tempo factors, drawn evenly. Default (0.8, 1.25).
        p (float): per-example probability. Default 0.5.

    Params: ``rate`` ``(B,)``.
    """

    param_keys = ("rate",)

    def __init__(self, sample_rate: int, rate=(0.8, 1.25), p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.rate = check_range("rate", rate, low=0.25, high=4.0)

    def _draw(self, batch, generator, device):
        return {"rate": uniform(*self.rate, (batch,), generator, device)}

    @staticmethod
    def _stretched(rate: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """``min(L, round(L / rate))`` ``(N,)`` int64."""
        return torch.minimum(real, torch.round(real.double() / rate.double()).long())

    def _output_lengths(self, params, lengths, time):
        """``min(L, round(L / rate))`` where applied, ``L`` elsewhere (``L = lengths``, or ``time``)."""
        real = real_lengths(params, lengths, time)
        apply, rate = params["apply"].to(real.device, torch.bool), params["rate"].to(real.device)
        return torch.where(apply, self._stretched(rate, real), real)

    def _transform(self, x, params, lengths):
        batch, channels, time = x.shape
        real = lengths if lengths is not None else torch.full((batch,), time, device=x.device)
        x = replace_tails(x.clone(), lengths) if lengths is not None else x
        rate = params["rate"].double().repeat_interleave(channels)
        y = vocode(x.reshape(batch * channels, time), self.sample_rate, stretch_frames, rate).reshape(x.shape)
        return replace_tails(y, self._stretched(params["rate"], real))

    def describe(self, params, index):
        return f"rate {float(params['rate'][index]):.2f}"
