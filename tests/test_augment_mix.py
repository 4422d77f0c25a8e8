"""BatchMix: another row of the batch added at a measured signal-to-interference ratio."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioconv.augment import AddNoise, BatchMix, Compose, Gain


def batch(b=6, c=2, t=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, t, generator=g, dtype=torch.float64) * torch.rand(b, 1, 1, generator=g, dtype=torch.float64)


def power_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x ** 2))


@pytest.mark.parametrize("lengths", [None, [1000, 700, 1000, 300, 999, 1000]])
def test_interference_is_another_row_shifted_at_the_drawn_snr(lengths):
    x = batch()
    aug = BatchMix(snr_db=(-5, 25), p=1.0)
    params = aug.sample(6, generator=torch.Generator().manual_seed(1))
    lens = None if lengths is None else torch.tensor(lengths)
    y = aug.apply(x, params, lens)
    partners = BatchMix.partners(params).tolist()
    assert all(p != b for b, p in enumerate(partners))
    for b in range(6):
        n = 1000 if lengths is None else lengths[b]
        added = (y[b] - x[b]).numpy()[:, :n]
        assert abs(power_db(x[b].numpy()[:, :n]) - power_db(added) - params["snr_db"][b].item()) < 1e-6
        shift = int(params["shift"][b].double().item() * 1000)
        source = np.roll(x[partners[b]].numpy(), -shift, axis=-1)[:, :n]  # out[t] = partner[(t + shift) % T]
        gain = np.sum(added * source) / np.sum(source ** 2)
        np.testing.assert_allclose(added, gain * source, atol=1e-12)
        assert torch.equal(y[b, :, n:], x[b, :, n:])  # padding untouched


@pytest.mark.parametrize("lengths", [None, [1000, 700, 1000, 300, 999, 1000]])
@pytest.mark.parametrize("talkers, reverse", [(3, True), (5, False)])
def test_babble_is_the_sum_of_shifted_rows_at_the_drawn_snr(lengths, talkers, reverse):
    """Three talkers played backwards, and five forwards as in the default chain."""
    x = batch()
    aug = BatchMix(snr_db=(-5, 25), talkers=talkers, reverse=reverse, p=1.0)
    params = aug.sample(6, generator=torch.Generator().manual_seed(3))
    assert params["partner_pos"].shape == params["shift"].shape == (6, talkers)
    lens = None if lengths is None else torch.tensor(lengths)
    y = aug.apply(x, params, lens)
    partners = BatchMix.partners(params)
    assert partners.shape == (6, talkers) and not (partners == torch.arange(6)[:, None]).any()
    for b in range(6):
        n = 1000 if lengths is None else lengths[b]
        added = (y[b] - x[b]).numpy()[:, :n]
        assert abs(power_db(x[b].numpy()[:, :n]) - power_db(added) - params["snr_db"][b].item()) < 1e-6
        source = 0
        for k in range(talkers):
            shift = int(params["shift"][b, k].double().item() * 1000)
            row = x[int(partners[b, k])].numpy()
            row = row[:, ::-1] if reverse else row  # the partner played backwards
            source = source + np.roll(row, -shift, axis=-1)  # then out[t] = row[(t + shift) % T]
        source = source[:, :n]
        gain = np.sum(added * source) / np.sum(source ** 2)
        np.testing.assert_allclose(added, gain * source, atol=1e-12)
        assert torch.equal(y[b, :, n:], x[b, :, n:])


def test_one_talker_draws_as_before_and_three_draw_per_talker():
    g1, g3 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    one = BatchMix(p=1.0).sample(8, generator=g1)
    three = BatchMix(talkers=3, p=1.0).sample(8, generator=g3)
    assert one["partner_pos"].shape == (8,) and three["partner_pos"].shape == (8, 3)
    assert torch.equal(one["snr_db"], three["snr_db"])


def test_partners_cover_every_other_row():
    params = BatchMix(p=1.0).sample(4000, generator=torch.Generator().manual_seed(0))
    step = (BatchMix.partners(params) - torch.arange(4000)) % 4000
    assert step.min() >= 1 and step.max() <= 3999


def test_edge_cases_stay_finite_and_unchanged():
    aug = BatchMix(p=1.0)
    one = torch.randn(1, 1, 500)
    assert torch.equal(aug(one, generator=torch.Generator().manual_seed(0)), one)
    silent = torch.zeros(3, 1, 500)
    silent[0] = 1.0  # rows 1 and 2 are silent: they get nothing; row 0 gets a silent partner or one row of ones
    y = aug(silent, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all() and torch.equal(y[1:], silent[1:])
    assert torch.equal(BatchMix(p=0.0)(silent), silent)


def test_rows_not_drawn_come_back_as_they_were_a_non_finite_one_included():
    """Only the drawn rows change; the others come back bit for bit, also one holding NaN (its
    NaN spread over the whole row before: the row got ``0 * NaN`` of interference)."""
    x = batch(b=8, t=600)
    x[2, 0, 10] = float("nan")
    aug = BatchMix(snr_db=(0, 15), talkers=5, p=0.5)
    params = aug.sample(8, generator=torch.Generator().manual_seed(4))
    params["apply"] = torch.tensor([True, False, False, True, False, True, True, False])
    y = aug.apply(x, params)
    for b in (1, 2, 4, 7):
        assert torch.equal(y[b].isnan(), x[b].isnan()) and torch.equal(y[b].nan_to_num(), x[b].nan_to_num())
    assert all(not torch.equal(y[b], x[b]) and torch.isfinite(y[b]).all() for b in (0, 3, 5, 6))


def test_a_batch_of_one_draws_no_mix_so_no_description_names_one():
    """Nothing to mix with: ``apply`` is false, and the preview's title does not say "mix"."""
    from audioconv.augment import describe_example

    params = BatchMix(talkers=5, p=1.0).sample(1, generator=torch.Generator().manual_seed(0))
    assert not bool(params["apply"][0])
    chain = Compose([Gain(gain_db=6.0, p=1.0), BatchMix(talkers=5, p=1.0)])
    assert describe_example(chain, chain.sample(1, generator=torch.Generator().manual_seed(0)), 0) == "gain"
    assert bool(BatchMix(p=1.0).sample(2, generator=torch.Generator().manual_seed(0))["apply"].all())


