"""Shoebox rooms by the image-source method: impulse responses with early reflections, a
direct-to-reverberant ratio set by the geometry and a decay calibrated to a requested RT60.

The image method (Allen & Berkley, 1979): in a rectangular room whose walls all reflect with the
same pressure coefficient ``beta``, the sound reaching the microphone is the sum of the direct
path and of mirror images of the source; along one axis of length ``L`` the images lie at
``2nL + s`` (``|2n|`` reflections) and ``2nL - s`` (``|2n - 1|`` reflections). Each image adds
``beta ** reflections / (4 pi d)`` at the delay ``d / c`` (a linear fractional delay; every
delay is shortened by the same fraction of a sample so that the direct path falls on one whole
tap). A 2nd-order 40 Hz high-pass removes the DC that all-positive taps carry.

Eyring's formula gives a first ``beta`` for the requested RT60; image-source rooms ring longer
than it predicts (directions that meet few walls dominate the late decay), so ``beta`` is then
corrected from the Schroeder-integrated decay of the response itself until its T30 is within
``tolerance`` of the request. Numpy only; :func:`pyroomacoustics_rir` uses the optional
``pyroomacoustics`` package (extra ``rooms``) instead.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

__all__ = ["Room", "random_rooms", "image_source_rir", "pyroomacoustics_rir", "room_rirs", "schroeder_rt60_s",
           "direct_to_reverberant_db", "direct_path_index", "SPEED_OF_SOUND_M_S"]

SPEED_OF_SOUND_M_S = 343.0
HIGHPASS_HZ = 40.0


@dataclass(frozen=True)
class Room:
    """A shoebox room with one source and one microphone. Lengths in metres, RT60 in seconds.

    ``size_m``: (length, width, height); ``source_m``, ``mic_m``: positions, each coordinate
    strictly inside ``(0, size)``; ``rt60_s``: the reverberation time asked for (> 0).
    """

    size_m: tuple[float, float, float]
    source_m: tuple[float, float, float]
    mic_m: tuple[float, float, float]
    rt60_s: float

    def __post_init__(self):
        size, src, mic = (np.asarray(v, float) for v in (self.size_m, self.source_m, self.mic_m))
        if size.shape != (3,) or src.shape != (3,) or mic.shape != (3,):
            raise ValueError(f"size_m, source_m and mic_m must be 3 numbers (metres), got {self.size_m}, "
                             f"{self.source_m}, {self.mic_m}")
        if not (np.isfinite(size).all() and (size > 0).all()):
            raise ValueError(f"size_m must be 3 positive lengths in metres, got {self.size_m}")
        for name, pos in (("source_m", src), ("mic_m", mic)):
            if not (np.isfinite(pos).all() and (pos > 0).all() and (pos < size).all()):
                raise ValueError(f"{name} {tuple(pos)} is not inside the room 0 < position < {tuple(size)} m")
        if not (math.isfinite(self.rt60_s) and self.rt60_s > 0):
            raise ValueError(f"rt60_s must be > 0 seconds, got {self.rt60_s!r}")

    @property
    def distance_m(self) -> float:
        """Source-microphone distance in metres."""
        return float(np.linalg.norm(np.subtract(self.source_m, self.mic_m)))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Room":
        return cls(tuple(d["size_m"]), tuple(d["source_m"]), tuple(d["mic_m"]), float(d["rt60_s"]))


def _check_span(name: str, value, low: float = 0.0) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and low < lo <= hi):
        raise ValueError(f"{name} must be (min, max) with {low} < min <= max, got {value!r}")
    return lo, hi


def random_rooms(n: int, rt60_s=(0.2, 1.0), size_m=((3.0, 10.0), (3.0, 8.0), (2.4, 4.0)),
                 margin_m: float = 0.5, min_distance_m: float = 0.5, seed: int = 0) -> list[Room]:
    """``n`` rooms drawn evenly: each side in its ``size_m`` range, RT60 in ``rt60_s``, source
    and microphone anywhere at least ``margin_m`` from every wall and ``min_distance_m`` apart.

    Args:
        n (int): number of rooms (>= 1).
        rt60_s ((min, max)): seconds.
        size_m (3 × (min, max)): metres per side (length, width, height).
        margin_m (float): metres kept from the walls (each side must exceed twice it).
        min_distance_m (float): smallest source-microphone distance in metres.
        seed (int): numpy generator seed; the same seed gives the same rooms.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer (number of rooms), got {n!r}")
    rt = _check_span("rt60_s", rt60_s)
    if len(size_m) != 3:
        raise ValueError(f"size_m must give 3 (min, max) ranges in metres (length, width, height), got {size_m!r}")
    sizes = [_check_span(f"size_m[{i}]", s, low=2 * margin_m) for i, s in enumerate(size_m)]
    if margin_m < 0 or min_distance_m < 0:
        raise ValueError(f"margin_m and min_distance_m must be >= 0 metres, got {margin_m}, {min_distance_m}")
    rng = np.random.default_rng(seed)
    rooms = []
    for _ in range(int(n)):
        size = np.array([rng.uniform(*s) for s in sizes])
        for _ in range(1000):
            src, mic = (rng.uniform(margin_m, size - margin_m) for _ in range(2))
            if np.linalg.norm(src - mic) >= min_distance_m:
                break
        else:
            raise ValueError(f"cannot place a source and a microphone {min_distance_m} m apart and {margin_m} m "
                             f"from the walls of a {size.round(2).tolist()} m room")
        rooms.append(Room(*(tuple(float(v) for v in a.round(3)) for a in (size, src, mic)),
                          round(float(rng.uniform(*rt)), 4)))
    return rooms


