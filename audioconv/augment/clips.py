"""A bank of short mono clips (impulse responses, background noises) from tensors, audio files,
a folder or a JSONL manifest; decoded once, laid end to end and cached per device."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import torch

from .dsp import DeviceCache

__all__ = ["ClipBank", "ClipSource"]

ClipSource = Union[str, os.PathLike, torch.Tensor, Sequence[Union[str, os.PathLike, torch.Tensor]]]


class FileClip(NamedTuple):
    """An audio file, or the excerpt ``offset_s`` .. ``offset_s + duration_s`` (seconds) of one."""

    path: Path
    offset_s: float = 0.0
    duration_s: float | None = None


def _manifest_clips(path: Path) -> list[FileClip]:
    """The clips of a JSONL manifest: ``audio_filepath`` (relative to the manifest's folder) and
    the optional ``offset`` / ``duration`` in seconds; ``label`` is not needed."""
    from audioconv.io.manifest import iter_manifest

    clips = [FileClip(Path(r["audio_filepath"]), float(r.get("offset") or 0.0),
                      None if r.get("duration") is None else float(r["duration"]))
             for r in iter_manifest(path, require_label=False, allow_duplicates=True)]
    if not clips:
        raise ValueError(f"{path}: manifest lists no audio files")
    return clips


def _expand(source: ClipSource, name: str) -> list[Union[FileClip, torch.Tensor]]:
    """Flatten a source into a list of tensors and file paths (folders and manifests expanded)."""
    if isinstance(source, torch.Tensor):
        if source.dim() == 1:
            return [source]
        if source.dim() == 2:
            return list(source)
        raise ValueError(f"{name} as a tensor must be (samples,) or (clips, samples), got {tuple(source.shape)}")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            from audioconv.io.audio import AUDIO_EXTENSIONS, audio_files_under  # deferred, as in ``_decode``

            files = audio_files_under(path)  # the importers' rule: hidden files and folders skipped
            if not files:
                raise ValueError(f"{name}: no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) in folder {path}")
            return [FileClip(p) for p in files]
        if not path.exists():
            raise FileNotFoundError(f"{name}: file not found: {path}")
        return _manifest_clips(path) if path.suffix.lower() == ".jsonl" else [FileClip(path)]
    if type(source).__module__ == "numpy":  # iterating an array would give numbers, named as the wrong thing
        raise ValueError(f"{name} must be a tensor, a path, or a list of them; got a numpy array "
                         f"(pass torch.from_numpy(array))")
    try:
        items = list(source)
    except TypeError:
        raise ValueError(f"{name} must be a tensor, a path, or a list of them; got {type(source).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty")
    out: list = []
    for item in items:
        out.extend(_expand(item, name))
    return out


class ClipBank:
    """Clips of one sample rate laid end to end: ``signal`` ``(N,)``, ``starts`` and ``lengths``.

    Files are decoded with ``audioconv.io.audio.load`` (resampled to ``sample_rate``, channels
    averaged) on first use, once; tensors are taken as already at ``sample_rate``.

    Args:
        source: tensor ``(samples,)`` / ``(clips, samples)``, a list of tensors or paths, a folder
            (searched recursively for ``audio.AUDIO_EXTENSIONS`` files, hidden files and folders
            skipped, as the importers do), or a ``.jsonl`` manifest whose lines have
            ``audio_filepath`` relative to the manifest's folder.
        sample_rate (int or None): Hz; needed when the source holds files.
        name (str): the argument's name, for error messages.
    """

    def __init__(self, source: ClipSource, sample_rate: int | None, name: str):
        self.name = name
        self.items = _expand(source, name)
        files = [i for i in self.items if isinstance(i, FileClip)]
        if sample_rate is None and files:
            raise ValueError(f"{name} lists audio files, so sample_rate must be given to resample them")
        for clip in files:
            if not clip.path.is_file():
                raise FileNotFoundError(f"{name}: file not found: {clip.path}")
        self.sample_rate = sample_rate
        self._cache = DeviceCache(self._concatenate)
        self._layout: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, item) -> torch.Tensor:
        if isinstance(item, torch.Tensor):
            clip = item.detach().to("cpu", torch.float32)
            where = f"{self.name} tensor"
        else:
            from audioconv.io.audio import load  # deferred: the augmentations do not need file I/O

            wav, _ = load(item.path, item.offset_s, item.duration_s, sample_rate=self.sample_rate)
            clip, where = wav.mean(0), str(item.path)
        if clip.numel() == 0:
            raise ValueError(f"{self.name}: {where} has no samples")
        if not torch.isfinite(clip).all():
            raise ValueError(f"{self.name}: {where} contains NaN or inf")
        if not clip.abs().max() > 0:
            raise ValueError(f"{self.name}: {where} is silent (all zeros)")
        return clip

    def _concatenate(self) -> torch.Tensor:
        clips = [self._decode(i) for i in self.items]
        lengths = torch.tensor([c.numel() for c in clips])
        self._layout = (torch.cumsum(lengths, 0) - lengths, lengths)
        return torch.cat(clips)

    def signal(self, device, dtype=None) -> torch.Tensor:
        """All clips end to end, ``(N,)``, on ``device`` (decoded on first call, then cached)."""
        return self._cache.get(device, dtype)

    def layout(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        """``(starts, lengths)`` int64 ``(clips,)`` on ``device``."""
        if self._layout is None:
            self.signal("cpu")
        return self._layout[0].to(device), self._layout[1].to(device)

    def padded(self, index: torch.Tensor, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips ``index`` ``(B,)`` zero-padded to the longest in the bank: ``(B, L)`` and lengths ``(B,)``."""
        signal = self.signal(index.device, dtype)
        starts, lengths = self.layout(index.device)
        width = int(lengths.max())
        t = torch.arange(width, device=index.device)
        inside = t < lengths[index][:, None]
        where = (starts[index][:, None] + t).clamp(max=signal.shape[0] - 1)
        return torch.where(inside, signal[where], signal.new_zeros(())), lengths[index]
