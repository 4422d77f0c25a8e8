"""Explanation maps on the log-mel plane: Grad-CAM / guided Grad-CAM, and several methods side by side.

Signed maps (gradient, guided backprop, deconvnet, guided Grad-CAM) use the projection colour map
centred at zero; Grad-CAM is non-negative and drawn over a grey copy of the input. Axes are seconds
and Hz when the axes are known, else cells.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from audioconv.plots.figure import INPUT_CMAP, PROJECTION_CMAP, as_numpy, input_colorbar, new_figure, symmetric_limit
from audioconv.plots.spectrogram import label_time_hz, show_spectrogram

__all__ = ["CAM_CMAP", "METHOD_TITLES", "show_map", "nearest_resize", "plot_grad_cam", "plot_explanations", "draw_method_map"]

CAM_CMAP = "inferno"
METHOD_TITLES = {"gradient": "gradient", "guided": "guided backprop", "deconv": "deconvnet", "grad_cam": "Grad-CAM",
           "guided_grad_cam": "guided Grad-CAM"}


def nearest_resize(data, shape: tuple[int, int]) -> np.ndarray:
    """``(F', T')`` → ``shape`` by nearest neighbour (source cell ``floor(i · F' / F)``, as ``torch`` ``"nearest"``)."""
    a = as_numpy(data)
    rows = np.floor(np.arange(shape[0]) * a.shape[0] / shape[0]).astype(int)
    cols = np.floor(np.arange(shape[1]) * a.shape[1] / shape[1]).astype(int)
    return a[np.ix_(rows, cols)]


def show_map(ax, data, hz=None, seconds=None, logmel=None, **kwargs):
    """Draw ``(F, T)`` data with s/Hz axes (:func:`show_spectrogram`) or, without axes, in cells."""
    data = as_numpy(data)
    if hz is not None and seconds is not None:
        return show_spectrogram(ax, data, hz, seconds, logmel=logmel, **kwargs)
    m = ax.imshow(data, origin="lower", aspect="auto", interpolation="nearest", **kwargs)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel bin")
    return m


def _label(axes, hz, seconds) -> None:
    if hz is not None and seconds is not None:
        label_time_hz(axes)


def plot_grad_cam(spectrogram, cam, guided=None, hz=None, seconds=None, title: str = "", logmel=None) -> Figure:
    """Input | Grad-CAM over the input | guided Grad-CAM (if given).

    Args:
        spectrogram: ``(F, T)`` log-mel dB.
        cam: Grad-CAM ``(F, T)`` (``upsample=True``) or at the layer's ``(F', T')`` (drawn by nearest
            neighbour over the input's cells).
        guided: guided Grad-CAM ``(F, T)`` or ``None``.
        hz, seconds: the spectrogram's axes (``(F,)`` Hz, ``(T,)`` s) or ``None`` (cells).
        title: figure title; logmel: optional front end for ``specshow`` keywords.
    """
    spec = as_numpy(spectrogram)
    cam = as_numpy(cam)
    if cam.shape != spec.shape:
        cam = nearest_resize(cam, spec.shape)
    panels = 2 if guided is None else 3
    fig = new_figure(5.2 * panels, 4.0)
    axes = fig.subplots(1, panels, sharex=True, sharey=True)
    m = show_map(axes[0], spec, hz, seconds, logmel, cmap=INPUT_CMAP)
    input_colorbar(fig, m, axes[0], logmel)
    axes[0].set_title("input (log-mel)")
    show_map(axes[1], spec, hz, seconds, logmel, cmap="gray")
    top = float(np.nanmax(cam)) if cam.size and np.nanmax(cam) > 0 else 1.0
    m = show_map(axes[1], np.ma.masked_where(cam <= 0.05 * top, cam), hz, seconds, logmel, cmap=CAM_CMAP,
                 vmin=0.0, vmax=top, alpha=0.75)
    fig.colorbar(m, ax=axes[1], label="Grad-CAM (a.u.)")
    axes[1].set_title("Grad-CAM")
    if guided is not None:
        g = as_numpy(guided)
        lim = symmetric_limit(g)
        m = show_map(axes[2], g, hz, seconds, logmel, cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
        fig.colorbar(m, ax=axes[2], label="guided Grad-CAM (a.u.)")
        axes[2].set_title("guided Grad-CAM")
    _label(axes, hz, seconds)
    if title:
        fig.suptitle(title)
    return fig


def plot_explanations(explanation, index: int = 0, title: str = "", logmel=None) -> Figure:
    """One example's input and every method's map of an :class:`~audioconv.interpret.explain.Explanation`."""
    spec = as_numpy(explanation.spectrograms)
    if not 0 <= int(index) < spec.shape[0]:
        raise ValueError(f"index {index} out of range: the explanation holds {spec.shape[0]} example(s)")
    methods = list(explanation.maps)
    hz, seconds = explanation.hz, explanation.seconds
    fig = new_figure(3.6 * (len(methods) + 1), 3.4)
    axes = fig.subplots(1, len(methods) + 1, sharex=True, sharey=True)
    m = show_map(axes[0], spec[index], hz, seconds, logmel, cmap=INPUT_CMAP)
    input_colorbar(fig, m, axes[0], logmel)
    axes[0].set_title("input (log-mel)")
    for ax, name in zip(axes[1:], methods):
        draw_method_map(fig, ax, name, as_numpy(explanation.maps[name])[index], hz, seconds, logmel)
    _label(axes, hz, seconds)
    if title:
        fig.suptitle(title)
    return fig


def draw_method_map(fig, ax, method: str, data, hz, seconds, logmel=None, colorbar: bool = True, title: str | None = None):
    """One method's map on ``ax``: Grad-CAM in :data:`CAM_CMAP` from 0, the others centred at zero."""
    data = as_numpy(data)
    if method == "grad_cam":
        top = float(np.nanmax(data)) if data.size and np.nanmax(data) > 0 else 1.0
        m = show_map(ax, data, hz, seconds, logmel, cmap=CAM_CMAP, vmin=0.0, vmax=top)
    else:
        lim = symmetric_limit(data)
        m = show_map(ax, data, hz, seconds, logmel, cmap=PROJECTION_CMAP, vmin=-lim, vmax=lim)
    if colorbar:
        fig.colorbar(m, ax=ax)
    ax.set_title(METHOD_TITLES.get(method, method) if title is None else title)
    return m
