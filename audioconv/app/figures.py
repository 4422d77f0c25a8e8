"""Write figures and their JSON indexes: the one writer ``commands/`` and ``app/demo.py`` share.

The interpretation code returns data (:class:`~audioconv.interpret.topk.TopK`,
:class:`~audioconv.interpret.evolve.Evolution`), ``audioconv.plots`` draws it, and the functions here
save the drawings and the JSON next to them, atomically (:mod:`audioconv.io.files`).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from matplotlib.figure import Figure

from audioconv.io.files import atomic_write, write_json
from audioconv.plots.curves import plot_convergence
from audioconv.plots.grids import plot_evolution_grid, plot_topk_grid

__all__ = ["file_stem", "save_figure", "write_topk", "write_evolution"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_STEM = 96


def file_stem(name: str) -> str:
    """A layer, class or unit name made safe as (part of) a file name on Windows, macOS and Linux, and
    in a shell without quoting — the one place that turns names into file names.

    ``:`` (an operation inside a module) becomes ``__``, ``#`` (the n-th call) ``-``, every other
    character outside ``A-Z a-z 0-9 . _ -`` (spaces, slashes, quotes, ``*?<>|``, non-ASCII) ``_``:
    ``"layer1.1:relu#2"`` → ``"layer1.1__relu-2"``, ``":relu"`` → ``"__relu"``. A name that would
    start with ``-`` or ``.`` (an option to a shell tool, a hidden file) gets a leading ``_``;
    trailing dots are dropped (Windows drops them); Windows' device names (``CON``, ``NUL``,
    ``COM1`` …) get a trailing ``_``; an empty result is ``"_"``; a name longer than 96 characters
    is cut and ends with 8 hex digits of its SHA-1 (so long names stay distinct). The real name
    belongs in the JSON written next to the file.
    """
    text = str(name)
    stem = _UNSAFE.sub("_", text.replace(":", "__").replace("#", "-")).rstrip(".")
    if stem[:1] in ("-", "."):
        stem = "_" + stem
    if stem.split(".")[0].upper() in _RESERVED:
        stem = stem.split(".")[0] + "_" + stem[len(stem.split(".")[0]):]
    if len(stem) > _MAX_STEM:
        stem = stem[: _MAX_STEM - 9] + "_" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]
    return stem or "_"


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

    The layer name enters the file names through :func:`file_stem` (``layer1.1:relu#2`` →
    ``topk_layer1.1__relu-2.png``); the JSON keeps the real name.

    Returns ``{"png": path}`` (and ``"json"``).
    """
    out_dir = Path(out_dir)
    stem = f"topk_{file_stem(topk.layer)}"
    paths = {"png": save_figure(plot_topk_grid(topk, logmel=logmel), out_dir / f"{stem}.png")}
    if index:
        paths["json"] = write_json(out_dir / f"{stem}.json", topk.to_dict())
    return paths


def write_evolution(evolution, out_dir: str | os.PathLike, logmel=None) -> dict:
    """Draw and write an :class:`~audioconv.interpret.evolve.Evolution`.

    Writes ``OUT/evolution_<layer>.png`` per layer (the name through :func:`file_stem`),
    ``OUT/convergence.png`` and ``OUT/evolve.json`` (real layer names).

    Returns:
        The JSON written to ``evolve.json``: :meth:`Evolution.to_dict` plus ``grid_png`` per layer,
        ``convergence_png`` and ``json`` (the paths written).
    """
    out_dir = Path(out_dir)
    summary = evolution.to_dict()
    for name, grid in evolution.grids.items():
        png = save_figure(plot_evolution_grid(grid, logmel=logmel), out_dir / f"evolution_{file_stem(name)}.png")
        summary["layers"][name]["grid_png"] = str(png)
    base = {name: b[evolution.cka_estimator] for name, b in evolution.baseline.items()}
    conv = save_figure(plot_convergence(evolution.cka, evolution.epochs, estimator=evolution.cka_estimator,
                                        baseline=base), out_dir / "convergence.png")
    summary["convergence_png"] = str(conv)
    json_path = out_dir / "evolve.json"
    summary["json"] = str(json_path)
    write_json(json_path, summary)
    return summary


# ---- explanation methods (Grad-CAM, activation maximisation, sanity checks, faithfulness) ----------
__all__ += ["write_explanation", "write_actmax", "write_sanity", "write_faithfulness"]


