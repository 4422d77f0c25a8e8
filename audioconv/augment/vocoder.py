"""Batched phase vocoders with a rate or a pitch ratio per row: the DSP of ``TimeStretch`` and ``PitchShift``.

Everything works on short-time Fourier transforms ``(R, F, M)`` (rows, bins, frames) made by
``stft``/``istft`` (Hann window, hop a quarter of the window, frames centred on multiples of the
hop, zero padding at the ends); each row has its own rate or ratio, so a batch goes through in one
set of tensor operations, on any device.
"""
from __future__ import annotations

import math

import torch

__all__ = ["stft_size", "stft", "istft", "instantaneous_frequency", "stretch_frames", "shift_frames"]

WINDOW_S = 0.064  # analysis window: 64 ms resolves the harmonics of voices down to ~60 Hz


def stft_size(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)``: the power of two nearest ``WINDOW_S`` seconds (1024 at 16 kHz, 512 at
    8 kHz, 2048 at 44.1 kHz) and a quarter of it."""
    n_fft = 2 ** max(4, round(math.log2(WINDOW_S * sample_rate)))
    return n_fft, n_fft // 4


def _window(n_fft: int, x: torch.Tensor) -> torch.Tensor:
    dtype = x.real.dtype if x.is_complex() else x.dtype
    return torch.hann_window(n_fft, dtype=dtype, device=x.device)


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``(R, T)`` real -> ``(R, n_fft // 2 + 1, 1 + T // hop)`` complex (frame ``m`` centred on sample ``m * hop``)."""
    return torch.stft(x, n_fft, hop, window=_window(n_fft, x), center=True, pad_mode="constant",
                      return_complex=True)


