"""Which input frames a hidden unit's strongest activation may sit on: real (not padding) and not silent.

Real corpora are full of clips that are mostly zero padding (an ESC-50 clip is 5 s, the sound in it
often one second) or padded by the loader to the training length. A CNN's strongest activations
then land on the padding: at the border between the padding's flat floor and the convolutions'
zero border, or over the silence itself. The top-k scan (:func:`audioconv.interpret.topk.top_k`) and
the projector's ``position="max"`` therefore only consider *allowed* positions:

* a log-mel frame is **real** when it is one of the first ``n_frames`` frames of its clip, the
  frames the front end makes of the clip's real (unpadded) samples
  (:meth:`~audioconv.features.LogMel.n_frames` of the true length);
* a real frame is **silent** when its loudest mel bin is within ``silence_db`` dB (default 6 dB) of
  the clip's floor, the lowest log-mel cell over the clip's real frames. Zero padding and digital
  silence sit exactly on the floor (the front end floors every clip at its peak minus ``top_db``),
  so they are silent; a frame of stationary noise has bins well above the floor and is not;
* a feature-map position ``(f, t)`` is **allowed** when the centre frame of its receptive field
  (the middle of the half-open box :func:`~audioconv.interpret.receptive_field.receptive_field_boxes`
  gives, clipped to the input) is a real, non-silent frame; a position whose receptive field spans
  the whole clip (after a global pool or a linear head) when any frame of the clip is.
"""
from __future__ import annotations

import torch

from audioconv.interpret.receptive_field import receptive_field_boxes
from audioconv.interpret.graph import Graph

__all__ = ["SILENCE_DB", "active_frames", "centre_frames", "allowed_positions"]

SILENCE_DB = 6.0  # a frame whose loudest bin is within this many dB of the clip's floor is silent


def active_frames(logmel: torch.Tensor, n_frames=None, silence_db: float | None = SILENCE_DB) -> torch.Tensor:
    """The real, non-silent frames of each clip (module docstring).

    Args:
        logmel: ``(B, 1, F, T)`` or ``(B, F, T)`` log-mel in dB.
        n_frames: ``(B,)`` real frames per clip (the rest is padding), an int for all, or ``None``
            (every frame is real).
        silence_db: margin above the clip's floor (dB) under which a frame is silent; ``None``
            keeps silent frames (only padding is excluded).

    Returns:
        ``(B, T)`` bool on ``logmel``'s device.
    """
    x = logmel[:, 0] if logmel.dim() == 4 else logmel
    if x.dim() != 3:
        raise ValueError(f"logmel must be (B, 1, F, T) or (B, F, T), got {tuple(logmel.shape)}")
    B, _, T = x.shape
    if silence_db is not None and not float(silence_db) >= 0:
        raise ValueError(f"silence_db must be >= 0 dB or None, got {silence_db!r}")
    if n_frames is None:
        n_frames = torch.full((B,), T, dtype=torch.long)
    n_frames = torch.as_tensor(n_frames, dtype=torch.long, device=x.device).expand(B).clamp(0, T)
    real = torch.arange(T, device=x.device)[None, :] < n_frames[:, None]  # (B, T)
    if silence_db is None:
        return real
    loudest = x.amax(dim=1)  # (B, T): each frame's loudest mel bin
    floor = x.amin(dim=1).masked_fill(~real, float("inf")).amin(dim=1, keepdim=True)  # (B, 1)
    return real & (loudest > floor + float(silence_db))


def _boxes(path: Graph, feature_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """``(H, W, 4)`` long: each feature-map position's receptive field ``f0, f1, t0, t1`` clipped to the input."""
    H, W = (int(v) for v in feature_size)
    grid = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), dim=-1)  # (H, W, 2)
    return receptive_field_boxes(path, grid, input_size)


def _centres(boxes: torch.Tensor, n_frames: int) -> torch.Tensor:
    """``(H, W)`` long: the middle frame of each half-open box ``t0, t1`` of ``boxes`` ``(H, W, 4)``."""
    return ((boxes[..., 2] + boxes[..., 3] - 1) // 2).clamp(0, int(n_frames) - 1)


def centre_frames(path: Graph, feature_size: tuple[int, int], input_size: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` long: the centre frame of each feature-map position's receptive field.

    Args:
        path: the traced path to the layer (:meth:`~audioconv.interpret.traced.TracedModel.path`).
        feature_size: ``(H, W)`` of the layer's feature map.
        input_size: ``(F, T)`` of the log-mel input (the boxes are clipped to it).
    """
    return _centres(_boxes(path, feature_size, input_size), input_size[1])


def allowed_positions(path: Graph, frames: torch.Tensor, feature_size: tuple[int, int],
                      input_size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W)`` bool: positions whose receptive-field centre frame is allowed by ``frames`` ``(B, T)``;
    a position whose receptive field spans every frame (after a global pool, a linear head) has no
    centre of its own and is allowed when any frame of its clip is."""
    frames = torch.as_tensor(frames, dtype=torch.bool)
    T = int(input_size[1])
    if frames.dim() != 2 or frames.shape[1] != T:
        raise ValueError(f"frames must be (B, T={T}) bool, got {tuple(frames.shape)}")
    boxes = _boxes(path, feature_size, input_size).to(frames.device)  # (H, W, 4)
    whole = (boxes[..., 2] <= 0) & (boxes[..., 3] >= T)  # (H, W)
    return frames[:, _centres(boxes, T)] | (whole & frames.any(dim=1)[:, None, None])
