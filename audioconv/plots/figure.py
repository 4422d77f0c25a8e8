"""What every figure of the package shares: an Agg figure, array conversion, colour maps and labels.

Figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot state, no
display needed). The plotting functions return them; ``audioconv.app.figures.save_figure`` writes
them. Projections are signed, so they are drawn with :data:`PROJECTION_CMAP` centred at zero
(``vmin = -vmax``, :func:`symmetric_limit`); inputs are log-mel dB in :data:`INPUT_CMAP`.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg", force=False)
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["PROJECTION_CMAP", "INPUT_CMAP", "DB_LABEL", "PROJECTION_LABEL", "new_figure", "as_numpy",
           "symmetric_limit", "field_of", "input_colorbar", "input_label"]

PROJECTION_CMAP = "RdBu_r"
INPUT_CMAP = "magma"
DB_LABEL = "dB"
PROJECTION_LABEL = "projection (a.u.)"


def input_label(logmel=None) -> str:
    """What a model-input panel shows: "dB", or, when the front end ``logmel`` normalises
    (``config.normalize`` other than ``"none"``), its unitless values named after the normalisation
    ("pcen (unitless)", "bin_mean_var (unitless)"...)."""
    normalize = getattr(getattr(logmel, "config", None), "normalize", "none")
    return DB_LABEL if normalize == "none" else f"{normalize} (unitless)"


def input_colorbar(fig: Figure, mappable, ax, logmel=None):
    """The colour bar of a model-input panel, labelled by ``input_label``: dB with signed whole
    numbers, normalised values with two significant digits."""
    label = input_label(logmel)
    return fig.colorbar(mappable, ax=ax, label=label, format="%+.0f" if label == DB_LABEL else "%.2g")


def new_figure(width_in: float, height_in: float, **kwargs) -> Figure:
    """A figure of ``width_in × height_in`` inches at 100 dpi on the Agg canvas."""
    fig = Figure(figsize=(width_in, height_in), dpi=100, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def as_numpy(x) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def symmetric_limit(values) -> float:
    """``max |values|`` for a colour scale centred at zero (1 when all are zero or not finite)."""
    v = np.nanmax(np.abs(as_numpy(values))) if np.size(values) else 0.0
    return float(v) if np.isfinite(v) and v > 0 else 1.0


def field_of(obj, name: str):
    """``obj[name]`` for a dict, else ``obj.name`` (results may come as dataclasses or JSON dicts)."""
    if isinstance(obj, dict):
        return obj[name]
    return getattr(obj, name)
