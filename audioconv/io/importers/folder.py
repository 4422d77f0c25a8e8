"""A folder with one sub-folder per class → manifest records with a deterministic split.

Layout: ``ROOT/<class>/**/<file>.wav`` (any depth inside a class folder; hidden files/folders and
``_background_noise_`` are ignored; audio files directly in ROOT and class folders without audio
give no records and are reported in ``result.warnings``). ``group`` is the file name's
part before ``_nohash_`` when there is one (Speech Commands naming: the speaker), else the file stem.

Split rule (``exact=False``, default): ``u = hash_fraction(group, seed)`` (SHA-1, uniform in
[0, 1)); ``u < val`` → ``"validation"``, ``u < val + test`` → ``"test"``, else ``"train"`` — the
Speech Commands rule: a file keeps its split when others are added or removed, and the fractions
hold on average (a small corpus can miss them; an empty split is reported in ``result.warnings``).

``exact=True``: groups sorted by ``u``; the first ``round(val * n_groups)`` go to validation, the
next ``round(test * n_groups)`` to test. Fractions of groups are then exact, at the price of
stability (adding groups can move the groups next to a boundary).

Either way all clips of a group land in one split, and the split is a pure function of the set of
groups and ``seed``.
"""
from __future__ import annotations

import os

from ._common import (ImportResult, audio_files_under, hash_fraction, header_records, is_audio, require_dir,
                      speaker_group)

__all__ = ["import_folder", "split_for_group"]

IGNORED_FOLDERS = ("_background_noise_",)


def split_for_group(group: str, val: float, test: float, seed: int = 0) -> str:
    """``"validation"``, ``"test"`` or ``"train"`` for ``group`` by the hash rule above."""
    u = hash_fraction(group, seed)
    return "validation" if u < val else "test" if u < val + test else "train"


def _left_out(root, classes: list[str], found: set[str]) -> list[str]:
    """One warning line each for audio files lying directly in ``root`` (in no class folder) and for
    class folders without audio: neither gives a record, and the user should hear of it."""
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and is_audio(p))
    empty = [label for label in classes if label not in found]
    notes = []
    if loose:
        notes.append(f"{len(loose)} audio file(s) directly in {root} are in no class folder and were left out "
                     f"(e.g. {loose[0]}; put them in ROOT/<class>/)")
    if empty:
        notes.append(f"{len(empty)} class folder(s) of {root} hold no audio and give no class: "
                     f"{', '.join(empty[:5])}{', …' if len(empty) > 5 else ''}")
    return notes


def import_folder(
    root: str | os.PathLike,
    *,
    val: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    exact: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> ImportResult:
    """Index ``ROOT/<class>/...`` audio files, label = class folder name.

    Args:
        val, test: fractions of groups (0 <= val, test; val + test < 1) sent to validation / test.
        seed: changes which groups go where.
        exact: split by rank of the group hashes (exact group fractions) instead of by threshold.

    Raises:
        FileNotFoundError: missing root. ValueError: bad fractions, no class folder with audio,
        an undecodable audio file (unless ``skip_bad``).
    """
    root = require_dir(root, "corpus folder")
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"need 0 <= val, test and val + test < 1, got val={val}, test={test}")
    classes = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in IGNORED_FOLDERS
    )
    files = [(label, path) for label in classes for path in audio_files_under(root / label)]
    if not files:
        raise ValueError(f"no audio files in class sub-folders of {root} (expected ROOT/<class>/<file>.wav)")
    left_out = _left_out(root, classes, {label for label, _ in files})
    groups = sorted({speaker_group(path) for _, path in files})
    if exact:
        ranked = sorted(groups, key=lambda g: (hash_fraction(g, seed), g))
        n_val, n_test = round(val * len(groups)), round(test * len(groups))
        split_of = {g: "validation" if i < n_val else "test" if i < n_val + n_test else "train" for i, g in enumerate(ranked)}
    else:
        split_of = {g: split_for_group(g, val, test, seed) for g in groups}
    items = []
    for label, path in files:
        group = speaker_group(path)
        items.append((path, {"label": label, "split": split_of[group], "group": group}, None))
    records, skipped = header_records(items, skip_bad=skip_bad, progress=progress, desc="folder", total=len(items))
    result = ImportResult(records=records, skipped=skipped, warnings=left_out)
    wanted = {"train": 1 - val - test, "validation": val, "test": test}
    present = {r["split"] for r in records}
    result.warnings += [f"split {s!r} received no clips" for s, f in wanted.items() if f > 0 and s not in present]
    return result
