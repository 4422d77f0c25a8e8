"""Grids of receptive-field crops: the top-k activations of each unit (Zeiler & Fergus Fig. 2) and
their evolution across training epochs (Fig. 4). Each crop sits at its place on the full s × Hz axes.

Made to be read: every row has Hz ticks on its first cell and a colour bar at its end; every crop has
its own time ticks (crops come from different clips and times); every hit is titled with its rank,
activation, label and the clip it comes from. The projections of one row share one colour scale
centred at zero (so a weaker hit looks weaker); the input patches of a top-k grid share one dB
scale over the whole figure.
"""
from __future__ import annotations

import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

from audioconv.plots.figure import (INPUT_CMAP, PROJECTION_CMAP, PROJECTION_LABEL, as_numpy, input_label, new_figure,
                                    symmetric_limit)
from audioconv.plots.spectrogram import show_spectrogram

__all__ = ["plot_topk_grid", "plot_evolution_grid", "clip_name", "hz_label"]

_CELL_W, _CELL_H = 1.55, 1.25  # inches per crop
_TITLE_PT, _TICK_PT, _LABEL_PT = 7, 6.5, 7.5
NO_HIT = "no activation\nabove zero"


def clip_name(clip_id, width: int = 24) -> str:
    """A short, readable name for a clip id: the file name without folders or suffix (``@offset`` kept),
    middle-truncated to ``width`` characters; ``""`` for ``None``."""
    if clip_id is None:
        return ""
    text = str(clip_id)
    base, at, offset = text.partition("@")
    name = os.path.splitext(os.path.basename(base))[0] + (at + offset if at else "")
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2:]


def hz_label(hz: float) -> str:
    """``440`` → ``"440"``, ``2675.3`` → ``"2.7k"``."""
    return f"{hz:.0f}" if hz < 1000 else f"{hz / 1000:.1f}k"


def _hz_ticks(ax, hz, f_range, show_labels: bool) -> None:
    """Two or three Hz ticks inside the crop's band (its lowest, middle and highest mel-bin centre)."""
    f0, f1 = (int(v) for v in f_range)
    rows = sorted({f0, (f0 + f1 - 1) // 2, f1 - 1})
    values = [float(hz[r]) for r in rows]
    ax.yaxis.set_major_locator(FixedLocator(values))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set_yticklabels([hz_label(v) for v in values] if show_labels else [])


def _crop_cell(ax, data, rf, hz, seconds, logmel, show_hz: bool, **colours):
    """Draw one crop at its place; Hz ticks (labelled when ``show_hz``) and ~2 time ticks."""
    f0, f1, t0, t1 = (int(v) for v in rf)
    mesh = show_spectrogram(ax, data, hz, seconds, (f0, f1), (t0, t1), logmel=logmel, **colours)
    ax.tick_params(labelsize=_TICK_PT, length=2, pad=1)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=2, steps=[1, 2, 5, 10]))
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.2f}")
    _hz_ticks(ax, hz, (f0, f1), show_hz)
    ax.set_xlabel("")
    ax.set_ylabel("")
    return mesh


def _empty_cell(ax, text: str = NO_HIT) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=_TITLE_PT, color="0.45", transform=ax.transAxes)


def _grid_axes(fig: Figure, n_blocks: int, rows_per_block: int, n_cols: int, height_in: float):
    """``(axes (n_blocks * rows_per_block, n_cols), colour-bar axes (n_blocks * rows_per_block,))``: blocks
    of rows close together (a unit's projections over its patches), a narrow colour-bar column at the end."""
    outer = fig.add_gridspec(n_blocks, 1, hspace=0.3 if rows_per_block > 1 else 0.75,
                             top=1 - 0.95 / height_in, bottom=0.45 / height_in, left=0.08, right=0.94)
    axes, bars = [], []
    for b in range(n_blocks):
        inner = outer[b].subgridspec(rows_per_block, n_cols + 1, width_ratios=[1] * n_cols + [0.08],
                                     wspace=0.45, hspace=0.12)
        for r in range(rows_per_block):
            axes.append([fig.add_subplot(inner[r, c]) for c in range(n_cols)])
            bars.append(fig.add_subplot(inner[r, n_cols], label="<colorbar>"))
    return np.array(axes), np.array(bars)