def schroeder_rt60_s(rir: np.ndarray, sample_rate: int, db_range=(-5.0, -35.0)) -> float:
    """RT60 in seconds from the slope of the Schroeder backward-integrated energy decay between
    ``db_range`` dB (T30 by default), extrapolated to 60 dB. ``rir``: ``(L,)``."""
    energy = np.cumsum(np.asarray(rir, np.float64)[::-1] ** 2)[::-1]
    if not energy[0] > 0:
        raise ValueError("the impulse response is silent: no decay to measure")
    edc_db = 10 * np.log10(np.maximum(energy / energy[0], 1e-300))
    fit = (edc_db <= db_range[0]) & (edc_db >= db_range[1])
    if fit.sum() < 2:
        raise ValueError(f"the impulse response does not decay through {db_range} dB")
    slope_db_per_s = np.polyfit(np.nonzero(fit)[0] / sample_rate, edc_db[fit], 1)[0]
    return float(-60.0 / slope_db_per_s)


def direct_path_index(rir: np.ndarray) -> int:
    """Where the direct path of an impulse response ``(L,)`` is, as :class:`~audioconv.augment.Reverb`
    aligns to it (:func:`audioconv.augment.reverb.direct_path`)."""
    from .reverb import direct_path

    return int(direct_path(torch.as_tensor(np.asarray(rir))[None])[0])


def direct_to_reverberant_db(rir: np.ndarray, sample_rate: int, window_ms: float = 2.5) -> float:
    """Direct-to-reverberant energy ratio in dB: the energy within ``window_ms`` of the direct path
    (:func:`direct_path_index`) over the energy of everything after that window."""
    rir = np.asarray(rir, np.float64)
    peak = direct_path_index(rir)
    half = int(round(window_ms * 1e-3 * sample_rate))
    direct = np.sum(rir[max(0, peak - half): peak + half + 1] ** 2)
    late = np.sum(rir[peak + half + 1:] ** 2)
    return float(10 * np.log10(direct / max(late, 1e-300)))


