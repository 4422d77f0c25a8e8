"""RandomEQ against scipy: |H| within 0.1 dB of freqz, the waveform equal to sosfilt."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch

from audioconv.augment import RandomEQ, biquad_coefficients, eq_biquads, eq_response


def scipy_response_db(b: torch.Tensor, a: torch.Tensor, freqs_hz: np.ndarray, sample_rate: int) -> np.ndarray:
    """20 log10 |prod_k H_k| from scipy.signal.freqz for one example's sections ``(K, 3)``."""
    total = np.ones(len(freqs_hz), dtype=complex)
    for bk, ak in zip(b.numpy(), a.numpy()):
        total *= scipy.signal.freqz(bk, ak, worN=freqs_hz, fs=sample_rate)[1]
    return 20 * np.log10(np.abs(total))


@pytest.mark.parametrize("sample_rate, seed", [(16000, 0), (16000, 1), (22050, 2), (44100, 3), (8000, 4)])
def test_applied_magnitude_matches_freqz_within_0_1_db(sample_rate, seed):
    eq = RandomEQ(sample_rate, n_bands=4, q=(0.5, 6.0), p=1.0)
    batch, time = 24, 2 ** 16  # long enough to hold the impulse response's ringing
    impulse = torch.zeros(batch, 1, time)
    impulse[:, 0, 0] = 1.0
    params = eq.sample(batch, generator=torch.Generator().manual_seed(seed))
    response = eq.apply(impulse, params)[:, 0].double().numpy()
    freqs = np.fft.rfftfreq(time, 1 / sample_rate)
    band = (freqs >= 50) & (freqs <= 0.45 * sample_rate)
    measured_db = 20 * np.log10(np.abs(np.fft.rfft(response, axis=-1)[:, band]))
    b, a = eq_biquads(params, sample_rate)
    for i in range(batch):
        err = np.abs(measured_db[i] - scipy_response_db(b[i], a[i], freqs[band], sample_rate)).max()
        assert err < 0.1, f"example {i}: {err:.3f} dB off"


def test_waveform_equals_scipy_sosfilt():
    sr = 16000
    eq = RandomEQ(sr, n_bands=3, p=1.0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 2, 12000, generator=g, dtype=torch.float64)
    params = eq.sample(6, generator=g)
    y = eq.apply(x, params)
    b, a = eq_biquads(params, sr)
    for i in range(6):
        sos = np.concatenate([b[i].numpy(), a[i].numpy()], axis=1)
        ref = scipy.signal.sosfilt(sos, x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-4 * np.abs(ref).max())
    y32 = eq.apply(x.float(), params)  # float32 path: same filter, float32 rounding
    np.testing.assert_allclose(y32.double().numpy(), y.numpy(), atol=2e-5 * float(y.abs().max()))


def test_eq_response_matches_freqz_for_hard_cases():
    """Stacked narrow low-frequency resonances: where evaluating the z-polynomial loses digits."""
    sr = 16000
    f = torch.tensor([[60.0, 62.0, 65.0, 7000.0]])
    b1, a1 = biquad_coefficients("peaking", f, torch.tensor([[12.0, 12.0, -12.0, 12.0]]), torch.tensor([[8.0] * 4]), sr)
    b2, a2 = biquad_coefficients("lowshelf", torch.tensor([[55.0]]), torch.tensor([[12.0]]), 1 / math.sqrt(2), sr)
    b, a = torch.cat([b1, b2], 1), torch.cat([a1, a2], 1)
    n = 2 ** 15
    freqs = np.arange(n // 2 + 1) * sr / n
    ours = 20 * np.log10(np.abs(eq_response(b, a, n)[0].numpy()))
    ref = scipy_response_db(b[0], a[0], freqs, sr)
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("kind, gain_db", [("peaking", 9.0), ("lowshelf", -6.0), ("highshelf", 6.0)])
def test_rbj_sections_have_the_cookbook_gains(kind, gain_db):
    sr, f0 = 16000, 1000.0
    b, a = biquad_coefficients(kind, torch.tensor(f0), torch.tensor(gain_db), torch.tensor(1 / math.sqrt(2)), sr)
    w, h = scipy.signal.freqz(b.numpy(), a.numpy(), worN=[10.0, f0, 7900.0], fs=sr)
    db = 20 * np.log10(np.abs(h))
    expected = {"peaking": [0, gain_db, 0], "lowshelf": [gain_db, gain_db / 2, 0],
                "highshelf": [0, gain_db / 2, gain_db]}[kind]
    np.testing.assert_allclose(db, expected, atol=0.05)


def test_draws_are_log_uniform_and_below_nyquist():
    eq = RandomEQ(16000, n_bands=3, freq_hz=(100, 6400), gain_db=(-10, 10), q=(0.5, 8.0), p=1.0)
    params = eq.sample(20000, generator=torch.Generator().manual_seed(0))
    octaves = torch.log2(params["freq_hz"] / 100).flatten()  # 6 octaves: evenly spread in log
    counts = torch.histc(octaves, bins=6, min=0, max=6)
    assert (counts / counts.sum() - 1 / 6).abs().max() < 0.01
    assert params["freq_hz"].max() < 6400 and params["freq_hz"].min() >= 100
    gains = params["gain_db"].flatten()
    assert abs(gains.mean().item()) < 0.1 and abs(gains.std().item() - 20 / math.sqrt(12)) < 0.1
    assert (params["high_shelf_hz"] < 8000).all() and (params["low_shelf_hz"] > 0).all()


def test_ringing_is_not_cut_short_and_length_is_kept():
    """A sharp boost near 60 Hz rings for thousands of samples; the FFT padding must hold it."""
    sr = 16000
    eq = RandomEQ(sr, n_bands=1, gain_db=12.0, freq_hz=(60.0, 60.0), q=(6.0, 6.0), shelves=False, p=1.0)
    x = torch.zeros(1, 1, 4000)
    x[0, 0, 0] = 1.0
    y = eq(x)
    b, a = eq_biquads(eq.sample(1), sr)
    ref = scipy.signal.lfilter(b[0, 0].numpy(), a[0, 0].numpy(), x[0, 0].double().numpy())
    assert y.shape == x.shape
    np.testing.assert_allclose(y[0, 0].numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("kwargs, word", [
    (dict(freq_hz=(100, 8000)), "freq_hz"),
    (dict(freq_hz=(100, 9000)), "Nyquist|8000"),
    (dict(freq_hz=(2000, 100)), "freq_hz"),
    (dict(freq_hz=(0, 100)), "freq_hz"),
    (dict(high_shelf_hz=(3000, 8000)), "high_shelf_hz"),
    (dict(gain_db=(12, -12)), "gain_db"),
    (dict(q=(0, 2)), "q"),
    (dict(n_bands=-1), "n_bands"),
    (dict(n_bands=0, shelves=False), "n_bands"),
    (dict(sample_rate=-16000), "sample_rate"),
])
def test_bad_parameters_raise_naming_them(kwargs, word):
    args = {"sample_rate": 16000, **kwargs}
    with pytest.raises(ValueError, match=word):
        RandomEQ(**args)
