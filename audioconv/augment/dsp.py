"""DSP helpers shared by the augmentations: power over real samples, FFT convolution padded to a
fast length (by overlap-save in blocks for short filters), coloured noise (the package's one
implementation), noise banks and a per-device tensor cache."""
from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Callable

import numpy as np
import scipy.fft
import torch

__all__ = ["replace_tails", "mean_power", "real_peak", "gain_to_power", "add_at_snr", "fast_length", "fft_filter",
           "fft_convolve", "overlap_save", "convolution_plan", "colored_noise", "noise_bank",
           "shared_noise_bank", "shared_bank_energy", "circular_windows", "DeviceCache",
           "COLOR_SLOPES_DB_PER_OCTAVE", "NOISE_BANK_SAMPLES"]

# Power spectral density slope of each named noise colour, in dB per octave (1/f^beta noise has
# slope -10*log10(2)*beta ≈ -3.01*beta).
COLOR_SLOPES_DB_PER_OCTAVE = {"white": 0.0, "pink": -10 * math.log10(2), "brown": -20 * math.log10(2)}
NOISE_BANK_SAMPLES = 2 ** 21  # ~131 s at 16 kHz; examples read random windows of it
BANK_EXTENSION = 2 ** 18  # the cached banks repeat their first samples so windows this long read contiguously


