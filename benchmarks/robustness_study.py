#!/usr/bin/env python3
"""Which augmentation chain makes a keyword model robust to voices, rooms, noise, channels and level?

One command reproduces the study written up in ``docs/augmentation_study.md``::

    python benchmarks/robustness_study.py --corpus /tmp/kws_study --out /tmp/robustness \
        [--engines-corpus /tmp/kws_study_engines] [--epochs 12] [--seeds 0,1] [--quick]

Steps (each one skipped when its output already exists, so an interrupted study resumes):

1. **Split by voice family.** The espeak-ng corpus from ``make_kws_corpus.py`` names a speaker by
   the SHA-1 of ``espeak-<accent>-<variant>``. We rebuild that table and hold out whole families:
   two accents (``en-gb-scotland``, ``en-029``) and six voice variants (two male, two female, two
   "named"). Train = seen accents × seen variants; validation = seen accents × two further
   variants; test = every speaker with an unseen accent or an unseen variant (the subset with both
   unseen is reported too). Four of the tool's variant names (``Paul``, ``Steph``, ``Linda``,
   ``Ed``) do not exist in espeak-ng (its files are lower-case) and silently fall back to the
   accent's default voice: they are one family here, kept in training.
2. **Degraded test copies** made with processes that no chain trains on (see ``CONDITIONS``):
   image-source shoebox rooms (written here, not ``synthetic_rir``), sox/freeverb rooms, babble of
   held-out voices speaking sentences, pink / brown / hum / band noise at fixed SNRs, a telephone
   channel (300-3400 Hz band, 8 kHz, mu-law), a muffled tilt, very quiet and clipped levels, and a
   far-field-phone combination. Optionally the clean and combined conditions for a corpus made by
   *other* speech engines (flite, festival): ``--engines-corpus``.
3. **Train** one model per chain and seed with ``audioconv train`` and the same budget (epochs,
   batch size, learning rate, model), **evaluate** its ``best.pt`` (chosen on the clean validation
   voices only) on every test manifest with ``audioconv evaluate --json``.
4. **Report** ``results.json`` and ``results.md`` (accuracy per condition, mean over the degraded
   conditions, worst condition; mean ± spread over seeds).

SNR here is the power ratio over the whole 1 s clip (word plus the silence around it), in dB.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy import signal

SAMPLE_RATE_HZ = 16000
REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# 1. voice-family split of the espeak-ng corpus
# ----------------------------------------------------------------------------------------------

#: Accents and voice variants exactly as ``make_kws_corpus.py`` combines them (``base+variant``).
ESPEAK_BASES = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5",
                   "Alex", "Andy", "Annie", "Mike", "Paul", "Steph", "Linda", "Ed", "Gene"]
TEST_BASES = ("en-gb-scotland", "en-029")
TEST_VARIANTS = ("m3", "m7", "f2", "f5", "Annie", "Gene")
VAL_VARIANTS = ("f4", "Mike")


def espeak_speaker_table() -> dict[str, tuple[str, str]]:
    """``{speaker hash (8 hex): (accent, variant)}`` as the corpus tool names its speakers."""
    table = {}
    for base in ESPEAK_BASES:
        for var in ESPEAK_VARIANTS:
            for spelling in {var, var.lower()}:  # newer versions of the tool spell paul, steph, linda, ed in lower case
                table[hashlib.sha1(f"espeak-{base}-{spelling}".encode()).hexdigest()[:8]] = (base, var)
    return table


def split_of_voice(base: str, variant: str) -> str:
    """``train`` / ``validation`` / ``test`` for one espeak voice (see the module docstring)."""
    if base in TEST_BASES or variant in TEST_VARIANTS:
        return "test"
    return "validation" if variant in VAL_VARIANTS else "train"


def corpus_records(corpus: Path, table: dict[str, tuple[str, str]] | None = None) -> list[dict]:
    """Manifest records of a Speech Commands-layout corpus, with ``group`` = speaker hash.

    With ``table`` (espeak corpora) each record also gets ``accent``, ``variant`` and ``split``.
    """
    records = []
    for word_dir in sorted(p for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for wav in sorted(word_dir.glob("*.wav")):
            spk = wav.name.split("_nohash_")[0]
            rec = {"audio_filepath": str(wav), "label": word_dir.name, "duration": 1.0, "group": spk}
            if table is not None:
                if spk not in table:
                    raise ValueError(f"{wav}: speaker {spk!r} is not an espeak voice of make_kws_corpus.py")
                base, var = table[spk]
                rec.update(accent=base, variant=var, split=split_of_voice(base, var))
            records.append(rec)
    if not records:
        raise FileNotFoundError(f"corpus {corpus}: no <word>/*.wav clips found")
    return records


# ----------------------------------------------------------------------------------------------
# 2. test-only degradations (numpy / scipy / sox; deliberately NOT audioconv.augment)
# ----------------------------------------------------------------------------------------------

def shoebox_rir(room_m, source_m, mic_m, rt60_s: float, sample_rate: int = SAMPLE_RATE_HZ,
                length_s: float | None = None, speed_of_sound_m_s: float = 343.0) -> np.ndarray:
    """Impulse response ``(L,)`` of a rectangular room by the image-source method (Allen & Berkley).

    Every wall has the same pressure reflection coefficient ``beta`` chosen from Eyring's formula
    so that the room's RT60 is ``rt60_s``. Images of the source along one axis of length ``L`` lie
    at ``2nL + s`` (``|2n|`` reflections) and ``2nL - s`` (``|2n - 1|`` reflections); each image
    contributes ``beta**reflections / (4 pi d)`` at delay ``d / c`` (linear fractional delay).
    Images farther than ``c * length_s`` are dropped; a 2nd-order 40 Hz high-pass removes DC.
    """
    room = np.asarray(room_m, float)
    src, mic = np.asarray(source_m, float), np.asarray(mic_m, float)
    if np.any(src <= 0) or np.any(src >= room) or np.any(mic <= 0) or np.any(mic >= room):
        raise ValueError(f"source {src} and mic {mic} must lie inside the room {room}")
    volume = room.prod()
    surface = 2 * (room[0] * room[1] + room[0] * room[2] + room[1] * room[2])
    beta = np.exp(-0.161 * volume / (2 * surface * rt60_s))  # Eyring: 1 - alpha = beta**2
    length_s = rt60_s if length_s is None else length_s
    max_dist = speed_of_sound_m_s * length_s
    offsets, reflections = [], []
    for L, s, m in zip(room, src, mic):
        n = np.arange(-int(np.ceil(max_dist / (2 * L))) - 1, int(np.ceil(max_dist / (2 * L))) + 2)
        offsets.append(np.concatenate([2 * n * L + s, 2 * n * L - s]) - m)
        reflections.append(np.concatenate([np.abs(2 * n), np.abs(2 * n - 1)]))
    dist = np.sqrt(offsets[0][:, None, None] ** 2 + offsets[1][None, :, None] ** 2
                   + offsets[2][None, None, :] ** 2)
    refl = reflections[0][:, None, None] + reflections[1][None, :, None] + reflections[2][None, None, :]
    keep = dist < max_dist
    dist, refl = dist[keep], refl[keep]
    amp = beta ** refl / (4 * np.pi * dist)
    t = dist / speed_of_sound_m_s * sample_rate
    n_out = int(np.ceil(max_dist / speed_of_sound_m_s * sample_rate)) + 2
    i0 = np.floor(t).astype(np.int64)
    frac = t - i0
    rir = np.bincount(i0, amp * (1 - frac), minlength=n_out) + np.bincount(i0 + 1, amp * frac, minlength=n_out)
    sos = signal.butter(2, 40.0, btype="highpass", fs=sample_rate, output="sos")
    rir = signal.sosfilt(sos, rir[:n_out])
    return (rir / np.abs(rir).max()).astype(np.float32)


def random_shoebox_rir(rng: np.random.Generator, dims_m, rt60_s, distance_m) -> np.ndarray:
    """A shoebox RIR with room size, RT60 and source-mic distance drawn uniformly from the ranges."""
    room = np.array([rng.uniform(*d) for d in dims_m])
    for _ in range(1000):
        mic = np.array([rng.uniform(0.5, L - 0.5) for L in room])
        mic[2] = rng.uniform(0.8, min(1.8, room[2] - 0.3))
        direction = rng.normal(size=3)
        direction[2] *= 0.2
        src = mic + direction / np.linalg.norm(direction) * rng.uniform(*distance_m)
        if np.all(src > 0.3) and np.all(src < room - 0.3):
            break
    else:
        raise ValueError(f"could not place a source {distance_m} m from the mic in room {room}")
    rt60 = rng.uniform(*rt60_s)
    return shoebox_rir(room, src, mic, rt60, length_s=min(rt60, 0.9))


def sox_reverb_rir(reverberance_pct: float, hf_damping_pct: float, room_scale_pct: float,
                   pre_delay_ms: float, wet_gain_db: float, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Impulse response ``(L,)`` of sox's ``reverb`` effect (freeverb, dry + wet), by feeding it a click."""
    if shutil.which("sox") is None:
        raise FileNotFoundError("sox not found on PATH (apt-get install sox)")
    with tempfile.TemporaryDirectory() as tmp:
        click = np.zeros(int(1.5 * sample_rate), np.float32)
        click[0] = 0.5
        sf.write(f"{tmp}/in.wav", click, sample_rate, subtype="FLOAT")
        subprocess.run(["sox", f"{tmp}/in.wav", "-e", "floating-point", "-b", "32", f"{tmp}/out.wav",
                        "reverb", str(reverberance_pct), str(hf_damping_pct), str(room_scale_pct), "100",
                        str(pre_delay_ms), str(wet_gain_db)], check=True, capture_output=True)
        rir, _ = sf.read(f"{tmp}/out.wav", dtype="float32", always_2d=True)
    rir = rir.mean(axis=1)
    last = np.nonzero(np.abs(rir) > 1e-4 * np.abs(rir).max())[0][-1]
    return rir[: last + 1] / np.abs(rir).max()


