"""The demo corpus: each class has the time–frequency shape its formula says, measured with scipy;
the corpus on disk is reproducible from its seed and follows the manifest schema."""
from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import scipy.signal as ss

from audioconv.app import demo_corpus as dc
from audioconv.io.audio import load
from audioconv.io.manifest import read_manifest

SR = 16000
SEEDS = range(6)


def params_for(label: str, i: int, **overrides) -> dict:
    p = dc.sample_params(label, np.random.default_rng([123, dc.CLASSES.index(label), i]), SR, 1.0)
    p.update(overrides)
    return p


def event_slice(p: dict, trim_s: float = 0.0) -> slice:
    """Samples of the event, trimmed by ``trim_s`` at both ends (to skip the on/off ramps)."""
    a = int(round((p["onset_s"] + trim_s) * SR))
    b = int(round((p["onset_s"] + p["duration_s"] - trim_s) * SR))
    return slice(a, b)


def lowpassed_envelope(x: np.ndarray, cutoff_hz: float = 40.0) -> np.ndarray:
    env = np.abs(ss.hilbert(x))
    return ss.sosfiltfilt(ss.butter(4, cutoff_hz, fs=SR, output="sos"), env)


def test_at_least_eight_distinct_classes():
    assert len(set(dc.CLASSES)) == len(dc.CLASSES) >= 8


@pytest.mark.parametrize("label", dc.CLASSES)
def test_event_is_inside_its_window_and_normalised(label):
    for i in SEEDS:
        p = params_for(label, i)
        x = dc.render_event(p, SR, 1.0)
        assert x.shape == (SR,)
        assert np.abs(x).max() == pytest.approx(1.0)
        outside = np.ones(SR, bool)
        outside[event_slice(p)] = False
        assert np.abs(x[outside]).max() < 1e-9
        assert 0.02 - 1e-9 <= p["onset_s"] and p["onset_s"] + p["duration_s"] <= 0.98 + 1e-9


@pytest.mark.parametrize("label", ["rising_chirp", "falling_chirp"])
def test_chirp_follows_exponential_sweep(label):
    """Spectral centroid of the clean event: log2 centroid is linear in time with slope
    log2(f_end/f_start)/duration (all partials scale together). With the background on, the
    centroid still moves the right way."""
    for i in SEEDS:
        p = params_for(label, i, harmonic_amps=[1.0])
        x = dc.render_event(p, SR, 1.0)
        f, t, Z = ss.stft(x, fs=SR, nperseg=512, noverlap=384)
        power = np.abs(Z) ** 2
        inside = (t > p["onset_s"] + 0.05) & (t < p["onset_s"] + p["duration_s"] - 0.05)
        centroid = (f[:, None] * power).sum(0)[inside] / power.sum(0)[inside]
        slope_oct_per_s = np.polyfit(t[inside], np.log2(centroid), 1)[0]
        expected = math.log2(p["f_end_hz"] / p["f_start_hz"]) / p["duration_s"]
        assert slope_oct_per_s == pytest.approx(expected, rel=0.05)
        # instantaneous frequency at the middle of the event, against the formula
        mid = p["onset_s"] + p["duration_s"] / 2
        j = np.argmin(np.abs(t - mid))
        f_mid = p["f_start_hz"] * (p["f_end_hz"] / p["f_start_hz"]) ** ((t[j] - p["onset_s"]) / p["duration_s"])
        assert centroid[np.flatnonzero(inside).tolist().index(j)] == pytest.approx(f_mid, rel=0.05)

        clip = dc.synthesize_clip(params_for(label, i), SR, 1.0).astype(np.float64)
        f, t, Z = ss.stft(clip, fs=SR, nperseg=512, noverlap=384)
        power = np.abs(Z) ** 2
        inside = (t > p["onset_s"] + 0.05) & (t < p["onset_s"] + p["duration_s"] - 0.05)
        peak_hz = f[power[:, inside].argmax(0)]
        slope = np.polyfit(t[inside], np.log2(np.maximum(peak_hz, 1.0)), 1)[0]
        assert np.sign(slope) == (1 if label == "rising_chirp" else -1)


