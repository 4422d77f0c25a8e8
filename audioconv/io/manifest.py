"""JSON Lines manifests: read (lazily, line by line), validate, write, and check against the disk.

One clip per line, NeMo-compatible::

    {"audio_filepath": "yes/0a7c2a8d_nohash_0.wav", "label": "yes", "duration": 1.0,
     "offset": 0.0, "split": "train", "group": "0a7c2a8d", "sample_rate": 16000}

==================  ===========  ======================================================================
key                 type         meaning
==================  ===========  ======================================================================
``audio_filepath``  str          required; relative to the manifest's own folder, or absolute
``label``           str          required; class name
``duration``        float (s)    optional; clip length in seconds from ``offset`` (> 0); absent = to
                                 the end of the file
``offset``          float (s)    optional; clip start in seconds inside the file (>= 0, default 0)
``split``           str          optional; e.g. ``"train"``, ``"validation"``, ``"test"``, ``"fold3"``
``group``           str | int    optional; leakage key (speaker hash, source recording, fold id):
                                 clips sharing it must stay in one split
``sample_rate``     int (Hz)     optional; the file's rate as its header says (informational)
anything else       any JSON     kept and passed through unchanged
==================  ===========  ======================================================================

Reading resolves ``audio_filepath`` to an absolute path string (relative paths are taken from the
manifest's folder), so records can be passed around without the manifest. Writing does the
reverse: paths under the new manifest's folder are written relative to it (POSIX separators),
everything else stays absolute. Blank lines are ignored. Two lines naming the same file at the same
``offset`` are an error naming both lines (pass ``allow_duplicates=True`` to keep them).
Every problem raises :class:`ManifestError` (a ``ValueError``) whose message starts with
``file:line:``.
"""
from __future__ import annotations

import codecs
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.io.text import decode_line, raw_lines, utf8_lines
from audioconv.io.files import atomic_write

__all__ = [
    "Clip",
    "ManifestError",
    "KEY_ORDER",
    "validate_record",
    "iter_manifest",
    "read_manifest",
    "write_manifest",
    "write_split_manifests",
    "check_manifest",
    "CheckReport",
]

#: Keys written first, in this order; other keys follow in the record's own order.
KEY_ORDER = ("audio_filepath", "label", "duration", "offset", "split", "group", "sample_rate")


