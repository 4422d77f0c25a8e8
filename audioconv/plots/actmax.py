"""Activation maximisation results: the optimised log-mel of each target (s/Hz axes) over its score curve."""
from __future__ import annotations

from matplotlib.figure import Figure

from audioconv.plots.explanations import show_map
from audioconv.plots.figure import INPUT_CMAP, as_numpy, input_colorbar, new_figure
from audioconv.plots.spectrogram import label_time_hz

__all__ = ["plot_actmax"]


def plot_actmax(results, logmel=None, title: str = "") -> Figure:
    """One column per :class:`~audioconv.interpret.actmax.ActMaxResult`: its log-mel (dB) above its score per step.

    Args:
        results: one result or a sequence of them (e.g. several units of a layer).
        logmel: optional front end for ``specshow`` keywords; title: figure title.
    """
    results = [results] if hasattr(results, "logmel") else list(results)
    if not results:
        raise ValueError("no activation-maximisation results to plot")
    n = len(results)
    fig = new_figure(4.2 * n, 6.0)
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": [3, 1.2]})
    for j, r in enumerate(results):
        ax = axes[0, j]
        m = show_map(ax, as_numpy(r.logmel), r.hz, r.seconds, logmel, cmap=INPUT_CMAP)
        input_colorbar(fig, m, ax, logmel)
        ax.set_title(f"{r.target}\nscore {r.score_start:.3g} → {r.score:.3g}", fontsize=9)
        if r.hz is not None and r.seconds is not None:
            label_time_hz([ax])
            if j:
                ax.set_ylabel("")
        curve = r.history.get("score", [])
        axes[1, j].plot(range(1, len(curve) + 1), curve, color="tab:blue", linewidth=1.0)
        axes[1, j].axhline(r.score_start, color="gray", linestyle=":", linewidth=1.0, label="start")
        axes[1, j].set_xlabel("step")
        axes[1, j].set_ylabel("score (jittered)" if j == 0 else "")
        axes[1, j].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig
