#!/usr/bin/env python3
"""Which noises does a keyword model fail in? Accuracy per noise type and SNR, for study runs.

The engines protocol of ``robustness_study.py`` scores one ``noise`` condition: one of six noise
types per clip at an SNR drawn in 0-10 dB. This script takes the same clean clips of the other
speech engines and makes one test set per type (white, pink, babble, street, cafe, fan: the
study's own generators) at 0, 5 and 10 dB, then scores each given checkpoint on every set::

    python benchmarks/noise_breakdown.py --out /tmp/r10 RUN_DIR/best.pt [RUN_DIR2/last.pt ...]

``--out`` is the study's folder (its ``data/engines_clean.jsonl`` is read; the sets are written
under ``data/noise_types/`` once and reused). Prints a markdown table: one row per checkpoint,
accuracy in % per type and SNR. SNR is the power ratio over the whole 1 s clip, as in the study.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
import robustness_study as study  # noqa: E402

SNRS_DB = (0, 5, 10)


def write_sets(out: Path, seed: int) -> dict[tuple[str, int], Path]:
    """The test sets ``{(type, snr_db): manifest}`` under ``out/data/noise_types`` (made once)."""
    clean = [json.loads(line) for line in (out / "data" / "engines_clean.jsonl").read_text().splitlines()]
    folder = out / "data" / "noise_types"
    manifests = {(k, s): folder / f"{k}_{s}db.jsonl" for k in study.NOISE_TYPES for s in SNRS_DB}
    if all(m.exists() for m in manifests.values()):
        return manifests
    rng = np.random.default_rng(seed)
    streams = study.speech_babble_streams(rng)
    for (kind, snr_db), manifest in manifests.items():
        records = []
        for i, rec in enumerate(clean):
            x, sr = sf.read(rec["audio_filepath"], dtype="float64")
            y = study.mix_at_snr(x, study.noise_of_kind(kind, len(x), rng, streams), snr_db)
            y = y * min(1.0, 0.999 / max(np.abs(y).max(), 1e-12))  # scale the mix down, SNR kept
            path = folder / f"{kind}_{snr_db}db" / f"{i:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, y.astype(np.float32), sr, subtype="PCM_16")
            records.append({**rec, "audio_filepath": str(path)})
        manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return manifests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path, help="checkpoints to score (RUN/best.pt ...)")
    ap.add_argument("--out", type=Path, required=True, help="the robustness study's --out folder")
    ap.add_argument("--seed", type=int, default=7, help="seed of the noise draws (default 7)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args(argv)
    if not (args.out / "data" / "engines_clean.jsonl").is_file():
        ap.error(f"--out {args.out}: no data/engines_clean.jsonl; make it with robustness_study.py --protocol engines "
                 f"--out {args.out} --prepare-only")
    missing = [str(c) for c in args.checkpoints if not c.is_file()]
    if missing:
        ap.error(f"no such checkpoint: {', '.join(missing)}")
    import torch

    from audioconv.training.evaluate import evaluate

    torch.set_num_threads(args.threads)
    manifests = write_sets(args.out, args.seed)
    columns = list(manifests)
    print("| checkpoint | " + " | ".join(f"{k} {s}" for k, s in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for ckpt in args.checkpoints:
        accuracy = [100 * evaluate(ckpt, manifests[c], device="cpu", batch_size=128, progress=False)["accuracy"]
                    for c in columns]
        print(f"| {ckpt.parent.name}/{ckpt.name} | " + " | ".join(f"{a:.0f}" for a in accuracy) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
