"""The documents that make promises are checked: every row of docs/bad_input.md names a test that exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")


def _table_rows(path: Path) -> list[str]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("| input") and not set(line) <= set("|- "):
            rows.append(line)
    return rows


def _missing_tests(rows: list[str], root: Path) -> list[str]:
    missing = []
    for row in rows:
        refs = TEST_REF.findall(row)
        if not refs:
            missing.append(f"no test named in: {row[:80]}")
        for file, name in refs:
            source = root / file
            if not source.is_file() or not re.search(rf"^\s*def {name}\(", source.read_text(encoding="utf-8"), re.M):
                missing.append(f"{file}::{name} does not exist")
    return missing


def test_every_bad_input_row_names_an_existing_test():
    rows = _table_rows(ROOT / "docs" / "bad_input.md")
    assert not _missing_tests(rows, ROOT)


def test_the_row_check_can_fail(tmp_path):
    rows = ["| x | y | `tests/test_docs.py::test_every_bad_input_row_names_an_existing_test` |",
            "| x | y | `tests/test_docs.py::test_that_does_not_exist` |", "| x | y | no reference |"]
    assert _missing_tests(rows, ROOT) == ["tests/test_docs.py::test_that_does_not_exist does not exist",
                                          "no test named in: | x | y | no reference |"]
