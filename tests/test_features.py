"""LogMel front end against librosa (an independent implementation) and the axis formulas."""
import librosa
import numpy as np
import pytest
import torch

from audioconv.features import LogMel, LogMelConfig


def _reference_power(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=cfg.n_mels,
        fmin=cfg.f_min_hz, fmax=cfg.f_max, htk=True, norm=None)


def test_mel_power_matches_librosa():
    cfg = LogMelConfig(sample_rate=16000, n_mels=40)
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ours = LogMel(cfg).power(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = _reference_power(x, cfg)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-7 * ref.max())


def _tone_burst() -> np.ndarray:
    x = np.zeros(16000, np.float32)
    x[4000:12000] = np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000) * 0.3
    return x


def test_db_has_a_top_db_floor_below_the_clip_peak():
    cfg = LogMelConfig(top_db=60.0)
    x = _tone_burst()
    db = LogMel(cfg)(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = 10 * np.log10(np.maximum(_reference_power(x, cfg), 1e-10))
    np.testing.assert_allclose(db, np.maximum(ref, ref.max() - 60.0), atol=0.05)
    assert db.max() - db.min() == pytest.approx(60.0)


def test_peak_relative_db_ignores_the_recording_level():
    cfg = LogMelConfig(relative_to_peak=True)
    x = _tone_burst()
    fe = LogMel(cfg)
    db = fe(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = 10 * np.log10(np.maximum(_reference_power(x, cfg), 1e-10))
    ref = np.maximum(ref, ref.max() - cfg.top_db) - ref.max()
    np.testing.assert_allclose(db, ref, atol=0.05)
    assert db.max() == pytest.approx(0.0) and db.min() == pytest.approx(-cfg.top_db)
    # a gain change does not move a peak-relative log-mel (up to float32 rounding)
    louder = fe(torch.from_numpy(x * 10 ** (-25 / 20))[None])[0, 0].double().numpy()
    np.testing.assert_allclose(louder, db, atol=0.05)


def test_axes_follow_the_formulas():
    cfg = LogMelConfig(sample_rate=22050, hop_length=256, n_mels=32, f_min_hz=50.0, f_max_hz=8000.0)
    fe = LogMel(cfg)
    hz = fe.mel_hz()
    # HTK mel: m = 2595 log10(1 + f / 700); centres evenly spaced in m between the band edges
    m = 2595 * np.log10(1 + np.array([50.0, 8000.0]) / 700)
    centres = 700 * (10 ** (np.linspace(m[0], m[1], 34)[1:-1] / 2595) - 1)
    np.testing.assert_allclose(hz, centres, rtol=1e-6)
    np.testing.assert_allclose(fe.frame_s(5), np.arange(5) * 256 / 22050)
    assert fe.n_frames(22050) == fe(torch.zeros(1, 22050) + 1e-3).shape[-1] == 22050 // 256 + 1


def test_mel_to_linear_spreads_a_constant_to_a_constant():
    fe = LogMel(LogMelConfig(n_mels=64))
    lin = fe.mel_to_linear(torch.ones(64, 3))
    covered = fe.mel.mel_scale.fb.sum(dim=1) > 0
    torch.testing.assert_close(lin[covered], torch.ones(int(covered.sum()), 3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(f_max_hz=9000.0), "f_max_hz"), (dict(win_length=1024), "win_length"),
    (dict(hop_length=0), "hop_length"), (dict(n_mels=0), "n_mels"), (dict(sample_rate=-1), "sample_rate"),
])
def test_bad_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LogMel(LogMelConfig(**kwargs))


def test_bad_waveforms_are_refused():
    fe = LogMel()
    with pytest.raises(ValueError, match="waveform"):
        fe(torch.zeros(1, 1, 1, 100))
    with pytest.raises(ValueError, match="float"):
        fe(torch.zeros(1, 100, dtype=torch.int16))