def convolve_same_rms(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``, cut to ``len(x)`` from sample 0, at the input's RMS."""
    y = signal.fftconvolve(x, rir)[: len(x)]
    return y * (rms(x) / max(rms(y), 1e-12))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x + g * noise`` with ``g`` set so that power(x) / power(g * noise) = ``snr_db`` (whole clip)."""
    g = rms(x) / max(rms(noise), 1e-12) / 10 ** (snr_db / 20)
    return x + g * noise[: len(x)]


def powerlaw_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as ``f**-exponent`` (1 = pink, 2 = brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    f[0] = f[1]
    return np.fft.irfft(spec / f ** (exponent / 2), n)


def hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics up to 2 kHz, odd ones stronger, random phases."""
    f0 = rng.choice([50.0, 60.0])
    t = np.arange(n) / SAMPLE_RATE_HZ
    out = np.zeros(n)
    for k in range(1, int(2000 // f0) + 1):
        amp = (1.0 if k % 2 else 0.4) / k ** 0.7
        out += amp * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    return out


def band_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """White noise band-passed to one random octave with its lower edge in 400-4000 Hz (fans, hiss)."""
    lo = np.exp(rng.uniform(np.log(400.0), np.log(4000.0)))
    sos = signal.butter(4, [lo, min(2 * lo, 7800.0)], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    return signal.sosfilt(sos, rng.standard_normal(n))


def telephone(x: np.ndarray) -> np.ndarray:
    """Narrow-band phone line: 300-3400 Hz band-pass, 8 kHz sampling, 8-bit mu-law, back to 16 kHz."""
    sos = signal.butter(6, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    y = signal.resample_poly(signal.sosfilt(sos, x), 1, 2)
    peak = max(np.abs(y).max(), 1e-9)
    mu = 255.0
    c = np.sign(y / peak) * np.log1p(mu * np.abs(y / peak)) / np.log1p(mu)
    c = np.round(c * 127) / 127
    y = np.sign(c) * np.expm1(np.abs(c) * np.log1p(mu)) / mu * peak
    return signal.resample_poly(y, 2, 1)[: len(x)]


def spectral_tilt(x: np.ndarray, db_per_octave: float, pivot_hz: float = 500.0) -> np.ndarray:
    """Gain of ``db_per_octave`` per octave above ``pivot_hz`` (0 dB below), applied in the FFT domain."""
    n = 2 * len(x)
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE_HZ)
    gain_db = db_per_octave * np.log2(np.maximum(f, pivot_hz) / pivot_hz)
    return np.fft.irfft(np.fft.rfft(x, n) * 10 ** (gain_db / 20), n)[: len(x)]


class Babble:
    """Babble made of held-out espeak voices reading sentences (no keywords), 6 talkers per clip."""

    SENTENCES = [
        "the weather was much colder than anyone had expected for this time of year",
        "please remember to bring the blue folder to the meeting tomorrow morning",
        "she walked along the river and counted the boats tied to the old pier",
        "our train was delayed because of a signal failure near the city centre",
        "they painted the kitchen a bright colour and moved the table by the window",
        "a cup of tea and a slice of cake would be lovely after such a long day",
        "the children played in the garden until their father called them for dinner",
        "most of the shops in the village close early on a sunday afternoon",
    ]

    def __init__(self, voices: list[str], rng: np.random.Generator, n_talkers: int = 6):
        if shutil.which("espeak-ng") is None:
            raise FileNotFoundError("espeak-ng not found on PATH (needed for babble)")
        self.n_talkers = n_talkers
        self.streams = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, voice in enumerate(voices):
                text = " ".join(rng.permutation(self.SENTENCES))
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(140, 190))),
                                "-w", f"{tmp}/{i}.wav", text], check=True, capture_output=True)
                y, sr = sf.read(f"{tmp}/{i}.wav", dtype="float32")
                y = signal.resample_poly(y, SAMPLE_RATE_HZ, sr) if sr != SAMPLE_RATE_HZ else y
                self.streams.append(y / max(rms(y), 1e-9))

    def __call__(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.zeros(n)
        for k in rng.choice(len(self.streams), self.n_talkers, replace=False):
            s = self.streams[k]
            start = rng.integers(0, len(s) - n)
            out += s[start: start + n]
        return out


def build_conditions(rng: np.random.Generator, babble_voices: list[str], quick: bool) -> dict:
    """``{name: fn(x (T,) float64, rng) -> (T,)}``: every degradation of the study, none used in training."""
    n_rirs = 4 if quick else 12
    small = [random_shoebox_rir(rng, [(3, 5), (2.5, 4.5), (2.4, 3)], (0.25, 0.5), (0.7, 1.5)) for _ in range(n_rirs)]
    large = [random_shoebox_rir(rng, [(8, 14), (6, 10), (3, 5)], (0.7, 1.2), (2.0, 4.0)) for _ in range(n_rirs)]
    medium = [random_shoebox_rir(rng, [(5, 8), (4, 6), (2.6, 3.5)], (0.4, 0.7), (1.0, 2.5)) for _ in range(n_rirs)]
    sox_rooms = [sox_reverb_rir(*a) for a in [(40, 40, 80, 10, 3), (50, 50, 100, 20, 6),
                                                     (60, 30, 100, 0, 0), (35, 80, 60, 5, 6)]]
    babble = Babble(babble_voices, rng)

    def pick(items, r):
        return items[r.integers(len(items))]

    return {
        "room_small": lambda x, r: convolve_same_rms(x, pick(small, r)),
        "room_large_far": lambda x, r: convolve_same_rms(x, pick(large, r)),
        "room_sox": lambda x, r: convolve_same_rms(x, pick(sox_rooms, r)),
        "babble_10db": lambda x, r: mix_at_snr(x, babble(len(x), r), 10),
        "babble_0db": lambda x, r: mix_at_snr(x, babble(len(x), r), 0),
        "pink_5db": lambda x, r: mix_at_snr(x, powerlaw_noise(len(x), 1.0, r), 5),
        "brown_0db": lambda x, r: mix_at_snr(x, powerlaw_noise(len(x), 2.0, r), 0),
        "hum_0db": lambda x, r: mix_at_snr(x, hum(len(x), r), 0),
        "band_noise_5db": lambda x, r: mix_at_snr(x, band_noise(len(x), r), 5),
        "telephone": lambda x, r: telephone(x),
        "muffled_tilt": lambda x, r: spectral_tilt(x, -6.0),
        "quiet_-30db": lambda x, r: x * 10 ** (-30 / 20),
        "clipped_+12db": lambda x, r: np.clip(x * 4.0 / max(np.abs(x).max(), 1e-9), -1, 1),
        "farfield_phone": lambda x, r: telephone(
            mix_at_snr(convolve_same_rms(x, pick(medium, r)), babble(len(x), r), 10)),
    }


def write_condition(records: list[dict], fn, out_dir: Path, seed: int) -> list[dict]:
    """Apply ``fn`` to every clip (its own seeded generator) and write 16-bit WAVs + records."""
    out = []
    for i, rec in enumerate(records):
        x, sr = sf.read(rec["audio_filepath"], dtype="float64")
        if sr != SAMPLE_RATE_HZ:
            raise ValueError(f"{rec['audio_filepath']}: sample rate {sr}, expected {SAMPLE_RATE_HZ}")
        y = fn(x, np.random.default_rng([seed, i]))
        peak = np.abs(y).max()
        if peak > 0.999:
            y = y * (0.999 / peak)  # scale the whole mix down; keeps SNR (clipping conditions clip before)
        rel = Path(rec["label"]) / Path(rec["audio_filepath"]).name
        (out_dir / rec["label"]).mkdir(parents=True, exist_ok=True)
        sf.write(out_dir / rel, y.astype(np.float32), SAMPLE_RATE_HZ, subtype="PCM_16")
        out.append({**rec, "audio_filepath": str(out_dir / rel)})
    return out


# ----------------------------------------------------------------------------------------------
# data preparation: manifests of the split and of every degraded test copy
# ----------------------------------------------------------------------------------------------

def write_jsonl(path: Path, records: list[dict]) -> Path:
    """Write records with absolute paths (via audioconv.io.manifest, so the study uses its checks)."""
    from audioconv.io.manifest import write_manifest

    path.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(path, records, relative=False)
    return path


def subsample(records: list[dict], per_group_label: int, rng: np.random.Generator) -> list[dict]:
    """At most ``per_group_label`` clips of every (speaker, word) pair, picked at random."""
    by_key: dict[tuple, list[dict]] = {}
    for rec in records:
        by_key.setdefault((rec["group"], rec["label"]), []).append(rec)
    out = []
    for key in sorted(by_key):
        items = by_key[key]
        out.extend(items[i] for i in sorted(rng.permutation(len(items))[:per_group_label]))
    return out


def prepare_data(corpus: Path, engines_corpus: Path | None, out: Path, quick: bool, seed: int,
                 log) -> dict[str, Path]:
    """Write ``out/data/*.jsonl`` (train, val, the test conditions) and the degraded WAVs.

    Returns ``{name: manifest path}`` with ``train``, ``val`` and one ``test:<condition>`` per
    test condition (``test:clean``, ``test:clean_both_unseen``, ``test:room_small`` ...,
    ``engines:clean`` ...).
    """
    data = out / "data"
    done = data / "manifests.json"
    if done.exists():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    rng = np.random.default_rng(seed)
    records = corpus_records(corpus, espeak_speaker_table())
    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "validation", "test")}
    test = by_split["test"]
    # Degraded copies use one take per (speaker, word): 640 clips (quick: 160) keep evaluation cheap.
    degrade_src = subsample(test, 1, rng)
    if quick:
        degrade_src = [degrade_src[i] for i in sorted(rng.permutation(len(degrade_src))[:160])]
    manifests = {"train": write_jsonl(data / "train.jsonl", by_split["train"]),
                 "val": write_jsonl(data / "val.jsonl", by_split["validation"]),
                 "test:clean": write_jsonl(data / "test_clean.jsonl", test),
                 "test:clean_both_unseen": write_jsonl(
                     data / "test_clean_both_unseen.jsonl",
                     [r for r in test if r["accent"] in TEST_BASES and r["variant"] in TEST_VARIANTS]),
                 "test:clean_subset": write_jsonl(data / "test_clean_subset.jsonl", degrade_src)}
    log(f"split: train {len(by_split['train'])}, val {len(by_split['validation'])}, "
        f"test {len(test)} clips ({len(degrade_src)} degraded per condition)")
    babble_voices = [f"{b}+{v}" for b in TEST_BASES for v in TEST_VARIANTS]
    conditions = build_conditions(rng, babble_voices, quick)
    for i, (name, fn) in enumerate(conditions.items()):
        t0 = time.time()
        recs = write_condition(degrade_src, fn, data / "wav" / name, seed=seed * 1000 + i)
        manifests[f"test:{name}"] = write_jsonl(data / f"test_{name}.jsonl", recs)
        log(f"  wrote {name} ({len(recs)} clips, {time.time() - t0:.1f} s)")
    if engines_corpus is not None:
        eng = corpus_records(engines_corpus)
        if quick:
            eng = subsample(eng, 1, rng)
        manifests["engines:clean"] = write_jsonl(data / "engines_clean.jsonl", eng)
        for i, name in enumerate(["room_large_far", "babble_10db", "farfield_phone"]):
            recs = write_condition(eng, conditions[name], data / "wav" / f"engines_{name}", seed=seed * 1000 + 100 + i)
            manifests[f"engines:{name}"] = write_jsonl(data / f"engines_{name}.jsonl", recs)
        log(f"  wrote other-engine sets ({len(eng)} clips each)")
    done.write_text(json.dumps({k: str(v) for k, v in manifests.items()}, indent=1))
    return manifests


