"""Pictures for augmentation previews: a grid of the model's own log-mel spectrograms with real axes."""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np
import torch

from audioconv.features import LogMel, LogMelConfig
from audioconv.io.files import atomic_write

__all__ = ["plot_logmels"]

PNG_METADATA = {
    "Title": "log-mel spectrograms",
    "Description": "x: time (s); y: frequency (Hz), mel scale; colour: log-mel power (dB)",
}


def _as_batch(wav) -> torch.Tensor:
    """One waveform ``(time,)`` or ``(channels, time)`` (tensor or array) as ``(1, channels, time)`` float32 CPU."""
    w = wav.detach().to("cpu", torch.float32) if isinstance(wav, torch.Tensor) else torch.as_tensor(
        np.asarray(wav), dtype=torch.float32)
    if w.dim() == 1:
        w = w[None]
    if w.dim() != 2:
        raise ValueError(f"each waveform must be (time,) or (channels, time), got shape {tuple(w.shape)}")
    return w[None]


def plot_logmels(wavs: Sequence, sample_rate: int, titles: Sequence[str], path: str | os.PathLike | None = None,
                 front_end: LogMel | None = None, ncols: int = 3):
    """A grid of log-mel spectrograms, one per waveform, as the model's front end computes them.

    Each panel is ``front_end(wav)`` (``audioconv.features.LogMel``: HTK mel scale, dB re full
    scale floored at each clip's peak minus ``top_db``; channels averaged) drawn with
    ``librosa.display.specshow`` on the front end's own axes (``specshow_kwargs``: x in seconds,
    y in Hz on a mel scale). All panels share one colour scale (the loudest cell of all at the
    top, ``top_db`` below it at the bottom), so levels compare.

    Args:
        wavs: waveforms ``(time,)`` or ``(channels, time)``, tensors or arrays, at ``sample_rate`` Hz.
        sample_rate (int): Hz.
        titles: one title per waveform.
        path: if given, the PNG is written there (atomically, folders created).
        front_end (LogMel or None): the front end to draw (default the model's default,
            ``LogMel(LogMelConfig(sample_rate=sample_rate))``); its sample rate must be ``sample_rate``.
        ncols (int): panels per row. Default 3.

    Returns:
        The ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
    """
    import librosa.display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(wavs) != len(titles) or not wavs:
        raise ValueError(f"need one title per waveform and at least one waveform, got {len(wavs)} "
                         f"waveforms and {len(titles)} titles")
    front_end = front_end or LogMel(LogMelConfig(sample_rate=int(sample_rate)))
    if front_end.config.sample_rate != sample_rate:
        raise ValueError(f"front_end runs at {front_end.config.sample_rate} Hz but the waveforms are at "
                         f"{sample_rate} Hz")
    with torch.no_grad():
        dbs = [front_end(_as_batch(w))[0, 0].numpy() for w in wavs]  # (n_mels, frames) each
    top = max(float(d.max()) for d in dbs)
    ncols = min(ncols, len(wavs))
    nrows = math.ceil(len(wavs) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, db, title in zip(axes.flat, dbs, titles):
        image = librosa.display.specshow(db, ax=ax, vmin=top - front_end.config.top_db, vmax=top, cmap="magma",
                                         **front_end.specshow_kwargs())
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="time (s)", ylabel="frequency (Hz)")
    for ax in list(axes.flat)[len(wavs):]:
        ax.set_axis_off()
    reference = "each clip's peak" if front_end.config.relative_to_peak else "full scale"
    fig.colorbar(image, ax=axes, label=f"log-mel power (dB re {reference})", shrink=0.8)
    if path is not None:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=100, metadata=PNG_METADATA)
    return fig
