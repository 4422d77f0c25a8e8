"""The occlusion figure (Zeiler & Fergus Fig. 7): the input log-mel next to its occlusion map."""
from __future__ import annotations

import librosa.display
import numpy as np
from matplotlib.figure import Figure

from audioconv.interpret.occlusion import patch_starts
from audioconv.plots.figure import INPUT_CMAP, as_numpy, input_colorbar, new_figure
from audioconv.plots.spectrogram import label_time_hz, show_spectrogram

__all__ = ["plot_occlusion"]


def plot_occlusion(spectrogram, probabilities, hz, seconds, patch, stride, target_name: str = "",
                   logmel=None) -> Figure:
    """Input log-mel next to its occlusion map (Zeiler & Fergus Fig. 7).

    Args:
        spectrogram: ``(F, T)`` log-mel dB.
        probabilities: ``(F', T')`` target probability per patch placement (from
            :func:`audioconv.interpret.occlusion.occlusion`); cell ``(i, j)`` is drawn over the input cells
            its patch centre covers.
        hz, seconds: axes of the spectrogram; ``patch``, ``stride``: ``(freq_bins, frames)``.
    """
    spec = as_numpy(spectrogram)
    prob = as_numpy(probabilities)
    n_f, n_t = spec.shape
    fs = patch_starts(n_f, patch[0], stride[0]) + (patch[0] - 1) / 2.0  # patch centres (cell units)
    ts = patch_starts(n_t, patch[1], stride[1]) + (patch[1] - 1) / 2.0
    if prob.shape != (len(fs), len(ts)):
        raise ValueError(f"probabilities shape {prob.shape} does not match patch/stride placements "
                         f"({len(fs)}, {len(ts)})")
    hz_c = np.interp(fs, np.arange(n_f), as_numpy(hz))
    s_c = np.interp(ts, np.arange(n_t), as_numpy(seconds))
    fig = new_figure(11, 4.0)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    m = show_spectrogram(axes[0], spec, hz, seconds, logmel=logmel, cmap=INPUT_CMAP)
    input_colorbar(fig, m, axes[0], logmel)
    m2 = librosa.display.specshow(prob, x_coords=s_c, y_coords=hz_c, x_axis="s", y_axis="mel",
                                  ax=axes[1], cmap="viridis", vmin=0.0, vmax=1.0)
    fig.colorbar(m2, ax=axes[1], label=f"p({target_name or 'target'})")
    axes[0].set_title("input (log-mel)")
    axes[1].set_title(f"occlusion: patch {patch[0]} bins × {patch[1]} frames")
    label_time_hz(axes)
    return fig
