"""SpecAugment's frequency warp (VTLP) against the formula S'(f) = S(f / alpha)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioconv.features import LogMel, LogMelConfig
from audioconv.training.specaugment import SpecAugment


def bump_db(hz: np.ndarray, centre_hz: float) -> np.ndarray:
    """A smooth spectral peak in dB (Gaussian in log frequency), the kind of shape a formant has."""
    return -20.0 * np.log2(hz / centre_hz) ** 2


@pytest.fixture(scope="module")
def mel_hz() -> np.ndarray:
    return LogMel(LogMelConfig(sample_rate=16000, n_mels=64)).mel_hz()


@pytest.mark.parametrize("alpha", [0.9, 0.95, 1.08, 1.15])
def test_warp_moves_the_spectrum_by_alpha_in_linear_frequency(mel_hz, alpha):
    aug = SpecAugment(freq_warp=0.2, mel_hz=mel_hz)
    spec = torch.tensor(bump_db(mel_hz, 1000.0), dtype=torch.float32)[None, None, :, None].repeat(1, 1, 1, 3)
    warped = aug.warp(spec, torch.tensor([alpha]))[0, 0, :, 0].numpy()
    inside = (mel_hz / alpha >= mel_hz[0]) & (mel_hz / alpha <= mel_hz[-1])
    expected = bump_db(mel_hz / alpha, 1000.0)  # the peak now sits at 1000 * alpha Hz
    near = inside & (expected > -60)  # the log-mel's own range (top_db 80)
    assert near.sum() > 20
    np.testing.assert_allclose(warped[near], expected[near], atol=0.5)  # up to the rows' linear interpolation
    rows_db = spec[0, 0, :, 0].double().numpy()  # that interpolation is exactly numpy's, edges repeated
    np.testing.assert_allclose(warped, np.interp(mel_hz / alpha, mel_hz, rows_db), atol=1e-4)
    peak_hz = mel_hz[np.argmax(warped)]
    spacing = np.interp(1000 * alpha, mel_hz[1:], np.diff(mel_hz))
    assert abs(peak_hz - 1000 * alpha) <= spacing
    assert np.all(warped[~inside] == (spec[0, 0, 0, 0].item() if alpha > 1 else spec[0, 0, -1, 0].item()))


def test_no_warp_is_the_identity_and_the_masks_keep_their_draws(mel_hz):
    spec = torch.randn(5, 1, 64, 40)
    plain, warping = SpecAugment(), SpecAugment(freq_warp=0.1, mel_hz=mel_hz)
    assert torch.equal(warping.warp(spec, torch.ones(5)), spec)
    a = plain.sample(5, 64, 40, generator=torch.Generator().manual_seed(3))
    b = warping.sample(5, 64, 40, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ((b["warp"] >= 0.9) & (b["warp"] <= 1.1)).all() and len(set(b["warp"].tolist())) == 5
    assert torch.equal(warping.apply(spec, b), plain.apply(warping.warp(spec, b["warp"]), a))


@pytest.mark.parametrize("kwargs, word", [(dict(freq_warp=0.1), "mel_hz"), (dict(freq_warp=0.6, mel_hz=[1, 2]), "freq_warp"),
                                          (dict(mel_hz=[3.0, 2.0]), "increasing")])
def test_bad_warp_settings_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SpecAugment(**kwargs)
