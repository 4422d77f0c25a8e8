"""Invariance and equivariance of each layer to a transform of the input (Zeiler & Fergus, Fig. 5, for sound).

:func:`invariance` transforms a set of clips by each amount of one of the package's own
augmentations (:class:`~audioconv.augment.TimeShift`, :class:`~audioconv.augment.PitchShift`,
:class:`~audioconv.augment.Gain`, :class:`~audioconv.augment.Reverb`,
:class:`~audioconv.augment.AddNoise`), runs the model once per batch of clips and amount
(:func:`audioconv.interpret.graph.capture`: one whole forward pass gives the feature maps of every
layer and the logits), and measures per layer:

* **invariance distance** — how far the layer's feature map of the transformed clip ``ψ`` lies from
  that of the original ``φ``: the Euclidean distance ``‖ψ − φ‖`` of Zeiler & Fergus, over the
  compared cells (below), **divided by the root-mean-square distance between the feature maps of
  two different probe clips** on the same cells, ``R = sqrt(mean over pairs i ≠ j of
  ½(‖φ_i − φ_j‖² + ‖ψ_i − ψ_j‖²))``. So 0 = the layer did not change, 1 = the transform moved the
  layer as far as swapping the clip for another clip of the probe set. The normaliser makes layers
  of any size and scale comparable, and is the same for ``(φ, ψ)`` and ``(ψ, φ)``: the distance is
  symmetric. It needs two clips or more; a layer whose maps do not differ between the clips has
  no distance (``None``).
* **equivariance distance** (time shift, pitch shift) — the same distance after moving ``φ`` by what
  the transform did to the input, at the layer's stride: a time shift of ``m`` frames moves a layer
  of stride ``S`` frames by ``m / S`` positions; a pitch shift by ``k`` semitones moves the row
  whose receptive field is centred on mel bin ``c`` (``f`` Hz) to the row centred on
  ``f · 2^(k/12)`` Hz (mel bins are not log-frequency, so low rows move less than high ones: a
  warp, row by row). Displacements are rounded to the nearest position, halves away from zero
  (``exact`` says where no rounding happened). Small = the layer moved with the input
  (place-coded); large while the invariance distance is small = it stayed put (rate-coded).
  Strides and receptive fields come from the traced graph (:meth:`TracedModel.path` ``.window``).
* **the true-class probability** (softmax of the logits) at each amount, its change from the
  original clip, and the accuracy. The true class is the label given, else the class the model
  predicts for the original clip.

**Borders.** Only cells that carry the same content in both inputs are compared. Along the axis
the transform moves, the *valid* input cells are those whose content is real in both clips: for a
time shift of ``m`` samples the frames whose analysis window (``win_length`` samples around the
frame centre) lies inside the samples the shift kept (neither the zero-filled ones nor the STFT's
edge padding), for a pitch shift the mel bins whose triangle maps inside ``[f_min, f_max]``. A
layer position is compared when its receptive field lies inside the valid cells (``"receptive
field"`` rule); a layer whose receptive field is too large for that at some amount (a deep layer,
or BC-ResNet's frequency average, which sees the whole axis) is compared, at every amount, where
its receptive field's **centre** is valid (``"centre"`` rule: cells near the border still see
some padding, so its distances include a border effect). A layer reduced along the axis (one
position, e.g. after global pooling) is compared whole and has no equivariance distance. With
``shift_mode="roll"`` nothing leaves the clip: every cell is compared and the layer is rolled
circularly. Transforms that move nothing (gain, reverb, noise) compare every cell.

**Transforms, deterministically.** Each amount is written straight into the augmentation's
parameter dict and replayed with ``apply`` (no random draw): ``shift_s`` (s), ``semitones``,
``gain_db``, ``rt60_s`` (synthetic RIR with a fixed direct-to-reverberant ratio) and ``snr_db``.
Reverb and noise need a window of the package's fixed noise bank: each clip gets one position,
drawn once from ``seed``, the same at every amount. The identity amount (shift 0, 0 semitones,
0 dB gain, RT60 0 s, SNR ``inf``) is not run through the transform: its feature maps are the
original ones and its distances are exactly 0. Log-mel inputs (a model without front end) can
only be shifted in time, by whole frames (``TimeShift`` on the frame axis).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import librosa
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from audioconv.augment import AddNoise, Gain, PitchShift, Reverb, TimeShift
from audioconv.interpret.graph import as_4d, capture as graph_capture
from audioconv.interpret.traced import TracedModel
from audioconv.utils import eval_mode

__all__ = ["TRANSFORMS", "LOGITS", "ProbeTransform", "probe_transform", "InvarianceResult", "invariance"]

LOGITS = "logits"  # the name of the model's output in the results (a vector: compared whole)

# name: (parameter the amount sets, unit of amounts, figure axis label, display factor, axis moved, identity)
TRANSFORMS = {
    "time_shift": ("shift_s", "s", "time shift (ms)", 1000.0, "time", 0.0),
    "pitch_shift": ("semitones", "semitones", "pitch shift (semitones)", 1.0, "freq", 0.0),
    "gain": ("gain_db", "dB", "gain (dB)", 1.0, None, 0.0),
    "reverb": ("rt60_s", "s", "reverberation time RT60 (s)", 1.0, None, 0.0),
    "noise": ("snr_db", "dB", "signal-to-noise ratio (dB)", 1.0, None, math.inf),
}
DEFAULT_AMOUNTS = {
    "time_shift": (-0.16, -0.08, -0.04, -0.02, -0.01, 0.0, 0.01, 0.02, 0.04, 0.08, 0.16),
    "pitch_shift": (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0),
    "gain": (-24.0, -18.0, -12.0, -6.0, 0.0, 6.0, 12.0),
    "reverb": (0.0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0),
    "noise": (0.0, 5.0, 10.0, 20.0, 30.0, 40.0, math.inf),
}
NORMALISATION = ("Euclidean distance over the compared cells divided by the RMS distance between two different "
                 "probe clips on the same cells (1 = as far as another clip)")


@dataclass
class ProbeTransform:
    """One of the package's augmentations, set to an amount and replayed (module docstring).

    Attributes:
        name: ``"time_shift"``, ``"pitch_shift"``, ``"gain"``, ``"reverb"`` or ``"noise"``.
        augmentation: the :class:`~audioconv.augment.base.Augmentation` that applies it.
        key: its parameter the amount sets (``"shift_s"`` ...); ``unit``: the amount's unit.
        label: the figure's axis label (with the displayed unit); ``scale``: displayed = amount × scale.
        axis: ``"time"``, ``"freq"`` or ``None`` (moves nothing); ``identity``: the amount that is no change.
        fixed: parameters held fixed at every amount (``{"drr_db": 6.0}``), for the record.
    """

    name: str
    augmentation: object
    key: str
    unit: str
    label: str
    scale: float
    axis: str | None
    identity: float
    fixed: dict = field(default_factory=dict)

    def params(self, amount: float, batch: int, noise_pos: torch.Tensor | None, device) -> dict:
        """The parameter dict that applies ``amount`` to ``batch`` clips (``apply`` false at the identity)."""
        on = float(amount) != self.identity
        value = float(amount) if math.isfinite(amount) else 0.0
        params = {"apply": torch.full((batch,), on, dtype=torch.bool, device=device),
                  self.key: torch.full((batch,), value, dtype=torch.float32, device=device)}
        if self.name in ("reverb", "noise"):
            params["noise_pos"] = noise_pos.to(device)
        if self.fixed.get("drr_db") is not None:
            params["drr_db"] = torch.full((batch,), float(self.fixed["drr_db"]), dtype=torch.float32, device=device)
        return params


def probe_transform(name: str, sample_rate: int | None, amounts, shift_mode: str = "zero",
                    noise_color: str | float = "white", drr_db: float | None = 6.0) -> ProbeTransform:
    """The :class:`ProbeTransform` ``name`` at ``sample_rate`` Hz, checked against ``amounts``.

    Args:
        name: a key of :data:`TRANSFORMS`.
        sample_rate: Hz of the waveforms; ``None`` for log-mel inputs (then ``amounts`` of
            ``time_shift`` are already whole frames and the shift acts on the frame axis).
        amounts: the amounts (units of :data:`TRANSFORMS`), checked here.
        shift_mode: ``"zero"`` (vacated samples are zeros) or ``"roll"`` (circular), for ``time_shift``.
        noise_color: ``"white"``, ``"pink"``, ``"brown"`` or a slope in dB/octave, for ``noise``.
        drr_db: direct-to-reverberant ratio of the synthetic RIRs (dB; ``None``: plain decaying
            noise), for ``reverb``. Default 6 dB, the middle of the training chain's 0–12 dB.
    """
    if name not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {name!r}")
    key, unit, label, scale, axis, identity = TRANSFORMS[name]
    _check_amounts(name, amounts, unit)
    finite = [a for a in amounts if math.isfinite(a)]
    if sample_rate is None and name != "time_shift":
        raise ValueError(f"transform {name!r} acts on waveforms: pass waveforms (B, C, T) and a model with a LogMel "
                         "front end (log-mel inputs can only be shifted in time)")
    fixed: dict = {}
    if name == "time_shift":
        aug = TimeShift(sample_rate or 1, shift_s=(min(finite), max(finite)), mode=shift_mode, p=1.0)
        fixed["mode"] = shift_mode
    elif name == "pitch_shift":
        aug = PitchShift(sample_rate, semitones=(min(finite), max(finite)), p=1.0)
    elif name == "gain":
        aug = Gain(gain_db=(min(finite), max(finite)), p=1.0)
    elif name == "reverb":
        drr = None if drr_db is None else float(drr_db)
        aug = Reverb(sample_rate, rt60_s=(1e-3, max(max(finite), 1e-3)), drr_db=None if drr is None else (drr, drr),
                     p=1.0)
        fixed["drr_db"] = drr
    else:
        aug = AddNoise(snr_db=(min(finite, default=0.0), max(finite, default=0.0)), color=noise_color, p=1.0)
        fixed["color"] = noise_color
    return ProbeTransform(name, aug, key, unit, label, scale, axis, identity, fixed)


def _check_amounts(name: str, amounts, unit: str) -> None:
    if len(amounts) == 0:
        raise ValueError("amounts is empty: give at least one amount of the transform")
    for a in amounts:
        if isinstance(a, bool) or not isinstance(a, (int, float)) or math.isnan(a):
            raise ValueError(f"amounts must be numbers ({unit}), got {a!r}")
        if math.isinf(a) and not (name == "noise" and a > 0):
            raise ValueError(f"amount {a} {unit} of {name!r} is not finite (only noise takes inf: SNR inf dB = clean)")
    if name == "pitch_shift" and max(abs(a) for a in amounts) > 24:
        raise ValueError(f"pitch_shift amounts must lie within ±24 semitones, got {max(amounts, key=abs)}")
    if name == "reverb" and min(amounts) < 0:
        raise ValueError(f"reverb amounts are RT60s in seconds (>= 0; 0 = dry), got {min(amounts)}")


# ---------------------------------------------------------------------------------------------
# the input's geometry: which cells are valid, how far the transform moves them
# ---------------------------------------------------------------------------------------------
@dataclass
class _Input:
    """What the border and displacement rules need to know about the log-mel input."""

    n_cells: tuple[int, int]  # (mel bins, frames)
    n_samples: int | None  # waveform length (None: log-mel inputs)
    sample_rate: int | None
    hop: int | None
    win: int | None
    mel_points_hz: np.ndarray | None  # (n_mels + 2,) triangle edges and centres, HTK mel scale
    frame_s: float


def _shift_frames(pt: ProbeTransform, amount: float, inp: _Input) -> float:
    """Frames a time shift of ``amount`` s moves the log-mel by (the samples TimeShift moves / hop)."""
    if inp.sample_rate is None:
        return float(_frames_for(amount, inp.frame_s))
    samples = float(torch.round(torch.tensor(amount, dtype=torch.float64) * inp.sample_rate))
    return samples / inp.hop


def _frames_for(amount_s: float, frame_s: float) -> int:
    return int(round(amount_s / frame_s))


def _valid_frames(lo_sample: int, hi_sample: int, inp: _Input) -> tuple[int, int]:
    """Frames whose analysis window lies inside samples ``[lo, hi)`` → half-open frame interval."""
    half = inp.win / 2
    first = math.ceil((lo_sample + half) / inp.hop)
    last = math.floor((hi_sample - half) / inp.hop)
    return max(first, 0), min(last + 1, inp.n_cells[1])


def _valid_intervals(pt: ProbeTransform, amount: float, inp: _Input):
    """``(V_original, V_transformed)``: half-open intervals of valid input cells along the moved axis."""
    if pt.axis == "time":
        if inp.sample_rate is None:
            m, T = _frames_for(amount, inp.frame_s), inp.n_cells[1]
            return (max(0, -m), min(T, T - m)), (max(0, m), min(T, T + m))
        m = int(round(_shift_frames(pt, amount, inp) * inp.hop))
        T = inp.n_samples
        return (_valid_frames(max(0, -m), min(T, T - m), inp), _valid_frames(max(0, m), min(T, T + m), inp))
    ratio = 2.0 ** (amount / 12.0)
    pts = inp.mel_points_hz
    f_lo, f_hi = pts[0] - 1e-9, pts[-1] + 1e-9
    lows, highs = pts[:-2], pts[2:]  # each bin's triangle spans [lows[b], highs[b]]
    ok_t = (lows / ratio >= f_lo) & (highs / ratio <= f_hi)  # content came from inside the band
    ok_o = (lows * ratio >= f_lo) & (highs * ratio <= f_hi)  # content stays inside the band
    return _interval(ok_o), _interval(ok_t)


def _interval(ok: np.ndarray) -> tuple[int, int]:
    idx = np.flatnonzero(ok)
    return (0, 0) if idx.size == 0 else (int(idx[0]), int(idx[-1]) + 1)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


@dataclass
class _AxisGeometry:
    """The receptive fields of one layer's positions along the moved axis, in input cells."""

    lo: np.ndarray  # (n,) first input cell of each position
    size: np.ndarray  # (n,) cells seen
    stride: int  # input cells between positions; 0: the layer sees the whole axis at every position

    @property
    def centre(self) -> np.ndarray:
        return self.lo + (self.size - 1) / 2.0


