"""The end-to-end demo: from nothing to a trained model and a report of what its units hear.

:func:`run_demo` runs, in one call (and ``audioconv demo`` on the command line):

1. **corpus** — :func:`audioconv.app.demo_corpus.make_corpus` synthesizes ten classes of sound events
   (kept and reused when ``OUT/corpus`` already holds the same corpus);
2. **train** — :func:`audioconv.training.loop.fit` with the default augmentation chain, snapshots at
   epochs 1, 2, 5, 10 … for feature evolution (``OUT/run``);
3. **evaluate** — :func:`audioconv.training.evaluate.evaluate` of ``best.pt`` on the test split, confusion PNG;
4. **top-k** — for every conv layer, the ``k`` strongest activations over the test set of a few
   units, projected (Zeiler & Fergus deconvnet) → one grid PNG per layer;
5. **evolve** — the same units' strongest projection over a probe set at every snapshot epoch,
   and the layer-convergence curve (debiased CKA to the final epoch);
6. **sounds** — a few test clips, for each layer the unit that responds most (in the last layer:
   the unit that adds most to the predicted class's logit), projected over the whole clip,
   drawn and made audible (projection-masked clip, Griffin-Lim of the projection);
7. **report** — ``OUT/report/index.html`` (:mod:`audioconv.app.report`), self-contained and offline.

Units shown per layer are chosen on the test set for *class selectivity*: each unit's peak
activation per clip is averaged per class; a unit's selectivity is
``(best class mean − mean of the other classes) / best class mean``; units are taken round-robin
over their preferred classes, most selective first, so different classes are represented.

Sizes (:data:`FULL`) are chosen so the whole demo takes under 5 minutes on a 2-core CPU with
test accuracy ≥ 90 %; :data:`QUICK` is a seconds-long smoke run of every stage. Training uses the
package's default waveform augmentation chain; SpecAugment and label smoothing are off, because
with them a short budget left some tonal classes under-fitted (one comparison, 100 clips per class,
seed, 12 epochs: test accuracy 0.98 with SpecAugment and smoothing 0.1 at lr 3e-3, 1.00 without
them at lr 5e-3; final training accuracy 0.90 vs 0.99). Training runs torch on one CPU thread: on a 2-core machine that
is also busy with anything else, two OpenMP threads wait on each other (measured here under a load
average of ~4: 53 s of training with one thread, 271 s with two); on an idle machine one thread
costs little (the model is small). The caller's torch thread count is restored afterwards.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from audioconv.training.checkpoint import load_model
from audioconv.data.dataset import ManifestDataset
from audioconv.app.demo_corpus import CLASSES, make_corpus
from audioconv.training.evaluate import evaluate
from audioconv.plots.confusion import plot_confusion
from audioconv.io.manifest import read_manifest
from audioconv.app.report import LayerFigures, UnitSounds, write_report
from audioconv.app.run_report import build_run_report
from audioconv.training.config import TrainConfig
from audioconv.training.loop import fit
from audioconv.utils import resolve_device
from audioconv.interpret.evolve import evolve
from audioconv.app.figures import save_figure, write_evolution, write_topk
from audioconv.interpret.topk import top_k
from audioconv.interpret.projector import Projector
from audioconv.plots.projection import plot_projection
from audioconv.interpret.sonify import griffin_lim_audio, masked_audio
from audioconv.interpret.contributions import logit_contributions
from audioconv.data import collate
from audioconv.features import LogMel
from audioconv.io import audio
from audioconv.io.files import write_json

__all__ = ["DemoSettings", "FULL", "QUICK", "run_demo", "choose_units"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. Counts are clips or units; ``lr`` is the peak learning rate."""

    n_per_class: int = 150            # clips per class over train/val/test (70/15/15 %)
    epochs: int = 15
    channels: tuple[int, ...] = (16, 32, 64, 64)
    batch_size: int = 32
    lr: float = 5e-3                  # peak of the one-cycle schedule
    specaugment: bool = False         # the waveform chain is always the default one; see module doc
    label_smoothing: float = 0.0
    threads: int = 1                  # torch CPU threads while training (0 = one per core); module doc
    k: int = 9                        # top-k activations per unit
    units_per_layer: int = 6          # units drawn per layer (top-k rows, evolution rows)
    probe_per_class: int = 3          # evolution probe clips per class (from the validation split)
    sound_classes: tuple[str, ...] = ("rising_chirp", "vowel", "click_train")
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["sound_classes"] = list(self.channels), list(self.sound_classes)
        return d


