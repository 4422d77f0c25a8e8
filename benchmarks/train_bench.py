"""Training-step throughput with and without the default augmentation chain, and where the time goes.

For each device (CPU; CUDA when present) and augmentation (``none``, ``default``) it times the
training step that ``audioconv train`` runs — :func:`audioconv.training.loop.train_step` on a state
from :func:`audioconv.training.loop.setup` (DataLoader decode → augmentation on the device → log-mel
front end + SpecAugment → forward/backward/AdamW under autocast, with the trainer's defaults:
label smoothing, gradient clipping, the NaN check) — and reports:

* ``clips/s`` of whole steps, timed without extra synchronisation;
* the share of step time spent waiting for data, augmenting, in the front end, and in the model
  (a second pass on CUDA, with ``torch.cuda.synchronize()`` at the ends of ``train_step``'s
  phases, so the phases add up; on CPU one pass gives both).

Data: ``--manifest`` (any JSONL manifest), or a synthetic corpus of 1 s 16 kHz WAVs written to a
temporary folder (so the DataLoader really decodes files).

    python benchmarks/train_bench.py                       # CPU (+ CUDA if available)
    python benchmarks/train_bench.py --device cuda --steps 50 --json out.json
    python benchmarks/train_bench.py --device cpu --steps 10 --repeats 1 --batch-size 32   # a quick look
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audioconv.data.dataset import collate  # noqa: E402
from audioconv.training.config import TrainConfig  # noqa: E402
from audioconv.training.loop import setup, train_step  # noqa: E402


def synthetic_manifest(folder: Path, n_clips: int, sample_rate: int = 16000) -> Path:
    """``n_clips`` 1-s WAVs (a tone burst in noise, 4 classes) and their manifest."""
    rng = np.random.default_rng(0)
    t = np.arange(sample_rate) / sample_rate
    lines = []
    for i in range(n_clips):
        label = f"c{i % 4}"
        x = 0.01 * rng.standard_normal(sample_rate)
        x[4000:12000] += 0.3 * np.sin(2 * np.pi * (300 + 400 * (i % 4)) * t[4000:12000])
        sf.write(folder / f"{i:05d}.wav", x.astype(np.float32), sample_rate, subtype="PCM_16")
        lines.append(json.dumps({"audio_filepath": f"{i:05d}.wav", "label": label, "duration": 1.0}))
    path = folder / "bench.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench(manifest: Path, device: torch.device, augment: str, steps: int, warmup: int, batch_size: int,
          workers: int, phases: bool, run_dir: Path) -> dict:
    """One timed run of ``steps`` training steps (after ``warmup``); ``run_dir`` gets setup's config.json."""
    cfg = TrainConfig(train=str(manifest), augment=augment, batch_size=batch_size, device=str(device),
                      workers=workers, out=str(run_dir), epochs=1000)
    state = setup(cfg, progress=False)
    sampler = torch.utils.data.RandomSampler(state.data.train_ds, replacement=True,
                                             num_samples=(steps + warmup) * batch_size,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(state.data.train_ds, batch_size=batch_size, sampler=sampler,
                                         num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
                                         drop_last=True, persistent_workers=False)
    names = {"transfer": "data", "augment": "augment", "features": "frontend", "model": "model"}
    t = dict.fromkeys(names.values(), 0.0)
    marks: dict[str, float] = {}

    def mark(phase: str) -> None:  # called by train_step at the end of each of its phases
        if phases and device.type == "cuda":
            torch.cuda.synchronize(device)
        marks[names[phase]] = time.perf_counter()

    it = iter(loader)
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            t = dict.fromkeys(t, 0.0)
        t0 = time.perf_counter()
        x, y, lengths = next(it)
        train_step(state, x, y, lengths, on_phase=mark)
        previous = t0
        for k in t:  # data = fetching the batch + moving it to the device
            t[k] += marks[k] - previous
            previous = marks[k]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    row = {"device": str(device), "augment": augment, "steps": steps, "batch_size": batch_size, "workers": workers,
           "clips_per_s": steps * batch_size / total, "step_ms": 1000 * total / steps}
    if phases:
        busy = sum(t.values())
        row.update({f"{k}_share": v / busy for k, v in t.items()})
        row["data_plus_augment_share"] = (t["data"] + t["augment"]) / busy
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", type=Path, help="manifest to read (default: synthetic 1-s WAVs)")
    p.add_argument("--device", default="auto", help="comma list of cpu,cuda; auto = cpu (+ cuda if available)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 30 CPU / 100 CUDA)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2, help="runs per setting, alternating; the fastest is kept")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the trainer's auto)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "auto" \
        else args.device.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest or synthetic_manifest(Path(tmp), 512)
        for name in devices:
            device = torch.device(name)
            cores = len(os.sched_getaffinity(0))
            torch.set_num_threads(cores)
            workers = args.workers if args.workers is not None else (
                max(1, min(8, cores - 1)) if device.type == "cuda" else (1 if cores >= 2 else 0))
            steps = args.steps or (100 if device.type == "cuda" else 30)
            best: dict[str, dict] = {}
            for _ in range(args.repeats):  # alternate the settings; keep each one's fastest run
                for augment in ("none", "default"):
                    run_dir = Path(tmp) / "run"
                    split = bench(manifest, device, augment, steps, args.warmup, args.batch_size, workers,
                                  phases=True, run_dir=run_dir)
                    timed = split if device.type == "cpu" else bench(  # CPU phases need no extra synchronisation
                        manifest, device, augment, steps, args.warmup, args.batch_size, workers, phases=False,
                        run_dir=run_dir)
                    row = {**timed, **{k: v for k, v in split.items() if k.endswith("_share")}}
                    if augment not in best or row["clips_per_s"] > best[augment]["clips_per_s"]:
                        best[augment] = row
            for row in best.values():
                rows.append(row)
                print(f"{row['device']:>6}  augment={row['augment']:<8} {row['clips_per_s']:8.1f} clips/s  "
                      f"{row['step_ms']:8.1f} ms/step   data {row['data_share']:5.1%}  augment {row['augment_share']:5.1%}"
                      f"  front end {row['frontend_share']:5.1%}  model {row['model_share']:5.1%}", flush=True)
    for name in devices:
        base = [r for r in rows if r["device"] == name and r["augment"] == "none"]
        aug = [r for r in rows if r["device"] == name and r["augment"] == "default"]
        if base and aug:
            extra = base[0]["clips_per_s"] / aug[0]["clips_per_s"] - 1
            print(f"{name}: the default augmentation adds {extra:+.1%} to step time; data + augmentation take "
                  f"{aug[0]['data_plus_augment_share']:.1%} of an augmented step")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
