"""Zeiler & Fergus projection of hidden units onto the time–frequency plane.

``Projector(model, mode).project(inputs, layer, channels, position)`` →
:class:`Projection` with maps ``(B, K, F, T)`` in the inputs' log-mel space.

How it works (and why it is fast):

1. The model's own forward pass runs **once per input** for all its units, traced
   (:mod:`audioconv.interpret.graph`): every operation from the log-mel input to the layer becomes
   a node of a graph (residual additions, concatenations and branches included), recording max-pool
   switches and, for ``guided``/``gradient``, the forward signs. No hooks are left on the model.
2. Each unit is seeded: its activation (the value at the chosen position, every other activation
   of the layer zero), or for ``position="map"`` its whole feature map (each position seeded with
   its own activation). So ``map = activation × attribution`` where attribution is what Captum's
   ``NeuronDeconvolution`` / ``NeuronGuidedBackprop`` / ``NeuronGradient`` return for that neuron.
3. The backward rules of :mod:`audioconv.interpret.rules` (unpool with switches, rectify, transposed
   filters, the signal to both branches of a residual addition) run for all ``B × K`` units at
   once, in one backward pass. A single-position projection depends only on that position's
   receptive field, so it is computed on windows that follow the receptive field down through
   every operation (:mod:`audioconv.interpret.signal`), zeroed where they hang over the border, so
   the numbers equal the full computation exactly; where two branches meet, their windows are
   united. Operations without a window rule (a reshape, a flatten) work on the whole tensor. Until
   the first convolution mixes channels, a unit's signal lives in its own channel only.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.interpret.frames import allowed_positions
from audioconv.interpret.graph import Graph, backward, unit_cells
from audioconv.interpret.receptive_field import receptive_field_boxes
from audioconv.interpret.rules import MODES, Mode
from audioconv.interpret.signal import Signal
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["Projector", "Projection"]

_POSITIONS = '"max", "map", a pair (f, t) of feature-map cells, or a (B, K, 2) long tensor'
_MAX_ELEMENTS = 1 << 24  # bound on the largest backward tensor of one unit chunk


@dataclass
class Projection:
    """Projections of K units for B inputs, in the inputs' log-mel space (CPU tensors).

    Attributes:
        spectrograms: ``(B, F, T)`` the inputs in log-mel space (dB for a SpectrogramCNN).
        maps: ``(B, K, F, T)`` signed projections (same units as ``spectrograms`` × activation).
        activations: ``(B, K)`` the activation that seeded each map (for ``"map"``: the map's max).
        positions: ``(B, K, 2)`` long, ``(f, t)`` feature-map cell of that activation (for
            ``"map"``: the argmax).
        receptive_fields: ``(B, K, 4)`` long, ``(f0, f1, t0, t1)`` half-open box of input cells seen
            by ``positions``, clipped to the input; a single-position map is zero outside it.
        layer: the layer name as given (``"conv2"``).
        channels: ``(K,)`` long (or ``(B, K)`` when channels were chosen per input).
        mode: ``"deconv"``, ``"guided"`` or ``"gradient"``.
        seeding: ``"position"`` (one activation per map) or ``"map"`` (the whole feature map).
        hz: ``(F,)`` centre frequency of each mel bin in Hz, or ``None`` without a LogMel front end.
        seconds: ``(T,)`` centre time of each frame in s, or ``None``.
        feature_size: ``(H, W)`` of the layer's feature map.
    """

    spectrograms: torch.Tensor
    maps: torch.Tensor
    activations: torch.Tensor
    positions: torch.Tensor
    receptive_fields: torch.Tensor
    layer: str
    channels: torch.Tensor
    mode: str
    seeding: str = "position"
    hz: np.ndarray | None = None
    seconds: np.ndarray | None = None
    feature_size: tuple[int, int] = field(default=(0, 0))

    def channel_of(self, b: int, k: int) -> int:
        """Channel of unit ``k`` of input ``b``."""
        return int(self.channels[b, k] if self.channels.dim() == 2 else self.channels[k])

    def summary(self, b: int, k: int) -> dict:
        """JSON-ready facts about one map: layer, channel, mode, activation, position, receptive field (cells, Hz, s)."""
        f0, f1, t0, t1 = (int(v) for v in self.receptive_fields[b, k])
        out = {"layer": self.layer, "channel": self.channel_of(b, k), "mode": self.mode,
               "seeding": self.seeding, "activation": float(self.activations[b, k]),
               "position": [int(v) for v in self.positions[b, k]],
               "receptive_field": [f0, f1, t0, t1]}
        if self.hz is not None and f1 > f0:
            out["receptive_field_hz"] = [float(self.hz[f0]), float(self.hz[f1 - 1])]
        if self.seconds is not None and t1 > t0:
            out["receptive_field_s"] = [float(self.seconds[t0]), float(self.seconds[t1 - 1])]
        return out

    def select(self, index) -> "Projection":
        """The projection restricted to inputs ``index`` (int, slice or index tensor) of the batch."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        ch = self.channels[index] if self.channels.dim() == 2 else self.channels
        return replace(self, spectrograms=self.spectrograms[index], maps=self.maps[index],
                       activations=self.activations[index], positions=self.positions[index],
                       receptive_fields=self.receptive_fields[index], channels=ch)


class Projector:
    """Project hidden units of a spectrogram CNN back onto the input's time–frequency plane.

    Args:
        model: a :class:`~audioconv.models.spectrogram_cnn.SpectrogramCNN` (inputs may be waveforms ``(B, C, T)`` /
            ``(B, T)``, sent through its front end, or log-mel ``(B, 1, F, T)`` / ``(B, F, T)``), or
            any ``nn.Module`` CNN taking ``(B, 1, F, T)`` whose path to the layer is a chain of
            supported modules (see :mod:`audioconv.interpret.rules`).
        mode: ``"deconv"`` (Zeiler & Fergus: the backward signal is rectified), ``"guided"``
            (guided backprop: rectified and gated by the forward sign) or ``"gradient"`` (plain
            saliency). Backward rules per module type: :mod:`audioconv.interpret.rules`.
        device: where to compute (default: CUDA if available, else CPU). If the model lives
            elsewhere, the projector works on one copy moved there, made here (it sees the weights
            as they are now); the model itself is never moved.

    Attributes:
        model: the caller's model; ``traced``: the :class:`~audioconv.interpret.traced.TracedModel`
        the projector runs (the model on ``device``, its traced paths); ``mode``; ``device``.

    The model runs in eval mode during a call and its train/eval flags are restored afterwards; no
    hooks are left on it. :func:`audioconv.interpret.topk.top_k` accepts a projector in place of a
    model and then uses its mode, device and device copy.
    """

    def __init__(self, model: nn.Module, mode: str = "deconv", device: str | torch.device | None = None):
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.model, self.mode = model, mode
        self.traced = TracedModel(model, device)
        self.device = self.traced.device

    @property
    def layer_names(self) -> list[str]:
        """The model's short layer names, else its activation modules (:attr:`TracedModel.layer_names`)."""
        return self.traced.layer_names

    def to_logmel(self, inputs, input_kind: str = "auto") -> torch.Tensor:
        """Inputs → log-mel ``(B, 1, F, T)`` on the projector's device in the model's dtype
        (see :meth:`~audioconv.interpret.traced.TracedModel.to_logmel`)."""
        return self.traced.to_logmel(inputs, input_kind)

    def path(self, layer: str, logmel: torch.Tensor | None = None) -> Graph:
        """The traced graph from the input to ``layer`` (see :meth:`~audioconv.interpret.traced.TracedModel.path`)."""
        return self.traced.path(layer, logmel)

    def feature_maps(self, inputs, layer: str, *, input_kind: str = "auto") -> torch.Tensor:
        """The layer's feature maps ``(B, C, H, W)`` for the inputs (one forward, no grad), on the device."""
        return self.traced.feature_maps(self.to_logmel(inputs, input_kind), [layer])[layer]

    # ---- projection ---------------------------------------------------------------------------
    def project(self, inputs, layer: str, channels=None, position="max", *, batch_size: int = 64,
                progress: bool = True, crop: bool | None = None, input_kind: str = "auto",
                frames=None) -> Projection:
        """Project K units of ``layer`` for each input.

        Args:
            inputs: waveforms ``(B, C, T)``/``(B, T)`` (SpectrogramCNN) or log-mel ``(B, 1, F, T)``/``(B, F, T)``.
            layer: ``"conv2"``, a module name from ``model.named_modules()`` (``"layer1.0.relu2"``,
                ``"layer1.0.relu#2"`` for the second call of a module called twice) or an operation
                name (``"layer1.0:add"``; see ``docs/projection.md``) whose output is the feature map
                ``(B, C_l, H, W)`` (``(B, C_l)`` and ``(B, C_l, L)`` outputs count as ``H = 1``).
            channels: ``None`` (all C_l), an int, a sequence / ``(K,)`` tensor, or a ``(B, K)`` long
                tensor choosing the channels per input (e.g. one row per top-k hit).
            position: ``"max"`` (each unit's strongest position in each input, first in row-major
                order on ties), ``(f, t)`` (the same feature-map cell for all), a ``(B, K, 2)`` long
                tensor of cells, or ``"map"`` (seed the whole feature map with its own activations).
            batch_size: inputs per forward pass.
            progress: show a tqdm bar.
            crop: compute single-position maps on receptive-field windows (``True``), on the full
                plane (``False``), or whichever is less work (``None``). The numbers are the same.
            input_kind: ``"auto"``, ``"logmel"`` or ``"waveform"`` (see :meth:`to_logmel`).
            frames: ``(B, T)`` bool over the input frames, for ``"max"`` (and the reported argmax of
                ``"map"``): only positions whose receptive-field centre frame is ``True`` compete,
                e.g. :func:`~audioconv.interpret.frames.active_frames` (real, non-silent frames).
                ``None``: every position. The strongest allowed activation may be 0 (the unit is
                silent there; its map is then all zero).

        Returns:
            :class:`Projection` (CPU tensors).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        with eval_mode(self.traced.model), torch.no_grad():
            x = self.to_logmel(inputs, input_kind)
            B, _, F_, T_ = x.shape
            mode = Mode(self.mode)
            path = self.traced.trace(layer, x[:batch_size], mode)  # the first chunk's graph and records
            C = path.channels
            H, W = path.feature_size()
            chan = _channels(channels, B, C, layer).to(x.device)  # (B, K)
            seeding, pos = _positions(position, B, chan.shape[1], H, W, layer, x.device)
            allowed = None if frames is None or pos is not None else _allowed(path, frames, B, (H, W), (F_, T_))
            if crop is None:  # the crop is exact either way; use it when it is less work
                crop = unit_cells(path, True) < unit_cells(path, False)
            crop_now = seeding == "position" and bool(crop) and path.feature_map.dim() == 4
            per_unit = unit_cells(path, crop_now)  # cells of one unit's largest backward tensor
            maps, acts, where = [], [], []
            starts = range(0, B, batch_size)
            for s in tqdm(starts, desc=f"project {layer}", disable=not progress or len(starts) < 2):
                e = min(s + batch_size, B)
                graph = path if s == 0 else self.traced.trace(layer, x[s:e], mode)
                m, a, p = self._project_chunk(graph, mode, x.shape[-2:], chan[s:e], seeding,
                                              None if pos is None else pos[s:e], crop_now, per_unit,
                                              None if allowed is None else allowed[s:e])
                maps.append(m.cpu()), acts.append(a.cpu()), where.append(p.cpu())
            cat = (lambda parts: parts[0] if len(parts) == 1 else torch.cat(parts))  # no copy for one chunk
            positions = cat(where)
            hz, seconds = self.traced.axes(F_, T_)
            chans = chan[0].cpu() if bool((chan == chan[:1]).all()) and not _per_input(channels) else chan.cpu()
            return Projection(
                spectrograms=x[:, 0].detach().cpu(), maps=cat(maps), activations=cat(acts),
                positions=positions, receptive_fields=receptive_field_boxes(path, positions, (F_, T_)),
                layer=layer, channels=chans, mode=self.mode, seeding=seeding, hz=hz, seconds=seconds,
                feature_size=(int(H), int(W)))

    def _project_chunk(self, graph: Graph, mode: Mode, input_hw, chan, seeding, pos, crop, per_unit, allowed=None):
        """One chunk of inputs traced as ``graph`` → (maps ``(B, K, F, T)``, activations, positions).

        ``per_unit``: cells of one unit's largest backward tensor (sets how many units run at once);
        ``allowed`` ``(B, H, W)`` bool: the cells the argmax of ``"max"``/``"map"`` may pick (``None``: all)."""
        fm = graph.feature_map
        B, K = chan.shape
        dev = fm.device
        H, W = graph.feature_size()
        fm4 = fm.reshape(fm.shape[0], fm.shape[1], H, W)
        bi = torch.arange(B, device=dev)[:, None]
        sel = fm4[bi, chan]  # (B, K, H, W)
        if pos is None:  # "max" or "map": argmax of each unit's map (over the allowed cells)
            cand = sel if allowed is None else sel.masked_fill(~allowed.to(dev)[:, None], float("-inf"))
            flat = cand.flatten(2).argmax(-1)
            pos = torch.stack([flat // W, flat % W], dim=-1)
        acts = sel[bi, torch.arange(K, device=dev)[None], pos[..., 0], pos[..., 1]]  # (B, K)
        kc = max(1, _MAX_ELEMENTS // max(1, B * per_unit))
        out = sel.new_zeros(B, K, *input_hw)
        for k0 in range(0, K, kc):
            k1 = min(k0 + kc, K)
            seed = _seed(fm, sel[:, k0:k1], chan[:, k0:k1], pos[:, k0:k1], acts[:, k0:k1], seeding, crop)
            backward(graph, seed, mode).add_to(out[:, k0:k1])
        return out, acts, pos


# ---- helpers ------------------------------------------------------------------------------------
def _allowed(path: Graph, frames, B: int, feature_hw, input_hw) -> torch.Tensor:
    """``frames`` ``(B, T)`` → the ``(B, H, W)`` cells a "max" position may take (ValueError when none)."""
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.bool or frames.shape != (B, int(input_hw[1])):
        raise ValueError(f"frames must be a (B={B}, T={int(input_hw[1])}) bool tensor, got {tuple(frames.shape)} "
                         f"{frames.dtype}")
    allowed = allowed_positions(path, frames.cpu(), feature_hw, input_hw)
    empty = torch.nonzero(~allowed.flatten(1).any(1)).flatten().tolist()
    if empty:
        raise ValueError(f"input {empty[0]} has no position whose receptive field is centred on an allowed frame "
                         f"(frames is False everywhere it matters)")
    return allowed


def _per_input(channels) -> bool:
    return isinstance(channels, torch.Tensor) and channels.dim() == 2


def _channels(channels, B: int, C: int, layer: str) -> torch.Tensor:
    """Channel choice → ``(B, K)`` long, validated against ``C`` channels."""
    if channels is None:
        ch = torch.arange(C)
    elif isinstance(channels, bool):
        raise ValueError(f"channels must be ints in 0..{C - 1}, got {channels!r}")
    elif isinstance(channels, (int, np.integer)):
        ch = torch.tensor([int(channels)])
    else:
        try:
            ch = torch.as_tensor(channels)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"channels must be ints in 0..{C - 1} of layer {layer!r}, got {channels!r}") from None
        if ch.is_floating_point() or ch.dtype == torch.bool or ch.dim() > 2 or ch.numel() == 0:
            raise ValueError(f"channels must be a non-empty (K,) or (B, K) set of ints in 0..{C - 1}, got {channels!r}")
    ch = ch.long().cpu()
    if ch.dim() == 2 and ch.shape[0] != B:
        raise ValueError(f"per-input channels must be (B={B}, K), got {tuple(ch.shape)}")
    bad = ch[(ch < 0) | (ch >= C)]
    if bad.numel():
        raise ValueError(f"channel {int(bad[0])} does not exist in layer {layer!r}; valid channels: 0..{C - 1}")
    return (ch if ch.dim() == 2 else ch.view(1, -1).expand(B, -1)).contiguous()


def _positions(position, B: int, K: int, H: int, W: int, layer: str, device):
    """Position choice → (seeding, ``(B, K, 2)`` long or ``None`` for argmax)."""
    valid = f"valid positions in layer {layer!r}'s {H} x {W} feature map: f 0..{H - 1}, t 0..{W - 1}"
    if isinstance(position, str):
        if position == "max":
            return "position", None
        if position == "map":
            return "map", None
        raise ValueError(f"position must be {_POSITIONS}; got {position!r}")
    if isinstance(position, torch.Tensor) and position.dim() == 3:
        if position.shape != (B, K, 2) or position.is_floating_point():
            raise ValueError(f"a position tensor must be (B={B}, K={K}, 2) long, got {tuple(position.shape)} {position.dtype}")
        pos = position.long()
    else:
        try:
            f, t = (int(v) for v in position)
            if any(isinstance(v, (bool, float)) for v in position):
                raise TypeError
        except (TypeError, ValueError):
            raise ValueError(f"position must be {_POSITIONS}; got {position!r}") from None
        pos = torch.tensor([f, t]).view(1, 1, 2).expand(B, K, 2)
    bad = (pos[..., 0] < 0) | (pos[..., 0] >= H) | (pos[..., 1] < 0) | (pos[..., 1] >= W)
    if bool(bad.any()):
        f, t = (int(v) for v in pos[bad][0])
        raise ValueError(f"position (f={f}, t={t}) is outside the feature map; {valid}")
    return "position", pos.to(device).contiguous()


def _seed(fm: torch.Tensor, sel, chan, pos, acts, seeding: str, crop: bool) -> Signal:
    """The backward signal on the layer's output for units ``chan`` ``(B, K)`` of feature maps ``fm``.

    ``sel`` ``(B, K, H, W)``: the units' maps; ``pos`` ``(B, K, 2)``; ``acts`` ``(B, K)``.
    ``"map"``: each unit's whole map; ``"position"``: its one activation, on a one-cell window at the
    position (``crop``) or on the whole map.
    """
    B, K, H, W = sel.shape
    if fm.dim() == 4:
        if seeding == "map":
            return Signal(sel.unsqueeze(2).clone(), chan, [0, 0])
        if crop:
            return Signal(acts[:, :, None, None, None].clone(), chan, [pos[..., 0], pos[..., 1]])
        g = sel.new_zeros(B, K, 1, H, W)
        g[torch.arange(B)[:, None], torch.arange(K)[None], 0, pos[..., 0], pos[..., 1]] = acts
        return Signal(g, chan, [0, 0])
    g = sel.new_zeros(B, K, fm.shape[1], H, W)  # a (B, C) or (B, C, L) output: a dense signal
    idx = chan[:, :, None, None, None].expand(B, K, 1, H, W)
    if seeding == "map":
        g.scatter_(2, idx, sel.unsqueeze(2))
    else:
        one = sel.new_zeros(B, K, 1, H, W)
        one[torch.arange(B)[:, None], torch.arange(K)[None], 0, pos[..., 0], pos[..., 1]] = acts
        g.scatter_(2, idx, one)
    return Signal(g.reshape(B, K, *fm.shape[1:]))
