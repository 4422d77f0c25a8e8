"""Score a model on labelled clips: :func:`run_validation` (any loader; used by the training loop
every epoch), :func:`evaluate` (a checkpoint on a manifest: accuracy, macro-F1, per-class recall,
confusion matrix) and :func:`score_checkpoint` (the same from a checkpoint dict already read, with the
dataset, the class probabilities and the model: what a run report shows).

Clips are read like the validation set during training: at the checkpoint's sample rate, cropped
around their centre (or zero-padded at the end) to the training clip length, no augmentation.
Drawing the confusion matrix is :func:`audioconv.plots.confusion.plot_confusion`.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.training.checkpoint import checkpoint_weights, load_checkpoint, model_from_checkpoint, run_clip_s
from audioconv.training.metrics import confusion_matrix, summarize
from audioconv.utils import eval_mode, resolve_device

__all__ = ["evaluate", "score_checkpoint", "Scored", "run_validation", "accuracy_by"]


@torch.no_grad()
def run_validation(model: nn.Module, loader, device: torch.device, n_classes: int,
                   amp_dtype: torch.dtype | None = None, progress: bool = False, desc: str = "val",
                   probs: list | None = None):
    """Run ``model`` in eval mode (every submodule's mode restored afterwards) over ``loader``.

    Args:
        model: waveform classifier, ``(B, C, T)`` → logits ``(B, n_classes)``, on ``device``.
        loader: yields ``(waveforms (B, C, T), labels (B,), ...)``; empty batches are skipped.
        device: where the batches go.
        n_classes: number of classes (the confusion matrix is ``(n_classes, n_classes)``).
        amp_dtype: autocast dtype, or ``None`` for full precision.
        progress: tqdm bar (``desc`` its title).
        probs: a list to append each batch's class probabilities to (softmax, ``(B, n_classes)`` float64 on
            the CPU), or ``None``.

    Returns:
        ``(confusion (K, K) int64 on device, summed cross-entropy in nats (float64 tensor), clip count)``.
    """
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    with eval_mode(model):
        for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            if x.shape[0] == 0:
                continue
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            confusion += confusion_matrix(y, logits.argmax(dim=1), n_classes)
            if probs is not None:
                probs.append(torch.softmax(logits.double(), dim=-1).cpu())
    return confusion, loss_sum, int(confusion.sum())


def evaluate(checkpoint: str | os.PathLike, manifest: str | os.PathLike, device: str = "auto", batch_size: int = 64,
             allow_unknown: bool = False, progress: bool = True, split: str | None = None, workers: int = 0,
             skip_bad: bool = False, weights: str = "auto", by: str | None = None) -> dict:
    """Classify every clip of ``manifest`` with the model in ``checkpoint`` and score it.

    Args:
        checkpoint: ``RUN/best.pt``, ``RUN/last.pt`` or a snapshot.
        manifest: JSONL manifest; its labels must be the checkpoint's labels.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        batch_size: clips per forward pass.
        allow_unknown: count clips whose label the model does not know (in ``unknown``) and
            leave them out of the scores, instead of raising ``ValueError``.
        progress: tqdm bar.
        split: only clips whose ``split`` key equals this (e.g. ``"test"``).
        workers: DataLoader worker processes for decoding.
        skip_bad: leave out clips that cannot be read (listed in ``skipped``) instead of raising.
        weights: ``"auto"`` (the weights the run validated: EMA with ``--ema``), ``"ema"`` or ``"raw"``
            (:func:`~audioconv.training.checkpoint.checkpoint_weights`).
        by: a manifest key (``"group"``, ``"speaker"``, ``"fold"`` ...): also the accuracy per value
            of it, in ``by`` (:func:`accuracy_by`).

    Returns:
        JSON-ready dict: ``accuracy``, ``macro_f1``, ``n`` (clips scored), ``labels`` (row/column order),
        ``per_class_recall`` ``{label: recall or None}``, ``confusion`` ``[[int]]`` (rows = truth,
        columns = prediction), ``loss`` (mean cross-entropy, nats), ``unknown`` (clips skipped for an
        unknown label), ``unknown_labels`` ``{label: count}``, ``n_clips`` (clips with known labels:
        ``n`` plus the skipped ones), ``skipped`` ``{"manifest:line": reason}`` (``skip_bad``),
        ``checkpoint``, ``manifest``, ``weights`` (``"ema"`` or ``"raw"``: the weights scored), ``clip_s`` (the
        run's clip length, seconds) and ``n_longer`` (clips longer than it: each is scored on its
        central ``clip_s``, as validation scores it; ``predict`` scores every window of a file).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if int(workers) < 0:
        raise ValueError(f"workers must be >= 0 DataLoader processes (0: decode in this one), got {workers}")
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    scored = score_checkpoint(ckpt, checkpoint, manifest, dev, batch_size, allow_unknown, progress, split, workers,
                              skip_bad, weights, by)
    if by is not None:
        scored.result["by"] = accuracy_by(scored.dataset, scored.probs, by, manifest)
    return scored.result


