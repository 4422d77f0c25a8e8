"""Batched phase vocoders with a rate or a pitch ratio per row: the DSP of ``TimeStretch`` and ``PitchShift``.

Everything works on short-time Fourier transforms ``(R, M, F)`` (rows, frames, bins: frames first,
so that a frame is a contiguous row) made by ``stft``/``istft`` (Hann window, hop a quarter of the
window, frames centred on multiples of the hop, zero padding at the ends); each row has its own rate or ratio, so a batch goes through in one
set of tensor operations, on any device.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from .dsp import ufunc

__all__ = ["stft_size", "stft", "istft", "vocode", "instantaneous_frequency", "stretch_frames", "shift_frames"]

WINDOW_S = 0.064  # analysis window: 64 ms resolves the harmonics of voices down to ~60 Hz
SLICE_CELLS = 2 ** 18  # on the CPU, rows go through in slices of about this many STFT cells (cache-sized)


def stft_size(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)``: the power of two nearest ``WINDOW_S`` seconds (1024 at 16 kHz, 512 at
    8 kHz, 2048 at 44.1 kHz) and a quarter of it."""
    n_fft = 2 ** max(4, round(math.log2(WINDOW_S * sample_rate)))
    return n_fft, n_fft // 4


def _window(n_fft: int, x: torch.Tensor) -> torch.Tensor:
    dtype = x.real.dtype if x.is_complex() else x.dtype
    return torch.hann_window(n_fft, dtype=dtype, device=x.device)


def stft(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``(R, T)`` real -> ``(R, 1 + T // hop, n_fft // 2 + 1)`` complex, frames first (frame ``m``
    centred on sample ``m * hop``, zeros beyond the ends): ``torch.stft(x, n_fft, hop, window,
    center=True, pad_mode="constant")`` transposed, made here in the layout the vocoders use."""
    padded = torch.nn.functional.pad(x, (n_fft // 2, n_fft // 2))
    return torch.fft.rfft(padded.unfold(-1, n_fft, hop) * _window(n_fft, x))


@lru_cache(maxsize=16)
def _overlap(n_fft: int, hop: int, frames: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The sum of the squared windows that overlap at each sample, ``((frames - 1) * hop + n_fft,)``."""
    square = torch.hann_window(n_fft, dtype=dtype, device=device).square()
    return _overlap_add(square.expand(1, frames, n_fft), hop)[0]


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """``(R, M, n_fft)`` frames placed ``hop`` apart and summed, ``(R, (M - 1) * hop + n_fft)``;
    ``n_fft`` a multiple of ``hop``: ``n_fft / hop`` shifted additions of whole frames."""
    rows, count, n_fft = frames.shape
    parts = n_fft // hop
    out = frames.new_zeros(rows, count + parts - 1, hop)
    pieces = frames.reshape(rows, count, parts, hop)
    for j in range(parts):
        out[:, j:j + count] += pieces[:, :, j]
    return out.reshape(rows, -1)


def istft(spectrum: torch.Tensor, n_fft: int, hop: int, length: int) -> torch.Tensor:
    """The inverse of ``stft`` (weighted overlap-add, as ``torch.istft`` with ``center=True``),
    ``(R, length)``. Written out (``_overlap_add``): ``torch.istft`` took 2.5x as long on the CPU."""
    if n_fft % hop:
        raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop})")
    frames = torch.fft.irfft(spectrum, n=n_fft) * _window(n_fft, spectrum)  # (R, M, n_fft)
    y = _overlap_add(frames, hop)
    envelope = _overlap(n_fft, hop, spectrum.shape[1], y.device, y.dtype)
    first = n_fft // 2
    stop = min(first + length, y.shape[-1])
    out = y[:, first:stop] / envelope[first:stop]
    return torch.nn.functional.pad(out, (0, length - out.shape[-1])) if out.shape[-1] < length else out


