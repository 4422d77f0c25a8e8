"""The confusion matrix of an evaluation as a picture."""
from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_confusion"]


def plot_confusion(result: dict, normalize: bool = True) -> Figure:
    """Draw ``result["confusion"]``: rows = true class, columns = predicted class.

    Args:
        result: :func:`audioconv.training.evaluate.evaluate`'s dict (``confusion`` ``[[int]]`` of shape
            ``(K, K)``, ``labels`` (K names), ``accuracy``, ``macro_f1``, ``n``).
        normalize: colour = share of the row (recall-normalised); else the count. Every cell is
            annotated with its count (up to 40 classes). The title gives accuracy, macro-F1 and n.

    Returns:
        The Figure (save it with :func:`audioconv.app.figures.save_figure`).

    Raises:
        ValueError: the confusion matrix is not ``(K, K)`` for the K labels.
    """
    c = np.asarray(result["confusion"], dtype=float)
    labels = list(result["labels"])
    if c.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion has shape {c.shape} but there are {len(labels)} labels")
    shown = c / np.maximum(c.sum(axis=1, keepdims=True), 1) if normalize else c
    k = len(labels)
    size = min(4 + 0.45 * k, 30)
    fig = Figure(figsize=(size, size * 0.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(1, c.max()))
    ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 40:
        for i, j in zip(*np.nonzero(c)):
            ax.text(j, i, f"{int(c[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class" if normalize else "clips")
    ax.set_title(f"accuracy {result['accuracy']:.3f}   macro-F1 {result['macro_f1']:.3f}   n = {result['n']}")
    fig.tight_layout()
    return fig
