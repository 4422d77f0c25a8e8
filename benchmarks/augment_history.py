"""This version's augmentation chains against earlier revisions of ``audioconv/augment``, in one process.

Run through ``python benchmarks/augment_bench.py --against 43d5258 b76b12f --threads 1``. Each
revision's ``audioconv/augment`` package is taken from git (``git archive``) into a temporary folder
and imported under its own name (``aug_<rev>``; its relative imports stay inside it, its few
absolute ones — ``audioconv.io``, ``audioconv.utils`` — resolve to this checkout). Every version
replays the same draws on the same batch, in turns, round after round; the table gives each one's
median clips per CPU-second and, more robust on a busy machine, the median over rounds of its CPU
time divided by the first revision's in the same round.
"""
from __future__ import annotations

import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

import audioconv.augment as current
from augment_bench import make_batch

REPO = Path(__file__).resolve().parents[1]


def load_revision(rev: str, folder: Path):
    """Import ``audioconv/augment`` as it was at git revision ``rev``, as module ``aug_<rev>``."""
    data = subprocess.run(["git", "-C", str(REPO), "archive", rev, "audioconv/augment"], check=True,
                          capture_output=True).stdout
    name = f"aug_{rev.replace('-', '_').replace('.', '_')}"
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder / rev, filter="data")
    (folder / rev / "audioconv" / "augment").rename(folder / name)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def chains(module, sample_rate: int) -> dict:
    m = module
    return {"benchmark chain": m.Compose([
                m.PolarityInversion(p=0.5), m.RandomEQ(sample_rate, n_bands=5, shelves=True, gain_db=(-12, 12), p=0.8),
                m.Reverb(sample_rate, rt60_s=(0.2, 1.0), p=0.5), m.AddNoise(snr_db=(5.0, 40.0), p=0.8)]),
            "default chain": m.default_chain(sample_rate)}


def run_history(revisions: list[str], batch: int, seconds: float, sample_rate: int, rounds: int) -> int:
    x = make_batch(batch, int(seconds * sample_rate), sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        versions = {rev: load_revision(rev, Path(tmp)) for rev in revisions}
        versions["this"] = current
        print(f"batch {batch} x {seconds} s at {sample_rate} Hz, {torch.get_num_threads()} thread(s), {rounds} rounds")
        print("| chain | version | clips per CPU-s (median) | CPU time / " + revisions[0] + "'s, same round (median, quartiles) |")
        print("|---|---|---:|---:|")
        for label in ("benchmark chain", "default chain"):
            built = {name: chains(m, sample_rate)[label] for name, m in versions.items()}
            draws = [built["this"].sample(batch, torch.Generator().manual_seed(r)) for r in range(rounds)]
            for chain in built.values():
                chain.apply(x, draws[0])  # warm up
            cpu = {name: [] for name in built}
            for r in range(rounds):
                for name, chain in built.items():
                    start = time.process_time()
                    chain.apply(x, draws[r])
                    cpu[name].append(time.process_time() - start)
            first = cpu[revisions[0]]
            for name, times in cpu.items():
                ratio = [t / f for t, f in zip(times, first)]
                q = statistics.quantiles(ratio, n=4)
                print(f"| {label} | {name} | {batch / statistics.median(times):.0f} | "
                      f"{statistics.median(ratio):.3f} ({q[0]:.3f}-{q[2]:.3f}) |", flush=True)
    return 0