def _axis_geometry(traced: TracedModel, layer: str, example: torch.Tensor, axis: str, n: int) -> _AxisGeometry:
    graph = traced.path(layer, example)
    pos = torch.arange(max(n, 2))
    zero = torch.zeros_like(pos)
    f0, sf, t0, st = graph.window(pos, zero) if axis == "freq" else graph.window(zero, pos)
    lo, size = (f0, sf) if axis == "freq" else (t0, st)
    lo, size = np.asarray(lo, dtype=np.int64), np.asarray(size, dtype=np.int64)
    return _AxisGeometry(lo[:n], size[:n], int(lo[1] - lo[0]))


def _source_positions(pt: ProbeTransform, amount: float, geo: _AxisGeometry, inp: _Input) -> np.ndarray:
    """Fractional position of the original map that each position of the transformed map shows, ``(n,)``."""
    n = len(geo.lo)
    if pt.axis == "time":
        return np.arange(n) - _shift_frames(pt, amount, inp) / geo.stride
    pts = inp.mel_points_hz
    mel0 = librosa.hz_to_mel(pts[0], htk=True)
    step = (librosa.hz_to_mel(pts[-1], htk=True) - mel0) / (len(pts) - 1)
    hz = librosa.mel_to_hz(mel0 + (geo.centre + 1.0) * step, htk=True)  # bin b is centred on mel point b + 1
    source_bin = (librosa.hz_to_mel(hz / 2.0 ** (amount / 12.0), htk=True) - mel0) / step - 1.0
    return (source_bin - geo.centre[0]) / geo.stride


