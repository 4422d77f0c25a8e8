"""AddEvents (measured signal-to-event ratios, placement), GainTransition and TimeMask against numpy formulas."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.augment import AddEvents, GainTransition, TimeMask, dsp, load_chain
from audioconv.augment.gain_transition import ramp_gain

SR = 8000


def clean(b=6, c=2, t=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, t, generator=g, dtype=torch.float64) * torch.rand(b, 1, 1, generator=g, dtype=torch.float64)


def bank(seed=1):
    """Three event clips of different lengths and pitches, the last shorter than the longest excerpt."""
    rng = np.random.default_rng(seed)
    clips = []
    for n, f in ((3000, 440.0), (5000, 1000.0), (600, 2000.0)):
        t = np.arange(n) / SR
        clips.append(torch.from_numpy((1.5 + np.sin(2 * np.pi * f * t)) * (0.5 + rng.random(n))))  # never 0
    return clips


def segments(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]))


@pytest.mark.parametrize("lengths", [None, [16000, 12000, 16000, 4000, 16000, 9000]])
def test_each_event_is_an_excerpt_at_its_drawn_time_and_snr(lengths):
    x = clean()
    clips = bank()
    aug = AddEvents(SR, background=clips, n=(1, 1), snr_db=(-5, 25), duration_s=(0.05, 0.2), fade_s=0.0, p=1.0)
    params = aug.sample(6, generator=torch.Generator().manual_seed(2))
    lens = None if lengths is None else torch.tensor(lengths)
    y = aug.apply(x, params, lens)
    for b in range(6):
        real = 16000 if lengths is None else lengths[b]
        added = (y[b] - x[b]).numpy()
        assert (added[:, real:] == 0).all()  # padding gets nothing
        clip = clips[int(params["event_index"][b, 0])].numpy()
        n = min(int(round(params["duration_s"][b, 0].item() * SR)), len(clip))
        offset = int(params["event_pos"][b, 0].item() * (len(clip) - n + 1))
        start = int(params["start_pos"][b, 0].item() * real)
        excerpt = clip[offset: offset + n]
        stop = min(start + n, real)
        assert segments(np.abs(added[0]) > 0) == [(start, stop)]
        gain = np.sum(added[0, start:stop] * excerpt[: stop - start]) / np.sum(excerpt[: stop - start] ** 2)
        np.testing.assert_allclose(added[:, start:stop], np.broadcast_to(gain * excerpt[: stop - start], (2, stop - start)),
                                   atol=1e-12)
        signal_db = 10 * np.log10(np.mean(x[b, :, :real].numpy() ** 2))
        event_db = 10 * np.log10(np.mean((gain * excerpt) ** 2))  # over the excerpt's own samples
        assert signal_db - event_db == pytest.approx(params["snr_db"][b, 0].item(), abs=1e-6)


def test_the_drawn_number_of_events_is_added():
    x = clean(b=8, c=1, t=40000, seed=3)
    aug = AddEvents(SR, background=bank(), n=(0, 4), snr_db=(0, 10), duration_s=(0.01, 0.02), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(4))
    y = aug.apply(x, params)
    counts = params["n"].tolist()
    assert len(set(counts)) > 2
    for b, n in enumerate(counts):
        spans = segments(np.abs((y[b, 0] - x[b, 0]).numpy()) > 0)
        starts = sorted(int(p * 40000) for p in params["start_pos"][b, :n].tolist())
        assert [s for s, _ in spans] == starts  # short events far apart: one span per event


def test_fades_ramp_each_event_in_and_out():
    x = torch.ones(1, 1, 8000, dtype=torch.float64) * 0.1
    tone = torch.ones(2000, dtype=torch.float64)  # a flat clip shows the envelope itself
    aug = AddEvents(SR, background=tone, n=(1, 1), snr_db=(0, 0), duration_s=(0.1, 0.1), fade_s=0.01, p=1.0)
    params = aug.sample(1, generator=torch.Generator().manual_seed(0))
    added = (aug.apply(x, params) - x)[0, 0].numpy()
    (start, stop), = segments(added > 0)
    assert stop - start == 800
    envelope = added[start:stop] / added[start:stop].max()
    fade = 80  # 10 ms at 8 kHz: sin^2 from 0 to 1
    np.testing.assert_allclose(envelope[:fade], np.sin(np.pi / 2 * (np.arange(fade) + 0.5) / fade) ** 2, atol=1e-12)
    np.testing.assert_allclose(envelope[fade:-fade], 1.0)
    np.testing.assert_allclose(envelope[::-1][:fade], envelope[:fade], atol=1e-12)


def test_silent_examples_get_no_events_and_stay_finite():
    x = torch.zeros(3, 1, 4000)
    y = AddEvents(SR, background=bank(), p=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, x)


def test_events_from_a_manifest_in_a_chain_file(tmp_path):
    (tmp_path / "events").mkdir()
    for i, clip in enumerate(bank()):
        sf.write(tmp_path / "events" / f"e{i}.wav", clip.numpy().astype(np.float32) * 0.5, 16000)  # resampled
    (tmp_path / "events.jsonl").write_text("".join(json.dumps({"audio_filepath": f"events/e{i}.wav"}) + "\n"
                                                   for i in range(3)))
    (tmp_path / "chain.json").write_text(json.dumps([{"type": "AddEvents", "background": "events.jsonl", "p": 1.0}]))
    chain = load_chain(tmp_path / "chain.json", SR)
    x = clean(b=4, c=1, t=8000)
    y = chain(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all() and ((y - x).abs().amax((1, 2)) > 0).all()


@pytest.mark.parametrize("how", ["one slice", "slices", "autograd"])  # slices: 1 row each; autograd: one product
def test_gain_transition_follows_the_formula(how, monkeypatch):
    if how == "slices":
        monkeypatch.setattr(dsp, "CHUNK_SAMPLES", 24000)
    x = clean(b=6, c=2, t=12000, seed=5)
    lengths = torch.tensor([12000, 8000, 12000, 3000, 12000, 100])
    aug = GainTransition(SR, gain_db=(-30, 10), duration_s=(0.05, 3.0), p=1.0)
    params = aug.sample(6, generator=torch.Generator().manual_seed(6))
    y = aug.apply(x.clone().requires_grad_(how == "autograd"), params, lengths).detach().numpy()
    t = np.arange(12000)
    for b, real in enumerate(lengths.tolist()):
        d = params["duration_s"][b].item() * SR
        t0 = params["start_pos"][b].item() * (real - d)
        g0, g1 = params["start_gain_db"][b].item(), params["end_gain_db"][b].item()
        gain_db = g0 + (g1 - g0) * np.clip((t - t0) / d, 0, 1)
        np.testing.assert_allclose(y[b, :, :real], (x[b].numpy() * 10 ** (gain_db / 20))[:, :real], rtol=1e-9)
        np.testing.assert_array_equal(y[b, :, real:], x[b, :, real:].numpy())


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_ramp_gain_is_the_clamped_power_of_two_for_gentle_steep_and_vertical_lines(dtype, rtol):
    # samples per unit of exponent from 10^4 down to 1/1000: blocks of 128, of fewer samples, and none
    slope = torch.tensor([1e-4, -3e-3, 0.5, -2.0, 7.0, 1e3], dtype=torch.float64)
    t0 = torch.tensor([100.0, 2000.0, 1500.0, 10.0, 2999.0, 1234.4], dtype=torch.float64)
    low = torch.tensor([-4.0, -5.0, -1.0, -9.0, 0.0, -3.0], dtype=torch.float64)[:, None]
    high = low + torch.tensor([1.0, 4.0, 2.0, 8.0, 3.0, 0.5], dtype=torch.float64)[:, None]
    offset = torch.where(slope[:, None] > 0, low, high) - slope[:, None] * t0[:, None]
    for rows in ([0, 1], [0, 1, 2], list(range(6))):  # the steepest row sets the block
        got = ramp_gain(*(v[rows].to(dtype) for v in (slope, offset, low, high)), 3001)
        exponent = np.clip(offset[rows].numpy() + slope[rows].numpy()[:, None] * np.arange(3001),
                           low[rows].numpy(), high[rows].numpy())
        np.testing.assert_allclose(got.double().numpy(), 2.0 ** exponent, rtol=rtol)
    assert ramp_gain(*(v[:0].to(dtype) for v in (slope, offset, low, high)), 3001).shape == (0, 3001)


def test_time_mask_silences_the_drawn_chunks_and_nothing_else():
    x = clean(b=8, c=2, t=8000, seed=7) + 1.0  # no sample is zero before masking
    lengths = torch.tensor([8000, 5000, 8000, 8000, 300, 8000, 7999, 8000])
    aug = TimeMask(SR, max_s=0.2, min_s=0.02, n=(0, 3), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(8))
    y = aug.apply(x, params, lengths).numpy()
    for b, real in enumerate(lengths.tolist()):
        silent = np.zeros(8000, dtype=bool)
        for k in range(int(params["n"][b])):
            width = min(int(round(params["duration_s"][b, k].item() * SR)), real)
            start = min(int(params["start_pos"][b, k].item() * (real - width + 1)), real - width)
            assert 0.02 * SR - 1 <= width <= 0.2 * SR or width == real
            silent[start: start + width] = True
        assert (y[b][:, silent] == 0).all()
        np.testing.assert_array_equal(y[b][:, ~silent], x[b].numpy()[:, ~silent])


@pytest.mark.parametrize("make, word", [
    (lambda: AddEvents(SR, background=None), "background"),
    (lambda: AddEvents(SR, background=bank(), n=(3, 1)), "n"),
    (lambda: AddEvents(SR, background=bank(), duration_s=(0, 1)), "duration_s"),
    (lambda: GainTransition(SR, duration_s=(0.0, 1.0)), "duration_s"),
    (lambda: GainTransition(SR, gain_db=(6, -6)), "gain_db"),
    (lambda: TimeMask(SR, max_s=0.0), "max_s"),
    (lambda: TimeMask(SR, max_s=0.1, min_s=0.2), "min_s"),
    (lambda: TimeMask(SR, n=(-1, 2)), "n"),
])
def test_bad_arguments_name_the_parameter(make, word):
    with pytest.raises(ValueError, match=word):
        make()


@pytest.mark.parametrize("one_by_one", [True, False])
def test_events_are_added_at_their_rows_and_starts_overlapping_ones_summed(one_by_one):
    from audioconv.augment.events import add_at

    x = clean(b=3, c=2, t=50)
    g = torch.Generator().manual_seed(5)
    events = torch.randn(5, 20, generator=g, dtype=torch.float64)
    length = torch.tensor([20, 7, 12, 20, 1])
    events[torch.arange(20) >= length[:, None]] = 0
    row, start = torch.tensor([0, 0, 2, 1, 2]), torch.tensor([3, 10, 45, 30, 0])  # 0 and 1 overlap; 2 runs past T
    want = x.numpy().copy()
    for m in range(5):
        stop = min(int(start[m]) + int(length[m]), 50)
        want[int(row[m]), :, int(start[m]):stop] += events[m, : stop - int(start[m])].numpy()
    np.testing.assert_allclose(add_at(x, row, start, events, length, one_by_one=one_by_one).numpy(), want, atol=1e-12)


def test_an_event_shorter_than_two_fades_follows_the_lower_ramp():
    x = torch.ones(1, 1, 8000, dtype=torch.float64) * 0.1
    aug = AddEvents(SR, background=torch.ones(2000, dtype=torch.float64), n=(1, 1), snr_db=(0, 0),
                    duration_s=(0.0125, 0.0125), fade_s=0.01, p=1.0)  # 100 samples, fades of 80
    added = (aug.apply(x, aug.sample(1, generator=torch.Generator().manual_seed(0))) - x)[0, 0].numpy()
    (start, stop), = segments(added > 0)
    t = np.arange(100)
    want = np.sin(np.pi / 2 * np.clip(np.minimum(t + 0.5, 99.5 - t) / 80, 0, 1)) ** 2
    envelope = added[start:stop]
    np.testing.assert_allclose(envelope / envelope.max() * want.max(), want, atol=1e-12)


def test_time_mask_under_autograd_passes_the_gradient_outside_the_chunks():
    x = clean(b=4, c=2, t=8000)
    aug = TimeMask(SR, max_s=0.2, n=(1, 3), p=1.0)
    params = aug.sample(4, generator=torch.Generator().manual_seed(1))
    plain = aug.apply(x, params)
    leaf = x.clone().requires_grad_(True)
    y = aug.apply(leaf, params)
    y.sum().backward()
    torch.testing.assert_close(y.detach(), plain, rtol=0, atol=0)
    torch.testing.assert_close(leaf.grad, (plain != 0).to(x.dtype), rtol=0, atol=0)  # 1 kept, 0 masked


def test_event_titles_give_one_snr_when_the_events_share_it():
    aug = AddEvents(SR, background=bank(), n=(1, 1), snr_db=(20, 20), p=1.0)
    params = aug.sample(1, generator=torch.Generator().manual_seed(0))
    assert aug.describe(params, 0) == "1 event, SNR 20 dB"
    aug = AddEvents(SR, background=bank(), n=(3, 3), snr_db=(0, 20), p=1.0)
    params = aug.sample(1, generator=torch.Generator().manual_seed(0))
    low, high = params["snr_db"][0].min().round(), params["snr_db"][0].max().round()
    assert aug.describe(params, 0) == f"3 events, SNR {int(low)}-{int(high)} dB"