FULL = DemoSettings()
QUICK = DemoSettings(n_per_class=6, epochs=2, channels=(8, 16), batch_size=16, k=3, units_per_layer=2,
                     probe_per_class=1, sound_classes=("rising_chirp", "click_train"))

_SAMPLE_RATE, _CLIP_S = 16000, 1.0
_MARKERS = ("demo_summary.json", "corpus/corpus.json")
_REGENERATED = ("run", "figures", "sounds", "report")


def _check_out(out: Path) -> None:
    """Refuse to write into a non-empty folder that is not a previous demo output."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / m).exists() for m in _MARKERS):
        raise ValueError(f"--out {out} exists, is not empty and is not a demo folder; choose a new or empty folder")


def choose_units(peaks: torch.Tensor, targets, n: int) -> list[int]:
    """Pick ``n`` class-selective units (module doc).

    Args:
        peaks: ``(N, C)`` each clip's peak activation per unit (>= 0 for ReLU layers).
        targets: ``(N,)`` class index of each clip.
        n: how many units.

    Returns:
        Up to ``n`` distinct channel indices, in the order chosen (round-robin over preferred
        classes, most selective first). Units that never fire are not chosen unless needed.
    """
    peaks = torch.as_tensor(peaks, dtype=torch.float64)
    targets = torch.as_tensor(targets, dtype=torch.long)
    if peaks.dim() != 2 or targets.shape != peaks.shape[:1]:
        raise ValueError(f"peaks must be (N, C) and targets (N,), got {tuple(peaks.shape)} and {tuple(targets.shape)}")
    classes = torch.unique(targets)
    means = torch.stack([peaks[targets == c].mean(0) for c in classes])  # (n_classes, C)
    best, pref = means.max(0)
    rest = (means.sum(0) - best) / max(1, len(classes) - 1)
    selectivity = torch.where(best > 0, (best - rest) / best.clamp_min(1e-12), torch.full_like(best, -1.0))
    queues = {}
    for c in torch.argsort(-selectivity, stable=True).tolist():
        queues.setdefault(int(pref[c]), []).append(c)
    # classes ordered by their best unit's selectivity
    order = sorted(queues, key=lambda k: -float(selectivity[queues[k][0]]))
    chosen: list[int] = []
    while len(chosen) < min(n, peaks.shape[1]):
        for k in order:
            if queues[k] and len(chosen) < n:
                chosen.append(queues[k].pop(0))
    return chosen


@contextlib.contextmanager
def _stage(log, timings: dict, name: str):
    """Announce a stage through ``log`` and record its wall time (s) in ``timings[name]``."""
    if log:
        log(name)
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - t, 2)


def run_demo(out: str | os.PathLike = "runs/demo", device: str = "auto", progress: bool = True, quick: bool = False,
             settings: DemoSettings | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Corpus → training → evaluation → top-k grids → feature evolution → sounds → HTML report.

    Args:
        out: output folder (created). ``OUT/corpus`` is kept and reused when it holds the same
            corpus; ``OUT/run``, ``OUT/figures``, ``OUT/sounds`` and ``OUT/report`` are rewritten.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        progress: tqdm bars in every stage.
        quick: use :data:`QUICK` (a seconds-long run of every stage) instead of :data:`FULL`.
        settings: explicit :class:`DemoSettings` (overrides ``quick``).
        log: called with the name of each stage as it starts (the CLI passes ``print``).

    Returns:
        JSON-ready summary (also written to ``OUT/demo_summary.json``): ``accuracy``, ``macro_f1``,
        ``n_test``, ``report`` (path of ``index.html``), ``out``, ``device``, ``settings``,
        ``best_epoch``, ``epochs``, ``timings_s`` per stage, ``total_s``, ``units`` per layer,
        ``manifests``.

    Raises:
        ValueError: ``out`` is a non-empty folder that is not a demo output; bad device.
    """
    s = settings or (QUICK if quick else FULL)
    out = Path(out)
    _check_out(out)
    threads_before = torch.get_num_threads()
    try:
        return _run(s, out, device, progress, log)
    finally:
        torch.set_num_threads(threads_before)