def _inside(geo: _AxisGeometry, index: np.ndarray, interval, rule: str) -> np.ndarray:
    lo_v, hi_v = interval
    if rule == "receptive field":
        return (geo.lo[index] >= lo_v) & (geo.lo[index] + geo.size[index] <= hi_v)
    centre = geo.centre[index]
    return (centre >= lo_v) & (centre <= hi_v - 1)


@dataclass
class _AxisMap:
    """For one layer and amount, along the moved axis: which positions are compared and with what."""

    src: np.ndarray  # (n,) position of the original map each transformed position is compared with
    eq: np.ndarray  # (n,) bool: compared for equivariance
    inv: np.ndarray  # (n,) bool: compared for invariance
    displacement: float  # mean displacement (positions) over the compared positions
    exact: bool  # no rounding was needed


def _axis_map(pt: ProbeTransform, amount: float, geo: _AxisGeometry, inp: _Input, rule: str) -> _AxisMap:
    n = len(geo.lo)
    frac = _source_positions(pt, amount, geo, inp)
    src = np.arange(n) - _round_half_away(np.arange(n) - frac)
    exact = bool(np.all(np.abs(frac - np.round(frac)) < 1e-6))
    if pt.axis == "time" and pt.fixed.get("mode") == "roll":
        every = np.ones(n, dtype=bool)
        return _AxisMap(src % n, every, every, float(np.mean(np.arange(n) - frac)), exact)
    v_o, v_t = _valid_intervals(pt, amount, inp)
    both = (max(v_o[0], v_t[0]), min(v_o[1], v_t[1]))
    here = np.arange(n)
    inv = _inside(geo, here, both, rule)
    inside_src = (src >= 0) & (src < n)
    eq = _inside(geo, here, v_t, rule) & inside_src
    eq[inside_src] &= _inside(geo, src[inside_src], v_o, rule)
    disp = float(np.mean((here - frac)[eq])) if eq.any() else float(np.mean(here - frac))
    return _AxisMap(np.clip(src, 0, n - 1), eq, inv, disp, exact)


