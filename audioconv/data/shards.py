"""WebDataset shards: clips of a manifest packed into tar archives (:func:`write_shards`), and read back
for training as balanced, exact epochs across processes and DataLoader workers (:class:`ShardClips`,
:class:`ShardLoader`). Needs the optional ``webdataset`` package (``pip install 'audioconv[shards]'``).

**What a shard holds.** One sample per clip, two tar members named by a 9-digit key::

    000000042.wav    the audio file's bytes exactly as stored (WAV, FLAC, OGG, MP3: no re-encoding)
    000000042.json   {"label", "duration", "offset", "split", "audio_filepath" (the original path),
                      "source" ("manifest.jsonl:LINE"), "sample_rate" (the file's Hz), ...}

``offset`` / ``duration`` (seconds) mean what they mean in the manifest: the clip is that range of
the stored file, so a clip read from a shard is the clip read from the file. A file shared by
several clips is stored once per clip. Next to the shards, ``shards.json`` (the *index*) lists every
shard with its clip count, and the class names of the manifest (``{"labels": [...], "shards": [...]}``,
so :func:`audioconv.data.load_labels` reads it too). Training needs the index: the clip counts
let every process know, before reading a byte, how many batches each one will get.

**How an epoch is read** (``world_size`` processes, ``W`` DataLoader workers each):

1. the shards are put in a seeded order (``seed``, ``epoch``); each goes, in that order, to the
   process holding the fewest clips so far, so no two processes read the same shard in an epoch
   and the processes' clip counts differ by less than one shard;
2. a process's shards are dealt to its workers (``w::W``); each worker reads its shards in turn
   through a shuffle buffer of ``shuffle_buffer`` clips (seeded by ``seed, epoch, rank, worker``);
3. the workers' clips are taken ``batch_size`` at a time, worker after worker (a fixed order,
   whatever order they arrive in), and cut into batches;
4. every process takes the same number of batches, ``min over processes and epochs of its clips
   // batch_size``: DistributedDataParallel needs equal steps. Clips beyond that are left out of
   that epoch (at most about one shard per process when the shards hold similar numbers of clips;
   :attr:`ShardClips.plan` says how many); none is seen twice.

Resuming after ``k`` batches replays the same order and skips the first ``k`` batches' clips without
decoding them (their bytes are read again). It is exact for the same number of processes and of
workers; with others the epoch's order changes (no clip is lost from later epochs).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import random
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import torch
from tqdm.auto import tqdm

from audioconv.io import audio
from audioconv.io.files import atomic_write, write_json
from audioconv.io.manifest import iter_manifest
from audioconv.utils import mix_seed

__all__ = ["INDEX_NAME", "parse_size", "is_shard_spec", "write_shards", "ShardSet", "open_shard_set",
           "assign_shards", "piece_plan", "ShardClips", "ShardLoader"]

INDEX_NAME = "shards.json"
_FORMAT, _VERSION = "audioconv-shards", 1
_BLOCK, _RECORD = 512, 20 * 512  # tar block and record sizes (tarfile pads an archive to a record)
_ORDER, _BUFFER = 11, 12  # streams of mix_seed(seed, ...) for the shard order and the shuffle buffers
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _wds():
    """The parts of the ``webdataset`` package used here (``TarWriter``, ``gopen``, ``expand_urls``,
    ``tar_file_expander``, ``group_by_keys``, ``shuffle``), or a one-line error saying how to install it."""
    try:
        part = {name: importlib.import_module(f"webdataset.{name}")  # (the package's gopen names a function)
                for name in ("filters", "gopen", "shardlists", "tariterators", "writer")}
    except ModuleNotFoundError:
        raise RuntimeError("WebDataset shards need the webdataset package: pip install 'audioconv[shards]'") from None
    filters, gopen, shardlists, tariterators, writer = part.values()
    return SimpleNamespace(TarWriter=writer.TarWriter, gopen=gopen.gopen, expand_urls=shardlists.expand_urls,
                           tar_file_expander=tariterators.tar_file_expander, group_by_keys=tariterators.group_by_keys,
                           shuffle=filters.shuffle)


# =============================================================================== names and sizes
def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``"256MB"`` (10^6), ``"1.5GiB"`` (2^30), ``"4096"``.

    Raises:
        ValueError: not a positive number with one of the units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"size must be a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 256MB; got {text!r}")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ValueError(f"size must be > 0 bytes, got {text!r}")
    return value


def is_shard_spec(spec) -> bool:
    """Whether ``spec`` names tar shards (``DIR/shard-{000000..000123}.tar``, ``a.tar::b.tar``) rather than a manifest."""
    return isinstance(spec, str) and all(part.strip().endswith(".tar") for part in spec.split("::"))


def _tar_member_bytes(n: int) -> int:
    return _BLOCK + -(-n // _BLOCK) * _BLOCK


def _tar_bytes(payload: int) -> int:
    """Size of a tar file whose members take ``payload`` bytes (headers and padding included)."""
    return -(-(payload + 2 * _BLOCK) // _RECORD) * _RECORD


def _check_pattern(pattern: str) -> None:
    """One printf integer field (``%06d``) in the file name, none in the folder."""
    name, folder = Path(pattern).name, str(Path(pattern).parent)
    fields = re.findall(r"%0?\d*d", name)
    if len(fields) != 1 or name.replace(fields[0], "").count("%") or "%" in folder or "{split}" in folder:
        raise ValueError(f"output pattern {pattern!r} must name the shards with one integer field in the file name, "
                         f"e.g. DIR/shard-%06d.tar or DIR/{{split}}-%06d.tar")
    if not name.endswith(".tar"):
        raise ValueError(f"output pattern {pattern!r} must end with .tar")


# =============================================================================== writing
class _Abort(Exception):
    """Passed to a shard's ``atomic_write`` so that it removes the unfinished file."""


class _Sink:
    """The shards of one set, written one after the other, each atomically."""

    def __init__(self, pattern: str, max_bytes: int, max_clips: int):
        self.pattern, self.max_bytes, self.max_clips = pattern, max_bytes, max_clips
        self.stack, self.writer, self.written = contextlib.ExitStack(), None, []
        self.payload = self.clips = self.seconds = 0

    def add(self, key: str, members: dict[str, bytes], seconds: float) -> None:
        size = sum(_tar_member_bytes(len(v)) for v in members.values())
        full = self.clips and (_tar_bytes(self.payload + size) > self.max_bytes or self.clips == self.max_clips)
        if self.writer is None or full:
            self.close()
            path = self.pattern % len(self.written)
            tar = self.stack.enter_context(atomic_write(path, "wb"))
            self.writer = _wds().TarWriter(tar, encoder=False, mtime=0)  # an int: a float mtime adds a PAX header per member
            self.written.append({"name": Path(path).name, "clips": 0, "bytes": 0, "seconds": 0.0})
        self.writer.write({"__key__": key, **members})
        self.payload += size
        self.clips += 1
        self.seconds += seconds

    def abort(self) -> None:
        """After an error: the shard being written is dropped (``atomic_write`` removes its temporary file)."""
        if self.writer is not None:
            tar = self.writer.tarstream
            tar.closed = tar.fileobj.closed = True  # nothing more is written, not even at garbage collection
            self.writer = None
        with contextlib.suppress(_Abort):
            self.stack.__exit__(_Abort, _Abort(), None)

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        self.stack.close()  # the atomic rename
        self.written[-1].update(clips=self.clips, bytes=_tar_bytes(self.payload), seconds=round(self.seconds, 3))
        self.writer, self.payload, self.clips, self.seconds = None, 0, 0, 0.0


def _sets(pairs: list[tuple[str, dict]], pattern: str, split: str | None, name: str) -> dict[str, list]:
    """``{split or "all": [(source, record)]}``: the shard sets the pattern and ``split`` ask for."""
    splits = sorted({str(r.get("split")) for _, r in pairs})
    if split is not None:
        pairs = [(s, r) for s, r in pairs if r.get("split") == split]
        if not pairs:
            raise ValueError(f"manifest {name} has no clips with split {split!r} (splits present: {splits})")
        return {split: pairs}
    if "{split}" in pattern:
        missing = [s for s, r in pairs if "split" not in r]
        if missing:
            raise ValueError(f"{missing[0]}: no 'split' key, but the output pattern {pattern!r} names {{split}}")
        return {s: [(src, r) for src, r in pairs if str(r["split"]) == s] for s in splits}
    if len(splits) > 1:
        raise ValueError(f"manifest {name} has the splits {splits}: put {{split}} in the output pattern "
                         f"(DIR/{{split}}-%06d.tar) or choose one with --split")
    return {"all": pairs}


def _sample(record: dict, source: str) -> tuple[dict[str, bytes], float]:
    """The tar members of one clip and its length in seconds; the clip's file and range checked."""
    path = Path(record["audio_filepath"])
    with audio.open_audio(path) as f:
        _, count = audio.clip_frames(record.get("offset"), record.get("duration"), f.sample_rate, f.frames, path)
        sample_rate = f.sample_rate
    suffix = path.suffix.lower().lstrip(".")
    ext = suffix if re.fullmatch(r"[a-z0-9]+", suffix or "") and suffix != "json" else "audio"
    meta = {**record, "audio_filepath": str(path), "source": source, "sample_rate": sample_rate}
    return {ext: path.read_bytes(), "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")}, count / sample_rate


def _write_set(pairs, pattern: str, max_bytes: int, max_clips: int, skip_bad: bool, skipped: dict,
               progress: bool, desc: str) -> list[dict]:
    """Write one set of shards; returns their index entries."""
    sink, n = _Sink(pattern, max_bytes, max_clips), 0
    try:
        for source, record in tqdm(pairs, desc=desc, unit="clip", disable=not progress):
            try:
                members, seconds = _sample(record, source)
            except (ValueError, FileNotFoundError) as e:
                if not skip_bad:
                    raise type(e)(f"{source}: {e}") from None
                skipped[source] = str(e)
                continue
            sink.add(f"{n:09d}", members, seconds)
            n += 1
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return sink.written


def _name_regex(name: str) -> re.Pattern:
    """The file names a shard pattern such as ``train-%06d.tar`` writes."""
    head, tail = re.split(r"%0?\d*d", name, maxsplit=1)
    return re.compile(re.escape(head) + r"\d+" + re.escape(tail) + "$")


def _merge_index(folder: Path, labels: list[str], written: list[dict], patterns: list[str]) -> tuple[Path, list[str]]:
    """Write ``folder/shards.json``: earlier entries kept unless a pattern written now names them
    (those no longer written are dropped from the index and returned)."""
    path = folder / INDEX_NAME
    entries: list[dict] = []
    if path.exists():
        old = _read_index_json(path.read_bytes(), str(path))
        if old["labels"] != labels:
            raise ValueError(f"{path} lists the labels {old['labels']}, this manifest has {labels}; "
                             f"write these shards to another folder")
        entries = old["shards"]
    regexes = [_name_regex(Path(p).name) for p in patterns]
    new_names = {e["name"] for e in written}
    dropped = [e["name"] for e in entries if e["name"] not in new_names and any(r.match(e["name"]) for r in regexes)]
    kept = [e for e in entries if e["name"] not in new_names and e["name"] not in dropped]
    shards = sorted(kept + written, key=lambda e: e["name"])
    write_json(path, {"format": _FORMAT, "version": _VERSION, "labels": labels, "shards": shards})
    return path, dropped


def write_shards(manifest: str | Path, pattern: str, max_size: int | str = "256MB", max_clips: int = 0,
                 split: str | None = None, skip_bad: bool = False, progress: bool = False) -> dict:
    """Pack the clips of a manifest into WebDataset tar shards and write the index ``shards.json``.

    Args:
        manifest: JSONL manifest (:mod:`audioconv.io.manifest`).
        pattern: shard paths, one printf integer field: ``DIR/shard-%06d.tar``; with ``{split}``
            (``DIR/{split}-%06d.tar``) one set of shards per split of the manifest.
        max_size: largest shard in bytes (``"256MB"``; :func:`parse_size`), tar headers included; a
            shard closes before a clip would take it past that (a single larger clip gets a shard of its own).
        max_clips: at most this many clips per shard (0 = no limit).
        split: only the clips of this split.
        skip_bad: leave out clips whose file is missing, unreadable or too short for the clip
            (listed in ``skipped``) instead of raising.
        progress: tqdm bar.

    Returns:
        ``{"index": path, "labels", "sets": {split or "all": {"shards": [{"name", "clips", "bytes",
        "seconds"}], "clips", "bytes", "spec"}}, "skipped": {"manifest:line": reason},
        "repeated_files": files stored more than once, "dropped": index entries of earlier shards
        this pattern no longer writes}``. ``spec`` is the brace pattern to give ``--train``.

    Raises:
        ValueError / FileNotFoundError: a bad pattern or size, an empty manifest or split, a bad clip
            (naming ``manifest:line``) unless ``skip_bad``, labels that differ from an index already in the folder.
    """
    _check_pattern(pattern)
    max_bytes = parse_size(max_size)
    if int(max_clips) < 0:
        raise ValueError(f"max_clips must be >= 0, got {max_clips}")
    pairs = [(f"{manifest}:{n}", r) for n, r in iter_manifest(manifest, line_numbers=True)]
    if not pairs:
        raise ValueError(f"manifest {manifest} has no clips")
    labels = sorted({r["label"] for _, r in pairs})
    sets, skipped, out = _sets(pairs, pattern, split, str(manifest)), {}, {}
    for name, members in sets.items():
        set_pattern = pattern.replace("{split}", name)
        written = _write_set(members, set_pattern, max_bytes, int(max_clips), skip_bad, skipped, progress,
                             f"shards {name}")
        if not written:
            raise ValueError(f"no usable clips left for the shards of {name!r} (all {len(members)} skipped)")
        field = re.findall(r"%0?\d*d", Path(set_pattern).name)[0]
        width = len(Path(set_pattern % 0).name) - len(Path(set_pattern).name) + len(field)
        last = f"{len(written) - 1:0{width}d}"
        spec = set_pattern.replace(field, f"{{{0:0{width}d}..{last}}}" if len(written) > 1 else last)
        out[name] = {"shards": written, "clips": sum(s["clips"] for s in written),
                     "bytes": sum(s["bytes"] for s in written), "spec": spec}
    folder = Path(pattern).parent
    index, dropped = _merge_index(folder, labels, [s for v in out.values() for s in v["shards"]],
                                  [pattern.replace("{split}", n) for n in sets])
    files = Counter(str(r["audio_filepath"]) for v in sets.values() for _, r in v)
    return {"index": str(index), "labels": labels, "sets": out, "skipped": skipped,
            "repeated_files": sum(1 for c in files.values() if c > 1), "dropped": dropped}


