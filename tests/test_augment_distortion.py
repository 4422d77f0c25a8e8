"""Clip, Distortion and BitCrush against their formulas, computed with numpy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioconv.augment import BitCrush, Clip, Distortion, dsp


def batch(b=8, c=2, t=3000, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    levels = 10 ** (torch.rand(b, 1, 1, generator=g, dtype=torch.float64) * 3 - 3)  # -60 .. 0 dB
    return (torch.randn(b, c, t, generator=g, dtype=torch.float64) * levels).to(dtype)


@pytest.mark.parametrize("lengths", [None, [3000, 2000, 3000, 17, 2999, 1, 3000, 2500]])
def test_clip_at_threshold_db_below_the_peak(lengths):
    x = batch()
    aug = Clip(threshold_db=(-30, -0.5), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(1))
    y = aug.apply(x, params, None if lengths is None else torch.tensor(lengths)).numpy()
    for i in range(8):
        n = 3000 if lengths is None else lengths[i]
        real = x[i, :, :n].numpy()
        t = np.abs(real).max() * 10 ** (params["threshold_db"][i].item() / 20)
        np.testing.assert_allclose(y[i, :, :n], np.clip(real, -t, t), rtol=1e-6, atol=0)
        np.testing.assert_array_equal(y[i, :, n:], x[i, :, n:].numpy())


@pytest.mark.parametrize("grad", [False, True])  # numpy's selection on the CPU; torch.kthvalue under autograd
@pytest.mark.parametrize("lengths", [None, [3000, 2000, 3000, 17, 2999, 1, 3000, 2500]])
def test_clip_at_a_percentile_clips_that_share_of_samples(lengths, grad):
    x = batch(seed=2)
    aug = Clip(percentile=(0, 40), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(3))
    y = aug.apply(x.clone().requires_grad_(grad), params, None if lengths is None else torch.tensor(lengths))
    y = y.detach().numpy()
    for i in range(8):
        n = 3000 if lengths is None else lengths[i]
        real = x[i, :, :n].numpy()
        q = params["percentile"][i].item()
        t = np.percentile(np.abs(real), 100 - q, method="inverted_cdf")
        np.testing.assert_array_equal(y[i, :, :n], np.clip(real, -t, t))
        share = 100 * np.mean(np.abs(real) > t)
        assert share <= q and share > q - 100 / real.size - 1e-9  # q % of the samples, to one sample


def test_distortion_is_peak_times_tanh_of_the_driven_signal():
    x = batch(seed=4)
    lengths = torch.tensor([3000, 1000, 3000, 3000, 0, 3000, 50, 3000])
    aug = Distortion(drive_db=(-10, 30), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(5))
    y = aug.apply(x, params, lengths).numpy()
    for i, n in enumerate(lengths.tolist()):
        real = x[i, :, :n].numpy()
        if n == 0:
            assert np.array_equal(y[i], x[i].numpy())
            continue
        peak, g = np.abs(real).max(), 10 ** (params["drive_db"][i].item() / 20)
        np.testing.assert_allclose(y[i, :, :n], peak * np.tanh(g * real / peak) / np.tanh(g), rtol=1e-10, atol=1e-15)
        assert np.abs(y[i, :, :n]).max() == pytest.approx(peak)  # the peak stays where it was
        np.testing.assert_array_equal(y[i, :, n:], x[i, :, n:].numpy())


def test_distortion_of_silence_is_silence():
    assert torch.equal(Distortion(p=1.0)(torch.zeros(2, 1, 100)), torch.zeros(2, 1, 100))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [None, 7000])  # 7000: the CPU's cache-sized slices hold 1 row each here
def test_bit_crush_rounds_to_2_to_the_bits_levels_of_full_scale(dtype, chunk, monkeypatch):
    if chunk:
        monkeypatch.setattr(dsp, "CHUNK_SAMPLES", chunk)
    x = batch(seed=6, dtype=dtype) * 10  # some samples beyond ±1: quantised, not clipped
    aug = BitCrush(bits=(1, 16), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(7))
    y = aug.apply(x, params).numpy()
    for i, bits in enumerate(params["bits"].tolist()):
        step = 2.0 ** (1 - bits)
        expected = np.round(x[i].numpy() / step) * step
        np.testing.assert_array_equal(y[i], expected.astype(y.dtype))
        assert len(np.unique(y[i][np.abs(y[i]) < 1])) <= 2 ** bits


def test_bit_depths_are_drawn_evenly_among_the_integers():
    bits = BitCrush(bits=(4, 7), p=1.0).sample(8000, generator=torch.Generator().manual_seed(0))["bits"]
    assert bits.dtype == torch.int64
    counts = torch.bincount(bits, minlength=8)[4:8].double() / 8000
    assert (counts - 0.25).abs().max() < 0.02


@pytest.mark.parametrize("make, word", [
    (lambda: Clip(threshold_db=(-10, 3)), "threshold_db"),
    (lambda: Clip(percentile=(10, 120)), "percentile"),
    (lambda: Clip(threshold_db=None), "threshold_db"),
    (lambda: Distortion(drive_db=(10, 0)), "drive_db"),
    (lambda: BitCrush(bits=(0, 8)), "bits"),
    (lambda: BitCrush(bits=(4.5, 8)), "bits"),
])
def test_bad_arguments_name_the_parameter(make, word):
    with pytest.raises(ValueError, match=word):
        make()
