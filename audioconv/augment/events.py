"""Short sound events (door slams, barks, beeps …) added at drawn times and signal-to-event ratios."""
from __future__ import annotations

import math

import torch

from .base import Augmentation, uniform
from .clips import ClipBank, ClipSource
from .dsp import gain_to_power, mean_power
from .validation import check_int_range, check_range, check_sample_rate

__all__ = ["AddEvents"]


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
        self.fade_s = check_range("fade_s", fade_s, low=0.0, unit="s")[0]

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
        """The faded excerpts ``(B, K, E)`` (``E``: the longest excerpt the range and the bank allow)
        and their lengths ``(B, K)`` int64 that ``params`` (on the target device) pick; unscaled."""
        device = params["event_pos"].device
        starts, lengths = self._bank.layout(device)
        clip_start, clip_len = starts[params["event_index"]], lengths[params["event_index"]]  # (B, K)
        width = min(math.ceil(self.duration_s[1] * self.sample_rate), int(lengths.max()))
        length = torch.minimum(torch.round(params["duration_s"].double() * self.sample_rate).long().clamp(min=1),
                               clip_len)
        first = clip_start + (params["event_pos"].double() * (clip_len - length + 1)).long()  # (B, K)
        windows = self._padded_signal(device, dtype, width).unfold(0, width, 1)  # (N + 1, E) views
        excerpts = windows.index_select(0, first.reshape(-1)).reshape(*first.shape, width)  # row copies
        t = torch.arange(width, device=device, dtype=dtype)
        fade = max(self.fade_s * self.sample_rate, 1e-9)
        ramp = torch.minimum((t + 0.5) / fade, (length[..., None].to(dtype) - 0.5 - t).div_(fade))
        envelope = ramp.clamp_(0, 1).mul_(torch.pi / 2).sin_().square_()  # sin^2 fades; 0 past the end
        return excerpts.mul_(envelope), length

    def _transform(self, x, params, lengths):
        batch, _, time = x.shape
        events, length = self.events_for(params, x.dtype)  # (N, K, E), (N, K)
        slots, width = events.shape[1:]
        real = lengths if lengths is not None else torch.full((batch,), time, device=x.device)
        used = (torch.arange(slots, device=x.device) < params["n"][:, None]) & (real[:, None] > 0)
        power = events.square().sum(-1) / length.to(x.dtype)  # (N, K) over each excerpt's own samples
        target = mean_power(x, lengths)[:, None] * 10.0 ** (-params["snr_db"].to(x.dtype) / 10)
        gain = gain_to_power(target, power) * used  # (N, K); 0 for unused slots and silent examples
        start = (params["start_pos"].double() * real[:, None]).long()  # (N, K)
        where = start[..., None] + torch.arange(width, device=x.device)  # (N, K, E) sample indices
        events.mul_(gain[..., None]).mul_(where < real[:, None, None])  # nothing past the real samples
        added = torch.zeros(batch, time + 1, dtype=x.dtype, device=x.device)  # sample `time` takes the overflow
        added.scatter_add_(1, where.clamp_(max=time).reshape(batch, -1), events.reshape(batch, -1))
        return x + added[:, None, :time]

    def describe(self, params, index):
        count = int(params["n"][index])
        if count == 0:
            return "no events"
        snr = params["snr_db"][index, :count]
        return f"{count} event{'s' if count > 1 else ''}, SNR {float(snr.min()):.0f}-{float(snr.max()):.0f} dB"