def _layer_axis_maps(pt, amounts, geo: _AxisGeometry, inp: _Input) -> tuple[str, list[_AxisMap]]:
    """``(rule, one map per amount)``: the receptive-field rule unless it leaves an amount with nothing."""
    maps = [_axis_map(pt, a, geo, inp, "receptive field") for a in amounts]
    if pt.fixed.get("mode") == "roll" or all(m.inv.any() and m.eq.any() for m in maps):
        return ("none (circular)" if pt.fixed.get("mode") == "roll" else "receptive field"), maps
    return "centre", [_axis_map(pt, a, geo, inp, "centre") for a in amounts]


# ---------------------------------------------------------------------------------------------
# what is compared at each layer and amount
# ---------------------------------------------------------------------------------------------
@dataclass
class _Compare:
    """One layer at one amount: the cells compared and the original cells they are compared with."""

    inv: torch.Tensor  # (H, W) bool, cells of the invariance distance
    eq: torch.Tensor | None  # (H, W) bool, cells of the equivariance distance (None: not defined)
    src_f: torch.Tensor  # (H,) long, row of the original map each row is compared with (equivariance)
    src_t: torch.Tensor  # (W,) long, column likewise
    displacement: float  # positions the layer was moved by (mean over compared positions; nan: none)
    exact: bool

    def __post_init__(self):
        """The bounding box of the equivariance cells and, per axis, the original cells they read: a slice
        where those are consecutive (a shift: no gather, which is slow along the last axis), else indices."""
        self.box, self.sel = None, None
        if self.eq is None or not bool(self.eq.any()):
            return
        rows, cols = self.eq.any(1).nonzero()[:, 0], self.eq.any(0).nonzero()[:, 0]
        f0, f1, t0, t1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        self.box = (slice(f0, f1), slice(t0, t1))
        self.sel = (_selector(self.src_f[f0:f1]), _selector(self.src_t[t0:t1]))


def _selector(src: torch.Tensor):
    """``src`` (long) as a slice when its entries are consecutive, else itself."""
    if src.numel() and bool((src - src[0] == torch.arange(src.numel(), device=src.device)).all()):
        return slice(int(src[0]), int(src[0]) + src.numel())
    return src


@dataclass
class _Layer:
    name: str
    rule: str  # border rule along the moved axis
    stride: int | None  # input cells per position along the moved axis (None: not moved / reduced)
    receptive_field: int | None  # input cells one position sees along the moved axis
    compare: list  # one _Compare per amount


def _layer_plan(traced, name, shape, pt, amounts, inp, example, device) -> _Layer:
    """How layer ``name`` (feature map ``shape``: (B, C, H, W), or 2-/3-D) is compared at each amount."""
    H, W = (shape[2], shape[3]) if len(shape) == 4 else (1, shape[2] if len(shape) == 3 else 1)
    every = torch.ones(H, W, dtype=torch.bool, device=device)
    rows, cols = torch.arange(H, device=device), torch.arange(W, device=device)
    n = (H if pt.axis == "freq" else W) if pt.axis else 1
    if pt.axis is None or len(shape) != 4 or n < 2:
        rule = "whole map" if pt.axis else "every cell"
        return _Layer(name, rule, None, None, [_Compare(every, None, rows, cols, math.nan, True) for _ in amounts])
    geo = _axis_geometry(traced, name, example, pt.axis, n)
    if geo.stride <= 0:  # the layer sees the whole axis at every position: nothing moves
        return _Layer(name, "whole axis", None, int(geo.size[0]),
                      [_Compare(every, None, rows, cols, math.nan, True) for _ in amounts])
    rule, maps = _layer_axis_maps(pt, amounts, geo, inp)
    plans = []
    for m in maps:
        src = torch.as_tensor(m.src, device=device)
        inv, eq = (torch.as_tensor(m.inv, device=device), torch.as_tensor(m.eq, device=device))
        if pt.axis == "freq":
            plans.append(_Compare(inv[:, None] & every, eq[:, None] & every, src, cols, m.displacement, m.exact))
        else:
            plans.append(_Compare(inv[None, :] & every, eq[None, :] & every, rows, src, m.displacement, m.exact))
    return _Layer(name, rule, geo.stride, int(geo.size[0]), plans)


