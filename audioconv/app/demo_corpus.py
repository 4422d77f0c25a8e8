"""The demo's built-in corpus: procedurally synthesized sound events, generated from a seed.

Ten classes whose time–frequency shapes differ in ways a spectrogram CNN has to learn
(every frequency in Hz, every time in s):

=================  ==========================================================================
``rising_chirp``   exponential sweep up: ``f(t) = f_start_hz * (f_end_hz/f_start_hz) ** (t/d)``
``falling_chirp``  the same sweep, downwards (``f_end_hz < f_start_hz``)
``vowel``          harmonic tone ``k * f0_hz`` shaped by three vowel-like formant resonances
``noise_burst``    band-limited noise ``[low_hz, high_hz]`` with an attack/decay envelope
``click_train``    broadband clicks every ``1 / rate_hz`` seconds
``tremolo``        steady tone, amplitude ``1 - depth * (1 - cos(2π rate_hz t)) / 2``
``vibrato``        tone with ``f(t) = f0_hz * (1 + depth * sin(2π rate_hz t))``
``chord``          two steady pure tones ``f1_hz`` and ``f2_hz = f1_hz * ratio``
``bell``           inharmonic partials (free-bar ratios 1, 2.76, 5.40, 8.93) decaying exponentially
``melody``         a pure tone stepping through 3–5 notes 4–9 semitones apart (``notes_hz``), phase-continuous
=================  ==========================================================================

Per clip, the onset, duration, fundamental, sweep range, modulation rate, level and a coloured
background noise (spectral slope in dB/octave, signal-to-noise ratio in dB) are drawn at random,
so that no fixed template solves the task. Each clip has its own ``numpy`` generator seeded with
``(seed, class index, clip index)``: the corpus is bit-for-bit reproducible and a clip does not
depend on how many others are made.

``make_corpus`` writes 16-bit WAVs and ``train``/``val``/``test`` JSONL manifests in the schema of
:mod:`audioconv.io.manifest`; every record also carries its synthesis parameters under ``"synth"``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from audioconv.augment import dsp

__all__ = [
    "CLASSES",
    "CORPUS_VERSION",
    "sample_params",
    "render_event",
    "colored_noise",
    "synthesize_clip",
    "make_corpus",
    "corpus_is_complete",
]

CLASSES: tuple[str, ...] = (
    "rising_chirp",
    "falling_chirp",
    "vowel",
    "noise_burst",
    "click_train",
    "tremolo",
    "vibrato",
    "chord",
    "bell",
    "melody",
)

#: Bumped whenever synthesis changes, so that an old corpus on disk is regenerated.
CORPUS_VERSION = 3

#: Formant centre frequencies (Hz) of five vowels (Peterson & Barney-like adult averages).
_VOWEL_FORMANTS_HZ = {
    "a": (730.0, 1090.0, 2440.0),
    "e": (530.0, 1840.0, 2480.0),
    "i": (270.0, 2290.0, 3010.0),
    "o": (570.0, 840.0, 2410.0),
    "u": (300.0, 870.0, 2240.0),
}
#: Vibration-mode frequency ratios of a free–free bar (a xylophone-like bell).
_BELL_RATIOS = (1.0, 2.756, 5.404, 8.933)

_SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def _loguniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _f_max_hz(sample_rate: int) -> float:
    """Highest frequency any event may contain: well below Nyquist and the mel front end's top."""
    return min(7000.0, 0.42 * sample_rate)