class _Images:
    """The images of one room within ``max_dist_m``: distances ``(N,)`` and reflection counts ``(N,)``."""

    def __init__(self, room: Room, max_dist_m: float):
        offsets, counts = [], []
        for size, s, m in zip(room.size_m, room.source_m, room.mic_m):
            k = int(math.ceil(max_dist_m / (2 * size))) + 1
            n = np.arange(-k, k + 1)
            offsets.append(np.concatenate([2 * n * size + s, 2 * n * size - s]) - m)
            counts.append(np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)]))
        dx2, dy2, dz2 = (o ** 2 for o in offsets)
        d2 = (dx2[:, None] + dy2[None, :]).ravel()
        r_xy = (counts[0][:, None] + counts[1][None, :]).ravel()
        dist = np.sqrt(d2[:, None] + dz2[None, :])  # (XY, Z)
        keep = dist < max_dist_m
        self.dist = dist[keep]
        self.reflections = (r_xy[:, None] + counts[2][None, :])[keep].astype(np.float64)

    def render(self, log_beta: float, sample_rate: int, n_out: int, speed_m_s: float) -> np.ndarray:
        amp = np.exp(self.reflections * log_beta) / (4 * np.pi * self.dist)
        t = self.dist * (sample_rate / speed_m_s)
        t -= t.min() % 1.0  # less than a sample earlier, so that the direct path is one whole tap
        i0 = np.floor(t).astype(np.int64)
        frac = t - i0
        rir = np.bincount(i0, amp * (1 - frac), minlength=n_out + 2)
        rir += np.bincount(i0 + 1, amp * frac, minlength=n_out + 2)[:len(rir)]
        return rir[:n_out]


def _eyring_log_beta(room: Room, rt60_s: float) -> float:
    """``ln beta`` for RT60 by Eyring: ``RT60 = 0.161 V / (-S ln(1 - alpha))`` with ``1 - alpha = beta**2``."""
    lx, ly, lz = room.size_m
    volume, surface = lx * ly * lz, 2 * (lx * ly + lx * lz + ly * lz)
    return -0.161 * volume / (2 * surface * rt60_s)


def _next_log_beta(tried: list[tuple[float, float]]) -> float:
    """The next ``ln beta`` to try, from ``(ln beta, ln(measured RT60 / target))`` pairs: the decay
    rate scales with ``ln beta`` (a first step), then a secant step between the last two tries
    (the measured T30 wobbles a little as images cross sample boundaries, so plain scaling can
    circle the target)."""
    log_beta, error = tried[-1]
    step = log_beta * math.exp(error)
    if len(tried) >= 2 and tried[-2][1] != error:
        (b0, e0), (b1, e1) = tried[-2], tried[-1]
        step = b1 - e1 * (b1 - b0) / (e1 - e0)
    return min(max(step, -30.0), -1e-6)


