"""Figures for projections: real axes (seconds on x, Hz on a mel-spaced y axis) via librosa's specshow.

Every function builds a :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot state, no
display needed), optionally saves it as PNG to ``path``, and returns the Figure so callers and
tests can inspect it. Projections are signed, so they are drawn with a diverging colour map
centred at zero (``vmin = -vmax``); inputs are log-mel dB.

Cells are drawn with explicit cell *edges*: frequency edges halfway between mel-bin centres on the
HTK mel scale, time edges halfway between frame centres, so a crop of rows ``f0:f1`` and frames
``t0:t1`` sits exactly where it sits in the full picture.
"""
from __future__ import annotations

import os
from pathlib import Path

import librosa.display
import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = [
    "PROJECTION_CMAP", "INPUT_CMAP", "hz_edges", "seconds_edges", "show_spectrogram",
    "plot_projection", "plot_topk_grid", "plot_evolution_grid", "plot_convergence", "plot_occlusion",
]

PROJECTION_CMAP = "RdBu_r"
INPUT_CMAP = "magma"
_DB_LABEL = "dB"
_PROJ_LABEL = "projection (a.u.)"


# ---- axes -------------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def hz_edges(hz) -> np.ndarray:
    """Cell edges (Hz) around mel-bin centres ``hz`` ``(F,)`` → ``(F + 1,)``, halfway on the HTK mel scale."""
    hz = _np(hz).astype(np.float64)
    if hz.ndim != 1 or hz.size < 1:
        raise ValueError(f"hz must be a non-empty 1-D array of bin centres, got shape {hz.shape}")
    mel = 2595.0 * np.log10(1.0 + hz / 700.0)
    step = np.diff(mel) if mel.size > 1 else np.array([1.0])
    mid = (mel[:-1] + mel[1:]) / 2
    edges = np.concatenate([[mel[0] - step[0] / 2], mid, [mel[-1] + step[-1] / 2]])
    return np.maximum(700.0 * (10.0 ** (edges / 2595.0) - 1.0), 0.0)


def seconds_edges(seconds, hop_s: float | None = None) -> np.ndarray:
    """Cell edges (s) around frame centres ``seconds`` ``(T,)`` → ``(T + 1,)``."""
    s = _np(seconds).astype(np.float64)
    if s.ndim != 1 or s.size < 1:
        raise ValueError(f"seconds must be a non-empty 1-D array of frame centres, got shape {s.shape}")
    if hop_s is None:
        hop_s = float(s[1] - s[0]) if s.size > 1 else 0.01
    return np.concatenate([s - hop_s / 2, [s[-1] + hop_s / 2]])


def show_spectrogram(ax, data, hz, seconds, f_range=None, t_range=None, hop_s=None, logmel=None, **kwargs):
    """Draw ``data`` ``(f1-f0, t1-t0)`` with librosa ``specshow`` at its place on the (F, T) grid.

    Args:
        ax: matplotlib Axes.
        data: values on log-mel cells (dB, projection, ...), rows = mel bins (low → high).
        hz: ``(F,)`` centre frequency (Hz) of every mel bin of the *full* spectrogram.
        seconds: ``(T,)`` centre time (s) of every frame of the full spectrogram.
        f_range, t_range: ``(f0, f1)`` / ``(t0, t1)`` half-open cell ranges ``data`` covers
            (default: all).
        hop_s: frame hop in seconds (default from ``seconds``).
        logmel: optional :class:`~audioconv.features.LogMel`; its ``specshow_kwargs()`` are passed
            on (the explicit cell edges still decide where cells are drawn).
        **kwargs: passed to ``specshow`` / ``pcolormesh`` (``cmap``, ``vmin``, ``vmax``, ``norm``...).

    Returns:
        The QuadMesh. The x axis is labelled "Time (seconds)", the y axis "Hz" with Hz tick labels.
    """
    data = _np(data)
    fe = hz_edges(hz)
    te = seconds_edges(seconds, hop_s)
    f0, f1 = f_range if f_range is not None else (0, len(fe) - 1)
    t0, t1 = t_range if t_range is not None else (0, len(te) - 1)
    if data.shape != (f1 - f0, t1 - t0):
        raise ValueError(f"data shape {data.shape} does not match the cell ranges f {f0}:{f1}, t {t0}:{t1}")
    opts = dict(logmel.specshow_kwargs()) if logmel is not None else {}
    opts.update(x_axis="s", y_axis="mel", x_coords=te[t0:t1 + 1], y_coords=fe[f0:f1 + 1], ax=ax)
    opts.update(kwargs)
    return librosa.display.specshow(data, **opts)