# ----------------------------------------------------------------------------------------------
# round 4 (issue 13): train on one engine's corpus split as a user would, test on OTHER engines
# ----------------------------------------------------------------------------------------------

#: The five held-out conditions of issue 13 (plus a harsher Sabine-nominal room set) on the other-engine clips.
ENGINE_CONDITIONS = ("reverb", "reverb_sabine", "noise", "phone", "all3")
#: Goals of issue 13 (accuracy on the other engines, %).
GOALS = {"engines:clean": 75, "engines:reverb": 60, "engines:noise": 60, "engines:phone": 65, "engines:all3": 50}
BABBLE_SENTENCES = Babble.SENTENCES


def listed_split_records(corpus: Path) -> list[dict]:
    """Records of a ``make_kws_corpus.py`` corpus with ``split`` from its ``validation_list.txt`` /
    ``testing_list.txt`` (the split ``audioconv manifest speech-commands --split-files`` makes)."""
    lists = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        path = corpus / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the corpus has no {name} (make it with make_kws_corpus.py)")
        lists.update({line.strip(): split for line in path.read_text().splitlines() if line.strip()})
    records = corpus_records(corpus)
    for rec in records:
        rel = f"{rec['label']}/{Path(rec['audio_filepath']).name}"
        rec["split"] = lists.get(rel, "train")
    return records


