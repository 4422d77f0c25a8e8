"""Where a training run's batches come from: the datasets its config names, this process's shard of
each epoch, the DataLoaders.

The clip order of epoch ``e`` is ``DistributedSampler(seed=config.seed)`` after ``set_epoch(e)``: the
same permutation on every rank, each rank takes its shard. Random crops are a function of
``(seed, epoch, clip index)``; a DataLoader's worker seeds come from its own generator, never from
torch's global RNG. Every seed is :func:`audioconv.utils.mix_seed` of ``config.seed`` and a stream
number (1 crops, 3 validation loader, 5 training loader; :mod:`~audioconv.training.loop` uses 2 and 4).
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from audioconv.training import distributed
from audioconv.training.config import TrainConfig
from audioconv.utils import mix_seed

__all__ = ["TrainData", "build_data", "data_workers", "available_cores", "data_report", "TrainingWarning",
           "even_batches", "ClipNames", "natural_key", "GroupLeakageWarning", "shared_groups", "group_leak_message"]


class TrainingWarning(UserWarning):
    """Something about a training run the user should know (the command line shows it as one line)."""

class GroupLeakageWarning(TrainingWarning):
    """Clips of one group (speaker, source recording) are both trained on and scored."""


#: streams of the run's seed (mix_seed(config.seed, STREAM, ...)) that the data uses; the loop uses 2, 4 and 6
CROPS_STREAM, VAL_LOADER_STREAM, TRAIN_LOADER_STREAM = 1, 3, 5


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def even_batches(order: list[int], n_batches: int) -> list[list[int]]:
    """``order`` cut into ``n_batches`` consecutive batches whose sizes differ by at most one (the
    larger first): every clip is used, none twice, and no batch is a tiny remainder."""
    n = len(order)
    bounds = [i * n // n_batches for i in range(n_batches + 1)]
    sizes = sorted((b - a for a, b in zip(bounds, bounds[1:])), reverse=True)
    out, start = [], 0
    for size in sizes:
        out.append(order[start:start + size])
        start += size
    return out


def _loader(dataset, workers: int, device: torch.device, seed: int, *, batch_sampler=None, sampler=None,
            batch_size: int | None = None):
    from audioconv.data.dataset import collate

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size if batch_sampler is None else 1, sampler=sampler, batch_sampler=batch_sampler,
        num_workers=workers, collate_fn=collate, pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(seed),  # worker base seed: never touches the global RNG
    )


@dataclass(eq=False)
class TrainData:
    """The training set and this rank's sampler over it, the per-process batch size, the steps of an
    epoch, and the validation loader (``None`` without a validation set; each rank scores every
    ``world_size``-th clip, so every clip counts once)."""

    train_ds: torch.utils.data.Dataset
    sampler: torch.utils.data.DistributedSampler
    batch_size: int  # clips per step and process, at most (the batches of an epoch differ by one at most)
    steps_per_epoch: int
    workers: int  # DataLoader decode processes
    val_loader: torch.utils.data.DataLoader | None
    seed: int
    rank: int
    device: torch.device
    _batches: tuple = field(default=(None, []), init=False, repr=False)  # (epoch, its batches of clip indices)

    def _epoch_indices(self, epoch: int) -> list[list[int]]:
        """This rank's batches of epoch ``epoch`` as clip indices: the sampler's order of the epoch cut
        by :func:`even_batches` (made once per epoch, for the loader and the clip names alike)."""
        if self._batches[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._batches = (epoch, even_batches(list(self.sampler), self.steps_per_epoch))
        return self._batches[1]

    def epoch_loader(self, epoch: int, skip_batches: int = 0) -> torch.utils.data.DataLoader:
        """This rank's batches of epoch ``epoch`` (0-based) after the first ``skip_batches``:
        ``(waveforms (B, C, T), labels (B,), lengths (B,))``. Every clip of the shard is used once
        per epoch, in ``steps_per_epoch`` batches of ``batch_size`` or one fewer clips."""
        self.train_ds.set_epoch(epoch)
        seed = mix_seed(self.seed, TRAIN_LOADER_STREAM, epoch, self.rank)
        return _loader(self.train_ds, self.workers, self.device, seed,
                       batch_sampler=self._epoch_indices(epoch)[skip_batches:])

    def epoch_batches(self, epoch: int) -> list["ClipNames"]:
        """The clips of each of this rank's batches of epoch ``epoch``, in the order
        :meth:`epoch_loader` gives them, as :class:`ClipNames` (for messages that name a batch's clips)."""
        return [ClipNames(self.train_ds, batch) for batch in self._epoch_indices(epoch)]


def data_report(data: TrainData, info: distributed.DistInfo) -> dict:
    """``{"train": {"clips", "skipped"}, "validation": {...}}``: clips selected per set and those left
    out by ``skip_bad`` (``{"manifest:line": reason}``, gathered from every rank: collective)."""
    sets = {"train": data.train_ds, "validation": None if data.val_loader is None else data.val_loader.dataset}
    mine = {name: ds.skipped for name, ds in sets.items() if ds is not None}
    merged: dict[str, dict] = {name: {} for name in mine}
    for theirs in distributed.all_gather_object(mine, info):
        for name, skipped in theirs.items():
            merged[name].update(skipped)
    return {name: {"clips": sets[name].n_selected, "skipped": merged[name]} for name in mine}


class ClipNames(Sequence):
    """The names ``manifest:line (audio file)`` of some clips of a dataset, made only when read."""

    def __init__(self, dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> str:
        k = self.indices[i]
        return f"{self.dataset.sources[k]} ({self.dataset.records[k]['audio_filepath']})"


def _manifest_labels(path: str, splits: tuple[str, ...] | None, role: str) -> list[str]:
    """Labels of a manifest's records (of the given splits), with clear errors for empty inputs
    (listing the splits the manifest has, and how to choose them)."""
    from audioconv.io.manifest import iter_manifest

    records = list(iter_manifest(path))
    labels = [r["label"] for r in records if splits is None or r.get("split") in splits]
    if labels:
        _check_splits_known(path, splits, {r.get("split") for r in records}, role)
        return labels
    if splits is None or not records:
        raise ValueError(f"{role} set is empty: manifest {path} has no clips")
    counts: dict = {}
    for r in records:
        counts[r.get("split")] = counts.get(r.get("split"), 0) + 1
    present = ", ".join(f"{s} ({n})" if s is not None else f"no split key ({n})" for s, n in sorted(
        counts.items(), key=lambda kv: natural_key(str(kv[0]))))
    folds = [s for s in counts if isinstance(s, str) and s.startswith("fold")]
    hint = (f"; cross-validate over the folds (audioconv cv --manifest {path}) or choose the splits, e.g. "
            f"--train-split {','.join(sorted(folds, key=natural_key)[:-1])} --val-split {max(folds, key=natural_key)}"
            if len(folds) >= 2 else "; choose the splits with train_split=/val_split= (--train-split/--val-split; "
                                    "--val-split none trains without validation)")
    name = "split" if len(splits) == 1 else "splits"
    raise ValueError(f"{role} set is empty: manifest {path} has no clips in {name} {', '.join(map(repr, splits))} "
                     f"(splits present: {present}){hint}")


_SPLIT_FLAGS = {"training": "train_split (--train-split)", "validation": "val_split (--val-split)"}


def _check_splits_known(path: str, splits: tuple[str, ...] | None, present: set, role: str) -> None:
    """Raise (one line) when ``splits`` names a split that manifest ``path`` lacks, even if others
    exist: a misspelt fold would otherwise drop out of the run without a word."""
    unknown = [s for s in (splits or ()) if s not in present]
    if unknown:
        have = ", ".join(sorted((str(s) for s in present if s is not None), key=natural_key)) or "none"
        raise ValueError(f"{_SPLIT_FLAGS[role]}: manifest {path} has no split {', '.join(map(repr, unknown))} "
                         f"(splits present: {have})")


def natural_key(name: str) -> tuple:
    """Sort key that compares the runs of digits in ``name`` by value (``fold2`` before ``fold10``,
    ``us8k_fold2`` before ``us8k_fold10``); names equal that way (``fold01``, ``fold1``) by their text."""
    parts = re.split(r"(\d+)", name)  # text, digits, text, ...: the same kinds at the same places
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def _warn_leakage(train_ds, val_ds) -> None:
    """Warn when validation clips are also training clips (the same file, offset and duration), or
    share a ``group`` (speaker, source recording) with them: the scores would be optimistic."""
    def key(r):
        return (os.path.normpath(os.path.abspath(r["audio_filepath"])), r.get("offset"), r.get("duration"))

    seen = {key(r) for r in train_ds.records}
    shared = [r for r in val_ds.records if key(r) in seen]
    if shared:
        warnings.warn(f"{len(shared)} of the {len(val_ds)} validation clips are also training clips (e.g. "
                      f"{shared[0]['audio_filepath']}); validation scores (and best.pt) will be optimistic — "
                      f"validate on other clips", TrainingWarning, stacklevel=3)
        return
    common = shared_groups(train_ds.records, val_ds.records)
    if common:
        warnings.warn(group_leak_message(common, "both training and validation", "validation scores"),
                      GroupLeakageWarning, stacklevel=3)


def shared_groups(a: Sequence[dict], b: Sequence[dict]) -> list[str]:
    """The ``group`` values (speaker, source recording) that records ``a`` and ``b`` both have, as
    sorted strings; records without a group never count."""
    groups = {r["group"] for r in a if r.get("group") is not None}
    return sorted({str(r["group"]) for r in b if r.get("group") in groups})


def group_leak_message(common: list[str], where: str, scores: str) -> str:
    """The one wording of a group leak: ``common`` groups have clips in ``where``, so ``scores`` are optimistic."""
    return (f"{len(common)} groups (speakers or source recordings) have clips in {where} (e.g. {common[0]!r}); "
            f"{scores} will be optimistic")


def _datasets(cfg: TrainConfig, labels: list[str] | None):
    """``(train_ds, val_ds or None, labels)`` from the config's manifests."""
    from audioconv.data.dataset import ManifestDataset

    if cfg.manifest is not None:
        train_src, train_split = cfg.manifest, tuple(cfg.train_split)
        val_src, val_split = (cfg.manifest if cfg.val_split else None), tuple(cfg.val_split)
    else:
        train_src, train_split, val_src, val_split = cfg.train, None, cfg.val, None
    train_labels = _manifest_labels(train_src, train_split, "training")
    found = sorted(set(train_labels))
    if len(found) < 2:
        raise ValueError(f"training set {train_src} has only one class ({found[0]!r}); a classifier needs >= 2")
    if labels is None:
        labels = found
    elif sorted(labels) != found:
        raise ValueError(f"the checkpoint's labels {sorted(labels)} differ from the training set's {found}")
    if val_src is not None:
        val_labels = sorted(set(_manifest_labels(val_src, val_split, "validation")))
        extra = [lab for lab in val_labels if lab not in labels]
        if extra:
            raise ValueError(f"validation set {val_src} has labels that are not in the training set: {extra}")
    common = dict(sample_rate=int(cfg.sample_rate), clip_s=float(cfg.clip_s), labels=labels, skip_bad=cfg.skip_bad)
    train_ds = ManifestDataset(train_src, crop="random", split=train_split, seed=mix_seed(cfg.seed, CROPS_STREAM),
                               **common)
    val_ds = None if val_src is None else ManifestDataset(val_src, crop="center", split=val_split, **common)
    if val_ds is not None:
        _warn_leakage(train_ds, val_ds)
    return train_ds, val_ds, labels


def data_workers(cfg: TrainConfig, device: torch.device, local_world: int) -> int:
    """DataLoader decode processes of each of the ``local_world`` processes on this machine:
    ``cfg.workers``, or with ``-1`` a number that suits ``device`` and the cores they share."""
    if cfg.workers >= 0:
        return cfg.workers
    cores = available_cores()
    if device.type == "cuda":
        return max(1, min(8, cores // local_world - 1))
    return 1 if cores // local_world >= 2 else 0


def build_data(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, workers: int,
               labels: list[str] | None = None) -> tuple[TrainData, list[str]]:
    """The run's :class:`TrainData` and its class names (sorted, or ``labels`` from a checkpoint), from
    manifests (:func:`audioconv.training.shard_data.build_shard_data` builds the same from shards).

    Args:
        cfg: the run's settings (manifests, clip length, batch size, seed).
        info: this process's rank among ``world_size``.
        device: the training device (pinned memory on CUDA).
        workers: DataLoader decode processes (:func:`data_workers`).
        labels: a resumed run's class names; the training set must have exactly these.

    Raises:
        ValueError: an empty training or validation set, one class only, validation labels that
            training lacks, or labels that differ from ``labels``.
    """
    train_ds, val_ds, labels = _datasets(cfg, labels)
    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=cfg.seed, drop_last=False)
    shard = len(sampler)
    batch_size = min(int(cfg.batch_size), shard)
    if batch_size < cfg.batch_size:
        warnings.warn(f"batch size {cfg.batch_size} is larger than the training set ({shard} clips"
                      f"{' per process' if info.world_size > 1 else ''}): each epoch is one step of {shard} clips",
                      TrainingWarning, stacklevel=2)
    val_loader = None
    if val_ds is not None:
        val_shard = list(range(info.rank, len(val_ds), info.world_size))
        val_loader = _loader(val_ds, workers, device, mix_seed(cfg.seed, VAL_LOADER_STREAM), sampler=val_shard,
                             batch_size=batch_size)
    data = TrainData(train_ds=train_ds, sampler=sampler, batch_size=batch_size,
                     steps_per_epoch=math.ceil(shard / batch_size), workers=workers, val_loader=val_loader,
                     seed=int(cfg.seed), rank=info.rank, device=device)
    return data, list(labels)
