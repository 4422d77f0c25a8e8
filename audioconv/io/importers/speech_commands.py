"""Google Speech Commands (v2 layout) → manifest records.

Layout::

    ROOT/<word>/<speaker>_nohash_<n>.wav      one folder per word
    ROOT/_background_noise_/*.wav             long noise recordings
    ROOT/validation_list.txt                  "<word>/<file>" per line → split "validation"
    ROOT/testing_list.txt                     "<word>/<file>" per line → split "test"
                                              every other clip → split "train"

``group`` is the speaker hash (the part before ``_nohash_``); the official lists already keep a
speaker in one split.

The 12-class variant (``twelve=True``) keeps ``yes no up down left right on off stop go``, labels
every other word ``_unknown_`` (all of them; the original word is kept under ``"word"``; balance
with ``ClassBalancedSampler`` if needed) and adds ``_silence_`` clips: ``clip_s``-long crops
(``offset``/``duration``) of the background recordings.

Background recordings are cut into disjoint split regions so that no split hears noise another
split heard: each file's timeline is divided in proportion to the number of word clips per split
(train first, then validation, then test). The background records (one per file and region, with
``offset``, ``duration``, ``split``) are returned separately for ``AddNoise(background=...)``: use
only the ``train`` ones for training. Silence crops of a split are evenly spaced inside that
split's regions, shared among files in proportion to region length (largest remainder).
"""
from __future__ import annotations

import os
from pathlib import Path

from ._common import ImportResult, audio_files_under, header_records, is_audio, require_dir, require_file, speaker_group

__all__ = ["import_speech_commands", "TWELVE_WORDS", "UNKNOWN", "SILENCE", "BACKGROUND_DIR"]

TWELVE_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = "_unknown_"
SILENCE = "_silence_"
BACKGROUND_DIR = "_background_noise_"
SPLITS = ("train", "validation", "test")


def _read_list(path: Path) -> dict[str, int]:
    """``{"word/file.wav": line_number}`` from a Speech Commands split list."""
    require_file(path, "split list")
    entries: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            rel = line.strip().replace("\\", "/")
            if not rel:
                continue
            if rel in entries:
                raise ValueError(f"{path}:{n}: {rel!r} already listed on line {entries[rel]}")
            entries[rel] = n
    return entries


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split the integer ``total`` in proportion to ``weights`` (sums exactly to ``total``)."""
    s = sum(weights)
    if total <= 0 or s <= 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    out = [int(e) for e in exact]
    for i in sorted(range(len(exact)), key=lambda i: (out[i] - exact[i], i))[: total - sum(out)]:
        out[i] += 1
    return out


def _background_regions(bg_files: list[Path], fractions: dict[str, float], skip_bad: bool, progress: bool):
    """One record per (background file, split) covering that split's share of the file."""
    records, skipped = header_records(
        ((p, {"label": BACKGROUND_DIR, "group": f"{BACKGROUND_DIR}/{p.stem}"}, None) for p in bg_files),
        skip_bad=skip_bad, progress=progress, desc="background", total=len(bg_files),
    )
    regions = []
    for rec in records:
        sr, n_frames = rec["sample_rate"], round(rec["duration"] * rec["sample_rate"])
        start = 0
        cumulative = 0.0
        for split in SPLITS:
            cumulative += fractions[split]
            stop = n_frames if split == SPLITS[-1] else round(cumulative * n_frames)
            if stop > start:
                regions.append({**rec, "offset": start / sr, "duration": (stop - start) / sr, "split": split})
            start = stop
    return regions, skipped


def _silence_crops(regions: list[dict], counts: dict[str, int], clip_s: float) -> list[dict]:
    crops = []
    for split in SPLITS:
        usable = [r for r in regions if r["split"] == split and r["duration"] >= clip_s]
        if counts[split] and not usable:
            raise ValueError(
                f"no background region of split {split!r} is at least {clip_s} s long for {SILENCE} clips "
                f"(add longer {BACKGROUND_DIR} recordings or pass silence_fraction=0)"
            )
        shares = _largest_remainder(counts[split], [r["duration"] for r in usable])
        for region, k in zip(usable, shares):
            sr = region["sample_rate"]
            span_s = region["duration"] - clip_s
            for j in range(k):
                start_s = region["offset"] + (span_s * j / (k - 1) if k > 1 else span_s / 2)
                crops.append({
                    "audio_filepath": region["audio_filepath"],
                    "label": SILENCE,
                    "duration": clip_s,
                    "offset": round(start_s * sr) / sr,
                    "split": split,
                    "group": region["group"],
                    "sample_rate": sr,
                })
    return crops


