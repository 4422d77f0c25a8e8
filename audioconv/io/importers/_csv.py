"""Reading the metadata CSVs of ESC-50 and UrbanSound8K with errors that name ``file:line``."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterator

from ..text import utf8_lines
from ._common import require_file


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, dict]]:
    """Yield ``("file:line", row)`` for each data row; raise if a required column is missing."""
    require_file(path, "metadata CSV")
    with open(path, "rb") as f:
        reader = csv.DictReader(utf8_lines(f, path, "metadata CSV"))
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing} (header: {reader.fieldnames})")
        for row in reader:
            yield f"{path}:{reader.line_num}", row


def field(row: dict, key: str, where: str, convert: Callable = str):
    """``convert(row[key])`` or a ``ValueError`` naming the line, the column and the bad value."""
    raw = (row.get(key) or "").strip()
    try:
        if raw == "":
            raise ValueError("empty")
        return convert(raw)
    except ValueError:
        raise ValueError(f"{where}: bad value {raw!r} in column {key!r}") from None


def parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ValueError(raw)
