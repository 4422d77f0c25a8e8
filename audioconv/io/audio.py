"""Audio file I/O and waveform utilities (soundfile + torchaudio.functional).

Every waveform here is a float32 tensor shaped ``(channels, time)``; sample rates are in Hz and
times in seconds. ``torchaudio.load`` is not used: since torchaudio 2.9 it needs torchcodec.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

__all__ = ["AudioInfo", "info", "load", "save", "resample", "to_mono", "fix_length"]


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says: ``sample_rate`` in Hz, ``frames`` per channel, ``duration_s``."""

    sample_rate: int
    frames: int
    channels: int
    duration_s: float
    subtype: str


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise ValueError(f"audio path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"audio file is empty (0 bytes): {path}")


def info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file without decoding its samples.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty or not a format soundfile can decode.
    """
    path = Path(path)
    _check_exists(path)
    try:
        i = sf.info(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {e}") from None
    return AudioInfo(int(i.samplerate), int(i.frames), int(i.channels), float(i.duration), str(i.subtype))


def load(
    path: str | os.PathLike,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    sample_rate: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode (part of) an audio file to a float32 tensor.

    Only the frames from ``offset_s`` to ``offset_s + duration_s`` are read from disk.

    Args:
        path: WAV/FLAC/OGG/... file readable by soundfile.
        offset_s: start of the excerpt in seconds (>= 0).
        duration_s: length of the excerpt in seconds; ``None`` reads to the end.
        sample_rate: if given, resample to this rate (Hz) with ``torchaudio.functional.resample``.

    Returns:
        ``(waveform, sample_rate)`` with waveform shaped ``(channels, time)``, float32 in [-1, 1]
        for integer formats.

    Raises:
        FileNotFoundError: missing file.
        ValueError: empty/undecodable file, offset past the end, negative times, or
            non-finite samples (NaN/inf) in the file.
    """
    path = Path(path)
    if offset_s < 0:
        raise ValueError(f"offset_s must be >= 0, got {offset_s} for {path}")
    if duration_s is not None and duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s} for {path}")
    _check_exists(path)
    try:
        with sf.SoundFile(str(path)) as f:  # one open: header and samples
            sr, frames = int(f.samplerate), int(f.frames)
            start = int(round(offset_s * sr))
            if start > frames or (start == frames and frames > 0 and (duration_s or 0) > 0):
                raise ValueError(f"offset_s={offset_s} is past the end of {path} (duration {frames / sr:.3f} s)")
            stop = frames if duration_s is None else min(frames, start + int(round(duration_s * sr)))
            f.seek(start)
            data = f.read(stop - start, dtype="float32", always_2d=True)
    except ValueError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio file {path}: {e}") from None
    if not np.isfinite(data).all():
        raise ValueError(f"audio file {path} contains non-finite samples (NaN or inf)")
    wav = torch.from_numpy(np.ascontiguousarray(data.T))
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def save(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write a ``(channels, time)`` or ``(time,)`` waveform to an audio file (format from the suffix).

    Samples are clipped to [-1, 1] for integer subtypes. Parent folders are created.
    Returns the path written.
    """
    path = Path(path)
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (channels, time) or (time,), got shape {tuple(waveform.shape)}")
    data = waveform.detach().to("cpu", torch.float32).numpy().T
    if not np.isfinite(data).all():
        raise ValueError(f"refusing to write non-finite samples to {path}")
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, int(sample_rate), subtype=subtype)
    return path


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``(..., time)`` from ``orig_sr`` to ``new_sr`` Hz (band-limited sinc, torchaudio)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, new_sr={new_sr}")
    if orig_sr == new_sr:
        return waveform
    return AF.resample(waveform, int(orig_sr), int(new_sr))


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of ``(channels, time)`` into ``(1, time)``."""
    return waveform.mean(dim=-2, keepdim=True)


def fix_length(waveform: torch.Tensor, length: int, mode: str = "center", offset: int | None = None) -> torch.Tensor:
    """Crop or zero-pad the last axis of ``(..., time)`` to exactly ``length`` samples.

    Args:
        length: target number of samples (> 0).
        mode: where to crop / how to pad: ``"start"`` keeps the beginning (pads at the end),
            ``"center"`` crops/pads symmetrically, ``"random"`` needs ``offset``.
        offset: for cropping, the first kept sample; for padding, the number of zeros put in
            front. Overrides ``mode``.
    """
    if length <= 0:
        raise ValueError(f"length must be > 0 samples, got {length}")
    n = waveform.shape[-1]
    if offset is None:
        if mode == "start":
            offset = 0
        elif mode == "center":
            offset = abs(n - length) // 2
        else:
            raise ValueError(f"mode must be 'start' or 'center' (or pass offset), got {mode!r}")
    if n >= length:
        if not 0 <= offset <= n - length:
            raise ValueError(f"crop offset {offset} out of range 0..{n - length}")
        return waveform[..., offset : offset + length]
    if not 0 <= offset <= length - n:
        raise ValueError(f"pad offset {offset} out of range 0..{length - n}")
    return torch.nn.functional.pad(waveform, (offset, length - n - offset))