def _ramp_envelope(n: int, start: int, length: int, attack: int, release: int) -> np.ndarray:
    """``(n,)`` envelope: 0 outside ``[start, start+length)``, raised-cosine ramps inside."""
    env = np.zeros(n)
    stop = min(n, start + length)
    seg = np.ones(stop - start)
    attack = max(1, min(attack, len(seg) // 2))
    release = max(1, min(release, len(seg) // 2))
    seg[:attack] = 0.5 - 0.5 * np.cos(np.pi * np.arange(attack) / attack)
    seg[len(seg) - release:] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(release) + 1) / release)
    env[start:stop] = seg
    return env


def _timing(rng: np.random.Generator, clip_s: float, dur_range_s: tuple[float, float]) -> tuple[float, float]:
    """Draw ``(onset_s, duration_s)`` of an event that fits inside the clip with 20 ms margins."""
    margin_s = 0.02
    lo, hi = dur_range_s
    hi = min(hi, clip_s - 2 * margin_s)
    lo = min(lo, hi)
    duration_s = float(rng.uniform(lo, hi))
    onset_s = float(rng.uniform(margin_s, clip_s - margin_s - duration_s))
    return onset_s, duration_s


def _harmonic_amps(rng: np.random.Generator, max_harmonics: int) -> list[float]:
    """Amplitudes of 1..max_harmonics partials: the fundamental at 1, the others weaker."""
    n = int(rng.integers(1, max_harmonics + 1))
    return [1.0] + [float(rng.uniform(0.1, 0.6) / k) for k in range(2, n + 1)]


# ---------------------------------------------------------------------------------------------
# parameters
# ---------------------------------------------------------------------------------------------
def _draw_chirp(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.35, 0.8))
    low = _loguniform(rng, 150.0, min(1200.0, f_max / 6))
    high = min(low * _loguniform(rng, 3.0, 8.0), f_max)
    p["f_start_hz"], p["f_end_hz"] = (low, high) if label == "rising_chirp" else (high, low)
    p["harmonic_amps"] = _harmonic_amps(rng, 3)
    return p


def _draw_vowel(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.3, 0.8))
    p["f0_hz"] = _loguniform(rng, 90.0, 260.0)
    p["vowel"] = str(rng.choice(sorted(_VOWEL_FORMANTS_HZ)))
    jitter = rng.uniform(0.9, 1.1, size=3)
    p["formants_hz"] = [float(min(f * j, f_max * 0.9)) for f, j in zip(_VOWEL_FORMANTS_HZ[p["vowel"]], jitter)]
    p["bandwidths_hz"] = [float(b) for b in rng.uniform(60.0, 130.0, size=3)]
    p["f0_drift"] = float(rng.uniform(-0.05, 0.05))  # relative change of f0 over the event
    return p


def _draw_noise_burst(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.1, 0.6))
    centre = _loguniform(rng, 300.0, min(4000.0, f_max / 1.5))
    width_oct = float(rng.uniform(0.4, 1.2))
    p["low_hz"] = centre * 2 ** (-width_oct / 2)
    p["high_hz"] = min(centre * 2 ** (width_oct / 2), f_max)
    p["attack_s"] = float(rng.uniform(0.003, 0.03))
    p["decay_s"] = float(rng.uniform(0.02, 0.3))  # release ramp length
    return p


def _draw_click_train(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.35, 0.8))
    p["rate_hz"] = float(rng.uniform(6.0, 30.0))
    p["click_decay_s"] = float(rng.uniform(0.0003, 0.0015))
    return p


def _draw_tremolo(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.5, 0.9))
    p["f0_hz"] = _loguniform(rng, 200.0, min(3000.0, f_max / 2))
    p["rate_hz"] = float(rng.uniform(4.0, 12.0))
    p["depth"] = float(rng.uniform(0.85, 1.0))
    p["mod_phase"] = float(rng.uniform(0, 2 * np.pi))
    return p


def _draw_vibrato(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.5, 0.9))
    p["f0_hz"] = _loguniform(rng, 400.0, min(2500.0, f_max / 2.5))
    p["rate_hz"] = float(rng.uniform(4.0, 9.0))
    p["depth"] = float(rng.uniform(0.06, 0.12))
    p["mod_phase"] = float(rng.uniform(0, 2 * np.pi))
    p["harmonic_amps"] = _harmonic_amps(rng, 2)
    return p


def _draw_chord(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.35, 0.85))
    p["f1_hz"] = _loguniform(rng, 200.0, min(1800.0, f_max / 2.2))
    p["ratio"] = float(rng.uniform(1.25, 2.1))
    p["f2_hz"] = p["f1_hz"] * p["ratio"]
    p["f2_gain_db"] = float(rng.uniform(-6.0, 0.0))
    return p


def _draw_bell(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.3, 0.8))
    p["f0_hz"] = _loguniform(rng, 250.0, min(1500.0, f_max / 9.5))
    p["decay_tau_s"] = _loguniform(rng, 0.06, 0.25)  # amplitude time constant of the fundamental
    p["partial_amps"] = [1.0] + [float(rng.uniform(0.2, 0.8)) for _ in _BELL_RATIOS[1:]]
    return p


