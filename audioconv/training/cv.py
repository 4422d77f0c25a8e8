"""K-fold cross-validation on a corpus with fold splits (ESC-50: 5 folds, UrbanSound8K: 10):
:func:`cross_validate` trains one model per fold with that fold held out, scores it on the held-out
fold, and reports the mean ± standard deviation of accuracy and macro-F1 over the folds, the way
results on these corpora are published.

Which checkpoint is scored (``validation``):

* ``"none"`` (default): each model trains on all the other folds, without validation, and the
  last epoch is scored. Nothing about the held-out fold influences the model, so the mean is an
  unbiased estimate. Picking the best epoch *on the held-out fold* (what many ESC-50 and
  UrbanSound8K papers do) makes the reported number the maximum of noisy per-epoch scores: it is
  optimistic, and the more so the smaller the folds and the more epochs there are.
* ``"next"``: the fold after the held-out one (cyclically) validates and picks ``best.pt`` (the best
  ``best_metric``); the model trains on the remaining K - 2 folds. Also unbiased, with early
  stopping, at the cost of one fold of training data.

Each fold's run is an ordinary training run in ``OUT/<fold>/`` (config.json, metrics.jsonl,
checkpoints), so it can be evaluated, inspected and resumed like any other.
"""
from __future__ import annotations

import statistics
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch

from audioconv.training import distributed
from audioconv.training.batches import GroupLeakageWarning, group_leak_message, natural_key, shared_groups
from audioconv.training.config import TrainConfig, parse_splits
from audioconv.training.evaluate import evaluate
from audioconv.training.loop import fit
from audioconv.training.metrics import summarize

__all__ = ["cross_validate", "fold_splits", "fold_plan"]


def fold_splits(manifest: str | Path) -> list[str]:
    """The ``split`` values of ``manifest`` that name folds (``fold1``, ``fold2``, …), in natural order."""
    from audioconv.io.manifest import iter_manifest

    splits = {r.get("split") for r in iter_manifest(manifest)}
    return sorted((s for s in splits if isinstance(s, str) and s.lower().startswith("fold")), key=natural_key)


def fold_plan(folds: Sequence[str], validation: str = "none") -> list[dict]:
    """For each held-out fold: ``{"fold", "train_splits", "val_split"}`` (``val_split`` is ``None``
    without validation, else the next fold, cyclically)."""
    if validation not in ("none", "next"):
        raise ValueError(f"validation must be 'none' or 'next', got {validation!r}")
    need = 2 if validation == "none" else 3
    if len(folds) < need:
        raise ValueError(f"cross-validation {'with' if validation == 'next' else 'without'} a validation fold needs "
                         f"at least {need} folds, got {list(folds)}")
    plan = []
    for i, fold in enumerate(folds):
        val = folds[(i + 1) % len(folds)] if validation == "next" else None
        plan.append({"fold": fold, "val_split": val, "train_splits": [f for f in folds if f not in (fold, val)]})
    return plan


def _warn_groups_across_folds(manifest: str | Path, folds: list[str]) -> None:
    """Warn once when groups (speakers, source recordings) have clips in more than one of ``folds``:
    every such group is trained on and scored in some fold, so the held-out scores are optimistic."""
    from audioconv.io.manifest import iter_manifest

    by_fold: dict[str, list[dict]] = {f: [] for f in folds}
    for r in iter_manifest(manifest):
        if r.get("split") in by_fold:
            by_fold[r["split"]].append(r)
    common, pairs = set(), []
    for i, a in enumerate(folds):
        for b in folds[i + 1:]:
            shared = shared_groups(by_fold[a], by_fold[b])
            if shared:
                common.update(shared)
                pairs.append(f"{a}/{b}")
    if common:
        n_pairs = len(folds) * (len(folds) - 1) // 2
        where = f"more than one fold ({len(pairs)} of {n_pairs} pairs of folds share groups: {', '.join(pairs[:3])}" \
                f"{', …' if len(pairs) > 3 else ''})"
        warnings.warn(group_leak_message(sorted(common), where, "held-out fold scores") + " — keep each group in "
                      "one fold", GroupLeakageWarning, stacklevel=3)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; ``None`` for one value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def _fold_config(config: TrainConfig, step: dict, out: Path, resume: bool) -> TrainConfig:
    run = out / step["fold"]
    return TrainConfig.from_dict({
        **config.to_dict(), "train": None, "val": None, "out": str(run), "train_split": step["train_splits"],
        "val_split": [step["val_split"]] if step["val_split"] else [],
        "resume": bool(resume and (run / "last.pt").is_file()),
    })