def _symmetric_limit(values) -> float:
    v = np.nanmax(np.abs(_np(values))) if np.size(values) else 0.0
    return float(v) if np.isfinite(v) and v > 0 else 1.0


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=fig.dpi, bbox_inches="tight")


def _field(obj, name):
    if isinstance(obj, dict):
        return obj[name]
    return getattr(obj, name)


# ---- one projection -----------------------------------------------------------------------------
def plot_projection(projection, index=0, path: str | os.PathLike | None = None, unit: int | None = None,
                    logmel=None, title: str | None = None) -> Figure:
    """Input | projection | overlay for one example and one unit of a ``Projection``.

    Args:
        projection: a :class:`audioconv.interpret.projector.Projection` (fields ``spectrograms (B, F, T)``,
            ``maps (B, K, F, T)``, ``activations (B, K)``, ``positions (B, K, 2)``,
            ``receptive_fields (B, K, 4)``, ``layer``, ``channels (K,)``, ``mode``, ``hz``, ``seconds``).
        index: example ``b``, or a pair ``(b, k)``.
        path: PNG to write (folders created); ``None`` writes nothing.
        unit: which of the K units (position in ``channels``, not the channel number); default 0 or
            from ``index``.
        logmel: optional front end whose ``specshow_kwargs()`` are passed to specshow.
        title: figure title; default names layer, channel, mode, activation and position.

    Returns:
        The Figure: three axes with colour bars labelled "dB" and "projection (a.u.)"; the
        projection and overlay use ``RdBu_r`` with ``vmin = -vmax``.
    """
    if isinstance(index, (tuple, list)):
        b, k = int(index[0]), int(index[1])
    else:
        b, k = int(index), int(unit or 0)
    maps = _np(_field(projection, "maps"))
    spec = _np(_field(projection, "spectrograms"))
    n_b, n_k = maps.shape[:2]
    if not 0 <= b < n_b:
        raise ValueError(f"index {b} out of range: the projection holds {n_b} example(s)")
    if not 0 <= k < n_k:
        raise ValueError(f"unit {k} out of range: the projection holds {n_k} unit(s)")
    if _field(projection, "hz") is None or _field(projection, "seconds") is None:
        raise ValueError("the projection has no Hz/seconds axes (its model has no LogMel front end); "
                         "set projection.hz (F,) and projection.seconds (T,) before plotting")
    hz, seconds = _np(_field(projection, "hz")), _np(_field(projection, "seconds"))
    chans = _np(_field(projection, "channels"))
    channel = int(chans[b, k] if chans.ndim == 2 else chans[k])
    act = float(_np(_field(projection, "activations"))[b, k])
    pos = _np(_field(projection, "positions"))[b, k]
    f0, f1, t0, t1 = (int(v) for v in _np(_field(projection, "receptive_fields"))[b, k])
    x, p = spec[b], maps[b, k]
    lim = _symmetric_limit(p)

    fig = _new_figure(15, 4.2)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    m_in = show_spectrogram(axes[0], x, hz, seconds, logmel=logmel, cmap=INPUT_CMAP)
    fig.colorbar(m_in, ax=axes[0], label=_DB_LABEL, format="%+.0f")
    axes[0].set_title("input (log-mel)")
    m_p = show_spectrogram(axes[1], p, hz, seconds, logmel=logmel, cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
    fig.colorbar(m_p, ax=axes[1], label=_PROJ_LABEL)
    axes[1].set_title(f"projection ({_field(projection, 'mode')})")
    show_spectrogram(axes[2], x, hz, seconds, logmel=logmel, cmap="gray")
    shown = np.ma.masked_where(np.abs(p) < 0.1 * lim, p)
    m_o = show_spectrogram(axes[2], shown, hz, seconds, logmel=logmel, cmap=PROJECTION_CMAP,
                           vmin=-lim, vmax=lim, alpha=0.8)
    fig.colorbar(m_o, ax=axes[2], label=_PROJ_LABEL)
    axes[2].set_title("overlay")
    fe, te = hz_edges(hz), seconds_edges(seconds)
    if (f1 - f0, t1 - t0) != x.shape:  # outline the receptive field unless it is the whole input
        for ax in axes[1:]:
            ax.add_patch(Rectangle((te[t0], fe[f0]), te[t1] - te[t0], fe[f1] - fe[f0],
                                   fill=False, edgecolor="black", linewidth=1.0, linestyle="--"))
    for i, ax in enumerate(axes):
        ax.set_xlabel("Time (s)")
        ax.set_ylabel("Frequency (Hz)" if i == 0 else "")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    if title is None:
        t_c = float(seconds[(t0 + t1 - 1) // 2])
        f_c = float(hz[(f0 + f1 - 1) // 2])
        title = (f"{_field(projection, 'layer')} unit {channel}: activation {act:.3g} at feature position "
                 f"({int(pos[0])}, {int(pos[1])}) ≈ {t_c:.2f} s, {f_c:.0f} Hz")
    fig.suptitle(title)
    _save(fig, path)
    return fig


# ---- grids ----------------------------------------------------------------------------------------
def _crop_cell(ax, data, rf, hz, seconds, signed: bool, show_y: bool, show_x: bool, logmel=None):
    f0, f1, t0, t1 = (int(v) for v in rf)
    if signed:
        lim = _symmetric_limit(data)
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


def plot_topk_grid(topk, path: str | os.PathLike | None = None, units=None, logmel=None,
                   title: str | None = None) -> Figure:
    """One row per unit: its k projections (cropped to the receptive field) then the k input patches.

    Args:
        topk: a :class:`audioconv.interpret.topk.TopK`.
        path: PNG to write; ``None`` writes nothing.
        units: rows to draw as positions into ``topk.channels`` (default all).
        logmel: optional front end passed to specshow.

    Returns:
        The Figure. Each projection cell has its own diverging scale centred at zero; each patch
        cell is in dB. Cell titles give the activation and the clip's label; the left column of each
        half carries Hz ticks ("Hz" label), the bottom row time ticks ("Time (s)").
    """
    channels = _np(topk.channels)
    rows = list(range(len(channels))) if units is None else [int(u) for u in units]
    if not rows:
        raise ValueError("no units to draw")
    k = topk.k
    fig = _new_figure(1.15 * 2 * k + 1.2, 1.25 * len(rows) + 0.8)
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
                 f"left: projections ({_PROJ_LABEL}, centred), right: input patches ({_DB_LABEL})", fontsize=9)
    fig.subplots_adjust(wspace=0.35, hspace=0.6)
    _save(fig, path)
    return fig


def plot_evolution_grid(grid, path: str | os.PathLike | None = None, logmel=None,
                        title: str | None = None) -> Figure:
    """Units × epochs: the projection of each unit's strongest activation over the probe set per epoch.

    Args:
        grid: an :class:`audioconv.interpret.evolve.EvolutionGrid` (``layer``, ``epochs``, ``units``,
            ``ranks``, ``projections[row][col]``, ``receptive_fields[row][col]``,
            ``activations[row][col]``, ``hz``, ``seconds``) — a row per (unit, rank), a column per epoch.
        path: PNG to write; ``None`` writes nothing.

    Returns:
        The Figure (Zeiler & Fergus Fig. 4 layout); each cell is centred at zero in ``RdBu_r``.
    """
    n_rows, n_cols = len(grid.row_units), len(grid.epochs)
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"empty evolution grid: {n_rows} rows × {n_cols} epochs")
    fig = _new_figure(1.15 * n_cols + 1.2, 1.2 * n_rows + 0.8)
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
                 f"{_PROJ_LABEL}, each cell centred at zero", fontsize=9)
    fig.subplots_adjust(wspace=0.35, hspace=0.6)
    _save(fig, path)
    return fig


def plot_convergence(cka_by_layer: dict, epochs, path: str | os.PathLike | None = None,
                     title: str | None = None) -> Figure:
    """Linear CKA of each layer's activations at each epoch vs the final epoch (one line per layer)."""
    epochs = [int(e) for e in epochs]
    if not cka_by_layer:
        raise ValueError("cka_by_layer is empty")
    fig = _new_figure(6.5, 4.0)
    ax = fig.subplots()
    for layer, values in cka_by_layer.items():
        values = [float("nan") if v is None else float(v) for v in values]
        if len(values) != len(epochs):
            raise ValueError(f"layer {layer!r} has {len(values)} CKA values for {len(epochs)} epochs")
        ax.plot(epochs, values, marker="o", label=layer)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"linear CKA vs epoch {epochs[-1]}")
    ax.set_ylim(0.0, 1.05)
    ax.set_xticks(epochs if len(epochs) <= 20 else ax.get_xticks())
    ax.grid(alpha=0.3)
    ax.legend(title="layer")
    ax.set_title(title or "layer convergence (1 = same representation as the final epoch)")
    _save(fig, path)
    return fig


def plot_occlusion(spectrogram, probabilities, hz, seconds, patch, stride, path=None, target_name: str = "",
                   logmel=None) -> Figure:
    """Input log-mel next to its occlusion map (Zeiler & Fergus Fig. 7).

    Args:
        spectrogram: ``(F, T)`` log-mel dB.
        probabilities: ``(F', T')`` target probability per patch placement (from
            :func:`audioconv.interpret.occlusion.occlusion`); cell ``(i, j)`` is drawn over the input cells
            its patch centre covers.
        hz, seconds: axes of the spectrogram; ``patch``, ``stride``: ``(freq_bins, frames)``.
    """
    from audioconv.interpret.occlusion import patch_starts

    spec = _np(spectrogram)
    prob = _np(probabilities)
    n_f, n_t = spec.shape
    fs = patch_starts(n_f, patch[0], stride[0]) + (patch[0] - 1) / 2.0  # patch centres (cell units)
    ts = patch_starts(n_t, patch[1], stride[1]) + (patch[1] - 1) / 2.0
    if prob.shape != (len(fs), len(ts)):
        raise ValueError(f"probabilities shape {prob.shape} does not match patch/stride placements "
                         f"({len(fs)}, {len(ts)})")
    hz_c = np.interp(fs, np.arange(n_f), _np(hz))
    s_c = np.interp(ts, np.arange(n_t), _np(seconds))
    fig = _new_figure(11, 4.0)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    m = show_spectrogram(axes[0], spec, hz, seconds, logmel=logmel, cmap=INPUT_CMAP)
    fig.colorbar(m, ax=axes[0], label=_DB_LABEL, format="%+.0f")
    m2 = librosa.display.specshow(prob, x_coords=s_c, y_coords=hz_c, x_axis="s", y_axis="mel",
                                  ax=axes[1], cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(m2, ax=axes[1], label=f"p({target_name or 'target'})")
    axes[0].set_title("input (log-mel)")
    axes[1].set_title(f"occlusion: patch {patch[0]} bins × {patch[1]} frames")
    for i, ax in enumerate(axes):
        ax.set_xlabel("Time (s)")
        ax.set_ylabel("Frequency (Hz)" if i == 0 else "")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    _save(fig, path)
    return fig
