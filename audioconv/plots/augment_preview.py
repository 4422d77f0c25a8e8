"""Pictures for augmentation previews: a grid of log-mel spectrograms with real axes."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

__all__ = ["plot_logmels", "describe_example"]

TOP_DB = 80.0
SHORT_NAMES = {"PolarityInversion": "polarity", "RandomEQ": "EQ", "Reverb": "reverb", "AddNoise": "noise",
               "Gain": "gain", "TimeShift": "shift", "SpeedPerturb": "speed"}


def _mono(wav) -> np.ndarray:
    w = wav.detach().to("cpu", torch.float32) if isinstance(wav, torch.Tensor) else torch.as_tensor(wav)
    if w.dim() == 2:
        w = w.mean(0)
    if w.dim() != 1:
        raise ValueError(f"each waveform must be (time,) or (channels, time), got shape {tuple(w.shape)}")
    return w.numpy()


def plot_logmels(wavs: Sequence, sample_rate: int, titles: Sequence[str], path: str | os.PathLike,
                 n_mels: int = 64, ncols: int = 3):
    """Save a grid of log-mel spectrograms (one per waveform) as a PNG and return the figure.

    Each panel is ``librosa.display.specshow`` of a power mel spectrogram (25 ms windows, 10 ms
    hop, ``n_mels`` bands up to Nyquist) in dB, all panels on one colour scale (0 dB = the
    loudest bin of all, 80 dB range) so levels compare; x in seconds, y in Hz on a mel scale.
    Channels are averaged.

    Args:
        wavs: waveforms ``(time,)`` or ``(channels, time)``, tensors or arrays, at ``sample_rate`` Hz.
        sample_rate (int): Hz.
        titles: one title per waveform.
        path: PNG file to write (folders are created).
        n_mels (int): mel bands. Default 64.
        ncols (int): panels per row. Default 3.

    Returns:
        The ``matplotlib.figure.Figure`` (Agg canvas, not registered with pyplot).
    """
    import librosa
    import librosa.display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if len(wavs) != len(titles) or not wavs:
        raise ValueError(f"need one title per waveform and at least one waveform, got {len(wavs)} "
                         f"waveforms and {len(titles)} titles")
    hop = max(1, round(0.010 * sample_rate))
    n_fft = 2 ** math.ceil(math.log2(0.025 * sample_rate))
    mels = [librosa.feature.melspectrogram(y=_mono(w), sr=sample_rate, n_fft=n_fft, hop_length=hop,
                                           n_mels=n_mels, fmax=sample_rate / 2) for w in wavs]
    ref = max(float(m.max()) for m in mels) or 1.0
    ncols = min(ncols, len(wavs))
    nrows = math.ceil(len(wavs) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, mel, title in zip(axes.flat, mels, titles):
        db = librosa.power_to_db(mel, ref=ref, amin=1e-10, top_db=None)
        image = librosa.display.specshow(db, sr=sample_rate, hop_length=hop, n_fft=n_fft, x_axis="time",
                                         y_axis="mel", fmax=sample_rate / 2, ax=ax, vmin=-TOP_DB, vmax=0.0,
                                         cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set(xlabel="time (s)", ylabel="frequency (Hz)")
    for ax in list(axes.flat)[len(wavs):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, label="power (dB re loudest bin)", shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={
        "Title": "log-mel spectrograms",
        "Description": "x: time (s); y: frequency (Hz), mel scale; colour: power (dB)",
    })
    return fig


def describe_example(chain, params: dict, index: int) -> str:
    """Short names of the transforms of ``chain`` that ``params`` apply to example ``index``,
    e.g. ``"EQ+reverb+noise"`` (``"unchanged"`` if none)."""
    from audioconv.augment.base import _Composite

    def applied(aug, p) -> list[str]:
        if not bool(p["apply"][index]):
            return []
        if isinstance(aug, _Composite):
            return [n for key, t in zip(aug._keys, aug.transforms) for n in applied(t, p[key])]
        return [SHORT_NAMES.get(type(aug).__name__, type(aug).__name__)]

    return "+".join(applied(chain, params)) or "unchanged"