def _colour_bar(fig: Figure, mesh, cax, label: str) -> None:
    bar = fig.colorbar(mesh, cax=cax)
    bar.set_label(label, fontsize=_TICK_PT, labelpad=2)
    bar.ax.tick_params(labelsize=_TICK_PT, length=2, pad=1)


def _hit_title(rank: int, score: float, label, clip_id) -> str:
    first = f"#{rank + 1}  {score:.3g}" + (f"  {label}" if label not in (None, "") else "")
    return first + "\n" + clip_name(clip_id)


def plot_topk_grid(topk, units=None, logmel=None, title: str | None = None) -> Figure:
    """Per unit two rows: its k projections (cropped to the receptive field), and under each the input patch.

    Args:
        topk: a :class:`audioconv.interpret.topk.TopK` (with Hz/s axes: a model with a LogMel front end).
        units: rows to draw as positions into ``topk.channels`` (default all).
        logmel: optional front end passed to specshow.

    Returns:
        The Figure. Column ``r`` is the rank-``r`` hit; its projection cell is titled
        ``"#r+1  activation  label"`` and the clip's name. The projections of a unit share one scale
        centred at zero (colour bar "projection (a.u.)" at the row's end); the patches share one dB
        scale (colour bar "dB", or the front end's normalisation: ``input_label``). The first cell of
        every row carries Hz ticks and the row's name ("unit C" / "input"); every crop has its own
        time ticks (s). A unit without hits (``n_hits`` 0) shows "no activation above zero".
    """
    if topk.hz is None or topk.seconds is None:
        raise ValueError("the top-k result has no Hz/seconds axes (its model has no LogMel front end); "
                         "set topk.hz (F,) and topk.seconds (T,) before plotting")
    channels = as_numpy(topk.channels)
    rows = list(range(len(channels))) if units is None else [int(u) for u in units]
    if not rows:
        raise ValueError("no units to draw")
    bad = [u for u in rows if not 0 <= u < len(channels)]
    if bad:
        raise ValueError(f"unit row {bad[0]} out of range 0..{len(channels) - 1}")
    k = topk.k
    n_hits = [int(n) for n in as_numpy(topk.n_hits)] if getattr(topk, "n_hits", None) is not None else [k] * len(channels)
    patches = [p for u in rows for p in topk.patches[u][: n_hits[u]] if p is not None]
    db_range = (min(float(np.min(p)) for p in patches), max(float(np.max(p)) for p in patches)) if patches else (0, 1)
    height = 2 * _CELL_H * len(rows) + 1.2
    fig = new_figure(_CELL_W * k + 1.6, height)
    axes, bars = _grid_axes(fig, len(rows), 2, k, height)
    for i, u in enumerate(rows):
        _topk_unit_rows(fig, axes[2 * i], axes[2 * i + 1], bars[2 * i], bars[2 * i + 1], topk, u, n_hits[u],
                        db_range, logmel)
    fig.suptitle(title or f"{topk.layer}: top {k} activations per unit ({topk.mode} projections above, the input "
                 f"under each receptive field below)", fontsize=9)
    return fig