# =============================================================================== the index
def _read_index_json(data: bytes, where: str) -> dict:
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: not a shard index (bad JSON: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT or not isinstance(obj.get("shards"), list):
        raise ValueError(f"{where}: not a shard index written by `audioconv shards` (no format={_FORMAT!r})")
    if int(obj.get("version", 0)) > _VERSION:
        raise ValueError(f"{where}: shard index version {obj.get('version')}; this audioconv reads up to {_VERSION}")
    return obj


@dataclass(frozen=True)
class ShardSet:
    """Shards named by a spec: their URLs (in the spec's order), clip counts (from the index) and labels."""

    spec: str
    urls: tuple[str, ...]
    clips: tuple[int, ...]
    labels: tuple[str, ...]

    @property
    def total(self) -> int:
        return sum(self.clips)

    @property
    def offsets(self) -> list[int]:
        """Index of each shard's first clip among all clips of the set."""
        out, n = [], 0
        for c in self.clips:
            out.append(n)
            n += c
        return out


def open_shard_set(spec: str) -> ShardSet:
    """The shards ``spec`` names (brace ranges ``{000000..000123}``, ``::``-separated lists; local paths
    or any URL ``webdataset.gopen`` opens), with their clip counts and labels read from the index
    ``shards.json`` in each shard's folder.

    Raises:
        FileNotFoundError: no index next to a shard.
        ValueError: a shard the index does not list, a shard named twice, indexes whose labels differ.
        RuntimeError: webdataset is not installed.
    """
    wds = _wds()
    urls = [u.strip() for u in wds.expand_urls(spec)]
    if not urls:
        raise ValueError(f"shard spec {spec!r} names no shards")
    twice = [u for u, c in Counter(urls).items() if c > 1]
    if twice:
        raise ValueError(f"shard spec {spec!r} names {twice[0]} more than once")
    indexes: dict[str, dict] = {}
    clips, labels = [], None
    for url in urls:
        folder, _, name = url.rpartition("/")
        where = f"{folder}/{INDEX_NAME}" if folder else INDEX_NAME
        if where not in indexes:
            try:
                with wds.gopen(where, "rb") as f:
                    indexes[where] = _read_index_json(f.read(), where)
            except (FileNotFoundError, IOError) as e:
                if isinstance(e, ValueError):
                    raise
                raise FileNotFoundError(f"no shard index {where} next to {url} (shards need the {INDEX_NAME} "
                                        f"that `audioconv shards` writes: clip counts and labels)") from None
        index = indexes[where]
        if labels is not None and index["labels"] != labels:
            raise ValueError(f"{where} lists other labels than the first index of {spec!r}")
        labels = index["labels"]
        entry = next((e for e in index["shards"] if e.get("name") == name), None)
        if entry is None:
            raise ValueError(f"{url}: not listed in {where} (rewrite the shards with `audioconv shards`)")
        clips.append(int(entry["clips"]))
    return ShardSet(spec, tuple(urls), tuple(clips), tuple(labels))


# =============================================================================== the epoch plan
def assign_shards(clips: list[int] | tuple[int, ...], world_size: int, order: list[int]) -> list[list[int]]:
    """Shards of each process: walking ``order``, each shard goes to the process holding the fewest
    clips so far (ties: the lowest rank). Returns ``[[shard index, ...] per rank]``."""
    ranks, held = [[] for _ in range(world_size)], [0] * world_size
    for i in order:
        r = min(range(world_size), key=lambda k: (held[k], k))
        ranks[r].append(i)
        held[r] += clips[i]
    return ranks


def shard_order(n_shards: int, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The epoch's shard order: a permutation seeded by ``(seed, epoch)``, or ``0..n-1``."""
    if not shuffle:
        return list(range(n_shards))
    g = torch.Generator().manual_seed(mix_seed(seed, _ORDER, epoch))
    return torch.randperm(n_shards, generator=g).tolist()


def piece_plan(worker_clips: list[int], chunk: int, start: int, stop: int) -> list[tuple[int, int, int]]:
    """How a process's stream is made of its workers' clips: ``[(worker, first local clip, count)]``.

    The stream takes ``chunk`` clips of worker 0, then of worker 1, ... and round again (a worker
    that has run out is passed over); the pieces cover the stream's positions ``start .. stop``.
    """
    pieces, pos = [], 0
    rounds = max((-(-c // chunk) for c in worker_clips), default=0)
    for j in range(rounds):
        for w, c in enumerate(worker_clips):
            n = min(chunk, c - j * chunk)
            if n <= 0:
                continue
            a, b = max(pos, start), min(pos + n, stop)
            if a < b:
                pieces.append((w, j * chunk + a - pos, b - a))
            pos += n
            if pos >= stop:
                return pieces
    return pieces


@dataclass(frozen=True)
class EpochPlan:
    """One process's epoch: the shards of each worker and the pieces of its stream (:func:`piece_plan`)."""

    epoch: int
    worker_shards: tuple[tuple[int, ...], ...]
    pieces: tuple[tuple[int, int, int], ...]
    clips: int  # clips of the process's shards
    used: int  # clips the pieces cover

# =============================================================================== reading
class ShardClips(torch.utils.data.IterableDataset):
    """The clips of a set of shards as ``(waveform (1, clip_samples) float32, label index, length)``,
    one process's share of an epoch (module docstring).

    Args:
        shards: a :class:`ShardSet` or a spec for :func:`open_shard_set`.
        sample_rate: output rate in Hz (clips are resampled, downmixed to mono).
        clip_s: output length in seconds; longer clips are cropped, shorter ones zero-padded at the end.
        labels: class names (index = position); default the index's labels. Every label of the
            shards must be in it.
        crop: ``"random"`` (a pure function of ``seed, epoch, clip``), ``"center"`` or ``"start"``.
        rank, world_size: this process among the training processes.
        shuffle: a seeded shard order per epoch and the shuffle buffer; ``False``: the spec's order, no buffer.
        shuffle_buffer: clips each worker holds to shuffle its stream (1 or 0 = none).
        seed: of the shard order, the buffers and the crops.
        skip_bad: leave out clips that do not decode (listed in :attr:`skipped`) instead of raising.

    Iterating yields *pieces* ``(worker, piece number, waveforms (n, 1, T), labels (n,), lengths (n,),
    kept (planned,) bool)`` for :class:`ShardLoader`, after :meth:`plan_epoch`.

    Attributes:
        n_selected: clips in the shards. plan: the last :class:`EpochPlan`.
    """

    def __init__(self, shards: ShardSet | str, sample_rate: int, clip_s: float, labels=None, crop: str = "random",
                 rank: int = 0, world_size: int = 1, shuffle: bool = True, shuffle_buffer: int = 1000, seed: int = 0,
                 skip_bad: bool = False):
        self.shards = shards if isinstance(shards, ShardSet) else open_shard_set(shards)
        if crop not in ("random", "center", "start"):
            raise ValueError(f"crop must be 'random', 'center' or 'start', got {crop!r}")
        if int(shuffle_buffer) < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 clips, got {shuffle_buffer}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of {world_size} processes")
        self.sample_rate, self.clip_samples = int(sample_rate), int(round(clip_s * sample_rate))
        self.labels = list(self.shards.labels if labels is None else labels)
        missing = sorted(set(self.shards.labels) - set(self.labels))
        if missing:
            raise ValueError(f"shards {self.shards.spec!r} hold labels that are not in the label list: {missing}")
        self.label_to_index = {lab: i for i, lab in enumerate(self.labels)}
        self.crop, self.rank, self.world_size = crop, int(rank), int(world_size)
        self.shuffle, self.shuffle_buffer, self.seed, self.skip_bad = bool(shuffle), int(shuffle_buffer), int(seed), skip_bad
        self.n_selected = self.shards.total
        self.plan: EpochPlan | None = None
        self._failed = torch.zeros(self.n_selected, dtype=torch.uint8)  # 1 = did not decode (skip_bad)
        if skip_bad:
            with contextlib.suppress(RuntimeError):
                self._failed.share_memory_()  # so that DataLoader workers' marks reach this process
        self._reasons: dict[int, str] = {}

    # -- the plan
    def rank_shards(self, epoch: int) -> list[int]:
        """This process's shards in epoch ``epoch`` (indices into the set), in reading order."""
        order = shard_order(len(self.shards.urls), self.seed, epoch, self.shuffle)
        return assign_shards(self.shards.clips, self.world_size, order)[self.rank]

    def clips_per_rank(self, epoch: int) -> list[int]:
        """Clips each process holds in epoch ``epoch``."""
        order = shard_order(len(self.shards.urls), self.seed, epoch, self.shuffle)
        return [sum(self.shards.clips[i] for i in r) for r in assign_shards(self.shards.clips, self.world_size, order)]

    def plan_epoch(self, epoch: int, n_workers: int, chunk: int, start: int = 0, stop: int | None = None) -> EpochPlan:
        """Fix the epoch this dataset yields next: ``n_workers`` streams (1 without DataLoader workers),
        taken ``chunk`` clips at a time; the stream's positions ``start .. stop`` (``None``: to the end)."""
        mine = self.rank_shards(epoch)
        streams = tuple(tuple(mine[w::n_workers]) for w in range(n_workers))
        counts = [sum(self.shards.clips[i] for i in s) for s in streams]
        total = sum(counts)
        stop = total if stop is None else min(stop, total)
        pieces = tuple(piece_plan(counts, chunk, start, stop))
        self.plan = EpochPlan(int(epoch), streams, pieces, total, sum(p[2] for p in pieces))
        return self.plan

    # -- reading, in a worker
    def _stream(self, shard_ids: tuple[int, ...], epoch: int, worker: int) -> Iterator[dict]:
        """The worker's samples (raw bytes), shard after shard, through the shuffle buffer."""
        wds = _wds()
        offsets = self.shards.offsets

        def samples():
            for i in shard_ids:
                url, n = self.shards.urls[i], 0
                with wds.gopen(url, "rb") as stream:
                    raw = wds.tar_file_expander([{"url": url, "stream": stream}])
                    for n, sample in enumerate(wds.group_by_keys(raw), start=1):
                        sample["__index__"] = offsets[i] + n - 1
                        yield sample
                if n != self.shards.clips[i]:
                    raise ValueError(f"shard {url} holds {n} clips but its index says {self.shards.clips[i]}; "
                                     f"the index is stale: write the shards again")

        if not self.shuffle or self.shuffle_buffer <= 1:
            return samples()
        rng = random.Random(mix_seed(self.seed, _BUFFER, epoch, self.rank, worker))
        return wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(samples())

    def _decode(self, sample: dict, epoch: int) -> tuple[torch.Tensor, int, int]:
        """One sample's ``(waveform (1, clip_samples), label index, real length)``."""
        from audioconv.data.dataset import _cached_resampler

        where = f"{sample.get('__url__')}:{sample.get('__key__')}"
        if "json" not in sample:
            raise ValueError(f"{where}: sample has no .json metadata")
        meta = json.loads(sample["json"].decode("utf-8"))
        label = meta.get("label")
        if label not in self.label_to_index:
            raise ValueError(f"{where}: label {label!r} is not one of the labels {self.labels}")
        data = [v for k, v in sample.items() if not k.startswith("__") and k != "json"]
        if len(data) != 1:
            raise ValueError(f"{where}: expected one audio member besides the .json, found {len(data)}")
        wav, sr = audio.decode(data[0], meta.get("offset"), meta.get("duration"), where)
        wav = audio.to_mono(wav) if wav.shape[0] > 1 else wav
        if sr != self.sample_rate:
            wav = _cached_resampler(sr, self.sample_rate)(wav)
        room, length = wav.shape[-1] - self.clip_samples, self.clip_samples
        start = 0
        if room > 0 and self.crop == "center":
            start = room // 2
        elif room > 0 and self.crop == "random":
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, sample["__index__"]))
            start = int(torch.randint(0, room + 1, (1,), generator=g))
        wav = wav[..., start : start + length]
        return audio.fix_length(wav, length, offset=0), self.label_to_index[label], wav.shape[-1]

    def _item(self, sample: dict, epoch: int):
        try:
            return self._decode(sample, epoch)
        except ValueError as e:
            if not self.skip_bad:
                raise
            self._failed[sample["__index__"]] = 1
            self._reasons[sample["__index__"]] = str(e)
            from audioconv.data.dataset import SkippedClipWarning

            warnings.warn(f"skipping bad clip {e}", SkippedClipWarning, stacklevel=2)
            return None

    def _piece(self, worker: int, number: int, items: list) -> tuple:
        kept = torch.tensor([it is not None for it in items], dtype=torch.bool)
        good = [it for it in items if it is not None]
        waves = torch.stack([it[0] for it in good]) if good else torch.zeros(0, 1, self.clip_samples)
        labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
        lengths = torch.tensor([it[2] for it in good], dtype=torch.int64)
        return worker, number, waves, labels, lengths, kept

    def __iter__(self):
        plan = self.plan
        if plan is None:
            raise RuntimeError("ShardClips: call plan_epoch() before iterating (ShardLoader does)")
        info = torch.utils.data.get_worker_info()
        worker, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if n_workers != len(plan.worker_shards):
            raise RuntimeError(f"ShardClips was planned for {len(plan.worker_shards)} streams, read by {n_workers}")
        mine = [(k, first, count) for k, (w, first, count) in enumerate(plan.pieces) if w == worker]
        if not mine:
            return
        stream, pos = self._stream(plan.worker_shards[worker], plan.epoch, worker), 0
        for k, first, count in mine:
            for _ in range(first - pos):  # resuming: clips of the batches already done, not decoded
                next(stream)
            items = [self._item(next(stream), plan.epoch) for _ in range(count)]
            pos = first + count
            yield self._piece(worker, k, items)

    @property
    def skipped(self) -> dict[str, str]:
        """``{"SHARD_URL[position]": reason}`` for every clip that did not decode (``skip_bad``)."""
        offsets, out = self.shards.offsets, {}
        for i in torch.nonzero(self._failed).flatten().tolist():
            s = max(k for k, o in enumerate(offsets) if o <= i)
            out[f"{self.shards.urls[s]}[{i - offsets[s]}]"] = self._reasons.get(i, "did not decode in a DataLoader "
                                                                                  "worker (see its warning)")
        return out


class ShardLoader:
    """Batches ``(waveforms (B, 1, T), labels (B,), lengths (B,))`` of one process's epoch of a
    :class:`ShardClips`, read by ``workers`` DataLoader processes and put together in the plan's order.

    Args:
        dataset: the :class:`ShardClips`.
        epoch: which epoch (0-based).
        batch_size: clips per batch (the plan's chunk).
        workers: DataLoader worker processes (0 = read in this process).
        skip_batches: batches already done (resuming); their clips are read but not decoded.
        max_batches: batches of the epoch (``None``: every clip; the last batch may be smaller).
        pin_memory: pinned batches (CUDA).
        seed: the DataLoader's generator (worker base seeds).

    A batch is smaller than ``batch_size`` only when clips were skipped (``skip_bad``) or at the end
    of an epoch read without ``max_batches``.
    """

    def __init__(self, dataset: ShardClips, epoch: int, batch_size: int, workers: int = 0, skip_batches: int = 0,
                 max_batches: int | None = None, pin_memory: bool = False, seed: int = 0):
        self.dataset, self.epoch, self.batch_size, self.workers = dataset, int(epoch), int(batch_size), int(workers)
        self.skip_batches, self.max_batches = int(skip_batches), max_batches
        self.pin_memory, self.seed = pin_memory, seed

    def __len__(self) -> int:
        if self.max_batches is not None:
            return max(0, self.max_batches - self.skip_batches)
        return max(0, -(-self.dataset.clips_per_rank(self.epoch)[self.dataset.rank] // self.batch_size) - self.skip_batches)

    def __iter__(self):
        from audioconv.data.dataset import collate

        b = self.batch_size
        stop = None if self.max_batches is None else self.max_batches * b
        plan = self.dataset.plan_epoch(self.epoch, max(1, self.workers), b, self.skip_batches * b, stop)
        if not plan.pieces:
            return
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=None, num_workers=self.workers,
                                             pin_memory=self.pin_memory,
                                             generator=torch.Generator().manual_seed(self.seed))
        arrived, slots, source = {}, [], iter(loader)
        for k in range(len(plan.pieces)):
            while k not in arrived:  # workers' pieces, put in the plan's order
                piece = next(source)
                arrived[piece[1]] = piece
            _, _, waves, labels, lengths, kept = arrived.pop(k)
            rows = zip(waves, labels.tolist(), lengths.tolist())  # the kept clips; None marks a skipped one
            slots.extend(next(rows) if keep else None for keep in kept.tolist())
            while len(slots) >= b:
                yield collate(slots[:b])
                del slots[:b]
        if slots:
            yield collate(slots)
