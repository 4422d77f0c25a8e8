"""Curves over epochs: a run's training metrics (loss, accuracy / F1, learning rate, throughput) and
the layer-convergence curves (CKA of each epoch vs the final one, linear or debiased)."""
from __future__ import annotations

import math

from matplotlib.figure import Figure

from audioconv.plots.figure import new_figure

__all__ = ["plot_metrics", "plot_convergence"]


def _numeric_series(rows: list[dict], x_key: str) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for i, row in enumerate(rows):
        x = row.get(x_key, i + 1)
        for key, value in row.items():
            if key == x_key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(key, []).append((float(x), float(value)))
    return series


def plot_metrics(rows: list[dict], x_key: str = "epoch") -> Figure:
    """Metrics over epochs, one panel each: losses, accuracy / F1, learning rate, the rest (e.g. clips/s).

    Args:
        rows: per-epoch dicts (e.g. from :func:`read_metrics`); every numeric key except ``x_key``
            becomes a line, put in a panel by its name (``*loss*``; ``*acc*``/``*f1*``; ``lr``; the
            rest). Panels without lines are left out, except loss and accuracy.
        x_key: the key holding the epoch (rows without it are numbered 1, 2, ...).

    Returns:
        The matplotlib Figure.
    """
    if not rows:
        raise ValueError("no metric rows to plot")
    series = _numeric_series(rows, x_key)
    groups: dict[str, list[str]] = {"loss": [], "score": [], "lr": [], "other": []}
    for key in series:
        k = key.lower()
        if "loss" in k:
            groups["loss"].append(key)
        elif "acc" in k or "f1" in k:
            groups["score"].append(key)
        elif k == "lr" or k.startswith("lr_") or "learning_rate" in k:
            groups["lr"].append(key)
        elif k not in ("step", "time_s", "elapsed_s", "wall_s"):
            groups["other"].append(key)
    titles = {"loss": "loss", "score": "accuracy / macro-F1", "lr": "learning rate", "other": "throughput / other"}
    shown = ["loss", "score"] + [name for name in ("lr", "other") if groups[name]]
    fig = new_figure(3.4 * len(shown), 3.4, layout="constrained")
    axes = fig.subplots(1, len(shown))
    for ax, name in zip(axes, shown):
        keys = groups[name]
        for key in keys:
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
        ax.set_xlabel(x_key)
        ax.set_title(titles[name])
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "nothing recorded", ha="center", va="center", transform=ax.transAxes)
        if name == "score":
            ax.set_ylim(0.0, 1.02)
        if name == "lr" and all(min(y for _, y in series[k]) > 0 for k in keys):
            ax.set_yscale("log")
    return fig


def plot_convergence(cka_by_layer: dict, epochs, title: str | None = None, estimator: str = "linear",
                     baseline: dict | None = None) -> Figure:
    """CKA of each layer's activations at each epoch vs the final epoch (one line per layer).

    ``estimator`` names the CKA in the axis label (``"linear"``, ``"debiased"``); ``baseline``
    ``{layer: [values]}`` (untrained networks vs the final epoch) is drawn as a dashed line at their
    mean in the layer's colour.
    """
    epochs = [int(e) for e in epochs]
    if not cka_by_layer:
        raise ValueError("cka_by_layer is empty")
    fig = new_figure(6.5, 4.0)
    ax = fig.subplots()
    low = 0.0
    for layer, values in cka_by_layer.items():
        values = [float("nan") if v is None else float(v) for v in values]
        if len(values) != len(epochs):
            raise ValueError(f"layer {layer!r} has {len(values)} CKA values for {len(epochs)} epochs")
        line, = ax.plot(epochs, values, marker="o", label=layer)
        low = min([low] + [v for v in values if v == v])
        base = [float(v) for v in (baseline or {}).get(layer, []) if v is not None and v == v]
        if base:
            ax.axhline(sum(base) / len(base), color=line.get_color(), linestyle="--", linewidth=1, alpha=0.7)
            low = min(low, *base)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{estimator} CKA vs epoch {epochs[-1]}")
    ax.set_ylim(min(0.0, low - 0.05), 1.05)
    ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    ax.grid(alpha=0.3)
    ax.legend(title="layer")
    ax.set_title(title or ("layer convergence (1 = same representation as the final epoch"
                           + ("; dashed: untrained networks)" if baseline else ")")))
    return fig