def _room_positions(rng: np.random.Generator, dims: np.ndarray, margin_m: float = 0.5,
                    min_distance_m: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """A source and a microphone drawn uniformly in the room, ``margin_m`` from every wall and at
    least ``min_distance_m`` apart."""
    for _ in range(1000):
        src, mic = (rng.uniform(margin_m, dims - margin_m) for _ in range(2))
        if np.linalg.norm(src - mic) >= min_distance_m:
            return src, mic
    raise ValueError(f"cannot place a source and a microphone {min_distance_m} m apart in room {dims}")


def pyroomacoustics_rir(rng: np.random.Generator, dims_m, rt60_s, calibrate: bool) -> tuple[np.ndarray, dict]:
    """A shoebox RIR by pyroomacoustics' image-source method: room size, RT60 and positions drawn
    uniformly. Absorption from ``pyroomacoustics.inverse_sabine``; with ``calibrate`` it is then
    corrected (3 times) until the Schroeder T30 of the RIR matches the drawn RT60 (Sabine's formula
    overestimates the absorption an image-source room needs, so uncalibrated rooms ring longer).
    Returns the RIR (peak 1) and ``{"dims_m", "rt60_s", "measured_rt60_s", "distance_m"}``."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(*d) for d in dims_m])
    rt60 = float(rng.uniform(*rt60_s))
    src, mic = _room_positions(rng, dims)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    for attempt in range(4 if calibrate else 1):
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE_HZ, materials=pra.Material(float(absorption)), max_order=max_order)
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], np.float64)
        measured = float(pra.experimental.measure_rt60(rir, fs=SAMPLE_RATE_HZ))
        if not calibrate or abs(measured / rt60 - 1) < 0.03:
            break
        absorption = float(np.clip(1 - (1 - absorption) ** (measured / rt60), 1e-3, 0.99))
    info = {"dims_m": dims.round(2).tolist(), "rt60_s": round(rt60, 3), "measured_rt60_s": round(measured, 3),
            "distance_m": round(float(np.linalg.norm(src - mic)), 2)}
    return (rir / np.abs(rir).max()).astype(np.float32), info


def speech_babble_streams(rng: np.random.Generator) -> list[np.ndarray]:
    """Long streams of flite and festival voices reading ordinary sentences (no keywords), unit RMS."""
    cmds = [["flite", "-voice", v] for v in ("kal", "awb", "rms", "slt")]
    cmds += [["text2wave", "-eval", f"({v})"] for v in ("voice_kal_diphone", "voice_cmu_us_slt_arctic_hts")]
    streams = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, cmd in enumerate(cmds):
            text = " ".join(rng.permutation(BABBLE_SENTENCES))
            wav = f"{tmp}/{i}.wav"
            if cmd[0] == "flite":
                subprocess.run(cmd + ["-t", text, "-o", wav], check=True, capture_output=True)
            else:
                Path(f"{tmp}/{i}.txt").write_text(text)
                subprocess.run(cmd + [f"{tmp}/{i}.txt", "-o", wav], check=True, capture_output=True)
            y, sr = sf.read(wav, dtype="float64")
            y = signal.resample_poly(y, SAMPLE_RATE_HZ, sr) if sr != SAMPLE_RATE_HZ else y
            streams.append(y / max(rms(y), 1e-9))
    return streams


def street_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic-like: low-passed brown noise, slowly swelling (a passing car every few seconds), with
    an engine hum whose pitch glides (Doppler)."""
    rumble = signal.sosfilt(signal.butter(2, 800.0, fs=SAMPLE_RATE_HZ, output="sos"), powerlaw_noise(n, 1.5, rng))
    t = np.arange(n) / SAMPLE_RATE_HZ
    swell = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
    f0 = rng.uniform(60, 140) * (1 + 0.08 * np.tanh(rng.uniform(2, 6) * (t - rng.uniform(0, t[-1]))))
    engine = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SAMPLE_RATE_HZ) / k for k in range(1, 6))
    return rumble / max(rms(rumble), 1e-9) * (0.3 + swell) + 0.3 * engine / max(rms(engine), 1e-9)


