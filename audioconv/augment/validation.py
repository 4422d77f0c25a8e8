"""Argument checks shared by the augmentations: each bad value raises ``ValueError`` naming it."""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence, Union

import torch

__all__ = ["check_range", "check_number", "check_sample_rate", "check_probability", "as_batch", "check_lengths",
           "check_generator", "check_int_range"]

Range = Union[float, Sequence[float]]


def check_range(
    name: str,
    value: Range,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    unit: str = "",
) -> tuple[float, float]:
    """Return ``(min, max)`` from a number or a pair, raising ``ValueError`` naming ``name``.

    A single number means a fixed value ``(v, v)``. ``low``/``high`` bound both ends.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo = hi = float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}") from None
    u = f" {unit}" if unit else ""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite, got ({lo}, {hi})")
    if lo > hi:
        raise ValueError(f"{name}: min {lo}{u} is greater than max {hi}{u}")
    if low is not None and (lo < low or (not low_inclusive and lo == low)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}{u}, got min {lo}{u}")
    if high is not None and (hi > high or (not high_inclusive and hi == high)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}{u}, got max {hi}{u}")
    return lo, hi


def check_number(name: str, value: Any, *, unit: str = "", **bounds: Any) -> float:
    """``value`` as a float, for a parameter that is one number (not a range): ``ValueError``
    naming ``name`` for a pair, a list or anything else that is not a real number, or one
    outside ``bounds`` (``low``, ``high``, ``low_inclusive``, ``high_inclusive``, as ``check_range``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        u = f" ({unit})" if unit else ""
        raise ValueError(f"{name} must be a single number{u}, not a range or list; got {value!r}")
    return check_range(name, float(value), unit=unit, **bounds)[0]


def check_sample_rate(sample_rate: Any) -> int:
    """``sample_rate`` as a positive int (Hz), else ``ValueError``."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float)) or sample_rate <= 0 \
            or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def check_probability(name: str, p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def as_batch(x: Any, name: str = "x") -> tuple[torch.Tensor, torch.Size]:
    """View ``(time,)``, ``(channels, time)`` or ``(batch, channels, time)`` as ``(B, C, T)``.

    Returns the 3-D view and the original shape (to restore with ``y.reshape(shape)``).
    Raises ``ValueError`` for a non-tensor, an integer/complex dtype, a wrong rank or no samples.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point waveform, got dtype {x.dtype}")
    if x.dim() not in (1, 2, 3):
        raise ValueError(
            f"{name} must be shaped (time,), (channels, time) or (batch, channels, time); "
            f"got {x.dim()}-D shape {tuple(x.shape)}"
        )
    if x.shape[-1] == 0 or (x.dim() >= 2 and x.shape[-2] == 0):
        raise ValueError(f"{name} has no samples: shape {tuple(x.shape)}")
    shape = x.shape
    while x.dim() < 3:
        x = x.unsqueeze(0)
    return x, shape


def check_lengths(lengths: Any, batch: int, time: int, device: torch.device) -> torch.Tensor | None:
    """Validate ``lengths`` (number of real samples per example, ``(batch,)`` ints in [0, time])."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},) (one per example), got {tuple(lengths.shape)}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > time):
        raise ValueError(f"lengths must lie in [0, {time}] samples, got min {int(lengths.min())}, "
                         f"max {int(lengths.max())}")
    return lengths.to(device=device, dtype=torch.long)


def check_generator(generator: Any) -> torch.device:
    if generator is None:
        return torch.device("cpu")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator.device


def check_int_range(name: str, value: Any, *, low: int, high: int | None = None) -> tuple[int, int]:
    """``(min, max)`` integers from an int or a pair of ints in ``[low, high]``, else ``ValueError`` naming ``name``."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        lo, hi = pair
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer or a (min, max) pair of integers, got {value!r}")
    if lo > hi:
        raise ValueError(f"{name}: min {lo} is greater than max {hi}")
    if lo < low or (high is not None and hi > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bounds}, got ({lo}, {hi})")
    return int(lo), int(hi)

