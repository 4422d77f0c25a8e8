"""Sonification: STFT round trip with an all-ones mask; a one-band mask keeps that band (Welch check)."""
import numpy as np
import pytest
import torch
from scipy.signal import welch

from audioconv.io import audio
from audioconv.features import LogMel
from audioconv.interpret.sonify import griffin_lim_audio, masked_audio, mel_mask_to_stft, projection_mask

SR = 16000


def _noise(n=SR, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_all_ones_mask_reconstructs_input():
    lm = LogMel()
    x = _noise()
    spec = lm(x[None])[0, 0]  # (64, 101)
    y = masked_audio(x, torch.ones_like(spec), lm)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y.numpy(), x.numpy(), atol=1e-6)
    # stereo input keeps its shape
    x2 = torch.stack([x, -x])
    np.testing.assert_allclose(masked_audio(x2, torch.ones_like(spec), lm).numpy(), x2.numpy(), atol=1e-6)


def test_mask_on_one_band_keeps_that_band():
    lm = LogMel()
    x = _noise(seed=1)
    hz = lm.mel_hz()
    band = (hz >= 1000) & (hz <= 2000)
    mask = torch.zeros(64, lm.n_frames(SR))
    mask[torch.from_numpy(band)] = 1.0
    y = masked_audio(x, mask, lm).numpy()
    f, p_in = welch(x.numpy(), fs=SR, nperseg=1024)
    _, p_out = welch(y, fs=SR, nperseg=1024)
    lo, hi = hz[band].min(), hz[band].max()
    inside = (f >= lo) & (f <= hi)
    far = (f < lo * 0.7) | (f > hi * 1.3)
    # nearly all output power is in the band; in the band the input's power is kept
    assert p_out[inside].sum() / p_out.sum() > 0.9
    assert np.median(p_out[inside] / p_in[inside]) > 0.5
    # outside the band (beyond the neighbouring mel filters' skirts) it is down by > 30 dB
    assert 10 * np.log10(p_out[far].sum() / p_in[far].sum()) < -30


def test_mask_rules_and_mel_spreading():
    p = torch.tensor([[-2.0, 0.0], [1.0, 4.0]])
    np.testing.assert_allclose(projection_mask(p).numpy(), [[0, 0], [0.25, 1.0]])
    np.testing.assert_allclose(projection_mask(p, "abs").numpy(), [[0.5, 0], [0.25, 1.0]])
    assert projection_mask(torch.zeros(3, 3)).abs().sum() == 0
    with pytest.raises(ValueError, match="part"):
        projection_mask(p, "negative")
    lm = LogMel()
    lin = mel_mask_to_stft(torch.full((64, 5), 0.3, dtype=torch.float64), lm)
    assert lin.shape == (257, 5)
    np.testing.assert_allclose(lin.numpy(), 0.3, atol=1e-12)  # constant stays constant, incl. DC/Nyquist


def test_griffin_lim_band_and_wav(tmp_path):
    lm = LogMel()
    hz = lm.mel_hz()
    proj = torch.zeros(64, lm.n_frames(SR))
    proj[int(np.argmin(np.abs(hz - 1500)))] = 1.0  # one mel bin around 1.5 kHz
    proj[0] = -3.0  # the negative part is ignored
    y = griffin_lim_audio(proj, lm, SR)
    assert y.shape == (SR,) and float(y.abs().max()) == pytest.approx(0.5, rel=1e-5)
    f, p = welch(y.numpy(), fs=SR, nperseg=1024)
    assert 1200 < f[np.argmax(p)] < 1800
    assert griffin_lim_audio(torch.zeros(64, 101), lm, SR).abs().max() == 0
    path = audio.save(tmp_path / "a" / "gl.wav", y, SR)
    back, sr = audio.load(path)
    assert sr == SR and back.shape == (1, SR)
    np.testing.assert_allclose(back[0].numpy(), y.numpy(), atol=1e-4)


def test_bad_inputs():
    lm = LogMel()
    x = _noise()
    with pytest.raises(ValueError, match="frames"):
        masked_audio(x, torch.ones(64, 50), lm)
    with pytest.raises(ValueError, match="n_mels=64"):
        masked_audio(x, torch.ones(32, 101), lm)
    with pytest.raises(ValueError, match="waveform"):
        masked_audio(x[None, None], torch.ones(64, 101), lm)