class ManifestError(ValueError):
    """A bad manifest line or record. ``where`` is ``"file:line"`` (or ``"record N"``)."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Clip:
    """One manifest line as a record with unit-named fields.

    The JSONL keys ``duration`` and ``offset`` become ``duration_s`` and ``offset_s``; keys other
    than the five below are kept, in order, in ``extra`` (``group``, ``sample_rate``, ...).
    :meth:`from_dict` and :meth:`to_dict` mirror each other: ``Clip.from_dict(d).to_dict() == d``
    for a valid record ``d`` (absent keys stay absent).

    Attributes:
        audio_filepath: the audio file (absolute after :func:`read_manifest`).
        label: class name, or ``None`` in manifests of unlabelled audio.
        duration_s: clip length in seconds from ``offset_s``; ``None`` runs to the end of the file.
        offset_s: clip start in seconds inside the file; ``None`` = the start (0 s).
        split: ``"train"``, ``"validation"``, ``"fold3"``, ... or ``None``.
        extra: every other key of the record, unchanged.
    """

    audio_filepath: str
    label: str | None = None
    duration_s: float | None = None
    offset_s: float | None = None
    split: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: dict, where: str = "record", require_label: bool = False) -> "Clip":
        """The clip of a manifest record (validated with :func:`validate_record`, errors name ``where``)."""
        rec = validate_record(record, where, require_label)
        return cls(rec.pop("audio_filepath"), rec.pop("label", None), rec.pop("duration", None),
                   rec.pop("offset", None), rec.pop("split", None), rec)

    def to_dict(self) -> dict:
        """The manifest record: JSONL keys (``duration``, ``offset`` in seconds), ``None`` fields left out."""
        out = {"audio_filepath": self.audio_filepath, "label": self.label, "duration": self.duration_s,
               "offset": self.offset_s, "split": self.split}
        out = {k: v for k, v in out.items() if v is not None}
        out.update(self.extra)
        return out

    def frames(self, sample_rate: int, n_frames: int) -> tuple[int, int]:
        """``(first frame, frame count)`` of this clip in its file of ``n_frames`` frames at
        ``sample_rate`` Hz (:func:`audioconv.io.audio.clip_frames`: raises when the clip is empty
        or starts past the end)."""
        return audio.clip_frames(self.offset_s, self.duration_s, sample_rate, n_frames, self.audio_filepath)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_record(record: Any, where: str = "record", require_label: bool = True) -> dict:
    """Check one manifest record's keys and types; return a shallow copy.

    Args:
        record: the parsed JSON object of one line.
        where: how to name the record in errors, e.g. ``"train.jsonl:17"``.
        require_label: ``False`` for manifests of unlabelled audio (background noises, RIRs).

    Raises:
        ManifestError: not an object, missing ``audio_filepath``/``label``, wrong types, non-finite
            or out-of-range ``duration`` (must be > 0 s), ``offset`` (>= 0 s) or ``sample_rate``
            (positive integer Hz).
    """
    if not isinstance(record, dict):
        raise ManifestError(where, f"expected a JSON object, got {type(record).__name__}")
    for key in ("audio_filepath", "label") if require_label else ("audio_filepath",):
        if key not in record:
            raise ManifestError(where, f"missing required key {key!r} (keys: {sorted(record)})")
    path = record["audio_filepath"]
    if not isinstance(path, str) or not path.strip():
        raise ManifestError(where, f"'audio_filepath' must be a non-empty string, got {path!r}")
    label = record.get("label")
    if (require_label or label is not None) and (not isinstance(label, str) or not label):
        raise ManifestError(where, f"'label' must be a non-empty string, got {label!r}")
    for key, lower, inclusive in (("duration", 0.0, False), ("offset", 0.0, True)):
        v = record.get(key)
        if v is None:
            continue
        if not _is_number(v) or not math.isfinite(v):
            raise ManifestError(where, f"{key!r} must be a finite number of seconds, got {v!r}")
        if v < lower or (v == lower and not inclusive):
            rel = ">=" if inclusive else ">"
            what = " (zero-length clip)" if key == "duration" and v == 0 else ""
            raise ManifestError(where, f"{key!r} must be {rel} {lower} s, got {v}{what}")
    sr = record.get("sample_rate")
    if sr is not None and (not isinstance(sr, int) or isinstance(sr, bool) or sr <= 0):
        raise ManifestError(where, f"'sample_rate' must be a positive integer (Hz), got {sr!r}")
    split = record.get("split")
    if split is not None and (not isinstance(split, str) or not split):
        raise ManifestError(where, f"'split' must be a non-empty string, got {split!r}")
    group = record.get("group")
    if group is not None and not (isinstance(group, str) or (isinstance(group, int) and not isinstance(group, bool))):
        raise ManifestError(where, f"'group' must be a string or integer, got {group!r}")
    return dict(record)


def _resolve(path: str, base_dir: Path) -> str:
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base_dir, path))


def _duplicate_key(record: dict) -> tuple[str, float]:
    return (record["audio_filepath"], float(record.get("offset") or 0.0))


def _parse_line(text: str, where: str, base_dir: Path | None, require_label: bool = True) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(where, f"bad JSON ({e.msg} at column {e.colno})") from None
    rec = validate_record(obj, where, require_label)
    if base_dir is not None:
        rec["audio_filepath"] = _resolve(rec["audio_filepath"], base_dir)
    return rec


def _open_manifest(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.is_dir():
        raise ValueError(f"manifest path is a folder, not a file: {path}")
    if audio.is_audio(path):
        raise ValueError(f"{path} is an audio file, not a manifest (a JSON-lines file, one clip a line: "
                         f"`audioconv manifest` writes one)")
    return open(path, "rb")  # read as UTF-8 line by line (text.utf8_lines), a byte-order mark tolerated


def iter_manifest(
    path: str | os.PathLike,
    *,
    resolve: bool = True,
    allow_duplicates: bool = False,
    line_numbers: bool = False,
    require_label: bool = True,
) -> Iterator[dict] | Iterator[tuple[int, dict]]:
    """Yield the records of a JSONL manifest one line at a time (nothing is read ahead).

    Args:
        path: the ``.jsonl`` file.
        resolve: make ``audio_filepath`` absolute (relative paths are from the manifest's folder).
        allow_duplicates: keep two lines with the same file and ``offset`` (default: error).
        line_numbers: yield ``(line_number, record)`` (1-based) instead of records.
        require_label: ``False`` accepts lines without ``label`` (noise or impulse-response banks).

    Raises:
        FileNotFoundError: the manifest does not exist.
        ManifestError: bad JSON, missing key, wrong type or duplicate, naming ``file:line``.
    """
    path = Path(path)
    f = _open_manifest(path)  # opened now, so a missing manifest fails at the call, not at next()
    return _iter_lines(f, path, resolve, allow_duplicates, line_numbers, require_label)


def _iter_lines(f, path: Path, resolve: bool, allow_duplicates: bool, line_numbers: bool, require_label: bool = True):
    folder = Path(os.path.abspath(path)).parent
    seen: dict[tuple[str, float], int] = {}
    with f:
        for n, text in enumerate(utf8_lines(f, path, "manifest"), start=1):
            if not text.strip():
                continue
            where = f"{path}:{n}"
            rec = _parse_line(text, where, folder if resolve else None, require_label)
            if not allow_duplicates:
                key = (_resolve(rec["audio_filepath"], folder), float(rec.get("offset") or 0.0))
                if key in seen:
                    raise ManifestError(
                        where, f"duplicate of line {seen[key]}: same audio_filepath {rec['audio_filepath']!r} and offset {key[1]} s"
                    )
                seen[key] = n
            yield (n, rec) if line_numbers else rec


def read_manifest(path: str | os.PathLike, *, resolve: bool = True, allow_duplicates: bool = False) -> list[dict]:
    """Read a whole JSONL manifest into a list of record dicts (see :func:`iter_manifest`).

    An empty manifest gives ``[]``; consumers that need data (``ManifestDataset``) reject it.
    """
    return list(iter_manifest(path, resolve=resolve, allow_duplicates=allow_duplicates))


def _ordered(record: dict) -> dict:
    out = {k: record[k] for k in KEY_ORDER if k in record and record[k] is not None}
    out.update((k, v) for k, v in record.items() if k not in out and k not in KEY_ORDER)
    return out


def _relative_path(path: str, folders: tuple[Path, ...]) -> str:
    if not os.path.isabs(path):
        return Path(path).as_posix()
    for folder in folders:  # as written, and with symlinks resolved
        try:
            return Path(os.path.normpath(path)).relative_to(folder).as_posix()
        except ValueError:
            continue
    return path


def write_manifest(
    path: str | os.PathLike,
    records: Iterable[dict],
    *,
    relative: bool = True,
    allow_duplicates: bool = False,
) -> Path:
    """Write records as JSON Lines (atomically with :func:`audioconv.io.files.atomic_write`;
    parent folders created).

    Args:
        path: output ``.jsonl``.
        records: dicts with at least ``audio_filepath`` and ``label`` (validated, duplicates refused
            unless ``allow_duplicates``).
        relative: write absolute paths that lie under the manifest's folder relative to it.
            Relative paths in ``records`` are written unchanged (they are taken to be relative to
            the manifest's folder already).

    Returns:
        The path written.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    folders = (folder, folder.resolve())
    seen: dict[tuple[str, float], int] = {}
    with atomic_write(path, "w") as f:
        for i, record in enumerate(records):
            rec = validate_record(record, f"record {i} (for {path})")
            if relative:
                rec["audio_filepath"] = _relative_path(rec["audio_filepath"], folders)
            if not allow_duplicates:
                key = _duplicate_key({**rec, "audio_filepath": _resolve(rec["audio_filepath"], folder)})
                if key in seen:
                    raise ManifestError(f"record {i} (for {path})", f"duplicate of record {seen[key]}: {key}")
                seen[key] = i
            f.write(json.dumps(_ordered(rec), ensure_ascii=False, allow_nan=False) + "\n")
    return path


def write_split_manifests(path: str | os.PathLike, records: list[dict], *, relative: bool = True) -> dict[str, Path]:
    """Write one manifest per ``split`` value next to ``path``: ``OUT.jsonl`` -> ``OUT_train.jsonl``, ...

    Records without a ``split`` are not written. Returns ``{split: path}`` in order of appearance.
    """
    path = Path(path)
    by_split: dict[str, list[dict]] = {}
    for r in records:
        if r.get("split") is not None:
            by_split.setdefault(r["split"], []).append(r)
    out = {}
    for split, recs in by_split.items():
        out[split] = write_manifest(path.with_name(f"{path.stem}_{split}{path.suffix or '.jsonl'}"), recs, relative=relative)
    return out


@dataclass
class CheckReport:
    """What :func:`check_manifest` found. Durations in seconds, rates in Hz.

    ``bad`` and ``warnings`` hold ``{"line", "audio_filepath", "error"}`` dicts. ``records`` are the
    good records (absolute paths) with ``duration`` (clip length actually available) and
    ``sample_rate`` filled in from the file headers.
    """

    manifest: str
    n_lines: int = 0
    n_ok: int = 0
    bad: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    labels: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    sample_rates: Counter = field(default_factory=Counter)
    channels: Counter = field(default_factory=Counter)
    subtypes: Counter = field(default_factory=Counter)
    total_duration_s: float = 0.0
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        """True when there is at least one clip and nothing is bad."""
        return self.n_ok > 0 and not self.bad

    def to_dict(self) -> dict:
        """JSON-ready summary (without ``records``)."""
        return {
            "manifest": self.manifest,
            "ok": self.ok,
            "n_lines": self.n_lines,
            "n_ok": self.n_ok,
            "n_bad": len(self.bad),
            "bad": self.bad,
            "warnings": self.warnings,
            "labels": dict(sorted(self.labels.items())),
            "splits": dict(sorted(self.splits.items())),
            "sample_rates_hz": {str(k): v for k, v in sorted(self.sample_rates.items())},
            "channels": {str(k): v for k, v in sorted(self.channels.items())},
            "subtypes": dict(sorted(self.subtypes.items())),
            "total_duration_s": round(self.total_duration_s, 6),
            "min_duration_s": self.min_duration_s,
            "max_duration_s": self.max_duration_s,
        }


def _check_clip(rec: dict, decode: bool) -> tuple[dict, str | None, audio.AudioInfo]:
    """Return (record with measured duration/sample_rate, warning or None, header); raise if bad.

    Decodes as the dataset does (:meth:`audioconv.io.audio.AudioReader.read_clip`): a compressed
    file that decodes to fewer frames than its header says is measured by what decodes (a warning)."""
    clip = Clip.from_dict(rec)
    with audio.open_audio(clip.audio_filepath) as f:  # one open: header and samples
        meta = f.info
        if decode:
            f.read_clip(clip.offset_s, clip.duration_s)  # the loader's own read: decode errors, NaN/inf
        first, count = clip.frames(meta.sample_rate, f.frames)  # raises: no samples, past the end
        n_frames = f.frames
    offset_s = clip.offset_s or 0.0
    available_s = n_frames / meta.sample_rate - offset_s
    want_s = clip.duration_s
    warnings = []
    if n_frames < meta.frames:
        warnings.append(f"the header says {meta.frames} frames ({meta.duration_s:.6f} s) but {n_frames} decode "
                        f"({n_frames / meta.sample_rate:.6f} s); the decoded length is used")
    elif want_s is not None and round(want_s * meta.sample_rate) > count + 1:
        warnings.append(f"duration {want_s} s runs past the end of the file (only {available_s:.6f} s from offset {offset_s} s)")
    said_sr = clip.extra.get("sample_rate")
    if said_sr is not None and said_sr != meta.sample_rate:
        warnings.append(f"manifest says sample_rate {said_sr} Hz but the file is {meta.sample_rate} Hz")
    out = dict(rec)
    out["duration"] = round(available_s if want_s is None else min(float(want_s), available_s), 6)
    out["sample_rate"] = meta.sample_rate
    return out, "; ".join(warnings) or None, meta


def check_manifest(path: str | os.PathLike, *, decode: bool = True, progress: bool = True) -> CheckReport:
    """Check every line of a manifest: valid JSON and keys, file exists, header readable, clip inside
    the file, samples decode and are finite (when ``decode``).

    Unlike :func:`read_manifest`, problems do not stop the scan: each bad line is recorded in
    ``report.bad`` with its line number and reason. Duplicate lines are bad (the second names the
    first). ``report.ok`` is False for an empty manifest. Clips are decoded as the dataset decodes
    them: a truncated WAV file is bad (both sizes named); a compressed file that decodes to fewer
    frames than its header says is good, measured by what decodes, with a warning.

    Args:
        path: the ``.jsonl`` manifest.
        decode: also decode each clip's samples (slower); otherwise read headers only.
        progress: show a tqdm bar.

    Raises:
        FileNotFoundError: the manifest itself does not exist.
    """
    path = Path(path)
    base_dir = Path(os.path.abspath(path)).parent
    report = CheckReport(manifest=str(path))
    with _open_manifest(path) as f:
        n_total = sum(1 for _ in raw_lines(f))
    seen: dict[tuple[str, float], int] = {}
    durations: list[float] = []
    with _open_manifest(path) as f:
        for n, raw in enumerate(tqdm(raw_lines(f), total=n_total, disable=not progress, desc="check", unit="line"),
                                start=1):
            if not raw.removeprefix(codecs.BOM_UTF8).strip():
                continue
            report.n_lines += 1
            where = f"{path}:{n}"
            audio_path = None
            try:  # a line that is not UTF-8 is a bad line of its own: the lines after it are checked
                rec = _parse_line(decode_line(raw, where, "manifest", first=n == 1), where, base_dir)
                audio_path = rec["audio_filepath"]
                key = _duplicate_key(rec)
                if key in seen:
                    raise ManifestError(where, f"duplicate of line {seen[key]} (same file and offset)")
                seen[key] = n
                checked, warning, meta = _check_clip(rec, decode)
            except (ValueError, FileNotFoundError) as e:
                report.bad.append({"line": n, "audio_filepath": audio_path, "error": str(e)})
                continue
            if warning:
                report.warnings.append({"line": n, "audio_filepath": audio_path, "error": warning})
            report.n_ok += 1
            report.records.append(checked)
            report.labels[checked["label"]] += 1
            report.splits[checked.get("split") or "(none)"] += 1
            report.sample_rates[meta.sample_rate] += 1
            report.channels[meta.channels] += 1
            report.subtypes[meta.subtype] += 1
            durations.append(checked["duration"])
    if durations:
        report.total_duration_s = float(sum(durations))
        report.min_duration_s = min(durations)
        report.max_duration_s = max(durations)
    return report
