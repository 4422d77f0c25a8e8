"""Waveform time masking: short chunks of each example set to silence."""
from __future__ import annotations

import torch

from .base import Augmentation, uniform
from .validation import check_int_range, check_number, check_sample_rate

__all__ = ["TimeMask", "time_mask_spans"]


def time_mask_spans(params: dict, lengths: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, stop)`` ``(N, n_max)`` int64 sample indices of the chunks a ``TimeMask`` draw
    silences (``start == stop`` for the unused slots): chunk ``k`` of an example lasts
    ``round(duration_s * sample_rate)`` samples (at most the example's real length ``L``) and
    starts at ``floor(start_pos * (L - duration + 1))``, so it lies within the real samples."""
    active = torch.arange(params["start_pos"].shape[1], device=lengths.device) < params["n"][:, None]
    real = lengths[:, None]
    width = torch.round(params["duration_s"].double() * sample_rate).long().clamp(min=0)
    width = torch.minimum(width, real) * active
    start = torch.floor(params["start_pos"].double() * (real - width + 1)).long()
    start = torch.minimum(start, real - width)
    return start, start + width


class TimeMask(Augmentation):
    """Silence ``n`` short chunks of each example (waveform time masking, "drop chunk").

    Per example: the number of chunks drawn evenly among the integers in ``n``; each chunk's
    duration evenly in ``[min_s, max_s]`` and its position evenly within the example's real samples
    (chunks may overlap). The samples of a chunk become exactly 0 (no fade), in every channel; the
    rest is untouched (``time_mask_spans`` gives the chunks).

    Args:
        sample_rate (int): Hz.
        max_s (float, > 0): longest chunk in seconds. Default 0.1.
        n (int or (min, max) ints in [0, 64]): chunks per example. Default (1, 3).
        min_s (float, in [0, max_s]): shortest chunk in seconds. Default 0.
        p (float): per-example probability. Default 0.5.

    Params: ``n`` ``(B,)`` int64; ``start_pos`` (in [0, 1)) and ``duration_s`` ``(B, max n)``
    (the slots from ``n[b]`` on are unused).
    """

    param_keys = ("n", "start_pos", "duration_s")

    def __init__(self, sample_rate: int, max_s: float = 0.1, n=(1, 3), min_s: float = 0.0, p: float = 0.5):
        super().__init__(p)
        self.sample_rate = check_sample_rate(sample_rate)
        self.max_s = check_number("max_s", max_s, low=0.0, low_inclusive=False, unit="s")
        self.min_s = check_number("min_s", min_s, low=0.0, high=self.max_s, unit="s")
        self.n = check_int_range("n", n, low=0, high=64)

    def _draw(self, batch, generator, device):
        slots = max(self.n[1], 1)
        return {"n": torch.randint(self.n[0], self.n[1] + 1, (batch,), generator=generator, device=device),
                "start_pos": torch.rand(batch, slots, generator=generator, device=device),
                "duration_s": uniform(self.min_s, self.max_s, (batch, slots), generator, device)}

    def _transform(self, x, params, lengths):
        batch, _, time = x.shape
        real = lengths if lengths is not None else torch.full((batch,), time, device=x.device)
        start, stop = time_mask_spans(params, real, self.sample_rate)
        if x.device.type == "cpu" and not x.requires_grad:  # a few spans: zero them in a copy, no mask
            y = x.clone()
            rows = y.numpy()  # the same memory; numpy's slicing costs a fifth of torch's per span
            for row, first, last in zip(rows, start.tolist(), stop.tolist()):
                for a, b in zip(first, last):
                    if b > a:
                        row[:, a:b] = 0
            return y
        edges = torch.zeros(batch, time + 1, device=x.device, dtype=torch.int32)
        edges.scatter_add_(1, start, torch.ones_like(start, dtype=torch.int32))
        edges.scatter_add_(1, stop, torch.full_like(stop, -1, dtype=torch.int32))
        keep = edges[:, :time].cumsum_(1) == 0  # (N, T): inside no chunk
        return x * keep[:, None, :]

    def describe(self, params, index):
        count = int(params["n"][index])
        total = float(params["duration_s"][index, :count].sum()) if count else 0.0
        return f"{count} gap{'s' if count != 1 else ''}, {total:.2f} s"
