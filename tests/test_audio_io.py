"""``audioconv.io.audio``: the only soundfile user, its open-file reads, the one clip-range check
(the same message from ``load``, the dataset and the manifest check) and atomic ``save``.
References: soundfile's own ``sf.read``/``sf.info`` and hand-computed frame numbers."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audioconv
from audioconv.data import ManifestDataset
from audioconv.io import audio
from audioconv.io.manifest import check_manifest

from _corpus import cut_short

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


# ----------------------------------------------------------------------------- files that are not what their headers say
def _tremolo_mp3(path: Path, seconds: float = 3.0, sr: int = 44100) -> Path:
    """A 440-Hz tone with a 3-Hz tremolo as MP3: a signal on which libsndfile's MP3 seeks land on
    thousands of zero frames (measured), unlike noise."""
    t = np.arange(int(sr * seconds)) / sr
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    sf.write(path, x.astype(np.float32), sr, format="MP3", subtype="MPEG_LAYER_III")
    return path


def test_a_wav_cut_short_is_refused_when_opened_naming_both_sizes(tmp_path):
    path = _ramp(tmp_path / "r.wav", 1000, channels=2)  # 32-bit float stereo: 8 bytes a frame, 8000 bytes of data
    size = path.stat().st_size
    cut = cut_short(path, tmp_path / "cut.wav", keep=(size - 8000 + 2400) / size)  # 300 frames left
    assert sf.info(str(cut)).frames == 300  # libsndfile alone would quietly give the shorter clip
    message = r"truncated WAV file .*cut\.wav: its data chunk declares 1000 frames \(8000 bytes\) but the file holds only 300 frames \(2400 bytes\)$"
    for opener in (audio.open_audio, audio.info, audio.load):
        with pytest.raises(ValueError, match=message):
            opener(cut)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "cut.wav", "label": "a"}) + "\n")
    for decode in (True, False):  # found from the header alone
        assert re.search(message, check_manifest(tmp_path / "m.jsonl", decode=decode, progress=False).bad[0]["error"])


def test_wavs_of_unknown_length_or_with_trailing_bytes_are_read_whole(tmp_path):
    path = _ramp(tmp_path / "r.wav", 500)
    data = bytearray(path.read_bytes())
    at = data.index(b"data") + 4
    streamed = bytearray(data)
    streamed[at:at + 4] = (0xFFFFFFFF).to_bytes(4, "little")  # what a writer that could not seek back leaves
    (tmp_path / "streamed.wav").write_bytes(bytes(streamed))
    (tmp_path / "trailing.wav").write_bytes(bytes(data) + b"LIST\x04\x00\x00\x00abcd")
    for name in ("streamed.wav", "trailing.wav"):
        reference, _ = sf.read(tmp_path / name, dtype="float32", always_2d=True)
        wav, _ = audio.load(tmp_path / name)
        assert wav.shape == (1, 500)
        np.testing.assert_array_equal(wav.numpy(), reference.T)


def test_an_mp3_shorter_than_its_header_gives_the_frames_that_decode(tmp_path):
    cut = cut_short(_tremolo_mp3(tmp_path / "full.mp3", seconds=1.0), tmp_path / "cut.mp3")
    header = sf.info(str(cut)).frames
    reference, sr = sf.read(cut, dtype="float32", always_2d=True)  # soundfile decoding from the start
    n = len(reference)
    assert header == 44100 and 0.5 * header < n < header  # the Xing frame promises the uncut length
    wav, _ = audio.load(cut)
    np.testing.assert_allclose(wav.numpy(), reference.T, rtol=0, atol=1e-6)
    with audio.open_audio(cut) as f:
        assert f.read(n - 100, 1000).shape == (1, 100) and (f.frames, f.header_frames) == (n, header)
    with audio.open_audio(cut) as f:  # a read that starts past the real end finds that end too
        assert f.read(n + 10, 50).shape == (1, 0) and f.frames == n
    with pytest.raises(ValueError, match=rf"offset .* s is past the end of .*cut\.mp3 \({n / sr:.3f} s long\)"):
        audio.load(cut, offset_s=(n + 10) / sr)
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio_filepath": "cut.mp3", "label": "a", "duration": 1.0}) + "\n")
    report = check_manifest(tmp_path / "m.jsonl", progress=False)
    assert report.ok and report.records[0]["duration"] == round(n / sr, 6)
    assert report.warnings[0]["error"] == (f"the header says {header} frames (1.000000 s) but {n} decode "
                                           f"({n / sr:.6f} s); the decoded length is used")


def test_a_flac_cut_short_gives_the_frames_before_the_cut(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (22050, 2)).astype(np.float32)
    sf.write(tmp_path / "full.flac", x, 22050, subtype="PCM_16")
    original, _ = sf.read(tmp_path / "full.flac", dtype="float32", always_2d=True)
    cut = cut_short(tmp_path / "full.flac", tmp_path / "cut.flac")
    with pytest.raises(sf.LibsndfileError):  # soundfile alone: one read of the whole file fails
        sf.read(cut)
    wav, _ = audio.load(cut)
    n = wav.shape[-1]
    assert 0.5 * len(original) < n < len(original)
    np.testing.assert_array_equal(wav.numpy(), original[:n].T)


@pytest.mark.parametrize("first", [3000, 5000, 44100, 100000])
def test_mp3_reads_anywhere_equal_a_decode_from_the_start(tmp_path, first):
    path = _tremolo_mp3(tmp_path / "t.mp3")
    reference, _ = sf.read(path, dtype="float32")
    with audio.open_audio(path) as f:
        np.testing.assert_allclose(f.read(first, 2000)[0].numpy(), reference[first:first + 2000], rtol=0, atol=1e-6)
