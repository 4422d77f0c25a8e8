"""Multi-process training under ``torchrun``: detect the launch, start/stop the process group, share results.

``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every
process it starts; when they are absent the run is a plain single process and every helper here
is a cheap no-op. Backend: ``nccl`` for CUDA, ``gloo`` for CPU. One process per GPU: process
``LOCAL_RANK`` uses ``cuda:LOCAL_RANK``.

One machine, two processes::

    torchrun --standalone --nproc_per_node=2 -m audioconv train --train T.jsonl --val V.jsonl --out RUN

Two machines with 4 GPUs each (run on both; ``--node_rank`` 0 and 1; HOST = node 0's address)::

    torchrun --nnodes=2 --nproc_per_node=4 --node_rank=0 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 -m audioconv train ... --out /shared/RUN

Every process reads the manifests and audio, so they must be reachable at the same paths on every
node; ``--out`` should be on a shared filesystem too if runs are resumed (every rank reads
``last.pt``). ``--batch-size`` is per process: the global batch is ``batch_size * world_size``.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "detect", "setup", "cleanup", "barrier", "all_reduce_sum", "all_gather_object",
           "broadcast_module_state", "warnings_on_main"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # True when :func:`setup` created the process group (so cleanup ends it)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress bars."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None


def detect() -> DistInfo:
    """Read torchrun's environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``); single process if unset."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), _env_int("LOCAL_RANK", 0), dist.get_world_size(), False)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, _env_int("LOCAL_RANK", 0), world, False)


def setup(device_type: str) -> DistInfo:
    """Join the process group if launched by torchrun with ``WORLD_SIZE > 1``.

    Args:
        device_type: ``"cuda"`` (backend nccl; sets this process's CUDA device to ``LOCAL_RANK``)
            or ``"cpu"`` (backend gloo).

    Returns:
        :class:`DistInfo`; ``owns_group`` tells :func:`cleanup` whether to destroy the group.
    """
    info = detect()
    if not info.is_distributed or dist.is_initialized():
        return info
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(dist.get_rank(), info.local_rank, dist.get_world_size(), True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.is_distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (no-op in a single process); returns it."""
    if info.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_object(obj, info: DistInfo) -> list:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` in a single process. Collective."""
    if not info.is_distributed:
        return [obj]
    everyone: list = [None] * info.world_size
    dist.all_gather_object(everyone, obj)
    return everyone


def broadcast_module_state(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers (e.g. BatchNorm running stats) to every process,
    so all ranks hold exactly the same model."""
    if not info.is_distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


@contextlib.contextmanager
def warnings_on_main(info: DistInfo | None = None):
    """Inside this block, warnings show on rank 0 only; the other ranks drop them (they see the same
    data and settings, so one copy says it all). ``info`` defaults to :func:`detect`."""
    info = info if info is not None else detect()
    with warnings.catch_warnings():
        if not info.is_main:
            warnings.simplefilter("ignore")
        yield