def vocode(x: torch.Tensor, sample_rate: int, frames: Callable[..., torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """``istft(frames(stft(x), values, hop, n_fft))`` for rows ``x`` ``(R, T)`` with one value per row
    ``values`` ``(R,)`` (a rate, a ratio), at ``stft_size(sample_rate)``; ``(R, T)``.

    On the CPU the rows go through in slices of about ``SLICE_CELLS`` time-frequency cells, so that
    the two dozen passes of a vocoder over them run in cache (twice as fast as over the whole
    batch, measured); on other devices all at once."""
    n_fft, hop = stft_size(sample_rate)
    rows, time = x.shape
    step = rows
    if x.device.type == "cpu":
        step = max(1, SLICE_CELLS // ((n_fft // 2 + 1) * (1 + time // hop)))
    if step >= rows:
        return istft(frames(stft(x, n_fft, hop), values, hop, n_fft), n_fft, hop, time)
    out = torch.empty_like(x)
    for start in range(0, rows, step):
        part = slice(start, min(start + step, rows))
        out[part] = istft(frames(stft(x[part], n_fft, hop), values[part], hop, n_fft), n_fft, hop, time)
    return out


def _wrap(phase: torch.Tensor) -> torch.Tensor:
    """Phases brought to ``[-pi, pi]`` (``phase - 2 pi round(phase / 2 pi)``), in place."""
    return phase.sub_(torch.round(phase * (0.5 / math.pi)).mul_(2 * math.pi))


def _planes(spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``(R, M, F)`` complex frames as contiguous real tensors: the
    arithmetic below runs on real tensors, several times faster than on complex ones on the CPU
    (vectorised ``atan2``, ``cos``, ``sin``; no complex ``abs``/``angle``/``polar``)."""
    planes = torch.view_as_real(spectrum)  # (R, M, F, 2)
    return planes[..., 0].contiguous(), planes[..., 1].contiguous()


def instantaneous_frequency(angle: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Frequency in radians per sample of each bin and frame, from the phase advance since the
    previous frame: ``w_k + wrap(angle[m] - angle[m - 1] - w_k hop) / hop`` with ``w_k`` the bin's
    centre ``2 pi k / n_fft`` (frame 0: ``w_k``). Accurate for a sinusoid within the main lobe of
    bin ``k``. ``angle``: frames first, ``(R, M, F)`` -> ``(R, M, F)``."""
    centre = torch.arange(angle.shape[-1], device=angle.device, dtype=angle.dtype) * (2 * math.pi / n_fft)
    advance = _wrap(angle[:, 1:] - angle[:, :-1] - centre * hop).div_(hop).add_(centre)
    return torch.cat([centre.expand(angle.shape[0], 1, -1), advance], 1)


@lru_cache(maxsize=16)
def _own_advance(frames: int, bins: int, hop: int, n_fft: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(M, F)``: the phase bin ``k``'s own frequency ``2 pi k / n_fft`` gains in ``m`` hops,
    modulo 2 pi (found in float64; the same for every slice of a batch, so it is kept)."""
    centre = torch.arange(bins, device=device, dtype=torch.float64) * (2 * math.pi * hop / n_fft)
    steps = torch.arange(frames, device=device, dtype=torch.float64)[:, None]
    return torch.remainder(steps * centre, 2 * math.pi).to(dtype)


def _polar(re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Magnitude and angle of ``re + i im`` (0 and 0 at the origin). Under autograd the origin —
    every bin of a silent frame — passes a zero gradient instead of hypot's and atan2's 0/0 (NaN)."""
    if not (re.requires_grad or im.requires_grad):
        return torch.hypot(re, im), ufunc(torch.atan2, np.arctan2, im, re)
    origin = (re == 0) & (im == 0)
    re = torch.where(origin, torch.ones_like(re), re)  # any point off the origin: its values are not kept
    zero = torch.zeros_like(im)
    return torch.where(origin, zero, torch.hypot(re, im)), torch.where(origin, zero, torch.atan2(im, re))


def stretch_frames(spectrum: torch.Tensor, rate: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Time-stretch each row's frames by its ``rate`` (> 1 faster), keeping the number of frames.

    Output frame ``m`` is read at analysis position ``m * rate`` (frames): its magnitude is
    interpolated linearly between the two frames around it, and its phase is the previous output
    frame's plus the phase advance measured there (Flanagan & Golden's phase vocoder, as in
    ``torchaudio.functional.phase_vocoder``, with a rate per row). Frames read beyond the last
    analysis frame are silent.

    Args:
        spectrum: ``(R, M, F)`` complex from ``stft``. rate: ``(R,)`` > 0.

    Returns:
        ``(R, M, F)`` complex.
    """
    re, im = _planes(spectrum)  # (R, M, F)
    rows, frames, bins = re.shape
    position = torch.arange(frames, device=re.device, dtype=re.dtype) * rate.to(re.dtype)[:, None]  # (R, M)
    first = position.floor().long().clamp(max=frames - 1)
    second = (first + 1).clamp(max=frames - 1)
    alpha = (position - first).clamp(max=1)[..., None]
    # the frames read, as rows of the (R * M, F) planes: index_select copies whole frames
    base = torch.arange(rows, device=re.device)[:, None] * frames
    first, second = (first + base).reshape(-1), (second + base).reshape(-1)
    magnitude, angle = _polar(re, im)
    magnitude, angle = magnitude.reshape(rows * frames, bins), angle.reshape(rows * frames, bins)

    def read(planes: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        return planes.index_select(0, frame).reshape(rows, frames, bins)

    mag = torch.lerp(read(magnitude, first), read(magnitude, second), alpha).mul_((position <= frames - 1)[..., None])
    # phase advance from frame `first` to `second`: the bin's own advance per hop plus the wrapped
    # deviation from it; summed over the output frames, the bins' own advances are added modulo 2 pi
    # (as a table), so that cos and sin see small angles (their slow path starts near 1e4 radians)
    centre = torch.arange(bins, device=re.device, dtype=torch.float64) * (2 * math.pi * hop / n_fft)
    deviation = _wrap((read(angle, second) - read(angle, first)).sub_(centre.to(re.dtype)))
    phase = torch.cat([angle.reshape(rows, frames, bins)[:, :1], deviation[:, :-1]], 1).cumsum_(1)
    phase += _own_advance(frames, bins, hop, n_fft, re.device, re.dtype)
    return _from_polar(mag, phase)


def _from_polar(magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """``magnitude * exp(i phase)`` as a complex tensor, from the real and imaginary products
    (``torch.complex`` of two contiguous planes: as fast on the CPU, end to end, as writing each
    product straight into a plane of the complex result, measured; ``torch.polar`` is slower)."""
    cos, sin = ufunc(torch.cos, np.cos, phase), ufunc(torch.sin, np.sin, phase)
    return torch.complex(magnitude * cos, magnitude * sin)


LOBE_BINS = 2  # half-width of a Hann window's main lobe, in bins


def _local_peak(power: torch.Tensor) -> torch.Tensor:
    """For every bin of frames-first powers ``(R, M, F)`` (float32, >= 0), the bin of the largest
    power within ``LOBE_BINS`` of it in the same frame (the higher bin on a tie): the peak of the
    partial whose main lobe the bin lies in. ``(R, M, F)`` int64.

    One max-pool: each power's float32 bit pattern (ordered like the powers themselves) times
    2 ** 12 plus its bin index is an exact float64 key, so the window's largest key carries the
    index of the window's largest power in its low bits."""
    rows, frames, bins = power.shape
    scale = 2 ** math.ceil(math.log2(bins + 1))
    key = power.float().view(torch.int32).double().mul_(scale).add_(torch.arange(bins, device=power.device))
    top = torch.nn.functional.max_pool1d(key.reshape(rows * frames, 1, bins), 2 * LOBE_BINS + 1, stride=1,
                                         padding=LOBE_BINS)
    return top.long().bitwise_and_(scale - 1).reshape(rows, frames, bins)


def shift_frames(spectrum: torch.Tensor, ratio: torch.Tensor, hop: int, n_fft: int) -> torch.Tensor:
    """Shift each row's pitch by its frequency ``ratio``, keeping its duration (Laroche & Dolson's
    peak-based phase-vocoder pitch shift, "New phase-vocoder techniques for real-time pitch
    shifting", J. AES 47(11), 1999).

    In every frame each bin goes with the strongest bin within a main lobe's half-width of it
    (``_local_peak``: the peak of its partial): it is moved by the whole number of bins nearest the
    change of that peak's instantaneous frequency (``(ratio - 1)`` times it), and turned by a phase that
    grows by ``(ratio - 1)`` times that frequency per hop (accumulated along each bin over the
    frames), so that the moved partial advances at the new frequency from frame to frame. A
    partial's lobe moves as a block and keeps its shape and phase relations. Bins moved past 0 Hz
    or Nyquist are dropped (no aliasing); bins moved onto one another (``ratio < 1``) add.

    Args:
        spectrum: ``(R, M, F)`` complex from ``stft``. ratio: ``(R,)`` > 0 (``2 ** (semitones / 12)``).

    Returns:
        ``(R, M, F)`` complex.
    """
    re, im = _planes(spectrum)  # (R, M, F)
    rows, frames, bins = re.shape
    ratio = ratio.to(re.dtype)[:, None, None]
    frequency = instantaneous_frequency(ufunc(torch.atan2, np.arctan2, im, re), hop, n_fft)  # (R, M, F) radians per sample
    rotation = ((ratio - 1) * hop * frequency).cumsum_(1)  # the phase turn of a partial staying in bin k
    peak = _local_peak(torch.addcmul(re * re, im, im).detach())
    move = torch.gather(frequency, 2, peak).mul_((ratio - 1) * (n_fft / (2 * math.pi))).round_().long()  # bins
    # destination bin plus one, held within [0, F + 1]: slots 0 and F + 1 collect what is dropped
    destination = move.add_(torch.arange(1, bins + 1, device=re.device)).clamp_(0, bins + 1)
    turn = torch.gather(rotation, 2, peak)
    cos, sin = ufunc(torch.cos, np.cos, turn), ufunc(torch.sin, np.sin, turn)
    out_re = torch.zeros(rows, frames, bins + 2, dtype=re.dtype, device=re.device)
    out_im = torch.zeros_like(out_re)
    out_re = out_re.scatter_add(2, destination, re * cos - im * sin)
    out_im = out_im.scatter_add(2, destination, torch.addcmul(re * sin, im, cos))
    return torch.complex(out_re[..., 1:bins + 1], out_im[..., 1:bins + 1])