def _draw_melody(label: str, rng: np.random.Generator, clip_s: float, f_max: float) -> dict:
    p: dict = {}
    p["onset_s"], p["duration_s"] = _timing(rng, clip_s, (0.45, 0.9))
    lo, hi = 200.0, min(3000.0, f_max / 2)
    notes = [_loguniform(rng, 300.0, min(1500.0, hi))]
    for _ in range(int(rng.integers(3, 6)) - 1):
        step = float(rng.integers(4, 10)) * (1.0 if rng.random() < 0.5 else -1.0)  # semitones
        f = notes[-1] * 2 ** (step / 12)
        if not lo <= f <= hi:
            f = notes[-1] * 2 ** (-step / 12)
        notes.append(float(f))
    p["notes_hz"] = notes
    return p


#: Per class, the function drawing its own parameters (timing first, then its ``*_hz``, ...).
_DRAW = {"rising_chirp": _draw_chirp, "falling_chirp": _draw_chirp, "vowel": _draw_vowel,
         "noise_burst": _draw_noise_burst, "click_train": _draw_click_train, "tremolo": _draw_tremolo,
         "vibrato": _draw_vibrato, "chord": _draw_chord, "bell": _draw_bell, "melody": _draw_melody}


def sample_params(label: str, rng: np.random.Generator, sample_rate: int = 16000, clip_s: float = 1.0) -> dict:
    """Draw the random synthesis parameters of one clip of class ``label``.

    Args:
        label: one of :data:`CLASSES`.
        rng: the clip's own ``numpy.random.Generator``.
        sample_rate: Hz; frequencies stay below ``min(7000, 0.42 * sample_rate)`` Hz.
        clip_s: clip length in seconds (>= 0.5).

    Returns:
        A JSON-ready dict: ``label``, ``onset_s``, ``duration_s``, ``level_dbfs`` (peak of the
        final clip), ``snr_db`` (event power over its duration vs background power),
        ``noise_slope_db_per_octave`` and the class's own fields (``*_hz``, ``rate_hz``, ``depth``...).
    """
    if label not in CLASSES:
        raise ValueError(f"unknown label {label!r}; valid labels: {', '.join(CLASSES)}")
    _check_rate_and_length(sample_rate, clip_s)
    p: dict = {"label": label, **_DRAW[label](label, rng, clip_s, _f_max_hz(sample_rate))}
    p["level_dbfs"] = float(rng.uniform(-20.0, -3.0))
    p["snr_db"] = float(rng.uniform(10.0, 30.0))
    p["noise_slope_db_per_octave"] = float(rng.uniform(-6.0, 0.0))
    p["noise_seed"] = int(rng.integers(0, 2**31 - 1))
    return p


