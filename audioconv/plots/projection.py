"""One projection: input | projection | overlay, with real axes and the receptive field outlined."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from audioconv.plots.figure import (INPUT_CMAP, PROJECTION_CMAP, PROJECTION_LABEL, as_numpy, field_of,
                                    input_colorbar, new_figure, symmetric_limit)
from audioconv.plots.spectrogram import hz_edges, label_time_hz, seconds_edges, show_spectrogram

__all__ = ["plot_projection"]


def plot_projection(projection, index=0, unit: int | None = None, logmel=None, title: str | None = None) -> Figure:
    """Input | projection | overlay for one example and one unit of a ``Projection``.

    Args:
        projection: a :class:`audioconv.interpret.projector.Projection` (fields ``spectrograms (B, F, T)``,
            ``maps (B, K, F, T)``, ``activations (B, K)``, ``positions (B, K, 2)``,
            ``receptive_fields (B, K, 4)``, ``layer``, ``channels (K,)``, ``mode``, ``hz``, ``seconds``).
        index: example ``b``, or a pair ``(b, k)``.
        unit: which of the K units (position in ``channels``, not the channel number); default 0 or
            from ``index``.
        logmel: optional front end whose ``specshow_kwargs()`` are passed to specshow.
        title: figure title; default names layer, channel, mode, activation and position.

    Returns:
        The Figure: three axes with colour bars labelled "dB" (``input_colorbar``) and "projection (a.u.)"; the
        projection and overlay use ``RdBu_r`` with ``vmin = -vmax``.
    """
    if isinstance(index, (tuple, list)):
        b, k = int(index[0]), int(index[1])
    else:
        b, k = int(index), int(unit or 0)
    maps = as_numpy(field_of(projection, "maps"))
    spec = as_numpy(field_of(projection, "spectrograms"))
    n_b, n_k = maps.shape[:2]
    if not 0 <= b < n_b:
        raise ValueError(f"index {b} out of range: the projection holds {n_b} example(s)")
    if not 0 <= k < n_k:
        raise ValueError(f"unit {k} out of range: the projection holds {n_k} unit(s)")
    if field_of(projection, "hz") is None or field_of(projection, "seconds") is None:
        raise ValueError("the projection has no Hz/seconds axes (its model has no LogMel front end); "
                         "set projection.hz (F,) and projection.seconds (T,) before plotting")
    hz, seconds = as_numpy(field_of(projection, "hz")), as_numpy(field_of(projection, "seconds"))
    chans = as_numpy(field_of(projection, "channels"))
    channel = int(chans[b, k] if chans.ndim == 2 else chans[k])
    act = float(as_numpy(field_of(projection, "activations"))[b, k])
    pos = as_numpy(field_of(projection, "positions"))[b, k]
    f0, f1, t0, t1 = (int(v) for v in as_numpy(field_of(projection, "receptive_fields"))[b, k])
    x, p = spec[b], maps[b, k]

    fig = new_figure(15, 4.2)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    _draw_panels(fig, axes, x, p, hz, seconds, field_of(projection, "mode"), logmel)
    if (f1 - f0, t1 - t0) != x.shape:  # outline the receptive field unless it is the whole input
        fe, te = hz_edges(hz), seconds_edges(seconds)
        for ax in axes[1:]:
            ax.add_patch(Rectangle((te[t0], fe[f0]), te[t1] - te[t0], fe[f1] - fe[f0],
                                   fill=False, edgecolor="black", linewidth=1.0, linestyle="--"))
    label_time_hz(axes)
    if title is None:
        t_c = float(seconds[(t0 + t1 - 1) // 2])
        f_c = float(hz[(f0 + f1 - 1) // 2])
        title = (f"{field_of(projection, 'layer')} unit {channel}: activation {act:.3g} at feature position "
                 f"({int(pos[0])}, {int(pos[1])}) ≈ {t_c:.2f} s, {f_c:.0f} Hz")
    fig.suptitle(title)
    return fig


def _draw_panels(fig, axes, x, p, hz, seconds, mode: str, logmel) -> None:
    """Input ``x`` (dB), projection ``p`` (centred at zero) and ``p`` over a grey ``x``, with colour bars."""
    lim = symmetric_limit(p)
    m_in = show_spectrogram(axes[0], x, hz, seconds, logmel=logmel, cmap=INPUT_CMAP)
    input_colorbar(fig, m_in, axes[0], logmel)
    axes[0].set_title("input (log-mel)")
    m_p = show_spectrogram(axes[1], p, hz, seconds, logmel=logmel, cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
    fig.colorbar(m_p, ax=axes[1], label=PROJECTION_LABEL)
    axes[1].set_title(f"projection ({mode})")
    show_spectrogram(axes[2], x, hz, seconds, logmel=logmel, cmap="gray")
    shown = np.ma.masked_where(np.abs(p) < 0.1 * lim, p)
    m_o = show_spectrogram(axes[2], shown, hz, seconds, logmel=logmel, cmap=PROJECTION_CMAP,
                           vmin=-lim, vmax=lim, alpha=0.8)
    fig.colorbar(m_o, ax=axes[2], label=PROJECTION_LABEL)
    axes[2].set_title("overlay")
