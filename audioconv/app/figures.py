"""Write figures and their JSON indexes: the one writer ``commands/`` and ``app/demo.py`` share.

The interpretation code returns data (:class:`~audioconv.interpret.topk.TopK`,
:class:`~audioconv.interpret.evolve.Evolution`), ``audioconv.plots`` draws it, and the functions here
save the drawings and the JSON next to them, atomically (:mod:`audioconv.io.files`).
"""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure

from audioconv.io.files import atomic_write, write_json
from audioconv.plots.curves import plot_convergence
from audioconv.plots.grids import plot_evolution_grid, plot_topk_grid

__all__ = ["save_figure", "write_topk", "write_evolution"]


def save_figure(fig: Figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """Save ``fig`` to ``path`` atomically (format from the suffix, PNG by default; folders created).

    ``savefig_kwargs`` override the defaults ``dpi=fig.dpi, bbox_inches="tight"``. Returns the path.
    """
    path = Path(path)
    opts = {"dpi": fig.dpi, "bbox_inches": "tight", **savefig_kwargs}
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lstrip(".").lower() or "png", **opts)
    return path


def write_topk(topk, out_dir: str | os.PathLike, logmel=None, index: bool = True) -> dict[str, Path]:
    """Draw a :class:`~audioconv.interpret.topk.TopK` grid into ``OUT/topk_<layer>.png`` and, with
    ``index``, its :meth:`~audioconv.interpret.topk.TopK.to_dict` into ``OUT/topk_<layer>.json``.

    Returns ``{"png": path}`` (and ``"json"``).
    """
    out_dir = Path(out_dir)
    paths = {"png": save_figure(plot_topk_grid(topk, logmel=logmel), out_dir / f"topk_{topk.layer}.png")}
    if index:
        paths["json"] = write_json(out_dir / f"topk_{topk.layer}.json", topk.to_dict())
    return paths


def write_evolution(evolution, out_dir: str | os.PathLike, logmel=None) -> dict:
    """Draw and write an :class:`~audioconv.interpret.evolve.Evolution`.

    Writes ``OUT/evolution_<layer>.png`` per layer, ``OUT/convergence.png`` and ``OUT/evolve.json``.

    Returns:
        The JSON written to ``evolve.json``: :meth:`Evolution.to_dict` plus ``grid_png`` per layer,
        ``convergence_png`` and ``json`` (the paths written).
    """
    out_dir = Path(out_dir)
    summary = evolution.to_dict()
    for name, grid in evolution.grids.items():
        png = save_figure(plot_evolution_grid(grid, logmel=logmel), out_dir / f"evolution_{name}.png")
        summary["layers"][name]["grid_png"] = str(png)
    conv = save_figure(plot_convergence(evolution.cka, evolution.epochs), out_dir / "convergence.png")
    summary["convergence_png"] = str(conv)
    json_path = out_dir / "evolve.json"
    summary["json"] = str(json_path)
    write_json(json_path, summary)
    return summary