def _check_rate_and_length(sample_rate: int, clip_s: float) -> None:
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ValueError(f"sample_rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    if not (isinstance(clip_s, (int, float)) and math.isfinite(clip_s) and clip_s >= 0.5):
        raise ValueError(f"clip_s must be >= 0.5 s, got {clip_s!r}")


# ---------------------------------------------------------------------------------------------
# synthesis
# ---------------------------------------------------------------------------------------------
def _sum_partials(phase: np.ndarray, amps: list[float], inst_hz: np.ndarray, f_max: float) -> np.ndarray:
    """Σ_k a_k sin(k φ(t)), skipping (sample-wise) partials whose frequency k f(t) exceeds f_max."""
    out = np.zeros_like(phase)
    for k, a in enumerate(amps, start=1):
        out += a * np.sin(k * phase) * (k * inst_hz < f_max)
    return out


class _Event:
    """What every class renderer gets: the params, the rate (Hz), the event's ``length`` in samples,
    ``t`` (s since onset, ``(length,)``), its duration ``d`` (s) and the top frequency ``f_max`` (Hz)."""

    def __init__(self, params: dict, sr: int, length: int, f_max: float):
        self.p, self.sr, self.length, self.f_max = params, sr, length, f_max
        self.t = np.arange(length) / sr
        self.d = params["duration_s"]

    def ms(self, seconds: float) -> int:
        """Seconds → samples (rounded)."""
        return int(round(seconds * self.sr))

    def envelope(self, attack_s: float, release_s: float) -> np.ndarray:
        return _ramp_envelope(self.length, 0, self.length, self.ms(attack_s), self.ms(release_s))


def _render_chirp(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    f0, f1 = e.p["f_start_hz"], e.p["f_end_hz"]
    k = f1 / f0
    inst = f0 * k ** (e.t / e.d)
    phase = 2 * np.pi * f0 * e.d / math.log(k) * (k ** (e.t / e.d) - 1.0)
    return _sum_partials(phase, e.p["harmonic_amps"], inst, e.f_max), None


def _render_vowel(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    p = e.p
    inst = p["f0_hz"] * (1.0 + p["f0_drift"] * e.t / e.d)
    phase = 2 * np.pi * np.cumsum(inst) / e.sr
    x = np.zeros(e.length)
    for h in range(1, int(e.f_max // (p["f0_hz"] * (1 + abs(p["f0_drift"])))) + 1):
        fh = h * inst
        # source: -6 dB/octave glottal-like tilt; filter: sum of resonance magnitudes
        gain = sum(1.0 / np.sqrt(1.0 + ((fh - fc) / (bw / 2)) ** 2)
                   for fc, bw in zip(p["formants_hz"], p["bandwidths_hz"]))
        x += gain / h * np.sin(h * phase)
    return x, e.envelope(0.03, 0.05)


def _render_noise_burst(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    noise_rng = np.random.default_rng(e.p["noise_seed"] + 1)
    white = noise_rng.standard_normal(e.length)
    spec = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(e.length, 1 / e.sr)
    spec[(freqs < e.p["low_hz"]) | (freqs > e.p["high_hz"])] = 0
    return np.fft.irfft(spec, n=e.length), e.envelope(e.p["attack_s"], e.p["decay_s"])


def _render_click_train(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    noise_rng = np.random.default_rng(e.p["noise_seed"] + 1)
    x = np.zeros(e.length)
    period = e.sr / e.p["rate_hz"]
    click_len = e.ms(8 * e.p["click_decay_s"]) + 1
    click = np.exp(-np.arange(click_len) / (e.p["click_decay_s"] * e.sr))
    for pos in np.round(np.arange(0, e.length, period)).astype(int):
        seg = click[: e.length - pos] * (1.0 if noise_rng.random() < 0.5 else -1.0)
        x[pos:pos + len(seg)] += seg
    return x, np.ones(e.length)


def _render_tremolo(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    p = e.p
    x = np.sin(2 * np.pi * p["f0_hz"] * e.t)
    x *= 1.0 - p["depth"] * 0.5 * (1.0 - np.cos(2 * np.pi * p["rate_hz"] * e.t + p["mod_phase"]))
    return x, None


def _render_vibrato(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    fc, dep, fm, ph = e.p["f0_hz"], e.p["depth"], e.p["rate_hz"], e.p["mod_phase"]
    inst = fc * (1.0 + dep * np.sin(2 * np.pi * fm * e.t + ph))
    # φ(t) = 2π ∫ f = 2π fc t − (fc·dep/fm) (cos(2π fm t + ph) − cos ph)
    phase = 2 * np.pi * fc * e.t - fc * dep / fm * (np.cos(2 * np.pi * fm * e.t + ph) - np.cos(ph))
    return _sum_partials(phase, e.p["harmonic_amps"], inst, e.f_max), None


def _render_chord(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    p = e.p
    return np.sin(2 * np.pi * p["f1_hz"] * e.t) + 10 ** (p["f2_gain_db"] / 20) * np.sin(2 * np.pi * p["f2_hz"] * e.t), None


def _render_bell(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    x = np.zeros(e.length)
    for r, a in zip(_BELL_RATIOS, e.p["partial_amps"]):
        f = r * e.p["f0_hz"]
        if f < e.f_max:
            x += a * np.exp(-e.t * math.sqrt(r) / e.p["decay_tau_s"]) * np.sin(2 * np.pi * f * e.t)
    return x, e.envelope(0.002, 0.02)


def _render_melody(e: _Event) -> tuple[np.ndarray, np.ndarray | None]:
    """Note i fills ``[i, i+1) * duration / n_notes``; the phase runs on across notes."""
    notes = np.asarray(e.p["notes_hz"])
    which = np.minimum((e.t / e.d * len(notes)).astype(int), len(notes) - 1)
    return np.sin(2 * np.pi * np.cumsum(notes[which]) / e.sr), None


#: Per class, ``renderer(event) -> (samples (length,), envelope (length,) or None for the default
#: 10 ms / 20 ms raised-cosine ramps)``.
_RENDER = {"rising_chirp": _render_chirp, "falling_chirp": _render_chirp, "vowel": _render_vowel,
           "noise_burst": _render_noise_burst, "click_train": _render_click_train, "tremolo": _render_tremolo,
           "vibrato": _render_vibrato, "chord": _render_chord, "bell": _render_bell, "melody": _render_melody}


def render_event(params: dict, sample_rate: int = 16000, clip_s: float = 1.0) -> np.ndarray:
    """The clean sound event of one clip, without background, peak-normalised to 1.

    Args:
        params: a dict from :func:`sample_params`.
        sample_rate: Hz.
        clip_s: clip length in seconds.

    Returns:
        ``(round(clip_s * sample_rate),)`` float64 samples; zero outside the event.
    """
    _check_rate_and_length(sample_rate, clip_s)
    label = params.get("label")
    if label not in CLASSES:
        raise ValueError(f"params['label'] must be one of {', '.join(CLASSES)}, got {label!r}")
    n = int(round(clip_s * sample_rate))
    start = int(round(params["onset_s"] * sample_rate))
    event = _Event(params, sample_rate, min(int(round(params["duration_s"] * sample_rate)), n - start),
                   _f_max_hz(sample_rate))
    x, env = _RENDER[label](event)
    x = x * (event.envelope(0.01, 0.02) if env is None else env)
    out = np.zeros(n)
    out[start:start + event.length] = x
    peak = np.abs(out).max()
    return out / peak if peak > 0 else out


def colored_noise(n: int, slope_db_per_octave: float, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """Gaussian noise whose power spectrum falls by ``slope_db_per_octave`` per octave (0 = white,
    -3 = pink, -6 = brown), ``(n,)`` float64 with unit RMS: ``rng``'s white noise shaped by
    :func:`audioconv.augment.dsp.colored_noise`, the spectrum held flat below 20 Hz (down to DC)."""
    white = torch.from_numpy(rng.standard_normal(n))
    return dsp.colored_noise(white, slope_db_per_octave, flat_below_bin=20.0 * n / sample_rate).numpy()


def synthesize_clip(params: dict, sample_rate: int = 16000, clip_s: float = 1.0) -> np.ndarray:
    """Event + coloured background at ``params['snr_db']``, peak at ``params['level_dbfs']``.

    The SNR is the event's mean power over its own duration divided by the background's mean power.

    Returns:
        ``(round(clip_s * sample_rate),)`` float32 samples in [-1, 1].
    """
    event = render_event(params, sample_rate, clip_s)
    start = int(round(params["onset_s"] * sample_rate))
    stop = start + max(1, int(round(params["duration_s"] * sample_rate)))
    event_power = float(np.mean(event[start:stop] ** 2))
    noise = colored_noise(len(event), params["noise_slope_db_per_octave"],
                          np.random.default_rng(params["noise_seed"]), sample_rate)
    mix = event + noise * math.sqrt(event_power / 10 ** (params["snr_db"] / 10))
    mix *= 10 ** (params["level_dbfs"] / 20) / np.abs(mix).max()
    return mix.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the corpus on disk
# ---------------------------------------------------------------------------------------------
def _split_counts(n_per_class: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Clips per class in (train, val, test); a split with a fraction > 0 gets at least one."""
    n_val = max(int(fractions[1] > 0), int(round(n_per_class * fractions[1])))
    n_test = max(int(fractions[2] > 0), int(round(n_per_class * fractions[2])))
    return n_per_class - n_val - n_test, n_val, n_test


def _spec_dict(n_per_class, sample_rate, clip_s, seed, split_fractions) -> dict:
    return {"version": CORPUS_VERSION, "classes": list(CLASSES), "n_per_class": int(n_per_class),
            "sample_rate": int(sample_rate), "clip_s": float(clip_s), "seed": int(seed),
            "split_fractions": [float(f) for f in split_fractions]}


def corpus_is_complete(out_dir: str | os.PathLike, spec: dict | None = None) -> bool:
    """True when ``out_dir/corpus.json`` exists (and equals ``spec`` if given) and every manifest
    and WAV it lists is on disk."""
    out_dir = Path(out_dir)
    meta_path = out_dir / "corpus.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if spec is not None and meta.get("spec") != spec:
        return False
    for split in _SPLITS:
        manifest = out_dir / f"{split}.jsonl"
        if not manifest.is_file():
            return False
        with open(manifest, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        if len(lines) != meta.get("counts", {}).get(split):
            return False
        for line in lines:
            if not (out_dir / json.loads(line)["audio_filepath"]).is_file():
                return False
    return True


def make_corpus(
    out_dir: str | os.PathLike,
    n_per_class: int = 200,
    sample_rate: int = 16000,
    clip_s: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    overwrite: bool = False,
) -> dict[str, Path]:
    """Synthesize the demo corpus: WAVs under ``out_dir/audio/<split>/<label>/`` and manifests
    ``out_dir/{train,val,test}.jsonl`` (paths relative to ``out_dir``), plus ``corpus.json``.

    Args:
        out_dir: folder to write (created).
        n_per_class: clips per class over all splits (>= 3, so every split gets one).
        sample_rate: Hz (>= 8000).
        clip_s: length of every clip in seconds (>= 0.5).
        seed: corpus seed; clip ``i`` of class ``c`` uses ``numpy.random.default_rng([seed, c, i])``.
        progress: show a tqdm bar.
        split_fractions: fractions of each class's clips in train, val and test (sum to 1).
        overwrite: regenerate even if a complete corpus with the same settings is already there.

    Returns:
        ``{"train": Path, "val": Path, "test": Path}`` of the manifests. When ``out_dir`` already
        holds a complete corpus made with the same settings, nothing is rewritten.
    """
    import torch

    from audioconv.io.audio import save
    from audioconv.io.files import write_json
    from audioconv.io.manifest import write_manifest

    if not isinstance(n_per_class, (int, np.integer)) or n_per_class < 3:
        raise ValueError(f"n_per_class must be an integer >= 3, got {n_per_class!r}")
    _check_rate_and_length(sample_rate, clip_s)
    fractions = tuple(float(f) for f in split_fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be 3 non-negative numbers summing to 1, got {split_fractions!r}")
    counts = _split_counts(int(n_per_class), fractions)
    if min(counts) < 1:
        raise ValueError(f"n_per_class={n_per_class} with split_fractions={fractions} leaves a split empty: {counts}")

    out_dir = Path(out_dir)
    spec = _spec_dict(n_per_class, sample_rate, clip_s, seed, fractions)
    paths = {split: out_dir / f"{split}.jsonl" for split in _SPLITS}
    if not overwrite and corpus_is_complete(out_dir, spec):
        return paths

    split_of = [s for s, c in zip(_SPLITS, counts) for _ in range(c)]
    records: dict[str, list[dict]] = {s: [] for s in _SPLITS}
    bar = tqdm(total=len(CLASSES) * n_per_class, disable=not progress, desc="synthesize corpus", unit="clip")
    for c, label in enumerate(CLASSES):
        for i in range(n_per_class):
            rng = np.random.default_rng([int(seed), c, i])
            params = sample_params(label, rng, sample_rate, clip_s)
            wav = synthesize_clip(params, sample_rate, clip_s)
            split = split_of[i]
            rel = f"audio/{split}/{label}/{label}_{i:04d}.wav"
            save(out_dir / rel, torch.from_numpy(wav).unsqueeze(0), sample_rate)
            records[split].append({
                "audio_filepath": rel, "label": label, "duration": float(clip_s), "offset": 0.0,
                "split": split, "group": f"{label}_{i:04d}", "sample_rate": int(sample_rate),
                "synth": params,
            })
            bar.update(1)
    bar.close()
    for split in _SPLITS:
        write_manifest(paths[split], records[split])
    # written last and atomically: its presence says the WAVs (each written atomically) are all there
    write_json(out_dir / "corpus.json", {"spec": spec, "counts": {s: len(records[s]) for s in _SPLITS}}, indent=2)
    return paths