def istft(spectrum: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """The inverse of ``stft`` (weighted overlap-add), ``(R, length)``."""
    return torch.istft(spectrum, n_fft, hop, window=_window(n_fft, spectrum), center=True, length=length)


def _wrap(phase: torch.Tensor) -> torch.Tensor:
    """Phases in ``[-pi, pi)``."""
    return torch.remainder(phase + math.pi, 2 * math.pi) - math.pi


def instantaneous_frequency(angle: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Frequency in radians per sample of each bin and frame, from the phase advance since the
    previous frame: ``w_k + wrap(angle[m] - angle[m - 1] - w_k hop) / hop`` with ``w_k`` the bin's
    centre ``2 pi k / n_fft`` (frame 0: ``w_k``). Accurate for a sinusoid within the main lobe of
    bin ``k``. ``angle``: ``(R, F, M)`` -> ``(R, F, M)``."""
    centre = torch.arange(angle.shape[1], device=angle.device, dtype=angle.dtype) * (2 * math.pi / n_fft)
    advance = _wrap(angle[..., 1:] - angle[..., :-1] - centre[:, None] * hop) / hop + centre[:, None]
    return torch.cat([centre[None, :, None].expand(angle.shape[0], -1, 1), advance], -1)


def stretch_frames(spectrum: torch.Tensor, rate: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Time-stretch each row's frames by its ``rate`` (> 1 faster), keeping the number of frames.

    Output frame ``m`` is read at analysis position ``m * rate`` (frames): its magnitude is
    interpolated linearly between the two frames around it, and its phase is the previous output
    frame's plus the phase advance measured there (Flanagan & Golden's phase vocoder, as in
    ``torchaudio.functional.phase_vocoder``, with a rate per row). Frames read beyond the last
    analysis frame are silent.

    Args:
        spectrum: ``(R, F, M)`` complex from ``stft``. rate: ``(R,)`` > 0.

    Returns:
        ``(R, F, M)`` complex.
    """
    rows, bins, frames = spectrum.shape
    real = spectrum.real.dtype
    position = torch.arange(frames, device=spectrum.device, dtype=real) * rate.to(real)[:, None]  # (R, M)
    first = position.floor().long().clamp(max=frames - 1)
    alpha = (position - first).clamp(max=1)[:, None, :]
    inside = (position <= frames - 1)[:, None, :]
    second = (first + 1).clamp(max=frames - 1)
    magnitude, angle = spectrum.abs(), spectrum.angle()

    def at(values, index):  # values (R, F, M) at frames index (R, M)
        return torch.gather(values, 2, index[:, None, :].expand(rows, bins, frames))

    mag = torch.lerp(at(magnitude, first), at(magnitude, second), alpha) * inside
    centre = torch.arange(bins, device=spectrum.device, dtype=real)[:, None] * (2 * math.pi * hop / n_fft)
    advance = _wrap(at(angle, second) - at(angle, first) - centre) + centre  # (R, F, M) radians per hop
    phase = torch.cat([angle[..., :1], advance[..., :-1]], -1).cumsum(-1)
    return torch.polar(mag, phase)


def _nearest_peak(magnitude: torch.Tensor) -> torch.Tensor:
    """For every bin of ``(R, F, M)`` magnitudes, the index of the nearest spectral peak of its
    frame (a bin above its lower neighbour and not below its upper one); a frame without a peak
    maps each bin to itself. ``(R, F, M)`` int64."""
    rows, bins, frames = magnitude.shape
    peak = torch.zeros_like(magnitude, dtype=torch.bool)
    peak[:, 1:-1] = (magnitude[:, 1:-1] > magnitude[:, :-2]) & (magnitude[:, 1:-1] >= magnitude[:, 2:])
    index = torch.arange(bins, device=magnitude.device)[None, :, None].expand(rows, bins, frames)
    below = torch.where(peak, index, torch.full_like(index, -bins)).cummax(1).values
    above = torch.where(peak, index, torch.full_like(index, 2 * bins)).flip(1).cummin(1).values.flip(1)
    nearest = torch.where(index - below <= above - index, below, above)
    return torch.where((nearest >= 0) & (nearest < bins), nearest, index)


def shift_frames(spectrum: torch.Tensor, ratio: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Shift each row's pitch by its frequency ``ratio``, keeping its duration (Laroche & Dolson's
    peak-based phase-vocoder pitch shift, "New phase-vocoder techniques for real-time pitch
    shifting", J. AES 47(11), 1999).

    In every frame each bin belongs to its nearest spectral peak; the peak's region is moved, as a
    block, by the whole number of bins that brings the peak to ``ratio`` times its instantaneous
    frequency, and turned by a phase that grows by ``(ratio - 1)`` times that frequency per hop
    (accumulated along each bin over the frames), so that the moved partial advances at the new
    frequency from frame to frame. The regions keep their own shape and phase relations (a
    partial's lobe stays a lobe). Regions moved past 0 Hz or Nyquist are dropped (no aliasing);
    overlapping ones (``ratio < 1``) add.

    Args:
        spectrum: ``(R, F, M)`` complex from ``stft``. ratio: ``(R,)`` > 0 (``2 ** (semitones / 12)``).

    Returns:
        ``(R, F, M)`` complex.
    """
    rows, bins, frames = spectrum.shape
    real = spectrum.real.dtype
    ratio = ratio.to(real)[:, None, None]
    magnitude = spectrum.abs()
    frequency = instantaneous_frequency(spectrum.angle(), hop, n_fft)  # (R, F, M) radians per sample
    rotation = ((ratio - 1) * frequency * hop).cumsum(-1)  # the phase turn of a partial staying in bin k
    peak = _nearest_peak(magnitude)
    target = torch.round(torch.gather(frequency, 1, peak) * ratio * (n_fft / (2 * math.pi)))
    destination = torch.arange(bins, device=spectrum.device)[None, :, None] + (target.long() - peak)
    inside = (destination >= 0) & (destination < bins)
    moved = spectrum * torch.polar(inside.to(real), torch.gather(rotation, 1, peak))
    out = torch.zeros(rows, bins + 1, frames, 2, dtype=real, device=spectrum.device)  # bin F collects the dropped
    index = torch.where(inside, destination, torch.full_like(destination, bins))[..., None].expand(-1, -1, -1, 2)
    out.scatter_add_(1, index, torch.view_as_real(moved))
    return torch.view_as_complex(out[:, :bins].contiguous())