def test_click_train_period_matches_rate():
    """Autocorrelation of the clicks peaks at the period 1/rate_hz (within 1.5 samples)."""
    for i in SEEDS:
        p = params_for("click_train", i)
        for x in (dc.render_event(p, SR, 1.0), dc.synthesize_clip(p, SR, 1.0).astype(np.float64)):
            e = np.abs(x[event_slice(p)])
            ac = ss.correlate(e, e, mode="full", method="fft")[len(e) - 1:]
            period = SR / p["rate_hz"]
            lo = int(period * 0.5)
            lag = lo + int(np.argmax(ac[lo:int(period * 1.5)]))
            assert abs(lag - period) <= 1.5, (i, lag, period)
        # the clicks sit exactly at onset + k / rate_hz
        x = dc.render_event(p, SR, 1.0)
        peaks, _ = ss.find_peaks(np.abs(x), height=0.5, distance=int(period * 0.5))
        expected = np.round(p["onset_s"] * SR + np.arange(len(peaks)) * period)
        np.testing.assert_allclose(peaks, expected, atol=1)


def test_tremolo_envelope_modulates_at_rate_with_depth():
    """Hilbert envelope, low-passed: its spectrum peaks at rate_hz and its trough/peak ratio is 1-depth."""
    for i in SEEDS:
        p = params_for("tremolo", i)
        x = dc.render_event(p, SR, 1.0)
        env = lowpassed_envelope(x)[event_slice(p, trim_s=0.03)]
        spec = np.abs(np.fft.rfft((env - env.mean()) * np.hanning(len(env)), n=16 * SR))
        freqs = np.fft.rfftfreq(16 * SR, 1 / SR)
        band = freqs > 1.5
        peak_hz = freqs[band][np.argmax(spec[band])]
        assert peak_hz == pytest.approx(p["rate_hz"], abs=0.5)
        # against the formula itself
        t = np.arange(len(x))[event_slice(p, 0.03)] / SR - p["onset_s"]
        model = 1 - p["depth"] * 0.5 * (1 - np.cos(2 * np.pi * p["rate_hz"] * t + p["mod_phase"]))
        assert np.corrcoef(env, model)[0, 1] > 0.98
        # a vibrato tone (frequency, not amplitude, modulation) has a flat envelope
        q = params_for("vibrato", i, harmonic_amps=[1.0])
        flat = lowpassed_envelope(dc.render_event(q, SR, 1.0))[event_slice(q, trim_s=0.05)]
        assert flat.std() / flat.mean() < 0.02 < env.std() / env.mean()


def test_vibrato_instantaneous_frequency_follows_formula():
    for i in SEEDS:
        p = params_for("vibrato", i, harmonic_amps=[1.0])
        x = dc.render_event(p, SR, 1.0)
        phase = np.unwrap(np.angle(ss.hilbert(x)))
        inst = np.diff(phase) * SR / (2 * np.pi)
        sl = event_slice(p, trim_s=0.05)
        t = (np.arange(len(inst)) + 0.5)[sl] / SR - p["onset_s"]
        model = p["f0_hz"] * (1 + p["depth"] * np.sin(2 * np.pi * p["rate_hz"] * t + p["mod_phase"]))
        assert np.max(np.abs(inst[sl] - model)) < 0.01 * p["f0_hz"]
        swing = (inst[sl].max() - inst[sl].min()) / 2
        assert swing == pytest.approx(p["depth"] * p["f0_hz"], rel=0.1)


