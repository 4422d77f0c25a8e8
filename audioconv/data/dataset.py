"""Manifest → DataLoader-ready ``(waveform (C, T) float32, label index, length)`` examples; the
padding :func:`collate`; a class-balanced sampler; the per-example (worker) seeding.

Runs in DataLoader workers (CPU only): decode with :mod:`audioconv.io.audio` (only the frames
needed), resample, downmix, crop or pad. Features and augmentation belong on the batch's device
in the main process.

Randomness (random crops, and a ``transform`` that takes ``generator=``) comes from a fresh
``torch.Generator`` per example, seeded in one of two ways:

* ``seed=None`` (default): the seed is drawn from torch's RNG of the process running
  ``__getitem__``. The DataLoader seeds each worker's RNG with ``base_seed + worker_id``, where
  ``base_seed`` is drawn at each epoch from the loader's ``generator`` (else the global RNG), so
  workers differ and epochs differ; ``torch.manual_seed(s)`` (or a seeded loader ``generator``,
  with workers) before iterating reproduces the epoch for the same ``num_workers`` and batch size.
  With ``persistent_workers`` the workers keep their streams: the run reproduces as a whole.
* ``seed=int``: each example's seed is a pure function of ``(seed, epoch, index)``: the result does
  not depend on ``num_workers``, order or any RNG state. Call :meth:`ManifestDataset.set_epoch`
  each epoch (persistent workers do not see it).

Bad clips with ``skip_bad=True``: each is counted once, with its reason, in
:attr:`ManifestDataset.skipped`, whether it was found when the dataset was built or when a
DataLoader worker read it (the workers mark it in a flag array shared with the main process), and
warned about once, not once per epoch.
"""
from __future__ import annotations

import functools
import json
import math
import numbers
import os
import unicodedata
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torchaudio.transforms as T
from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.io.files import write_json
from audioconv.io.manifest import Clip, iter_manifest, validate_record
from audioconv.utils import accepts_keyword, mix_seed

__all__ = ["ManifestDataset", "collate", "ClassBalancedSampler", "save_labels", "load_labels", "ClipError",
           "ClipNotFoundError", "SkippedClipWarning"]

_LOWPASS_WIDTH = 6  # torchaudio.functional.resample's default lowpass_filter_width (zero crossings)
_ROLLOFF = 0.99  # torchaudio's default rolloff
_MAX_ALIGN_STEP = 4096  # above this many source samples per aligned unit, resample the whole clip


# ----------------------------------------------------------------------------- errors
def _first_message(message: str) -> str:
    """The clip's own one-line message, also when a DataLoader re-raises it from a worker (it then
    wraps it as "Caught ... in DataLoader worker process N. Original Traceback ... Name: message")."""
    if message.startswith("Caught ") and "Original Traceback" in message:
        last = message.rstrip().splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return message


class ClipError(ValueError):
    """A clip that cannot be used; the message names the manifest line and the audio file, and stays
    that one line when a DataLoader re-raises it from a worker process."""

    def __init__(self, message: str):
        super().__init__(_first_message(str(message)))


class ClipNotFoundError(FileNotFoundError):
    """A clip whose audio file does not exist (one line, as :class:`ClipError`)."""

    def __init__(self, message: str):
        super().__init__(_first_message(str(message)))


class SkippedClipWarning(UserWarning):
    """A clip left out by ``skip_bad=True`` (warned once per clip; listed in ``dataset.skipped``)."""


# ----------------------------------------------------------------------------- labels.json
def save_labels(path: str | os.PathLike, labels: Sequence[str]) -> Path:
    """Write the label map as ``{"labels": [...]}`` (index = position) to ``path`` (labels.json),
    atomically; parent folders are created. Returns the path."""
    labels = _check_labels(list(labels), str(path))
    return write_json(path, {"labels": labels})


