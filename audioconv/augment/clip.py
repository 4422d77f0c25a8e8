"""Hard clipping at a drawn level: relative to each example's peak, or at a drawn percentile."""
from __future__ import annotations

import numpy as np
import torch

from .base import Augmentation, uniform
from .dsp import finite_rows, real_peak
from .validation import check_range

__all__ = ["Clip", "clip_threshold"]


def _real_magnitudes(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """``|x|`` flattened per example ``(N, C * T)``, with padding (samples ``lengths[n]`` on) set to -1."""
    magnitude = x.abs()
    if lengths is not None:
        real = torch.arange(x.shape[-1], device=x.device) < lengths[:, None]
        magnitude = torch.where(real[:, None, :], magnitude, -torch.ones((), dtype=x.dtype, device=x.device))
    return magnitude.reshape(x.shape[0], -1)


def clip_threshold(x: torch.Tensor, params: dict, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The clipping level of each example ``(N,)`` (in ``x``'s units) that a ``Clip`` draw describes.

    ``threshold_db``: ``peak * 10 ** (threshold_db / 20)``, ``peak`` the largest ``|x|`` over the
    example's channels and real samples. ``percentile``: the ``k``-th smallest of those ``n``
    magnitudes with ``k = max(1, ceil((1 - percentile / 100) * n))`` (numpy's
    ``np.percentile(|x|, 100 - percentile, method="inverted_cdf")``), so that ``percentile`` % of
    the samples lie above it (fewer when values repeat).

    Args:
        x: ``(N, C, T)``. params: ``{"threshold_db": (N,)}`` or ``{"percentile": (N,)}``.
        lengths: ``(N,)`` real samples per example, or None (all).
    """
    if "threshold_db" in params:
        return real_peak(x, lengths) * 10.0 ** (params["threshold_db"].to(x.dtype) / 20)
    magnitude = _real_magnitudes(x, lengths)
    count = magnitude.shape[1] if lengths is None else lengths * x.shape[1]
    count = torch.as_tensor(count, device=x.device)
    keep = 1.0 - params["percentile"].double() / 100
    k = torch.ceil(keep * count).long().clamp(min=1)  # k-th smallest of the real magnitudes
    k = (k + (magnitude.shape[1] - count)).clamp(max=magnitude.shape[1])  # the padding (-1) sorts first
    if magnitude.device.type == "cpu" and not magnitude.requires_grad:  # numpy's introselect: 10x torch's
        rows = magnitude.numpy()
        out = torch.tensor([np.partition(row, rank - 1)[rank - 1] for row, rank in zip(rows, k.tolist())],
                           dtype=x.dtype)
    else:
        out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        for value in k.unique().tolist():  # one selection per distinct rank (one for a fixed percentile)
            rows = (k == value).nonzero().squeeze(1)
            out[rows] = torch.kthvalue(magnitude[rows], int(value), dim=1).values
    finite = finite_rows(magnitude)  # NaN or inf stays so: no finite level for such an example
    return torch.where(finite, out.clamp(min=0), torch.full_like(out, float("inf")))


class Clip(Augmentation):
    """Hard-clip each example at a drawn level: ``y = clamp(x, -t, t)``.

    The level ``t`` is set, per example, in one of two ways (see ``clip_threshold``):

    * ``threshold_db`` (default): ``t = peak * 10 ** (threshold_db / 20)``, dB below the example's
      own peak (its largest ``|x|`` over channels and real samples), so the same draw clips a
      quiet and a loud recording alike.
    * ``percentile``: ``t`` is the magnitude exceeded by that percentage of the example's real
      samples (both signs together), as in audiomentations' ``ClippingDistortion``.
      One exact selection per example (numpy's ``partition`` on the CPU, ``torch.kthvalue`` on other
      devices and under autograd): slower than ``threshold_db``.

    Nothing is rescaled afterwards: the clipped example is quieter than before.

    Args:
        threshold_db ((min, max) in dB, <= 0): clipping level relative to the peak, drawn evenly.
            Default (-20, -1).
        percentile ((min, max) in %, in [0, 100]): instead of ``threshold_db``, the share of
            samples to clip, drawn evenly. Default None.
        p (float): per-example probability. Default 0.5.

    Params: ``threshold_db`` or ``percentile`` ``(B,)``.
    """

    def __init__(self, threshold_db=(-20.0, -1.0), percentile=None, p: float = 0.5):
        super().__init__(p)
        if percentile is not None:
            self.percentile = check_range("percentile", percentile, low=0.0, high=100.0, unit="%")
            self.threshold_db = None
            self.param_keys = ("percentile",)
        else:
            if threshold_db is None:
                raise ValueError("Clip needs threshold_db or percentile; both are None")
            self.threshold_db = check_range("threshold_db", threshold_db, high=0.0, unit="dB")
            self.percentile = None
            self.param_keys = ("threshold_db",)

    def _draw(self, batch, generator, device):
        key = self.param_keys[0]
        return {key: uniform(*getattr(self, key), (batch,), generator, device)}

    def _transform(self, x, params, lengths):
        threshold = clip_threshold(x, params, lengths)[:, None, None]
        if x.requires_grad:
            return torch.clamp(x, min=-threshold, max=threshold)
        # the same values; clamp between per-row tensor bounds took twice as long on the CPU
        y = torch.maximum(x, threshold.neg())
        return torch.minimum(y, threshold, out=y)

    def describe(self, params, index):
        if "percentile" in params:
            return f"{float(params['percentile'][index]):.1f} % clipped"
        return f"at {float(params['threshold_db'][index]):.1f} dB re peak"
