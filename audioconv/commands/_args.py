"""Comma lists on the command line (``--layers conv1,conv4``, ``--amounts -3,0,3``): one way to read them."""
from __future__ import annotations

import math

__all__ = ["comma_list", "parse_list"]


def comma_list(text: str | None) -> list[str] | None:
    """``"conv1, conv4,"`` → ``["conv1", "conv4"]``: the items stripped, empty ones left out; ``None``
    stays ``None``."""
    if text is None:
        return None
    return [s.strip() for s in str(text).split(",") if s.strip()]


def parse_list(text: str | None, name: str, number: bool = False) -> list | None:
    """A comma list for option ``name`` (``None`` stays ``None``); numbers with ``number`` (``inf``
    allowed), else names. ValueError naming the option for an empty list, a word among numbers, or nan."""
    items = comma_list(text)
    if items is None:
        return None
    if not items:
        raise ValueError(f"{name} is empty")
    if not number:
        return items
    try:
        values = [float(s) for s in items]
    except ValueError:
        raise ValueError(f"{name} must be a comma list of numbers, got {text!r}") from None
    if any(math.isnan(v) for v in values):
        raise ValueError(f"{name} holds nan: give numbers")
    return values