def load_labels(path: str | os.PathLike) -> list[str]:
    """Read a label map written by :func:`save_labels` (a plain JSON list is accepted too)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: bad JSON in labels file ({e.msg})") from None
    labels = obj.get("labels") if isinstance(obj, dict) else obj
    if not isinstance(labels, list):
        raise ValueError(f"{path}: expected {{\"labels\": [...]}} or a JSON list of label strings")
    return _check_labels(labels, str(path))


def _check_labels(labels: list, where: str) -> list[str]:
    if not labels:
        raise ValueError(f"{where}: the label list is empty")
    for i, lab in enumerate(labels):
        if not isinstance(lab, str) or not lab:
            raise ValueError(f"{where}: label {i} must be a non-empty string, got {lab!r}")
    dup = [lab for lab, c in Counter(labels).items() if c > 1]
    if dup:
        raise ValueError(f"{where}: duplicate labels {dup}")
    return list(labels)


# ----------------------------------------------------------------------------- resampling
@functools.lru_cache(maxsize=32)
def _cached_resampler(orig_sr: int, new_sr: int) -> T.Resample:
    """torchaudio's resampler with its sinc kernel built once per (orig, new) pair and process
    (same numbers as ``audio.resample``; building a 44.1 -> 16 kHz kernel costs more than using it)."""
    return T.Resample(orig_sr, new_sr)


# ----------------------------------------------------------------------------- dataset
def _check_arguments(sample_rate, clip_s, channels: str, crop: str, transform) -> int:
    """Validate :class:`ManifestDataset`'s settings; return ``sample_rate`` as an ``int``."""
    if not isinstance(sample_rate, numbers.Integral) or isinstance(sample_rate, bool) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    sample_rate = int(sample_rate)
    if clip_s is not None and not (isinstance(clip_s, numbers.Real) and math.isfinite(clip_s) and clip_s > 0):
        raise ValueError(f"clip_s must be > 0 seconds or None, got {clip_s!r}")
    if clip_s is not None and round(clip_s * sample_rate) < 1:
        raise ValueError(f"clip_s={clip_s} s is less than one sample at {sample_rate} Hz")
    if channels not in ("mono", "keep"):
        raise ValueError(f"channels must be 'mono' or 'keep', got {channels!r}")
    if crop not in ("random", "center", "start"):
        raise ValueError(f"crop must be 'random', 'center' or 'start', got {crop!r}")
    if transform is not None and not callable(transform):
        raise ValueError(f"transform must be callable, got {type(transform).__name__}")
    return sample_rate


def _select_split(records: list[dict], sources: list[str], split, name: str) -> tuple[list[dict], list[str]]:
    """The records (and their sources) whose ``split`` is ``split`` (a string or a collection)."""
    wanted = {split} if isinstance(split, str) else set(split)
    keep = [i for i, r in enumerate(records) if r.get("split") in wanted]
    if not keep:
        present = sorted({str(r.get("split")) for r in records})
        raise ValueError(f"manifest {name} has no clips with split in {sorted(wanted)} (splits present: {present})")
    return [records[i] for i in keep], [sources[i] for i in keep]


class _ShorterThanHeader(Exception):
    """A read found a compressed file's real end before the end its header promised."""


def _unicode_form(text: str) -> str:
    """``"NFC"``, ``"NFD"`` or ``"mixed"``: how ``text`` writes its accented letters."""
    return next((form for form in ("NFC", "NFD") if unicodedata.is_normalized(form, text)), "mixed")


def _check_unicode_twins(labels: list[str], name: str) -> None:
    """Refuse two labels that are the same text in two Unicode forms (they would be two classes)."""
    seen: dict[str, str] = {}
    for lab in labels:
        other = seen.setdefault(unicodedata.normalize("NFC", lab), lab)
        if other != lab:
            raise ValueError(f"{name}: labels {other!r} and {lab!r} are the same text in two Unicode forms "
                             f"({_unicode_form(other)} and {_unicode_form(lab)}; macOS file names are NFD), "
                             f"which would make two classes: write them the same way")