def test_a_shift_edited_outside_0_1_wraps_around():
    """``shift`` is a fraction of the clip in [0, 1); an edited 1.25 or -0.75 gives the 0.25 shift
    (it raised IndexError, or moved one sample off, before)."""
    x = batch(t=100)
    aug = BatchMix(p=1.0)
    params = aug.sample(6, generator=torch.Generator().manual_seed(0))
    params["shift"] = torch.full((6,), 0.25)
    y = aug.apply(x, params)
    for edited in (1.25, -0.75):
        assert torch.equal(aug.apply(x, {**params, "shift": torch.full((6,), edited)}), y)


def test_in_a_chain_it_reads_the_batch_as_the_steps_before_left_it():
    x = batch(t=400)
    chain = Compose([Gain(gain_db=6.0, p=1.0), AddNoise(snr_db=(10, 20), p=0.5), BatchMix(p=0.7)])
    params = chain.sample(6, generator=torch.Generator().manual_seed(2))
    before = x.clone()
    y = chain.apply(x, params)
    assert torch.equal(x, before)
    step = x
    for key, t in zip(chain._keys, chain.transforms):
        step = t.apply(step, params[key])
    assert torch.equal(y, step)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="snr_db"):
        BatchMix(snr_db=(20, 5))
    with pytest.raises(ValueError, match="p"):
        BatchMix(p=1.5)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="talkers"):
            BatchMix(talkers=bad)
    with pytest.raises(ValueError, match="reverse"):
        BatchMix(reverse="yes")
    params = BatchMix(talkers=3, p=1.0).sample(4, generator=torch.Generator().manual_seed(0))
    params["shift"] = params["shift"][:, 0]  # talkers' positions and shifts that do not pair up
    with pytest.raises(ValueError, match=r"partner_pos \(4, 3\) and shift \(4,\)"):
        BatchMix(talkers=3, p=1.0).apply(torch.randn(4, 1, 100), params)