@dataclass
class _TestSet:
    """The test split as the later stages see it: the best model, its projector and the decoded clips."""

    model: torch.nn.Module
    labels: list[str]
    projector: Projector
    dataset: ManifestDataset
    waves: torch.Tensor  # (N, 1, T) at the demo's sample rate
    targets: torch.Tensor  # (N,) class indices
    logmel: torch.Tensor  # (N, 1, F, T) on the device, from the model's own front end

    @property
    def layers(self) -> list[str]:
        return list(self.model.layer_names)


def _run(s: DemoSettings, out: Path, device: str, progress: bool, log) -> dict:
    dev = resolve_device(device)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name in _REGENERATED:
        shutil.rmtree(out / name, ignore_errors=True)
    figures, run_dir = out / "figures", out / "run"
    with _stage(log, timings, "corpus"):
        manifests = make_corpus(out / "corpus", n_per_class=s.n_per_class, sample_rate=_SAMPLE_RATE,
                                clip_s=_CLIP_S, seed=s.seed, progress=progress)
    with _stage(log, timings, "train"):
        cfg = TrainConfig(train=str(manifests["train"]), val=str(manifests["val"]), out=str(run_dir),
                          sample_rate=_SAMPLE_RATE, clip_s=_CLIP_S, channels=tuple(s.channels), epochs=s.epochs,
                          batch_size=s.batch_size, lr=s.lr, augment="default", specaugment=s.specaugment,
                          label_smoothing=s.label_smoothing, threads=s.threads, device=str(dev), seed=s.seed)
        trained = fit(cfg, progress=progress)
    with _stage(log, timings, "evaluate"):
        result = evaluate(run_dir / "best.pt", manifests["test"], device=str(dev), progress=progress)
        confusion_png = save_figure(plot_confusion(result), figures / "confusion.png", dpi=100)
        write_json(figures / "evaluation.json", result)
    with _stage(log, timings, "top-k"):
        test = _load_test_set(run_dir / "best.pt", manifests["test"], dev)
        units, topk_pngs = _topk_stage(test, s, figures, progress)
    with _stage(log, timings, "evolve"):
        probe = _probe_records(manifests["val"], s.probe_per_class)
        evolution = evolve(run_dir, probe, units=units, k=1, device=dev, progress=progress,
                           cka_estimator="debiased" if len(probe) >= 4 else "linear")  # debiased needs 4 clips
        evo = write_evolution(evolution, figures / "evolve")
    with _stage(log, timings, "sounds"):
        unit_sounds = _sounds_stage(test, s, figures / "projections", out / "sounds")
    with _stage(log, timings, "report"):
        layer_figs = _layer_figures(test, units, topk_pngs, evo)
        rows = _summary_rows(s, result, trained, manifests, test, dev, timings, time.perf_counter() - t_start, run_dir)
        index = _write_demo_report(out / "report", rows, run_dir, result, confusion_png, layer_figs, evo, unit_sounds,
                                   manifests["test"], dev)
    summary = {
        "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_test": result["n"],
        "report": str(index), "out": str(out), "device": str(dev), "settings": s.to_dict(),
        "epochs": trained["epochs"], "best_epoch": trained["best_epoch"], "timings_s": timings,
        "total_s": round(time.perf_counter() - t_start, 2), "units": units, "labels": test.labels,
        "manifests": {k: str(v) for k, v in manifests.items()},
    }
    write_json(out / "demo_summary.json", summary)
    return summary