def write_explanation(explanation, out_dir: str | os.PathLike, index: int = 0, logmel=None,
                      name: str = "explanation", title: str = "") -> Path:
    """Draw one example of an :class:`~audioconv.interpret.explain.Explanation` (input and every
    method's map) into ``OUT/<name>.png``; returns the path."""
    from audioconv.plots.explanations import plot_explanations

    return save_figure(plot_explanations(explanation, index, title=title, logmel=logmel),
                       Path(out_dir) / f"{file_stem(name)}.png")


def write_actmax(results, out_dir: str | os.PathLike, logmel=None, n_iter: int = 32, name: str = "actmax") -> dict:
    """Draw activation-maximisation results into ``OUT/<name>.png``, write ``OUT/<name>.json`` and, when
    ``logmel`` (the model's :class:`~audioconv.features.LogMel`) is given, one WAV per result
    (``OUT/<name>_<i>.wav``: the optimised log-mel inverted by Griffin-Lim).

    Returns the JSON written: ``{"png", "json", "results": [ActMaxResult.to_dict() + "wav"]}``.
    """
    from audioconv.interpret.actmax import actmax_audio
    from audioconv.io import audio
    from audioconv.plots.actmax import plot_actmax

    out_dir = Path(out_dir)
    name = file_stem(name)
    results = [results] if hasattr(results, "logmel") else list(results)
    summary = {"png": str(save_figure(plot_actmax(results, logmel=logmel), out_dir / f"{name}.png")), "results": []}
    for i, r in enumerate(results):
        entry = r.to_dict()
        if logmel is not None:
            wav = actmax_audio(r, logmel, n_iter=n_iter)
            entry["wav"] = str(audio.save(out_dir / f"{name}_{i}.wav", wav, logmel.config.sample_rate))
        summary["results"].append(entry)
    summary["json"] = str(out_dir / f"{name}.json")
    write_json(out_dir / f"{name}.json", summary)
    return summary


def write_sanity(result, out_dir: str | os.PathLike, logmel=None, extra: dict | None = None) -> dict:
    """Write a :class:`~audioconv.interpret.sanity.SanityResult`: ``OUT/sanity.png`` (ρ per method and
    step), ``OUT/sanity_maps.png`` (one example's maps per step) and ``OUT/sanity.json``
    (:meth:`~audioconv.interpret.sanity.SanityResult.to_dict` plus ``extra`` and the paths)."""
    from audioconv.plots.sanity import plot_sanity, plot_sanity_maps

    out_dir = Path(out_dir)
    summary = {**(extra or {}), **result.to_dict()}
    summary["png"] = str(save_figure(plot_sanity(result), out_dir / "sanity.png"))
    summary["maps_png"] = str(save_figure(plot_sanity_maps(result, logmel=logmel), out_dir / "sanity_maps.png"))
    summary["json"] = str(out_dir / "sanity.json")
    write_json(out_dir / "sanity.json", summary)
    return summary


def write_faithfulness(result, out_dir: str | os.PathLike, extra: dict | None = None) -> dict:
    """Write a :class:`~audioconv.interpret.faithfulness.FaithfulnessResult`: ``OUT/faithfulness.png``
    (mean deletion and insertion curves) and ``OUT/faithfulness.json`` (its ``to_dict`` plus ``extra``)."""
    from audioconv.plots.sanity import plot_faithfulness

    out_dir = Path(out_dir)
    summary = {**(extra or {}), **result.to_dict()}
    summary["png"] = str(save_figure(plot_faithfulness(result), out_dir / "faithfulness.png"))
    summary["json"] = str(out_dir / "faithfulness.json")
    write_json(out_dir / "faithfulness.json", summary)
    return summary


# ---- invariance and equivariance per layer (audioconv invariance) ------------------------------------
__all__ += ["write_invariance"]


def write_invariance(result, out_dir: str | os.PathLike, extra: dict | None = None) -> dict:
    """Write an :class:`~audioconv.interpret.invariance.InvarianceResult`: ``OUT/invariance_<transform>.png``
    (distance vs amount per layer, class probability beside) and ``OUT/invariance_<transform>.json`` (its
    ``to_dict()`` plus ``extra`` and the paths). Returns the JSON written."""
    from audioconv.plots.invariance import plot_invariance

    out_dir = Path(out_dir)
    summary = {**(extra or {}), **result.to_dict()}
    stem = f"invariance_{result.transform}"
    summary["png"] = str(save_figure(plot_invariance(summary), out_dir / f"{stem}.png"))
    summary["json"] = str(out_dir / f"{stem}.json")
    write_json(out_dir / f"{stem}.json", summary)
    return summary
