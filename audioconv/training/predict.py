"""Classify audio files of any format, sample rate, channel count and length with a trained model.

A file is decoded whole (:func:`audioconv.io.audio.load`), mixed down to one channel (the mean of its
channels, as the trainer's loader does) and resampled to the model's rate. It is then cut into
windows of the training clip length (``window_s``, default the run's ``clip_s``), one every ``hop_s``
seconds (default half a window); when the windows do not reach the end of the file, one more window
is aligned with its end, so every sample is seen. A file shorter than one window is zero-padded at
the end to one window, as the trainer pads short clips.

Each window is classified on its own (softmax of the model's logits). The file's scores are the
**mean of the window probabilities over its non-silent windows**: a window is silent when it is all
zeros or its RMS is more than ``silence_db`` (default 60 dB) below the loudest window's, so the
zero padding of an ESC-50-style file does not vote; a file whose windows are all silent is averaged
over all of them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.utils import eval_mode, model_device, resolve_device

__all__ = ["FilePrediction", "AGGREGATION", "window_starts", "predict_waveform", "predict_file", "predict_files",
           "predict_dataset"]

AGGREGATION = "mean of the window probabilities over the non-silent windows (over every window when all are silent)"


@dataclass
class FilePrediction:
    """What a model says about one audio file.

    Attributes:
        path: the file.
        labels: class names in the model's output order.
        probs: ``(K,)`` the file's class probabilities (:data:`AGGREGATION`).
        window_probs: ``(W, K)`` each window's class probabilities (softmax).
        starts_s: ``(W,)`` each window's start in seconds.
        silent: ``(W,)`` bool, windows left out of the mean (module docstring).
        window_s, hop_s: window length and hop in seconds.
        duration_s: the file's length in seconds; ``sample_rate``: the file's own rate (Hz);
        ``channels``: its channel count.
    """

    path: str
    labels: list[str]
    probs: np.ndarray = field(repr=False)
    window_probs: np.ndarray = field(repr=False)
    starts_s: np.ndarray = field(repr=False)
    silent: np.ndarray = field(repr=False)
    window_s: float = 1.0
    hop_s: float = 0.5
    duration_s: float = 0.0
    sample_rate: int = 0
    channels: int = 1

    @property
    def ends_s(self) -> np.ndarray:
        """``(W,)`` each window's end in seconds within the file: ``start + window_s``, or the file's
        end for a file shorter than one window (the zero padding is not part of the file)."""
        return np.minimum(np.asarray(self.starts_s, dtype=np.float64) + self.window_s, self.duration_s)

    def top(self, k: int = 3, window: int | None = None) -> list[tuple[str, float]]:
        """The ``k`` most probable ``(label, probability)`` of the file (or of window ``window``), best first."""
        p = self.probs if window is None else self.window_probs[window]
        order = np.argsort(-p, kind="stable")[: max(1, int(k))]
        return [(self.labels[i], float(p[i])) for i in order]

    def to_dict(self, top_k: int = 3, windows: bool = True) -> dict:
        """JSON-ready: file facts, ``top`` (``[{label, probability}]``) and, with ``windows``, each window's."""
        def tops(pairs):
            return [{"label": lab, "probability": p} for lab, p in pairs]

        out = {"file": self.path, "duration_s": self.duration_s, "sample_rate": self.sample_rate,
               "channels": self.channels, "window_s": self.window_s, "hop_s": self.hop_s,
               "n_windows": int(len(self.starts_s)), "n_silent_windows": int(self.silent.sum()),
               "aggregation": AGGREGATION, "top": tops(self.top(top_k))}
        if windows:
            out["windows"] = [{"start_s": float(s), "end_s": float(e), "silent": bool(q), "top": tops(self.top(top_k, w))}
                              for w, (s, e, q) in enumerate(zip(self.starts_s, self.ends_s, self.silent))]
        return out


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """First samples of the windows over ``n_samples`` (module docstring): ``0, hop, 2·hop, …`` while a
    window fits, plus one window ending at the last sample when those stop short; ``[0]`` for a
    signal of one window or less."""
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be >= 1 sample, got window={window}, hop={hop}")
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def _check_times(window_s: float, hop_s: float, sample_rate: int) -> tuple[int, int]:
    for name, v in (("window_s", window_s), ("hop_s", hop_s)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0 seconds, got {v!r}")
    window, hop = int(round(window_s * sample_rate)), int(round(hop_s * sample_rate))
    if window < 1 or hop < 1:
        raise ValueError(f"window_s={window_s} / hop_s={hop_s} is less than one sample at {sample_rate} Hz")
    return window, hop


@torch.no_grad()
def predict_waveform(model: nn.Module, waveform: torch.Tensor, sample_rate: int, window_s: float,
                     hop_s: float | None = None, batch_size: int = 32, silence_db: float = 60.0):
    """Sliding-window class probabilities of one waveform.

    Args:
        model: a waveform classifier ``(B, 1, T) → logits (B, K)`` (a SpectrogramCNN), run in eval mode
            (restored afterwards) on its own device.
        waveform: ``(C, T)`` or ``(T,)`` float at ``sample_rate`` Hz (channels are averaged).
        sample_rate: Hz (the model's).
        window_s, hop_s: window and hop in seconds (hop default ``window_s / 2``).
        batch_size: windows per forward pass.
        silence_db: a window more than this many dB below the loudest one (by RMS) is silent.

    Returns:
        ``(starts (W,) samples, probs (W, K) float64, silent (W,) bool)``.
    """
    window, hop = _check_times(window_s, window_s / 2 if hop_s is None else hop_s, sample_rate)
    frontend = getattr(model, "frontend", None)
    if hasattr(frontend, "check_length"):
        frontend.check_length(window, f"a window of window_s={window_s:g} s")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mono = waveform.reshape(-1, waveform.shape[-1]).float().mean(dim=0)  # (T,)
    starts = window_starts(mono.shape[-1], window, hop)
    padded = torch.nn.functional.pad(mono, (0, max(0, window - mono.shape[-1])))
    windows = torch.stack([padded[s:s + window] for s in starts])  # (W, window)
    device = model_device(model)
    probs = []
    with eval_mode(model):
        for lo in range(0, len(starts), int(batch_size)):
            x = windows[lo:lo + int(batch_size)].unsqueeze(1).to(device)  # (b, 1, window)
            probs.append(torch.softmax(model(x).double(), dim=-1).cpu())
    rms = windows.double().pow(2).mean(dim=1).sqrt()  # (W,)
    silent = (rms == 0) | (rms < rms.max() * 10 ** (-silence_db / 20))
    return np.asarray(starts), torch.cat(probs).numpy(), silent.numpy()


def predict_file(model: nn.Module, labels, path: str | os.PathLike, window_s: float, hop_s: float | None = None,
                 batch_size: int = 32, silence_db: float = 60.0) -> FilePrediction:
    """Decode ``path`` (any format soundfile reads, any rate and channel count) and classify it
    (module docstring). ``model.config.sample_rate`` is the model's rate."""
    sr = int(model.config.sample_rate)
    with audio.open_audio(path) as f:
        file_rate, channels = f.sample_rate, f.channels
    wav, _ = audio.load(path, sample_rate=sr)
    hop_s = window_s / 2 if hop_s is None else hop_s
    starts, probs, silent = predict_waveform(model, wav, sr, window_s, hop_s, batch_size, silence_db)
    if len(labels) != probs.shape[1]:
        raise ValueError(f"{len(labels)} labels for a model with {probs.shape[1]} outputs")
    voters = ~silent if (~silent).any() else np.ones_like(silent)
    return FilePrediction(path=str(path), labels=list(labels), probs=probs[voters].mean(axis=0), window_probs=probs,
                          starts_s=starts / sr, silent=silent, window_s=float(window_s), hop_s=float(hop_s),
                          duration_s=wav.shape[-1] / sr, sample_rate=int(file_rate), channels=int(channels))


def predict_files(checkpoint: str | os.PathLike, paths, device: str = "auto", window_s: float | None = None,
                  hop_s: float | None = None, batch_size: int = 32, silence_db: float = 60.0,
                  progress: bool = True) -> list[FilePrediction]:
    """Classify audio files with the model of a checkpoint (module docstring).

    Args:
        checkpoint: ``RUN/best.pt``, ``last.pt`` or a snapshot.
        paths: audio files. Every file is opened first, so a missing or undecodable one is an error
            naming it before any work is done.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``.
        window_s: window length in seconds (default the run's training ``clip_s``).
        hop_s: hop in seconds (default ``window_s / 2``).
        batch_size: windows per forward pass.
        silence_db: see :func:`predict_waveform`.
        progress: tqdm bar over the files.

    Returns:
        One :class:`FilePrediction` per path, in order.
    """
    from audioconv.training.checkpoint import load_checkpoint, model_from_checkpoint, run_clip_s

    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no audio files given")
    for p in paths:
        audio.info(p)  # FileNotFoundError / ValueError naming the file
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    model, labels = model_from_checkpoint(ckpt, f"checkpoint {checkpoint}")
    model.to(dev).eval()
    window_s = run_clip_s(ckpt) if window_s is None else float(window_s)
    return [predict_file(model, labels, p, window_s, hop_s, batch_size, silence_db)
            for p in tqdm(paths, disable=not progress, desc="predict", unit="file")]


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset, batch_size: int = 64, progress: bool = True,
                    workers: int = 0) -> np.ndarray:
    """Class probabilities ``(N, K)`` (softmax, float64) of every item of a labelled waveform dataset,
    in order — each clip exactly as :func:`audioconv.training.evaluate.evaluate` scores it when the
    dataset is built the same way (a :class:`~audioconv.data.dataset.ManifestDataset` with
    ``crop="center"`` and the run's ``clip_s``). The model runs in eval mode on its own device."""
    from audioconv.data.dataset import collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=int(batch_size), shuffle=False,
                                         num_workers=int(workers), collate_fn=collate)
    device, out = model_device(model), []
    with eval_mode(model):
        for x, _, _ in tqdm(loader, disable=not progress, desc="classify", unit="batch"):
            out.append(torch.softmax(model(x.to(device)).double(), dim=-1).cpu())
    probs = torch.cat(out).numpy()
    if probs.shape[0] != len(dataset):
        raise ValueError(f"{len(dataset) - probs.shape[0]} of {len(dataset)} clips could not be read")
    return probs
