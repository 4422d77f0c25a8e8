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
   and the layer-convergence curve (linear CKA to the final epoch);
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
import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

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


def _frontend_batches(model, waves: torch.Tensor, device, batch_size: int = 64) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.frontend(waves[i:i + batch_size].to(device)) for i in range(0, len(waves), batch_size)])


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


def _run(s: DemoSettings, out: Path, device: str, progress: bool, log) -> dict:
    from audioconv.training.checkpoint import load_model
    from audioconv.data.dataset import ManifestDataset
    from audioconv.app.demo_corpus import CLASSES, make_corpus
    from audioconv.training.evaluate import evaluate
    from audioconv.plots.confusion import plot_confusion
    from audioconv.io.manifest import read_manifest
    from audioconv.app.report import LayerFigures, ReportContent, UnitSounds, read_metrics, write_report
    from audioconv.training.config import TrainConfig
    from audioconv.training.loop import fit
    from audioconv.utils import resolve_device
    from audioconv.interpret.evolve import evolve, layer_activations
    from audioconv.plots.render import plot_topk_grid
    from audioconv.interpret.topk import top_k

    dev = resolve_device(device)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    for name in _REGENERATED:
        shutil.rmtree(out / name, ignore_errors=True)
    figures, sounds = out / "figures", out / "sounds"
    sample_rate, clip_s = 16000, 1.0

    # 1. corpus ---------------------------------------------------------------------------------
    with _stage(log, timings, "corpus"):
        manifests = make_corpus(out / "corpus", n_per_class=s.n_per_class, sample_rate=sample_rate,
                                clip_s=clip_s, seed=s.seed, progress=progress)

    # 2. training -------------------------------------------------------------------------------
    run_dir = out / "run"
    with _stage(log, timings, "train"):
        cfg = TrainConfig(train=str(manifests["train"]), val=str(manifests["val"]), out=str(run_dir),
                          sample_rate=sample_rate, clip_s=clip_s, channels=tuple(s.channels), epochs=s.epochs,
                          batch_size=s.batch_size, lr=s.lr, augment="default", specaugment=s.specaugment,
                          label_smoothing=s.label_smoothing, threads=s.threads, device=str(dev), seed=s.seed)
        trained = fit(cfg, progress=progress)
    best = run_dir / "best.pt"

    # 3. evaluation ------------------------------------------------------------------------------
    with _stage(log, timings, "evaluate"):
        result = evaluate(best, manifests["test"], device=str(dev), progress=progress)
        confusion_png = plot_confusion(result, figures / "confusion.png")
        (figures / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")

    # 4. top-k grids ---------------------------------------------------------------------------------
    model, labels = load_model(best, dev)
    layers = list(model.layer_names)
    test_ds = ManifestDataset(manifests["test"], sample_rate=sample_rate, clip_s=clip_s, labels=labels, crop="center")
    topk_pngs: dict[str, Path] = {}
    with _stage(log, timings, "top-k"):
        waves = torch.stack([test_ds[i][0] for i in range(len(test_ds))])  # (N, 1, T)
        targets = torch.as_tensor([test_ds[i][1] for i in range(len(test_ds))])
        logmel = _frontend_batches(model, waves, dev)
        acts = layer_activations(model, logmel, layers)
        units = {name: choose_units(a.amax(dim=(2, 3)), targets, s.units_per_layer) for name, a in acts.items()}
        del acts
        for name in layers:
            tk = top_k(model, test_ds, name, channels=units[name], k=s.k, device=dev, progress=progress)
            topk_pngs[name] = figures / f"topk_{name}.png"
            plot_topk_grid(tk, topk_pngs[name], logmel=model.frontend)
            (figures / f"topk_{name}.json").write_text(json.dumps(tk.to_dict(), indent=1) + "\n", encoding="utf-8")

    # 5. feature evolution ------------------------------------------------------------------------
    with _stage(log, timings, "evolve"):
        probe, per_class = [], {}
        for rec in read_manifest(manifests["val"]):
            if per_class.get(rec["label"], 0) < s.probe_per_class:
                per_class[rec["label"]] = per_class.get(rec["label"], 0) + 1
                probe.append(rec)
        evo = evolve(run_dir, probe, out_dir=figures / "evolve", units=units, k=1, device=dev, progress=progress)

    # 6. projections you can listen to ---------------------------------------------------------------
    from audioconv.interpret.projector import Projector
    from audioconv.plots.render import plot_projection
    from audioconv.interpret.sonify import griffin_lim_audio, masked_audio, save_wav

    unit_sounds: list[UnitSounds] = []
    with _stage(log, timings, "sounds"):
        with torch.no_grad():
            predicted = torch.cat([model.classify(logmel[i:i + 64]).argmax(1).cpu() for i in range(0, len(logmel), 64)])
        projector = Projector(model, mode="deconv", device=dev)
        fc = model.head.fc.weight.detach()  # (n_classes, C_last)
        cpu_frontend = copy.deepcopy(model.frontend).cpu()  # sonification runs on CPU
        wanted = [c for c in s.sound_classes if c in labels] or [labels[0]]
        for cls in wanted:
            c = labels.index(cls)
            hits = torch.nonzero((targets == c) & (predicted == c)).flatten()
            if hits.numel() == 0:
                hits = torch.nonzero(targets == c).flatten()
            if hits.numel() == 0:
                continue
            i = int(hits[0])
            rec = test_ds.records[i]
            clip_name = f"{cls}_{Path(rec['audio_filepath']).stem.split('_')[-1]}"
            input_wav = save_wav(sounds / f"{clip_name}.wav", waves[i], sample_rate)
            x = logmel[i:i + 1]
            for name in layers:
                with torch.no_grad():
                    fm = projector.feature_maps(x, name)[0]  # (C, H, W)
                if name == layers[-1]:  # the unit adding most to the predicted class's logit
                    pooled = torch.nn.functional.max_pool2d(fm[None], 2, 2, ceil_mode=True)[0].mean(dim=(1, 2))
                    unit = int(torch.argmax(fc[int(predicted[i])] * pooled))
                else:
                    unit = int(fm.amax(dim=(1, 2)).argmax())
                proj = projector.project(x, name, [unit], position="map", progress=False)
                stem = f"{clip_name}_{name}_unit{unit}"
                fig_png = figures / "projections" / f"{stem}.png"
                plot_projection(proj, 0, fig_png, logmel=model.frontend,
                                title=f"{name} unit {unit} on a {cls} clip (whole-map deconv projection)")
                pmap = proj.maps[0, 0]
                masked = masked_audio(waves[i], pmap, cpu_frontend)
                gl = griffin_lim_audio(pmap, cpu_frontend, waves.shape[-1])
                unit_sounds.append(UnitSounds(
                    layer=name, unit=unit, clip_label=cls, input_wav=input_wav,
                    masked_wav=save_wav(sounds / f"{stem}_masked.wav", masked, sample_rate),
                    griffinlim_wav=save_wav(sounds / f"{stem}_griffinlim.wav", gl, sample_rate),
                    figure_png=fig_png, predicted_label=labels[int(predicted[i])],
                    activation=float(proj.activations[0, 0]), clip_name=clip_name))

    # 7. report ------------------------------------------------------------------------------------------
    with _stage(log, timings, "report"):
        n_params = sum(p.numel() for p in model.parameters())
        split_counts = {k: sum(1 for _ in read_manifest(v)) for k, v in manifests.items()}
        layer_figs = []
        for name in layers:
            info = evo["layers"][name]
            conv = [(e, v) for e, v in zip(evo["epochs"], info["cka"]) if v is not None]
            layer_figs.append(LayerFigures(name, topk_pngs[name], info["grid_png"], conv,
                                           note=f"units shown: {', '.join(str(u) for u in units[name])} "
                                                f"(of {model.n_channels(name)}; chosen for class selectivity)"))
        elapsed = time.perf_counter() - t_start
        summary_rows = {
            "test accuracy": f"{result['accuracy']:.4f}",
            "test macro-F1": f"{result['macro_f1']:.4f}",
            "test clips": result["n"],
            "classes": ", ".join(labels),
            "corpus": f"{len(CLASSES)} synthesized classes, {split_counts['train']} train / {split_counts['val']} val / "
                      f"{split_counts['test']} test clips of {clip_s:g} s at {sample_rate} Hz, seed {s.seed}",
            "model": f"SpectrogramCNN channels {list(s.channels)}, {n_params:,} parameters, 64-bin log-mel",
            "training": f"{trained['epochs']} epochs, batch {s.batch_size}, peak lr {s.lr:g}, default augmentation "
                        f"chain{' + SpecAugment' if s.specaugment else ''}, best epoch {trained['best_epoch']}",
            "device": str(dev),
            "training time": f"{trained['time_s']:.1f} s",
            "demo time (before this report)": f"{elapsed:.1f} s",
            "stage times (s)": ", ".join(f"{k} {v:.1f}" for k, v in timings.items()),
            "run folder": str(run_dir.resolve()),
        }
        content = ReportContent(
            title="audioconv demo: what the units of a spectrogram CNN hear",
            summary=summary_rows, metrics=read_metrics(run_dir / "metrics.jsonl"), evaluation=result,
            confusion_png=confusion_png, layers=layer_figs, convergence_png=evo["convergence_png"],
            units=unit_sounds,
            notes=["Projections use the Zeiler & Fergus deconvnet rule (max-pool switches, ReLU on the "
                   "backward signal, transposed filters); colours are signed and centred at zero."])
        index = write_report(out / "report", content)

    total = time.perf_counter() - t_start
    summary = {
        "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "n_test": result["n"],
        "report": str(index), "out": str(out), "device": str(dev), "settings": s.to_dict(),
        "epochs": trained["epochs"], "best_epoch": trained["best_epoch"], "timings_s": timings,
        "total_s": round(total, 2), "units": units, "labels": labels,
        "manifests": {k: str(v) for k, v in manifests.items()},
    }
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary
