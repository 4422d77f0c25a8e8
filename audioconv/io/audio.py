"""Audio file I/O and waveform utilities (soundfile + torchaudio.functional).

The package's only soundfile user: headers (:func:`info`), an open file's frame ranges
(:func:`open_audio`), the one clip-range check (:func:`clip_frames`), whole or partial decoding
(:func:`load`) and atomic writing (:func:`save`).

Real files are not always what their headers say, and every reader of the package (the manifest
check, the dataset, :func:`load`, the importers) sees the same two rules, because they all read
through :class:`AudioReader`:

* a WAV file whose ``data`` chunk declares more bytes than the file holds (a cut-off copy or
  download) is refused when it is opened, naming both sizes (libsndfile would quietly decode the
  shorter clip);
* a compressed file (MP3, Ogg Vorbis/Opus, FLAC) may decode to fewer frames than its header
  promises (an estimated MP3 length, a truncated download): that is its real length, not an
  error. A read returns the frames that decode and the reader's ``frames`` becomes the real length
  (``header_frames`` keeps what the header said).

Every waveform here is a float32 tensor shaped ``(channels, time)``; sample rates are in Hz and
times in seconds. ``torchaudio.load`` is not used: since torchaudio 2.9 it needs torchcodec.
"""
from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from audioconv.io.files import atomic_write

__all__ = [
    "AudioInfo", "AudioReader", "AUDIO_EXTENSIONS", "COMPRESSED_FORMATS", "audio_files_under", "info", "is_audio", "open_audio", "clip_frames", "load", "save", "resample", "to_mono", "fix_length",
]


#: File name endings treated as audio (what libsndfile decodes) when a folder is searched.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au"})
#: libsndfile formats whose frame count is an estimate or can promise more than the file decodes.
COMPRESSED_FORMATS = frozenset({"MP3", "MPEG", "OGG", "FLAC"})
_SALVAGE_BLOCK = 1024  # frames per read when a compressed file is decoded up to where it fails
# libsndfile's MP3 seeks can land on up to ~3000 frames of zeros or garbage (bit reservoir, decoder
# warm-up; measured at 16-48 kHz): a read starts this many frames early and drops them (exact then)
_MP3_PREROLL = 4096
_RIFF_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers put these in a data chunk of unknown length


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says: ``sample_rate`` in Hz, ``frames`` per channel, ``duration_s``."""

    sample_rate: int
    frames: int
    channels: int
    duration_s: float
    subtype: str


def is_audio(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name ends in an ``AUDIO_EXTENSIONS`` ending and is not hidden (``.``-names:
    macOS ``._x.wav`` resource forks, editor and notebook copies)."""
    name = Path(path).name
    return Path(name).suffix.lower() in AUDIO_EXTENSIONS and not name.startswith(".")


def audio_files_under(folder: str | os.PathLike) -> list[Path]:
    """Audio files (``is_audio``) anywhere under ``folder``, hidden folders skipped, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in filenames if is_audio(f))
    return sorted(out)


def _check_exists(path: str | os.PathLike) -> None:
    """Raise ``FileNotFoundError`` (missing) or ``ValueError`` (a folder, 0 bytes) naming ``path``.

    One ``stat`` call: the dataset opens a file per clip, so this runs in its hot path."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"audio file not found: {path}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"audio path is a folder, not a file: {path}")
    if st.st_size == 0:
        raise ValueError(f"audio file is empty (0 bytes): {path}")


def info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of an audio file without decoding its samples.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is a folder, empty, not a format soundfile can decode, or a truncated
            WAV file.
    """
    with open_audio(path) as f:
        return f.info


def clip_frames(offset_s: float | None, duration_s: float | None, sample_rate: int, n_frames: int,
                path: str | os.PathLike) -> tuple[int, int]:
    """Where a clip lies in a file: ``(first frame, frame count)``.

    The one check of a clip's range against its file (used by :func:`load`, the dataset and the
    manifest check). The clip starts at frame ``round(offset_s * sample_rate)`` and lasts
    ``round(duration_s * sample_rate)`` frames, cut at the end of the file.

    Args:
        offset_s: clip start in seconds (>= 0); ``None`` = 0.
        duration_s: clip length in seconds (>= 0); ``None`` runs to the end of the file.
        sample_rate: the file's rate in Hz.
        n_frames: the file's length in frames (per channel), as its header says.
        path: the file, for messages.

    Returns:
        ``(first, count)`` with ``count >= 1`` and ``first + count <= n_frames``.

    Raises:
        ValueError: a negative time; the file has no samples; the offset is at or past the end of
            the file; the duration is shorter than one frame (all "zero-length clip" or "past the end").
    """
    offset_s = 0.0 if offset_s is None else float(offset_s)
    if not offset_s >= 0:
        raise ValueError(f"offset_s must be >= 0 seconds, got {offset_s} for {path}")
    if duration_s is not None and not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0 seconds, got {duration_s} for {path}")
    if n_frames <= 0:
        raise ValueError(f"zero-length clip: {path} has no samples")
    first = int(round(offset_s * sample_rate))
    if first >= n_frames:
        raise ValueError(f"offset {offset_s} s is past the end of {path} ({n_frames / sample_rate:.3f} s long)")
    count = n_frames - first if duration_s is None else min(n_frames - first, int(round(duration_s * sample_rate)))
    if count <= 0:
        raise ValueError(f"zero-length clip: duration {duration_s} s is less than one frame at {sample_rate} Hz in {path}")
    return first, count


def _riff_data_chunk(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """``(declared data bytes, data bytes present, block align, fmt tag)`` of a RIFF/WAVE file, or
    ``None`` when it is not one or has no ``data`` chunk (libsndfile then decides). One 4-KiB read
    covers the usual headers; chunks beyond it are reached by seeking."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        buf, buf_at = os.read(fd, 4096), 0
        if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
            return None
        pos, block_align, tag = 12, 0, 0
        while pos + 8 <= size:
            if pos < buf_at or pos + 24 > buf_at + len(buf):  # the chunk header is not in the buffer
                os.lseek(fd, pos, os.SEEK_SET)
                buf, buf_at = os.read(fd, 4096), pos
            chunk = buf[pos - buf_at : pos - buf_at + 24]
            cid, n = chunk[:4], int.from_bytes(chunk[4:8], "little")
            if cid == b"fmt " and len(chunk) >= 22:
                tag, block_align = int.from_bytes(chunk[8:10], "little"), int.from_bytes(chunk[20:22], "little")
            if cid == b"data":
                return n, size - pos - 8, block_align, tag
            pos += 8 + n + (n & 1)
        return None
    finally:
        os.close(fd)