def cafe_noise(n: int, rng: np.random.Generator, streams: list[np.ndarray]) -> np.ndarray:
    """Cafe-like: distant babble (4 talkers, low-passed) and the clinks of cups (short decaying partials)."""
    out = np.zeros(n)
    for k in rng.choice(len(streams), 4, replace=False):
        start = rng.integers(0, len(streams[k]) - n)
        out += streams[k][start: start + n]
    out = signal.sosfilt(signal.butter(2, 2500.0, fs=SAMPLE_RATE_HZ, output="sos"), out)
    out /= max(rms(out), 1e-9)
    t = np.arange(int(0.15 * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    for _ in range(rng.integers(1, 5)):
        clink = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(2000, 6000, 3)) * np.exp(-t / rng.uniform(0.01, 0.05))
        at = rng.integers(0, n - len(t))
        out[at: at + len(t)] += rng.uniform(1, 4) * clink
    return out


def fan_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Fan / air conditioning: pink noise through a broad resonance, plus mains hum."""
    centre = np.exp(rng.uniform(np.log(150.0), np.log(1500.0)))
    sos = signal.butter(2, [centre / 1.6, centre * 1.6], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    air = powerlaw_noise(n, 1.0, rng) + 3 * signal.sosfilt(sos, rng.standard_normal(n))
    h = hum(n, rng)
    return air / max(rms(air), 1e-9) + 0.5 * h / max(rms(h), 1e-9)


def babble_noise(n: int, rng: np.random.Generator, streams: list[np.ndarray]) -> np.ndarray:
    """3-6 voices of other engines talking at once."""
    out = np.zeros(n)
    for k in rng.choice(len(streams), int(rng.integers(3, 7)), replace=False):
        start = rng.integers(0, len(streams[k]) - n)
        out += streams[k][start: start + n]
    return out


NOISE_TYPES = ("white", "pink", "babble", "street", "cafe", "fan")


def noise_of_kind(kind: str, n: int, rng: np.random.Generator, streams: list[np.ndarray]) -> np.ndarray:
    """``n`` samples of the noise ``kind``, one of ``NOISE_TYPES`` (``streams``: for babble and cafe)."""
    return {"white": lambda: rng.standard_normal(n), "pink": lambda: powerlaw_noise(n, 1.0, rng),
            "babble": lambda: babble_noise(n, rng, streams), "street": lambda: street_noise(n, rng),
            "cafe": lambda: cafe_noise(n, rng, streams), "fan": lambda: fan_noise(n, rng)}[kind]()


def mixed_noise(x: np.ndarray, rng: np.random.Generator, streams: list[np.ndarray]) -> np.ndarray:
    """One noise type of ``NOISE_TYPES`` per clip at an SNR drawn evenly in 0-10 dB (whole clip)."""
    kind = NOISE_TYPES[rng.integers(len(NOISE_TYPES))]
    return mix_at_snr(x, noise_of_kind(kind, len(x), rng, streams), rng.uniform(0.0, 10.0))


def phone_channel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A phone line: 300-3400 Hz band (4th-order Butterworth), 8 kHz, then G.711 mu-law or GSM 06.10
    encoded and decoded by sox, back to 16 kHz."""
    if shutil.which("sox") is None:
        raise FileNotFoundError("sox not found on PATH (apt-get install sox)")
    sos = signal.butter(4, [300.0, 3400.0], btype="bandpass", fs=SAMPLE_RATE_HZ, output="sos")
    y = signal.resample_poly(signal.sosfilt(sos, x), 1, 2)
    y = y * (0.9 / max(np.abs(y).max(), 1e-9))
    codec = ["-e", "u-law", "-b", "8"] if rng.random() < 0.5 else []
    suffix = ".wav" if codec else ".gsm"
    with tempfile.TemporaryDirectory() as tmp:
        sf.write(f"{tmp}/in.wav", y.astype(np.float32), 8000, subtype="FLOAT")
        subprocess.run(["sox", f"{tmp}/in.wav", *codec, "-r", "8000", "-c", "1", f"{tmp}/coded{suffix}"], check=True,
                       capture_output=True)
        subprocess.run(["sox", f"{tmp}/coded{suffix}", "-e", "floating-point", "-b", "32", f"{tmp}/out.wav"],
                       check=True, capture_output=True)
        z, _ = sf.read(f"{tmp}/out.wav", dtype="float64")
    z = signal.resample_poly(z, 2, 1)[: len(x)]
    return np.pad(z, (0, len(x) - len(z)))


def build_engine_conditions(rng: np.random.Generator, quick: bool, log) -> tuple[dict, dict]:
    """``{name: fn(x, rng)}`` for ``ENGINE_CONDITIONS`` and a description of the rooms drawn.

    Rooms: 4-12 × 3-9 × 2.5-4.5 m, RT60 0.4-1.0 s, source and microphone anywhere 0.5 m from the
    walls and 0.5 m apart (pyroomacoustics' image method; ``reverb`` calibrated to the measured
    RT60, ``reverb_sabine`` with Sabine's absorption as is: they ring longer)."""
    n_rooms = 6 if quick else 30
    dims, rt60 = [(4, 12), (3, 9), (2.5, 4.5)], (0.4, 1.0)
    t0 = time.time()
    rooms = [pyroomacoustics_rir(rng, dims, rt60, calibrate=True) for _ in range(n_rooms)]
    sabine = [pyroomacoustics_rir(rng, dims, rt60, calibrate=False) for _ in range(n_rooms)]
    log(f"  {2 * n_rooms} test rooms ({time.time() - t0:.0f} s)")
    streams = speech_babble_streams(rng)

    def pick(items, r):
        return items[r.integers(len(items))][0]

    conditions = {
        "reverb": lambda x, r: convolve_same_rms(x, pick(rooms, r)),
        "reverb_sabine": lambda x, r: convolve_same_rms(x, pick(sabine, r)),
        "noise": lambda x, r: mixed_noise(x, r, streams),
        "phone": lambda x, r: phone_channel(x, r),
        "all3": lambda x, r: phone_channel(mixed_noise(convolve_same_rms(x, pick(rooms, r)), r, streams), r),
    }
    return conditions, {"reverb": [i for _, i in rooms], "reverb_sabine": [i for _, i in sabine]}


def prepare_engine_data(corpus: Path, engines_corpus: Path, out: Path, quick: bool, seed: int, log) -> dict[str, Path]:
    """Round 4's data: train / validation / ``espeak:clean`` from the corpus's own lists, and the
    other-engine clips clean and under every ``ENGINE_CONDITIONS`` (``engines:<name>``)."""
    data = out / "data"
    done = data / "manifests.json"
    if done.exists():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    rng = np.random.default_rng(seed)
    records = listed_split_records(corpus)
    by_split = {s: [r for r in records if r["split"] == s] for s in ("train", "validation", "test")}
    eng = corpus_records(engines_corpus)
    if quick:
        eng = subsample(eng, 1, rng)
    manifests = {"train": write_jsonl(data / "train.jsonl", by_split["train"]),
                 "val": write_jsonl(data / "val.jsonl", by_split["validation"]),
                 "espeak:clean": write_jsonl(data / "espeak_test.jsonl", by_split["test"]),
                 "engines:clean": write_jsonl(data / "engines_clean.jsonl", eng)}
    log(f"split: train {len(by_split['train'])}, val {len(by_split['validation'])}, "
        f"espeak test {len(by_split['test'])}, other engines {len(eng)} clips per condition")
    conditions, rooms = build_engine_conditions(rng, quick, log)
    (data / "rooms.json").write_text(json.dumps(rooms, indent=1))
    for i, (name, fn) in enumerate(conditions.items()):
        t0 = time.time()
        recs = write_condition(eng, fn, data / "wav" / f"engines_{name}", seed=seed * 1000 + 200 + i)
        manifests[f"engines:{name}"] = write_jsonl(data / f"engines_{name}.jsonl", recs)
        log(f"  wrote engines/{name} ({len(recs)} clips, {time.time() - t0:.1f} s)")
    done.write_text(json.dumps({k: str(v) for k, v in manifests.items()}, indent=1))
    return manifests


# ----------------------------------------------------------------------------------------------
# 3. chains, training and evaluation
# ----------------------------------------------------------------------------------------------

def _noise_any_colour(snr_db, p):
    """Noise of a colour drawn per example (white / pink / brown), as a chain config."""
    return {"type": "OneOf", "p": p, "transforms": [
        {"type": "AddNoise", "snr_db": list(snr_db), "color": c, "p": 1.0} for c in ("white", "pink", "brown")]}


def chain_configs(rirs: str = "rirs_train/rirs.jsonl") -> dict[str, str | list]:
    """The chains compared: ``"none"``, ``"default"`` (whatever ``default_chain`` is now) or a
    chain config list (written to ``CHAIN.json`` and given to ``audioconv train --augment``).

    * ``initial_default``: ``default_chain`` as first written, before this study;
    * ``mission4``: the package's four mission augmentations with the design's example settings;
    * ``broad``: + speed perturbation, time shift, coloured noise down to 0 dB, a wide gain range,
      every transform applied to most examples; ``broad_noreverb`` / ``broad_heavynoise`` ablate it;
    * ``light``: the same kinds of transform, each applied to about half of the examples with
      milder ranges (so about 1 example in 30 passes untouched and most see one or two changes);
      ``light_nospeed`` ablates speed perturbation; ``moderate`` sits between ``light`` and ``broad``;
    * ``robust``: what the first rounds pointed to — ``initial_default`` without the polarity
      inversion (a no-op for log-mel models), with coloured noise down to 0 dB SNR on 70 % of the
      examples, a gain range down to -30 dB, and EQ on 60 % of the examples; no speed perturbation
      (``robust_speed`` adds it back, on half of the examples, factors 0.9-1.1).
    """
    shift = {"type": "TimeShift", "shift_s": [-0.1, 0.1], "p": 0.5}
    speed = {"type": "SpeedPerturb", "factors": [0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15], "p": 0.8}
    eq = {"type": "RandomEQ", "n_bands": 3, "gain_db": [-12, 12], "q": [0.5, 4.0], "p": 0.8}
    reverb = {"type": "Reverb", "rt60_s": [0.2, 1.0], "p": 0.5}
    gain_wide = {"type": "Gain", "gain_db": [-30, 6], "p": 0.5}
    broad = [shift, speed, eq, reverb, _noise_any_colour((0, 30), 0.8), gain_wide]
    speed_light = {"type": "SpeedPerturb", "factors": [0.9, 0.95, 1.0, 1.05, 1.1], "p": 0.5}
    light = [shift, speed_light, {**eq, "p": 0.5}, {"type": "Reverb", "rt60_s": [0.2, 0.8], "p": 0.3},
             _noise_any_colour((5, 30), 0.5), {"type": "Gain", "gain_db": [-20, 6], "p": 0.5}]
    return {
        "none": "none",
        "default": "default",
        "initial_default": [shift, {"type": "PolarityInversion", "p": 0.5}, eq, reverb,
                            {"type": "AddNoise", "snr_db": [5, 40], "color": "white", "p": 0.8},
                            {"type": "Gain", "gain_db": [-6, 6], "p": 0.5}],
        "mission4": [{"type": "PolarityInversion", "p": 0.5}, eq, reverb,
                     {"type": "AddNoise", "snr_db": [0, 30], "color": "white", "p": 0.8}],
        "broad": broad,
        "broad_noreverb": [c for c in broad if c is not reverb],
        "broad_heavynoise": [shift, speed, eq, reverb, _noise_any_colour((-5, 20), 0.9), gain_wide],
        "light": light,
        "light_nospeed": [c for c in light if c is not speed_light],
        "robust": [shift, {**eq, "p": 0.6}, reverb, _noise_any_colour((0, 30), 0.7),
                   {"type": "Gain", "gain_db": [-30, 6], "p": 0.5}],
        "robust_speed": [shift, speed_light, {**eq, "p": 0.6}, reverb, _noise_any_colour((0, 30), 0.7),
                         {"type": "Gain", "gain_db": [-30, 6], "p": 0.5}],
        "moderate": [shift, {**speed_light, "p": 0.6}, {**eq, "p": 0.7}, {**reverb, "p": 0.4},
                     _noise_any_colour((0, 30), 0.7), {"type": "Gain", "gain_db": [-20, 6], "p": 0.5}],
        # the shipped default with a second talker from the batch mixed in before the room and noise
        "default_mix": _default_with(1, {"type": "BatchMix", "snr_db": [0, 20], "p": 0.3}),
        **round4_chains(rirs),
        **round5_chains(),
        **round6_chains(),
        **round7_chains(),
        **round9_chains(),
        **round11_chains(),
        **round12_chains(),
    }


#: ``default_chain`` as rounds 1-3 left it (``light_nospeed`` + polarity), frozen for rounds 4 and 5
#: (``default`` there; since round 5 the default adds a telephone channel, ``r5_g711``).
DEFAULT_R3 = [
    {"type": "TimeShift", "shift_s": [-0.1, 0.1], "p": 0.5},
    {"type": "PolarityInversion", "p": 0.5},
    {"type": "RandomEQ", "n_bands": 3, "gain_db": [-12, 12], "q": [0.5, 4.0], "p": 0.5},
    {"type": "Reverb", "rt60_s": [0.2, 0.8], "p": 0.3},
    _noise_any_colour((5, 30), 0.5),
    {"type": "Gain", "gain_db": [-20, 6], "p": 0.5},
]


def round4_chains(rirs: str = "rirs_train/rirs.jsonl") -> dict[str, list]:
    """Round 4's chains: ``default_r3`` with its reverb replaced (the cause being looked for) and
    then with stronger noise and voice transforms. ``rirs``: a bank from ``audioconv rirs``."""
    def swap(reverb):
        return [reverb if step["type"] == "Reverb" else step for step in DEFAULT_R3]

    return {
        "default_r3": DEFAULT_R3,
        "r3_noreverb": [step for step in DEFAULT_R3 if step["type"] != "Reverb"],
        # synthetic RIRs as they are, over the test's RT60 range and on half of the examples
        "r3_synth_wide": swap({"type": "Reverb", "rt60_s": [0.2, 1.0], "p": 0.5}),
        # ... and with direct-to-reverberant ratios as low as real rooms at a few metres have
        "r3_synth_lowdrr": swap({"type": "Reverb", "rt60_s": [0.2, 1.0], "drr_db": [-12, 6], "p": 0.5}),
        # image-source rooms (audioconv rirs, other rooms than the test's)
        "r3_rooms": swap({"type": "Reverb", "rirs": rirs, "p": 0.5}),
        **_stronger(swap({"type": "Reverb", "rirs": rirs, "p": 0.5}), "r4_rooms"),
        **_stronger(swap({"type": "Reverb", "rt60_s": [0.2, 1.0], "drr_db": [-12, 6], "p": 0.5}), "r4_synth_lowdrr"),
    }


def round5_chains() -> dict[str, list]:
    """Round 5's chains: ``DEFAULT_R3`` (the default of rounds 3 to 5, round 5's ``default`` row)
    followed by a telephone channel made of the augmentation issue's transforms, after the room
    and the noise, where a phone line sits: a band-pass (edges 210-460 Hz and 2.1-4.5 kHz; p .3) alone
    (``r5_band``); then mu-law or A-law companding (p .3; ``r5_g711``, the default since); or
    mu-law, A-law or GSM at 8 kHz (p .3; ``r5_phone``: GSM runs on the CPU, one clip at a time)."""
    band = {"type": "BandPass", "centre_hz": [800, 1200], "bandwidth_octaves": [2.8, 3.8], "order": [2, 4], "p": 0.3}
    g711 = {"type": "Codec", "formats": ["mulaw", "alaw"], "p": 0.3}
    phone = {"type": "Codec", "formats": ["mulaw", "alaw", "gsm"], "p": 0.3}
    return {"r5_band": DEFAULT_R3 + [band], "r5_g711": DEFAULT_R3 + [band, g711], "r5_phone": DEFAULT_R3 + [band, phone]}


def round6_chains() -> dict[str, list]:
    """Round 6's chain: the default since round 5 (``r5_g711``) with the voice changed first, before
    the room: a pitch shift of up to 3 semitones and a tempo change of 0.8-1.25 (each p .4;
    ``r6_voice``), for speakers whose pitch and speaking rate differ from the training voices'."""
    voice = [{"type": "PitchShift", "semitones": [-3, 3], "p": 0.4},
             {"type": "TimeStretch", "rate": [0.8, 1.25], "p": 0.4}]
    g711 = round5_chains()["r5_g711"]
    return {"r6_voice": g711[:1] + voice + g711[1:]}


def round7_chains() -> dict[str, list]:
    """Round 7's chains, aimed at the noise condition (mostly speech-like noise at 0-10 dB): the
    default with its coloured noise at 0-20 dB SNR instead of 5-30 (``r7_snr0``; on 70 % of the
    examples instead of half: ``r7_snr0_p7``; at -5 to 15 dB: ``r7_snrm5``), and with
    babble made from the batch: three other examples, each reversed in time (so no keyword
    of theirs is heard) and shifted, summed and added at 0-15 dB (p .3; ``r7_babble``).
    ``r7_snrm5`` is the default since; ``r6_default`` is the default before it (noise at 5-30 dB).
    ``r7_babble`` inserts into whatever the default is now."""
    def noise(snr_db, p):
        return [_noise_any_colour(snr_db, p) if step["type"] == "OneOf" else step for step in _default_steps()]

    babble = {"type": "BatchMix", "snr_db": [0, 15], "talkers": 3, "reverse": True, "p": 0.3}
    return {"r7_snr0": noise((0, 20), 0.5), "r7_snr0_p7": noise((0, 20), 0.7), "r7_snrm5": noise((-5, 15), 0.5),
            "r7_babble": _default_with(1, babble), "r6_default": noise((5, 30), 0.5)}


def round9_chains() -> dict[str, list]:
    """Round 9's chains, each today's default with one change: a tempo change of 0.85-1.2 without
    the pitch shift of ``r6_voice`` (p .3, after the time shift; ``r9_tempo``), and the reverb on
    half of the examples over the test's RT60 range, 0.3-1.0 s (``r9_rev5``; p .3 and 0.2-0.8 s
    in the default). ``r9_lowpass``: a steep low-pass at 3-7 kHz (p .3, after the time shift), for
    voices recorded or synthesised at a low sample rate (one of the other engines' voices, flite's
    ``kal``, is 8 kHz speech with nothing above 4 kHz). ``r9_pitch``: a pitch shift of up to 2
    semitones alone (p .3, after the time shift)."""
    pitch = {"type": "PitchShift", "semitones": [-2, 2], "p": 0.3}
    lowpass = {"type": "LowPass", "cutoff_hz": [3000, 7000], "order": [4, 8], "p": 0.3}
    tempo = {"type": "TimeStretch", "rate": [0.85, 1.2], "p": 0.3}
    rev5 = [{**step, "rt60_s": [0.3, 1.0], "p": 0.5} if step["type"] == "Reverb" else step
            for step in _default_steps()]
    return {"r9_tempo": _default_with(1, tempo), "r9_rev5": rev5, "r9_lowpass": _default_with(1, lowpass),
            "r9_pitch": _default_with(1, pitch)}


def round11_chains() -> dict[str, list]:
    """Round 11's chains: ``r10_default``, the default of rounds 7-10 (today's without its babble),
    and it with babble from the batch after the reverb: five other examples, forwards, each
    circularly shifted, summed at 0-15 dB SIR on 30 % of the examples (``r11_bm5``, today's
    default), on 15 % (``r11_bm5_p15``), at 5-20 dB (``r11_bm5_snr5``) or with eight talkers
    (``r11_bm8``)."""
    r10 = [step for step in _default_steps() if step["type"] != "BatchMix"]
    at = next(i for i, step in enumerate(r10) if step["type"] == "Reverb") + 1

    def babble(**change):
        return r10[:at] + [{"type": "BatchMix", "snr_db": [0.0, 15.0], "talkers": 5, "reverse": False, "p": 0.3,
                            **change}] + r10[at:]

    return {"r10_default": r10, "r11_bm5": babble(), "r11_bm5_p15": babble(p=0.15),
            "r11_bm5_snr5": babble(snr_db=[5.0, 20.0]), "r11_bm8": babble(talkers=8)}


def round12_chains() -> dict[str, list]:
    """Round 12's chains, each today's default with one change: a first-order low-pass at 800-4000 Hz
    after the EQ, a darker spectral balance (``r12_tilt``, p .5); a speed change of 0.85-1.15 after the
    time shift (``r12_speed``, p .5); the babble at -5 to 10 dB SIR (``r12_bm_snrm5``)."""
    steps = _default_steps()
    after_eq = next(i for i, step in enumerate(steps) if step["type"] == "RandomEQ") + 1
    after_shift = next(i for i, step in enumerate(steps) if step["type"] == "TimeShift") + 1
    tilt = {"type": "LowPass", "cutoff_hz": [800.0, 4000.0], "order": 1, "p": 0.5}
    speed = {"type": "SpeedPerturb", "factors": [0.85, 0.9, 0.95, 1.05, 1.1, 1.15], "p": 0.5}
    louder_babble = [{**step, "snr_db": [-5.0, 10.0]} if step["type"] == "BatchMix" else step for step in steps]
    return {"r12_tilt": _default_with(after_eq, tilt), "r12_speed": _default_with(after_shift, speed),
            "r12_bm_snrm5": louder_babble}


def _stronger(chain: list, name: str) -> dict[str, list]:
    """``chain`` with noise down to 0 dB on 70 % of the examples (``_noise``), then also a second
    talker from the batch (``_mix``) or a pitch shift (``_pitch``)."""
    noisy = [_noise_any_colour((0, 20), 0.7) if step["type"] == "OneOf" else step for step in chain]
    mix = {"type": "BatchMix", "snr_db": [0, 15], "p": 0.25}
    pitch = {"type": "PitchShift", "semitones": [-3, 3], "p": 0.3}
    return {f"{name}_noise": noisy, f"{name}_noise_mix": noisy[:1] + [mix] + noisy[1:],
            f"{name}_noise_pitch": noisy[:1] + [pitch] + noisy[1:]}


def _default_steps() -> list:
    """``default_chain``'s steps, as chain configs."""
    sys.path.insert(0, str(REPO))
    from audioconv.augment import chain_to_config, default_chain

    config = chain_to_config(default_chain(SAMPLE_RATE_HZ))
    return config["transforms"] if isinstance(config, dict) else config


def _default_with(position: int, transform: dict) -> list:
    """``default_chain``'s config with ``transform`` inserted at ``position``."""
    steps = _default_steps()
    return steps[:position] + [transform] + steps[position:]


def augment_argument(name: str, spec, chains_dir: Path) -> str:
    """What to pass to ``--augment`` for a chain spec (writes the chain JSON when needed)."""
    if isinstance(spec, str):
        return spec
    from audioconv.augment import chain_from_config

    chain_from_config(spec, SAMPLE_RATE_HZ)  # fail early on a bad config
    chains_dir.mkdir(parents=True, exist_ok=True)
    path = chains_dir / f"{name}.json"
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return str(path)


def train_command(manifests: dict, run_dir: Path, augment: str, seed: int, args) -> list[str]:
    """The ``audioconv train`` command line of one run (same budget for every chain)."""
    budget = [(flag, value) for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                                                ("--lr", args.lr), ("--channels", args.channels)) if value is not None]
    augment_opt = [] if augment == "default" and args.protocol == "engines" else ["--augment", augment]
    return [sys.executable, "-m", "audioconv", "train", "--train", str(manifests["train"]),
            "--val", str(manifests["val"]), "--out", str(run_dir), *augment_opt,
            *[str(v) for pair in budget for v in pair], "--seed", str(seed), "--device", args.device,
            "--threads", str(args.threads), "--workers", "0", "--no-progress", "--json", *args.train_args.split()]


