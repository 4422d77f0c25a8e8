"""Occlusion sensitivity (Zeiler & Fergus 2014, Fig. 7) on log-mel spectrograms.

A patch of ``freq_bins × frames`` cells, filled with the example's own mean log-mel value (dB),
slides over the spectrogram; at each placement the model's probability of the target class is
recorded. Where the probability drops, the model relied on what the patch hid.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["occlusion", "patch_starts"]


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    if not isinstance(value, Sequence) or len(value) != 2 or any(
        not isinstance(v, (int, np.integer)) or int(v) < 1 for v in value
    ):
        raise ValueError(f"{name} must be a positive int or a pair (freq_bins, frames) of positive ints, got {value!r}")
    return int(value[0]), int(value[1])


def patch_starts(n: int, patch: int, stride: int) -> np.ndarray:
    """First cell of each patch placement along an axis of ``n`` cells: ``0, stride, …`` while the patch fits.

    The occlusion map's cell ``i`` along that axis covers input cells ``[starts[i], starts[i] + patch)``.
    """
    if patch > n:
        raise ValueError(f"patch of {patch} cells does not fit an axis of {n} cells")
    return np.arange(0, n - patch + 1, stride)


def occlusion(
    model: nn.Module,
    inputs: torch.Tensor,
    target,
    patch: tuple[int, int] = (8, 10),
    stride: tuple[int, int] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Probability of ``target`` while a mean-filled patch hides each part of the spectrogram.

    Args:
        model: a classifier of log-mel spectrograms: a
            :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (its ``classify``) or any module
            mapping ``(N, 1, F, T)`` log-mel dB to logits ``(N, n_classes)`` (its ``forward``; see
            :func:`~audioconv.interpret.traced.model_entry`). It is run in eval mode (restored
            afterwards) without gradients, on ``device`` (a copy there if it lives elsewhere).
        inputs: log-mel spectrograms in dB, ``(B, 1, F, T)`` or ``(B, F, T)``.
        target: class index (int) for all examples, or a sequence / ``(B,)`` tensor of indices.
        patch: ``(freq_bins, frames)`` size of the occluder in log-mel cells.
        stride: ``(freq_bins, frames)`` step between placements; default half the patch (at least 1).
        batch_size: occluded copies per forward pass.
        device: where to run; default CUDA if available, else CPU.
        progress: show a tqdm bar over batches.

    Returns:
        ``(B, F', T')`` float32 tensor on the CPU, ``F' = (F - freq_bins) // stride_f + 1`` (same for
        time); cell ``(i, j)`` is the target probability with cells
        ``[i*stride_f, i*stride_f + freq_bins) × [j*stride_t, j*stride_t + frames)`` replaced by the
        example's mean. Placement starts are given by :func:`patch_starts`.
    """
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor of log-mel dB, got {type(inputs).__name__}")
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(1)
    if inputs.dim() != 4 or inputs.shape[1] != 1:
        raise ValueError(f"inputs must be log-mel (B, 1, F, T) or (B, F, T), got shape {tuple(inputs.shape)}")
    b, _, n_f, n_t = inputs.shape
    pf, pt = _pair(patch, "patch")
    sf, st = _pair(stride if stride is not None else (max(1, pf // 2), max(1, pt // 2)), "stride")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    f_starts = torch.as_tensor(patch_starts(n_f, pf, sf))
    t_starts = torch.as_tensor(patch_starts(n_t, pt, st))

    targets = torch.as_tensor(target, dtype=torch.long).flatten()
    if targets.numel() == 1:
        targets = targets.expand(b)
    if targets.numel() != b:
        raise ValueError(f"target must be one class index or one per example ({b}), got {targets.numel()}")

    traced = TracedModel(model, device)  # the model on the device once; its log-mel entry point
    # every (example, f-start, t-start) placement, flattened in row-major order
    jobs = torch.cartesian_prod(torch.arange(b), f_starts, t_starts)  # (B*F'*T', 3)
    probs = _occluded_probabilities(traced, inputs.to(traced.device), targets, jobs, (pf, pt), int(batch_size),
                                    progress)
    return probs.view(b, len(f_starts), len(t_starts))


def _occluded_probabilities(traced: TracedModel, x: torch.Tensor, targets: torch.Tensor, jobs: torch.Tensor,
                            patch: tuple[int, int], batch_size: int, progress: bool) -> torch.Tensor:
    """Target probability ``(J,)`` (CPU) for each job ``(example, f0, t0)`` of ``jobs (J, 3)``: ``x``
    ``(B, 1, F, T)`` with a ``patch``-sized box at ``(f0, t0)`` filled with the example's mean."""
    device = traced.device
    (pf, pt), (n_f, n_t) = patch, x.shape[-2:]
    fill = x.mean(dim=(1, 2, 3))  # (B,) each example's mean dB
    f_idx = torch.arange(n_f, device=device)
    t_idx = torch.arange(n_t, device=device)
    probs = torch.empty(jobs.shape[0], dtype=torch.float32)
    with eval_mode(traced.model), torch.no_grad():
        for lo in tqdm(range(0, jobs.shape[0], batch_size), disable=not progress, desc="occlusion"):
            job = jobs[lo:lo + batch_size].to(device)
            ex, f0, t0 = job[:, 0], job[:, 1], job[:, 2]
            in_f = (f_idx[None, :] >= f0[:, None]) & (f_idx[None, :] < f0[:, None] + pf)  # (N, F)
            in_t = (t_idx[None, :] >= t0[:, None]) & (t_idx[None, :] < t0[:, None] + pt)  # (N, T)
            hide = (in_f[:, :, None] & in_t[:, None, :]).unsqueeze(1)  # (N, 1, F, T)
            occluded = torch.where(hide, fill[ex].view(-1, 1, 1, 1), x[ex])
            logits = traced.entry(occluded).float()
            if lo == 0 and not 0 <= int(targets.min()) <= int(targets.max()) < logits.shape[-1]:
                raise ValueError(f"target class indices must be in 0..{logits.shape[-1] - 1}, got {targets.tolist()}")
            p = torch.softmax(logits, dim=-1)
            probs[lo:lo + job.shape[0]] = p.gather(1, targets.to(device)[ex][:, None])[:, 0].cpu()
    return probs
