"""Grids of receptive-field crops: the top-k activations of each unit (Zeiler & Fergus Fig. 2) and
their evolution across training epochs (Fig. 4). Each crop sits at its place on the full s × Hz axes."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from audioconv.plots.figure import (DB_LABEL, INPUT_CMAP, PROJECTION_CMAP, PROJECTION_LABEL, as_numpy, new_figure,
                                    symmetric_limit)
from audioconv.plots.spectrogram import show_spectrogram

__all__ = ["plot_topk_grid", "plot_evolution_grid"]


def _crop_cell(ax, data, rf, hz, seconds, signed: bool, show_y: bool, show_x: bool, logmel=None):
    f0, f1, t0, t1 = (int(v) for v in rf)
    if signed:
        lim = symmetric_limit(data)
        mesh = show_spectrogram(ax, data, hz, seconds, (f0, f1), (t0, t1), logmel=logmel,
                                cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
    else:
        mesh = show_spectrogram(ax, data, hz, seconds, (f0, f1), (t0, t1), logmel=logmel, cmap=INPUT_CMAP)
    ax.tick_params(labelsize=5, length=2, pad=1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=2, steps=[1, 2, 5, 10]))
    if not show_y:
        ax.set_ylabel("")
        ax.tick_params(axis="y", labelleft=False)
    else:
        ax.set_ylabel("Hz", fontsize=6, labelpad=1)
    if not show_x:
        ax.set_xlabel("")
        ax.tick_params(axis="x", labelbottom=False)
    else:
        ax.set_xlabel("Time (s)", fontsize=6, labelpad=1)
    return mesh


def plot_topk_grid(topk, units=None, logmel=None, title: str | None = None) -> Figure:
    """One row per unit: its k projections (cropped to the receptive field) then the k input patches.

    Args:
        topk: a :class:`audioconv.interpret.topk.TopK` (with Hz/s axes: a model with a LogMel front end).
        units: rows to draw as positions into ``topk.channels`` (default all).
        logmel: optional front end passed to specshow.

    Returns:
        The Figure. Each projection cell has its own diverging scale centred at zero; each patch
        cell is in dB. Cell titles give the activation and the clip's label; the left column of each
        half carries Hz ticks ("Hz" label), the bottom row time ticks ("Time (s)").
    """
    if topk.hz is None or topk.seconds is None:
        raise ValueError("the top-k result has no Hz/seconds axes (its model has no LogMel front end); "
                         "set topk.hz (F,) and topk.seconds (T,) before plotting")
    channels = as_numpy(topk.channels)
    rows = list(range(len(channels))) if units is None else [int(u) for u in units]
    if not rows:
        raise ValueError("no units to draw")
    k = topk.k
    fig = new_figure(1.15 * 2 * k + 1.2, 1.25 * len(rows) + 0.8)
    axes = np.atleast_2d(fig.subplots(len(rows), 2 * k, squeeze=False))
    for r, u in enumerate(rows):
        if not 0 <= u < len(channels):
            raise ValueError(f"unit row {u} out of range 0..{len(channels) - 1}")
        last = r == len(rows) - 1
        for j in range(2 * k):
            ax = axes[r, j]
            rank = j % k
            if rank >= len(topk.projections[u]):
                ax.set_axis_off()
                continue
            rf = topk.receptive_fields[u][rank]
            signed = j < k
            data = topk.projections[u][rank] if signed else topk.patches[u][rank]
            _crop_cell(ax, data, rf, topk.hz, topk.seconds, signed, show_y=(rank == 0), show_x=last, logmel=logmel)
            label = topk.labels[u][rank] if topk.labels is not None else ""
            ax.set_title(f"{float(topk.scores[u][rank]):.3g} {label}".strip(), fontsize=5, pad=2)
        axes[r, 0].set_ylabel(f"unit {int(channels[u])}\nHz", fontsize=7, labelpad=1)
    fig.suptitle(title or f"{topk.layer}: top {k} activations per unit ({topk.mode}) — "
                 f"left: projections ({PROJECTION_LABEL}, centred), right: input patches ({DB_LABEL})", fontsize=9)
    fig.subplots_adjust(wspace=0.35, hspace=0.6)
    return fig


def plot_evolution_grid(grid, logmel=None, title: str | None = None) -> Figure:
    """Units × epochs: the projection of each unit's strongest activation over the probe set per epoch.

    Args:
        grid: an :class:`audioconv.interpret.evolve.EvolutionGrid` (``layer``, ``epochs``, ``units``,
            ``ranks``, ``projections[row][col]``, ``receptive_fields[row][col]``,
            ``activations[row][col]``, ``hz``, ``seconds``) — a row per (unit, rank), a column per epoch.
        logmel: optional front end passed to specshow.

    Returns:
        The Figure (Zeiler & Fergus Fig. 4 layout); each cell is centred at zero in ``RdBu_r``.
    """
    n_rows, n_cols = len(grid.row_units), len(grid.epochs)
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"empty evolution grid: {n_rows} rows × {n_cols} epochs")
    fig = new_figure(1.15 * n_cols + 1.2, 1.2 * n_rows + 0.8)
    axes = np.atleast_2d(fig.subplots(n_rows, n_cols, squeeze=False))
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            proj = grid.projections[r][c]
            if proj is None:
                ax.set_axis_off()
                continue
            _crop_cell(ax, proj, grid.receptive_fields[r][c], grid.hz, grid.seconds, True,
                       show_y=(c == 0), show_x=(r == n_rows - 1), logmel=logmel)
            head = f"epoch {grid.epochs[c]}\n" if r == 0 else ""
            ax.set_title(f"{head}{float(grid.activations[r][c]):.3g}", fontsize=6, pad=2)
        rank = grid.row_ranks[r]
        axes[r, 0].set_ylabel(f"unit {grid.row_units[r]}" + (f" #{rank + 1}" if rank else "") + "\nHz",
                              fontsize=7, labelpad=1)
    fig.suptitle(title or f"{grid.layer}: strongest activation per unit and epoch ({grid.mode}); "
                 f"{PROJECTION_LABEL}, each cell centred at zero", fontsize=9)
    fig.subplots_adjust(wspace=0.35, hspace=0.6)
    return fig