def accuracy_by(dataset, probs: np.ndarray, key: str, manifest: str | os.PathLike = "the manifest") -> dict:
    """Accuracy per value of the manifest key ``key`` over the clips scored: ``dataset`` (a
    ``ManifestDataset``) and its class probabilities ``probs`` ``(N, K)`` in order (clips left out
    by ``skip_bad`` have none). A clip without the key counts under ``"(none)"``.

    Returns:
        ``{"key": key, "groups": [{"value": str, "n": int, "accuracy": float}, ...]}``, the worst
        group first (then by value).

    Raises:
        ValueError: no clip of the manifest has the key (the message lists the keys there are).
    """
    bad = {b["source"] for b in dataset.bad}
    kept = [i for i in range(len(dataset)) if dataset.sources[i] not in bad]
    if len(kept) != len(probs):
        raise RuntimeError(f"{len(probs)} scored clips for {len(kept)} readable ones")
    records = [dataset.records[i] for i in kept]
    check_key(records, key, manifest)
    right: dict[str, list[bool]] = {}
    for r, i, p in zip(records, kept, probs):
        right.setdefault(str(r.get(key, "(none)")), []).append(int(np.argmax(p)) == dataset.targets[i])
    groups = [{"value": v, "n": len(hits), "accuracy": sum(hits) / len(hits)} for v, hits in right.items()]
    return {"key": key, "groups": sorted(groups, key=lambda g: (g["accuracy"], g["value"]))}


def check_key(records: list[dict], key: str, manifest: str | os.PathLike = "the manifest") -> None:
    """Refuse (``ValueError``, one line listing the keys there are) a key that none of the manifest
    ``records`` has; no records, nothing to refuse."""
    if records and not any(key in r for r in records):
        keys = sorted({k for r in records for k in r})
        raise ValueError(f"by {key!r}: no clip of {manifest} has that key; its keys: {', '.join(keys)}")


class Scored(NamedTuple):
    """What :func:`score_checkpoint` returns."""
    result: dict  # evaluate()'s dict
    dataset: object  # the ManifestDataset scored (clips as the model heard them; ``targets`` its label indices)
    probs: np.ndarray  # (N, K) float64 class probabilities (softmax) of the dataset's clips, in order
    model: nn.Module  # the model scored, in eval mode on the device


def longer_than(records: list[dict], clip_s: float) -> int:
    """How many of the clips (manifest records: file, ``offset``, ``duration``) last longer than
    ``clip_s`` seconds, by their files' headers; a file that cannot be read is not counted."""
    from audioconv.io.manifest import Clip

    count = 0
    for rec in records:
        try:
            meta = audio.info(rec["audio_filepath"])
            _, frames = Clip.from_dict(rec).frames(meta.sample_rate, meta.frames)
        except (ValueError, FileNotFoundError):
            continue
        count += frames > round(clip_s * meta.sample_rate)
    return count


def score_checkpoint(ckpt: dict, checkpoint: str | os.PathLike, manifest: str | os.PathLike, device="auto",
                     batch_size: int = 64, allow_unknown: bool = False, progress: bool = True, split: str | None = None,
                     workers: int = 0, skip_bad: bool = False, weights: str = "auto", by: str | None = None) -> Scored:
    """:func:`evaluate` of a checkpoint dict already read (``ckpt``, read by
    :func:`~audioconv.training.checkpoint.load_checkpoint` from ``checkpoint``, which messages and the
    result name), with the dataset, the probabilities and the model it scored (:class:`Scored`).
    Arguments as :func:`evaluate`'s (``batch_size >= 1``); a ``by`` key no clip has is refused
    before any clip is scored (:func:`check_key`)."""
    from audioconv.data.dataset import ManifestDataset, collate

    dev = resolve_device(device)
    model, labels = model_from_checkpoint(ckpt, f"checkpoint {checkpoint}", weights)
    _, scored_weights = checkpoint_weights(ckpt, weights, f"checkpoint {checkpoint}")  # "ema" or "raw"
    model.to(dev).eval()
    clip_s = run_clip_s(ckpt)
    ds = ManifestDataset(manifest, sample_rate=int(model.frontend.config.sample_rate), clip_s=clip_s,
                         labels=labels, crop="center", split=split, allow_unknown=allow_unknown, skip_bad=skip_bad)
    if by is not None:
        check_key(ds.records, by, manifest)
    loader = torch.utils.data.DataLoader(ds, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                                         collate_fn=collate, pin_memory=dev.type == "cuda")
    chunks: list[torch.Tensor] = []
    confusion, loss_sum, n = run_validation(model, loader, dev, len(labels), None, progress, "evaluate", chunks)
    if n == 0:
        raise ValueError(f"no clip of {manifest} could be scored: all {len(ds.skipped)} selected were unreadable "
                         f"and skipped (see the warnings above)")
    result = summarize(confusion.cpu(), labels)
    result.update(labels=labels, loss=float(loss_sum) / max(1, n), unknown=int(ds.unknown),
                  unknown_labels=dict(ds.unknown_labels), n_clips=ds.n_selected, skipped=ds.skipped,
                  checkpoint=str(checkpoint), manifest=str(manifest), weights=scored_weights,
                  clip_s=clip_s, n_longer=longer_than(ds.records, clip_s))
    probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, len(labels)))
    return Scored(result, ds, probs, model)