def _topk_unit_rows(fig, proj_axes, patch_axes, proj_bar, patch_bar, topk, u: int, n: int, db_range, logmel) -> None:
    """The two rows of unit ``u``: ``n`` projections (one shared centred scale) over their input patches."""
    channel = int(as_numpy(topk.channels)[u])
    lim = max([symmetric_limit(p) for p in topk.projections[u][:n]] or [1.0])
    mesh_p = mesh_x = None
    for r in range(topk.k):
        if r >= n:
            _empty_cell(proj_axes[r], NO_HIT if r == 0 else "")
            _empty_cell(patch_axes[r], "")
            continue
        rf = topk.receptive_fields[u][r]
        mesh_p = _crop_cell(proj_axes[r], topk.projections[u][r], rf, topk.hz, topk.seconds, logmel, r == 0,
                            cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
        mesh_x = _crop_cell(patch_axes[r], topk.patches[u][r], rf, topk.hz, topk.seconds, logmel, r == 0,
                            cmap=INPUT_CMAP, vmin=db_range[0], vmax=db_range[1])
        proj_axes[r].tick_params(axis="x", labelbottom=False)  # the patch below has the same times
        label = topk.labels[u][r] if topk.labels is not None else None
        proj_axes[r].set_title(_hit_title(r, float(topk.scores[u][r]), label, topk.clip_ids[u][r]),
                               fontsize=_TITLE_PT, pad=2)
    proj_axes[0].set_ylabel(f"unit {channel}\nHz", fontsize=_LABEL_PT, labelpad=1)
    patch_axes[0].set_ylabel("input\nHz", fontsize=_LABEL_PT, labelpad=1)
    patch_axes[0].set_xlabel("time (s)", fontsize=_TICK_PT, labelpad=1)
    for mesh, cax, label in ((mesh_p, proj_bar, PROJECTION_LABEL), (mesh_x, patch_bar, input_label(logmel))):
        if mesh is None:
            cax.set_axis_off()
        else:
            _colour_bar(fig, mesh, cax, label)


def plot_evolution_grid(grid, logmel=None, title: str | None = None) -> Figure:
    """Units × epochs: the projection of each unit's strongest activation over the probe set per epoch.

    Args:
        grid: an :class:`audioconv.interpret.evolve.EvolutionGrid` (``layer``, ``epochs``, ``row_units``,
            ``row_ranks``, ``projections[row][col]``, ``receptive_fields[row][col]``,
            ``activations[row][col]``, optional ``clip_ids[row][col]``, ``hz``, ``seconds``) — a row
            per (unit, rank), a column per epoch; a ``None`` projection is an epoch without a hit.
        logmel: optional front end passed to specshow.

    Returns:
        The Figure (Zeiler & Fergus Fig. 4 layout). The cells of a row share one ``RdBu_r`` scale
        centred at zero, with a colour bar at the row's end; each cell is titled with its activation
        and clip, the top row with the epoch; the first cell of every row has Hz ticks.
    """
    n_rows, n_cols = len(grid.row_units), len(grid.epochs)
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"empty evolution grid: {n_rows} rows × {n_cols} epochs")
    clip_ids = getattr(grid, "clip_ids", None)
    height = (_CELL_H + 0.2) * n_rows + 1.0
    fig = new_figure(_CELL_W * n_cols + 1.6, height)
    axes, bars = _grid_axes(fig, n_rows, 1, n_cols, height)
    for r in range(n_rows):
        cells = [p for p in grid.projections[r] if p is not None]
        lim = max([symmetric_limit(p) for p in cells] or [1.0])
        first = next((c for c, p in enumerate(grid.projections[r]) if p is not None), 0)  # gets the Hz labels
        mesh = None
        for c in range(n_cols):
            ax, proj = axes[r, c], grid.projections[r][c]
            head = f"epoch {grid.epochs[c]}\n" if r == 0 else ""
            if proj is None:
                _empty_cell(ax)
                ax.set_title(head.strip(), fontsize=_TITLE_PT, pad=2)
                continue
            mesh = _crop_cell(ax, proj, grid.receptive_fields[r][c], grid.hz, grid.seconds, logmel, c == first,
                              cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
            clip = clip_name(clip_ids[r][c]) if clip_ids is not None else ""
            ax.set_title(f"{head}{float(grid.activations[r][c]):.3g}" + (f"\n{clip}" if clip else ""),
                         fontsize=_TITLE_PT, pad=2)
        rank = grid.row_ranks[r]
        axes[r, first].set_ylabel(f"unit {grid.row_units[r]}" + (f" #{rank + 1}" if rank else "") + "\nHz",
                              fontsize=_LABEL_PT, labelpad=1)
        if mesh is None:
            bars[r].set_axis_off()
        else:
            _colour_bar(fig, mesh, bars[r], PROJECTION_LABEL)
    axes[-1, 0].set_xlabel("time (s)", fontsize=_TICK_PT, labelpad=1)
    fig.suptitle(title or f"{grid.layer}: strongest activation per unit and epoch ({grid.mode}); "
                 f"{PROJECTION_LABEL}, one scale per row, centred at zero", fontsize=9)
    return fig
