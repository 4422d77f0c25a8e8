"""Small helpers every stage shares: device resolution, eval mode, a model's device and dtype,
seed mixing, and "does this callable take that keyword"."""
from __future__ import annotations

import contextlib
import inspect
from typing import Callable, Iterator

import torch
from torch import nn

__all__ = ["resolve_device", "eval_mode", "model_device", "model_dtype", "mix_seed", "accepts_keyword"]


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """The device a ``device`` argument names.

    ``"auto"`` or ``None`` → ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``;
    ``"cuda"`` → ``cuda:LOCAL_RANK``; ``"cpu"``, ``"cuda:N"`` or a ``torch.device`` as given.

    Raises:
        ValueError: CUDA asked for but not available, or a name torch does not know.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = "auto" if name is None else str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    if name == "cuda":
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Context: ``model`` in eval mode; every submodule's own ``training`` flag restored on exit."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags.items():
            m.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for t in _tensors(model):
        return t.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (float32 if none)."""
    for t in _tensors(model):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _tensors(model: nn.Module):
    yield from model.parameters()
    yield from model.buffers()


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from small integers (SplitMix64 over the parts).

    ``mix_seed(seed, epoch, index)`` gives unrelated streams for neighbouring arguments, so per-epoch,
    per-rank and per-clip generators never repeat one another.
    """
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x = (x ^ (x >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def accepts_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with keyword ``name`` (it names it, or takes ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
