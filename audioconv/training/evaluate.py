"""Evaluate a checkpoint on a manifest: accuracy, macro-F1, per-class recall, confusion matrix (+ PNG).

Clips are read like the validation set during training: at the checkpoint's sample rate, cropped
around their centre (or zero-padded at the end) to the training clip length, no augmentation.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from audioconv.training.checkpoint import load_checkpoint, load_model_state
from audioconv.training.metrics import summarize

__all__ = ["evaluate", "plot_confusion"]


def evaluate(checkpoint: str | os.PathLike, manifest: str | os.PathLike, device: str = "auto", batch_size: int = 64,
             allow_unknown: bool = False, progress: bool = True, split: str | None = None, workers: int = 0) -> dict:
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

    Returns:
        JSON-ready dict: ``accuracy``, ``macro_f1``, ``n`` (clips scored), ``labels`` (row/column order),
        ``per_class_recall`` ``{label: recall or None}``, ``confusion`` ``[[int]]`` (rows = truth,
        columns = prediction), ``loss`` (mean cross-entropy, nats), ``unknown`` (clips skipped for an
        unknown label), ``unknown_labels`` ``{label: count}``, ``checkpoint``, ``manifest``.
    """
    from audioconv.data.dataset import ManifestDataset
    from audioconv.models.spectrogram_cnn import SpectrogramCNN
    from audioconv.training.loop import resolve_device, run_validation

    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model = SpectrogramCNN.from_config(ckpt["model_config"])
    load_model_state(model, ckpt["model"], source=f"checkpoint {checkpoint}")
    model.to(dev).eval()
    labels = list(ckpt["labels"])
    clip_s = (ckpt.get("train_config") or {}).get("clip_s", 1.0)
    ds = ManifestDataset(manifest, sample_rate=int(model.config.sample_rate), clip_s=float(clip_s), labels=labels,
                         crop="center", split=split, allow_unknown=allow_unknown, return_length=True)
    from audioconv.data.dataset import collate

    loader = torch.utils.data.DataLoader(ds, batch_size=int(batch_size), shuffle=False, num_workers=int(workers),
                                         collate_fn=collate, pin_memory=dev.type == "cuda")
    confusion, loss_sum, n = run_validation(model, loader, dev, len(labels), None, progress, desc="evaluate")
    result = summarize(confusion.cpu(), labels)
    result.update(labels=labels, loss=float(loss_sum) / max(1, n), unknown=int(ds.unknown),
                  unknown_labels=dict(ds.unknown_labels), checkpoint=str(checkpoint), manifest=str(manifest))
    return result


def plot_confusion(result: dict, path: str | os.PathLike, normalize: bool = True) -> Path:
    """Draw ``result["confusion"]`` as a PNG: rows = true class, columns = predicted class.

    Colour = share of the row (recall-normalised) when ``normalize``, else the count; every cell
    is annotated with its count. The title gives accuracy, macro-F1 and n.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    c = np.asarray(result["confusion"], dtype=float)
    labels = list(result["labels"])
    if c.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion has shape {c.shape} but there are {len(labels)} labels")
    shown = c / np.maximum(c.sum(axis=1, keepdims=True), 1) if normalize else c
    k = len(labels)
    size = min(4 + 0.45 * k, 30)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    try:
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, c.max()))
        ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0)
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if k <= 40:
            for i in range(k):
                for j in range(k):
                    if c[i, j]:
                        ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=8,
                                color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "clips")
        ax.set_title(f"accuracy {result['accuracy']:.3f}   macro-F1 {result['macro_f1']:.3f}   n = {result['n']}")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