class ManifestDataset(torch.utils.data.Dataset):
    """Clips of a manifest as fixed-length float32 waveforms with integer labels.

    Args:
        manifest: path of a JSONL manifest (relative paths from its folder), or a list of record
            dicts (relative paths from the current directory).
        sample_rate: output rate in Hz; clips are resampled (torchaudio's band-limited sinc).
        clip_s: output length in seconds (``round(clip_s * sample_rate)`` samples); longer clips
            are cropped, shorter ones zero-padded *at the end*. ``None`` keeps each clip's length
            (``collate`` pads the batch).
        labels: label list, or path of a labels.json; index = position. Default: the sorted labels
            of the whole manifest (before ``split`` filtering, so splits of one manifest agree).
            For evaluation pass the training run's labels.json.
        channels: ``"mono"`` (mean of the channels, ``C = 1``) or ``"keep"``.
        crop: where a long clip is cut: ``"random"`` (uniform start), ``"center"``, ``"start"``.
        transform: CPU callable on ``(C, T)`` returning ``(C, T)``; receives ``generator=`` (a
            ``torch.Generator``) when its signature accepts it. It is given the clip's real samples
            only (before the zero padding), so an ``AddNoise`` measures the clip's own level. The
            item's ``length`` is the output's, or, for a transform with ``call_with_lengths`` (every
            augmentation: called through it), where it says the real samples now end — a sped-up
            clip (``TimeStretch``, ``SpeedPerturb``) ends early, followed by zeros.
        skip_bad: leave out unusable clips instead of raising. Missing, empty, undecodable or
            truncated files, offsets past the end and zero-length clips are found when the dataset
            is built (they are not indexed; one :class:`SkippedClipWarning` for all of them);
            clips failing later (e.g. NaN samples) make ``__getitem__`` return ``None``, which
            :func:`collate` drops, and are warned about once (not every epoch). Both kinds are
            counted once in :attr:`skipped`, also when a DataLoader worker found them.
        split: keep only records whose ``split`` equals this string (or is in this collection).
        allow_unknown: skip records whose label is not in ``labels`` (counted in ``self.unknown``,
            per label in ``self.unknown_labels``) instead of raising.
        seed: make random draws a pure function of ``(seed, epoch, index)`` (see module doc).
        return_length: deprecated (items always carry their length); ``False`` still gives
            ``(waveform, label)`` pairs, with a ``DeprecationWarning``.
        progress: tqdm bar for the header scan done with ``skip_bad``.

    ``dataset[i]`` → ``(waveform (C, T) float32, label_index int, length int)``, ``length`` the
    number of real (unpadded) samples, which :func:`collate` turns into the batch's ``lengths``.

    Attributes:
        skipped: ``{"manifest.jsonl:LINE": reason}`` for each clip left out by ``skip_bad``.
        n_selected: clips of the chosen split with known labels, before bad ones were left out
            (``len(dataset)`` is what the header scan kept).
        unknown, unknown_labels: clips left out by ``allow_unknown``.

    Raises:
        ValueError / FileNotFoundError: empty manifest or split, unknown label (naming label and
            ``file:line``), bad arguments; on access, an unreadable clip raises :class:`ClipError`
            or :class:`ClipNotFoundError` naming ``file:line`` and the audio file (unless
            ``skip_bad``).
    """

    def __init__(
        self,
        manifest: str | os.PathLike | Sequence[dict],
        sample_rate: int,
        clip_s: float | None,
        labels: Sequence[str] | str | os.PathLike | None = None,
        channels: str = "mono",
        crop: str = "random",
        transform: Callable | None = None,
        skip_bad: bool = False,
        split: str | Iterable[str] | None = None,
        allow_unknown: bool = False,
        seed: int | None = None,
        return_length: bool | None = None,
        progress: bool = False,
    ):
        sample_rate = _check_arguments(sample_rate, clip_s, channels, crop, transform)
        self.sample_rate = sample_rate
        self.clip_s = clip_s
        self.clip_samples = None if clip_s is None else int(round(clip_s * sample_rate))
        self.channels = channels
        self.crop = crop
        self.transform = transform
        self._transform_takes_generator = transform is not None and accepts_keyword(transform, "generator")
        self.skip_bad = skip_bad
        self.allow_unknown = allow_unknown
        self.seed = seed
        self.epoch = 0
        if return_length is not None:
            warnings.warn("ManifestDataset(return_length=...) is deprecated: items are always (waveform, label, length)",
                          DeprecationWarning, stacklevel=2)
        self.return_length = return_length is not False
        self._scan_bad: list[dict] = []  # clips the header scan left out: {"source", "audio_filepath", "error"}

        records, sources, name = self._load_records(manifest)
        if not records:
            raise ValueError(f"manifest {name} has no clips")
        if labels is None:
            self.labels = sorted({r["label"] for r in records})
        elif isinstance(labels, (str, os.PathLike)):
            self.labels = load_labels(labels)
        else:
            self.labels = _check_labels(list(labels), "labels")
        _check_unicode_twins(self.labels, name)
        self.label_to_index = {lab: i for i, lab in enumerate(self.labels)}
        if split is not None:
            records, sources = _select_split(records, sources, split, name)
        records, sources = self._drop_unknown_labels(records, sources)
        self.n_selected = len(records)
        if skip_bad:
            records, sources = self._scan_headers(records, sources, progress, name)
        if not records:
            raise ValueError(f"manifest {name}: no usable clips left (unknown labels: {self.unknown}, "
                             f"bad: {len(self._scan_bad)}{': ' + self._scan_bad[0]['error'] if self._scan_bad else ''})")
        self.records = records  # the record dicts (absolute paths), as other code reads them
        self.clips = [Clip.from_dict(r) for r in records]
        self.sources = sources
        self.targets = [self.label_to_index[r["label"]] for r in records]
        # 1 = this clip failed when read (skip_bad); in shared memory, so that DataLoader workers' marks
        # reach this process (where shared memory is refused, a worker's finds stay in its warnings)
        self._failed = torch.zeros(len(records), dtype=torch.uint8)
        if skip_bad:
            try:
                self._failed.share_memory_()
            except RuntimeError:
                pass
        self._reasons: dict[int, str] = {}  # failures seen in this process

    # -- construction helpers
    @staticmethod
    def _load_records(manifest) -> tuple[list[dict], list[str], str]:
        if isinstance(manifest, (str, os.PathLike)):
            pairs = list(iter_manifest(manifest, line_numbers=True))
            return [r for _, r in pairs], [f"{manifest}:{n}" for n, _ in pairs], str(manifest)
        if isinstance(manifest, dict) or not isinstance(manifest, Sequence):
            raise ValueError(f"manifest must be a path or a list of record dicts, got {type(manifest).__name__}")
        records = [validate_record(r, f"record {i}") for i, r in enumerate(manifest)]
        return records, [f"record {i}" for i in range(len(records))], "(list of records)"

    def _drop_unknown_labels(self, records: list[dict], sources: list[str]) -> tuple[list[dict], list[str]]:
        """Records whose label is in the label map; others raise, or with ``allow_unknown`` are
        counted in ``self.unknown`` / ``self.unknown_labels`` and left out."""
        self.unknown = 0
        self.unknown_labels: Counter = Counter()
        kept_records, kept_sources = [], []
        nfc = {unicodedata.normalize("NFC", lab): lab for lab in self.labels}
        for rec, src in zip(records, sources):
            if rec["label"] not in self.label_to_index:
                same = nfc.get(unicodedata.normalize("NFC", rec["label"]))
                if same is not None:  # the same text in another Unicode form: never a class of its own
                    raise ValueError(
                        f"{src}: label {rec['label']!r} is the label map's {same!r} written in another Unicode "
                        f"form ({_unicode_form(rec['label'])} against {_unicode_form(same)}; macOS file names are "
                        f"NFD): write both the same way, e.g. normalise the manifest's labels to NFC")
                if not self.allow_unknown:
                    raise ValueError(
                        f"{src}: label {rec['label']!r} is not in the label map ({len(self.labels)} labels: "
                        f"{self.labels[:20]}{' ...' if len(self.labels) > 20 else ''}); to skip such clips add "
                        f"--allow-unknown (allow_unknown=True in Python)"
                    )
                self.unknown += 1
                self.unknown_labels[rec["label"]] += 1
                continue
            kept_records.append(rec)
            kept_sources.append(src)
        return kept_records, kept_sources

    def _scan_headers(self, records, sources, progress, name: str):
        """The records whose file opens and holds the clip; the others go to ``_scan_bad``, with one
        warning for all of them."""
        keep_r, keep_s = [], []
        for rec, src in zip(tqdm(records, disable=not progress, desc="scan", unit="clip"), sources):
            try:
                meta = audio.info(rec["audio_filepath"])
                Clip.from_dict(rec).frames(meta.sample_rate, meta.frames)
            except (ValueError, FileNotFoundError) as e:
                self._scan_bad.append({"source": src, "audio_filepath": rec["audio_filepath"], "error": str(e)})
                continue
            keep_r.append(rec)
            keep_s.append(src)
        if self._scan_bad:
            first = self._scan_bad[0]
            warnings.warn(f"{name}: skipping {len(self._scan_bad)} of {len(records)} clips that cannot be used "
                          f"(first: {first['source']}: {first['error']}); see ManifestDataset.skipped",
                          SkippedClipWarning, stacklevel=3)
        return keep_r, keep_s

    # -- public helpers
    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """Change the epoch mixed into per-example seeds when ``seed`` was given."""
        self.epoch = int(epoch)

    @property
    def skipped(self) -> dict[str, str]:
        """``{"manifest.jsonl:LINE": reason}``: every clip left out by ``skip_bad``, once, whether the
        header scan, this process or a DataLoader worker found it (a worker's reason is found again
        here by decoding the clip)."""
        out = {b["source"]: b["error"] for b in self._scan_bad}
        for i in torch.nonzero(self._failed).flatten().tolist():
            if i not in self._reasons:
                self._reasons[i] = self._failure_reason(i)
            out[self.sources[i]] = self._reasons[i]
        return out

    @property
    def bad(self) -> list[dict]:
        """:attr:`skipped` as ``{"source", "audio_filepath", "error"}`` dicts."""
        reasons = self.skipped
        failed = torch.nonzero(self._failed).flatten().tolist()
        return [*self._scan_bad, *({"source": self.sources[i], "audio_filepath": self.clips[i].audio_filepath,
                                    "error": reasons[self.sources[i]]} for i in failed)]

    def _failure_reason(self, index: int) -> str:
        """Why clip ``index`` cannot be read, found by decoding it whole in this process."""
        clip = self.clips[index]
        try:
            audio.load(clip.audio_filepath, clip.offset_s or 0.0, clip.duration_s)
        except (ValueError, FileNotFoundError) as e:
            return str(e)
        return f"{clip.audio_filepath} could not be read in a DataLoader worker (it reads now: a passing failure?)"

    def class_counts(self) -> list[int]:
        """Number of clips per label index."""
        counts = Counter(self.targets)
        return [counts.get(i, 0) for i in range(len(self.labels))]

    # -- reading
    def _resampler(self, orig_sr: int) -> T.Resample:
        return _cached_resampler(orig_sr, self.sample_rate)

    def _read(self, f: audio.AudioReader, first: int, count: int) -> torch.Tensor:
        """Frames ``first .. first + count`` of the open file as ``(C, count)``, downmixed if mono.

        Raises ``_ShorterThanHeader`` when the read found that the file (compressed) ends before
        its header said: the crop was placed on a wrong length and :meth:`load_clip` places it again."""
        known = f.frames
        wav = f.read(first, count)
        if f.frames < known:
            raise _ShorterThanHeader
        if self.channels == "mono" and wav.shape[0] > 1:
            wav = audio.to_mono(wav)
        return wav

    def _crop_start(self, n_available: int, length: int, generator: torch.Generator | None) -> int:
        room = n_available - length
        if self.crop == "start" or room <= 0:
            return 0
        if self.crop == "center":
            return room // 2
        return int(torch.randint(0, room + 1, (1,), generator=generator).item())

    def load_clip(self, index: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Decode, resample, downmix and crop/pad clip ``index`` (one open of the file).

        Equals resampling the whole clip (``audio.resample``) and then cutting ``clip_samples``
        samples at the crop position (up to float rounding): only the needed frames plus a
        filter margin are decoded. With resampling, crop starts are on the grid where input and
        output samples coincide (``sr / gcd(sr, sample_rate)`` input samples, 10 ms for 44.1 kHz
        → 16 kHz).

        Returns:
            ``(waveform (C, clip_samples) float32, real_length)`` where ``real_length`` counts the
            samples before the zero padding.
        """
        clip = self.clips[index]
        with audio.open_audio(clip.audio_filepath) as f:
            try:
                return self._load_open(f, clip, generator)
            except _ShorterThanHeader:  # a compressed file that ends early: crop again inside what decodes
                return self._load_open(f, clip, generator)

    def _load_open(self, f: audio.AudioReader, clip: Clip, generator) -> tuple[torch.Tensor, int]:
        first, n_clip = clip.frames(f.sample_rate, f.frames)
        if f.sample_rate == self.sample_rate:
            return self._load_native(f, first, n_clip, generator)
        return self._load_resampled(f, first, n_clip, generator)

    def _pad(self, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(wav zero-padded at the end to clip_samples, its real length)``."""
        return audio.fix_length(wav, self.clip_samples, offset=0), wav.shape[-1]

    def _load_native(self, f: audio.AudioReader, first: int, n_clip: int, generator) -> tuple[torch.Tensor, int]:
        """The clip of a file already at the output rate: read only the crop's frames."""
        length = self.clip_samples
        if length is None:
            return self._read(f, first, n_clip), n_clip
        start = self._crop_start(n_clip, length, generator)
        return self._pad(self._read(f, first + start, min(length, n_clip - start)))

    def _load_resampled(self, f: audio.AudioReader, first: int, n_clip: int, generator) -> tuple[torch.Tensor, int]:
        """The clip of a file at another rate: resample only the crop (plus a filter margin) when the
        crop starts can be put on the grid where input and output samples coincide."""
        sr, target, length = f.sample_rate, self.sample_rate, self.clip_samples
        g = math.gcd(sr, target)
        step_in, step_out = sr // g, target // g  # input / output samples that span the same time
        n_out = -(-n_clip * target // sr)  # torchaudio's output length for the whole clip
        if length is None or n_out <= length or step_in > _MAX_ALIGN_STEP:
            wav = self._resampler(sr)(self._read(f, first, n_clip))
            if length is None:
                return wav, wav.shape[-1]
            start = self._crop_start(wav.shape[-1], length, generator)
            return self._pad(wav[..., start : start + length])
        q = self._crop_start(n_out, length, generator) // step_out * step_out  # output start, on the grid
        s0 = q // step_out * step_in  # the same instant in input samples
        half_width = math.ceil(_LOWPASS_WIDTH * sr / (min(sr, target) * _ROLLOFF)) + 2
        margin = -(-half_width // step_in) * step_in  # grid-aligned filter margin (input samples)
        a = max(0, s0 - margin)
        b = min(n_clip, s0 + -(-length * sr // target) + margin + step_in)  # + a block: kernels work per block
        wav = self._resampler(sr)(self._read(f, first + a, b - a))
        j0 = (s0 - a) // step_in * step_out
        wav = wav[..., j0 : j0 + length]
        return self._pad(wav[..., : min(wav.shape[-1], n_out - q)])

    def _transformed(self, wav: torch.Tensor, real: int, generator) -> tuple[torch.Tensor, int]:
        """The transform of the clip's real samples, zero-padded again after it: noise is scaled
        to the clip, not to its padding, and the padding stays silent."""
        out, moved = self._call_transform(wav[..., :real], generator)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise ValueError(f"transform must return a (C, T) tensor, got {type(out).__name__} {getattr(out, 'shape', '')}")
        real = out.shape[-1] if moved is None else min(moved, out.shape[-1])
        if self.clip_samples is None:
            return out, real
        return audio.fix_length(out, self.clip_samples, offset=0), min(real, self.clip_samples)

    def _call_transform(self, clip: torch.Tensor, generator) -> tuple[object, int | None]:
        """``(transform(clip), where its real samples end)``: the end as the transform's
        ``call_with_lengths`` reports it (an augmentation that moves it, e.g. ``TimeStretch``), else
        ``None`` (the output's own length)."""
        call = getattr(self.transform, "call_with_lengths", None)
        if callable(call):
            out, lengths = call(clip, generator=generator)
            return out, None if lengths is None else int(lengths[0])
        if self._transform_takes_generator:
            return self.transform(clip, generator=generator), None
        return self.transform(clip), None

    def _generator(self, index: int) -> torch.Generator | None:
        if self.crop != "random" and not self._transform_takes_generator:
            return None
        if self.seed is not None:
            seed = mix_seed(self.seed, self.epoch, index)
        else:
            seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's RNG: seeded per worker by the DataLoader
        return torch.Generator().manual_seed(seed)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        index %= len(self)
        if self._failed[index]:  # found bad before (this epoch or an earlier one): skipped, not warned again
            return None
        generator = self._generator(index)
        try:
            wav, real = self.load_clip(index, generator)
        except (ValueError, FileNotFoundError) as e:
            message = f"{self.sources[index]}: {e}"
            if not self.skip_bad:
                raise (ClipNotFoundError if isinstance(e, FileNotFoundError) else ClipError)(message) from None
            self._failed[index] = 1
            self._reasons[index] = str(e)
            warnings.warn(f"skipping bad clip {message}", SkippedClipWarning, stacklevel=2)
            return None
        if self.transform is not None:
            wav, real = self._transformed(wav, real, generator)
        label = self.targets[index]
        return (wav, label, real) if self.return_length else (wav, label)


# ----------------------------------------------------------------------------- batching
def _waveform_of(item, position: int) -> torch.Tensor:
    wav = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(wav, torch.Tensor) or wav.dim() not in (1, 2):
        raise ValueError(f"batch item {position} must be a waveform (C, T) or (T,), or a tuple starting with one; "
                         f"got {type(wav).__name__} {tuple(getattr(wav, 'shape', ()))}")
    return wav.unsqueeze(0) if wav.dim() == 1 else wav


def collate(batch: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack examples into ``(waveforms (B, C, T) float32, labels (B,) int64, lengths (B,) int64)``.

    The one padding collate of the package (``DataLoader(..., collate_fn=collate)``). Items are a
    bare waveform ``(C, T)`` or ``(T,)`` (label ``-1``), ``(waveform, label)`` or
    ``(waveform, label, length)``; ``None`` items (bad clips skipped by ``skip_bad``) are dropped.
    Shorter waveforms are zero-padded at the end to the longest; ``lengths`` is each item's real
    (unpadded) sample count — its ``length`` when given, else its own ``T``. A ``(T,)`` waveform
    counts as one channel.

    Raises:
        ValueError: an item that is not a waveform or a tuple starting with one, or items with
            different channel counts (use ``channels="mono"``).
    """
    items = [b for b in batch if b is not None]
    if not items:
        return torch.zeros(0, 1, 0), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)
    waves = [_waveform_of(it, i) for i, it in enumerate(items)]
    n_channels = {w.shape[0] for w in waves}
    if len(n_channels) > 1:
        raise ValueError(f"cannot batch clips with different channel counts {sorted(n_channels)}; use channels='mono'")
    t_max = max(w.shape[-1] for w in waves)
    out = torch.zeros(len(waves), waves[0].shape[0], t_max, dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, :, : w.shape[-1]] = w
    tuples = [it if isinstance(it, (tuple, list)) else (it,) for it in items]
    labels = torch.tensor([int(it[1]) if len(it) > 1 else -1 for it in tuples], dtype=torch.int64)
    lengths = torch.tensor([int(it[2]) if len(it) > 2 else w.shape[-1] for it, w in zip(tuples, waves)], dtype=torch.int64)
    return out, labels, lengths


# ----------------------------------------------------------------------------- sampling
class ClassBalancedSampler(torch.utils.data.WeightedRandomSampler):
    """``torch.utils.data.WeightedRandomSampler`` with weights 1 / (size of the example's class),
    so each class is drawn equally often on average.

    Args:
        targets: a dataset with ``.targets`` (e.g. :class:`ManifestDataset`) or a sequence of label
            indices.
        num_samples: draws per epoch (default: the dataset size).
        replacement: draw with replacement (needed to oversample small classes).
        generator: ``torch.Generator``; default: torch's global RNG at each ``iter``.

    Attributes:
        weights: ``(N,)`` float64, 1 / class count of each example.

    Raises:
        ValueError: no targets, a negative target, ``num_samples <= 0``, or more draws than
            examples without replacement.
    """

    def __init__(self, targets, num_samples: int | None = None, replacement: bool = True,
                 generator: torch.Generator | None = None):
        targets = getattr(targets, "targets", targets)
        t = torch.as_tensor(list(targets), dtype=torch.int64)
        if t.numel() == 0:
            raise ValueError("ClassBalancedSampler needs at least one target")
        if (t < 0).any():
            raise ValueError("targets must be label indices >= 0")
        num_samples = len(t) if num_samples is None else int(num_samples)
        if num_samples <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if not replacement and num_samples > len(t):
            raise ValueError(f"num_samples={num_samples} > {len(t)} examples needs replacement=True")
        weights = 1.0 / torch.bincount(t)[t].to(torch.float64)  # (N,)
        super().__init__(weights, num_samples, replacement=replacement, generator=generator)
