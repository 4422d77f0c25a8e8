"""The shared DSP helpers: FFT convolution against numpy's direct convolution, FFT lengths, coloured
noise against its formula and a periodogram."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from audioconv.augment import dsp
from audioconv.augment.dsp import fast_length, fft_convolve


def direct(x: torch.Tensor, h: torch.Tensor) -> np.ndarray:
    """Row-by-row ``np.convolve`` (float64): ``x`` (B, C, T), ``h`` (B, 1, L) -> (B, C, T + L - 1)."""
    return np.stack([np.stack([np.convolve(xc, hb[0]) for xc in xb]) for xb, hb in
                     zip(x.double().numpy(), h.double().numpy())])


@pytest.fixture(params=[None, 3000], ids=["one-slice", "slices"])
def chunk(request, monkeypatch):
    if request.param:  # a few rows per slice, so the slicing and scattering run
        monkeypatch.setattr(dsp, "CHUNK_SAMPLES", request.param)


def test_fft_convolve_is_linear_convolution(chunk):
    g = torch.Generator().manual_seed(0)
    x, h = torch.randn(7, 2, 500, generator=g), torch.randn(7, 1, 90, generator=g)
    np.testing.assert_allclose(fft_convolve(x, h).numpy(), direct(x, h), atol=1e-4)
    np.testing.assert_allclose(fft_convolve(x, h, keep=500).numpy(), direct(x, h)[..., :500], atol=1e-4)


def test_fft_convolve_finish_post_processes_every_slice_and_leaves_x_alone(chunk):
    g = torch.Generator().manual_seed(1)
    x, h = torch.randn(9, 1, 400, generator=g), torch.randn(9, 1, 50, generator=g)
    reference = direct(x, h)[..., :400] * 2.0
    before = x.clone()
    out = fft_convolve(x, h, keep=400, finish=lambda y, xr, a, b: y * 2.0)
    assert out.shape == (9, 1, 400)
    np.testing.assert_allclose(out.numpy(), reference, atol=1e-4)
    assert torch.equal(x, before)


@pytest.mark.parametrize("keep", [None, 4000, 1000, 37])
@pytest.mark.parametrize("shared_h", [False, True], ids=["h-per-row", "one-h"])
def test_short_filters_go_by_overlap_save_and_are_still_linear_convolution(chunk, keep, shared_h):
    g = torch.Generator().manual_seed(3)
    x, h = torch.randn(5, 2, 4000, generator=g), torch.randn(1 if shared_h else 5, 1, 33, generator=g)
    assert dsp.overlap_save_block(4000, 33, 4032 if keep is None else keep) is not None
    reference = direct(x, h.expand(5, 1, 33))[..., : 4032 if keep is None else keep]
    out = fft_convolve(x, h, keep=keep, finish=lambda y, xr, a, b: y * torch.arange(a + 1, b + 1.0)[:, None, None])
    np.testing.assert_allclose(out.numpy(), reference * np.arange(1, 6.0)[:, None, None], atol=1e-4)


def test_an_empty_batch_convolves_to_an_empty_batch_both_ways():
    for time in (300, 4000):  # whole row, overlap-save
        out = fft_convolve(torch.zeros(0, 2, time), torch.zeros(0, 1, 33), keep=time)
        assert out.shape == (0, 2, time)
    x, h = torch.randn(2, 1, 16000), torch.randn(2, 1, 64)
    assert fft_convolve(x, h, keep=0).shape == (2, 1, 0)  # nothing kept: no blocks
    assert fft_convolve(x, h[..., :0], keep=100).abs().max() == 0  # an empty filter passes nothing


def test_overlap_save_block_is_chosen_only_where_it_is_cheaper():
    assert dsp.overlap_save_block(16000, 64, 16000) == 512  # 36 blocks of 449 outputs
    assert dsp.overlap_save_block(16000, 4096, 16000) is None  # one transform of 20480 points
    assert dsp.overlap_save_block(300, 20, 300) is None  # shorter than one block


def test_overlap_save_passes_gradients_like_the_whole_row_method():
    g = torch.Generator().manual_seed(4)
    x, h = torch.randn(3, 1, 3000, generator=g, dtype=torch.float64), torch.randn(3, 1, 17, generator=g, dtype=torch.float64)
    x.requires_grad_(True)
    h.requires_grad_(True)
    weight = torch.randn(3, 1, 3000, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((dsp.overlap_save(x, h, 3000, 512) * weight).sum(), (x, h))
    expected = torch.autograd.grad((dsp.fft_filter(x, lambda a, b: torch.fft.rfft(h[a:b], n=4096), 4096, keep=3000)
                                    * weight).sum(), (x, h))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want)


def test_finish_sees_the_input_rows_of_its_slice(chunk):
    g = torch.Generator().manual_seed(2)
    x, h = torch.randn(6, 1, 300, generator=g), torch.zeros(6, 1, 1)
    h[:, 0, 0] = 1.0  # identity filter: the output must equal the input rows finish is handed
    seen = []
    y = fft_convolve(x, h, keep=300, finish=lambda y, xr, a, b: seen.append((xr.clone(), y.clone(), a, b)) or y)
    for xr, ys, a, b in seen:
        assert torch.equal(xr, x[a:b])
        torch.testing.assert_close(ys, xr, atol=1e-6, rtol=0)
    assert sum(b - a for *_, a, b in seen) == len(x)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def _periodogram_slope_db_per_octave(x: np.ndarray, lo_bin: int, hi_bin: int) -> float:
    """Least-squares slope of the periodogram (dB) against log2(bin) over bins [lo_bin, hi_bin)."""
    power = np.abs(np.fft.rfft(x)) ** 2
    k = np.arange(lo_bin, hi_bin)
    smooth = np.convolve(power, np.ones(64) / 64, mode="same")[k]  # average neighbouring bins
    return float(np.polyfit(np.log2(k), 10 * np.log10(smooth), 1)[0])


@pytest.mark.parametrize("slope", [0.0, -3.0103, -6.0206, 3.0])
def test_colored_noise_has_the_slope_zero_mean_and_unit_rms(slope):
    white = torch.randn(4, 2 ** 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = dsp.colored_noise(white, slope)
    assert noise.shape == white.shape and noise.dtype == torch.float64
    torch.testing.assert_close(noise.square().mean(-1), torch.ones(4, dtype=torch.float64))
    assert noise.mean(-1).abs().max() < 1e-12
    for row in noise.numpy():
        assert _periodogram_slope_db_per_octave(row, 64, 2 ** 15) == pytest.approx(slope, abs=0.25)


@pytest.mark.parametrize("slope, floor", [(-6.0206, None), (-6.0206, 40.0), (-3.0, 7.5), (4.0, 100.0)])
def test_colored_noise_is_the_documented_bin_gain(slope, floor):
    """Against the formula, written with numpy: bin k times max(k, floor) ** (slope / 6.02), DC
    zero without a floor; unit RMS."""
    white = np.random.default_rng(1).standard_normal(3000)
    k = np.arange(1501, dtype=np.float64)
    exponent = slope / (20 * np.log10(2))
    gain = np.maximum(k, floor) ** exponent if floor else np.where(k > 0, np.maximum(k, 1) ** exponent, 0.0)
    expected = np.fft.irfft(np.fft.rfft(white) * gain, n=3000)
    expected /= np.sqrt(np.mean(expected ** 2))
    got = dsp.colored_noise(torch.from_numpy(white), slope, flat_below_bin=floor).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    if floor:  # flat below the floor: the low bins keep white noise's (flat) spectrum
        assert np.abs(np.fft.rfft(got))[0] > 0


def test_colored_noise_rejects_a_bad_floor_and_keeps_silence_silent():
    with pytest.raises(ValueError, match="flat_below_bin"):
        dsp.colored_noise(torch.randn(100), -3.0, flat_below_bin=0.0)
    assert torch.equal(dsp.colored_noise(torch.zeros(2, 64), -3.0), torch.zeros(2, 64))


def test_noise_bank_is_colored_noise_of_its_seed():
    white = torch.randn(2 ** 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = dsp.colored_noise(white, -3.0).float()
    assert torch.equal(dsp.noise_bank(-3.0, seed=3, n_samples=2 ** 12), expected)


@pytest.mark.parametrize("n", [1, 2, 3, 17, 999, 16000, 19644, 20001, 31999, 32769, 100003])
def test_fast_length_is_a_5_smooth_length_no_longer_than_the_next_power_of_two(n):
    m = fast_length(n)
    assert n <= m <= 1 << (n - 1).bit_length()
    rest = m
    for p in (2, 3, 5):
        while rest % p == 0:
            rest //= p
    assert rest == 1
    assert m == scipy.fft.next_fast_len(m, real=True)


def test_fast_length_prefers_factors_of_two_over_the_smallest_length():
    assert scipy.fft.next_fast_len(19644, real=True) == 19683  # 3**9, slow
    assert fast_length(19644) in (20000, 20480)
    assert fast_length(31999) == 32768


def test_finite_rows_flags_nan_and_both_infinities_per_row():
    x = torch.randn(6, 2, 50, dtype=torch.float64)
    x[1, 1, 7], x[2, 0, 0], x[3, 1, 49] = float("nan"), float("inf"), float("-inf")
    x[4] = 1e308  # large but finite
    expected = torch.isfinite(x).flatten(1).all(1)
    assert dsp.finite_rows(x).tolist() == expected.tolist() == [True, False, False, False, True, True]
    assert dsp.finite_rows(x.float()).tolist() == [True, False, False, False, False, True]  # 1e308 is inf in float32
    assert dsp.finite_rows(torch.zeros(3, 0)).tolist() == [True, True, True]


@pytest.mark.parametrize("rows, row_samples", [(256, 16000), (5, 2 ** 20), (1, 1), (0, 100), (1000, 1)])
def test_cache_slices_cover_every_row_once_within_the_budget(rows, row_samples):
    slices = dsp.cache_slices(rows, row_samples, torch.device("cpu"))
    assert [i for s in slices for i in range(rows)[s]] == list(range(rows))
    assert all(s.stop - s.start == 1 or (s.stop - s.start) * row_samples <= dsp.CHUNK_SAMPLES for s in slices)
    assert dsp.cache_slices(rows, row_samples, torch.device("meta")) == ([slice(0, rows)] if rows else [])


def test_ufunc_is_the_torch_function_through_numpy_on_the_cpu_and_torch_under_autograd():
    x = torch.randn(3, 40, dtype=torch.float64) * 3
    y = torch.randn(3, 40, dtype=torch.float64)
    for torch_fn, numpy_fn, args in ((torch.tanh, np.tanh, (x,)), (torch.atan2, np.arctan2, (y, x)),
                                     (torch.cos, np.cos, (x.float(),))):
        out = dsp.ufunc(torch_fn, numpy_fn, *args)
        assert out.dtype == args[0].dtype and out.shape == args[0].shape
        torch.testing.assert_close(out, torch_fn(*args), rtol=1e-6, atol=1e-6)
    strided = x.t()  # not contiguous: numpy reads the strides
    torch.testing.assert_close(dsp.ufunc(torch.tanh, np.tanh, strided), torch.tanh(strided))
    leaf = x.clone().requires_grad_()
    dsp.ufunc(torch.tanh, np.tanh, leaf).sum().backward()  # torch's own function: the gradient flows
    torch.testing.assert_close(leaf.grad, 1 - torch.tanh(x) ** 2)


def test_ufunc_leaves_it_to_torch_when_torch_has_more_threads_than_numpy_is_faster(monkeypatch):
    calls = []
    def numpy_fn(a):
        calls.append(1)
        return np.tanh(a)
    x = torch.randn(4, 10)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    torch.testing.assert_close(dsp.ufunc(torch.tanh, numpy_fn, x, speedup=2), torch.tanh(x))
    assert calls == []
    dsp.ufunc(torch.tanh, numpy_fn, x, speedup=12)
    assert calls == [1]


@pytest.mark.parametrize("with_lengths", [False, True])
def test_add_at_snr_on_some_rows_gives_each_the_gain_of_the_whole_batch_bit_for_bit(with_lengths):
    """``rows``: only those examples are mixed, each with exactly the result it gets when the whole
    batch is. float32 powers of 10 of a short vector round differently in the last bit for ~2 %
    of the values (one such bit made a training run another draw), so 100 draws of 7 rows each."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700, 1, 50, generator=g) * torch.rand(700, 1, 1, generator=g)
    other = torch.randn(700, 1, 50, generator=g)
    snr_db = torch.rand(700, generator=g) * 15
    lengths = torch.randint(10, 51, (700,), generator=g) if with_lengths else None
    apply = torch.rand(700, generator=g) < 0.8
    whole = dsp.add_at_snr(x, other, snr_db, lengths, apply=apply)
    for rows in torch.arange(700).reshape(100, 7):
        some = dsp.add_at_snr(x, other.index_select(0, rows), snr_db, lengths, apply=apply, rows=rows)
        assert torch.equal(some, whole.index_select(0, rows))
    assert torch.equal(whole[~apply], x[~apply])  # rows not applied: x itself