def image_source_rir(room: Room, sample_rate: int, length_s: float | None = None, tolerance: float = 0.02,
                     max_iter: int = 8, speed_of_sound_m_s: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """Impulse response of ``room`` from its source to its microphone, by the image method.

    Args:
        room (Room): geometry and the RT60 asked for.
        sample_rate (int): Hz.
        length_s (float or None): seconds from the emission; default ``room.rt60_s`` (the
            decay is then 60 dB down) plus the direct path's travel time.
        tolerance (float): relative error of the Schroeder T30 (``schroeder_rt60_s``) accepted.
        max_iter (int): corrections of the wall reflection coefficient at most.
        speed_of_sound_m_s (float): metres per second.

    Returns:
        ``(L,)`` float64, peak magnitude 1; the direct path arrives at ``distance / c`` seconds
        (rounded down to a whole sample).

    Raises:
        ValueError: a bad sample rate or length, or a room whose decay cannot reach the request
            within ``max_iter`` corrections (the message gives the RT60 reached).
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    travel_s = room.distance_m / speed_of_sound_m_s
    length_s = room.rt60_s + travel_s if length_s is None else float(length_s)
    if not length_s > travel_s:
        raise ValueError(f"length_s={length_s} s ends before the direct path arrives ({travel_s:.4f} s)")
    n_out = int(math.ceil(length_s * sample_rate))
    images = _Images(room, speed_of_sound_m_s * length_s)
    from scipy import signal

    sos = signal.butter(2, HIGHPASS_HZ, btype="highpass", fs=sample_rate, output="sos")
    target, tried = room.rt60_s, []  # (ln beta, ln(measured / target)) pairs
    log_beta = _eyring_log_beta(room, target)
    for _ in range(max_iter):
        rir = signal.sosfilt(sos, images.render(log_beta, sample_rate, n_out, speed_of_sound_m_s))
        measured = schroeder_rt60_s(rir[int(travel_s * sample_rate):], sample_rate)
        if abs(measured / target - 1) <= tolerance:
            return rir / np.abs(rir).max()
        tried.append((log_beta, math.log(measured / target)))
        log_beta = _next_log_beta(tried)
    raise ValueError(f"room {room}: the image method reached RT60 {measured:.3f} s, not {target:.3f} s "
                     f"(±{tolerance:.0%}), after {max_iter} corrections")


def pyroomacoustics_rir(room: Room, sample_rate: int, tolerance: float = 0.03, max_iter: int = 6,
                        air_absorption: bool = False) -> np.ndarray:
    """The same room by ``pyroomacoustics`` (optional extra ``rooms``): its image method with
    fractional-delay sinc taps, the wall absorption corrected from its own measured RT60 until the
    Schroeder T30 (:func:`schroeder_rt60_s`) is within ``tolerance`` of ``room.rt60_s``.

    Returns ``(L,)`` float64, peak magnitude 1.

    Raises:
        ModuleNotFoundError: pyroomacoustics is not installed (``pip install 'audioconv[rooms]'``).
    """
    try:
        import pyroomacoustics as pra
    except ModuleNotFoundError:
        raise ModuleNotFoundError("pyroomacoustics is not installed: pip install 'audioconv[rooms]' "
                                  "(or use the built-in image method)") from None
    size = np.asarray(room.size_m, float)
    absorption, max_order = pra.inverse_sabine(room.rt60_s, size)
    for _ in range(max_iter):
        shoebox = pra.ShoeBox(size, fs=int(sample_rate), materials=pra.Material(float(absorption)),
                              max_order=int(max_order), air_absorption=air_absorption)
        shoebox.add_source(list(room.source_m))
        shoebox.add_microphone(list(room.mic_m))
        shoebox.compute_rir()
        rir = np.asarray(shoebox.rir[0][0], np.float64)
        measured = schroeder_rt60_s(rir[direct_path_index(rir):], sample_rate)
        if abs(measured / room.rt60_s - 1) <= tolerance:
            return rir / np.abs(rir).max()
        absorption = float(np.clip(1 - (1 - absorption) ** (measured / room.rt60_s), 1e-4, 0.999))
    raise ValueError(f"room {room}: pyroomacoustics reached RT60 {measured:.3f} s, not {room.rt60_s:.3f} s "
                     f"(±{tolerance:.0%}), after {max_iter} corrections")


def room_rirs(rooms: list[Room], sample_rate: int, engine: str = "image", progress: bool = False) -> list[np.ndarray]:
    """Impulse responses ``[(L_i,)]`` of ``rooms`` by ``engine`` ``"image"`` (:func:`image_source_rir`)
    or ``"pyroomacoustics"`` (:func:`pyroomacoustics_rir`), with a tqdm bar if ``progress``."""
    if engine not in ("image", "pyroomacoustics"):
        raise ValueError(f"engine must be 'image' or 'pyroomacoustics', got {engine!r}")
    make = image_source_rir if engine == "image" else pyroomacoustics_rir
    from tqdm.auto import tqdm

    return [make(room, sample_rate) for room in tqdm(rooms, desc="rooms", unit="RIR", disable=not progress)]
