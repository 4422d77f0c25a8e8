"""Additive noise at a drawn signal-to-noise ratio: coloured noise or recorded backgrounds."""
from __future__ import annotations

import numbers

import torch

from .clips import ClipBank, ClipSource
from .base import Augmentation, uniform
from .dsp import (COLOR_SLOPES_DB_PER_OCTAVE, NOISE_BANK_SAMPLES, add_at_snr, circular_windows, shared_bank_energy,
                  shared_noise_bank)
from .validation import check_number, check_range, check_sample_rate

__all__ = ["AddNoise"]

NOISE_SEED = 7


class AddNoise(Augmentation):
    """Add noise to each example at a signal-to-noise ratio drawn evenly in dB.

    The SNR is the ratio of the example's mean power to the noise's, both over the real samples
    (the first ``lengths[b]`` when ``lengths`` is given; padding gets no noise). A silent example
    gets no noise (its SNR is undefined) and stays finite. Each channel gets its own stretch of
    noise.

    Noise is a window, at a drawn position, of a fixed periodic noise bank of
    ``NOISE_BANK_SAMPLES`` samples (the same on every device) whose power spectrum falls by the
    colour's slope — white 0, pink -3.01, brown -6.02 dB per octave, or any number — or of a
    recorded background clip (drawn per example, tiled when shorter than the example), so the
    parameters replay exactly.

    Args:
        snr_db (float or (min, max)): signal-to-noise ratios in dB. Default (0, 30).
        color (str or float): ``"white"``, ``"pink"``, ``"brown"`` or a slope in dB per octave.
        background: recorded noise instead of coloured noise: a tensor ``(samples,)`` /
            ``(clips, samples)`` at ``sample_rate``, a list of tensors or audio paths, a folder or a
            ``.jsonl`` manifest (``audio_filepath`` relative to its folder). Decoded once (mono,
            resampled to ``sample_rate``), cached per device.
        sample_rate (int or None): Hz; required when ``background`` holds files.
        p (float): per-example probability. Default 0.5.

    Params: ``snr_db`` and ``noise_pos`` (position in the noise, in [0, 1)) ``(B,)``; with a
    background also ``noise_index`` ``(B,)`` int64.
    """

    def __init__(self, snr_db=(0.0, 30.0), color: str | float = "white", background: ClipSource | None = None,
                 sample_rate: int | None = None, p: float = 0.5):
        super().__init__(p)
        self.snr_db = check_range("snr_db", snr_db, unit="dB")
        if isinstance(color, str) and color in COLOR_SLOPES_DB_PER_OCTAVE:
            self.slope_db_per_octave = COLOR_SLOPES_DB_PER_OCTAVE[color]
        elif isinstance(color, numbers.Real) and not isinstance(color, bool):
            self.slope_db_per_octave = check_number("color", color, low=-12.0, high=12.0, unit="dB/octave")
        else:
            raise ValueError(f"color must be one of {sorted(COLOR_SLOPES_DB_PER_OCTAVE)} or a slope in "
                             f"dB/octave (one number), got {color!r}")
        self.color = color
        self.sample_rate = None if sample_rate is None else check_sample_rate(sample_rate)
        self.background = background
        self._bank = None if background is None else ClipBank(background, self.sample_rate, "background")
        self.param_keys = ("snr_db", "noise_pos") + (("noise_index",) if self._bank is not None else ())

    def _draw(self, batch, generator, device):
        params = {"snr_db": uniform(*self.snr_db, (batch,), generator, device),
                  "noise_pos": torch.rand(batch, generator=generator, device=device)}
        if self._bank is not None:
            params["noise_index"] = torch.randint(len(self._bank), (batch,), generator=generator, device=device)
        return params

    def noise_for(self, params, channels: int, time: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The unscaled noise ``(B, channels, time)`` that ``params`` (on the target device) pick."""
        device = params["snr_db"].device
        if self._bank is None:
            signal = shared_noise_bank(self.slope_db_per_octave, NOISE_SEED, device, dtype)
            clip_start, clip_len = None, torch.full_like(params["noise_pos"], NOISE_BANK_SAMPLES, dtype=torch.long)
        else:
            signal = self._bank.signal(device, dtype)
            starts, lengths = self._bank.layout(device)
            clip_start, clip_len = starts[params["noise_index"]][:, None], lengths[params["noise_index"]]
        offset = (params["noise_pos"].double() * clip_len).long()  # (B,)
        start = offset[:, None] + torch.arange(channels, device=device) * (clip_len // channels)[:, None]
        if clip_start is None:
            return circular_windows(signal, start, time, period=NOISE_BANK_SAMPLES)
        return circular_windows(signal, start, time, clip_start=clip_start, clip_len=clip_len[:, None])

    def _noise_power(self, params, channels: int, time: int, lengths) -> torch.Tensor | None:
        """Mean power ``(B,)`` of the coloured-bank windows ``noise_for`` reads (over the real samples),
        from the bank's cumulative energy: no pass over the noise. ``None`` for a recorded background."""
        if self._bank is not None:
            return None
        device = params["snr_db"].device
        energy = shared_bank_energy(self.slope_db_per_octave, NOISE_SEED, device)
        offset = (params["noise_pos"].double() * NOISE_BANK_SAMPLES).long()
        start = (offset[:, None] + torch.arange(channels, device=device) * (NOISE_BANK_SAMPLES // channels))
        start = start % NOISE_BANK_SAMPLES  # (B, C)
        count = torch.full_like(offset, time) if lengths is None else lengths.to(device)
        period = NOISE_BANK_SAMPLES
        laps, rest = (count // period)[:, None], (count % period)[:, None]  # whole periods, then the rest
        end = start + rest
        partial = torch.where(end <= period, energy[end.clamp(max=period)] - energy[start],
                              energy[period] - energy[start] + energy[(end - period).clamp(min=0)])
        total = (laps * energy[period] + partial).sum(1)
        return total / (count * channels).clamp(min=1)

    def _transform(self, x, params, lengths):
        noise = self.noise_for(params, x.shape[1], x.shape[2], x.dtype)
        power = self._noise_power(params, x.shape[1], x.shape[2], lengths)
        return add_at_snr(x, noise, params["snr_db"], lengths, other_power=power, into_other=True)

    def describe(self, params, index):
        source = f"clip {int(params['noise_index'][index])}, " if "noise_index" in params else ""
        return f"{source}SNR {float(params['snr_db'][index]):.1f} dB"
