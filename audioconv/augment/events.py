"""Short sound events (door slams, barks, beeps …) added at drawn times and signal-to-event ratios."""
from __future__ import annotations

import math

import torch

from .base import Augmentation, uniform
from .clips import ClipBank, ClipSource
from .dsp import gain_to_power, mean_power
from .validation import check_int_range, check_number, check_range, check_sample_rate

__all__ = ["AddEvents", "add_at"]


class AddEvents(Augmentation):
    """Add ``n`` short events, excerpts of recorded clips, at random times over each example.

    Per example: the number of events drawn evenly among the integers in ``n``; per event a clip
    of the bank (evenly), an excerpt of it lasting ``duration_s`` (drawn evenly; the whole clip
    when it is shorter) at a drawn place in the clip, a start time drawn evenly over the
    example's real samples (an event that runs past their end is cut there), and a
    signal-to-event ratio drawn evenly in ``snr_db``: the example's mean power (over its real
    samples) over the event's (over the excerpt's own samples) — each event is as loud relative
    to the example as its draw says, however long it is. Excerpts get ``fade_s`` raised-cosine
    fades at both ends (no clicks). Events are mono and added to every channel; a silent example
    gets none; padding gets none.

    Args:
        sample_rate (int): Hz; the bank is resampled to it.
        background: the event recordings — a tensor ``(samples,)`` / ``(clips, samples)`` at
            ``sample_rate``, a list of tensors or audio paths, a folder or a ``.jsonl`` manifest
            (``audio_filepath`` relative to its folder); decoded once (mono), cached per device.
        n (int or (min, max) ints in [0, 16]): events per example. Default (1, 4).
        snr_db ((min, max) in dB): signal-to-event ratios. Default (0, 20).
        duration_s ((min, max) in s, > 0): excerpt lengths. Default (0.1, 1.0).
        fade_s (float >= 0): fade in and out of each excerpt, seconds. Default 0.01.
        p (float): per-example probability. Default 0.5.

    Params: ``n`` ``(B,)`` int64; ``event_index`` ``(B, max n)`` int64; ``event_pos`` (place in the
    clip, in [0, 1)), ``start_pos`` (place in the example, in [0, 1)), ``duration_s``, ``snr_db``
    ``(B, max n)`` (the slots from ``n[b]`` on are unused).
    """

    param_keys = ("n", "event_index", "event_pos", "start_pos", "duration_s", "snr_db")

    def __init__(self, sample_rate: int, background: ClipSource, n=(1, 4), snr_db=(0.0, 20.0),
                 duration_s=(0.1, 1.0), fade_s: float = 0.01, p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        if background is None:
            raise ValueError("background must name the event recordings (tensors, files, a folder or a manifest)")
        self.background = background
        self._bank = ClipBank(background, self.sample_rate, "background")
        self.n = check_int_range("n", n, low=0, high=16)
        self.snr_db = check_range("snr_db", snr_db, unit="dB")
        self.duration_s = check_range("duration_s", duration_s, low=0.0, low_inclusive=False, unit="s")
        self.fade_s = check_number("fade_s", fade_s, low=0.0, unit="s")

    def _draw(self, batch, generator, device):
        slots = (batch, max(self.n[1], 1))
        return {"n": torch.randint(self.n[0], self.n[1] + 1, (batch,), generator=generator, device=device),
                "event_index": torch.randint(len(self._bank), slots, generator=generator, device=device),
                "event_pos": torch.rand(slots, generator=generator, device=device),
                "start_pos": torch.rand(slots, generator=generator, device=device),
                "duration_s": uniform(*self.duration_s, slots, generator, device),
                "snr_db": uniform(*self.snr_db, slots, generator, device)}

    def _padded_signal(self, device, dtype, width: int) -> torch.Tensor:
        """The bank's clips end to end followed by ``width`` zeros (cached per device, dtype and width),
        so that a window of ``width`` samples from any place in it reads contiguous memory."""
        key = (str(device), dtype, width)
        cache = self.__dict__.setdefault("_padded", {})
        if key not in cache:
            signal = self._bank.signal(device, dtype)
            cache.clear()
            cache[key] = torch.cat([signal, signal.new_zeros(width)])
        return cache[key]

    def __getstate__(self):  # picklable without the padded copies (rebuilt on first use)
        state = dict(self.__dict__)
        state.pop("_padded", None)
        return state

    def events_for(self, params, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """The faded excerpts ``(*S, E)`` (``E``: the longest excerpt the range and the bank allow)
        and their lengths ``S`` int64 that ``params`` (``event_index``, ``event_pos``,
        ``duration_s`` of one shape ``S``, e.g. ``(B, K)``, on the target device) pick; unscaled."""
        device = params["event_pos"].device
        starts, lengths = self._bank.layout(device)
        clip_start, clip_len = starts[params["event_index"]], lengths[params["event_index"]]  # (B, K)
        width = min(math.ceil(self.duration_s[1] * self.sample_rate), int(lengths.max()))
        length = torch.minimum(torch.round(params["duration_s"].double() * self.sample_rate).long().clamp(min=1),
                               clip_len)
        first = clip_start + (params["event_pos"].double() * (clip_len - length + 1)).long()  # (B, K)
        windows = self._padded_signal(device, dtype, width).unfold(0, width, 1)  # (N + 1, E) views
        excerpts = windows.index_select(0, first.reshape(-1)).reshape(*first.shape, width)  # row copies
        return self._fade(excerpts, length), length

    def _fade(self, excerpts: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """``excerpts`` ``(*S, E)`` zeroed from ``length`` ``S`` on and faded in place:
        ``sin^2(pi / 2 * clamp(min(t + 0.5, length - 0.5 - t) / fade, 0, 1))`` at sample ``t``,
        ``fade`` the fade in samples. That is 1 away from the ends, so it is computed only for
        the first and the last ``ceil(fade)`` samples of each excerpt (gathered, scaled, written
        back): the whole excerpt is touched once, by the cut at its length."""
        width = excerpts.shape[-1]
        t = torch.arange(width, device=excerpts.device)
        excerpts.masked_fill_(t >= length[..., None], 0)
        fade = max(self.fade_s * self.sample_rate, 1e-9)
        edge = torch.arange(min(math.ceil(fade), width), device=excerpts.device)
        where = torch.cat([edge.expand(*length.shape, -1), length[..., None] - edge.flip(0) - 1], -1).clamp_(0, width - 1)
        dtype = excerpts.dtype
        ramp = torch.minimum(where.to(dtype) + 0.5, length[..., None].to(dtype) - 0.5 - where).div_(fade)
        envelope = ramp.clamp_(0, 1).mul_(torch.pi / 2).sin_().square_()  # positions in both ends: same value
        return excerpts.scatter_(-1, where, excerpts.gather(-1, where).mul_(envelope))

    def _transform(self, x, params, lengths):
        batch, _, time = x.shape
        real = lengths if lengths is not None else torch.full((batch,), time, device=x.device)
        slots = torch.arange(params["event_index"].shape[1], device=x.device)
        used = ((slots < params["n"][:, None]) & (real[:, None] > 0)).reshape(-1).nonzero().squeeze(1)  # (M,)
        picked = {key: params[key].reshape(-1)[used] for key in self.param_keys[1:]}  # the used slots' draws
        row = torch.div(used, len(slots), rounding_mode="floor")  # (M,) the example of each event
        events, length = self.events_for(picked, x.dtype)  # (M, E), (M,)
        power = torch.linalg.vector_norm(events, dim=-1).square() / length.to(x.dtype)  # over the excerpt's samples
        target = mean_power(x, lengths)[row] * 10.0 ** (-picked["snr_db"].to(x.dtype) / 10)
        start = (picked["start_pos"].double() * real[row]).long()  # (M,), below the real end
        events.mul_(gain_to_power(target, power)[:, None])  # 0 for a silent example
        return add_at(x, row, start, events, length)

    def describe(self, params, index):
        count = int(params["n"][index])
        if count == 0:
            return "no events"
        low, high = (round(float(v)) for v in params["snr_db"][index, :count].aminmax())
        snr = f"{low}" if low == high else f"{low}-{high}"
        return f"{count} event{'s' if count > 1 else ''}, SNR {snr} dB"


def add_at(x: torch.Tensor, row: torch.Tensor, start: torch.Tensor, events: torch.Tensor,
           length: torch.Tensor, one_by_one: bool | None = None) -> torch.Tensor:
    """``x`` ``(B, C, T)`` plus, for each event ``m``, ``events[m, :length[m]]`` (mono, to every
    channel) added to example ``row[m]`` from sample ``start[m]`` on (cut at ``T``); new memory.

    On the CPU the events are added one by one into a copy of ``x`` (slices of the rows, no
    scratch memory: 3-4x faster there than the batched form). Elsewhere, in one call: each event
    goes into a zero row of ``T + E`` samples through an (overlapping) view of that memory as
    windows of ``E`` samples, where ``index_add_`` adds element by element, so events that overlap
    in time sum.

    Args:
        row, start, length: ``(M,)`` ints. events: ``(M, E)``, zero from ``length[m]`` on.
        one_by_one (bool or None): the event-by-event form; default: on the CPU.
    """
    batch, _, time = x.shape
    if x.device.type == "cpu" if one_by_one is None else one_by_one:
        y = x.clone()
        for m, (b, first, count) in enumerate(zip(row.tolist(), start.tolist(), length.tolist())):
            count = min(count, time - first)
            y[b, :, first:first + count] += events[m, :count]
        return y
    width = events.shape[-1]
    added = torch.zeros(batch, time + width, dtype=x.dtype, device=x.device)
    added.view(-1).unfold(0, width, 1).index_add_(0, row * (time + width) + start, events)
    return x + added[:, None, :time]