def _load_test_set(checkpoint: Path, manifest, dev: torch.device) -> _TestSet:
    """Load the best model and decode the test clips once (centre crop to the clip length)."""
    model, labels = load_model(checkpoint, dev)
    dataset = ManifestDataset(manifest, sample_rate=_SAMPLE_RATE, clip_s=_CLIP_S, labels=labels, crop="center")
    waves, targets, _ = collate([dataset[i] for i in range(len(dataset))])  # (N, 1, T), (N,)
    projector = Projector(model, mode="deconv", device=dev)
    return _TestSet(model, labels, projector, dataset, waves, targets, projector.to_logmel(waves, "waveform"))


def _topk_stage(test: _TestSet, s: DemoSettings, figures: Path, progress: bool):
    """Choose class-selective units per layer and draw each layer's top-k grid → (units, PNG per layer)."""
    peaks = test.projector.traced.activations(test.logmel, test.layers, reduce="max")  # {layer: (N, C)}
    units = {name: choose_units(p, test.targets, s.units_per_layer) for name, p in peaks.items()}
    pngs = {}
    for name in test.layers:
        tk = top_k(test.projector, test.dataset, name, channels=units[name], k=s.k, progress=progress)
        pngs[name] = write_topk(tk, figures, logmel=test.model.frontend)["png"]
    return units, pngs


def _probe_records(val_manifest, per_class: int) -> list[dict]:
    """The first ``per_class`` validation clips of each class, in manifest order."""
    probe, counts = [], {}
    for rec in read_manifest(val_manifest):
        if counts.get(rec["label"], 0) < per_class:
            counts[rec["label"]] = counts.get(rec["label"], 0) + 1
            probe.append(rec)
    return probe


def _sounds_stage(test: _TestSet, s: DemoSettings, figures: Path, sounds: Path) -> list[UnitSounds]:
    """For one correctly classified clip of each sound class, every layer's strongest unit as a picture
    and as sounds."""
    predicted = test.projector.traced.logits(test.logmel).argmax(1)  # the model's own logits
    cpu_frontend = LogMel(test.model.frontend.config)  # sonification runs on the CPU
    out: list[UnitSounds] = []
    for cls in [c for c in s.sound_classes if c in test.labels] or [test.labels[0]]:
        c = test.labels.index(cls)
        hits = torch.nonzero((test.targets == c) & (predicted == c)).flatten()
        if hits.numel() == 0:
            hits = torch.nonzero(test.targets == c).flatten()
        if hits.numel() > 0:
            out += _clip_sounds(test, int(hits[0]), int(predicted[int(hits[0])]), cpu_frontend, figures, sounds)
    return out


def _clip_sounds(test: _TestSet, i: int, predicted: int, cpu_frontend: LogMel, figures: Path,
                 sounds: Path) -> list[UnitSounds]:
    """Clip ``i``: per layer the unit that responds most (in the last layer: the unit adding most to the
    predicted class's logit), projected over the whole clip, drawn, masked-audio and Griffin-Lim sounds."""
    cls = test.labels[int(test.targets[i])]
    clip_name = f"{cls}_{Path(test.dataset.records[i]['audio_filepath']).stem.split('_')[-1]}"
    input_wav = audio.save(sounds / f"{clip_name}.wav", test.waves[i], _SAMPLE_RATE)
    x = test.logmel[i:i + 1]
    out = []
    for name in test.layers:
        if name == test.layers[-1]:
            unit = int(logit_contributions(test.projector.traced, x, name, predicted)[0].argmax())
        else:
            unit = int(test.projector.feature_maps(x, name)[0].amax(dim=(1, 2)).argmax())
        proj = test.projector.project(x, name, [unit], position="map", progress=False)
        stem = f"{clip_name}_{name}_unit{unit}"
        fig = plot_projection(proj, 0, logmel=test.model.frontend,
                              title=f"{name} unit {unit} on a {cls} clip (whole-map deconv projection)")
        pmap = proj.maps[0, 0]
        out.append(UnitSounds(
            layer=name, unit=unit, clip_label=cls, input_wav=input_wav,
            masked_wav=audio.save(sounds / f"{stem}_masked.wav", masked_audio(test.waves[i], pmap, cpu_frontend),
                                  _SAMPLE_RATE),
            griffinlim_wav=audio.save(sounds / f"{stem}_griffinlim.wav",
                                      griffin_lim_audio(pmap, cpu_frontend, test.waves.shape[-1]), _SAMPLE_RATE),
            figure_png=save_figure(fig, figures / f"{stem}.png"), predicted_label=test.labels[predicted],
            activation=float(proj.activations[0, 0]), clip_name=clip_name))
    return out