def cross_validate(config: TrainConfig, folds: Sequence[str] | str | None = None, validation: str = "none",
                   resume: bool = False, progress: bool = True, log: Callable[[str], None] | None = None,
                   augment=None) -> dict:
    """Train and score one model per fold of ``config.manifest``.

    Args:
        config: the training settings; ``config.manifest`` is the corpus manifest whose ``split``
            key names the folds, ``config.out`` the folder that receives one run folder per fold.
            ``train``/``val``/``train_split``/``val_split`` are set per fold.
        folds: the folds (names of splits), a list or a comma string; default every split whose
            name starts with ``fold``. Splits not listed are not used at all.
        validation: ``"none"`` (score the last epoch) or ``"next"`` (the next fold picks ``best.pt``);
            see the module docstring for why.
        resume: continue each fold's run from its ``last.pt`` where there is one (a finished fold
            is only re-scored).
        progress: tqdm bars (training and evaluation).
        log: called with one-line notes (which fold starts, its score).
        augment: passed to :func:`~audioconv.training.loop.fit`.

    Returns:
        JSON-ready dict: ``folds`` (one row per fold: ``fold``, ``train_splits``, ``val_split``,
        ``n``, ``accuracy``, ``macro_f1``, ``best_epoch``, ``checkpoint``, ``out``), ``accuracy_mean``,
        ``accuracy_std``, ``macro_f1_mean``, ``macro_f1_std`` (sample standard deviation over folds),
        ``pooled`` (accuracy and macro-F1 of all held-out clips together, their confusion matrix and
        ``labels``), ``n`` (held-out clips in all), ``validation``, ``manifest``, ``out``.

    Raises:
        ValueError: no manifest, fewer than 2 folds (3 with ``validation="next"``), a fold that the
            manifest lacks, a run under torchrun (folds run one after another in one process).
    """
    if config.manifest is None or config.train is not None or config.val is not None:
        raise ValueError("cross-validation needs one manifest with fold splits (manifest=..., --manifest), "
                         "not train=/val= manifests")
    if config.early_stopping and validation == "none":
        raise ValueError(f"early stopping (--early-stopping {config.early_stopping}) needs a validation fold to "
                         f"watch: use validation='next' (--validation next)")
    if distributed.detect().is_distributed:
        raise ValueError("cross-validation runs its folds one after another in one process; run it without torchrun")
    present = fold_splits(config.manifest)
    folds = parse_splits(folds) if folds is not None else tuple(present)
    missing = [f for f in folds if f not in present]
    if missing or not folds:
        raise ValueError(f"folds (--folds): manifest {config.manifest} has no split(s) {missing or 'named fold*'}; "
                         f"its fold splits: {present or 'none'} (choose with --folds)")
    plan, out, note = fold_plan(list(folds), validation), Path(config.out), log or (lambda message: None)
    _warn_groups_across_folds(config.manifest, list(folds))
    rows, confusion, labels = [], None, None
    for i, step in enumerate(plan, 1):
        note(f"fold {i}/{len(plan)}: {step['fold']} held out; training on {','.join(step['train_splits'])}"
             + (f", validating on {step['val_split']}" if step["val_split"] else ""))
        with warnings.catch_warnings():  # a fold's own group warning repeats the one above
            warnings.simplefilter("ignore", GroupLeakageWarning)
            trained = fit(_fold_config(config, step, out, resume), progress=progress, log=log, augment=augment)
        scored = evaluate(trained["best_checkpoint"], config.manifest, device=config.device,
                          batch_size=config.batch_size, progress=progress, split=step["fold"],
                          workers=max(0, config.workers))
        rows.append({**step, "n": scored["n"], "accuracy": scored["accuracy"], "macro_f1": scored["macro_f1"],
                     "best_epoch": trained["best_epoch"], "checkpoint": trained["best_checkpoint"],
                     "out": trained["out"]})
        note(f"fold {step['fold']}: accuracy {scored['accuracy']:.4f}, macro-F1 {scored['macro_f1']:.4f} "
             f"({scored['n']} clips)")
        confusion, labels = _pool(confusion, labels, scored)
    acc_mean, acc_std = _mean_std([r["accuracy"] for r in rows])
    f1_mean, f1_std = _mean_std([r["macro_f1"] for r in rows])
    pooled = summarize(confusion, labels)
    return {"folds": rows, "accuracy_mean": acc_mean, "accuracy_std": acc_std, "macro_f1_mean": f1_mean,
            "macro_f1_std": f1_std, "n": sum(r["n"] for r in rows), "validation": validation,
            "pooled": {"accuracy": pooled["accuracy"], "macro_f1": pooled["macro_f1"], "labels": labels,
                       "confusion": confusion.tolist()},
            "manifest": str(config.manifest), "out": str(out)}


def _pool(confusion: torch.Tensor | None, labels: list[str] | None, scored: dict):
    """Add a fold's confusion matrix to the pooled one, on the union of the labels."""
    union = sorted(set(labels or []) | set(scored["labels"]))
    pooled = torch.zeros(len(union), len(union), dtype=torch.int64)
    for names, matrix in ((labels, confusion), (scored["labels"], torch.tensor(scored["confusion"]))):
        if names is None:
            continue
        idx = torch.tensor([union.index(n) for n in names])
        pooled[idx[:, None], idx[None, :]] += matrix
    return pooled, union
