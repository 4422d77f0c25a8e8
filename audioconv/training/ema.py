"""An exponential moving average (EMA) of a model's weights, updated after every optimizer step.

Built on :class:`torch.optim.swa_utils.AveragedModel` (a copy of the model plus a count of the
updates) with a *debiased* average, as Adam debiases its moments (Kingma & Ba 2015, §3): after
``n`` updates with raw weights ``w_1 … w_n`` (``w_k`` = the weights after optimizer step ``k``)
and decay ``δ``, the EMA weights are

    ema_n = Σ_k (1 − δ) · δ^(n−k) · w_k  /  (1 − δ^n),

a weighted mean whose weights sum to one. Update ``k + 1`` is ``ema ← lerp(ema, w, 1 − d_k)`` with
``d_k = δ · (1 − δ^k) / (1 − δ^(k+1))`` (the first update copies the weights). Without the
debiasing, an EMA started from the initial (random) weights still holds ``δ^n`` of them after
``n`` steps — 37 % after ``1/(1−δ)`` steps — and one started at zero is too small by ``1 − δ^n``;
with it, no warm-up setting is needed. The average spans about ``1 / (1 − δ)`` steps
(:func:`horizon_steps`): choose ``δ`` so that this is well below the run's length.

Buffers: floating-point buffers (BatchNorm running mean and variance) are averaged like the
weights, so the EMA model's normalisation statistics follow its weights; integer buffers
(``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

__all__ = ["make_ema", "debiased_decay", "ema_state", "load_ema_state", "horizon_steps", "ema_decay_advice"]


def debiased_decay(decay: float, n_averaged: int) -> float:
    """The share the EMA keeps at update ``n_averaged + 1`` when it already holds ``n_averaged``
    updates: ``δ (1 − δ^n) / (1 − δ^(n+1))`` (0 for the first update: a copy; → ``δ`` as ``n`` grows)."""
    n = int(n_averaged)
    return decay * (1.0 - decay ** n) / (1.0 - decay ** (n + 1))


def _multi_avg_fn(decay: float):
    @torch.no_grad()
    def update(ema_tensors: list[torch.Tensor], tensors: list[torch.Tensor], n_averaged) -> None:
        if torch.is_floating_point(ema_tensors[0]):
            keep = debiased_decay(decay, int(n_averaged))
            torch._foreach_lerp_(ema_tensors, tensors, 1.0 - keep)
        else:  # integer buffers (BatchNorm's num_batches_tracked): the model's own count
            torch._foreach_copy_(ema_tensors, tensors)
    return update


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An EMA of ``model``'s parameters and buffers: ``ema.update_parameters(model)`` after each
    optimizer step; ``ema.module`` is the averaged model (no gradients), on ``model``'s device.

    Args:
        model: the trained model (not a DDP wrapper; its parameters are read, never changed).
        decay: ``δ`` in (0, 1), e.g. 0.999 (an average over about 1000 steps).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
    ema = AveragedModel(model, multi_avg_fn=_multi_avg_fn(float(decay)), use_buffers=True)
    ema.module.requires_grad_(False)
    return ema  # its update count n_averaged stays on the CPU


def ema_state(ema: AveragedModel) -> dict:
    """``{"weights": state_dict of the averaged model, "updates": n}`` for a checkpoint."""
    return {"weights": ema.module.state_dict(), "updates": int(ema.n_averaged)}


def load_ema_state(ema: AveragedModel, state: dict, source: str = "checkpoint") -> None:
    """Restore :func:`ema_state` output bit for bit (a clear error for weights of another shape)."""
    from audioconv.training.checkpoint import load_model_state

    load_model_state(ema.module, state["weights"], source=f"{source} (EMA weights)")
    ema.n_averaged.fill_(int(state["updates"]))


def horizon_steps(decay: float) -> float:
    """``1 / (1 − δ)``: the number of recent steps an EMA of decay ``δ`` mostly averages."""
    return 1.0 / (1.0 - decay)


def ema_decay_advice(decay: float, total_steps: int) -> str | None:
    """A note when the EMA spans more than a fifth of the run (its first fifth then still weighs
    more than ``e^-4`` ≈ 2 % of the final average, the undertrained start included), with the largest
    decay of the form 1 − 10^-k that fits; ``None`` when ``decay`` suits ``total_steps``."""
    if horizon_steps(decay) * 5 <= total_steps:
        return None
    k = max(1, int(math.floor(math.log10(max(total_steps / 5.0, 1.0)))))
    better = 1.0 - 10.0 ** -k
    advice = f"e.g. {better:g}" if better < decay else "or train longer"
    return (f"ema decay {decay:g} averages over about {horizon_steps(decay):.0f} steps (1 / (1 - decay)), more than "
            f"a fifth of this run's {total_steps} steps: the EMA weights will still carry the early, undertrained "
            f"ones; use a smaller decay ({advice})")