def _moved(a: torch.Tensor, c: _Compare) -> torch.Tensor:
    """``a`` ``(..., H, W)`` read, for each cell of the equivariance box, at the original position it is
    compared with: ``a[..., src_f, src_t]`` on the box."""
    rows, cols = c.sel
    a = a[..., rows, :] if isinstance(rows, slice) else a.index_select(-2, rows)
    return a[..., cols] if isinstance(cols, slice) else a.index_select(-1, cols)


class _Sums:
    """Running per-clip squared distances, and per-cell sums over the clips for the normaliser.

    The sums are of ``φ − c`` and ``ψ − c`` with ``c`` the mean original map of the first batch (pair
    distances do not change when every map is moved by the same ``c``; it keeps ``2N·Q − 2‖S‖²`` from
    cancelling when the maps share a large mean). Channels are summed as soon as the formula allows.
    """

    def __init__(self, n_clips: int, n_layers: int, n_amounts: int):
        self.d2_inv = np.full((n_clips, n_layers, n_amounts), np.nan)
        self.d2_eq = np.full((n_clips, n_layers, n_amounts), np.nan)
        self.centre: dict = {}  # layer index → c (C, H, W)
        self.orig: dict = {}  # layer index → [Σ(φ − c) (C, H, W), Σ over clips and channels of (φ − c)² (H, W)]
        self.trans: dict = {}  # (layer index, amount index) → the same for ψ

    @staticmethod
    def _add(store: dict, key, centred: torch.Tensor) -> None:
        s1 = centred.sum(0).double()  # float64 after the reduction: casting inside it is slow on the CPU
        s2 = centred.square_().sum((0, 1)).double()  # (``centred`` is the caller's scratch copy)
        if key in store:
            store[key][0] += s1
            store[key][1] += s2
        else:
            store[key] = [s1, s2]

    def add_original(self, li: int, phi: torch.Tensor) -> None:
        if li not in self.centre:
            self.centre[li] = phi.mean(0)
        self._add(self.orig, li, phi - self.centre[li])

    def add(self, rows: slice, li: int, ai: int, phi: torch.Tensor, psi: torch.Tensor, c: _Compare) -> None:
        """Clips ``rows``: original maps ``phi`` and transformed ``psi`` ``(B, C, H, W)`` (``psi is phi`` at
        the identity amount: distances 0, and the normaliser reads the originals' sums)."""
        if psi is phi:
            self.d2_inv[rows, li, ai] = 0.0
            if c.box is not None:
                self.d2_eq[rows, li, ai] = 0.0
            return
        self._add(self.trans, (li, ai), psi - self.centre[li])
        d2 = (psi - phi).square_().sum(1)  # (B, H, W)
        self.d2_inv[rows, li, ai] = (d2 * c.inv).sum((1, 2)).double().cpu().numpy()
        if c.box is not None:
            d2 = (psi[(..., *c.box)] - _moved(phi, c)).square_().sum(1)
            self.d2_eq[rows, li, ai] = (d2 * c.eq[c.box]).sum((1, 2)).double().cpu().numpy()

    def pair_distance2(self, li: int, ai: int, c: _Compare, kind: str, n: int) -> float:
        """``R²``: mean over pairs of different clips of ½(‖φ_i − φ_j‖² + ‖ψ_i − ψ_j‖²) on the compared
        cells (nan when the clips do not differ there)."""
        mask = c.inv if kind == "inv" else c.eq[c.box]
        (s1, s2), (t1, t2) = self.orig[li], self.trans.get((li, ai), self.orig[li])
        if kind == "eq":
            s1, s2, t1, t2 = _moved(s1, c), _moved(s2, c), t1[(..., *c.box)], t2[c.box]
        total, energy = 0.0, 0.0
        for a1, a2 in ((s1, s2), (t1, t2)):
            q = float((a2 * mask).sum())
            total += (2 * n * q - 2 * float((a1.square().sum(0) * mask).sum())) / (n * (n - 1))
            energy += q / n
        r2 = total / 2
        return r2 if r2 > 1e-9 * max(energy, 1e-300) else math.nan

    def normalised(self, layers: list, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(invariance, equivariance)`` distances per clip ``(N, L, A)`` (nan: not defined)."""
        inv, eq = np.full_like(self.d2_inv, np.nan), np.full_like(self.d2_eq, np.nan)
        for li, layer in enumerate(layers):
            for ai, c in enumerate(layer.compare):
                if bool(c.inv.any()):
                    inv[:, li, ai] = np.sqrt(self.d2_inv[:, li, ai] / self.pair_distance2(li, ai, c, "inv", n))
                if c.box is not None:
                    eq[:, li, ai] = np.sqrt(self.d2_eq[:, li, ai] / self.pair_distance2(li, ai, c, "eq", n))
        return inv, eq


# ---------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------
def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over clips (axis 0) where defined (a layer/amount is defined for all
    clips or for none), nan elsewhere."""
    ok = ~np.isnan(a).any(axis=0)
    mean, std = np.full(a.shape[1:], np.nan), np.full(a.shape[1:], np.nan)
    mean[ok], std[ok] = a[:, ok].mean(axis=0), a[:, ok].std(axis=0)
    return mean, std


def _plain(v):
    """A float for JSON: ``None`` for nan, ``"inf"`` never (infinite amounts are written as ``null`` too)."""
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class InvarianceResult:
    """What :func:`invariance` measured. ``N`` clips, ``L`` layers (the last is :data:`LOGITS`), ``A`` amounts.

    Arrays hold ``nan`` where a value is not defined (no equivariance for transforms that move
    nothing or layers reduced along the axis; no cell left to compare; clips that do not differ).

    Attributes:
        transform, amounts, unit, label, scale, axis: the transform (see :class:`ProbeTransform`);
            ``amounts`` sorted, in ``unit``.
        layers: layer names; the model's output is :data:`LOGITS`.
        clip_invariance, clip_equivariance: ``(N, L, A)`` normalised distances per clip.
        cells, eq_cells: ``(L, A)`` positions compared per clip and channel.
        border_rule, stride, receptive_field: per layer, along the moved axis (input cells).
        displacement: ``(L, A)`` positions the layer's map was moved by (mean over compared positions);
            ``exact``: ``(L, A)`` whether that needed no rounding.
        p_true: ``(N, A)`` true-class probability; ``p_original``: ``(N,)`` on the original clips;
            ``correct``: ``(N, A)`` whether the most probable class is the true one.
        targets: ``(N,)`` the true classes; ``target_source``: ``"labels"`` or ``"predicted"``.
        input_kind: ``"waveform"`` or ``"logmel"``; ``settings``: fixed parameters and options.
    """

    transform: str
    amounts: list
    unit: str
    label: str
    scale: float
    axis: str | None
    layers: list
    clip_invariance: np.ndarray
    clip_equivariance: np.ndarray
    cells: np.ndarray
    eq_cells: np.ndarray
    border_rule: list
    stride: list
    receptive_field: list
    displacement: np.ndarray
    exact: np.ndarray
    p_true: np.ndarray
    p_original: np.ndarray
    correct: np.ndarray
    targets: np.ndarray
    target_source: str
    input_kind: str
    settings: dict = field(default_factory=dict)

    @property
    def n_clips(self) -> int:
        return int(self.p_true.shape[0])

    @property
    def invariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over clips of the invariance distance, ``(L, A)`` each."""
        return _mean_std(self.clip_invariance)

    @property
    def equivariance(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over clips of the equivariance distance, ``(L, A)`` each."""
        return _mean_std(self.clip_equivariance)

    def to_dict(self) -> dict:
        """JSON-ready summary (``null`` where a value is not defined; an infinite SNR is ``null`` with
        ``"amount_is_identity": true``)."""
        inv, inv_sd = self.invariance
        eq, eq_sd = self.equivariance
        layers = {}
        for li, name in enumerate(self.layers):
            has_eq = not np.isnan(eq[li]).all()
            layers[name] = {
                "invariance": [_plain(v) for v in inv[li]], "invariance_std": [_plain(v) for v in inv_sd[li]],
                "equivariance": [_plain(v) for v in eq[li]] if has_eq else None,
                "equivariance_std": [_plain(v) for v in eq_sd[li]] if has_eq else None,
                "cells": self.cells[li].tolist(), "eq_cells": self.eq_cells[li].tolist() if has_eq else None,
                "border_rule": self.border_rule[li], "stride_cells": self.stride[li],
                "receptive_field_cells": self.receptive_field[li],
                "displacement_positions": [_plain(v) for v in self.displacement[li]] if has_eq else None,
                "exact": [bool(v) for v in self.exact[li]] if has_eq else None,
            }
        p = self.p_true
        return {
            "transform": self.transform, "amounts": [_plain(a) for a in self.amounts], "amount_unit": self.unit,
            "amount_is_identity": [bool(a == TRANSFORMS[self.transform][5]) for a in self.amounts],
            "axis_label": self.label, "display_scale": self.scale, "moves_along": self.axis,
            "n_clips": self.n_clips, "input": self.input_kind, "targets": self.target_source,
            "normalisation": NORMALISATION, "settings": self.settings, "layers": layers,
            "probability": {"p_true": [_plain(v) for v in p.mean(0)], "p_true_std": [_plain(v) for v in p.std(0)],
                            "p_change": [_plain(v) for v in (p - self.p_original[:, None]).mean(0)],
                            "accuracy": [_plain(v) for v in self.correct.mean(0)],
                            "p_original": _plain(self.p_original.mean())},
        }


# ---------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------
def _inputs(traced: TracedModel, inputs, input_kind: str) -> tuple[torch.Tensor, str]:
    """Inputs → ``(waveforms (N, C, T) or log-mel (N, 1, F, T), kind)``, on the CPU."""
    x, kind = traced.input_kind(inputs, input_kind)
    if kind == "waveform":
        x = x.unsqueeze(1) if x.dim() == 2 else x
        if x.dim() != 3:
            raise ValueError(f"waveforms must be (clips, channels, samples) or (clips, samples), got {tuple(x.shape)}")
    else:
        x = x.unsqueeze(1) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"log-mel inputs must be (clips, 1, F, T) or (clips, F, T), got {tuple(x.shape)}")
    return x, kind