def evaluate_run(run_dir: Path, manifests: dict, device: str) -> dict:
    """Accuracy and macro-F1 of ``run_dir/best.pt`` on every test manifest (``{name: {...}}``)."""
    from audioconv.training.evaluate import evaluate

    out = {}
    for name, path in manifests.items():
        if name in ("train", "val"):
            continue
        r = evaluate(run_dir / "best.pt", path, device=device, batch_size=128, progress=False)
        out[name] = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n": r["n"]}
    return out


def run_one(name: str, seed: int, augment: str, manifests: dict, args, log) -> dict:
    """Train (unless done) and evaluate (unless done) one chain and seed; returns its result dict."""
    run_dir = args.out / "runs" / f"{name}_seed{seed}"
    result_path = run_dir / "robustness.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if not (run_dir / "best.pt").exists() or not _finished(run_dir):
        if run_dir.exists():
            shutil.rmtree(run_dir)
        t0 = time.time()
        cmd = train_command(manifests, run_dir, augment, seed, args)
        log(f"[{name} seed {seed}] training: {' '.join(cmd[1:])}")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            raise RuntimeError(f"training {name} seed {seed} failed:\n{proc.stderr[-3000:]}")
        train_s = time.time() - t0
    else:
        train_s = None
    t0 = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--evaluate-run", str(run_dir),
           "--manifests", str(args.out / "data" / "manifests.json"), "--device", args.device,
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"evaluating {name} seed {seed} failed:\n{proc.stderr[-3000:]}")
    scores = json.loads((run_dir / "scores.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((run_dir / "config.json").read_text())
    result = {"chain": name, "seed": seed, "augment": augment, "scores": scores,
              "chain_config": config.get("augment"), "final_val_accuracy": metrics[-1].get("val_accuracy"),
              "train_s": train_s, "eval_s": time.time() - t0,
              "clips_per_s": float(np.mean([m.get("clips_per_s", np.nan) for m in metrics]))}
    result_path.write_text(json.dumps(result, indent=1))
    log(f"[{name} seed {seed}] " + "  ".join(f"{k} {v['accuracy']:.3f}" for k, v in scores.items()))
    return result


def _finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` trained all the epochs its ``config.json`` asked for."""
    path, config = run_dir / "metrics.jsonl", run_dir / "config.json"
    if not path.exists() or not config.exists():
        return False
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    epochs = json.loads(config.read_text())["train_config"]["epochs"]
    return bool(lines) and json.loads(lines[-1]).get("epoch") == epochs


# ----------------------------------------------------------------------------------------------
# 4. report
# ----------------------------------------------------------------------------------------------

CLEAN_KEYS = ("test:clean", "test:clean_both_unseen", "test:clean_subset")


def degraded_keys(scores: dict) -> list[str]:
    """The degraded espeak test conditions (not the clean ones, not the other-engine sets)."""
    return [k for k in scores if k.startswith("test:") and k not in CLEAN_KEYS]


def degraded_mean(scores: dict) -> float:
    return float(np.mean([scores[k]["accuracy"] for k in degraded_keys(scores)]))


def summarize_results(results: list[dict]) -> dict:
    """``{chain: {column: (mean, half-range, n_seeds)}}`` with the summary columns added."""
    table: dict[str, dict[str, list[float]]] = {}
    for r in results:
        row = table.setdefault(r["chain"], {})
        s = r["scores"]
        cols = {k: s[k]["accuracy"] for k in s}
        if degraded_keys(s):
            cols["degraded_mean"] = degraded_mean(s)
            cols["degraded_worst"] = min(s[k]["accuracy"] for k in degraded_keys(s))
        cols["train_s"] = r.get("train_s") or float("nan")
        eng = [k for k in s if k.startswith("engines:") and k != "engines:clean"]
        if eng and "test:clean" in s:
            cols["engines_degraded_mean"] = float(np.mean([s[k]["accuracy"] for k in eng]))
        for k, v in cols.items():
            row.setdefault(k, []).append(v)
    return {chain: {k: (float(np.mean(v)), float((max(v) - min(v)) / 2), len(v)) for k, v in row.items()}
            for chain, row in table.items()}


def markdown_table(summary: dict) -> str:
    """Conditions as rows, chains as columns; accuracy in %, ``± half-range`` over seeds."""
    chains = list(summary)
    first = summary[chains[0]]
    order = ["test:clean", "test:clean_both_unseen", "engines:clean", "degraded_mean", "degraded_worst",
             "engines_degraded_mean"]
    order = [k for k in order if k in first] + sorted(k for k in first if k.startswith("test:") and k not in order
                                                      and k not in CLEAN_KEYS)
    order += sorted(k for k in first if k.startswith("engines:") and k not in order)
    order.append("test:clean_subset")
    n_seeds = {c: summary[c]["test:clean"][2] for c in chains}
    lines = ["| condition | " + " | ".join(f"{c} (n={n_seeds[c]})" for c in chains) + " |",
             "|---|" + "---:|" * len(chains)]
    for key in order:
        cells = []
        best = max(summary[c][key][0] for c in chains if key in summary[c])
        for c in chains:
            if key not in summary[c]:
                cells.append("–")
                continue
            mean, half, n = summary[c][key]
            cell = f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if n > 1 else "")
            cells.append(f"**{cell}**" if abs(mean - best) < 1e-9 else cell)
        label = key.replace("test:", "").replace("engines:", "engines/")
        if key in ("degraded_mean", "degraded_worst", "engines_degraded_mean"):
            label = f"*{label}*"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


ENGINE_COLUMNS = ("espeak:clean", "engines:clean", "engines:reverb", "engines:reverb_sabine", "engines:noise",
                  "engines:phone", "engines:all3")


def engine_table(summary: dict) -> str:
    """Round 4's table: one row per chain/setting, the conditions as columns, the goals last;
    accuracy in %, mean ± half-range over the n seeds; training wall time in minutes."""
    head = ["setting (n seeds)"] + [c.replace("engines:", "") for c in ENGINE_COLUMNS] + ["train min"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, row in summary.items():
        n = row["engines:clean"][2]
        cells = []
        for key in ENGINE_COLUMNS:
            if key not in row:
                cells.append("–")
                continue
            mean, half, _ = row[key]
            cells.append(f"{100 * mean:.1f}" + (f" ± {100 * half:.1f}" if n > 1 else ""))
        minutes = row.get("train_s", (float("nan"),))[0] / 60
        lines.append(f"| {name} ({n}) | " + " | ".join(cells) + f" | {minutes:.1f} |")
    goals = [f"≥ {GOALS[k]}" if k in GOALS else "" for k in ENGINE_COLUMNS]
    lines.append("| *goal* | " + " | ".join(goals) + " | ≤ 15 |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------

DEFAULT_CHAINS = "none,initial_default,mission4,broad,broad_noreverb,light,light_nospeed,moderate,robust"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--corpus", type=Path, help="espeak-ng corpus from make_kws_corpus.py (--engines espeak-ng)")
    ap.add_argument("--engines-corpus", type=Path, help="optional corpus of other engines (--engines flite,festival)")
    ap.add_argument("--out", type=Path, default=Path("runs/robustness_study"))
    ap.add_argument("--protocol", choices=["voices", "engines"], default="voices",
                    help="voices: rounds 1-3 (held-out espeak voice families, 14 degradations); engines: round 4 "
                         "(train on the corpus's own split with `audioconv train` defaults, test on --engines-corpus "
                         "clean, in rooms, in noise, on a phone line and all three)")
    ap.add_argument("--epochs", type=int, help="voices: default 15; engines: the trainer's default")
    ap.add_argument("--batch-size", type=int, help="voices: default 64; engines: the trainer's default")
    ap.add_argument("--lr", type=float, help="voices: default 3e-3; engines: the trainer's default")
    ap.add_argument("--channels", help="model size; voices: default 16,32,64,64 (a quarter of the package "
                                       "default, for CPU); engines: the trainer's default")
    ap.add_argument("--rirs", default="rirs_train/rirs.jsonl",
                    help="engines: the RIR bank (`audioconv rirs`) of the r3_rooms/r4_rooms chains")
    ap.add_argument("--seeds", default="0", help="comma list of training seeds")
    ap.add_argument("--chains", default=DEFAULT_CHAINS, help="comma list of chains to compare (see chain_configs)")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0 = cores / jobs)")
    ap.add_argument("--train-args", default="", help="more `audioconv train` options for every run (e.g. '--freq-warp 0.1')")
    ap.add_argument("--tag", default="", help="appended to the chain names of this invocation's runs (with --train-args)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--prepare-only", action="store_true", help="make the data (splits, degraded copies) and stop")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, none vs default, small test sets")
    ap.add_argument("--evaluate-run", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--manifests", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.evaluate_run is None and args.corpus is None:
        ap.error("--corpus is required")
    if args.protocol == "engines" and args.evaluate_run is None and args.engines_corpus is None:
        ap.error("--protocol engines needs --engines-corpus")
    if args.protocol == "voices":
        for name, value in (("epochs", 15), ("batch_size", 64), ("lr", 3e-3), ("channels", "16,32,64,64")):
            if getattr(args, name) is None:
                setattr(args, name, value)
    if args.quick:
        args.epochs = min(args.epochs or 2, 2)
        if args.chains == DEFAULT_CHAINS:
            args.chains = "none,default"
    if args.threads == 0:
        args.threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.evaluate_run is not None:  # internal: one run's evaluation, in its own process
        import torch

        torch.set_num_threads(args.threads)
        manifests = json.loads(args.manifests.read_text())
        scores = evaluate_run(args.evaluate_run, manifests, args.device)
        (args.evaluate_run / "scores.json").write_text(json.dumps(scores, indent=1))
        return 0

    from concurrent.futures import ThreadPoolExecutor

    args.out.mkdir(parents=True, exist_ok=True)
    log_file = open(args.out / "study.log", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    for path in (args.corpus, args.engines_corpus):
        if path is not None and not path.is_dir():
            raise SystemExit(f"corpus folder not found: {path}")
    sys.path.insert(0, str(REPO))
    if args.protocol == "engines":
        manifests = prepare_engine_data(args.corpus, args.engines_corpus, args.out, args.quick, args.data_seed, log)
    else:
        manifests = prepare_data(args.corpus, args.engines_corpus, args.out, args.quick, args.data_seed, log)
    if args.prepare_only:
        return 0
    all_chains = chain_configs(str(Path(args.rirs).resolve()))
    names = [c for c in args.chains.split(",") if c]
    unknown = [c for c in names if c not in all_chains]
    if unknown:
        raise SystemExit(f"unknown chain(s) {unknown}; known: {list(all_chains)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(n, s, augment_argument(n, all_chains[n], args.out / "chains")) for s in seeds for n in names]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(lambda j: run_one(j[0] + args.tag, j[1], j[2], manifests, args, log), jobs))

    from audioconv.augment import chain_to_config, default_chain

    summary = summarize_results(results)
    (args.out / "results.json").write_text(json.dumps(
        {"results": results, "summary": summary, "default_chain": chain_to_config(default_chain(SAMPLE_RATE_HZ)),
         "settings": {k: str(v) for k, v in vars(args).items()}}, indent=1))
    table = engine_table(summary) if args.protocol == "engines" else markdown_table(summary)
    (args.out / "results.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