def _check_wav_complete(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` when a WAV file's ``data`` chunk declares more bytes than the file holds,
    naming the file and both sizes (in frames too for PCM and float data)."""
    found = _riff_data_chunk(path)
    if found is None:
        return
    declared, present, block_align, tag = found
    if declared in _RIFF_UNKNOWN_SIZES or declared <= present:
        return
    sizes = f"{declared} bytes but only {present} bytes are present"
    if block_align > 0 and tag in (1, 3, 6, 7, 0xFFFE):  # PCM, float, A-law, mu-law, extensible: fixed frames
        sizes = (f"{declared // block_align} frames ({declared} bytes) but the file holds only "
                 f"{present // block_align} frames ({present} bytes)")
    raise ValueError(f"truncated WAV file {path}: its data chunk declares {sizes}")


class AudioReader:
    """An open audio file: its header and reads of any frame range (one open for both).

    Use as a context manager (``with open_audio(path) as f: ...``) or call :meth:`close`.

    Attributes:
        path: the file.
        sample_rate: Hz.
        frames: length in frames per channel: what the header says until a read of a compressed
            file finds the real (shorter) end, then that.
        header_frames: the header's length in frames, unchanged.
        channels: channel count.
        compressed: the format is one of :data:`COMPRESSED_FORMATS` (a short read is its real end).
        info: the whole header as an :class:`AudioInfo`.

    Raises:
        FileNotFoundError: missing file.
        ValueError: a folder, an empty file, a format soundfile cannot decode, or a truncated WAV
            file (its data chunk declares more bytes than are present).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = path
        _check_exists(path)
        try:
            self._file = sf.SoundFile(str(path))
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
            raise ValueError(f"cannot decode audio file {path}: {e}") from None
        try:
            if self._file.format in ("WAV", "WAVEX"):
                _check_wav_complete(path)
        except BaseException:
            self._file.close()
            raise
        self.sample_rate = int(self._file.samplerate)
        self.header_frames = self.frames = int(self._file.frames)
        self.channels = int(self._file.channels)
        self.compressed = self._file.format in COMPRESSED_FORMATS
        self.info = AudioInfo(self.sample_rate, self.frames, self.channels, self.frames / self.sample_rate,
                              str(self._file.subtype))

    def read(self, first: int, count: int) -> torch.Tensor:
        """Frames ``first .. first + count`` as a float32 ``(channels, n)`` tensor.

        ``n == count``, except for a compressed file that ends before ``first + count`` although
        its header says otherwise: then ``n`` is what decodes (0 when ``first`` is past the real
        end) and :attr:`frames` becomes the real length. An MP3 is read from a few thousand frames
        earlier, so that the frames equal a decode from the start (libsndfile's MP3 seeks are not
        sample-exact).

        Raises:
            ValueError: libsndfile fails on the data (of a compressed file: before its first
                frame decodes), an uncompressed file returns fewer than ``count`` frames, or a
                sample is NaN/inf.
        """
        lead = min(first, _MP3_PREROLL) if self._file.format == "MP3" else 0
        try:
            self._file.seek(first - lead)
            data = self._file.read(count + lead, dtype="float32", always_2d=True)[lead:]
        except Exception as e:  # libsndfile errors on corrupt data; a cut FLAC stops with one
            if not self.compressed:
                raise ValueError(f"cannot decode audio file {self.path}: {e}") from None
            data = self._decode_from_start(first, count)
            if self.frames == 0:
                raise ValueError(f"cannot decode audio file {self.path}: {e}") from None
        if data.shape[0] != count:
            if not self.compressed:
                raise ValueError(f"read {data.shape[0]} frames instead of {count} from {self.path}")
            if data.shape[0]:  # a read stops only at the end of the file
                self.frames = min(self.frames, first + data.shape[0])
            else:  # an MP3 seeks past its real end without a word: find that end
                data = self._decode_from_start(first, count)
        if not np.isfinite(data).all():
            raise ValueError(f"audio file {self.path} contains non-finite samples (NaN or inf)")
        return torch.from_numpy(np.ascontiguousarray(data.T))

    def _decode_from_start(self, first: int, count: int) -> np.ndarray:
        """Frames ``first .. first + count`` of a compressed file that one seek-and-read could not
        give: a fresh handle decodes from frame 0, without seeking, in small blocks, up to that
        range's end, the file's real end or the decoder's first error (where a cut FLAC stops).
        When it stops early, :attr:`frames` becomes the number of frames that decoded."""
        self._file.close()
        self._file = sf.SoundFile(str(self.path))  # after an error libsndfile refuses every call on a handle
        stop, done, kept = first + count, 0, []
        with sf.SoundFile(str(self.path)) as fresh:
            while done < stop:
                want = min(_SALVAGE_BLOCK, stop - done)
                try:
                    block = fresh.read(want, dtype="float32", always_2d=True)
                except Exception:  # the decoder gave up: the frames before are the file's audio
                    block = np.zeros((0, self.channels), np.float32)
                if block.shape[0] > max(0, first - done):
                    kept.append(block[max(0, first - done):])
                done += block.shape[0]
                if block.shape[0] < want:
                    self.frames = min(self.frames, done)
                    break
        return np.concatenate(kept) if kept else np.zeros((0, self.channels), np.float32)

    def read_clip(self, offset_s: float | None, duration_s: float | None) -> torch.Tensor:
        """The clip from ``offset_s`` lasting ``duration_s`` (``None``: to the end) as ``(channels, n)``:
        :func:`clip_frames` on the file's length, then :meth:`read` (a compressed file's real end
        cuts the clip there). What :func:`load` and the manifest check decode.

        Raises:
            ValueError: as :func:`clip_frames` (also when a compressed file really ends before
                ``offset_s``) and :meth:`read`.
        """
        first, count = clip_frames(offset_s, duration_s, self.sample_rate, self.frames, self.path)
        wav = self.read(first, count)
        if wav.shape[-1] == 0:  # the file really ends before the clip: say so with its real length
            clip_frames(offset_s, duration_s, self.sample_rate, self.frames, self.path)
        return wav

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AudioReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_audio(path: str | os.PathLike) -> AudioReader:
    """Open an audio file for reading (see :class:`AudioReader`).

    Raises:
        FileNotFoundError: missing file.
        ValueError: a folder, an empty (0-byte) file, a format soundfile cannot decode, or a
            truncated WAV file (naming the declared and the present size).
    """
    return AudioReader(path)


def load(
    path: str | os.PathLike,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    sample_rate: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode (part of) an audio file to a float32 tensor.

    Only the frames from ``offset_s`` to ``offset_s + duration_s`` are read from disk
    (see :func:`clip_frames`; a duration running past the end is cut there, and so is a compressed
    file that decodes to fewer frames than its header says: :meth:`AudioReader.read_clip`).

    Args:
        path: WAV/FLAC/OGG/... file readable by soundfile.
        offset_s: start of the excerpt in seconds (>= 0).
        duration_s: length of the excerpt in seconds; ``None`` reads to the end.
        sample_rate: if given, resample to this rate (Hz) with ``torchaudio.functional.resample``.

    Returns:
        ``(waveform, sample_rate)`` with waveform shaped ``(channels, time)``, float32 in [-1, 1]
        for integer formats; ``time >= 1``.

    Raises:
        FileNotFoundError: missing file.
        ValueError: empty/undecodable file, a truncated WAV file, a file without samples, offset
            at or past the end, zero-length excerpt, negative times, an uncompressed file with
            fewer frames than its header says, or non-finite samples (NaN/inf) in the file.
    """
    with open_audio(path) as f:
        wav, sr = f.read_clip(offset_s, duration_s), f.sample_rate
    if sample_rate is not None and sample_rate != sr:
        wav = resample(wav, sr, sample_rate)
        sr = sample_rate
    return wav, int(sr)


def save(path: str | os.PathLike, waveform: torch.Tensor, sample_rate: int, subtype: str = "PCM_16") -> Path:
    """Write a ``(channels, time)`` or ``(time,)`` waveform to an audio file (format from the suffix).

    Samples are clipped to [-1, 1] for integer subtypes. The file is encoded in memory and written
    atomically (:func:`audioconv.io.files.atomic_write`: a crash never leaves half a file that
    looks complete); parent folders are created. Returns the path written.

    Raises:
        ValueError: a waveform of another rank, non-finite samples, or a suffix that names no
            format soundfile writes (``.wav``, ``.flac``, ``.ogg``, ...).
    """
    path = Path(path)
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2:
        raise ValueError(f"waveform must be (channels, time) or (time,), got shape {tuple(waveform.shape)}")
    data = waveform.detach().to("cpu", torch.float32).numpy().T
    if not np.isfinite(data).all():
        raise ValueError(f"refusing to write non-finite samples to {path}")
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    file_format = path.suffix[1:].upper()
    if file_format not in sf.available_formats():
        raise ValueError(f"cannot tell the audio format from the suffix of {path} (use .wav, .flac, .ogg, ...)")
    encoded = io.BytesIO()
    sf.write(encoded, data, int(sample_rate), subtype=subtype, format=file_format)
    with atomic_write(path, "wb") as f:
        f.write(encoded.getbuffer())
    return path


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample ``(..., time)`` from ``orig_sr`` to ``new_sr`` Hz (band-limited sinc, torchaudio)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, new_sr={new_sr}")
    if orig_sr == new_sr:
        return waveform
    return AF.resample(waveform, int(orig_sr), int(new_sr))


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average the channels of ``(channels, time)`` into ``(1, time)``."""
    return waveform.mean(dim=-2, keepdim=True)


def fix_length(waveform: torch.Tensor, length: int, mode: str = "center", offset: int | None = None) -> torch.Tensor:
    """Crop or zero-pad the last axis of ``(..., time)`` to exactly ``length`` samples.

    Args:
        length: target number of samples (> 0).
        mode: where to crop / how to pad: ``"start"`` keeps the beginning (pads at the end),
            ``"center"`` crops/pads symmetrically, ``"random"`` needs ``offset``.
        offset: for cropping, the first kept sample; for padding, the number of zeros put in
            front. Overrides ``mode``.
    """
    if length <= 0:
        raise ValueError(f"length must be > 0 samples, got {length}")
    n = waveform.shape[-1]
    if offset is None:
        if mode == "start":
            offset = 0
        elif mode == "center":
            offset = abs(n - length) // 2
        else:
            raise ValueError(f"mode must be 'start' or 'center' (or pass offset), got {mode!r}")
    if n >= length:
        if not 0 <= offset <= n - length:
            raise ValueError(f"crop offset {offset} out of range 0..{n - length}")
        return waveform[..., offset : offset + length]
    if not 0 <= offset <= length - n:
        raise ValueError(f"pad offset {offset} out of range 0..{length - n}")
    return torch.nn.functional.pad(waveform, (offset, length - n - offset))


def decode(data: bytes, offset_s: float | None = None, duration_s: float | None = None,
           name: str = "<bytes>") -> tuple[torch.Tensor, int]:
    """Decode the clip of an audio file held in memory (the bytes of a WAV, FLAC, OGG or MP3 file, as
    a WebDataset shard stores them).

    The clip is the one :func:`clip_frames` places (``offset_s``, ``duration_s``; ``None`` = from the
    start / to the end). An MP3 is decoded from its first frame, not seeked into (libsndfile's MP3
    seeks are not sample-exact), so the samples equal a decode of the whole file; a compressed file
    that decodes to fewer frames than its header says gives what decodes, as :func:`load` does.

    Args:
        data: the file's bytes.
        offset_s, duration_s: the clip, in seconds.
        name: what messages call the data (``"shard-000003.tar:000000042.wav"``).

    Returns:
        ``(waveform (channels, frames) float32, sample_rate in Hz)``.

    Raises:
        ValueError: empty or undecodable bytes, a clip outside the audio (:func:`clip_frames`), an
            uncompressed file shorter than its header (a truncated WAV), non-finite samples.
    """
    if not data:
        raise ValueError(f"audio data is empty (0 bytes): {name}")
    try:
        f = sf.SoundFile(io.BytesIO(data))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError
        raise ValueError(f"cannot decode audio data {name}: {e}") from None
    with f:
        sr, compressed = int(f.samplerate), f.format in COMPRESSED_FORMATS
        first, count = clip_frames(offset_s, duration_s, sr, int(f.frames), name)
        lead = first if f.format == "MP3" else 0
        try:
            f.seek(first - lead)
            frames = f.read(count + lead, dtype="float32", always_2d=True)[lead:]
        except Exception as e:
            raise ValueError(f"cannot decode audio data {name}: {e}") from None
    if frames.shape[0] == 0 or (frames.shape[0] < count and not compressed):
        raise ValueError(f"audio data {name} holds {frames.shape[0]} of the {count} frames its header promises "
                         f"from frame {first} (truncated)")
    if not np.isfinite(frames).all():
        raise ValueError(f"audio data {name} contains non-finite samples (NaN or inf)")
    return torch.from_numpy(np.ascontiguousarray(frames.T)), sr


__all__ += ["decode"]


def codec_round_trip(waveform: torch.Tensor, sample_rate: int, file_format: str, subtype: str,
                     compression_level: float | None = None, bitrate_mode: str | None = None) -> tuple[torch.Tensor, int]:
    """Encode ``(channels, time)`` float samples to a file in memory with libsndfile and decode it again.

    Args:
        waveform (Tensor): ``(channels, time)`` on the CPU; samples beyond ±1 clip as in any file.
        sample_rate (int): Hz; it must be one the codec takes (Opus: 8, 12, 16, 24, 48 kHz).
        file_format (str), subtype (str): soundfile's names, e.g. ``("MP3", "MPEG_LAYER_III")``,
            ``("OGG", "VORBIS")``, ``("OGG", "OPUS")``, ``("WAV", "GSM610")``, ``("WAV", "ULAW")``.
        compression_level (float or None): libsndfile's compression level in [0, 1] (0: best
            quality, highest bitrate) for MP3, Vorbis and Opus; None: the codec's default.
        bitrate_mode (str or None): ``"CONSTANT"``, ``"AVERAGE"`` or ``"VARIABLE"`` (MP3, Opus).

    Returns:
        ``(decoded (channels, frames) float32, encoded size in bytes)``; ``frames`` may differ
        from ``time`` (codecs that pad their last frame, or keep their delay).

    Raises:
        ValueError: the codec refuses the settings (libsndfile's message, with the format named),
            or the waveform holds NaN.
    """
    # clipped here: libsndfile converts floats beyond ±1 to integers without clipping (they wrap
    # round and flip sign) and its mu-law/A-law tables index out of bounds far beyond it or at NaN (a crash)
    data = np.clip(waveform.detach().to("cpu", torch.float32).numpy().T, -1.0, 1.0)
    if np.isnan(data).any():
        raise ValueError(f"{file_format}/{subtype}: the waveform holds NaN samples; a codec needs finite ones")
    data = np.ascontiguousarray(data)
    encoded = io.BytesIO()
    extra = {k: v for k, v in (("compression_level", compression_level), ("bitrate_mode", bitrate_mode))
             if v is not None}
    try:
        sf.write(encoded, data, int(sample_rate), subtype=subtype, format=file_format, **extra)
        size = encoded.tell()
        encoded.seek(0)
        decoded, _ = sf.read(encoded, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise ValueError(f"{file_format}/{subtype} at {sample_rate} Hz ({extra or 'defaults'}): {e}") from None
    return torch.from_numpy(decoded.T.copy()), size


__all__ += ["codec_round_trip"]
