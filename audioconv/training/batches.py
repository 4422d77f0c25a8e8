"""Where a training run's batches come from: the datasets its config names, this process's shard of
each epoch, the DataLoaders.

The clip order of epoch ``e`` is ``DistributedSampler(seed=config.seed)`` after ``set_epoch(e)``: the
same permutation on every rank, each rank takes its shard. Random crops are a function of
``(seed, epoch, clip index)``; a DataLoader's worker seeds come from its own generator, never from
torch's global RNG. Every seed is :func:`audioconv.utils.mix_seed` of ``config.seed`` and a stream
number (1 crops, 3 validation loader, 5 training loader; :mod:`~audioconv.training.loop` uses 2 and 4).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from audioconv.training import distributed
from audioconv.training.config import TrainConfig
from audioconv.utils import mix_seed

__all__ = ["TrainData", "build_data", "available_cores", "data_report"]

_CROPS, _VAL_LOADER, _TRAIN_LOADER = 1, 3, 5


def available_cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class _SkipSampler(torch.utils.data.Sampler[int]):
    """Yields a sampler's indices after dropping the first ``skip`` (resuming mid-epoch)."""

    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, int(skip)

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _loader(dataset, sampler, batch_size: int, workers: int, device: torch.device, drop_last: bool, seed: int):
    from audioconv.data.dataset import collate

    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
        pin_memory=device.type == "cuda", drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),  # worker base seed: never touches the global RNG
    )


@dataclass(eq=False)
class TrainData:
    """The training set and this rank's sampler over it, the per-process batch size, the steps of an
    epoch, and the validation loader (``None`` without a validation set; each rank scores every
    ``world_size``-th clip, so every clip counts once)."""

    train_ds: torch.utils.data.Dataset
    sampler: torch.utils.data.DistributedSampler
    batch_size: int  # clips per step and process
    drop_last: bool
    steps_per_epoch: int
    workers: int  # DataLoader decode processes
    val_loader: torch.utils.data.DataLoader | None
    seed: int
    rank: int
    device: torch.device

    def epoch_loader(self, epoch: int, skip_batches: int = 0) -> torch.utils.data.DataLoader:
        """This rank's batches of epoch ``epoch`` (0-based) after the first ``skip_batches``:
        ``(waveforms (B, C, T), labels (B,), lengths (B,))``."""
        self.sampler.set_epoch(epoch)
        self.train_ds.set_epoch(epoch)
        return _loader(self.train_ds, _SkipSampler(self.sampler, skip_batches * self.batch_size), self.batch_size,
                       self.workers, self.device, self.drop_last, mix_seed(self.seed, _TRAIN_LOADER, epoch, self.rank))


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


def _manifest_labels(path: str, split: str | None, role: str) -> list[str]:
    """Labels of a manifest's records (of one split), with clear errors for empty inputs."""
    from audioconv.io.manifest import iter_manifest

    labels = [r["label"] for r in iter_manifest(path) if split is None or r.get("split") == split]
    if not labels:
        where = f"manifest {path}" + (f" (split {split!r})" if split is not None else "")
        raise ValueError(f"{role} set is empty: {where} has no clips")
    return labels


def _datasets(cfg: TrainConfig, labels: list[str] | None):
    """``(train_ds, val_ds or None, labels)`` from the config's manifests."""
    from audioconv.data.dataset import ManifestDataset

    if cfg.manifest is not None:
        train_src, train_split = cfg.manifest, cfg.train_split
        val_src, val_split = cfg.manifest, cfg.val_split
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
    train_ds = ManifestDataset(train_src, crop="random", split=train_split, seed=mix_seed(cfg.seed, _CROPS), **common)
    val_ds = None if val_src is None else ManifestDataset(val_src, crop="center", split=val_split, **common)
    return train_ds, val_ds, labels


def _auto_workers(device: torch.device, local_world: int) -> int:
    cores = available_cores()
    if device.type == "cuda":
        return max(1, min(8, cores // local_world - 1))
    return 1 if cores // local_world >= 2 else 0


def build_data(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, local_world: int,
               labels: list[str] | None = None) -> tuple[TrainData, list[str]]:
    """The run's :class:`TrainData` and its class names (sorted, or ``labels`` from a checkpoint).

    Args:
        cfg: the run's settings (manifests, clip length, batch size, workers, seed).
        info: this process's rank among ``world_size``.
        device: the training device (pinned memory on CUDA; the default number of workers).
        local_world: processes on this machine (they share its cores among their workers).
        labels: a resumed run's class names; the training set must have exactly these.

    Raises:
        ValueError: an empty training or validation set, one class only, validation labels that
            training lacks, or labels that differ from ``labels``.
    """
    train_ds, val_ds, labels = _datasets(cfg, labels)
    workers = cfg.workers if cfg.workers >= 0 else _auto_workers(device, local_world)
    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=cfg.seed, drop_last=False)
    shard = len(sampler)
    batch_size = min(int(cfg.batch_size), shard)
    drop_last = shard >= batch_size
    val_loader = None
    if val_ds is not None:
        val_shard = list(range(info.rank, len(val_ds), info.world_size))
        val_loader = _loader(val_ds, val_shard, batch_size, workers, device, False, mix_seed(cfg.seed, _VAL_LOADER))
    data = TrainData(train_ds=train_ds, sampler=sampler, batch_size=batch_size, drop_last=drop_last,
                     steps_per_epoch=shard // batch_size if drop_last else 1, workers=workers, val_loader=val_loader,
                     seed=int(cfg.seed), rank=info.rank, device=device)
    return data, list(labels)
