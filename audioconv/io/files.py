"""Atomic file writes: a reader (or a crash, or a full disk) never sees a half-written file.

Every file the package writes goes through :func:`atomic_write`: the data goes to a temporary file
in the destination's folder, is flushed and fsynced, and then replaces the destination with
``os.replace`` (atomic on POSIX and Windows). On any error the temporary file is removed and the
destination is left as it was.

A write that fails for a reason of the file system (a folder that is a file, no permission, a
read-only or full disk) raises :class:`OutputError`: one line that names the path and the cause,
e.g. ``cannot write runs/a/last.pt: no space left on device (12 KiB free on /mnt/small); the
previous runs/a/last.pt is unchanged``.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

__all__ = ["OutputError", "atomic_write", "write_text", "write_json", "ensure_folder", "describe_os_error"]


class OutputError(OSError):
    """A file or folder could not be written. ``str(e)`` is one line naming the path and the cause;
    ``e.errno`` and ``e.filename`` are those of the underlying ``OSError``."""

    def __init__(self, path: str | os.PathLike, cause: str, code: int | None = None):
        super().__init__(code or errno.EIO, cause, str(path))
        self.path, self.cause = str(path), cause

    def __str__(self) -> str:
        return f"cannot write {self.path}: {self.cause}"


def _first_file_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` (``path`` included) that is not a folder."""
    for p in [path, *path.parents]:
        if p.exists():
            return None if p.is_dir() else p
    return None


def _existing(folder: Path) -> Path:
    """The nearest folder at or above ``folder`` that exists."""
    return next((p for p in [folder, *folder.parents] if p.is_dir()), folder)


def _free_bytes(folder: Path) -> int | None:
    with contextlib.suppress(OSError):
        return shutil.disk_usage(_existing(folder)).free
    return None


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="ascii") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def describe_os_error(error: OSError, path: str | os.PathLike) -> str:
    """The cause of ``error`` (raised while writing ``path``) in words: which folder is a file, is
    not writable, is full... (the text after ``cannot write PATH:``)."""
    path = Path(os.path.abspath(path))
    code = error.errno
    blocker = _first_file_ancestor(path.parent)
    if blocker is not None or code in (errno.ENOTDIR,) or (code == errno.EEXIST and not path.parent.is_dir()):
        where = blocker or path.parent
        return f"{where} is a file, not a folder"
    if code == errno.EISDIR or path.is_dir():
        return f"{path} is a folder"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        free = _free_bytes(path.parent)
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return what + (f" ({_size(free)} free on {_existing(path.parent)})" if free is not None else "")
    if code == errno.EROFS:
        return f"the file system of {_existing(path.parent)} is read-only"
    if code in (errno.EACCES, errno.EPERM):
        return f"permission denied (is the folder {path.parent} writable?)"
    return (error.strerror or str(error)).rstrip(".").lower() if error.strerror else str(error)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first ``OSError`` in ``exc``'s chain (itself, its cause or context): torch.save, for one,
    reports a full disk as a ``RuntimeError`` raised while handling the ``OSError``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _concerns(error: OSError, path: Path) -> bool:
    """Whether ``error`` is about writing ``path`` (no file name: a write to the open file; or the
    destination, its temporary file, its folder or a folder above), not about some other file the
    writer happened to read."""
    if error.filename is None:
        return True
    name = Path(os.path.abspath(os.fsdecode(error.filename)))
    target = Path(os.path.abspath(path))
    return (name == target or name in target.parents
            or (name.parent == target.parent and name.name.startswith(f".{target.name}.")))


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) and check that files can be written in it.

    Raises:
        OutputError: ``path`` or an ancestor is a file, or the folder is not writable (a probe file
            is created and removed, so read-only mounts and permissions are both caught).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".audioconv-write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        if path.exists() and not path.is_dir():
            raise OutputError(path, f"{path} is a file, not a folder", e.errno) from None
        raise OutputError(path, describe_os_error(e, path / "x"), e.errno) from None
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Context manager: a file object whose contents replace ``path`` when the block ends cleanly.

    Args:
        path: destination; its parent folders are created.
        mode: ``"w"`` (text) or ``"wb"`` (bytes).
        encoding: text encoding (ignored for ``"wb"``).

    Yields:
        The open temporary file.

    Raises:
        OutputError: the folder cannot be created or written, the disk is full, ``path`` is a
            folder... (also when the writer in the block fails with an ``OSError`` anywhere in its
            exception chain). The destination is left as it was. Other exceptions of the block
            pass unchanged.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        cause = _os_error_in(e)
        if cause is None or isinstance(e, OutputError) or not _concerns(cause, path):
            raise
        kept = f"; the previous {path} is unchanged" if path.is_file() else ""
        raise OutputError(path, describe_os_error(cause, path) + kept, cause.errno) from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept, a final newline) to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")