def replace_tails(y: torch.Tensor, starts: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """``y`` with each example's samples from ``starts[b]`` on replaced by ``source``'s (by zeros
    when ``source`` is None).

    ``y``, ``source``: ``(B, C, T)``; ``starts``: ``(B,)`` int sample indices (``>= T``: nothing
    replaced). On the CPU, outside autograd, ``y`` is written in place, a slice per row (5x as
    fast as a mask over the batch, measured) and returned; elsewhere one ``torch.where`` (new
    memory, no read-back from the device)."""
    if y.device.type == "cpu" and not y.requires_grad and (source is None or not source.requires_grad):
        for row, start in enumerate(starts.tolist()):
            if start < y.shape[-1]:
                y[row, :, start:] = 0 if source is None else source[row, :, start:]
        return y
    tail = torch.arange(y.shape[-1], device=y.device) >= starts[:, None, None]
    return torch.where(tail, y.new_zeros(()) if source is None else source, y)


def mean_power(x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean square of each example of ``x`` ``(B, C, T)`` over its channels and real samples.

    Args:
        lengths: ``(B,)`` ints or None; only the first ``lengths[b]`` samples of example ``b`` count.

    Returns:
        ``(B,)`` in ``x``'s dtype; 0 for an example with no real samples.
    """
    if lengths is None:
        return torch.linalg.vector_norm(x, dim=(1, 2)).square() / (x.shape[1] * x.shape[2])
    real = torch.arange(x.shape[-1], device=x.device) < lengths[:, None]  # (B, T)
    energy = torch.linalg.vector_norm(x * real[:, None, :], dim=(1, 2)).square()
    count = (lengths * x.shape[1]).clamp(min=1).to(x.dtype)
    return energy / count


def real_peak(x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Largest ``|x|`` of each example of ``x`` ``(B, C, T)`` over its channels and real samples (the
    first ``lengths[b]``), ``(B,)`` in ``x``'s dtype; 0 for an example with none; NaN if it holds NaN."""
    if lengths is not None:
        x = x * (torch.arange(x.shape[-1], device=x.device) < lengths[:, None])[:, None, :]
    # max(max x, -min x) reads x twice without a temporary; vector_norm(ord=inf) took 10x as long on the CPU
    return torch.maximum(x.amax(dim=(1, 2)), x.amin(dim=(1, 2)).neg())


def gain_to_power(target_power: torch.Tensor, power: torch.Tensor) -> torch.Tensor:
    """Amplitude gain ``sqrt(target_power / power)`` that brings a signal of mean power ``power``
    to ``target_power``; 0 where either power is 0 (a silent signal stays silent, never NaN/inf; under
    autograd a zero gradient there, where the square root's is infinite)."""
    both = (power > 0) & (target_power > 0)
    one = torch.ones_like(power)
    ratio = torch.where(both, target_power, one) / torch.where(both, power, one)
    return torch.where(both, ratio.sqrt(), torch.zeros_like(power))


# Time per transformed sample of a real FFT by the power of two in its length, relative to a
# power of two: measured for torch.fft (MKL) on 16k-40k-point float32 transforms. Odd lengths
# are far slower; pocketfft and cuFFT also favour lengths with many factors of two.
_COST_BY_TWOS = {0: 4.5, 1: 2.0, 2: 1.75}
_COST_MANY_TWOS = 1.3


def add_at_snr(x: torch.Tensor, other: torch.Tensor, snr_db: torch.Tensor, lengths: torch.Tensor | None = None,
               apply: torch.Tensor | None = None, other_power: torch.Tensor | None = None,
               into_other: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``x + g * other`` with ``g`` per example such that the ratio of ``x``'s mean power to the
    added signal's is ``snr_db`` dB (over the real samples, see ``mean_power``); ``g`` is 0 where
    either signal is silent (never NaN), and where ``apply`` is false.

    Args:
        x, other: ``(B, C, T)``. snr_db: ``(B,)`` dB. lengths: ``(B,)`` ints or None.
        apply: ``(B,)`` bool or None (every example).
        other_power: ``(B,)`` ``mean_power(other, lengths)`` when the caller knows it already.
        into_other (bool): write the sum into ``other`` (memory the caller owns and no longer needs)
            instead of allocating; not under autograd.
        rows: ``(N,)`` int64 or None: mix only these examples of ``x`` (``snr_db``, ``lengths``,
            ``apply`` stay ``(B,)``); ``other`` (and ``other_power``) then hold theirs, ``(N, C, T)``. The power ratio is computed for
            the whole batch and then selected, so each row gets the very gain it gets when all
            are mixed (powers of 10 of a shorter vector can round differently in the last bit).

    Returns:
        ``(B, C, T)`` (``(N, C, T)`` with ``rows``): new memory, or ``other`` itself with ``into_other``.
    """
    target = mean_power(x, lengths) * 10.0 ** (-snr_db.to(x.dtype) / 10)
    if rows is not None:
        target, x = target.index_select(0, rows), x.index_select(0, rows)
        lengths = None if lengths is None else lengths.index_select(0, rows)
        apply = None if apply is None else apply.index_select(0, rows)
    gain = gain_to_power(target, mean_power(other, lengths) if other_power is None else other_power.to(x.dtype))
    if apply is not None:
        gain = gain * apply
    if into_other and not (other.requires_grad or x.requires_grad):
        return torch.addcmul(x, other, gain[:, None, None], out=other)
    return torch.addcmul(x, other, gain[:, None, None])


def _relative_cost(n: int) -> float:
    twos = (n & -n).bit_length() - 1
    if n == 1 << twos:
        return 1.0
    return _COST_BY_TWOS.get(twos, _COST_MANY_TWOS)


@lru_cache(maxsize=1024)
def fast_length(n: int) -> int:
    """The FFT length ``>= n`` expected to transform fastest: of the 5-smooth lengths from ``n``
    up to the next power of two, the one with the least ``length * relative cost``, where the
    cost depends on the factors of two (``_relative_cost``). ``scipy.fft.next_fast_len`` returns
    the smallest, which can be far slower: 19683 = 3**9 takes 3.7x as long as 20000 with
    torch.fft, and 32768 is 20 % faster than 32000."""
    if n <= 1:
        return 1
    best, best_cost = n, math.inf
    candidate, ceiling = scipy.fft.next_fast_len(n, real=True), 1 << (n - 1).bit_length()
    while candidate <= ceiling:
        if candidate * _relative_cost(candidate) < best_cost:
            best, best_cost = candidate, candidate * _relative_cost(candidate)
        candidate = scipy.fft.next_fast_len(candidate + 1, real=True)
    return best


CHUNK_SAMPLES = 2 ** 19  # on the CPU, work on this many samples at a time (cache-sized)


def ufunc(torch_fn: Callable[..., torch.Tensor], numpy_fn: Callable[..., np.ndarray], *tensors: torch.Tensor,
          speedup: float = 2.0) -> torch.Tensor:
    """``torch_fn(*tensors)`` for an element-wise function, computed by ``numpy_fn`` (its numpy ufunc)
    when every tensor is a float32/float64 CPU tensor that needs no gradient and torch would use
    fewer threads than ``speedup``, numpy's measured advantage on one thread (numpy's ufuncs run
    on one thread, torch's on all of its). One thread, 2^18 float32 values: numpy's ``tanh`` took
    1/12 of torch's time, ``arctan2``, ``cos`` and ``sin`` 1/2. New memory either way, same dtype."""
    if torch.get_num_threads() < speedup and all(
            t.device.type == "cpu" and not t.requires_grad and t.dtype in (torch.float32, torch.float64)
            for t in tensors):
        return torch.from_numpy(numpy_fn(*(t.numpy() for t in tensors)))
    return torch_fn(*tensors)


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: whether row ``b`` of ``x`` ``(B, ...)`` holds only finite values, from its
    maximum and minimum (they propagate NaN, and an infinity is one of them): on the CPU
    ``torch.isfinite(x).all()`` and ``torch.aminmax`` took 15x as long."""
    if x.dim() < 2 or x[0].numel() == 0:
        return torch.isfinite(x).reshape(x.shape[0], -1).all(1)
    rows = x.reshape(x.shape[0], -1)
    return torch.isfinite(rows.amax(1)) & torch.isfinite(rows.amin(1))


def cache_slices(rows: int, row_samples: int, device: torch.device) -> list[slice]:
    """Slices of ``rows`` rows of ``row_samples`` samples each that hold about ``CHUNK_SAMPLES``
    samples (at least one row) on the CPU, so that several passes over one slice run in cache and
    a large batch streams through memory once; one slice on other devices (none for 0 rows)."""
    step = max(1, CHUNK_SAMPLES // max(1, row_samples)) if device.type == "cpu" else max(1, rows)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def fft_filter(x: torch.Tensor, response: Callable[[int, int], torch.Tensor], n_fft: int, keep: int | None = None,
               finish: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Filter the rows of ``x`` ``(B, ..., T)`` by a frequency response, by FFT at length ``n_fft``.

    ``y = irfft(rfft(x, n_fft) * response(start, stop), n_fft)``: a circular convolution, linear
    as long as ``n_fft`` holds the signal and the filter's impulse response (``T`` plus its
    ringing; for a zero-phase response, its ringing on either side). On the CPU the rows go
    through in slices of about ``CHUNK_SAMPLES`` transform samples: each slice is read from ``x``,
    transformed, finished and written out while it is in cache, so a large batch is streamed
    through memory once.

    Args:
        response (callable): ``response(start, stop)`` -> the response of rows ``start:stop`` on
            the ``n_fft // 2 + 1`` real-FFT bins, real or complex, broadcastable to
            ``(stop - start, ..., n_fft // 2 + 1)`` (a leading 1 for all rows alike).
        n_fft (int): transform length.
        keep (int or None): keep only the first ``keep`` output samples (default ``T``).
        finish (callable or None): ``finish(y, x_rows, start, stop) -> y`` post-processes the
            results ``y`` of rows ``start:stop`` (e.g. a gain per row, a crop) before they are
            written; ``x_rows`` are those rows of ``x``.

    Returns:
        ``(B, ..., keep)`` (after ``finish``), new memory.
    """
    keep = x.shape[-1] if keep is None else min(keep, n_fft)
    count = x.shape[0]
    if count == 0:
        return x.new_empty((0,) + x.shape[1:-1] + (keep,))
    slices = cache_slices(count, n_fft * max(1, x[0].numel() // x.shape[-1]), x.device)
    out = None
    time = x.shape[-1]
    reuse = time < n_fft and len(slices) > 1 and not x.requires_grad
    padded = x.new_zeros((slices[0].stop,) + x.shape[1:-1] + (n_fft,)) if reuse else None
    for start, stop in ((s.start, s.stop) for s in slices):
        xs = x[start:stop]
        if padded is not None:  # the zeros after sample T are written once, not for every slice
            padded[: stop - start, ..., :time] = xs
            spectrum = torch.fft.rfft(padded[: stop - start])
        else:
            spectrum = torch.fft.rfft(xs, n=n_fft)
        spectrum *= response(start, stop)
        y = torch.fft.irfft(spectrum, n=n_fft)[..., :keep]
        if finish is not None:
            y = finish(y, xs, start, stop)
        if stop == count and out is None:  # one slice: return it as it is
            return y
        if out is None:
            out = y.new_empty((count,) + y.shape[1:])
        out[start:stop] = y
    return out


def fft_convolve(x: torch.Tensor, h: torch.Tensor, keep: int | None = None,
                 finish: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Linear convolution of the rows of ``x`` ``(B, ..., T)`` with ``h`` ``(B or 1, ..., L)`` along time, by FFT.

    In the whole-row method both are transformed at a fast length (``fast_length``) at or above
    ``T + L - 1``, so nothing wraps around. (``torchaudio.functional.fftconvolve`` transforms at
    exactly ``T + L - 1``, which can be a slow, prime-rich length.) Dimensions after the
    first broadcast, so ``h`` ``(B, 1, L)`` is transformed once for all channels of
    ``x`` ``(B, C, T)``. The rows go through ``fft_filter`` (in cache-sized slices on the CPU),
    each slice of ``h`` transformed with its rows. That is the whole-row method; a short ``h``
    (``L`` well below ``T``) is applied by overlap-save in blocks instead (``convolution_plan``,
    ``overlap_save``): the same result to the precision of the transforms, 1.2-2x as fast.

    Args:
        keep (int or None): keep only the first ``keep`` output samples (default all ``T + L - 1``).
        finish (callable or None): as in ``fft_filter``.

    Returns:
        ``(B, ..., keep)`` (after ``finish``), new memory.
    """
    full = x.shape[-1] + h.shape[-1] - 1
    keep = full if keep is None else min(keep, full)
    block = overlap_save_block(x.shape[-1], h.shape[-1], keep)
    if block is not None:
        return overlap_save(x, h, keep, block, finish)
    n = fast_length(full)
    padded: list[torch.Tensor] = []  # one zero-padded buffer for the slices of h, made at the first

    def response(start: int, stop: int) -> torch.Tensor:
        if h.shape[0] == 1 or h.requires_grad or h.shape[-1] >= n:
            return torch.fft.rfft(h if h.shape[0] == 1 else h[start:stop], n=n)
        if not padded:
            padded.append(h.new_zeros((stop - start,) + h.shape[1:-1] + (n,)))
        buffer = padded[0][: stop - start]
        buffer[..., : h.shape[-1]] = h[start:stop]
        return torch.fft.rfft(buffer)

    return fft_filter(x, response, n, keep=keep, finish=finish)


MIN_BLOCK = 512  # overlap-save blocks are at least this long, and at least 4 filter lengths
BLOCK_ADVANTAGE = 0.8  # overlap-save is used when its modelled cost is below this share of one long transform's


def _fft_cost(n: int) -> float:
    """Modelled time of a real FFT of ``n`` points: ``n log2 n`` times ``_relative_cost``."""
    return n * math.log2(n) * _relative_cost(n)


@lru_cache(maxsize=1024)
def convolution_plan(time: int, taps: int, keep: int) -> tuple[int | None, float]:
    """How ``fft_convolve`` convolves ``time`` samples with ``taps`` taps (the first ``keep``
    outputs), and its modelled cost per row (``_fft_cost`` units): ``(block, cost)`` for
    overlap-save in blocks of ``block`` samples (a power of two, at least ``MIN_BLOCK`` and
    ``4 * taps``), ``(None, cost)`` for one transform of the whole row at ``fast_length(time +
    taps - 1)`` when no block is modelled as cheaper than ``BLOCK_ADVANTAGE`` of it. Per row, the
    whole-row method makes three transforms at that length (signal, filter, product);
    overlap-save makes two per block of ``block - taps + 1`` outputs and one of the filter.
    Measured on one CPU thread for 256 rows of 16,000 samples: 64 taps 2.1x, 256 taps 1.4x, 1,024
    taps 1.2x faster than the whole-row method; at 4,096 taps the model picks the whole row."""
    whole = 3 * _fft_cost(fast_length(max(1, time + taps - 1)))
    best, best_cost = None, BLOCK_ADVANTAGE * whole
    block = max(MIN_BLOCK, 1 << (4 * taps - 1).bit_length())
    while keep > 0 and taps > 0 and block < time + taps - 1:
        cost = (2 * math.ceil(keep / (block - taps + 1)) + 1) * _fft_cost(block)
        if cost < best_cost:
            best, best_cost = block, cost
        block *= 2
    return best, (whole if best is None else best_cost)


def overlap_save_block(time: int, taps: int, keep: int) -> int | None:
    """The overlap-save block length ``fft_convolve`` uses, or None (``convolution_plan``)."""
    return convolution_plan(time, taps, keep)[0]


def overlap_save(x: torch.Tensor, h: torch.Tensor, keep: int, block: int,
                 finish: Callable[[torch.Tensor, torch.Tensor, int, int], torch.Tensor] | None = None) -> torch.Tensor:
    """The first ``keep`` samples of the linear convolution of the rows of ``x`` ``(B, ..., T)``
    with ``h`` ``(B or 1, ..., L)``, by overlap-save: ``x`` after ``L - 1`` zeros is cut into
    blocks of ``block`` samples that overlap by ``L - 1``; each is transformed, multiplied by
    ``h``'s transform at ``block`` points and transformed back, and its last ``block - L + 1``
    samples (those without wrap-around) are laid end to end. Needs ``block > L >= 1`` and
    ``keep >= 1`` (``convolution_plan`` chooses it only then). The rows go
    through in cache-sized slices as in ``fft_filter``, with ``finish`` as there.

    Returns:
        ``(B, ..., keep)`` (after ``finish``), new memory.
    """
    time, taps = x.shape[-1], h.shape[-1]
    hop = block - taps + 1
    blocks = -(-keep // hop)
    span = (blocks - 1) * hop + block  # padded samples the blocks read
    count = x.shape[0]
    if count == 0:
        return x.new_empty((0,) + x.shape[1:-1] + (keep,))
    slices = cache_slices(count, blocks * block * max(1, x[0].numel() // max(1, time)), x.device)
    padded = x.new_zeros((slices[0].stop,) + x.shape[1:-1] + (span,))
    used = min(time, span - taps + 1)
    out = None
    for start, stop in ((s.start, s.stop) for s in slices):
        xs = x[start:stop]
        rows = padded[: stop - start] if not x.requires_grad else padded[: stop - start].clone()
        rows[..., taps - 1: taps - 1 + used] = xs[..., :used]
        spectrum = torch.fft.rfft(rows.unfold(-1, block, hop))  # (rows, ..., blocks, block // 2 + 1)
        spectrum = spectrum * torch.fft.rfft(h if h.shape[0] == 1 else h[start:stop], n=block).unsqueeze(-2)
        y = torch.fft.irfft(spectrum, n=block)[..., taps - 1:].flatten(-2)[..., :keep]
        if finish is not None:
            y = finish(y, xs, start, stop)
        if stop == count and out is None:
            return y
        if out is None:
            out = y.new_empty((count,) + y.shape[1:])
        out[start:stop] = y
    return out


def colored_noise(white: torch.Tensor, slope_db_per_octave: float, flat_below_bin: float | None = None) -> torch.Tensor:
    """Shape white noise so that its power spectrum falls by ``slope_db_per_octave`` dB per octave
    (0 white, -3.01 pink, -6.02 brown; positive slopes rise).

    The last dimension is taken as one period, and bin ``k`` of its real FFT (``k / T`` cycles
    per sample, ``k * sample_rate / T`` Hz) is multiplied by ``k ** e``, ``e = slope / (20 log10 2)``
    (amplitude ∝ frequency ** e). Bin 0 (DC), where the power law has no finite value, is set to
    zero: the result has zero mean. With ``flat_below_bin = b`` the gain is ``max(k, b) ** e``
    instead, for every bin down to and including DC: the spectrum is held flat below bin ``b``.
    Any window of the result, wrapping around the end, has the requested colour.

    Args:
        white (Tensor): ``(..., T)`` real white noise (e.g. ``torch.randn``).
        slope_db_per_octave (float): dB per octave.
        flat_below_bin (float or None): bin (``hz * T / sample_rate``, > 0) below which the
            spectrum is held flat; ``None`` (default): the pure power law, DC removed.

    Returns:
        ``(..., T)`` in ``white``'s dtype with unit RMS along the last dimension (zeros stay zeros).
    """
    if flat_below_bin is not None and not flat_below_bin > 0:
        raise ValueError(f"flat_below_bin must be > 0 (an FFT bin) or None, got {flat_below_bin!r}")
    exponent = slope_db_per_octave / (20 * math.log10(2))  # amplitude ∝ f ** exponent
    if exponent == 0.0:  # no FFT round trip: removing DC is subtracting the mean
        noise = white if flat_below_bin is not None else white - white.mean(-1, keepdim=True)
    else:
        spectrum = torch.fft.rfft(white)
        bins = torch.arange(spectrum.shape[-1], dtype=white.dtype, device=white.device)
        if flat_below_bin is None:
            gain = torch.where(bins > 0, bins.clamp(min=1) ** exponent, torch.zeros((), dtype=white.dtype))
        else:
            gain = bins.clamp(min=flat_below_bin) ** exponent
        noise = torch.fft.irfft(spectrum * gain, n=white.shape[-1])
    rms = noise.square().mean(-1, keepdim=True).sqrt()
    return noise / rms.clamp_min(torch.finfo(noise.dtype).tiny)


def noise_bank(slope_db_per_octave: float, seed: int = 0, n_samples: int = NOISE_BANK_SAMPLES) -> torch.Tensor:
    """A periodic noise signal of ``n_samples`` whose power spectrum falls by
    ``slope_db_per_octave`` dB per octave (0 white, −3.01 pink, −6.02 brown).

    Made on the CPU in float64 from ``torch.Generator().manual_seed(seed)``: the same numbers on
    every machine and device. Gaussian white noise shaped by ``colored_noise`` (DC removed), so
    any window of it, wrapping around the end, has the requested colour.

    Returns:
        ``(n_samples,)`` float32, zero mean, unit RMS.
    """
    g = torch.Generator().manual_seed(int(seed))
    white = torch.randn(n_samples, generator=g, dtype=torch.float64)
    return colored_noise(white, slope_db_per_octave).float()


class DeviceCache:
    """Build a tensor once (on the CPU, with ``make()``) and keep one copy per device and dtype."""

    def __init__(self, make: Callable[[], torch.Tensor]):
        self._make = make
        self._copies: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self._lock = threading.Lock()

    def get(self, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
        device = torch.device(device)
        with self._lock:
            base = self._copies.get(("cpu", None))
            if base is None:
                base = self._copies[("cpu", None)] = self._make()
            key = (str(device), dtype)
            if key not in self._copies:
                self._copies[key] = base.to(device=device, dtype=dtype or base.dtype)
            return self._copies[key]

    def __getstate__(self):  # picklable (DataLoader workers, deepcopy): the copies are rebuilt there
        return {"_make": self._make}

    def __setstate__(self, state):
        self.__init__(state["_make"])


_BANKS: dict[tuple[float, int], DeviceCache] = {}
_ENERGIES: dict[tuple[float, int], DeviceCache] = {}


def shared_noise_bank(slope_db_per_octave: float, seed: int, device: torch.device | str,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """``noise_bank(slope_db_per_octave, seed=seed)`` on ``device``, built once per process, followed
    by a repeat of its first ``BANK_EXTENSION`` samples (its period stays ``NOISE_BANK_SAMPLES``)."""
    key = (float(slope_db_per_octave), int(seed))
    if key not in _BANKS:
        def make(key=key):
            bank = noise_bank(*key)
            return torch.cat([bank, bank[:BANK_EXTENSION]])

        _BANKS[key] = DeviceCache(make)
    return _BANKS[key].get(device, dtype)


def shared_bank_energy(slope_db_per_octave: float, seed: int, device: torch.device | str) -> torch.Tensor:
    """Cumulative energy of ``shared_noise_bank(slope_db_per_octave, seed, ...)`` (float32 samples,
    summed in float64), ``(N + 1,)`` float64 on ``device``: ``e[j] - e[i]`` is the energy of samples
    ``i`` to ``j - 1``, so the power of any window costs two reads instead of a pass over it."""
    key = (float(slope_db_per_octave), int(seed))
    if key not in _ENERGIES:
        def make(key=key):
            bank = shared_noise_bank(*key, "cpu").double()
            return torch.cat([bank.new_zeros(1), bank.square().cumsum(0)])

        _ENERGIES[key] = DeviceCache(make)
    return _ENERGIES[key].get(device)


def circular_windows(signal: torch.Tensor, start: torch.Tensor, length: int, period: int | None = None,
                     clip_start: torch.Tensor | None = None, clip_len: torch.Tensor | None = None) -> torch.Tensor:
    """Windows of ``length`` samples read from a 1-D ``signal``, wrapping around.

    Args:
        signal: ``(N,)``: one periodic signal of ``period`` samples (default ``N``), possibly
            followed by a repeat of its beginning, or several clips laid end to end.
        start: ``(...)`` int64, first sample of each window, relative to its clip.
        period: the period of a single periodic signal.
        clip_start, clip_len: ``(...)`` int64 where the clip of each window lies in ``signal``.

    Returns:
        ``(..., length)``: ``out[..., t] = signal[clip_start + (start + t) % clip_len]`` (clips), or
        ``signal[(start + t) % period]``.
    """
    t = torch.arange(length, device=signal.device)
    if clip_len is not None:
        return signal[clip_start[..., None] + (start[..., None] + t) % clip_len[..., None]]
    period = period or signal.shape[0]
    start = start % period
    if signal.shape[0] >= period + length - 1:  # the repeat holds every window: copy rows, no modulo
        return signal.unfold(0, length, 1).index_select(0, start.reshape(-1)).reshape(*start.shape, length)
    return signal[(start[..., None] + t) % period]