def _input_geometry(traced: TracedModel, x: torch.Tensor, kind: str, frame_s: float | None) -> _Input:
    fe = traced.frontend
    if kind == "logmel":
        step = float(frame_s) if frame_s is not None else (
            fe.config.hop_length / fe.config.sample_rate if fe is not None else 0.01)
        if not step > 0:
            raise ValueError(f"frame_s must be > 0 seconds, got {frame_s!r}")
        return _Input((int(x.shape[2]), int(x.shape[3])), None, None, None, None, None, step)
    c = fe.config
    return _Input((c.n_mels, fe.n_frames(int(x.shape[-1]))), int(x.shape[-1]), c.sample_rate, c.hop_length,
                  c.win_length, fe.mel_points_hz(), c.hop_length / c.sample_rate)


def _forward(traced: TracedModel, logmel: torch.Tensor, keys: dict) -> list[torch.Tensor]:
    """Feature maps of the layers ``keys`` (``{name: canonical key}``) and then the logits, as
    ``(B, C, H, W)``: one whole forward pass of log-mel ``(B, 1, F, T)`` (eval mode, no grad)."""
    with eval_mode(traced.model), torch.no_grad():
        logits, maps = graph_capture(traced.model, traced.entry, logmel.to(traced.device, traced.dtype), keys)
    return [as_4d(maps[name]) for name in keys] + [as_4d(logits)]


