"""Augmentation chains to and from JSON, and the default training chain.

A chain config is a list of transform configs (read as a ``Compose``) or one transform config;
each is ``{"type": "<class name>", <constructor arguments>}`` with ranges as two-element lists
and ``sample_rate`` left out (it comes from the data). ``Compose`` and ``OneOf`` hold theirs
under ``"transforms"``. Example::

    [{"type": "PolarityInversion", "p": 0.5},
     {"type": "Reverb", "rt60_s": [0.2, 1.0], "p": 0.5},
     {"type": "AddNoise", "snr_db": [5, 40], "color": "pink", "p": 0.8}]
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

from audioconv.io.files import write_json
from audioconv.utils import accepts_keyword

from .base import Augmentation, Compose, OneOf
from .bitcrush import BitCrush
from .clip import Clip
from .codec import Codec
from .distortion import Distortion
from .eq import RandomEQ
from .events import AddEvents
from .filters import BandPass, BandStop, HighPass, LowPass
from .gain import Gain
from .gain_transition import GainTransition
from .mix import BatchMix
from .noise import AddNoise
from .pitch import PitchShift
from .polarity import PolarityInversion
from .reverb import Reverb
from .shift import TimeShift
from .speed import SpeedPerturb
from .stretch import TimeStretch
from .time_mask import TimeMask

__all__ = ["TRANSFORMS", "SHORT_NAMES", "chain_from_config", "chain_to_config", "default_chain", "load_chain",
           "save_chain", "describe_example"]

TRANSFORMS: dict[str, type[Augmentation]] = {
    cls.__name__: cls
    for cls in (Compose, OneOf, PolarityInversion, RandomEQ, Reverb, AddNoise, BatchMix, Gain, TimeShift,
                SpeedPerturb, PitchShift, TimeStretch, LowPass, HighPass, BandPass, BandStop, Clip, Distortion,
                BitCrush, Codec, AddEvents, GainTransition, TimeMask)
}
PATH_ARGUMENTS = ("rirs", "background")  # resolved relative to the chain file's folder
SHORT_NAMES = {"PolarityInversion": "polarity", "RandomEQ": "EQ", "Reverb": "reverb", "AddNoise": "noise",
               "Gain": "gain", "TimeShift": "shift", "SpeedPerturb": "speed", "PitchShift": "pitch", "BatchMix": "mix",
               "TimeStretch": "stretch", "LowPass": "low-pass", "HighPass": "high-pass", "BandPass": "band-pass",
               "BandStop": "band-stop", "Clip": "clip", "Distortion": "distortion", "BitCrush": "bit crush",
               "Codec": "codec", "AddEvents": "events", "GainTransition": "fade", "TimeMask": "time mask"}


PHONE_BAND_MIN_RATE_HZ = 4000  # default_chain's telephone band-pass needs this rate or more


def default_chain(sample_rate: int) -> Compose:
    """A robust training chain for speech/audio classifiers at ``sample_rate`` Hz.

    Time shift (p .5, ±0.1 s) → polarity inversion (p .5; a no-op for log-mel models, kept for
    waveform models) → random EQ (p .5, 3 peaks ±12 dB and two shelves) → synthetic reverb
    (p .3, RT60 0.2–0.8 s) → babble from the batch (p .3; five talkers, each another example of the batch
    drawn with replacement and circularly shifted, summed at a signal-to-interference ratio of 0–15 dB; the example keeps its
    label) → noise (p .5; white, pink or brown, one per example; SNR −5 to 15 dB) → gain (p .5,
    -20 to +6 dB) → a telephone channel: a band-pass (p .3; Butterworth, centre 800–1200 Hz,
    2.8–3.8 octaves wide: lower edge 210–460 Hz, upper 2.1–4.5 kHz; 12–24 dB/oct), then G.711
    mu-law or A-law companding (p .3; 8 bits per sample, the levels libsndfile gives).
    Below ``PHONE_BAND_MIN_RATE_HZ`` (4 kHz), where no telephone band fits under the Nyquist
    frequency, the band-pass is left out (the chain then works down to about 600 Hz). Under 1 %
    of the examples pass through untouched (1.5 % not counting the polarity inversion). Every
    step runs on the batch's device. The babble needs a batch: on one example at a time (a
    ``Dataset`` transform) it leaves the example as it is.

    Chosen by ``benchmarks/robustness_study.py`` (``docs/augmentation_study.md``). The chain up to
    the gain is ``light_nospeed`` there: at 30 epochs (450 steps) it kept clean accuracy on
    held-out voice families (98.0 % vs 97.9 % without augmentation, 3 seeds) and raised the mean
    accuracy over 14 unseen rooms, noises, channels and levels from 51 % to 68 %. The telephone
    channel is round 5's ``r5_g711``: on other speech engines (5 seeds, ``audioconv train``
    defaults) it raised phone-band accuracy with every seed (53.4 → 59.3 %) and the mean of
    clean, rooms, noise and all three together by 2-3 points each. The noise's SNR range is
    round 7's ``r7_snrm5`` (5-30 dB before): on other engines (5 seeds) it raised accuracy in
    0-10 dB noise by 4.0 points and with room, noise and phone line together by 6.4 (with every
    seed), clean by 1.5; rooms moved within the seed spread (-1.0). The babble is round 11's
    ``+bm5``: other voices talking at 0-10 dB (babble, a cafe) had turned the model into a
    two-word detector (14-29 % correct of 10 words); with it (9 seeds, paired), accuracy in 0-10 dB
    noise rose by 4.2 points and with room, noise and phone line together by 5.8 (both with every
    seed), in rooms by 2-3; clean speech (-1.3) and the phone line (-0.5) moved within the spread.
    """
    return Compose([
        TimeShift(sample_rate, shift_s=(-0.1, 0.1), p=0.5),
        PolarityInversion(p=0.5),
        RandomEQ(sample_rate, n_bands=3, gain_db=(-12.0, 12.0), q=(0.5, 4.0), p=0.5),
        Reverb(sample_rate, rt60_s=(0.2, 0.8), p=0.3),
        BatchMix(snr_db=(0.0, 15.0), talkers=5, p=0.3),
        OneOf([AddNoise(snr_db=(-5.0, 15.0), color=color, p=1.0) for color in ("white", "pink", "brown")], p=0.5),
        Gain(gain_db=(-20.0, 6.0), p=0.5),
        *([BandPass(sample_rate, centre_hz=(800.0, 1200.0), bandwidth_octaves=(2.8, 3.8), order=(2, 4), p=0.3)]
          if sample_rate >= PHONE_BAND_MIN_RATE_HZ else []),
        Codec(sample_rate, formats=("mulaw", "alaw"), p=0.3),
    ])


def _resolve_paths(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str):
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base_dir / path)
    if isinstance(value, list):
        return [_resolve_paths(v, base_dir) for v in value]
    return value


def _build(cfg: Any, sample_rate: int, base_dir: Path | None, where: str) -> Augmentation:
    if not isinstance(cfg, dict):
        raise ValueError(f"{where}: expected an object with a 'type', got {type(cfg).__name__}")
    cfg = dict(cfg)
    name = cfg.pop("type", None)
    if name not in TRANSFORMS:
        raise ValueError(f"{where}: unknown type {name!r}; known: {', '.join(sorted(TRANSFORMS))}")
    cls = TRANSFORMS[name]
    accepted = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ValueError(f"{where} ({name}): unknown argument(s) {unknown}; accepted: {accepted}")
    if "sample_rate" in cfg and cfg["sample_rate"] not in (None, sample_rate):
        raise ValueError(f"{where} ({name}): sample_rate {cfg['sample_rate']} differs from the data's "
                         f"{sample_rate}; leave it out of the config")
    if "transforms" in cfg:
        if not isinstance(cfg["transforms"], list):
            raise ValueError(f"{where} ({name}): 'transforms' must be a list")
        cfg["transforms"] = [_build(c, sample_rate, base_dir, f"{where}.transforms[{i}]")
                             for i, c in enumerate(cfg["transforms"])]
    for key in PATH_ARGUMENTS:
        if base_dir is not None and cfg.get(key) is not None:
            cfg[key] = _resolve_paths(cfg[key], base_dir)
    if accepts_keyword(cls, "sample_rate"):
        cfg["sample_rate"] = sample_rate
    required = [k for k, p in inspect.signature(cls.__init__).parameters.items()
                if k != "self" and p.default is inspect.Parameter.empty and k not in cfg]
    if required:
        raise ValueError(f"{where} ({name}): missing argument(s) {required}")
    try:
        return cls(**cfg)
    except (ValueError, FileNotFoundError) as e:  # one type whatever the cause (a subclass may take other arguments)
        raise ValueError(f"{where} ({name}): {e}") from None


def chain_from_config(cfg: dict | list, sample_rate: int, base_dir: str | os.PathLike | None = None) -> Compose:
    """Build a chain from a config (see the module doc). A single non-``Compose`` transform is
    wrapped in a ``Compose``.

    Args:
        cfg: list of transform configs, or one config.
        sample_rate (int): Hz, given to every transform that takes it.
        base_dir: folder that relative ``rirs`` / ``background`` paths are relative to.

    Raises:
        ValueError: unknown type, unknown or missing argument, a bad argument value or a file it names
            that is missing or unreadable (the message names where).
    """
    base = None if base_dir is None else Path(base_dir)
    if isinstance(cfg, list):
        cfg = {"type": "Compose", "transforms": cfg}
    aug = _build(cfg, sample_rate, base, "chain")
    return aug if isinstance(aug, Compose) else Compose([aug])


def chain_to_config(aug: Augmentation, absolute_paths: bool = False) -> dict:
    """The config of ``aug`` (``chain_from_config`` rebuilds an equal chain from it).

    With ``absolute_paths``, relative ``rirs`` / ``background`` paths (relative to the working folder,
    as the transforms read them) are written absolute, so that the config rebuilds the same chain
    from any folder and ``load_chain`` (which reads relative ones against the file's folder) reads it."""
    cfg = aug.to_config()
    return _absolute_paths(cfg) if absolute_paths else cfg


def load_chain(path: str | os.PathLike, sample_rate: int) -> Compose:
    """Read a chain from a JSON file (relative noise/RIR paths are relative to the file's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"chain file not found: {path}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON: {e}") from None
    try:
        return chain_from_config(cfg, sample_rate, base_dir=path.parent)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def save_chain(aug: Augmentation, path: str | os.PathLike) -> Path:
    """Write ``chain_to_config(aug, absolute_paths=True)`` as JSON to ``path`` (atomically, folders
    created); returns the path."""
    return write_json(path, chain_to_config(aug, absolute_paths=True), indent=2)


def _absolute_paths(cfg: dict) -> dict:
    """``cfg`` with its path arguments, and those of the transforms it holds, made absolute."""
    cfg = dict(cfg)
    for key in PATH_ARGUMENTS:
        if cfg.get(key) is not None:
            cfg[key] = _resolve_paths(cfg[key], Path.cwd())
    if isinstance(cfg.get("transforms"), list):
        cfg["transforms"] = [_absolute_paths(c) for c in cfg["transforms"]]
    return cfg


def describe_example(chain: Augmentation, params: dict, index: int, values: bool = False) -> str:
    """Short names (``SHORT_NAMES``) of the transforms of ``chain`` that ``params`` apply to example
    ``index``, in order, e.g. ``"EQ+reverb+noise"``; ``"unchanged"`` if none. With ``values``, each
    with the values drawn for it (``Augmentation.describe``), comma-separated:
    ``"EQ peak +9 dB at 1200 Hz, reverb RT60 0.42 s, noise SNR 12.3 dB"``."""
    def applied(aug: Augmentation, p: dict) -> list[str]:
        if not bool(p["apply"][index]):
            return []
        if isinstance(aug, (Compose, OneOf)):
            return [name for key, t in aug.named_transforms() for name in applied(t, p[key])]
        name = SHORT_NAMES.get(type(aug).__name__, type(aug).__name__)
        detail = aug.describe(p, index) if values else ""
        return [f"{name} {detail}" if detail else name]

    return (", " if values else "+").join(applied(chain, params)) or "unchanged"