@pytest.mark.parametrize("device", ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else []))
@pytest.mark.parametrize("with_source", [False, True])
def test_replace_tails_replaces_each_row_from_its_start_on(device, with_source):
    """Row by row in place on the CPU, one ``torch.where`` elsewhere (``meta`` takes that branch:
    shapes only; ``cuda`` when there is one) and under autograd: the same as the mask
    ``t >= starts[b]``; NaN in the replaced part goes too (a product with a mask would keep it)."""
    x = torch.randn(4, 2, 50, generator=torch.Generator().manual_seed(0))
    x[1, :, 40:] = float("nan")
    source = torch.randn(4, 2, 50, generator=torch.Generator().manual_seed(1))
    starts = torch.tensor([0, 40, 17, 60])
    tail = torch.arange(50) >= starts[:, None, None]
    want = torch.where(tail, source if with_source else torch.zeros(()), x)
    y = x.to(device)
    out = dsp.replace_tails(y, starts.to(device), source.to(device) if with_source else None)
    if device == "cpu":
        assert out is y
    if device != "meta":
        assert torch.equal(out.cpu(), want)
    leaf = x.clone().requires_grad_()
    graded = dsp.replace_tails(leaf, starts, source if with_source else None)
    assert graded is not leaf and torch.equal(graded.detach(), want)
    grad, = torch.autograd.grad(graded.sum(), leaf)
    assert torch.equal(grad, (~tail).expand_as(x).float())
