"""ESC-50 → manifest records.

Layout: ``ROOT/meta/esc50.csv`` (columns ``filename, fold, target, category, esc10, src_file,
take``) and ``ROOT/audio/<filename>``. Each row becomes ``label=category``,
``split="fold<fold>"``, ``group=src_file`` (the source Freesound clip), plus ``fold`` (int),
``class_id`` (``target``), ``esc10`` (bool) and ``take``. ESC-50's folds are meant for 5-fold
cross-validation: train on four ``fold*`` splits and validate on the fifth.
"""
from __future__ import annotations

import os

from ._common import ImportResult, header_records, require_dir
from ._csv import csv_rows, field, parse_bool

__all__ = ["import_esc50"]

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def import_esc50(root: str | os.PathLike, *, skip_bad: bool = False, progress: bool = True) -> ImportResult:
    """Index an ESC-50 folder (see the module docstring for the layout and keys).

    Raises:
        FileNotFoundError: missing root, CSV, or (unless ``skip_bad``) audio file.
        ValueError: missing CSV column or bad value (``csv:line``), undecodable audio file.
    """
    root = require_dir(root, "ESC-50 folder")
    audio_dir = require_dir(root / "audio", "ESC-50 audio folder")
    items = []
    for where, row in csv_rows(root / "meta" / "esc50.csv", COLUMNS):
        fold = field(row, "fold", where, int)
        items.append((audio_dir / field(row, "filename", where), {
            "label": field(row, "category", where),
            "split": f"fold{fold}",
            "group": field(row, "src_file", where),
            "fold": fold,
            "class_id": field(row, "target", where, int),
            "esc10": field(row, "esc10", where, parse_bool),
            "take": field(row, "take", where),
        }, where))
    records, skipped = header_records(items, skip_bad=skip_bad, progress=progress, desc="esc50", total=len(items))
    return ImportResult(records=records, skipped=skipped)
