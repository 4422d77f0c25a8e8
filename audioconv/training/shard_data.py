"""Training batches from WebDataset shards (``--train 'DIR/train-{000000..000123}.tar'``): the shard
counterpart of :class:`audioconv.training.batches.TrainData`, with the same interface the loop uses.

Every process runs the same number of steps per epoch: ``min over processes and epochs of the
clips it holds // batch_size`` (:mod:`audioconv.data.shards` explains the plan). Clips beyond that
are left out of that epoch and the run warns once how many; none is read twice. Seeds:
:func:`audioconv.utils.mix_seed` of ``config.seed`` and the streams of
:mod:`~audioconv.training.batches` (1 crops and shard order, 3 validation loader, 5 training loader).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from audioconv.data.shards import ShardClips, ShardLoader, is_shard_spec, open_shard_set
from audioconv.training import distributed
from audioconv.training.batches import CROPS_STREAM, TRAIN_LOADER_STREAM, VAL_LOADER_STREAM, TrainingWarning
from audioconv.training.config import TrainConfig
from audioconv.utils import mix_seed

__all__ = ["ShardTrainData", "uses_shards", "build_shard_data"]


class ShardEpochWarning(TrainingWarning):
    """Shards that do not divide evenly among the processes: some clips are left out of each epoch."""


def uses_shards(cfg: TrainConfig) -> bool:
    """Whether the run reads shards; ``ValueError`` for a mix of shards and manifests."""
    train, val = is_shard_spec(cfg.train), is_shard_spec(cfg.val)
    if is_shard_spec(cfg.manifest):
        raise ValueError(f"manifest={cfg.manifest!r} names shards: give shards with train=/val= (--train/--val)")
    if train and cfg.val is not None and not val:
        raise ValueError(f"train={cfg.train!r} names shards but val={cfg.val!r} does not: write the validation "
                         f"set as shards too (audioconv shards --split validation) or leave out val")
    if val and not train:
        raise ValueError(f"val={cfg.val!r} names shards but train={cfg.train!r} does not: give both as shards "
                         f"or both as manifests")
    return train


@dataclass(eq=False)
class ShardTrainData:
    """What :class:`~audioconv.training.batches.TrainData` holds, for shards: the training clips, the
    per-process batch size, the steps of every epoch, the validation batches (``None`` without)."""

    train_ds: ShardClips
    batch_size: int
    steps_per_epoch: int
    workers: int
    val_loader: ShardLoader | None
    seed: int
    rank: int
    device: torch.device
    left_out: int  # most clips any epoch leaves out (over all processes)

    def epoch_batches(self, epoch: int) -> list["_StreamedBatch"]:
        """Names of the clips of each batch of epoch ``epoch``, for messages about a bad batch. A
        shard stream knows its clips only as it reads them, so a clip is named by its place."""
        return [_StreamedBatch(epoch, k) for k in range(self.steps_per_epoch)]

    def epoch_loader(self, epoch: int, skip_batches: int = 0) -> ShardLoader:
        """This process's batches of epoch ``epoch`` (0-based) after the first ``skip_batches``."""
        return ShardLoader(self.train_ds, epoch, self.batch_size, self.workers, skip_batches, self.steps_per_epoch,
                           self.device.type == "cuda", mix_seed(self.seed, TRAIN_LOADER_STREAM, epoch, self.rank))


class _StreamedBatch:
    """``names[i]``: clip ``i`` of batch ``k`` of an epoch read from shards (named by its place)."""

    def __init__(self, epoch: int, k: int):
        self.epoch, self.k = epoch, k

    def __getitem__(self, i: int) -> str:
        return f"clip {i + 1} of batch {self.k + 1} in epoch {self.epoch + 1} (read from shards)"


def _steps(train: ShardClips, batch_size: int, epochs: int, world_size: int) -> tuple[int, int, int]:
    """``(batch size, steps per epoch, most clips left out of an epoch)`` for equal steps on every process."""
    per_epoch = [train.clips_per_rank(e) for e in range(epochs)]
    fewest = min(min(c) for c in per_epoch)
    if fewest == 0:
        raise ValueError(f"{len(train.shards.urls)} shards for {world_size} processes: some process gets no shard; "
                         f"write smaller shards (audioconv shards --max-size) or run fewer processes")
    batch = min(int(batch_size), fewest)
    steps = fewest // batch
    return batch, steps, max(sum(c) - steps * batch * world_size for c in per_epoch)


def build_shard_data(cfg: TrainConfig, info: distributed.DistInfo, device: torch.device, workers: int,
                     labels: list[str] | None = None) -> tuple[ShardTrainData, list[str]]:
    """The run's :class:`ShardTrainData` and class names (the index's, or a resumed run's ``labels``).

    Raises:
        ValueError / FileNotFoundError: no index, labels that differ from ``labels``, more processes
            than shards, validation labels that training lacks.
    """
    train_set = open_shard_set(cfg.train)
    found = sorted(set(train_set.labels))
    if labels is None:
        labels = list(train_set.labels)
    elif sorted(labels) != found:
        raise ValueError(f"the checkpoint's labels {sorted(labels)} differ from the shards' {found}")
    common = dict(sample_rate=int(cfg.sample_rate), clip_s=float(cfg.clip_s), labels=labels, skip_bad=cfg.skip_bad,
                  rank=info.rank, world_size=info.world_size)
    train = ShardClips(train_set, crop="random", shuffle=True, shuffle_buffer=cfg.shuffle_buffer,
                       seed=mix_seed(cfg.seed, CROPS_STREAM), **common)
    batch, steps, left_out = _steps(train, cfg.batch_size, int(cfg.epochs), info.world_size)
    if left_out and info.is_main:
        warnings.warn(f"{train_set.total} clips in {len(train_set.urls)} shards do not divide into {info.world_size} "
                      f"process(es) x {steps} batches of {batch}: each epoch leaves out up to {left_out} clips "
                      f"(others each epoch); shards of equal clip counts, a multiple of the processes, leave out none",
                      ShardEpochWarning, stacklevel=2)
    val_loader = None
    if cfg.val is not None:
        val = ShardClips(cfg.val, crop="center", shuffle=False, shuffle_buffer=0, **common)
        val_loader = ShardLoader(val, 0, batch, workers, pin_memory=device.type == "cuda",
                                 seed=mix_seed(cfg.seed, VAL_LOADER_STREAM))
    data = ShardTrainData(train_ds=train, batch_size=batch, steps_per_epoch=steps, workers=workers,
                          val_loader=val_loader, seed=int(cfg.seed), rank=info.rank, device=device, left_out=left_out)
    return data, list(labels)
