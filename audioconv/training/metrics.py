"""Classification metrics from a confusion matrix: accuracy, per-class recall/precision/F1, macro-F1.

Everything is computed from one integer confusion matrix ``C`` of shape ``(K, K)`` where
``C[i, j]`` counts clips whose true class is ``i`` and predicted class is ``j``. A confusion matrix
adds up across batches and across processes (``all_reduce``), so metrics are exact for any sharding.

Conventions (the same as scikit-learn's with ``zero_division=0`` and ``labels=`` the classes seen):

* recall of class ``i`` = ``C[i, i] / sum_j C[i, j]``; NaN for a class with no true clips;
* precision of class ``i`` = ``C[i, i] / sum_j C[j, i]``; 0 for a class never predicted;
* F1 of class ``i`` = ``2 C[i, i] / (sum_j C[i, j] + sum_j C[j, i])`` (harmonic mean of the two);
* macro-F1 = mean F1 over the classes that occur as a truth **or** as a prediction (classes that
  occur in neither are left out, so a validation set that lacks a class is not penalised for it).
"""
from __future__ import annotations

import torch

__all__ = [
    "confusion_matrix",
    "accuracy",
    "per_class_recall",
    "per_class_precision",
    "per_class_f1",
    "macro_f1",
    "summarize",
]


def _as_index_tensor(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D (n,), got shape {tuple(t.shape)}")
    if t.numel() == 0:  # torch.as_tensor([]) is float32
        return t.long()
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t.long()


def confusion_matrix(targets, predictions, n_classes: int) -> torch.Tensor:
    """Count (true, predicted) pairs.

    Args:
        targets: true class indices, shape ``(n,)``, values in ``0 .. n_classes-1``.
        predictions: predicted class indices, shape ``(n,)``.
        n_classes: ``K``, the number of classes.

    Returns:
        int64 tensor ``(K, K)`` on the inputs' device; rows are true classes, columns predictions.
    """
    if int(n_classes) < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    t = _as_index_tensor(targets, "targets")
    p = _as_index_tensor(predictions, "predictions").to(t.device)
    if t.shape != p.shape:
        raise ValueError(f"targets and predictions differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, v in (("targets", t), ("predictions", p)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= n_classes):
            raise ValueError(f"{name} must be in 0..{n_classes - 1}, got values in {int(v.min())}..{int(v.max())}")
    k = int(n_classes)
    return torch.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _check_confusion(confusion) -> torch.Tensor:
    c = torch.as_tensor(confusion)
    if c.dim() != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"confusion must be a square (K, K) matrix, got shape {tuple(c.shape)}")
    return c.double()


def accuracy(confusion) -> float:
    """Share of clips on the diagonal, ``trace(C) / sum(C)``; NaN for an empty matrix."""
    c = _check_confusion(confusion)
    n = c.sum()
    return float(c.diagonal().sum() / n) if n > 0 else float("nan")


def per_class_recall(confusion) -> torch.Tensor:
    """Recall of each class, ``(K,)`` float64; NaN where the class has no true clips."""
    c = _check_confusion(confusion)
    support = c.sum(dim=1)
    return torch.where(support > 0, c.diagonal() / support.clamp_min(1), torch.full_like(support, float("nan")))


def per_class_precision(confusion) -> torch.Tensor:
    """Precision of each class, ``(K,)`` float64; 0 where the class is never predicted."""
    c = _check_confusion(confusion)
    predicted = c.sum(dim=0)
    return torch.where(predicted > 0, c.diagonal() / predicted.clamp_min(1), torch.zeros_like(predicted))


def per_class_f1(confusion) -> torch.Tensor:
    """F1 of each class, ``2 TP / (2 TP + FP + FN)``, ``(K,)`` float64; NaN where the class occurs
    neither as a truth nor as a prediction."""
    c = _check_confusion(confusion)
    denom = c.sum(dim=1) + c.sum(dim=0)  # = 2 TP + FP + FN
    return torch.where(denom > 0, 2 * c.diagonal() / denom.clamp_min(1), torch.full_like(denom, float("nan")))


def macro_f1(confusion) -> float:
    """Unweighted mean of :func:`per_class_f1` over the classes that occur (NaN if none do)."""
    f1 = per_class_f1(confusion)
    present = ~torch.isnan(f1)
    return float(f1[present].mean()) if bool(present.any()) else float("nan")


def summarize(confusion, labels: list[str] | None = None) -> dict:
    """All metrics as plain Python values (JSON-ready).

    Returns:
        ``{"accuracy", "macro_f1", "n", "per_class_recall": {label: recall or None},
        "confusion": [[int]]}``; classes without true clips get recall ``None``.
    """
    c = torch.as_tensor(confusion).long().cpu()
    k = c.shape[0]
    names = list(labels) if labels is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"got {len(names)} labels for a {k}x{k} confusion matrix")
    recall = per_class_recall(c)
    return {
        "accuracy": accuracy(c),
        "macro_f1": macro_f1(c),
        "n": int(c.sum()),
        "per_class_recall": {n: (None if torch.isnan(r) else float(r)) for n, r in zip(names, recall)},
        "confusion": c.tolist(),
    }
