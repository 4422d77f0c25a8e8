"""Figures of the explanation checks: model-randomisation sanity checks (Adebayo et al. 2018) and
deletion / insertion faithfulness curves (Petsiuk et al. 2018)."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from audioconv.plots.explanations import METHOD_TITLES, draw_method_map, show_map
from audioconv.plots.figure import INPUT_CMAP, as_numpy, new_figure

__all__ = ["plot_sanity", "plot_sanity_maps", "plot_faithfulness"]

_COLORS = {"gradient": "tab:blue", "guided": "tab:orange", "deconv": "tab:red", "grad_cam": "tab:green",
           "guided_grad_cam": "tab:purple", "random": "gray", "input": "black"}
_BASELINES = {"random": "random order", "input": "input (loudest first)"}


def plot_sanity(result, absolute: bool = True) -> Figure:
    """Mean Spearman ρ (± std over examples) between trained and randomised maps, per method, per step.

    ``result``: a :class:`~audioconv.interpret.sanity.SanityResult`; ``absolute``: ρ of ``|map|`` (else signed).
    """
    summary = result.summary(absolute)
    steps = list(result.steps)
    x = np.arange(len(steps))
    fig = new_figure(max(6.0, 0.9 * len(steps) + 3), 4.2)
    ax = fig.subplots()
    low = -0.3
    for m in result.methods:
        mean = np.array([np.nan if v is None else v for v in summary[m]["mean"]], dtype=float)
        std = np.array([np.nan if v is None else v for v in summary[m]["std"]], dtype=float)
        ax.plot(x, mean, marker="o", color=_COLORS.get(m), label=METHOD_TITLES.get(m, m))
        ax.fill_between(x, mean - std, mean + std, color=_COLORS.get(m), alpha=0.15, linewidth=0)
        if np.isfinite(mean - std).any():
            low = min(low, float(np.nanmin(mean - std)) - 0.05)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(x, ["trained" if s == "none" else s for s in steps], rotation=35, ha="right")
    ax.set_ylim(max(low, -1.05), 1.05)
    kind = "cascading" if result.cascade else "independent"
    ax.set_xlabel(f"randomised ({kind}, from the top)" if result.cascade else "randomised (one layer alone)")
    ax.set_ylabel("Spearman ρ of |maps|" if absolute else "Spearman ρ of maps")
    ax.set_title(f"model-randomisation sanity check — {result.target}, {result.n_examples} clips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def plot_sanity_maps(result, logmel=None) -> Figure:
    """Rows = methods, columns = steps: one example's maps as the layers are randomised (Adebayo Fig. 2)."""
    steps = list(result.steps)
    n_rows, n_cols = len(result.methods), len(steps) + 1
    fig = new_figure(2.2 * n_cols, 1.9 * n_rows + 0.6)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, m in enumerate(result.methods):
        show_map(axes[i, 0], result.spectrogram, result.hz, result.seconds, logmel, cmap=INPUT_CMAP)
        axes[i, 0].set_title("input" if i == 0 else "", fontsize=8)
        axes[i, 0].set_ylabel(METHOD_TITLES.get(m, m), fontsize=9)
        for j, step in enumerate(steps, start=1):
            title = ("trained" if step == "none" else step) if i == 0 else ""
            draw_method_map(fig, axes[i, j], m, as_numpy(result.example_maps[m][j - 1]), result.hz, result.seconds,
                            logmel, colorbar=False, title=title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("")
        if ax not in axes[:, 0]:
            ax.set_ylabel("")
    for ax in axes[0]:
        ax.title.set_fontsize(8)
    fig.suptitle(f"maps of example {result.example} as layers are re-initialised from the top", fontsize=10)
    return fig


def plot_faithfulness(result) -> Figure:
    """Deletion (left) and insertion (right) curves averaged over examples, per method and for random orders.

    ``result``: a :class:`~audioconv.interpret.faithfulness.FaithfulnessResult`; the legend gives each AUC.
    """
    summary = result.summary()
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    for name, curves in result.curves.items():
        style = {"color": _COLORS.get(name), "linestyle": {"random": "--", "input": ":"}.get(name, "-")}
        label = _BASELINES.get(name, METHOD_TITLES.get(name, name))
        axes[0].plot(curves.fractions, curves.deletion.mean(0), label=f"{label} ({summary[name]['deletion_auc']:.3f})",
                     **style)
        axes[1].plot(curves.fractions, curves.insertion.mean(0),
                     label=f"{label} ({summary[name]['insertion_auc']:.3f})", **style)
    for ax, kind, better in ((axes[0], "deletion", "lower"), (axes[1], "insertion", "higher")):
        ax.set_xlabel(f"fraction of {result.patch[0]}×{result.patch[1]}-cell patches "
                      f"{'removed' if kind == 'deletion' else 'inserted'}")
        ax.set_title(f"{kind} (AUC in legend; {better} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("p(explained class)")
    axes[0].set_ylim(0, 1.02)
    return fig
