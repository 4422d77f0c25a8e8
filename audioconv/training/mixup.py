"""Mixup with label mixing (Zhang et al. 2018), on the model's input: the log-mel batch.

Each example ``i`` of a batch is mixed with a partner ``π(i)`` (a random permutation of the batch)
by its own weight ``λ_i ~ Beta(α, α)``:

    x̃_i = λ_i · x_i + (1 − λ_i) · x_π(i),     loss = mean_i [λ_i · CE(z_i, y_i) + (1 − λ_i) · CE(z_i, y_π(i))],

with CE the trainer's label-smoothed cross-entropy, so label smoothing is kept for both labels.
With one ``λ`` for the whole batch this is the familiar ``λ·CE(y_a) + (1 − λ)·CE(y_b)``; one per
example (as PANNs do) is a lower-variance estimate of the same expected loss and follows the
package's rule of per-example random parameters.

Why the log-mel and not the waveform: mixup assumes the model should behave linearly *between
its training inputs*, and the model's input is the log-mel. The front end's logarithm is far from
linear: a waveform mixture's log-mel is close to the louder source's (≈ max of the two in each
cell), so a label weight ``λ`` would not describe what the model sees. Mixing after the waveform
chain, the front end and SpecAugment interpolates exactly between two augmented inputs.
(Mixing waveforms at a chosen SNR while keeping the label is what ``BatchMix`` does; it stays
label-preserving.)

Randomness: ``λ`` and ``π`` come from a CPU ``torch.Generator`` the caller seeds (the trainer: per
step from ``(seed, rank, step)``); ``λ`` is the inverse Beta CDF (``scipy.special.betaincinv``)
of one uniform draw per example, an exact Beta sample with a fixed number of draws.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["MixDraw", "draw_mixup", "mix_inputs", "mixup_loss", "mixup_correct"]


class MixDraw(NamedTuple):
    """One batch's mixup draw: ``weight`` ``(B,)`` float64 ``λ_i`` (cast where it is used: float32
    cannot hold a ``λ`` within 6e-8 of 1, which a small ``α`` draws often), ``partner`` ``(B,)`` int64 ``π(i)``."""

    weight: torch.Tensor
    partner: torch.Tensor


def draw_mixup(batch: int, alpha: float, generator: torch.Generator, device: torch.device | str = "cpu") -> MixDraw:
    """Draw ``λ_i ~ Beta(α, α)`` and a partner permutation for a batch of ``batch`` examples.

    Args:
        batch: number of examples.
        alpha: Beta shape ``α > 0`` (small, e.g. 0.2: most ``λ`` near 0 or 1; 1: uniform).
        generator: a CPU ``torch.Generator`` (the only source of randomness).
        device: where the returned tensors live.
    """
    from scipy.special import betaincinv

    if not alpha > 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha!r}")
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    partner = torch.randperm(batch, generator=generator)
    weight = torch.from_numpy(betaincinv(float(alpha), float(alpha), u.numpy()))
    return MixDraw(weight.to(device, non_blocking=True), partner.to(device, non_blocking=True))


def mix_inputs(x: torch.Tensor, draw: MixDraw) -> torch.Tensor:
    """``λ_i · x_i + (1 − λ_i) · x_π(i)`` for ``x`` of shape ``(B, ...)`` (e.g. log-mel ``(B, 1, F, T')``)."""
    lam = draw.weight.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return torch.lerp(x[draw.partner], x, lam)


def mixup_loss(logits: torch.Tensor, y: torch.Tensor, draw: MixDraw | None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over the batch of ``λ_i · CE(z_i, y_i) + (1 − λ_i) · CE(z_i, y_π(i))`` (label-smoothed CE,
    nats); the plain mean cross-entropy when ``draw`` is ``None``.

    Args:
        logits: ``(B, K)``. y: ``(B,)`` class indices. draw: from :func:`draw_mixup`.
        label_smoothing: ``ε`` of ``F.cross_entropy``.
    """
    if draw is None:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    ce_own = F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="none")
    ce_partner = F.cross_entropy(logits, y[draw.partner], label_smoothing=label_smoothing, reduction="none")
    lam = draw.weight.to(ce_own.dtype)
    return (lam * ce_own + (1 - lam) * ce_partner).mean()


def mixup_correct(logits: torch.Tensor, y: torch.Tensor, draw: MixDraw | None) -> torch.Tensor:
    """Right predictions in the batch (0-d int64): a mixed example counts when the prediction is
    its *dominant* label — ``y_i`` when ``λ_i ≥ 0.5``, else ``y_π(i)`` — the target the loss weighs
    most. Without mixup, plain accuracy; a model that always names the dominant label scores 1."""
    pred = logits.argmax(dim=1)
    if draw is None:
        return (pred == y).sum()
    dominant = torch.where(draw.weight >= 0.5, y, y[draw.partner])
    return (pred == dominant).sum()
