"""Invariance and equivariance curves per layer (Zeiler & Fergus Fig. 5 for sound): distance vs the
amount of a transform, one line per layer, and the true-class probability beside."""
from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from audioconv.plots.figure import new_figure

__all__ = ["plot_invariance"]

_TITLES = {"time_shift": "time shift", "pitch_shift": "pitch shift", "gain": "gain", "reverb": "reverberation",
           "noise": "noise"}


def _x_positions(amounts: list, identity: list, scale: float) -> tuple[np.ndarray, list, list]:
    """Displayed x of each amount (an infinite SNR, written ``None``, sits one step past the largest);
    extra ticks and labels for it."""
    finite = [a * scale for a in amounts if a is not None]
    xs, ticks, labels = [], [], []
    step = (max(finite) - min(finite)) / max(len(finite) - 1, 1) if len(finite) > 1 else 10.0
    for a, ident in zip(amounts, identity):
        if a is None:  # SNR inf: the clean clip
            x = (max(finite) if finite else 0.0) + step
            ticks.append(x)
            labels.append("clean" if ident else "inf")
            xs.append(x)
        else:
            xs.append(a * scale)
    return np.asarray(xs, dtype=float), ticks, labels


def _values(v) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in v], dtype=float)


def _draw_layers(ax, d: dict, xs: np.ndarray, key: str, colors) -> None:
    """One line per layer of ``d["layers"][name][key]``; the logits dashed black, clipped when off scale."""
    names = [n for n, info in d["layers"].items() if info.get(key) is not None]
    hidden = [n for n in names if n != "logits"]
    top = max([np.nanmax(_values(d["layers"][n][key])) for n in hidden
               if not np.isnan(_values(d["layers"][n][key])).all()] + [1.0])
    for i, name in enumerate(names):
        ys = _values(d["layers"][name][key])
        if name == "logits":
            peak = np.nanmax(ys) if not np.isnan(ys).all() else 0.0
            label = "logits" + (f" (off scale, up to {peak:.3g})" if peak > 2 * top else "")
            ax.plot(xs, ys, color="black", linestyle="--", marker="s", markersize=3, label=label)
            continue
        exact = d["layers"][name].get("exact") if key == "equivariance" else None
        ax.plot(xs, ys, color=colors[i], marker="o", markersize=4, label=name)
        if exact is not None:  # open markers: the displacement was rounded to a whole position
            rounded = ~np.asarray(exact, dtype=bool)
            ax.plot(xs[rounded], ys[rounded], linestyle="none", marker="o", markersize=6, markerfacecolor="white",
                    markeredgecolor=colors[i])
    ax.set_ylim(0, 1.15 * top)
    ax.axhline(1.0, color="0.75", linewidth=0.8, zorder=0)
    ax.grid(True, alpha=0.3)


def plot_invariance(result) -> Figure:
    """The curves of an :class:`~audioconv.interpret.invariance.InvarianceResult` (or its ``to_dict()``).

    Panels: invariance distance vs amount (one line per layer, lower layers darker, the logits
    dashed), the equivariance distance (for time and pitch shifts; open markers where the layer's
    displacement was rounded to a whole position) and the mean true-class probability (± one
    standard deviation over clips) with the accuracy. x in the transform's display unit (ms,
    semitones, dB, s); y: 0 = unchanged, 1 = as far as another probe clip (grey line).
    """
    d = result.to_dict() if hasattr(result, "to_dict") else result
    xs, extra_ticks, extra_labels = _x_positions(d["amounts"], d["amount_is_identity"], float(d["display_scale"]))
    has_eq = any(info.get("equivariance") is not None for info in d["layers"].values())
    n_panels = 3 if has_eq else 2
    fig = new_figure(4.2 * n_panels, 3.8, layout="constrained")
    axes = fig.subplots(1, n_panels)
    n_hidden = max(len(d["layers"]) - 1, 1)
    colors = [_layer_color(i, n_hidden) for i in range(len(d["layers"]))]
    panels = [("invariance", "invariance distance\n‖ψ − φ‖ / between-clip distance")]
    if has_eq:
        panels.append(("equivariance", "equivariance distance\n(original map moved at the layer's stride)"))
    for ax, (key, ylabel) in zip(axes, panels):
        _draw_layers(ax, d, xs, key, colors)
        ax.set_ylabel(ylabel)
        ax.set_title(key)
    prob = d["probability"]
    ax = axes[-1]
    p, sd = _values(prob["p_true"]), _values(prob["p_true_std"])
    ax.plot(xs, p, color="tab:red", marker="o", markersize=4, label="mean p(true class)")
    ax.fill_between(xs, np.clip(p - sd, 0, 1), np.clip(p + sd, 0, 1), color="tab:red", alpha=0.15, linewidth=0)
    ax.plot(xs, _values(prob["accuracy"]), color="tab:gray", linestyle="--", marker=".", label="accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("probability of the true class")
    ax.set_title("class probability")
    ax.grid(True, alpha=0.3)
    for ax in axes:
        ax.set_xlabel(d["axis_label"])
        if extra_ticks:
            finite = [x for x, a in zip(xs, d["amounts"]) if a is not None]
            ax.set_xticks(list(finite) + extra_ticks, [f"{x:g}" for x in finite] + extra_labels)
        ax.legend(fontsize=7, loc="best")
    name = _TITLES.get(d["transform"], d["transform"])
    settings = d.get("settings") or {}
    if d["transform"] == "noise":
        name = f"{settings.get('color', 'white')} noise"
    elif d["transform"] == "reverb":
        name += f" (DRR {settings.get('drr_db')} dB)" if settings.get("drr_db") is not None else " (no direct path)"
    elif d["transform"] == "time_shift" and settings.get("mode") == "roll":
        name = "circular time shift"
    fig.suptitle(f"{name}: {d['n_clips']} clips, true class = {'label' if d['targets'] == 'labels' else 'predicted'}",
                 fontsize=10)
    return fig


def _layer_color(i: int, n: int):
    """Lower layers darker: viridis from 0 to 0.9 over the ``n`` hidden layers."""
    return matplotlib.colormaps["viridis"](0.9 * min(i, n - 1) / max(n - 1, 1))
