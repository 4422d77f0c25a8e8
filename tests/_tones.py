"""A tiny synthetic corpus for trainer tests, written as WAVs with train/val/test manifests.

Each class is a tone of random pitch (400-2000 Hz) with its own time–frequency shape: ``steady``
(a horizontal line in the spectrogram), ``beeps`` (a dotted line: gated on/off at 10 Hz),
``chirp`` (a rising line: an octave up over the clip). Shapes rather than pitches, because the
SpectrogramCNN pools globally over frequency. A tiny CNN learns it to ~100 % in a few seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 8000
CLIP_S = 0.5
CLASSES = ("beeps", "chirp", "steady")


def tone(kind: str, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE, clip_s: float = CLIP_S) -> np.ndarray:
    """One clip of class ``kind`` with random pitch, level, phase and a little white noise, ``(T,)`` float32."""
    t = np.arange(int(round(clip_s * sample_rate))) / sample_rate
    f0 = rng.uniform(400.0, 2000.0)
    if kind == "chirp":  # instantaneous frequency f0 * 2 ** (t / clip_s)
        phase = 2 * np.pi * f0 * clip_s / np.log(2) * (2 ** (t / clip_s) - 1)
    else:
        phase = 2 * np.pi * f0 * t
    x = rng.uniform(0.1, 0.5) * np.sin(phase + rng.uniform(0, 2 * np.pi))
    if kind == "beeps":
        x *= (np.sin(2 * np.pi * 10.0 * t + rng.uniform(0, 2 * np.pi)) > 0)
    x += 0.003 * rng.standard_normal(t.shape)
    return x.astype(np.float32)


def write_manifest(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def make_corpus(root: Path, per_class: dict[str, int] | None = None, classes=CLASSES,
                seed: int = 0) -> dict[str, Path]:
    """Write ``root/wav/*.wav`` and manifests ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` and
    ``all.jsonl`` (with ``split`` keys). Returns ``{"train": path, "val": ..., "test": ..., "all": ...}``."""
    per_class = per_class or {"train": 24, "validation": 8, "test": 8}
    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    by_split: dict[str, list[dict]] = {s: [] for s in per_class}
    for label in classes:
        for split, n in per_class.items():
            for i in range(n):
                name = f"wav/{label}_{split}_{i:03d}.wav"
                sf.write(root / name, tone(label, rng), SAMPLE_RATE, subtype="FLOAT")
                by_split[split].append({"audio_filepath": name, "label": label, "duration": CLIP_S, "split": split})
    paths = {"all": write_manifest(root / "all.jsonl", [r for recs in by_split.values() for r in recs])}
    for split, name in (("train", "train"), ("validation", "val"), ("test", "test")):
        if split in by_split:
            paths[name] = write_manifest(root / f"{name}.jsonl", by_split[split])
    return paths
