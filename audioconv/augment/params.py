"""Parameter trees: nested dicts of per-example tensors (first dimension = batch)."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["Params", "params_to", "params_select", "params_to_json", "params_from_json", "restrict", "check_params"]

Params = dict  # nested ``dict[str, Tensor | Params]``; every tensor's first dimension is the batch


def params_to(params: Params, device: torch.device | str | None, _where: str = "params") -> Params:
    """Copy of ``params`` with every tensor moved to ``device`` (``None`` leaves them); ``ValueError``
    naming the entry (``params['1.Compose']['0.Gain']['gain_db']``) for a value that is neither."""
    if device is None:
        return params
    out = {}
    for k, v in params.items():
        where = f"{_where}[{k!r}]"
        if isinstance(v, dict):
            out[k] = params_to(v, device, where)
        elif isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        else:
            raise ValueError(f"{where} must be a tensor from sample(), got {type(v).__name__}")
    return out


def params_select(params: Params, index: torch.Tensor | slice | int) -> Params:
    """The rows ``index`` of every tensor (an ``int`` keeps a batch of one)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return {k: params_select(v, index) if isinstance(v, dict) else v[index] for k, v in params.items()}


def restrict(params: Params, mask: torch.Tensor) -> None:
    """AND ``mask`` into every ``apply`` flag of the tree, in place."""
    for k, v in params.items():
        if isinstance(v, dict):
            restrict(v, mask)
        elif k == "apply":
            params[k] = v & mask


def params_to_json(params: Params) -> dict:
    """Nested dict of plain lists (JSON-ready). ``params_from_json`` reverses it exactly."""
    return {k: params_to_json(v) if isinstance(v, dict) else v.detach().cpu().tolist()
            for k, v in params.items()}


def _leaf_dtype(values: Any) -> torch.dtype:
    while isinstance(values, list) and values:
        values = values[0]
    if isinstance(values, bool):
        return torch.bool
    if isinstance(values, int):
        return torch.long
    return torch.float32


def params_from_json(obj: dict, where: str = "params") -> Params:
    """Tensors back from ``params_to_json``: bools → bool, ints → int64, floats → float32.

    Raises:
        ValueError: ``obj`` is not an object, or a value is not numbers/booleans of one shape
            (the message names its key; ``where`` names ``obj``).
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out[key] = params_from_json(value, f"{where}[{key!r}]")
            continue
        try:
            out[key] = torch.tensor(value, dtype=_leaf_dtype(value))
        except (TypeError, ValueError, RuntimeError):
            hint = (" (the params.json of `audioconv augment` holds them under 'params': "
                    "params_from_json(record['params']))") if "params" in obj else ""
            raise ValueError(f"{where}[{key!r}] must be numbers or booleans of one shape, as params_to_json "
                             f"writes them; got {str(value)[:60]}{hint}") from None
    return out


def check_params(params: Any, batch: int, owner: str) -> None:
    if not isinstance(params, dict) or "apply" not in params:
        raise ValueError(f"params for {owner} must be a dict from {owner}.sample() with an 'apply' entry")
    for k, v in params.items():
        if isinstance(v, dict):
            continue
        if not isinstance(v, torch.Tensor) or v.dim() == 0 or v.shape[0] != batch:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"params[{k!r}] of {owner} must have {batch} rows (one per example), got {shape}")