def _transformed(pt: ProbeTransform, xb: torch.Tensor, amount: float, noise_pos, kind: str, inp: _Input,
                 lengths) -> torch.Tensor:
    """The batch ``xb`` with the transform applied at ``amount`` (params written, not drawn)."""
    B = xb.shape[0]
    if kind == "logmel":  # TimeShift on the frame axis, by whole frames
        F_, T_ = xb.shape[-2:]
        params = pt.params(float(_frames_for(amount, inp.frame_s)), B, None, xb.device)
        return pt.augmentation.apply(xb.reshape(B, F_, T_), params).reshape(B, 1, F_, T_)
    return pt.augmentation.apply(xb, pt.params(amount, B, noise_pos, xb.device), lengths)


def _check_targets(targets, n: int) -> torch.Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets)
    if t.dim() != 1 or t.shape[0] != n or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"targets must be {n} class indices (one per clip), got shape {tuple(t.shape)} {t.dtype}")
    return t.long()


def _check_shift(pt: ProbeTransform, amounts, inp: _Input) -> None:
    if pt.axis != "time":
        return
    duration_s = inp.n_samples / inp.sample_rate if inp.sample_rate else inp.n_cells[1] * inp.frame_s
    too_long = [a for a in amounts if abs(a) >= duration_s]
    if too_long:
        raise ValueError(f"time shift {too_long[0]} s is not shorter than the clips ({duration_s:g} s); time_shift "
                         "amounts are in seconds")


def invariance(model: nn.Module, inputs, transform: str, amounts=None, layers=None, targets=None, *,
               lengths=None, shift_mode: str = "zero", noise_color: str | float = "white",
               drr_db: float | None = 6.0, frame_s: float | None = None, seed: int = 0, batch_size: int = 32,
               device=None, input_kind: str = "auto", progress: bool = True) -> InvarianceResult:
    """Measure how each layer's feature map changes when the inputs are transformed (module docstring).

    Args:
        model: a model with a LogMel front end (SpectrogramCNN, BC-ResNet, a brought backbone behind
            the front end) or any CNN taking log-mel ``(B, 1, F, T)``.
        inputs: waveforms ``(N, C, T)`` / ``(N, T)`` at the model's rate, or log-mel ``(N, 1, F, T)``
            (then only ``time_shift``); ``N >= 2`` (distances are normalised by between-clip distances).
        transform: ``"time_shift"``, ``"pitch_shift"``, ``"gain"``, ``"reverb"`` or ``"noise"``.
        amounts: the amounts, in the transform's unit — seconds of shift, semitones, dB of gain,
            RT60 in seconds (0 = dry), SNR in dB (``inf`` = clean); sorted here. Default
            :data:`DEFAULT_AMOUNTS` of the transform.
        layers: layer names (``"conv2"``, a module or an operation name); default the model's
            layers (:attr:`TracedModel.layer_names`). The logits are always added, as :data:`LOGITS`.
        targets: ``(N,)`` true class of each clip; default the class predicted for the original clip.
        lengths: ``(N,)`` real (unpadded) samples per clip, for the transforms' level measurements.
        shift_mode: ``"zero"`` or ``"roll"`` (time shift); ``noise_color``: colour of the noise;
            ``drr_db``: direct-to-reverberant ratio of the reverb (dB, or ``None``).
        frame_s: seconds per frame of log-mel inputs (default: the model's front end, else 0.01 s).
        seed: draws the fixed noise-bank position of each clip (reverb, noise).
        batch_size: clips per forward pass (one pass per batch and amount).
        device: where to run (``"auto"``/``None``: CUDA if available).
        input_kind: ``"auto"``, ``"waveform"`` or ``"logmel"`` (as :meth:`TracedModel.to_logmel`).
        progress: show a tqdm bar.

    Returns:
        :class:`InvarianceResult`.
    """
    traced = TracedModel(model, device)
    x, kind = _inputs(traced, inputs, input_kind)
    if x.shape[0] < 2:
        raise ValueError(f"invariance needs at least 2 clips (distances are normalised by the distance between "
                         f"different clips), got {x.shape[0]}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    amounts = sorted(float(a) for a in (DEFAULT_AMOUNTS.get(transform, ()) if amounts is None else amounts))
    sr = traced.frontend.config.sample_rate if kind == "waveform" else None
    pt = probe_transform(transform, sr, amounts, shift_mode, noise_color, drr_db)
    inp = _input_geometry(traced, x, kind, frame_s)
    _check_shift(pt, amounts, inp)
    names = list(dict.fromkeys(n for n in (layers or traced.layer_names) if n != LOGITS))
    noise_pos = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(int(seed)))
    lengths = None if lengths is None else torch.as_tensor(lengths).long()
    result = _probe(traced, x, kind, pt, amounts, names, inp, noise_pos, _check_targets(targets, x.shape[0]),
                    lengths, int(batch_size), progress)
    result.settings.update({"seed": int(seed), "batch_size": int(batch_size), **pt.fixed})
    if pt.name in ("reverb", "noise"):
        result.settings["noise_pos"] = [round(float(v), 6) for v in noise_pos]
    if kind == "logmel":
        result.settings.update(frame_s=inp.frame_s, shift_frames=[_frames_for(a, inp.frame_s) for a in amounts])
    return result


