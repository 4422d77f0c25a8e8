"""Gain, TimeShift, SpeedPerturb against closed forms, numpy and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from audioconv.augment import Gain, SpeedPerturb, TimeShift


def test_gain_is_the_drawn_db():
    aug = Gain(gain_db=(-12, 12), p=1.0)
    params = aug.sample(50, generator=torch.Generator().manual_seed(0))
    y = aug.apply(torch.ones(50, 1, 3), params)
    torch.testing.assert_close(20 * torch.log10(y[:, 0, 0]), params["gain_db"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("mode", ["zero", "roll"])
def test_time_shift_matches_numpy(mode):
    sr = 1000
    aug = TimeShift(sr, shift_s=(-0.2, 0.2), mode=mode, p=1.0)
    x = torch.randn(20, 2, 500, generator=torch.Generator().manual_seed(1))
    params = aug.sample(20, generator=torch.Generator().manual_seed(2))
    y = aug.apply(x, params)
    for i, s in enumerate(params["shift_s"].tolist()):
        k = int(round(s * sr))
        ref = np.roll(x[i].numpy(), k, axis=-1)
        if mode == "zero":
            ref[:, :k] = 0 if k > 0 else ref[:, :k]
            ref[:, ref.shape[-1] + k:] = 0 if k < 0 else ref[:, ref.shape[-1] + k:]
        np.testing.assert_array_equal(y[i].numpy(), ref)


def test_speed_perturb_matches_scipy_resample_poly():
    sr = 16000
    aug = SpeedPerturb(sr, factors=(0.9, 1.0, 1.1), p=1.0)
    t = torch.arange(8000) / sr
    x = torch.sin(2 * torch.pi * 440 * t).repeat(12, 1, 1)
    params = aug.sample(12, generator=torch.Generator().manual_seed(0))
    y = aug.apply(x, params)
    assert y.shape == x.shape and len(set(params["factor"].tolist())) == 3
    for i, f in enumerate(params["factor"].tolist()):
        up, down = {0.9: (10, 9), 1.0: (1, 1), 1.1: (10, 11)}[round(f, 1)]
        ref = scipy.signal.resample_poly(x[i, 0].double().numpy(), up, down)[:8000]
        ref = np.pad(ref, (0, 8000 - len(ref)))
        core = slice(200, min(len(ref), 7000))  # away from the edges, where the kernels differ
        np.testing.assert_allclose(y[i, 0, core].numpy(), ref[core], atol=5e-3)
        if f != 1.0:  # the tone moved to 440 * f Hz
            spectrum = np.abs(np.fft.rfft(y[i, 0, :7000].numpy() * np.hanning(7000)))
            assert abs(np.argmax(spectrum) * sr / 7000 - 440 * f) < 5


def test_speed_perturb_ends_each_example_at_l_over_the_factor_and_says_so():
    """Each example's real samples (L) resampled as scipy's resample_poly does, ending at
    ceil(L / f) (cut at L when slower); zeros up to L, the padding as it was; output_lengths and a
    chain report that end, and a noise added after it stays off the new silence."""
    from audioconv.augment import AddNoise, Compose

    sr = 8000
    t = torch.arange(8000) / sr
    x = torch.sin(2 * torch.pi * 440 * t).repeat(4, 1, 1)
    x[1, :, 6000:] = 0.5  # padding with something in it: it must stay, and not leak into the example
    lengths = torch.tensor([8000, 6000, 5000, 8000])
    aug = SpeedPerturb(sr, factors=(1.1, 1.25, 0.9), p=1.0)
    params = aug.sample(4, generator=torch.Generator().manual_seed(0))
    params["factor"] = torch.tensor([1.1, 1.25, 0.9, 1.25])
    params["apply"] = torch.tensor([True, True, True, False])
    y = aug.apply(x, params, lengths)
    new = [7273, 4800, 5000, 8000]  # ceil(8000 * 10 / 11), 6000 * 4 / 5, cut at L, not applied
    assert aug.output_lengths(params, lengths, 8000).tolist() == new
    assert aug.output_lengths(params, lengths.tolist(), 8000).tolist() == new  # lengths as apply takes them
    assert aug.output_lengths(params, None, 8000).tolist() == [7273, 6400, 8000, 8000]
    for i, (f, (up, down)) in enumerate(zip([1.1, 1.25, 0.9], [(10, 11), (4, 5), (10, 9)])):
        real, end = int(lengths[i]), new[i]
        ref = scipy.signal.resample_poly(x[i, 0, :real].double().numpy(), up, down)
        core = slice(200, end - 200)
        np.testing.assert_allclose(y[i, 0, core].numpy(), ref[core], atol=5e-3)
        assert (y[i, :, end:real] == 0).all() and y[i, 0, end - 20:end].abs().max() > 0.3
    assert torch.equal(y[1, :, 6000:], x[1, :, 6000:]) and torch.equal(y[3], x[3])
    chain = Compose([SpeedPerturb(sr, factors=[1.25], p=1.0), AddNoise(snr_db=(10.0, 10.0), p=1.0)])
    params = chain.sample(4, generator=torch.Generator().manual_seed(1))
    y = chain.apply(x, params, lengths)
    assert chain.output_lengths(params, lengths, 8000).tolist() == [6400, 4800, 4000, 6400]
    assert (y[0, :, 6400:] == 0).all() and (y[2, :, 4000:5000] == 0).all()
