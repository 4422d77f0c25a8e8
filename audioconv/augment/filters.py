"""Butterworth low-pass, high-pass, band-pass and band-stop filters at drawn frequencies and orders.

The four share one implementation (``ButterworthFilter``): the frequency response of the digital
Butterworth filter that ``scipy.signal.butter(order, ..., fs=sample_rate)`` designs (bilinear
transform with pre-warped edges) — magnitude and phase — applied by multiplying the batch's FFT.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .base import Augmentation, log_uniform, uniform
from .params import params_select
from .dsp import convolution_plan, fft_convolve
from .validation import check_int_range, check_range, check_sample_rate

__all__ = ["LowPass", "HighPass", "BandPass", "BandStop", "ButterworthFilter", "butterworth_response",
           "filter_edges_hz"]

KINDS = ("lowpass", "highpass", "bandpass", "bandstop")
MAX_ORDER = 12
RING_TOLERANCE = 1e-8  # the FIR is long enough for the impulse response to fall to -160 dB
MAX_RING_SAMPLES = 2 ** 17
GROUP_COST_SHARE = 0.85  # a length of FIR joins a longer one's group when it would cost this share of it
EDGE_LIMIT = 0.49  # band edges are kept below this fraction of the sample rate
MAX_U = 1e10  # |u| beyond this (bins at 0 Hz, Nyquist or a notch) is this: |H| <= 1e-10 ** order


def filter_edges_hz(kind: str, params: dict, sample_rate: int) -> torch.Tensor:
    """The corner frequencies in Hz a draw describes: ``(N, 1)`` for low/high-pass (``cutoff_hz``),
    ``(N, 2)`` for band-pass/stop (``centre_hz * 2 ** (∓ bandwidth_octaves / 2)``, the upper edge
    held below ``0.49 * sample_rate``) — the ``Wn`` to give ``scipy.signal.butter``."""
    if kind in ("lowpass", "highpass"):
        return params["cutoff_hz"].double()[:, None]
    half = 2.0 ** (params["bandwidth_octaves"].double() / 2)
    centre = params["centre_hz"].double()
    return torch.stack([centre / half, (centre * half).clamp(max=EDGE_LIMIT * sample_rate)], 1)


@lru_cache(maxsize=None)
def _pair_damping(order: int) -> tuple[float, ...]:
    """``2 |Re p|`` for each conjugate pair of poles ``p_k = exp(j pi (2k + order + 1) / (2 order))``
    of the analog Butterworth low-pass (cut-off 1 rad/s): ``(s - p)(s - conj p) = s^2 + c s + 1``
    (an odd order has the real pole ``-1`` besides)."""
    k = np.arange(order // 2)
    return tuple(-2 * np.cos(np.pi * (2 * k + order + 1) / (2 * order)))


def _band_u(kind: str, w: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """The prototype's frequency ``u`` (real) at pre-warped frequencies ``w`` ``(K,)`` for edges
    ``tan(pi f / sr)`` ``(N, 1)`` or ``(N, 2)``: ``(N, K)``, held within ``±MAX_U``."""
    if kind == "lowpass":
        u = w / edges[:, :1]
    elif kind == "highpass":
        u = -edges[:, :1] / w
    else:
        w1, w2 = edges[:, :1], edges[:, 1:]
        u = (w * w - w1 * w2) / ((w2 - w1) * w)
        if kind == "bandstop":
            u = -1 / u
    return torch.nan_to_num(u, nan=MAX_U).clamp_(-MAX_U, MAX_U)


def _inverse_prototype(u: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of ``1 / B(j u)``, ``B`` the Butterworth polynomial of ``order``,
    at real ``u`` (any shape): ``B(j u)`` as the product over its pole pairs ``(1 - u^2) + j c u``
    (``_pair_damping``), times ``1 + j u`` for an odd order, then inverted once."""
    damping = _pair_damping(order)
    shared = torch.addcmul(torch.ones((), dtype=u.dtype, device=u.device), u, u, value=-1)  # 1 - u^2
    if order % 2:  # start from the real pole's factor, or from the first pair's
        real, imag, pairs = torch.ones_like(u), u, damping
    else:
        real, imag, pairs = shared, damping[0] * u, damping[1:]
    for c in pairs:  # (real + j imag) (shared + j c u)
        cu = c * u
        real, imag = torch.addcmul(real * shared, imag, cu, value=-1), torch.addcmul(imag * shared, real, cu)
    norm = torch.addcmul(real * real, imag, imag)
    return real / norm, imag.neg_().div_(norm)


