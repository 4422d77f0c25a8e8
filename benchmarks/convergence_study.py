#!/usr/bin/env python3
"""Do lower layers converge first? Several seeds, two architectures, debiased CKA and untrained baselines.

One command reproduces the study written up in ``docs/convergence.md``::

    nice -n 5 python benchmarks/convergence_study.py --out /tmp/convergence [--seeds 0,1,2]
        [--models cnn,bcresnet] [--epochs 8] [--n-per-class 70] [--baseline 3] [--quick]

Steps (each skipped when its output already exists, so an interrupted study resumes):

1. **Corpus.** The demo corpus (:func:`audioconv.app.demo_corpus.make_corpus`, ``--n-per-class``
   clips per class, seed 0; 70 → 490 training, 105 validation and 105 test clips of ten synthetic
   sound-event classes). The probe set is the validation and test clips together (210): no probe
   clip is trained on.
2. **Train** each model with each seed, with the demo's recipe (default waveform augmentation, no
   SpecAugment, one-cycle lr 5e-3, batch 32, one CPU thread): the built-in CNN (channels 16-32-64-64,
   as ``audioconv demo``) and BC-ResNet-1 (``--model bcresnet``). Snapshots at epochs 1, 2, 5 and the
   last (the trainer's schedule) plus ``epoch_000.pt``: the run's own initial weights, rebuilt exactly as
   the trainer builds them (``torch.manual_seed(seed)`` then the model).
3. **Measure** with :func:`audioconv.interpret.evolve.evolve` (``grids=False``): each layer's
   activations on the probe clips (flattened feature maps) at every snapshot,
   linear CKA and debiased CKA against the final epoch, and ``--baseline`` freshly initialised
   networks of the same architecture (independent seeds) against the final epoch.
4. **Report** ``results.json`` and ``results.md``: per model, layer and epoch the mean ± standard
   deviation over seeds (and the range), the baselines, the test accuracy of each run, the layer
   order at each epoch per seed, and the share of the way from the initial weights to the final
   representation covered by each epoch, ``(CKA_e − CKA_0) / (1 − CKA_0)``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RECIPE = dict(batch_size=32, lr=5e-3, augment="default", specaugment=False, label_smoothing=0.0, threads=1,
              device="cpu")
MODELS = {"cnn": dict(model="cnn", channels=(16, 32, 64, 64)), "bcresnet": dict(model="bcresnet")}


def make_corpus(out: Path, n_per_class: int, kws: str | None = None) -> dict:
    """The demo corpus, or (``kws``) a Speech Commands folder with its training split cut to
    ``n_per_class`` clips per word (the first in file order) and its whole validation and test splits."""
    if kws is None:
        from audioconv.app.demo_corpus import make_corpus as synthesize

        return synthesize(out / "corpus", n_per_class=n_per_class, seed=0, progress=False)
    from audioconv.io.importers.speech_commands import import_speech_commands
    from audioconv.io.manifest import write_manifest

    folder = out / "corpus"
    paths = {k: folder / f"{k}.jsonl" for k in ("train", "val", "test")}
    if all(p.is_file() for p in paths.values()):
        return paths
    records = import_speech_commands(kws, progress=False).records
    kept, counts = [], {}
    for r in records:
        if r["split"] == "train":
            counts[r["label"]] = counts.get(r["label"], 0) + 1
            if counts[r["label"]] > n_per_class:
                continue
        kept.append(r)
    for key, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        write_manifest(paths[key], [r for r in kept if r["split"] == split], relative=False)
    return paths


def train(out: Path, manifests: dict, model: str, seed: int, epochs: int) -> Path:
    """Train one run (skipped when its last snapshot exists) and add its initial weights as epoch 0."""
    import torch

    from audioconv.training.checkpoint import load_checkpoint, save_checkpoint
    from audioconv.training.config import TrainConfig
    from audioconv.training.loop import build_model, fit

    run = out / "runs" / f"{model}_s{seed}"
    cfg = TrainConfig(train=str(manifests["train"]), val=str(manifests["val"]), out=str(run), epochs=epochs,
                      seed=seed, overwrite=True, **MODELS[model], **RECIPE)
    if not (run / "snapshots" / f"epoch_{epochs:03d}.pt").is_file():
        t = time.perf_counter()
        fit(cfg, progress=False)
        print(f"  trained {run.name} in {time.perf_counter() - t:.0f} s", flush=True)
    first = load_checkpoint(run / "snapshots" / "epoch_001.pt")
    torch.manual_seed(seed)  # as the trainer does right before it builds the model
    initial = build_model(cfg, len(first["labels"]))
    save_checkpoint(run / "snapshots" / "epoch_000.pt", {**first, "model": initial.state_dict(), "epoch": 0,
                                                          "step": 0, "metrics": None})
    return run


def measure(out: Path, run: Path, probe: Path, baseline: int, seed: int) -> dict:
    """evolve's convergence numbers of one run (cached in ``OUT/measure/<run>.json``)."""
    from audioconv.interpret.evolve import evolve
    from audioconv.io.files import write_json
    from audioconv.training.evaluate import evaluate

    path = out / "measure" / f"{run.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    t = time.perf_counter()
    ev = evolve(run, probe, grids=False, baseline=baseline, baseline_seed=1000 * (seed + 1), device="cpu",
                progress=False, batch_size=64)
    result = ev.to_dict()
    final = sorted((run / "snapshots").glob("epoch_*.pt"))[-1]
    result["test"] = {k: v for k, v in evaluate(final, probe, device="cpu", progress=False).items()
                      if k in ("accuracy", "macro_f1", "n")}
    result["measure_s"] = round(time.perf_counter() - t, 1)
    write_json(path, result)
    print(f"  measured {run.name} in {result['measure_s']:.0f} s (test accuracy {result['test']['accuracy']:.3f})",
          flush=True)
    return result


