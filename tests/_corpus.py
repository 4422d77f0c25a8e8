"""A small corpus of the kind users bring, synthesized in the tests (numpy + soundfile only).

Mixed formats (44.1 kHz stereo WAV, 24-bit/48 kHz WAV, 8 kHz WAV, FLAC, OGG/Vorbis, MP3), clips
of different lengths, some of them long and mostly zero padding (as in ESC-50), laid out as
ESC-50 (``meta/esc50.csv`` + ``audio/``), UrbanSound8K (``metadata/UrbanSound8K.csv`` +
``audio/fold<k>/``) or a folder per class. Each class is a harmonic tone with its own pitch and
glide, so a small CNN can tell them apart after a few steps.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

CLASSES = ("low", "mid", "high")
F0_HZ = {"low": 220.0, "mid": 660.0, "high": 1760.0}
# (extension, libsndfile format, subtype, sample rate in Hz, channels)
FORMATS = (
    ("wav", "WAV", "PCM_16", 44100, 2),
    ("wav", "WAV", "PCM_24", 48000, 1),
    ("wav", "WAV", "PCM_16", 8000, 1),
    ("flac", "FLAC", "PCM_16", 22050, 1),
    ("ogg", "OGG", "VORBIS", 32000, 2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 1),
)


def tone(label: str, sample_rate: int, clip_s: float, rng: np.random.Generator, event_s: float | None = None,
         channels: int = 1) -> np.ndarray:
    """``(frames, channels)`` float32: the class's harmonic tone for ``event_s`` (default the whole
    clip) at a random start, zeros elsewhere, peak about 0.5."""
    n = int(round(clip_s * sample_rate))
    m = n if event_s is None else min(n, int(round(event_s * sample_rate)))
    start = 0 if m == n else int(rng.integers(0, n - m + 1))
    t = np.arange(m) / sample_rate
    f0 = F0_HZ[label] * (1 + 0.05 * rng.standard_normal()) * (1 + 0.2 * t / max(t[-1], 1e-9))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3) if k * f0.max() < sample_rate / 2)
    env = np.minimum(1.0, np.minimum(np.arange(m), np.arange(m)[::-1]) / (0.01 * sample_rate + 1))
    x = np.zeros(n)
    x[start:start + m] = 0.3 * wave * env + 0.003 * rng.standard_normal(m)
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_clip(path: Path, label: str, fmt: tuple, rng: np.random.Generator, clip_s: float = 1.0,
               event_s: float | None = None) -> Path:
    ext, major, subtype, sr, ch = fmt
    path = path.with_suffix("." + ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(label, sr, clip_s, rng, event_s, ch), sr, format=major, subtype=subtype)
    return path


def _clips(n_per_class: int, seed: int):
    """``(index, label, format, clip_s, event_s)`` for every clip: formats cycle, every third clip is
    5 s long with a 0.6-s event in zero padding."""
    rng = np.random.default_rng(seed)
    i = 0
    for label in CLASSES:
        for j in range(n_per_class):
            long = j % 3 == 2
            yield i, label, FORMATS[i % len(FORMATS)], (5.0 if long else 1.0), (0.6 if long else None), rng
            i += 1


def make_esc50(root: Path, n_per_class: int = 5, n_folds: int = 5, seed: int = 0) -> Path:
    """An ESC-50-layout corpus under ``root``; returns ``root``."""
    rows = []
    for i, label, fmt, clip_s, event_s, rng in _clips(n_per_class, seed):
        fold = i % n_folds + 1
        path = write_clip(root / "audio" / f"{fold}-{100 + i}-A-{CLASSES.index(label)}", label, fmt, rng, clip_s, event_s)
        rows.append([path.name, fold, CLASSES.index(label), label, "False", f"src{i}", "A"])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


def make_urbansound8k(root: Path, n_per_class: int = 5, n_folds: int = 3, seed: int = 1) -> Path:
    """An UrbanSound8K-layout corpus under ``root``; returns ``root``."""
    rows = []
    for i, label, fmt, clip_s, event_s, rng in _clips(n_per_class, seed):
        fold = i % n_folds + 1
        path = write_clip(root / "audio" / f"fold{fold}" / f"{1000 + i}-{CLASSES.index(label)}-0-0", label, fmt,
                          rng, clip_s, event_s)
        rows.append([path.name, 1000 + i, 0.0, clip_s, 1, fold, CLASSES.index(label), label])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(rows)
    return root


def make_folder(root: Path, n_per_class: int = 6, seed: int = 2) -> Path:
    """A folder-per-class corpus (``root/<label>/<speaker>_nohash_<k>.<ext>``); returns ``root``."""
    for i, label, fmt, clip_s, event_s, rng in _clips(n_per_class, seed):
        write_clip(root / label / f"spk{i % 4}_nohash_{i}", label, fmt, rng, clip_s, event_s)
    return root


def cut_short(path: Path, out: Path, keep: float = 0.75) -> Path:
    """A copy of ``path`` with only the first ``keep`` of its bytes, as an interrupted copy or
    download leaves it: a WAV's data chunk then declares more than is there, an MP3's Xing frame
    and a FLAC's STREAMINFO promise more frames than decode."""
    data = path.read_bytes()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data[: int(len(data) * keep)])
    return out