def butterworth_response(kind: str, order: torch.Tensor, edges_hz: torch.Tensor, sample_rate: int,
                         n_fft: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Frequency response of digital Butterworth filters on the ``n_fft``-point real-FFT grid.

    What ``scipy.signal.butter(order, edges_hz, kind, fs=sample_rate)`` + ``freqz`` give, from a
    closed form: the bilinear transform maps bin frequency ``f`` to the pre-warped
    ``w = tan(pi f / sample_rate)``, the band transform maps ``w`` to a real ``u`` — ``w / w_c``
    (low-pass), ``-w_c / w`` (high-pass), ``(w^2 - w_1 w_2) / ((w_2 - w_1) w)`` (band-pass),
    ``(w_2 - w_1) w / (w_1 w_2 - w^2)`` (band-stop) — and ``H = 1 / B(j u)`` with ``B`` the
    Butterworth polynomial of the order (``|H|^2 = 1 / (1 + u^(2 order))``), as a product over its
    pole pairs (``_inverse_prototype``), the examples of each order together.

    Args:
        kind (str): ``"lowpass"``, ``"highpass"``, ``"bandpass"`` or ``"bandstop"``.
        order (Tensor): ``(N,)`` integer orders in [1, 12] (band filters have twice as many poles).
        edges_hz (Tensor): ``(N, 1)`` cutoffs or ``(N, 2)`` band edges in Hz (``filter_edges_hz``).
        sample_rate (int): Hz.
        n_fft (int): frequencies ``k * sample_rate / n_fft``, ``k = 0 .. n_fft // 2``.
        dtype: ``torch.float64`` (default) or ``torch.float32``, the precision of the product
            (``u`` is found in float64). In float32 ``|u|`` is held below ``10 ** (18 / order)``
            so that ``|B|^2`` stays finite: ``|H|`` is then at most 1e-18 instead of smaller.

    Returns:
        ``(N, n_fft // 2 + 1)`` complex128 (complex64 for ``dtype=torch.float32``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    device = edges_hz.device
    k = torch.arange(n_fft // 2 + 1, device=device, dtype=torch.float64)
    w = torch.tan(torch.pi * k / n_fft)  # pre-warped bin frequencies (Nyquist: ~1.6e16)
    u = _band_u(kind, w, torch.tan(torch.pi * edges_hz.double() / sample_rate))
    out = torch.empty(u.shape, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64, device=device)
    parts = torch.view_as_real(out)
    orders = order.tolist()
    for n in sorted(set(orders)):
        limit = MAX_U if dtype == torch.float64 else min(MAX_U, 10.0 ** (18 / n))
        if len(orders) == orders.count(n):  # one order for all: no gathering
            real, imag = _inverse_prototype(u.clamp(-limit, limit).to(dtype), n)
            parts[..., 0], parts[..., 1] = real, imag
            continue
        rows = (order == n).nonzero().squeeze(1)
        real, imag = _inverse_prototype(u.index_select(0, rows).clamp_(-limit, limit).to(dtype), n)
        parts.index_copy_(0, rows, torch.stack([real, imag], -1))
    return out


def _ring_samples(kind: str, order: torch.Tensor, edges_hz: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(N,)`` int64: samples until the slowest-decaying pole of each filter has rung down to
    ``RING_TOLERANCE`` (at most ``MAX_RING_SAMPLES``): from the poles of the analog prototype,
    mapped through the band transform and the bilinear transform (``fs = 2``, as scipy does)."""
    n_max = int(order.max())
    k = torch.arange(n_max, dtype=torch.float64, device=order.device)
    proto = torch.exp(1j * torch.pi * (2 * k[None, :] + order.double()[:, None] + 1) / (2 * order.double()[:, None]))
    proto = torch.where(k[None, :] < order[:, None], proto, torch.full_like(proto, -1.0))  # unused slots: fast poles
    edges = 4 * torch.tan(torch.pi * edges_hz.double() / sample_rate).to(proto)  # 2 fs tan(pi f / sr), fs = 2
    if kind == "lowpass":
        poles = edges[:, :1] * proto
    elif kind == "highpass":
        poles = edges[:, :1] / proto
    else:
        bw, w0 = edges[:, 1:] - edges[:, :1], (edges[:, :1] * edges[:, 1:]).sqrt()
        half = proto * bw / 2 if kind == "bandpass" else bw / (2 * proto)
        root = torch.sqrt(half * half - w0 * w0)
        poles = torch.cat([half + root, half - root], 1)
    radius = ((4 + poles) / (4 - poles)).abs().amax(1).clamp(min=1e-3)
    samples = torch.ceil(math.log(RING_TOLERANCE) / torch.log(radius)).nan_to_num(MAX_RING_SAMPLES)
    return torch.where(radius < 1, samples.clamp(max=MAX_RING_SAMPLES), MAX_RING_SAMPLES).long()


def _ring_classes(ring: torch.Tensor, time: int) -> list[tuple[int, torch.Tensor]]:
    """The rows grouped by FIR length, ``(taps, rows)``: the taps are the power of two (at least
    64) that a row's ringing ``ring`` ``(N,)`` rounds up to, and, from the longest down, the rows
    of a length join the group above theirs when their convolution of ``time`` samples would
    cost at least ``GROUP_COST_SHARE`` of that group's (``convolution_plan``). So a filter that
    rings briefly is not convolved at the length the slowest one of the batch needs (HighPass:
    20 Hz cutoffs ring for ~6000 samples, 2 kHz ones for ~60), while lengths that cost about the
    same stay one group (each group costs a gather and a scatter of its rows)."""
    taps = torch.pow(2, torch.ceil(torch.log2(ring.double().clamp(min=64)))).long()
    values = taps.unique().tolist()
    groups: dict[int, list[int]] = {values[-1]: []}
    leader = values[-1]
    for t in reversed(values):
        if convolution_plan(time, t, time)[1] < GROUP_COST_SHARE * convolution_plan(time, leader, time)[1]:
            leader = t
        groups.setdefault(leader, []).append(t)
    return [(t, torch.isin(taps, torch.tensor(members)).nonzero().squeeze(1)) for t, members in groups.items()]


class ButterworthFilter(Augmentation):
    """A Butterworth filter of ``kind`` with per-example frequencies and orders (see the module doc).

    Each example is convolved, by FFT, with the impulse response of the digital Butterworth filter
    of its drawn order and corner frequencies: the inverse FFT of its exact frequency response
    (that of ``scipy.signal.butter(order, edges, kind, fs=sample_rate)``, ``butterworth_response``,
    in the batch's precision: float32 for float32 input) on a grid long enough for the filter to
    ring down to -160 dB (``_ring_samples``) — the approach of ``RandomEQ``. Rows whose filters
    ring briefly form groups of their own, transformed at shorter lengths (``_ring_classes``). The
    output is what ``scipy.signal.sosfilt`` gives (causal, the filter's own phase; the filter
    starts at rest) to that precision, batched over examples on any device without a sequential
    loop over time. The roll-off is ``6 * order`` dB per octave (band filters: on each side).

    Use the subclasses ``LowPass``, ``HighPass``, ``BandPass``, ``BandStop``.
    """

    kind = "lowpass"

    def _setup(self, sample_rate: int, order, p: float) -> None:
        Augmentation.__init__(self, p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.order = check_int_range("order", order, low=1, high=MAX_ORDER)
        self._hz = dict(low=0.0, low_inclusive=False, high=self.sample_rate / 2, high_inclusive=False, unit="Hz")

    def _draw(self, batch, generator, device):
        order = torch.randint(self.order[0], self.order[1] + 1, (batch,), generator=generator, device=device)
        if self.kind in ("lowpass", "highpass"):
            return {"cutoff_hz": log_uniform(*self.cutoff_hz, (batch,), generator, device), "order": order}
        return {"centre_hz": log_uniform(*self.centre_hz, (batch,), generator, device),
                "bandwidth_octaves": uniform(*self.bandwidth_octaves, (batch,), generator, device),
                "order": order}

    def to_config(self) -> dict:
        """As ``Augmentation.to_config``; a sample-rate-dependent default range is written as ``null``
        (so that the chain loads at any rate)."""
        cfg = super().to_config()
        if getattr(self, "_defaulted", False):
            cfg["cutoff_hz" if self.kind in ("lowpass", "highpass") else "centre_hz"] = None
        return cfg

    def response(self, params: dict, n_fft: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``H`` ``(B, n_fft // 2 + 1)`` of the filters ``params`` describe (applied or not): complex128,
        or complex64 for ``dtype=torch.float32`` (see ``butterworth_response``)."""
        return butterworth_response(self.kind, params["order"], filter_edges_hz(self.kind, params, self.sample_rate),
                                    self.sample_rate, n_fft, dtype)

    def impulse_response(self, params: dict, taps: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The filters' impulse responses folded onto ``taps`` samples, ``(B, taps)`` of ``dtype``
        (float64 or float32): the inverse real FFT of ``response`` on a ``taps``-point grid (once
        they have rung down within ``taps`` samples, their impulse responses to that precision)."""
        return torch.fft.irfft(self.response(params, taps, dtype), n=taps)

    def _transform(self, x, params, lengths):
        edges = filter_edges_hz(self.kind, params, self.sample_rate)
        real = x.dtype if x.dtype == torch.float64 else torch.float32
        classes = _ring_classes(_ring_samples(self.kind, params["order"].cpu(), edges.cpu(), self.sample_rate),
                                x.shape[-1])
        if len(classes) == 1:
            fir = self.impulse_response(params, classes[0][0], real)
            return fft_convolve(x, fir[:, None, :], keep=x.shape[-1])
        y = torch.empty_like(x)  # each group of rows at its own FFT length
        for taps, rows in classes:
            rows = rows.to(x.device)
            fir = self.impulse_response(params_select(params, rows), taps, real)
            y.index_copy_(0, rows, fft_convolve(x.index_select(0, rows), fir[:, None, :], keep=x.shape[-1]))
        return y

    def describe(self, params, index):
        order = int(params["order"][index])
        if self.kind in ("lowpass", "highpass"):
            where = f"{float(params['cutoff_hz'][index]):.0f} Hz"
        else:
            lo, hi = filter_edges_hz(self.kind, {k: v[index:index + 1] for k, v in params.items()},
                                     self.sample_rate)[0].tolist()
            where = f"{lo:.0f}-{hi:.0f} Hz"
        return f"{where}, {6 * order} dB/oct"


class LowPass(ButterworthFilter):
    """Butterworth low-pass at a cutoff drawn evenly on a log scale (see ``ButterworthFilter``).

    Args:
        sample_rate (int): Hz.
        cutoff_hz ((min, max) in Hz, below Nyquist): -3 dB frequency. Default
            (1000, min(7500, 0.45 sample_rate)).
        order (int or (min, max) ints in [1, 12]): roll-off ``6 * order`` dB/octave, drawn evenly.
            Default (2, 4) (12 to 24 dB/octave).
        p (float): per-example probability. Default 0.5.

    Params: ``cutoff_hz`` ``(B,)``, ``order`` ``(B,)`` int64.
    """

    kind = "lowpass"
    param_keys = ("cutoff_hz", "order")

    def __init__(self, sample_rate: int, cutoff_hz=None, order=(2, 4), p: float = 0.5):
        self._setup(sample_rate, order, p)
        default = (min(1000.0, 0.2 * self.sample_rate), min(7500.0, 0.45 * self.sample_rate))
        self._defaulted = cutoff_hz is None
        self.cutoff_hz = check_range("cutoff_hz", default if cutoff_hz is None else cutoff_hz, **self._hz)


class HighPass(ButterworthFilter):
    """Butterworth high-pass at a cutoff drawn evenly on a log scale (see ``ButterworthFilter``).

    Args:
        sample_rate (int): Hz.
        cutoff_hz ((min, max) in Hz, below Nyquist): -3 dB frequency. Default
            (min(20, 0.01 sample_rate), min(2400, 0.3 sample_rate)): (20, 2400) from 8 kHz up,
            scaled down with the rate below (a 4 kHz rate: (20, 1200)).
        order (int or (min, max) ints in [1, 12]): roll-off ``6 * order`` dB/octave. Default (2, 4).
        p (float): per-example probability. Default 0.5.

    Params: ``cutoff_hz`` ``(B,)``, ``order`` ``(B,)`` int64.
    """

    kind = "highpass"
    param_keys = ("cutoff_hz", "order")

    def __init__(self, sample_rate: int, cutoff_hz=None, order=(2, 4), p: float = 0.5):
        self._setup(sample_rate, order, p)
        default = (min(20.0, 0.01 * self.sample_rate), min(2400.0, 0.3 * self.sample_rate))
        self._defaulted = cutoff_hz is None
        self.cutoff_hz = check_range("cutoff_hz", default if cutoff_hz is None else cutoff_hz, **self._hz)


class _BandFilter(ButterworthFilter):
    param_keys = ("centre_hz", "bandwidth_octaves", "order")

    def __init__(self, sample_rate: int, centre_hz=None, bandwidth_octaves=(0.5, 2.0), order=(2, 4),
                 p: float = 0.5):
        self._setup(sample_rate, order, p)
        self._defaulted = centre_hz is None
        default = (min(200.0, 0.05 * self.sample_rate), min(4000.0, 0.3 * self.sample_rate))
        self.centre_hz = check_range("centre_hz", default if centre_hz is None else centre_hz,
                                     **{**self._hz, "high": EDGE_LIMIT * self.sample_rate})  # the edges' limit
        self.bandwidth_octaves = check_range("bandwidth_octaves", bandwidth_octaves, low=0.0, low_inclusive=False,
                                             high=10.0, unit="octaves")


class BandPass(_BandFilter):
    """Butterworth band-pass around a centre drawn evenly on a log scale (see ``ButterworthFilter``).

    The band's edges are ``centre_hz * 2 ** (∓ bandwidth_octaves / 2)`` (the upper one held below
    0.49 sample_rate); outside them the response falls by ``6 * order`` dB/octave.

    Args:
        sample_rate (int): Hz.
        centre_hz ((min, max) in Hz, below 0.49 sample_rate): geometric centre of the band.
            Default (min(200, 0.05 sample_rate), min(4000, 0.3 sample_rate)).
        bandwidth_octaves ((min, max), > 0): width of the band in octaves. Default (0.5, 2).
        order (int or (min, max) ints in [1, 12]): order of the prototype (the filter has twice as
            many poles); 6 * order dB/octave on each side. Default (2, 4).
        p (float): per-example probability. Default 0.5.

    Params: ``centre_hz``, ``bandwidth_octaves`` ``(B,)``, ``order`` ``(B,)`` int64.
    """

    kind = "bandpass"


class BandStop(_BandFilter):
    """Butterworth band-stop (notch for narrow bands) around a centre drawn evenly on a log scale.

    Same parameters as ``BandPass``; the band between the edges is removed (``H = 0`` at the
    geometric centre of the pre-warped edges).
    """

    kind = "bandstop"
