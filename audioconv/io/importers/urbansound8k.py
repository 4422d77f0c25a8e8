"""UrbanSound8K → manifest records.

Layout: ``ROOT/metadata/UrbanSound8K.csv`` (columns ``slice_file_name, fsID, start, end,
salience, fold, classID, class``) and ``ROOT/audio/fold<fold>/<slice_file_name>``. Each row becomes
``label=class``, ``split="fold<fold>"``, ``group=fsID`` (as a string: the Freesound recording the
slice was cut from), plus ``fold`` (int), ``class_id`` (``classID``), ``salience`` (1 foreground,
2 background) and ``source_start_s``/``source_end_s`` (the slice's place in the Freesound
recording: *not* offsets into the slice file, which is read whole). Use the 10 official folds
for cross-validation; do not re-split (slices of one recording would leak across splits).
"""
from __future__ import annotations

import os

from ._common import ImportResult, header_records, require_dir
from ._csv import csv_rows, field

__all__ = ["import_urbansound8k"]

COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")


def import_urbansound8k(root: str | os.PathLike, *, skip_bad: bool = False, progress: bool = True) -> ImportResult:
    """Index an UrbanSound8K folder (see the module docstring for the layout and keys).

    Raises:
        FileNotFoundError: missing root, CSV, or (unless ``skip_bad``) audio file.
        ValueError: missing CSV column or bad value (``csv:line``), undecodable audio file.
    """
    root = require_dir(root, "UrbanSound8K folder")
    audio_dir = require_dir(root / "audio", "UrbanSound8K audio folder")
    items = []
    for where, row in csv_rows(root / "metadata" / "UrbanSound8K.csv", COLUMNS):
        fold = field(row, "fold", where, int)
        items.append((audio_dir / f"fold{fold}" / field(row, "slice_file_name", where), {
            "label": field(row, "class", where),
            "split": f"fold{fold}",
            "group": str(field(row, "fsID", where, int)),
            "fold": fold,
            "class_id": field(row, "classID", where, int),
            "salience": field(row, "salience", where, int),
            "source_start_s": field(row, "start", where, float),
            "source_end_s": field(row, "end", where, float),
        }, where))
    records, skipped = header_records(items, skip_bad=skip_bad, progress=progress, desc="urbansound8k", total=len(items))
    return ImportResult(records=records, skipped=skipped)
