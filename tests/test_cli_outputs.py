"""Outputs that cannot be written: a full disk, a file where a folder should be, a read-only folder,
a closed pipe. Each is one line naming the path and the cause (exit 2; a closed pipe ends quietly),
never a traceback, and results already computed are printed before optional files are written.

Tests run as root here, so read-only folders are simulated at the OS call (``tempfile.mkstemp``
raising ``EROFS``/``EACCES``) and a full disk at the write (``ENOSPC``); a real ``chmod`` test runs
when not root."""
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import audioconv.io.files as files
from _tones import CLIP_S, SAMPLE_RATE, make_corpus
from audioconv.cli import main
from audioconv.io.files import OutputError, ensure_folder, write_text
from audioconv.training.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
         "--epochs", "1", "--batch-size", "8", "--augment", "none", "--workers", "0", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("tones"))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--train", str(corpus["train"]), "--val", str(corpus["val"]), "--out", str(out), *TRAIN]) == 0
    return out


def one_error_line(err: str, command: str) -> str:
    lines = [s for s in err.splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"audioconv {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _fail_mkstemp_in(monkeypatch, folder: Path, code: int):
    """``tempfile.mkstemp`` in ``folder`` fails as on a read-only (EROFS) or forbidden (EACCES) folder."""
    real = files.tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == folder.resolve():
            raise OSError(code, os.strerror(code), str(Path(dir) / kwargs.get("prefix", "tmp")))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(files.tempfile, "mkstemp", mkstemp)


class _FullDisk:
    """A file object whose writes fail with ENOSPC after ``budget`` bytes (what a full disk does)."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, data):
        n = len(data)
        if n > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= n
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


def _fill_disk_after(monkeypatch, budget: int):
    real = files.os.fdopen
    monkeypatch.setattr(files.os, "fdopen", lambda *a, **k: _FullDisk(real(*a, **k), budget))


# ------------------------------------------------------------------------------ the writer itself
def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path, monkeypatch):
    path = tmp_path / "notes.txt"
    write_text(path, "old")
    _fill_disk_after(monkeypatch, 2)
    with pytest.raises(OutputError, match=rf"^cannot write {path}: no space left on device \(.* free on {tmp_path}\); "
                                          rf"the previous {path} is unchanged$"):
        write_text(path, "new contents")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_checkpoint_on_a_full_disk_names_the_file_not_the_zip_writer(tmp_path, monkeypatch):
    """torch.save reports a full disk as "[enforce fail at inline_container.cc:...]"; the OSError it
    hides is found and named."""
    path = tmp_path / "last.pt"
    ckpt = {"model": {"w": torch.arange(3.0)}, "model_config": {}, "labels": ["a", "b"]}
    save_checkpoint(path, ckpt)
    _fill_disk_after(monkeypatch, 1000)
    with pytest.raises(OutputError, match=rf"cannot write {path}: no space left on device .*; the previous {path} is "
                                          rf"unchanged") as caught:
        save_checkpoint(path, {**ckpt, "model": {"w": torch.zeros(100_000)}})
    assert "inline_container" not in str(caught.value) and caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.arange(3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_file_in_the_way_a_folder_and_a_read_only_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    with pytest.raises(OutputError, match=rf"^cannot write {blocker}/sub/a.json: {blocker} is a file, not a folder$"):
        write_text(blocker / "sub" / "a.json", "{}")
    with pytest.raises(OutputError, match=rf"^cannot write {blocker}: {blocker} is a file, not a folder$"):
        ensure_folder(blocker)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path}/dir.png: {tmp_path}/dir.png is a folder$"):
        write_text(tmp_path / "dir.png", "x")
    locked = tmp_path / "locked"
    locked.mkdir()
    _fail_mkstemp_in(monkeypatch, locked, errno.EROFS)
    with pytest.raises(OutputError, match=rf"^cannot write {locked}/a.txt: the file system of {locked} is read-only$"):
        write_text(locked / "a.txt", "x")
    with pytest.raises(OutputError, match=rf"^cannot write {locked}: the file system of {locked} is read-only$"):
        ensure_folder(locked)


def test_an_unrelated_os_error_of_the_writer_passes_unchanged(tmp_path):
    """An error about another file (the writer failed to read something) is not blamed on the output."""
    with pytest.raises(FileNotFoundError, match="no-such-input"):
        with files.atomic_write(tmp_path / "out.txt") as f:
            f.write(open(tmp_path / "no-such-input").read())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_really_read_only_folder(tmp_path, corpus):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputError, match=rf"cannot write {locked}: permission denied"):
            ensure_folder(locked)
    finally:
        locked.chmod(0o700)


def test_written_files_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; a written file gets 0666 less the umask, like open() would give."""
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------------------ the command line
def test_train_into_a_file_or_a_read_only_folder_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    assert main(["train", "--train", str(corpus["train"]), "--out", str(blocker), *TRAIN]) == 2
    assert one_error_line(capsys.readouterr().err, "train").endswith(f"cannot write {blocker}: {blocker} is a file, "
                                                                     f"not a folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    _fail_mkstemp_in(monkeypatch, locked, errno.EACCES)
    assert main(["train", "--train", str(corpus["train"]), "--out", str(locked), *TRAIN]) == 2
    assert one_error_line(capsys.readouterr().err, "train").endswith(
        f"cannot write {locked}: permission denied (is the folder {locked} writable?)")


def test_augment_and_report_into_a_file_say_it_is_a_file_not_a_folder(run, corpus, tmp_path, capsys):
    """The same words as train (one check, io.files.ensure_folder), not the OS's "file exists"."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    clip = json.loads(corpus["train"].read_text().splitlines()[0])["audio_filepath"]
    clip = clip if Path(clip).is_absolute() else str(corpus["train"].parent / clip)
    assert main(["augment", clip, "-o", str(blocker), "--n", "1", "--device", "cpu"]) == 2
    assert one_error_line(capsys.readouterr().err, "augment").endswith(f"cannot write {blocker}: {blocker} is a "
                                                                       f"file, not a folder")
    assert main(["report", str(run), "-o", str(blocker), "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err, "report").endswith(f"cannot write {blocker}: {blocker} is a "
                                                                      f"file, not a folder")
    assert blocker.read_text() == "x"


def test_a_full_disk_during_training_is_one_line(corpus, tmp_path, monkeypatch, capsys):
    real_fsync = files.os.fsync

    def fsync(fd):  # the disk fills up when the first checkpoint is written
        if ".best.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell the files apart")
    monkeypatch.setattr(files.os, "fsync", fsync)
    out = tmp_path / "run"
    assert main(["train", "--train", str(corpus["train"]), "--out", str(out), *TRAIN]) == 2
    line = one_error_line(capsys.readouterr().err, "train")
    assert f"cannot write {out}/best.pt: no space left on device" in line
    assert not list(out.glob(".*.tmp"))


def test_evaluate_prints_its_result_before_the_picture_that_cannot_be_written(run, corpus, tmp_path, capsys):
    """The default PNG goes next to the checkpoint; here a folder has its name (as unwritable as a
    read-only run folder): the JSON result is printed in full, then one error line, exit 2."""
    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes((run / "best.pt").read_bytes())
    (tmp_path / "best_confusion_test.png").mkdir()
    args = ["evaluate", "--checkpoint", str(ckpt), "--manifest", str(corpus["test"]), "--no-progress", "--device", "cpu"]
    assert main(args + ["--json"]) == 2
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["n"] == 24 and 0 <= result["accuracy"] <= 1 and result["png"] == str(tmp_path / "best_confusion_test.png")
    assert one_error_line(captured.err, "evaluate").endswith(f"{tmp_path}/best_confusion_test.png is a folder")
    # the table too, and --no-png draws nothing
    assert main(args) == 2 and "macro-F1" in capsys.readouterr().out
    assert main(args + ["--json", "--no-png"]) == 0 and json.loads(capsys.readouterr().out)["png"] is None


def test_any_os_error_of_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    """The words docs/bad_input.md gives: an output folder that is a file, and an OSError without
    words of its own (here a file that cannot be read: the path and the system's reason)."""
    import numpy as np
    import soundfile as sf

    from audioconv.io import audio

    sf.write(tmp_path / "in.wav", np.zeros(1600, np.float32), 16000)
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main(["augment", str(tmp_path / "in.wav"), "-o", str(taken), "--n", "1", "--device", "cpu"]) == 2
    assert one_error_line(capsys.readouterr().err, "augment") == \
        f"audioconv augment: error: cannot write {taken}: {taken} is a file, not a folder"

    def unreadable(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    monkeypatch.setattr(audio, "load", unreadable)
    assert main(["augment", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out"), "--n", "1", "--device", "cpu"]) == 2
    assert one_error_line(capsys.readouterr().err, "augment") == \
        f"audioconv augment: error: {tmp_path / 'in.wav'}: permission denied"


def test_a_closed_pipe_ends_quietly(corpus):
    """`audioconv manifest check M | head -0`: the reader is gone before the first write; Python's
    documented handling: no traceback, no "Exception ignored", status 1."""
    proc = subprocess.Popen([sys.executable, "-m", "audioconv", "manifest", "check", str(corpus["all"]), "-q"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the interpreter has even imported audioconv
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1, err
    assert "Traceback" not in err and "BrokenPipe" not in err and "Exception ignored" not in err, err
