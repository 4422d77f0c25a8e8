"""Reading the package's text inputs (manifests, metadata CSVs) as UTF-8, line by line, with an
error that names ``file:line`` and the fix when a file is not UTF-8 (a Windows code page, or the
UTF-16 that PowerShell's ``>`` writes)."""
from __future__ import annotations

import codecs
import os
from pathlib import Path
from typing import Iterator

__all__ = ["NotUTF8Error", "decode_line", "raw_lines", "utf8_lines"]


class NotUTF8Error(ValueError):
    """A text input that is not UTF-8; ``where`` is ``"file:line"``."""

    def __init__(self, where: str, message: str):
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


def decode_line(raw: bytes, where: str, what: str = "file", first: bool = False) -> str:
    """``raw`` (one line, read in binary) as UTF-8 text (a byte-order mark dropped on the ``first``).

    Raises:
        NotUTF8Error: not UTF-8 (``where``, the byte and its column, and "save the ``what`` as
            UTF-8"); a first line that starts UTF-16 is named as such.
    """
    if first and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise NotUTF8Error(where, f"the {what} is UTF-16 text (as PowerShell's > writes); save it as UTF-8")
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as e:
        raise NotUTF8Error(where, f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); save the "
                                  f"{what} as UTF-8") from None


def raw_lines(f) -> Iterator[bytes]:
    """The lines of ``f`` (opened in binary mode) ending in ``\n``, ``\r\n`` or ``\r`` (as text mode
    reads them), endings kept."""
    for chunk in f:  # split at b"\n" only
        yield from chunk.splitlines(keepends=True) if b"\r" in chunk.rstrip(b"\r\n") else (chunk,)


def utf8_lines(f, path: str | os.PathLike, what: str = "file") -> Iterator[str]:
    """The lines of ``f`` (a file opened in binary mode, closed when the lines end) as text, line
    endings kept (:func:`raw_lines`, :func:`decode_line`; its error names ``path:line``)."""
    with f:
        for n, raw in enumerate(raw_lines(f), start=1):
            yield decode_line(raw, f"{Path(path)}:{n}", what, first=n == 1)
