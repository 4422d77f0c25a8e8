"""Feature evolution across training (Zeiler & Fergus 2014, Fig. 4) and layer convergence (linear CKA).

:func:`evolve` reads the weight snapshots of a training run (``RUN/snapshots/epoch_001.pt`` …) and a
small *probe* manifest. The probe clips are decoded once, in manifest order (centre crop to the
run's ``clip_s``), and the very same log-mel inputs are used at every epoch. For each epoch and
layer it finds, for each chosen unit, the strongest activation over the probe set (all clips and
positions; see :func:`audioconv.interpret.topk.top_k`) and projects it; and it measures how close the
layer's representation of the probe set is to the final epoch's with linear CKA.

Unit choice: the ``channels_per_layer`` units with the largest maximum activation over the probe set
*at the final epoch* (ties → lower channel index), shown in channel order.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.interpret.cka import centered_gram, cka_from_grams
from audioconv.interpret.topk import _forward_features, _param_dtype, _resolve_device, top_k

__all__ = ["EvolutionGrid", "evolve", "find_snapshots", "ProbeSet", "load_probe", "layer_activations"]

_SNAPSHOT = re.compile(r"^epoch_(\d+)\.pt$")


# ---- inputs -------------------------------------------------------------------------------------
def find_snapshots(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of ``RUN/snapshots/epoch_NNN.pt`` sorted by epoch.

    Raises:
        FileNotFoundError: no run folder, or no snapshots in it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    folder = run_dir / "snapshots"
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _SNAPSHOT.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    if not found:
        raise FileNotFoundError(f"no snapshots (epoch_NNN.pt) in {folder}; train with snapshots first")
    return sorted(found)


class ProbeSet(torch.utils.data.Dataset):
    """Probe clips held in memory, in manifest order: ``dataset[i] → (waveform (1, T), label index)``.

    ``records`` are the manifest rows (for clip ids and labels); all waveforms share one length
    (zero-padded at the end to the longest when ``clip_s`` is ``None``).
    """

    def __init__(self, waveforms: torch.Tensor, records: list[dict], targets: list[int]):
        self.waveforms = waveforms  # (N, 1, T)
        self.records = records
        self.targets = targets

    def __len__(self) -> int:
        return self.waveforms.shape[0]

    def __getitem__(self, i: int):
        return self.waveforms[i], self.targets[i]


def load_probe(probe_manifest, sample_rate: int, clip_s: float | None) -> ProbeSet:
    """Decode a probe manifest once (mono, centre crop / zero pad to ``clip_s``), keeping its order."""
    from audioconv.data.dataset import ManifestDataset

    ds = ManifestDataset(probe_manifest, sample_rate=int(sample_rate), clip_s=clip_s, channels="mono",
                         crop="center")
    waves = [ds[i][0] for i in range(len(ds))]
    t_max = max(w.shape[-1] for w in waves)
    stacked = torch.zeros(len(waves), 1, t_max)
    for i, w in enumerate(waves):
        stacked[i, :, : w.shape[-1]] = w
    return ProbeSet(stacked, list(ds.records), list(ds.targets))


def layer_activations(model: nn.Module, logmel: torch.Tensor, layers: list[str], batch_size: int = 32,
                      pool: bool = False) -> dict[str, torch.Tensor]:
    """Feature maps of ``layers`` for log-mel inputs ``(N, 1, F, T)``, concatenated over batches (CPU).

    Returns ``{layer: (N, C, F_l, T_l)}``, or ``{layer: (N, C)}`` spatial means when ``pool``.
    The model must be in eval mode and on ``logmel``'s device.
    """
    deepest = max(layers, key=lambda name: model.layer_names.index(name))
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = []
    current: dict[str, torch.Tensor] = {}
    for name in layers:
        handles.append(model.feature_module(name).register_forward_hook(
            lambda _m, _i, o, name=name: current.__setitem__(name, o)))
    try:
        with torch.no_grad():
            for lo in range(0, logmel.shape[0], batch_size):
                current.clear()
                _forward_features(model, logmel[lo:lo + batch_size], model.feature_module(deepest))
                for name in layers:
                    a = current[name]
                    out[name].append((a.mean(dim=(2, 3)) if pool else a).detach().float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {name: torch.cat(v) for name, v in out.items()}


# ---- result ---------------------------------------------------------------------------------------
@dataclass
class EvolutionGrid:
    """Rows = (unit, rank), columns = epochs; each cell the projection of that unit's rank-th strongest
    activation over the probe set at that epoch, cropped to its receptive field.

    ``projections[row][col]`` ``(f1-f0, t1-t0)``, ``receptive_fields[row][col]`` ``(f0, f1, t0, t1)``,
    ``activations``/``examples``/``positions``/``clip_ids`` alike; ``hz (F,)``, ``seconds (T,)``.
    """

    layer: str
    mode: str
    epochs: list[int]
    units: list[int]
    k: int
    row_units: list[int]
    row_ranks: list[int]
    projections: list = field(repr=False)
    receptive_fields: list = field(repr=False)
    activations: list = field(repr=False)
    examples: list = field(repr=False)
    positions: list = field(repr=False)
    clip_ids: list = field(repr=False)
    hz: np.ndarray = field(repr=False)
    seconds: np.ndarray = field(repr=False)

    def cells(self) -> list[dict]:
        """JSON-ready description of every cell (no pixels)."""
        rows = []
        for r, (u, rank) in enumerate(zip(self.row_units, self.row_ranks)):
            for c, epoch in enumerate(self.epochs):
                rows.append({"unit": u, "rank": rank, "epoch": epoch,
                             "activation": float(self.activations[r][c]), "example": int(self.examples[r][c]),
                             "clip_id": self.clip_ids[r][c], "position": [int(v) for v in self.positions[r][c]],
                             "receptive_field": [int(v) for v in self.receptive_fields[r][c]]})
        return rows


# ---- the work ---------------------------------------------------------------------------------------
def _clip_s_of(run_dir: Path, checkpoint: dict) -> float | None:
    cfg = run_dir / "config.json"
    if cfg.is_file():
        try:
            value = json.loads(cfg.read_text(encoding="utf-8")).get("train_config", {}).get("clip_s")
            if value:
                return float(value)
        except (json.JSONDecodeError, AttributeError):
            pass
    value = (checkpoint.get("train_config") or {}).get("clip_s")
    return float(value) if value else None


def _choose_units(acts: torch.Tensor, n: int | None) -> list[int]:
    """The ``n`` channels of ``acts`` ``(N, C, ...)`` with the largest max activation, in channel order."""
    peak = acts.transpose(0, 1).reshape(acts.shape[1], -1).amax(dim=1)  # (C,)
    if n is None or n >= peak.numel():
        return list(range(peak.numel()))
    order = torch.argsort(-peak.double(), stable=True)[:n]
    return sorted(int(c) for c in order)


def evolve(run_dir: str | os.PathLike, probe_manifest, out_dir: str | os.PathLike | None = None,
           layers=None, channels_per_layer: int | None = 8, k: int = 1, progress: bool = True,
           device=None, mode: str = "deconv", batch_size: int = 32, cka_features: str = "flatten",
           clip_s: float | None = None, units: dict | None = None) -> dict:
    """Feature-evolution grids and layer-convergence curves for a training run.

    Args:
        run_dir: training run folder with ``snapshots/epoch_NNN.pt`` (and ``config.json``).
        probe_manifest: JSONL manifest (or list of records) of the probe clips; order is kept.
        out_dir: where to write ``evolution_<layer>.png``, ``convergence.png`` and ``evolve.json``
            (default ``RUN/evolve``).
        layers: layer names (default all of the model's ``conv*`` layers).
        channels_per_layer: units per layer, chosen at the final epoch (module doc); ``None`` = all.
        k: strongest activations shown per unit and epoch (grid rows = units × k).
        progress: tqdm bar over epochs.
        device: default CUDA if available.
        mode: projection rule (``"deconv"``, ``"guided"``, ``"gradient"``).
        batch_size: probe clips per forward pass.
        cka_features: ``"flatten"`` (each clip's whole feature map ``C·F·T`` as one vector) or
            ``"pool"`` (per-channel spatial mean, ``C`` features).
        clip_s: probe clip length in seconds; default the run's ``train_config.clip_s``.
        units: explicit ``{layer: [channels]}`` overriding ``channels_per_layer``.

    Returns:
        The JSON summary written to ``evolve.json``: ``epochs``, ``probe`` (manifest, clip ids in
        order), ``layers[layer]`` with ``units``, ``cka`` (one value per epoch, vs the last epoch),
        ``grid_png``, ``cells``; plus ``convergence_png`` and ``json`` paths — and, not in the file,
        ``grids``: ``{layer: EvolutionGrid}`` for further rendering.
    """
    from audioconv.training.checkpoint import load_checkpoint, load_model
    from audioconv.plots import render

    run_dir = Path(run_dir)
    snaps = find_snapshots(run_dir)
    if cka_features not in ("flatten", "pool"):
        raise ValueError(f"cka_features must be 'flatten' or 'pool', got {cka_features!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if channels_per_layer is not None and int(channels_per_layer) < 1:
        raise ValueError(f"channels_per_layer must be >= 1 or None, got {channels_per_layer}")
    dev = _resolve_device(device)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "evolve"
    epochs = [e for e, _ in snaps]
    final_epoch, final_path = snaps[-1]

    final_model, _ = load_model(final_path, dev)
    layers = list(final_model.layer_names) if layers is None else [str(x) for x in layers]
    for name in layers:
        final_model.feature_module(name)  # ValueError listing the valid layers
    if clip_s is None:
        clip_s = _clip_s_of(run_dir, load_checkpoint(final_path))
    probe = load_probe(probe_manifest, final_model.config.sample_rate, clip_s)
    with torch.no_grad():
        logmel = final_model.frontend(probe.waveforms.to(dev))  # (N, 1, F, T), same inputs every epoch
    if logmel.shape[0] < 2:
        raise ValueError(f"the probe set needs at least 2 clips for CKA, got {logmel.shape[0]}")

    chosen: dict[str, list[int]] = {}
    final_grams: dict[str, torch.Tensor] = {}
    grams_by_epoch: dict[int, dict[str, torch.Tensor]] = {}
    cells: dict[str, dict[int, object]] = {name: {} for name in layers}
    # final epoch first: it picks the units and is the CKA reference
    order = [len(snaps) - 1] + list(range(len(snaps) - 1))
    for i in tqdm(order, disable=not progress, desc="evolve", unit="epoch"):
        epoch, path = snaps[i]
        model = final_model if i == len(snaps) - 1 else load_model(path, dev)[0]
        x = logmel.to(_param_dtype(model))
        acts = layer_activations(model, x, layers, batch_size, pool=(cka_features == "pool"))
        grams_by_epoch[epoch] = {name: centered_gram(a) for name, a in acts.items()}
        if i == len(snaps) - 1:
            full = acts if cka_features == "flatten" else layer_activations(model, x, layers, batch_size)
            for name in layers:
                if units and name in units:
                    chosen[name] = [int(c) for c in units[name]]
                else:
                    chosen[name] = _choose_units(full[name], channels_per_layer)
            final_grams = grams_by_epoch[epoch]
            del full
        del acts
        for name in layers:
            cells[name][epoch] = top_k(model, probe, name, chosen[name], k=int(k), batch_size=batch_size,
                                       device=dev, mode=mode, progress=False)

    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"run_dir": str(run_dir), "epochs": epochs, "final_epoch": final_epoch, "mode": mode,
                     "cka_features": cka_features, "clip_s": clip_s,
                     "probe": {"manifest": str(probe_manifest) if isinstance(probe_manifest, (str, os.PathLike)) else None,
                               "clip_ids": [str(r.get("audio_filepath")) for r in probe.records],
                               "labels": [r.get("label") for r in probe.records]},
                     "layers": {}}
    grids: dict[str, EvolutionGrid] = {}
    cka_curves: dict[str, list[float]] = {}
    for name in layers:
        cka = [cka_from_grams(grams_by_epoch[e][name], final_grams[name]) for e in epochs]
        cka_curves[name] = cka
        grid = _build_grid(name, mode, epochs, chosen[name], int(k), cells[name])
        grids[name] = grid
        png = out_dir / f"evolution_{name}.png"
        render.plot_evolution_grid(grid, png)
        summary["layers"][name] = {"units": chosen[name], "cka": [None if np.isnan(v) else v for v in cka],
                                   "grid_png": str(png), "cells": grid.cells()}
    conv_png = out_dir / "convergence.png"
    render.plot_convergence(cka_curves, epochs, conv_png)
    summary["convergence_png"] = str(conv_png)
    json_path = out_dir / "evolve.json"
    summary["json"] = str(json_path)
    json_path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return {**summary, "grids": grids}


def _build_grid(layer, mode, epochs, units, k, per_epoch) -> EvolutionGrid:
    some = per_epoch[epochs[0]]
    kk = min(k, some.k)
    row_units = [u for u in units for _ in range(kk)]
    row_ranks = [r for _ in units for r in range(kk)]
    def table(fn):
        return [[fn(per_epoch[e], row // kk, row_ranks[row]) for e in epochs] for row in range(len(row_units))]
    return EvolutionGrid(
        layer=layer, mode=mode, epochs=list(epochs), units=list(units), k=kk, row_units=row_units,
        row_ranks=row_ranks,
        projections=table(lambda t, u, r: t.projections[u][r]),
        receptive_fields=table(lambda t, u, r: t.receptive_fields[u, r].copy()),
        activations=table(lambda t, u, r: float(t.scores[u, r])),
        examples=table(lambda t, u, r: int(t.example_indices[u, r])),
        positions=table(lambda t, u, r: t.positions[u, r].copy()),
        clip_ids=table(lambda t, u, r: t.clip_ids[u][r]),
        hz=some.hz, seconds=some.seconds)
