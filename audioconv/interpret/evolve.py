"""Feature evolution across training (Zeiler & Fergus 2014, Fig. 4) and layer convergence (CKA).

:func:`evolve` reads the weight snapshots of a training run (``RUN/snapshots/epoch_001.pt`` …) and a
small *probe* manifest. The probe clips are decoded once, in manifest order (centre crop to the
run's ``clip_s``), and the very same log-mel inputs are used at every epoch. For each epoch and
layer it finds, for each chosen unit, the strongest activation over the probe set (all clips and
positions; see :func:`audioconv.interpret.topk.top_k`) and projects it; and it measures how close the
layer's representation of the probe set is to the final epoch's with CKA.

CKA: both the plain linear CKA and the debiased one (:mod:`audioconv.interpret.cka`) are computed;
``cka_estimator`` (default ``"debiased"``) says which one :attr:`Evolution.cka`, the figure and the
CLI show. With flattened feature maps (thousands of features, tens to hundreds of clips) the linear
estimate is biased upward — unrelated representations score far above 0 — so its absolute values,
and differences between layers of different widths, mean little. ``baseline=N`` adds N freshly
initialised networks of the same architecture (``reset_parameters`` of a copy of the final model,
seeds ``baseline_seed …``) measured against the final epoch the same way: the level a layer reaches
without any training, to read the curves against.

Unit choice: the ``channels_per_layer`` units with the largest maximum activation over the probe set
*at the final epoch* (ties → lower channel index), shown in channel order.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from audioconv.data import ManifestDataset, collate
from audioconv.interpret.cka import ESTIMATORS, centered_gram, cka_of
from audioconv.interpret.projector import Projector
from audioconv.interpret.topk import top_k
from audioconv.utils import resolve_device

__all__ = ["Evolution", "EvolutionGrid", "evolve", "find_snapshots", "ProbeSet", "load_probe"]

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
    ds = ManifestDataset(probe_manifest, sample_rate=int(sample_rate), clip_s=clip_s, channels="mono",
                         crop="center")
    stacked, _, _ = collate([ds[i] for i in range(len(ds))])  # (N, 1, T), zero-padded to the longest
    return ProbeSet(stacked, list(ds.records), list(ds.targets))


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
@dataclass
class Evolution:
    """Feature evolution and layer convergence of a training run over the same probe inputs.

    Attributes:
        run_dir: the run folder.
        epochs: snapshot epochs, ascending; the last one is the reference of the CKA curves.
        mode: projection rule; ``cka_features``: ``"flatten"`` or ``"pool"``; ``clip_s``: probe clip length (s).
        probe_manifest: the probe manifest's path (``None`` when records were given).
        probe_clip_ids, probe_labels: per probe clip, in manifest order.
        units: ``{layer: [channels]}`` shown per layer.
        cka_linear, cka_debiased: ``{layer: [CKA per epoch vs the final epoch]}`` by each estimator
            (``nan`` for a constant representation).
        cka_estimator: ``"debiased"`` or ``"linear"``: the one :attr:`cka` returns.
        baseline: ``{layer: {"linear": [...], "debiased": [...]}}``: freshly initialised networks
            of the same architecture vs the final epoch (empty lists without ``baseline``).
        grids: ``{layer: EvolutionGrid}`` (projections per unit, rank and epoch; empty with ``grids=False``).
    """

    run_dir: str
    epochs: list[int]
    mode: str
    cka_features: str
    clip_s: float
    probe_manifest: str | None
    probe_clip_ids: list[str]
    probe_labels: list
    units: dict[str, list[int]]
    cka_linear: dict[str, list[float]]
    cka_debiased: dict[str, list[float]]
    cka_estimator: str
    baseline: dict[str, dict[str, list[float]]]
    grids: dict[str, EvolutionGrid] = field(repr=False)

    @property
    def final_epoch(self) -> int:
        return self.epochs[-1]

    @property
    def cka(self) -> dict[str, list[float]]:
        """``{layer: [CKA per epoch vs the final epoch]}`` by :attr:`cka_estimator`."""
        return self.cka_debiased if self.cka_estimator == "debiased" else self.cka_linear

    def to_dict(self) -> dict:
        """JSON-ready summary (no pixels): epochs, probe, per layer its units, CKA curves (``cka`` by
        ``cka_estimator``, ``cka_linear``, ``cka_debiased``; ``None`` for nan), baselines and cells."""
        def clean(values):
            return [None if np.isnan(v) else float(v) for v in values]

        return {"run_dir": self.run_dir, "epochs": list(self.epochs), "final_epoch": self.final_epoch,
                "mode": self.mode, "cka_features": self.cka_features, "cka_estimator": self.cka_estimator,
                "clip_s": self.clip_s,
                "probe": {"manifest": self.probe_manifest, "clip_ids": list(self.probe_clip_ids),
                          "labels": list(self.probe_labels)},
                "layers": {name: {"units": list(self.units.get(name, [])), "cka": clean(self.cka[name]),
                                  "cka_linear": clean(self.cka_linear[name]),
                                  "cka_debiased": clean(self.cka_debiased[name]),
                                  "baseline": {e: clean(v) for e, v in self.baseline[name].items()},
                                  "cells": self.grids[name].cells() if name in self.grids else []}
                           for name in self.cka_linear}}


def _choose_units(acts: torch.Tensor, n: int | None) -> list[int]:
    """The ``n`` channels of ``acts`` ``(N, C, ...)`` with the largest max activation, in channel order."""
    peak = acts.transpose(0, 1).reshape(acts.shape[1], -1).amax(dim=1)  # (C,)
    if n is None or n >= peak.numel():
        return list(range(peak.numel()))
    order = torch.argsort(-peak.double(), stable=True)[:n]
    return sorted(int(c) for c in order)


def _check_arguments(cka_features: str, k, channels_per_layer, cka_estimator: str = "debiased",
                     baseline: int = 0) -> None:
    if cka_features not in ("flatten", "pool"):
        raise ValueError(f"cka_features must be 'flatten' or 'pool', got {cka_features!r}")
    if cka_estimator not in ESTIMATORS:
        raise ValueError(f"cka_estimator must be one of {', '.join(ESTIMATORS)}; got {cka_estimator!r}")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, np.integer)) or baseline < 0:
        raise ValueError(f"baseline must be an int >= 0 (freshly initialised networks), got {baseline!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if channels_per_layer is not None and int(channels_per_layer) < 1:
        raise ValueError(f"channels_per_layer must be >= 1 or None, got {channels_per_layer}")


def evolve(run_dir: str | os.PathLike, probe_manifest, layers=None, channels_per_layer: int | None = 8, k: int = 1,
           progress: bool = True, device=None, mode: str = "deconv", batch_size: int = 32,
           cka_features: str = "flatten", clip_s: float | None = None, units: dict | None = None,
           load=None, cka_estimator: str = "debiased", baseline: int = 0, baseline_seed: int = 0,
           grids: bool = True) -> Evolution:
    """Feature-evolution grids and layer-convergence curves for a training run (computes, writes nothing).

    Args:
        run_dir: training run folder with ``snapshots/epoch_NNN.pt``.
        probe_manifest: JSONL manifest (or list of records) of the probe clips; order is kept.
        layers: layer names (default all of the model's ``conv*`` layers).
        channels_per_layer: units per layer, chosen at the final epoch (module doc); ``None`` = all.
        k: strongest activations shown per unit and epoch (grid rows = units × k).
        progress: tqdm bar over epochs.
        device: default CUDA if available.
        mode: projection rule (``"deconv"``, ``"guided"``, ``"gradient"``).
        batch_size: probe clips per forward pass.
        cka_features: ``"flatten"`` (each clip's whole feature map ``C·F·T`` as one vector) or
            ``"pool"`` (per-channel spatial mean, ``C`` features).
        clip_s: probe clip length in seconds; default the run's
            (:func:`~audioconv.training.checkpoint.run_clip_s` of the final snapshot).
        units: explicit ``{layer: [channels]}`` overriding ``channels_per_layer``.
        load: ``(snapshot path, device) → model`` in eval mode; default
            :func:`~audioconv.training.checkpoint.load_model` (the model the checkpoint records: any
            model of the registry). With ``load`` the snapshots may be plain state dicts (a run trained
            elsewhere) and ``clip_s`` defaults to 1 s.
        cka_estimator: ``"debiased"`` (default) or ``"linear"``: what :attr:`Evolution.cka` shows
            (both are always computed).
        baseline: freshly initialised networks of the final model's architecture (``reset_parameters``
            of a copy, seeds ``baseline_seed + i``) to measure against the final epoch (module doc).
        grids: ``False`` skips the projections (only the CKA numbers; much faster).

    Returns:
        :class:`Evolution`; ``audioconv.app.figures.write_evolution`` draws and writes it.
    """
    from audioconv.training.checkpoint import (DEFAULT_CLIP_S, load_checkpoint, load_model, model_from_checkpoint,
                                               run_clip_s)

    snaps = find_snapshots(run_dir)
    _check_arguments(cka_features, k, channels_per_layer, cka_estimator, baseline)
    dev = resolve_device(device)
    read = load or (lambda path, where: load_model(path, where)[0])
    if load is None:  # the final snapshot read once: its model and its run's clip length
        last = load_checkpoint(snaps[-1][1], map_location="cpu")
        final = Projector(model_from_checkpoint(last, f"checkpoint {snaps[-1][1]}")[0].to(dev).eval(), mode, dev)
    else:
        last, final = None, Projector(read(snaps[-1][1], dev), mode, dev)
    if final.traced.frontend is None:
        raise ValueError("evolve needs a model with a LogMel front end (the probe clips are waveforms)")
    layers = list(final.layer_names) if layers is None else [str(x) for x in layers]
    for name in layers:
        final.traced.key(name)  # ValueError listing the valid layers
    if clip_s is None:
        clip_s = DEFAULT_CLIP_S if last is None else run_clip_s(last)
    probe = load_probe(probe_manifest, final.traced.frontend.config.sample_rate, clip_s)
    need = 4 if cka_estimator == "debiased" else 2
    if len(probe) < need:
        raise ValueError(f"the probe set needs at least {need} clips for {cka_estimator} CKA, got {len(probe)}"
                         + (" (use --cka linear / cka_estimator='linear' for 2 or 3)" if need == 4 else ""))
    logmel = final.to_logmel(probe.waveforms, "waveform")  # (N, 1, F, T), the same inputs every epoch
    chosen: dict[str, list[int]] = {}
    grams: dict[int, dict[str, torch.Tensor]] = {}
    per_epoch: dict[str, dict[int, object]] = {name: {} for name in layers}
    order = [len(snaps) - 1] + list(range(len(snaps) - 1))  # final epoch first: it picks the units
    for i in tqdm(order, disable=not progress, desc="evolve", unit="epoch"):
        epoch, path = snaps[i]
        projector = final if i == len(snaps) - 1 else Projector(read(path, dev), mode, dev)
        acts = projector.traced.activations(logmel, layers, batch_size, "mean" if cka_features == "pool" else None)
        grams[epoch] = {name: centered_gram(a) for name, a in acts.items()}
        if not chosen:
            chosen = _units_at_final(projector, logmel, layers, acts, cka_features, channels_per_layer,
                                     units, batch_size)
        del acts
        for name in layers if grids else ():
            per_epoch[name][epoch] = top_k(projector, probe, name, chosen[name], k=int(k), batch_size=batch_size,
                                           progress=False)
    base = _baselines(final, logmel, layers, grams[snaps[-1][0]], int(baseline), int(baseline_seed), batch_size,
                      cka_features, mode, dev)
    evolution = _assemble(run_dir, probe_manifest, probe, snaps, mode, cka_features, clip_s, k, chosen, grams,
                          per_epoch if grids else {}, base)
    evolution.cka_estimator = cka_estimator
    return evolution


def reinitialised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with every submodule's ``reset_parameters`` (BatchNorm: and running statistics)
    called under ``torch.manual_seed(seed)``: an untrained network of the same architecture."""
    import copy

    fresh = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for m in fresh.modules():
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
    return fresh.eval()


def _baselines(final, logmel, layers, final_grams, n, seed, batch_size, cka_features, mode, dev) -> dict:
    """``{layer: {"linear": [...], "debiased": [...]}}`` of ``n`` fresh networks vs the final epoch's Grams."""
    out = {name: {e: [] for e in ESTIMATORS} for name in layers}
    for i in range(n):
        fresh = Projector(reinitialised(final.model, seed + i), mode, dev)
        acts = fresh.traced.activations(logmel, layers, batch_size, "mean" if cka_features == "pool" else None)
        for name in layers:
            gram = centered_gram(acts[name])
            for e in ESTIMATORS:
                small = e == "debiased" and gram.shape[0] < 4  # the unbiased HSIC needs 4 examples
                out[name][e].append(float("nan") if small else cka_of(gram, final_grams[name], e))
    return out


def _units_at_final(projector, logmel, layers, acts, cka_features, channels_per_layer, units, batch_size):
    """The units shown per layer: explicit ``units``, else the most active at the final epoch."""
    full = acts if cka_features == "flatten" else projector.traced.activations(logmel, layers, batch_size)
    return {name: [int(c) for c in units[name]] if units and name in units
            else _choose_units(full[name], channels_per_layer) for name in layers}


def _assemble(run_dir, probe_manifest, probe, snaps, mode, cka_features, clip_s, k, chosen, grams,
              per_epoch, baseline) -> Evolution:
    epochs = [e for e, _ in snaps]
    final = epochs[-1]
    layers = list(chosen)

    def curves(estimator):
        if estimator == "debiased" and len(probe) < 4:  # the unbiased HSIC needs 4 examples
            return {name: [float("nan")] * len(epochs) for name in layers}
        return {name: [cka_of(grams[e][name], grams[final][name], estimator) for e in epochs] for name in layers}

    return Evolution(
        run_dir=str(run_dir), epochs=epochs, mode=mode, cka_features=cka_features, clip_s=clip_s,
        probe_manifest=str(probe_manifest) if isinstance(probe_manifest, (str, os.PathLike)) else None,
        probe_clip_ids=[str(r.get("audio_filepath")) for r in probe.records],
        probe_labels=[r.get("label") for r in probe.records], units=chosen,
        cka_linear=curves("linear"), cka_debiased=curves("debiased"), cka_estimator="debiased", baseline=baseline,
        grids={name: _build_grid(name, mode, epochs, chosen[name], int(k), per_epoch[name])
               for name in layers if name in per_epoch})


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
