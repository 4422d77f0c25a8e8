"""Linear centred kernel alignment (CKA) between two sets of activations of the same examples.

Kornblith et al. (2019), "Similarity of Neural Network Representations Revisited", eq. (4)::

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)

with ``Xc``, ``Yc`` the column-centred ``(n_examples, n_features)`` matrices. The same number in
Gram form (what this module computes, cheap when ``n_examples`` is smaller than the feature
count, as for flattened conv feature maps)::

    K = Xc Xc^T,  L = Yc Yc^T,   CKA = <K, L>_F / (||K||_F * ||L||_F)

CKA is 1 for identical representations and invariant to orthogonal transforms and isotropic
scaling of either side (not to arbitrary invertible linear maps).

**Debiased CKA.** ``<K, L>_F`` with centred Grams is a *biased* estimate of HSIC: with few examples
and many features (flattened feature maps: thousands of features, hundreds of clips) two unrelated
representations already score well above 0 — an untrained network "resembles" a trained one. The
debiased variant (Nguyen, Raghu & Kornblith 2021, appendix; used by Kornblith et al.'s own code)
replaces it with the unbiased HSIC estimator of Song et al. (2012, eq. 5) on Grams ``K``, ``L`` whose
diagonals are set to zero (``K~``, ``L~``)::

    HSIC_u(K, L) = [ tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) * 1'K~L~1 ] / (n (n-3))
    CKA_debiased = HSIC_u(K, L) / sqrt(HSIC_u(K, K) * HSIC_u(L, L))

It is 1 for identical representations, has the same invariances, needs ``n >= 4`` and is close to 0
(and can be slightly negative) for independent representations. For a linear kernel ``HSIC_u`` is
unchanged by centring the features, so it takes the centred Grams :func:`centered_gram` returns.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["linear_cka", "debiased_cka", "centered_gram", "cka_from_grams", "debiased_cka_from_grams", "hsic_unbiased",
           "cka_of", "ESTIMATORS"]

#: The CKA estimators :func:`cka_of` knows, by name.
ESTIMATORS = ("debiased", "linear")


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


def hsic_unbiased(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al.'s (2012) unbiased HSIC estimator of two ``(n, n)`` Gram matrices (module docstring), ``n >= 4``."""
    n = k.shape[0]
    if k.shape != l.shape or k.dim() != 2 or n != k.shape[1]:
        raise ValueError(f"Gram matrices must both be (n, n), got {tuple(k.shape)} and {tuple(l.shape)}")
    if n < 4:
        raise ValueError(f"the unbiased HSIC estimator needs at least 4 examples, got {n}")
    k = k.to(torch.float64).clone()
    l = l.to(torch.float64).clone()
    k.fill_diagonal_(0.0)
    l.fill_diagonal_(0.0)
    trace = (k * l).sum()  # tr(K~ L~) for symmetric Grams
    sums = k.sum() * l.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(dim=0) @ l.sum(dim=1))  # 1' K~ L~ 1
    return float((trace + sums - cross) / (n * (n - 3)))


def debiased_cka_from_grams(k: torch.Tensor, l: torch.Tensor) -> float:
    """Debiased CKA from two ``(n, n)`` Gram matrices (centred or not), ``n >= 4``.

    Returns ``nan`` when either side has no positive self-similarity estimate (a representation
    constant over the examples).
    """
    kl, kk, ll = hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)
    if kk <= 0.0 or ll <= 0.0:
        return float("nan")
    return kl / float(np.sqrt(kk * ll))


def cka_of(k: torch.Tensor, l: torch.Tensor, estimator: str = "debiased") -> float:
    """CKA of two Gram matrices by ``estimator`` (``"debiased"`` or ``"linear"``)."""
    if estimator == "debiased":
        return debiased_cka_from_grams(k, l)
    if estimator == "linear":
        return cka_from_grams(k, l)
    raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}; got {estimator!r}")


def debiased_cka(x, y) -> float:
    """Debiased CKA between activations ``x`` and ``y`` ``(n_examples, ...)`` of the same ``n >= 4`` examples.

    Close to 0 for unrelated representations whatever the feature count (the plain
    :func:`linear_cka` is not), 1 for identical ones; can be slightly negative.
    """
    xt = _as_2d_float64(x, "x")
    yt = _as_2d_float64(y, "y")
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"x and y must have the same number of examples, got {xt.shape[0]} and {yt.shape[0]}")
    return debiased_cka_from_grams(xt @ xt.T, yt @ yt.T)
