"""``audioconv.io.audio``: the only soundfile user, its open-file reads, the one clip-range check
(the same message from ``load``, the dataset and the manifest check) and atomic ``save``.
References: soundfile's own ``sf.read``/``sf.info`` and hand-computed frame numbers."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audioconv
from audioconv.data import ManifestDataset
from audioconv.io import audio
from audioconv.io.manifest import check_manifest

SR = 16000


def _ramp(path: Path, n: int, sr: int = SR, channels: int = 1) -> Path:
    """A FLOAT WAV whose sample i (every channel c) is ``(i + 1000 c) / 2**20``: exact, and tells frames apart."""
    data = (np.arange(n)[:, None] + 1000 * np.arange(channels)[None]) / 2.0**20
    sf.write(path, data.astype(np.float32), sr, subtype="FLOAT")
    return path


# ----------------------------------------------------------------------------- the one soundfile user
def test_soundfile_is_imported_only_by_io_audio():
    root = Path(audioconv.__file__).parent
    users = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "soundfile" for n in names):
                users.append(path.relative_to(root).as_posix())
    assert users == ["io/audio.py"]


# ----------------------------------------------------------------------------- clip_frames
@pytest.mark.parametrize(
    "offset_s, duration_s, n_frames, expected",
    [(None, None, 16000, (0, 16000)), (0.25, None, 16000, (4000, 12000)), (0.25, 0.5, 16000, (4000, 8000)),
     (0.75, 0.5, 16000, (12000, 4000)),  # runs past the end: cut there
     (0.0, 1e-4, 16000, (0, 2)), (0.99990, None, 16000, (15998, 2))],
)
def test_clip_frames_first_and_count(offset_s, duration_s, n_frames, expected):
    assert audio.clip_frames(offset_s, duration_s, SR, n_frames, "x.wav") == expected


@pytest.mark.parametrize(
    "offset_s, duration_s, n_frames, message",
    [(0.0, None, 0, r"zero-length clip: x\.wav has no samples"),
     (1.0, None, 16000, r"offset 1\.0 s is past the end of x\.wav \(1\.000 s long\)"),
     (2.0, 0.5, 16000, "past the end"),
     (0.99998, None, 16000, "past the end"),  # rounds to frame 16000
     (0.0, 1e-5, 16000, "zero-length clip: duration 1e-05 s is less than one frame at 16000 Hz"),
     (-0.1, None, 16000, "offset_s must be >= 0"), (0.0, -1.0, 16000, "duration_s must be >= 0")],
)
def test_clip_frames_refuses_clips_outside_the_file(offset_s, duration_s, n_frames, message):
    with pytest.raises(ValueError, match=message):
        audio.clip_frames(offset_s, duration_s, SR, n_frames, "x.wav")


def test_load_dataset_and_check_give_the_same_clip_range_error(tmp_path):
    path = _ramp(tmp_path / "r.wav", 8000)  # 0.5 s
    with pytest.raises(ValueError) as from_load:
        audio.load(path, offset_s=0.75)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "r.wav", "label": "a", "offset": 0.75}) + "\n")
    with pytest.raises(ValueError) as from_dataset:
        ManifestDataset(tmp_path / "m.jsonl", SR, 0.1)[0]
    from_check = check_manifest(tmp_path / "m.jsonl", progress=False).bad[0]["error"]
    message = f"offset 0.75 s is past the end of {path} (0.500 s long)"
    assert str(from_load.value) == message
    assert str(from_dataset.value).endswith(message) and from_check == message


def test_load_reads_the_clip_frames_only(tmp_path):
    path = _ramp(tmp_path / "r.wav", 8000, channels=2)
    wav, sr = audio.load(path, offset_s=0.125, duration_s=0.0625)
    reference, _ = sf.read(path, start=2000, stop=3000, dtype="float32", always_2d=True)
    assert sr == SR and wav.shape == (2, 1000) and wav.dtype == torch.float32
    np.testing.assert_array_equal(wav.numpy(), reference.T)
    whole, _ = audio.load(path, offset_s=0.25, duration_s=10.0)  # cut at the end of the file
    assert whole.shape == (2, 4000)
    with pytest.raises(ValueError, match="past the end"):  # an empty excerpt at the very end is refused
        audio.load(path, offset_s=0.5)


# ----------------------------------------------------------------------------- open_audio
def test_open_audio_header_and_frame_reads_agree_with_soundfile(tmp_path):
    path = tmp_path / "s.flac"
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (4410, 2)).astype(np.float32)
    sf.write(path, data, 44100, subtype="PCM_24")
    reference, _ = sf.read(path, dtype="float32", always_2d=True)
    with audio.open_audio(path) as f:
        assert (f.sample_rate, f.frames, f.channels) == (44100, 4410, 2)
        assert f.info == audio.info(path)
        assert f.info.subtype == sf.info(str(path)).subtype and f.info.duration_s == pytest.approx(0.1)
        np.testing.assert_array_equal(f.read(100, 50).numpy(), reference[100:150].T)
        np.testing.assert_array_equal(f.read(0, 10).numpy(), reference[:10].T)  # seeks back


def test_open_audio_errors_name_the_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio " * 20)
    (tmp_path / "folder.wav").mkdir()
    cases = [("missing.wav", FileNotFoundError, "audio file not found"), ("empty.wav", ValueError, r"empty \(0 bytes\)"),
             ("text.wav", ValueError, "cannot decode audio file"), ("folder.wav", ValueError, "is a folder")]
    for name, exc, message in cases:
        for opener in (audio.open_audio, audio.info, audio.load):
            with pytest.raises(exc, match=rf"{message}.*{name}"):
                opener(tmp_path / name)


def test_read_refuses_short_reads_and_non_finite_samples(tmp_path):
    path = _ramp(tmp_path / "r.wav", 100)
    with audio.open_audio(path) as f, pytest.raises(ValueError, match=r"read 20 frames instead of 40 from .*r\.wav"):
        f.read(80, 40)  # the header promised frames the file does not hold
    nan = np.zeros((50, 1), np.float32)
    nan[7] = np.inf
    sf.write(tmp_path / "inf.wav", nan, SR, subtype="FLOAT")
    with audio.open_audio(tmp_path / "inf.wav") as f, pytest.raises(ValueError, match="non-finite samples"):
        f.read(0, 50)
    with audio.open_audio(tmp_path / "inf.wav") as f:  # frames before the bad one are fine
        assert f.read(0, 7).abs().max() == 0


# ----------------------------------------------------------------------------- save
def test_save_writes_atomically_and_round_trips(tmp_path):
    x = torch.linspace(-0.5, 0.5, 1600).reshape(1, -1)
    path = audio.save(tmp_path / "sub" / "x.wav", x, SR, subtype="FLOAT")
    back, sr = sf.read(path, dtype="float32")
    assert sr == SR and np.array_equal(back, x[0].numpy())
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]  # no temporary file left
    before = path.read_bytes()
    with pytest.raises(ValueError, match="non-finite"):
        audio.save(path, torch.full((1, 10), float("nan")), SR)
    with pytest.raises(ValueError, match=r"cannot tell the audio format .*x\.aif"):
        audio.save(tmp_path / "x.aif", x, SR)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["x.wav"]
    flac = audio.save(tmp_path / "y.flac", x, SR)  # format from the suffix, PCM_16 by default
    assert sf.info(str(flac)).format == "FLAC" and sf.info(str(flac)).subtype == "PCM_16"


def test_save_failure_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    path = audio.save(tmp_path / "x.wav", torch.zeros(1, 100), SR)
    before = path.read_bytes()

    def broken_write(file, *args, **kwargs):
        file.write(b"RIFF partial")
        raise OSError("disk full")

    monkeypatch.setattr(audio.sf, "write", broken_write)
    with pytest.raises(OSError, match="disk full"):
        audio.save(path, torch.ones(1, 100) * 0.5, SR)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.wav"]