def _word_items(root: Path, words: list[str], val_list: dict, test_list: dict, twelve: bool) -> list[tuple[Path, dict, None]]:
    """``(path, fields, None)`` for every audio file in the word folders, with label, split and group."""
    items = []
    for word in words:
        for path in sorted(p for p in (root / word).iterdir() if p.is_file() and is_audio(p)):
            rel = f"{word}/{path.name}"
            split = "validation" if rel in val_list else "test" if rel in test_list else "train"
            fields = {"label": word if (not twelve or word in TWELVE_WORDS) else UNKNOWN}
            if fields["label"] != word:
                fields["word"] = word
            fields.update(split=split, group=speaker_group(path))
            items.append((path, fields, None))
    return items


def _listed_but_missing(root: Path, lists: dict[str, dict[str, int]], on_disk: set[str], skip_bad: bool) -> list[dict]:
    """Split-list entries naming files that are not in the corpus: raise (``list:line``), or with
    ``skip_bad`` return them as ``{"audio_filepath", "error"}``."""
    skipped = []
    for list_name, entries in lists.items():
        for rel, n in entries.items():
            if rel not in on_disk:
                msg = f"{root / list_name}:{n}: listed file {rel!r} is not in the corpus"
                if not skip_bad:
                    raise ValueError(msg)
                skipped.append({"audio_filepath": str(root / rel), "error": msg})
    return skipped


def import_speech_commands(
    root: str | os.PathLike,
    *,
    twelve: bool = False,
    silence_fraction: float = 0.1,
    clip_s: float = 1.0,
    skip_bad: bool = False,
    progress: bool = True,
) -> ImportResult:
    """Index a Speech Commands v2 folder.

    Args:
        root: the corpus folder (holding the word folders and the two split lists).
        twelve: 12-class variant (10 words + ``_unknown_`` + ``_silence_``).
        silence_fraction: with ``twelve``, ``_silence_`` clips per split as a fraction of that
            split's word clips (0.1 → 10 %).
        clip_s: length of each ``_silence_`` crop in seconds.
        skip_bad: leave out (and list in ``result.skipped``) unreadable files and list entries that
            name missing files, instead of raising.
        progress: tqdm bars while headers are read.

    Returns:
        :class:`ImportResult` with ``records`` (word clips, then silence crops) and ``background``.

    Raises:
        FileNotFoundError: missing root or split list.
        ValueError: no word folders, a list entry naming a missing file or listed twice
            (``list:line``), an unreadable audio file, silence requested without usable background.
    """
    root = require_dir(root, "Speech Commands folder")
    if silence_fraction < 0 or clip_s <= 0:
        raise ValueError(f"silence_fraction must be >= 0 and clip_s > 0, got {silence_fraction}, {clip_s}")
    words = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))
    if not words:
        raise ValueError(f"no word folders in {root} (expected ROOT/<word>/*.wav, the Speech Commands layout)")
    val_list = _read_list(root / "validation_list.txt")
    test_list = _read_list(root / "testing_list.txt")
    for rel, n in test_list.items():
        if rel in val_list:
            raise ValueError(f"{root / 'testing_list.txt'}:{n}: {rel!r} is also in validation_list.txt:{val_list[rel]}")

    items = _word_items(root, words, val_list, test_list, twelve)
    on_disk = {f"{path.parent.name}/{path.name}" for path, _, _ in items}
    skipped = _listed_but_missing(root, {"validation_list.txt": val_list, "testing_list.txt": test_list}, on_disk, skip_bad)
    records, bad = header_records(items, skip_bad=skip_bad, progress=progress, desc="speech-commands", total=len(items))
    skipped += bad
    counts = {s: sum(r["split"] == s for r in records) for s in SPLITS}
    n_words = max(sum(counts.values()), 1)
    fractions = {s: counts[s] / n_words for s in SPLITS}
    if not any(counts.values()):
        fractions["train"] = 1.0

    bg_dir = root / BACKGROUND_DIR
    bg_files = audio_files_under(bg_dir) if bg_dir.is_dir() else []
    background, bad = _background_regions(bg_files, fractions, skip_bad, progress)
    skipped += bad
    result = ImportResult(records=records, skipped=skipped, background=background)
    if twelve and silence_fraction > 0:
        if not background:
            raise ValueError(f"twelve=True needs {bg_dir} with noise recordings for {SILENCE} clips (or silence_fraction=0)")
        n_silence = {s: round(silence_fraction * counts[s]) for s in SPLITS}
        result.records += _silence_crops(background, n_silence, clip_s)
    for split in SPLITS:
        if not counts[split]:
            result.warnings.append(f"split {split!r} has no word clips")
    return result
