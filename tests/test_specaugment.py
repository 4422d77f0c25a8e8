"""SpecAugment: masks are contiguous bands of the drawn widths, filled with each example's mean,
drawn per example from the generator, with widths uniform on 0..max (chi-square test)."""
import pytest
import torch
from scipy import stats

from audioconv.training.specaugment import SpecAugment


def test_masks_match_the_drawn_parameters():
    aug = SpecAugment(freq_mask_bins=5, time_mask_frames=7, n_freq_masks=2, n_time_masks=1)
    x = torch.randn(16, 1, 20, 30)
    g = torch.Generator().manual_seed(0)
    params = aug.sample(16, 20, 30, generator=g)
    y = aug.apply(x, params)
    assert y.shape == x.shape and y.dtype == x.dtype
    for b in range(16):
        rows = torch.zeros(20, dtype=torch.bool)
        for s, w in zip(params["freq_start"][b].tolist(), params["freq_width"][b].tolist()):
            assert 0 <= w <= 5 and 0 <= s and s + w <= 20
            rows[s:s + w] = True
        cols = torch.zeros(30, dtype=torch.bool)
        for s, w in zip(params["time_start"][b].tolist(), params["time_width"][b].tolist()):
            assert 0 <= w <= 7 and 0 <= s and s + w <= 30
            cols[s:s + w] = True
        mask = rows[:, None] | cols[None, :]
        mean = x[b].mean()
        assert torch.allclose(y[b, 0][mask], mean.expand(int(mask.sum())))
        assert torch.equal(y[b, 0][~mask], x[b, 0][~mask])


def test_replay_and_per_example_draws():
    aug = SpecAugment(6, 6, 2, 2)
    x = torch.randn(32, 1, 16, 40)
    y1 = aug(x, generator=torch.Generator().manual_seed(3))
    y2 = aug.apply(x, aug.sample(32, 16, 40, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(y1, y2)
    masked = (y1 != x).flatten(1).sum(1)
    assert len(set(masked.tolist())) > 5  # examples get different masks
    assert not torch.equal(y1, aug(x, generator=torch.Generator().manual_seed(4)))


def test_width_is_uniform_and_p_zero_is_identity():
    aug = SpecAugment(freq_mask_bins=4, time_mask_frames=0, n_freq_masks=1, n_time_masks=1)
    p = aug.sample(20000, 64, 100, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(p["freq_width"].flatten(), minlength=5).tolist()
    assert stats.chisquare(counts).pvalue > 1e-3  # uniform on 0..4
    assert int(p["time_width"].max()) == 0
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(SpecAugment(4, 4, 2, 2, p=0.0)(x, generator=torch.Generator().manual_seed(0)), x)


def test_mask_wider_than_the_input_is_clamped():
    aug = SpecAugment(freq_mask_bins=50, time_mask_frames=50, n_freq_masks=1, n_time_masks=1)
    p = aug.sample(500, 8, 5, generator=torch.Generator().manual_seed(0))
    assert int(p["freq_width"].max()) <= 8 and int(p["time_width"].max()) <= 5
    assert int((p["freq_start"] + p["freq_width"]).max()) <= 8


def test_bad_arguments():
    with pytest.raises(ValueError, match="freq_mask_bins"):
        SpecAugment(freq_mask_bins=-1)
    with pytest.raises(ValueError, match="p must be"):
        SpecAugment(p=1.5)
    with pytest.raises(ValueError, match="batch, 1, n_mels, frames"):
        SpecAugment()(torch.zeros(3, 4))
