"""Spectrograms with real axes: seconds on x, Hz on a mel-spaced y axis, drawn with librosa's specshow.

Cells are drawn with explicit cell *edges*: frequency edges halfway between mel-bin centres on the
HTK mel scale (librosa's ``hz_to_mel`` / ``mel_to_hz`` with ``htk=True``), time edges halfway
between frame centres, so a crop of rows ``f0:f1`` and frames ``t0:t1`` sits exactly where it sits
in the full picture.
"""
from __future__ import annotations

import librosa
import librosa.display
import numpy as np
from matplotlib.ticker import MaxNLocator

from audioconv.plots.figure import as_numpy

__all__ = ["hz_edges", "seconds_edges", "show_spectrogram", "label_time_hz"]


def hz_edges(hz) -> np.ndarray:
    """Cell edges (Hz) around mel-bin centres ``hz`` ``(F,)`` → ``(F + 1,)``, halfway on the HTK mel scale."""
    hz = as_numpy(hz).astype(np.float64)
    if hz.ndim != 1 or hz.size < 1:
        raise ValueError(f"hz must be a non-empty 1-D array of bin centres, got shape {hz.shape}")
    mel = librosa.hz_to_mel(hz, htk=True)
    step = np.diff(mel) if mel.size > 1 else np.array([1.0])
    mid = (mel[:-1] + mel[1:]) / 2
    edges = np.concatenate([[mel[0] - step[0] / 2], mid, [mel[-1] + step[-1] / 2]])
    return np.maximum(librosa.mel_to_hz(edges, htk=True), 0.0)


def seconds_edges(seconds, hop_s: float | None = None) -> np.ndarray:
    """Cell edges (s) around frame centres ``seconds`` ``(T,)`` → ``(T + 1,)``."""
    s = as_numpy(seconds).astype(np.float64)
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
    data = as_numpy(data)
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


def label_time_hz(axes) -> None:
    """Label a row of spectrogram axes: "Time (s)" under each, "Frequency (Hz)" on the first, ~5 time ticks."""
    for i, ax in enumerate(axes):
        ax.set_xlabel("Time (s)")
        ax.set_ylabel("Frequency (Hz)" if i == 0 else "")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
