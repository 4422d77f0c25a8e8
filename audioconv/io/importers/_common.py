"""Shared pieces of the corpus importers: the result type, header reading, deterministic splits."""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.io.audio import AUDIO_EXTENSIONS, audio_files_under, is_audio  # noqa: F401 (the importers' names)


@dataclass
class ImportResult:
    """Records built by an importer (absolute ``audio_filepath``; write them with ``write_manifest``).

    ``skipped``: ``{"audio_filepath", "error"}`` for files left out with ``skip_bad=True``.
    ``background``: long noise recordings (Speech Commands ``_background_noise_``), one record per
    file and split region, for ``AddNoise(background=...)``; empty for other layouts.
    ``warnings``: things worth telling the user (e.g. a split that received no clips).
    """

    records: list[dict]
    skipped: list[dict] = field(default_factory=list)
    background: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts per split and per label, and the number skipped (JSON-ready)."""
        return {
            "n": len(self.records),
            "splits": dict(sorted(Counter(r.get("split") or "(none)" for r in self.records).items())),
            "labels": dict(sorted(Counter(r["label"] for r in self.records).items())),
            "n_background": len(self.background),
            "n_skipped": len(self.skipped),
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an absolute Path, or raise ``FileNotFoundError``/``ValueError`` naming ``what``.

    Absolute, so that every path an importer builds from it is absolute: a manifest written
    anywhere (``write_manifest`` relativizes what lies under its own folder) points at the files,
    whatever the working directory was when the corpus was named by a relative path."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_dir():
        raise ValueError(f"{what} must be a folder: {path}")
    return Path(os.path.abspath(path))


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (is this the right corpus layout?)")
    return path


def speaker_group(path: Path) -> str:
    """Leakage key from a file name: the part before ``_nohash_`` (Speech Commands), else the stem."""
    stem = path.stem
    return stem.split("_nohash_", 1)[0] if "_nohash_" in stem else stem


def hash_fraction(key: str, seed: int = 0) -> float:
    """Deterministic pseudo-uniform number in [0, 1) from ``key`` and ``seed`` (SHA-1 based)."""
    digest = hashlib.sha1(f"{seed}\0{key}".encode("utf-8", "surrogateescape")).digest()  # any file name
    return int.from_bytes(digest[:8], "big") / 2.0**64


def header_records(
    items: Iterable[tuple[Path, dict, str | None]],
    *,
    skip_bad: bool,
    progress: bool,
    desc: str,
    total: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """Turn ``(path, fields, where)`` items into records with ``duration`` (s) and ``sample_rate``
    (Hz) read from the audio headers. A file that is missing, empty or undecodable raises, naming it
    and ``where`` (e.g. the metadata ``csv:line``, may be None), unless ``skip_bad`` (then it is
    listed in the second return value)."""
    records, skipped = [], []
    for path, fields, where in tqdm(items, total=total, disable=not progress, desc=desc, unit="file"):
        full = os.path.abspath(path)
        shown = os.fsencode(full).decode("utf-8", "backslashreplace")  # a name that is not UTF-8: \xe9
        try:
            if shown != full:  # a manifest is UTF-8 JSON: it cannot hold this name
                raise ValueError(f"the file name is not UTF-8 text: {shown}; rename it (e.g. convmv -f latin1 -t "
                                 f"utf8 --notest FILE)")
            meta = audio.info(path)
            audio.clip_frames(0.0, None, meta.sample_rate, meta.frames, path)  # raises for a file without samples
        except (ValueError, FileNotFoundError) as e:
            error = type(e)(f"{where}: {e}") if where else e
            if not skip_bad:
                raise error from None
            skipped.append({"audio_filepath": shown, "error": str(error)})
            continue
        rec = {"audio_filepath": full, **fields}
        rec["duration"] = round(meta.frames / meta.sample_rate, 6)
        rec["sample_rate"] = meta.sample_rate
        records.append(rec)
    return records, skipped
