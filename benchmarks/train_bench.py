"""Training-step throughput with and without the default augmentation chain, and where the time goes.

For each device (CPU; CUDA when present) and augmentation (``none``, ``default``) it runs the
training step of ``audioconv train`` — DataLoader (decode) → augmentation on the device → log-mel
front end + SpecAugment → forward/backward/AdamW under autocast — and reports:

* ``clips/s`` of whole steps, timed without extra synchronisation;
* the share of step time spent waiting for data, augmenting, in the front end, and in the model
  (a second pass with ``torch.cuda.synchronize()`` between phases, so the phases add up).

Data: ``--manifest`` (any JSONL manifest), or a synthetic corpus of 1 s 16 kHz WAVs written to a
temporary folder (so the DataLoader really decodes files).

    python benchmarks/train_bench.py                       # CPU (+ CUDA if available)
    python benchmarks/train_bench.py --device cuda --steps 50 --json out.json
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audioconv.data.dataset import ManifestDataset, collate  # noqa: E402
from audioconv.training.specaugment import SpecAugment  # noqa: E402
from audioconv.training.loop import TrainConfig, build_augment, build_model, resolve_amp  # noqa: E402


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
          workers: int, phases: bool) -> dict:
    cfg = TrainConfig(train=str(manifest), augment=augment, batch_size=batch_size, device=str(device))
    ds = ManifestDataset(manifest, cfg.sample_rate, cfg.clip_s, crop="random", seed=0, return_length=True)
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=(steps + warmup) * batch_size,
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                         collate_fn=collate, pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=False)
    torch.manual_seed(0)
    model = build_model(cfg, len(ds.labels)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    chain = build_augment(cfg)
    specaug = SpecAugment(cfg.freq_mask_bins, cfg.time_mask_frames, cfg.n_freq_masks, cfg.n_time_masks)
    amp_dtype, _ = resolve_amp("auto", device)
    gen = torch.Generator(device=device)

    def sync():
        if phases and device.type == "cuda":
            torch.cuda.synchronize(device)

    t = {"data": 0.0, "augment": 0.0, "frontend": 0.0, "model": 0.0}
    it = iter(loader)
    n_timed = 0
    start = None
    for step in range(steps + warmup):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            t = dict.fromkeys(t, 0.0)
        t0 = time.perf_counter()
        x, y, lengths = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync()
        t1 = time.perf_counter()
        gen.manual_seed(step)
        with torch.no_grad():
            if chain is not None:
                x = chain(x, generator=gen, lengths=lengths.to(device))
            sync()
            t2 = time.perf_counter()
            spec = specaug(model.frontend(x), generator=gen)
        sync()
        t3 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model.classify(spec)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if phases and device.type == "cuda":
            torch.cuda.synchronize(device)
        elif not phases:
            loss.item()  # what the trainer does each step (NaN check)
        t4 = time.perf_counter()
        if step >= warmup:
            n_timed += 1
            for k, a, b in (("data", t0, t1), ("augment", t1, t2), ("frontend", t2, t3), ("model", t3, t4)):
                t[k] += b - a
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    row = {"device": str(device), "augment": augment, "steps": n_timed, "batch_size": batch_size, "workers": workers,
           "clips_per_s": n_timed * batch_size / total, "step_ms": 1000 * total / n_timed}
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
                    split = bench(manifest, device, augment, steps, args.warmup, args.batch_size, workers, phases=True)
                    timed = split if device.type == "cpu" else bench(  # CPU phases need no extra synchronisation
                        manifest, device, augment, steps, args.warmup, args.batch_size, workers, phases=False)
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
