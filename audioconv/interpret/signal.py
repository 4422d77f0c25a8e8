"""Backward signals of K units on windows of one tensor, and the window arithmetic they move by.

The projector's backward pass (:mod:`audioconv.interpret.graph`) carries, for every tensor of the
model's graph, the ``B × K`` backward signals of K units of B inputs at once (:class:`Signal`).
On a 4-D tensor ``(B, C, H, W)`` (the log-mel plane and every feature map) a signal may live on a
*window* of the ``(H, W)`` plane instead of the whole plane: a single-position projection only
depends on that position's receptive field, so its signal is confined to the receptive field's
image in each tensor (the "crop"). Each spatial axis of a window has a start that is either one
int shared by all units (a shared window, e.g. the whole axis) or a ``(B, K)`` long tensor (one
window per unit, all of one size). A window may hang over the border; the cells outside the
tensor are kept at zero (:meth:`Signal.fit`), so the numbers equal the full computation exactly.

How an operation maps windows along one axis (:class:`AxisGeometry`): output cells
``[o, o + n)`` read input cells ``[o·stride − pad, o·stride − pad + (n − 1)·stride + extent)``
(``extent = (kernel − 1)·dilation + 1``; pointwise operations have extent 1, stride 1, pad 0).
:data:`FULL` stands for "the whole input axis" (reductions, broadcasts, operations without a
geometry).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AxisGeometry", "POINTWISE", "FULL", "back_window", "union_windows", "Signal", "merge"]


@dataclass(frozen=True)
class AxisGeometry:
    """How one operation maps positions along one axis (frequency or time).

    Output cell ``o`` reads input cells ``o·stride − pad … o·stride − pad + extent − 1``.
    """

    extent: int  # (kernel − 1) · dilation + 1
    stride: int
    pad: int  # cells of padding before the first input cell

    def back(self, start, size: int):
        """Window ``[start, start + size)`` of output cells → the input window it reads ``(start, size)``."""
        return start * self.stride - self.pad, (size - 1) * self.stride + self.extent


POINTWISE = AxisGeometry(1, 1, 0)
FULL = "full"  # the whole input axis


def back_window(geometry, start, size: int, n_in: int):
    """Output window ``(start, size)`` → input window through ``geometry`` (an AxisGeometry or FULL)."""
    if geometry == FULL:
        return 0, int(n_in)
    return geometry.back(start, size)


def union_windows(windows):
    """Smallest window holding every ``(start, size)`` of ``windows`` along one axis → ``(start, size)``.

    Starts are ints (shared) or ``(B, K)`` long tensors (per unit); a per-unit union has the size
    of the largest union over units (the smaller ones are padded with cells that stay zero).
    """
    if all(isinstance(s, int) for s, _ in windows):
        lo = min(s for s, _ in windows)
        return lo, max(s + n for s, n in windows) - lo
    starts = [s if isinstance(s, torch.Tensor) else torch.as_tensor(s) for s, _ in windows]
    lo = starts[0]
    hi = starts[0] + windows[0][1]
    for s, (_, n) in zip(starts[1:], windows[1:]):
        lo, hi = torch.minimum(lo, s), torch.maximum(hi, s + n)
    return lo, int((hi - lo).max())


def _cells(start, n: int):
    """Cell indices ``(B|1, K|1, n)`` of a window starting at ``start`` (int or ``(B, K)``)."""
    if isinstance(start, int):
        return (torch.arange(n) + start).view(1, 1, n)
    return start.unsqueeze(-1) + torch.arange(n, device=start.device)


def _offset(a, b):
    """``a − b`` for two window starts (ints or tensors): an int when it is the same for every unit."""
    if isinstance(a, int) and isinstance(b, int):
        return a - b
    d = (a if isinstance(a, torch.Tensor) else torch.as_tensor(a)) - b
    lo, hi = int(d.min()), int(d.max())
    return lo if lo == hi else d


class Signal:
    """``B × K`` backward signals on (a window of) one tensor of the graph.

    Attributes:
        g: ``(B, K, *S)`` for a tensor ``(B, *S)``. On a 4-D tensor ``(B, C, H, W)``, ``S`` is
            ``(C', h, w)``: ``C'`` is 1 while ``chan`` is set, ``(h, w)`` the window.
        chan: ``(B, K)`` long, the one channel each unit's signal lives in (until a convolution
            mixes channels), or ``None`` when ``g`` spans all channels.
        start: ``[f0, t0]`` top-left cell of the window on a 4-D tensor, each an int (shared by all
            units) or a ``(B, K)`` long tensor (one window per unit); ``None`` for other tensors
            (whose signal always covers the whole tensor).

    Invariant: ``g`` is zero on cells outside the tensor, and every rule maps a zero to a zero.
    """

    def __init__(self, g: torch.Tensor, chan: torch.Tensor | None = None, start=None, fitted=None):
        self.g, self.chan = g, chan
        self.start = None if start is None else list(start)
        self.fitted = fitted  # the (H, W) the window was last confined to

    @property
    def spatial(self) -> bool:
        return self.start is not None

    @property
    def per_unit(self) -> bool:
        return self.spatial and not all(isinstance(s, int) for s in self.start)

    def same_layout(self, other: "Signal") -> bool:
        """Whether ``other`` lives on the same window and channel set (so the two can be added)."""
        if self.g.shape != other.g.shape or (self.chan is None) != (other.chan is None):
            return False
        if self.chan is not None and self.chan is not other.chan and not torch.equal(self.chan, other.chan):
            return False
        if self.spatial != other.spatial:
            return False
        if not self.spatial:
            return True
        for a, b in zip(self.start, other.start):
            if isinstance(a, int) != isinstance(b, int) or (isinstance(a, int) and a != b):
                return False
            if not isinstance(a, int) and a is not b and not torch.equal(a, b):
                return False
        return True

    # ---- reading forward tensors through the window ---------------------------------------
    def take(self, saved: torch.Tensor) -> torch.Tensor:
        """A forward tensor ``(B, *S)`` of this signal's tensor, seen as the signal sees it.

        Returns ``(B, K|1, C'|C, h, w)`` on a 4-D tensor (cells of a window that hang over the border
        read the nearest border cell; the signal is zero there), else ``(B, 1, *S)``.
        """
        if not self.spatial:
            return saved.unsqueeze(1)
        h, w = self.g.shape[-2:]
        B, _, H, W = saved.shape
        f0, t0 = self.start
        if isinstance(f0, int) and isinstance(t0, int) and f0 >= 0 and t0 >= 0 and f0 + h <= H and t0 + w <= W:
            s = saved[..., f0:f0 + h, t0:t0 + w]
            if self.chan is not None:
                return s[torch.arange(B, device=s.device)[:, None], self.chan].unsqueeze(2)  # (B, K, 1, h, w)
            return s.unsqueeze(1)  # (B, 1, C, h, w)
        dev = saved.device
        r = _cells(f0, h).to(dev).clamp(0, H - 1).unsqueeze(-1)  # (B|1, K|1, h, 1)
        c = _cells(t0, w).to(dev).clamp(0, W - 1).unsqueeze(-2)  # (B|1, K|1, 1, w)
        bi = torch.arange(B, device=dev).view(B, 1, 1, 1)
        if self.chan is not None:
            return saved[bi, self.chan[:, :, None, None], r, c].unsqueeze(2)
        return saved[bi, :, r, c].permute(0, 1, 4, 2, 3)  # (B, K|1, C, h, w)

    # ---- window bookkeeping ---------------------------------------------------------------
    def fit(self, H: int, W: int) -> None:
        """Confine the window to an ``H × W`` tensor: trim a shared axis, zero a per-unit one outside.

        The zeroing is in place: a ``g`` shared by two signals (both branches of an addition) belongs
        to two tensors of one shape, which need the same zeros.
        """
        if not self.spatial or self.fitted == (H, W):
            return
        self.fitted = (H, W)
        for axis, n in ((0, H), (1, W)):
            dim = self.g.dim() - 2 + axis
            size = self.g.shape[dim]
            s = self.start[axis]
            if isinstance(s, int):
                a, b = max(s, 0), min(s + size, n)
                if (a, b) != (s, s + size):
                    self.g = self.g.narrow(dim, a - s, max(b - a, 0))
                    self.start[axis] = a
            elif int(s.min()) < 0 or int(s.max()) + size > n:  # some unit's window hangs over the border
                cells = _cells(s, size)  # (B, K, size)
                inside = ((cells >= 0) & (cells < n)).to(self.g.dtype)
                shape = [inside.shape[0], inside.shape[1], 1, 1, 1]
                shape[dim] = size
                self.g.mul_(inside.view(shape))

    def move(self, geometry, g: torch.Tensor) -> None:
        """Replace ``g`` by the signal on the input window of an operation with per-axis ``geometry``."""
        self.start = [0 if geo == FULL else geo.back(s, 1)[0] for geo, s in zip(geometry, self.start)]
        self.g = g

    def dense(self, n_channels: int) -> "Signal":
        """This signal with ``chan`` spread back over all ``n_channels`` channels (one-hot)."""
        if self.chan is None:
            return self
        B, K, _, h, w = self.g.shape
        g = self.g.new_zeros(B, K, n_channels, h, w)
        g.scatter_(2, self.chan[:, :, None, None, None].expand(B, K, 1, h, w), self.g)
        return Signal(g, None, self.start)

    def repositioned(self, start, size) -> "Signal":
        """This signal pasted into the window ``start = [f0, t0]``, ``size = (h, w)`` (which must hold it)."""
        g = _paste(self.g, _offset(self.start[0], start[0]), _offset(self.start[1], start[1]), *size)
        return Signal(g, self.chan, start)

    def whole(self, shape) -> "Signal":
        """The signal on the whole tensor of ``shape`` ``(B, *S)``: all channels, all cells."""
        if not self.spatial:
            return self
        sig = self.dense(int(shape[1]))
        sig.fit(int(shape[2]), int(shape[3]))
        if all(isinstance(v, int) and v == 0 for v in sig.start) and tuple(sig.g.shape[-2:]) == tuple(shape[2:]):
            return sig
        return sig.repositioned([0, 0], tuple(int(v) for v in shape[2:]))

    def add_to(self, out: torch.Tensor) -> None:
        """Add the (single-channel) signal into ``out`` ``(B, K, H, W)`` (the full plane; may be a view)."""
        H, W = out.shape[-2:]
        self.fit(H, W)
        g = self.g[:, :, 0]
        B, K, h, w = g.shape
        f0, t0 = self.start
        if isinstance(f0, int) and isinstance(t0, int):
            out[..., f0:f0 + h, t0:t0 + w] += g
            return
        dev = g.device
        rows = _cells(f0, h).to(dev).clamp(0, H - 1).unsqueeze(-1)  # zero outside the plane (fit)
        cols = _cells(t0, w).to(dev).clamp(0, W - 1).unsqueeze(-2)
        bi = torch.arange(B, device=dev).view(B, 1, 1, 1)
        ki = torch.arange(K, device=dev).view(1, K, 1, 1)
        out.index_put_((bi, ki, rows, cols), g, accumulate=True)

    def place(self, H: int, W: int) -> torch.Tensor:
        """The signal pasted into the full ``H × W`` plane → ``(B, K, C', H, W)``."""
        self.fit(H, W)
        return _paste(self.g, self.start[0], self.start[1], H, W)


def merge(signals: list[Signal], shape) -> Signal:
    """The sum of several signals on one tensor of ``shape`` (contributions of its consumers)."""
    if len(signals) == 1:
        return signals[0]
    first = signals[0]
    if all(first.same_layout(s) for s in signals[1:]):
        return Signal(sum(s.g for s in signals), first.chan, first.start)
    if not first.spatial:
        return Signal(sum(s.g for s in signals))
    same_chan = all(s.chan is not None for s in signals) and all(
        s.chan is first.chan or torch.equal(s.chan, first.chan) for s in signals[1:])
    if not same_chan:
        signals = [s.dense(int(shape[1])) for s in signals]
    for s in signals:
        s.fit(int(shape[2]), int(shape[3]))
    axes = [union_windows([(s.start[a], s.g.shape[-2 + a]) for s in signals]) for a in (0, 1)]
    start, size = [axes[0][0], axes[1][0]], (axes[0][1], axes[1][1])
    total = None
    for s in signals:
        total = _paste(s.g, _offset(s.start[0], start[0]), _offset(s.start[1], start[1]), *size, into=total)
    return Signal(total, signals[0].chan, start)


def _paste(g: torch.Tensor, off_f, off_t, H: int, W: int, into: torch.Tensor | None = None) -> torch.Tensor:
    """``g`` ``(B, K, C, h, w)`` added at offsets ``(off_f, off_t)`` (ints or ``(B, K)``) into an ``H × W``
    window (``into``, or zeros); cells falling outside are dropped (they hold zeros by the invariant)."""
    B, K, C, h, w = g.shape
    if isinstance(off_f, int) and isinstance(off_t, int):
        a, b = max(off_f, 0), min(off_f + h, H)
        c, d = max(off_t, 0), min(off_t + w, W)
        part = g[..., a - off_f:b - off_f, c - off_t:d - off_t]
        if into is None and (a, b, c, d) == (0, H, 0, W):
            return part.clone()
        out = g.new_zeros(B, K, C, H, W) if into is None else into
        if a < b and c < d:
            out[..., a:b, c:d] += part
        return out
    rows = _cells(off_f, h).to(g.device)  # (B|1, K|1, h)
    cols = _cells(off_t, w).to(g.device)
    valid = (((rows >= 0) & (rows < H)).unsqueeze(-1) & ((cols >= 0) & (cols < W)).unsqueeze(-2))
    idx = rows.clamp(0, H - 1).unsqueeze(-1) * W + cols.clamp(0, W - 1).unsqueeze(-2)  # (B|1, K|1, h, w)
    idx = idx.unsqueeze(2).expand(B, K, C, h, w).reshape(B, K, C, h * w)
    src = (g * valid.unsqueeze(2).to(g.dtype)).reshape(B, K, C, h * w)
    out = g.new_zeros(B, K, C, H, W) if into is None else into
    out.view(B, K, C, H * W).scatter_add_(-1, idx, src)
    return out
