"""Pitch shift by a drawn number of semitones, keeping the duration."""
from __future__ import annotations

from .base import Augmentation, uniform
from .dsp import gain_to_power, mean_power, replace_tails
from .validation import check_range, check_sample_rate
from .vocoder import shift_frames, vocode

__all__ = ["PitchShift"]


class PitchShift(Augmentation):
    """Shift each example's pitch by its own drawn number of semitones; its duration stays.

    Per example a shift drawn evenly in ``semitones``; every frequency is multiplied by
    ``2 ** (semitones / 12)``. Done in the short-time Fourier domain with a peak-based phase
    vocoder (``vocoder.shift_frames``; 64 ms Hann windows, 75 % overlap), so the whole batch,
    with a different shift per example, is one set of tensor operations on any device, and the
    timing of every event is unchanged (no resampling, no time stretch). Like every phase
    vocoder it blurs sharp attacks a little and can sound "phasey" at large shifts; formants
    move with the pitch (a shifted voice sounds like a smaller or larger speaker). The output
    has the input's RMS, per example (over the real samples): moving partials by whole bins
    costs up to ~1 dB, which is given back.

    Padding (samples from ``lengths[b]`` on) is left out of the analysis and stays as it was.

    Args:
        sample_rate (int): Hz (sets the window: 64 ms).
        semitones ((min, max)): shifts, drawn evenly; negative lowers the pitch. Default (-4, 4),
            at most ±24.
        p (float): per-example probability. Default 0.5.

    Params: ``semitones`` ``(B,)``.
    """

    param_keys = ("semitones",)

    def __init__(self, sample_rate: int, semitones=(-4.0, 4.0), p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.semitones = check_range("semitones", semitones, low=-24.0, high=24.0)

    def _draw(self, batch, generator, device):
        return {"semitones": uniform(*self.semitones, (batch,), generator, device)}

    def _transform(self, x, params, lengths):
        batch, channels, time = x.shape
        if lengths is not None:  # the padding takes no part
            x = replace_tails(x.clone(), lengths)
        ratio = (2.0 ** (params["semitones"].double() / 12)).repeat_interleave(channels)
        y = vocode(x.reshape(batch * channels, time), self.sample_rate, shift_frames, ratio).reshape(x.shape)
        return y * gain_to_power(mean_power(x, lengths), mean_power(y, lengths))[:, None, None]

    def describe(self, params, index):
        return f"{float(params['semitones'][index]):+.1f} semitones"