def _probe(traced, x, kind, pt, amounts, names, inp, noise_pos, targets, lengths, batch_size, progress):
    """The loop of :func:`invariance`: per batch, the original maps, then one forward pass per amount."""
    n, n_layers = x.shape[0], len(names) + 1
    sums = _Sums(n, n_layers, len(amounts))
    p_true, correct = np.zeros((n, len(amounts))), np.zeros((n, len(amounts)), dtype=bool)
    p_orig, y_all = np.zeros(n), np.zeros(n, dtype=np.int64)
    plan, keys = None, None
    steps = -(-n // batch_size) * len(amounts)
    with tqdm(total=steps, disable=not progress, desc=f"invariance {pt.name}", unit="pass") as bar:
        for lo in range(0, n, batch_size):
            rows = slice(lo, min(lo + batch_size, n))
            xb = x[rows].to(traced.device, torch.float32 if kind == "waveform" else traced.dtype)
            lb = None if lengths is None else lengths[rows].to(traced.device)
            logmel = traced.to_logmel(xb, kind)
            if plan is None:
                keys = {name: traced.key(name, logmel) for name in names}
            orig = _forward(traced, logmel, keys)
            if plan is None:
                plan = [_layer_plan(traced, name, tuple(m.shape), pt, amounts, inp, logmel[:1], m.device)
                        for name, m in zip(names + [LOGITS], orig)]
            y = _batch_targets(targets, rows, orig[-1])
            probs = torch.softmax(orig[-1][:, :, 0, 0].double(), dim=1)
            p_orig[rows], y_all[rows] = probs[torch.arange(len(y)), y].cpu().numpy(), y.cpu().numpy()
            for li, phi in enumerate(orig):
                sums.add_original(li, phi)
            for ai, amount in enumerate(amounts):
                maps = orig if amount == pt.identity else _forward(
                    traced, traced.to_logmel(_transformed(pt, xb, amount, noise_pos[rows], kind, inp, lb), kind), keys)
                for li, (phi, psi) in enumerate(zip(orig, maps)):
                    sums.add(rows, li, ai, phi, psi, plan[li].compare[ai])
                probs = torch.softmax(maps[-1][:, :, 0, 0].double(), dim=1)
                p_true[rows, ai] = probs[torch.arange(len(y)), y].cpu().numpy()
                correct[rows, ai] = (probs.argmax(1) == y).cpu().numpy()
                bar.update()
    inv, eq = sums.normalised(plan, n)
    return InvarianceResult(
        pt.name, amounts, pt.unit, pt.label, pt.scale, pt.axis, names + [LOGITS], inv, eq,
        np.array([[int(c.inv.sum()) for c in lp.compare] for lp in plan]),
        np.array([[int(c.eq.sum()) if c.eq is not None else 0 for c in lp.compare] for lp in plan]),
        [lp.rule for lp in plan], [lp.stride for lp in plan], [lp.receptive_field for lp in plan],
        np.array([[c.displacement for c in lp.compare] for lp in plan]),
        np.array([[c.exact for c in lp.compare] for lp in plan]),
        p_true, p_orig, correct, y_all, "labels" if targets is not None else "predicted", kind)


def _batch_targets(targets, rows: slice, logits: torch.Tensor) -> torch.Tensor:
    """True classes of the clips ``rows``: the given ones (checked against the logits' classes) or the
    classes predicted for the original clips."""
    k = logits.shape[1]
    if targets is None:
        return logits[:, :, 0, 0].argmax(1)
    y = targets[rows].to(logits.device)
    if bool(((y < 0) | (y >= k)).any()):
        raise ValueError(f"targets must be class indices in 0..{k - 1} (the model has {k} outputs), got "
                         f"{int(y[(y < 0) | (y >= k)][0])}")
    return y