def test_chord_has_two_partials_at_its_ratio():
    for i in SEEDS:
        p = params_for("chord", i)
        x = dc.render_event(p, SR, 1.0)[event_slice(p, trim_s=0.02)]
        n = 8 * SR
        spec = np.abs(np.fft.rfft(x * ss.windows.blackmanharris(len(x)), n=n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        peaks, props = ss.find_peaks(spec, height=spec.max() * 0.05, distance=int(50 * n / SR))
        top = peaks[np.argsort(props["peak_heights"])[-2:]]
        f_lo, f_hi = sorted(freqs[top])
        assert f_lo == pytest.approx(p["f1_hz"], abs=1.0)
        assert f_hi == pytest.approx(p["f1_hz"] * p["ratio"], abs=1.0)
        level_db = 20 * np.log10(spec[top[freqs[top].argmax()]] / spec[top[freqs[top].argmin()]])
        assert level_db == pytest.approx(p["f2_gain_db"], abs=0.5)
        assert len(peaks) == 2


def test_vowel_harmonics_follow_formant_envelope():
    """Amplitudes of harmonics h·f0 equal (sum of formant resonances at h·f0) / h, up to one scale."""
    for i in SEEDS:
        p = params_for("vowel", i, f0_drift=0.0)
        x = dc.render_event(p, SR, 1.0)[event_slice(p, trim_s=0.06)]
        n = 8 * SR
        spec = np.abs(np.fft.rfft(x * ss.windows.blackmanharris(len(x)), n=n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        hs = np.arange(1, int(dc._f_max_hz(SR) // p["f0_hz"]) + 1)
        measured = np.array([spec[np.argmin(np.abs(freqs - h * p["f0_hz"]))] for h in hs])
        expected = np.array([sum(1 / math.sqrt(1 + ((h * p["f0_hz"] - fc) / (bw / 2)) ** 2)
                                 for fc, bw in zip(p["formants_hz"], p["bandwidths_hz"])) / h for h in hs])
        np.testing.assert_allclose(measured / measured.max(), expected / expected.max(), atol=0.02)
        # the strongest harmonic lies within one f0 of a formant
        h_max = hs[np.argmax(measured)] * p["f0_hz"]
        assert min(abs(h_max - f) for f in p["formants_hz"]) < p["f0_hz"] * 1.01 or hs[np.argmax(measured)] == 1


def test_noise_burst_power_stays_in_band():
    for i in SEEDS:
        p = params_for("noise_burst", i)
        x = dc.render_event(p, SR, 1.0)
        f, pxx = ss.periodogram(x, fs=SR, window="hann")
        in_band = (f >= p["low_hz"]) & (f <= p["high_hz"])
        assert pxx[in_band].sum() / pxx.sum() > 0.97
        clip = dc.synthesize_clip(p, SR, 1.0).astype(np.float64)[event_slice(p)]
        f, pxx = ss.welch(clip, fs=SR, nperseg=512)
        in_band = (f >= p["low_hz"]) & (f <= p["high_hz"])
        # per-Hz density in the band is far above the background's outside it
        assert pxx[in_band].mean() > 30 * pxx[~in_band & (f > 50)].mean()


def test_bell_partials_decay_with_time_constant():
    """Band-pass the fundamental; the log of its envelope falls with slope -1/decay_tau_s."""
    for i in SEEDS:
        p = params_for("bell", i)
        x = dc.render_event(p, SR, 1.0)
        f0 = p["f0_hz"]
        band = ss.butter(4, [f0 * 0.8, f0 * 1.25], btype="bandpass", fs=SR, output="sos")
        env = np.abs(ss.hilbert(ss.sosfiltfilt(band, x)))
        a = int(round((p["onset_s"] + 0.02) * SR))
        b = int(round((p["onset_s"] + min(p["duration_s"] - 0.03, 2.5 * p["decay_tau_s"])) * SR))
        slope = np.polyfit(np.arange(a, b) / SR, np.log(env[a:b]), 1)[0]
        assert slope == pytest.approx(-1 / p["decay_tau_s"], rel=0.1)
        # inharmonic partials at the free-bar ratios
        seg = x[event_slice(p)]
        n = 8 * SR
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=n))
        freqs = np.fft.rfftfreq(n, 1 / SR)
        for r in dc._BELL_RATIOS[:3]:
            near = np.abs(freqs - r * f0) < 0.05 * r * f0
            assert freqs[near][np.argmax(spec[near])] == pytest.approx(r * f0, rel=0.01)


def test_melody_steps_through_its_notes():
    """Hilbert instantaneous frequency in the middle of note i (of n, equal lengths) is notes_hz[i];
    successive notes differ by 4 to 9 semitones; the phase is continuous (no clicks at the steps)."""
    for i in SEEDS:
        p = params_for("melody", i)
        notes = p["notes_hz"]
        assert 3 <= len(notes) <= 5
        steps = np.abs(12 * np.log2(np.array(notes[1:]) / np.array(notes[:-1])))
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
        assert np.round(steps).min() >= 4 and np.round(steps).max() <= 9
        x = dc.render_event(p, SR, 1.0)
        inst = np.diff(np.unwrap(np.angle(ss.hilbert(x)))) * SR / (2 * np.pi)
        note_s = p["duration_s"] / len(notes)
        for j, f in enumerate(notes):
            mid = int(round((p["onset_s"] + (j + 0.5) * note_s) * SR))
            seg = inst[mid - int(0.01 * SR): mid + int(0.01 * SR)]
            assert np.median(seg) == pytest.approx(f, rel=0.005)
        # phase continuity: the largest sample-to-sample jump is that of the highest note's sine
        sl = event_slice(p, trim_s=0.02)
        assert np.abs(np.diff(x[sl])).max() <= 2 * np.pi * max(notes) / SR * 1.001


@pytest.mark.parametrize("slope", [0.0, -3.0, -6.0])
def test_colored_noise_slope_in_db_per_octave(slope):
    x = dc.colored_noise(4 * SR, slope, np.random.default_rng(0), SR)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0)
    f, pxx = ss.welch(x, fs=SR, nperseg=2048)
    band = (f > 100) & (f < 6000)
    fitted = np.polyfit(np.log2(f[band]), 10 * np.log10(pxx[band]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.3)


@pytest.mark.parametrize("label", dc.CLASSES)
def test_clip_level_and_snr(label):
    p = params_for(label, 0)
    clip = dc.synthesize_clip(p, SR, 1.0).astype(np.float64)
    assert 20 * np.log10(np.abs(clip).max()) == pytest.approx(p["level_dbfs"], abs=1e-3)
    event = dc.render_event(p, SR, 1.0)
    gain = (clip @ event) / (event @ event)  # noise is independent of the event: least squares scale
    noise = clip - gain * event
    sl = event_slice(p)
    snr = 10 * np.log10(np.mean((gain * event[sl]) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(p["snr_db"], abs=0.5)


def test_parameters_are_random_per_clip():
    """No fixed template: onsets, durations and frequencies vary widely within a class."""
    ps = [params_for("rising_chirp", i) for i in range(40)]
    onsets = [p["onset_s"] for p in ps]
    starts = [p["f_start_hz"] for p in ps]
    assert np.ptp(onsets) > 0.2 and max(starts) / min(starts) > 3
    assert len({round(p["level_dbfs"], 3) for p in ps}) == 40


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "corpus.json":
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_corpus_is_deterministic_and_follows_schema(tmp_path):
    paths = dc.make_corpus(tmp_path / "a", n_per_class=5, seed=7, progress=False)
    dc.make_corpus(tmp_path / "b", n_per_class=5, seed=7, progress=False)
    dc.make_corpus(tmp_path / "c", n_per_class=5, seed=8, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    assert set(paths) == {"train", "val", "test"}
    counts = {}
    for split, path in paths.items():
        recs = read_manifest(path)
        counts[split] = len(recs)
        assert {r["split"] for r in recs} == {split}
        assert sorted({r["label"] for r in recs}) == sorted(dc.CLASSES)
        for r in recs:
            wav, sr = load(r["audio_filepath"])
            assert sr == SR and wav.shape == (1, SR) and r["duration"] == 1.0
            assert r["synth"]["label"] == r["label"]
        # relative paths in the file itself
        first = json.loads(path.read_text().splitlines()[0])
        assert not first["audio_filepath"].startswith("/")
    assert counts == {"train": 30, "val": 10, "test": 10}
    # a clip is the same whatever the corpus size: clip 0 of every class in a bigger corpus
    dc.make_corpus(tmp_path / "d", n_per_class=9, seed=7, progress=False)
    a0 = (tmp_path / "a/audio/train/vowel/vowel_0000.wav").read_bytes()
    assert a0 == (tmp_path / "d/audio/train/vowel/vowel_0000.wav").read_bytes()
    # the WAV holds the synthesized clip (16-bit)
    r = read_manifest(paths["test"])[0]
    wav, _ = load(r["audio_filepath"])
    np.testing.assert_allclose(wav[0].numpy(), dc.synthesize_clip(r["synth"], SR, 1.0), atol=1 / 32767)


def test_existing_corpus_is_reused_and_changed_settings_regenerate(tmp_path):
    paths = dc.make_corpus(tmp_path, n_per_class=3, seed=1, progress=False)
    mtime = paths["train"].stat().st_mtime_ns
    assert dc.corpus_is_complete(tmp_path)
    dc.make_corpus(tmp_path, n_per_class=3, seed=1, progress=False)
    assert paths["train"].stat().st_mtime_ns == mtime
    dc.make_corpus(tmp_path, n_per_class=3, seed=2, progress=False)
    assert paths["train"].stat().st_mtime_ns != mtime
    # a missing WAV makes the corpus incomplete, and it is regenerated
    victim = next((tmp_path / "audio").rglob("*.wav"))
    victim.unlink()
    assert not dc.corpus_is_complete(tmp_path)
    dc.make_corpus(tmp_path, n_per_class=3, seed=2, progress=False)
    assert victim.is_file()


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_per_class=2), "n_per_class"),
    (dict(n_per_class=10, clip_s=0.2), "clip_s"),
    (dict(n_per_class=10, sample_rate=4000), "sample_rate"),
    (dict(n_per_class=10, split_fractions=(0.5, 0.5, 0.5)), "split_fractions"),
    (dict(n_per_class=3, split_fractions=(0.9, 0.1, 0.0)), "split"),
])
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dc.make_corpus(tmp_path, progress=False, **kwargs)


def test_unknown_label_lists_valid_ones():
    with pytest.raises(ValueError, match="rising_chirp"):
        dc.sample_params("whistle", np.random.default_rng(0))
