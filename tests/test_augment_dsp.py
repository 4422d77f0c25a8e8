"""The shared DSP helpers: FFT convolution against numpy's direct convolution, FFT lengths."""
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


def test_fft_convolve_rows_into_out_in_place_with_finish(chunk):
    g = torch.Generator().manual_seed(1)
    x, h = torch.randn(9, 1, 400, generator=g), torch.randn(4, 1, 50, generator=g)
    rows = torch.tensor([7, 0, 3, 5])
    reference = direct(x[rows], h)[..., :400] * 2.0
    before = x.clone()
    out = fft_convolve(x, h, keep=400, rows=rows, out=x, finish=lambda y, xr, a, b: y * 2.0)
    assert out is x
    np.testing.assert_allclose(x[rows].numpy(), reference, atol=1e-4)
    untouched = torch.ones(9, dtype=torch.bool)
    untouched[rows] = False
    assert torch.equal(x[untouched], before[untouched])


def test_finish_sees_the_input_rows_of_its_slice(chunk):
    g = torch.Generator().manual_seed(2)
    x, h = torch.randn(6, 1, 300, generator=g), torch.zeros(6, 1, 1)
    h[:, 0, 0] = 1.0  # identity filter: the output must equal the input rows finish is handed
    rows = torch.tensor([5, 1, 2, 4])
    seen = []
    fft_convolve(x, h[: len(rows)], keep=300, rows=rows,
                 finish=lambda y, xr, a, b: seen.append((xr.clone(), a, b)) or y)
    for xr, a, b in seen:
        assert torch.equal(xr, x[rows[a:b]])
    assert sum(b - a for _, a, b in seen) == len(rows)


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
