"""Linear centred kernel alignment (CKA) between two sets of activations of the same examples.

Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited", eq. (4)::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

with ``Xc``, ``Yc`` the column-centred ``(n_examples, n_features)`` matrices. The same number in
Gram form (what this module computes, cheap when ``n_examples`` is smaller than the feature
count, as for flattened conv feature maps)::

    K = Xc Xc^T,  L = Yc Yc^T,   CKA = <K, L>_F / (||K||_F * ||L||_F)

CKA is 1 for identical representations and invariant to orthogonal transforms and isotropic
scaling of either side (not to arbitrary invertible linear maps).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["linear_cka", "centered_gram", "cka_from_grams"]


def _as_2d_float64(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to("cpu", torch.float64)
    if t.dim() < 2:
        raise ValueError(f"{name} must be (n_examples, ...) with at least 2 dims, got shape {tuple(t.shape)}")
    return t.reshape(t.shape[0], -1)


def centered_gram(x) -> torch.Tensor:
    """Double-centred linear Gram matrix ``H (X X^T) H`` in float64.

    Args:
        x: activations ``(n_examples, ...)`` (tensor or array); trailing dims are flattened.

    Returns:
        ``(n_examples, n_examples)`` float64 tensor on the CPU.
    """
    x = _as_2d_float64(x, "x")
    x = x - x.mean(dim=0, keepdim=True)  # centring the columns == double-centring the Gram
    return x @ x.T


def cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Linear CKA from two centred Gram matrices ``(n, n)`` (see :func:`centered_gram`).

    Returns ``nan`` when either representation is constant over the examples (zero Gram).
    """
    if k.shape != l.shape or k.dim() != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"Gram matrices must both be (n, n), got {tuple(k.shape)} and {tuple(l.shape)}")
    k = k.to(torch.float64)
    l = l.to(torch.float64)
    denom = torch.linalg.matrix_norm(k) * torch.linalg.matrix_norm(l)
    if float(denom) == 0.0:
        return float("nan")
    return float((k * l).sum() / denom)


def linear_cka(x, y) -> float:
    """Linear CKA between activations ``x`` and ``y`` of the same ``n`` examples, in [0, 1].

    Args:
        x: ``(n_examples, ...)`` tensor or array (trailing dims flattened into features).
        y: ``(n_examples, ...)``; the feature count may differ from ``x``'s.

    Returns:
        The similarity as a Python float (``nan`` if either side is constant over examples).
    """
    xt = _as_2d_float64(x, "x")
    yt = _as_2d_float64(y, "y")
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {xt.shape[0]} and {yt.shape[0]}")
    if xt.shape[0] < 2:
        raise ValueError(f"CKA needs at least 2 examples, got {xt.shape[0]}")
    return cka_from_grams(centered_gram(xt), centered_gram(yt))