# ---- report -------------------------------------------------------------------------------------
def _stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def _progress(curve: list, epochs: list) -> list:
    """``(CKA_e − CKA_0) / (1 − CKA_0)`` with ``CKA_0`` the run's initial weights (epoch 0)."""
    c0 = curve[epochs.index(0)]
    return [None if c is None or c0 is None or c0 >= 1 else (c - c0) / (1 - c0) for c in curve]


def summarise(results: dict) -> dict:
    """``{model: {...}}`` mean ± sd over seeds of every number (see the module docstring)."""
    summary = {}
    for model, runs in results.items():
        first = next(iter(runs.values()))
        epochs, layers = first["epochs"], list(first["layers"])
        entry = {"epochs": epochs, "layers": layers, "seeds": sorted(runs), "n_probe": len(first["probe"]["clip_ids"]),
                 "test_accuracy": _stats([r["test"]["accuracy"] for r in runs.values()]),
                 "test_accuracy_per_seed": {s: r["test"]["accuracy"] for s, r in runs.items()}, "cka": {}}
        for estimator in ("linear", "debiased"):
            key = f"cka_{estimator}"
            table = entry["cka"][estimator] = {}
            for layer in layers:
                curves = [r["layers"][layer][key] for r in runs.values()]
                base = [v for r in runs.values() for v in r["layers"][layer]["baseline"][estimator]]
                table[layer] = {"per_epoch": [_stats([c[i] for c in curves]) for i in range(len(epochs))],
                                "progress": [_stats([_progress(c, epochs)[i] for c in curves])
                                             for i in range(len(epochs))],
                                "baseline": _stats(base)}
            entry.setdefault("order", {})[estimator] = {
                str(e): {s: sorted(layers, key=lambda la: -(r["layers"][la][key][i] or -9)) for s, r in runs.items()}
                for i, e in enumerate(epochs)}
        summary[model] = entry
    return summary


def _cell(s: dict, digits: int = 3) -> str:
    if s["mean"] is None:
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["# Layer convergence study: results", ""]
    for model, e in summary.items():
        acc = e["test_accuracy"]
        lines += [f"## {model}", "", f"seeds {', '.join(map(str, e['seeds']))}; {e['n_probe']} probe clips; "
                  f"test accuracy {acc['mean']:.3f} (min {acc['min']:.3f}, max {acc['max']:.3f})", ""]
        for estimator in ("linear", "debiased"):
            t = e["cka"][estimator]
            head = "| layer | fresh init (baseline) | " + " | ".join(f"epoch {ep}" for ep in e["epochs"]) + " |"
            lines += [f"### {estimator} CKA vs the final epoch (mean ± sd over seeds)", "", head,
                      "|" + " --- |" * (len(e["epochs"]) + 2)]
            for layer in e["layers"]:
                cells = [_cell(s) for s in t[layer]["per_epoch"]]
                b = t[layer]["baseline"]
                lines.append(f"| {layer} | {_cell(b)} ({b['min']:.2f}–{b['max']:.2f}) | " + " | ".join(cells) + " |")
            lines += ["", f"Share of the way from the initial weights (epoch 0) to the final representation, "
                          f"{estimator} CKA:", "", "| layer | " + " | ".join(f"epoch {ep}" for ep in e["epochs"][1:])
                      + " |", "|" + " --- |" * len(e["epochs"])]
            for layer in e["layers"]:
                lines.append(f"| {layer} | " + " | ".join(_cell(s, 2) for s in t[layer]["progress"][1:]) + " |")
            lines += ["", f"Layer order by {estimator} CKA (highest first), per seed:", ""]
            for ep, per_seed in e["order"][estimator].items():
                if ep in ("0", str(e["epochs"][-1])):
                    continue
                lines.append(f"* epoch {ep}: " + "; ".join(f"seed {s}: {' > '.join(o)}" for s, o in per_seed.items()))
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--models", default="cnn,bcresnet")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--baseline", type=int, default=3, help="freshly initialised networks per run")
    p.add_argument("--n-per-class", type=int, default=70)
    p.add_argument("--kws", default=None, metavar="FOLDER",
                   help="a Speech Commands-layout corpus instead of the demo corpus (training split cut to "
                        "--n-per-class clips per word)")
    p.add_argument("--quick", action="store_true", help="a minutes-long smoke run (tiny corpus, 2 epochs)")
    args = p.parse_args(argv)
    if args.quick:
        args.n_per_class, args.epochs, args.baseline = 12, 2, 1
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    manifests = make_corpus(out, args.n_per_class, args.kws)
    probe = out / "corpus" / "probe.jsonl"  # validation + test clips: none is trained on
    if not probe.is_file():
        from audioconv.io.files import write_text

        write_text(probe, "".join(Path(manifests[k]).read_text() for k in ("val", "test")))
    results: dict = {}
    for model in args.models.split(","):
        for seed in seeds:
            run = train(out, manifests, model, seed, args.epochs)
            results.setdefault(model, {})[str(seed)] = measure(out, run, probe, args.baseline, seed)
    summary = summarise(results)
    from audioconv.io.files import write_json, write_text

    write_json(out / "results.json", {"settings": {**vars(args), "recipe": RECIPE}, "summary": summary})
    print(write_text(out / "results.md", markdown(summary)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