def _layer_figures(test: _TestSet, units: dict, topk_pngs: dict, evo: dict) -> list[LayerFigures]:
    figs = []
    for name in test.layers:
        info = evo["layers"][name]
        conv = [(e, v) for e, v in zip(evo["epochs"], info["cka"]) if v is not None]
        figs.append(LayerFigures(name, topk_pngs[name], info["grid_png"], conv,
                                 note=f"units shown: {', '.join(str(u) for u in units[name])} "
                                      f"(of {test.model.n_channels(name)}; chosen for class selectivity)"))
    return figs


def _summary_rows(s: DemoSettings, result: dict, trained: dict, manifests: dict, test: _TestSet,
                  dev: torch.device, timings: dict, elapsed_s: float, run_dir: Path) -> dict:
    """The report's run-summary table."""
    n_params = sum(p.numel() for p in test.model.parameters())
    split_counts = {k: sum(1 for _ in read_manifest(v)) for k, v in manifests.items()}
    return {
        "test accuracy": f"{result['accuracy']:.4f}",
        "test macro-F1": f"{result['macro_f1']:.4f}",
        "test clips": result["n"],
        "classes": ", ".join(test.labels),
        "corpus": f"{len(CLASSES)} synthesized classes, {split_counts['train']} train / {split_counts['val']} val / "
                  f"{split_counts['test']} test clips of {_CLIP_S:g} s at {_SAMPLE_RATE} Hz, seed {s.seed}",
        "model": f"SpectrogramCNN channels {list(s.channels)}, {n_params:,} parameters, "
                 f"{test.model.frontend.config.n_mels}-bin log-mel",
        "training": f"{trained['epochs']} epochs, batch {s.batch_size}, peak lr {s.lr:g}, default augmentation "
                    f"chain{' + SpecAugment' if s.specaugment else ''}, best epoch {trained['best_epoch']}",
        "device": str(dev),
        "training time": f"{trained['time_s']:.1f} s",
        "demo time (before this report)": f"{elapsed_s:.1f} s",
        "stage times (s)": ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "run folder": str(run_dir.resolve()),
    }


def _write_demo_report(report_dir: Path, rows: dict, run_dir: Path, result: dict, confusion_png, layer_figs,
                       evo: dict, unit_sounds, test_manifest, dev: torch.device) -> Path:
    """The run report of :func:`audioconv.app.run_report.build_run_report` (reproducing command, data
    tables, misclassified test clips) with the demo's own summary, evaluation and interpretation."""
    content = build_run_report(run_dir, report_dir.parent / "figures" / "report_media", test=test_manifest,
                               device=str(dev), progress=False)
    content.title = "audioconv demo: what the units of a spectrogram CNN hear"
    content.summary, content.evaluation, content.confusion_png = rows, result, confusion_png
    content.layers, content.convergence_png, content.units = layer_figs, evo["convergence_png"], unit_sounds
    content.command_note = ("The training step of this demo as a command (the demo also synthesized the corpus "
                            "and runs the interpretation stages). " + content.command_note)
    content.notes = ["Projections use the Zeiler & Fergus deconvnet rule (max-pool switches, ReLU on the "
                     "backward signal, transposed filters); colours are signed and centred at zero."]
    return write_report(report_dir, content)
