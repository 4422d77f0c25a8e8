"""Butterworth filters against scipy: |H| within 0.1 dB of butter + sosfreqz, the waveform equal to sosfilt."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from audioconv.augment import BandPass, BandStop, HighPass, LowPass, butterworth_response
from audioconv.augment.filters import _ring_classes, _ring_samples, filter_edges_hz


def scipy_sos(aug, params, i: int) -> np.ndarray:
    edges = filter_edges_hz(aug.kind, params, aug.sample_rate)[i].numpy()
    return scipy.signal.butter(int(params["order"][i]), edges if edges.size == 2 else edges[0], aug.kind,
                               fs=aug.sample_rate, output="sos")


def wide(cls, sample_rate):
    """Each filter with wide ranges: low to high corners, orders 1 to 8 (band filters: 16 poles)."""
    sr = sample_rate
    if cls in (LowPass, HighPass):
        return cls(sr, cutoff_hz=(40, 0.45 * sr), order=(1, 8), p=1.0)
    return cls(sr, centre_hz=(60, 0.35 * sr), bandwidth_octaves=(0.2, 3.0), order=(1, 8), p=1.0)


@pytest.mark.parametrize("cls", [LowPass, HighPass, BandPass, BandStop])
@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_magnitude_within_0_1_db_of_scipy_butter_from_50_hz_to_0_45_sr(cls, sample_rate):
    aug = wide(cls, sample_rate)
    batch, time = 10, 2 ** 16  # long enough to hold every impulse response
    impulse = torch.zeros(batch, 1, time, dtype=torch.float64)
    impulse[:, 0, 0] = 1.0
    params = aug.sample(batch, generator=torch.Generator().manual_seed(sample_rate))
    response = aug.apply(impulse, params)[:, 0].numpy()
    freqs = np.fft.rfftfreq(time, 1 / sample_rate)
    band = (freqs >= 50) & (freqs <= 0.45 * sample_rate)
    measured_db = 20 * np.log10(np.abs(np.fft.rfft(response, axis=-1)[:, band]).clip(min=1e-300))
    for i in range(batch):
        reference_db = 20 * np.log10(np.abs(scipy.signal.sosfreqz(scipy_sos(aug, params, i), worN=freqs[band],
                                                                  fs=sample_rate)[1]))
        # the FIR holds the filters' ringing down to -160 dB: what lies below -120 dB (also below
        # float32's resolution) is left out
        resolved = reference_db > -120
        assert resolved.sum() > 100  # the comparison is not vacuous
        err = np.abs(measured_db[i] - reference_db)[resolved].max()
        assert err < 0.1, f"example {i} (order {int(params['order'][i])}): {err:.3f} dB off"


@pytest.mark.parametrize("kind", ["lowpass", "highpass", "bandpass", "bandstop"])
@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-11), (torch.float32, 2e-6)])
def test_response_is_scipy_freqz_in_magnitude_and_phase_for_every_order(kind, dtype, tolerance):
    """The closed form at the real-FFT bins, complex, against ``butter`` + ``sosfreqz`` (orders 1-12,
    narrow and wide bands, corners near 0 Hz and near Nyquist), float64 and float32."""
    sr, n_fft = 16000, 4096
    order = torch.arange(1, 13).repeat(3)
    if kind in ("lowpass", "highpass"):
        edges = torch.tensor([30.0, 1000.0, 7600.0]).repeat_interleave(12)[:, None]
    else:
        edges = torch.tensor([[40.0, 80.0], [500.0, 3000.0], [6000.0, 7800.0]]).repeat_interleave(12, 0)
    response = butterworth_response(kind, order, edges, sr, n_fft, dtype)
    assert response.dtype == (torch.complex128 if dtype == torch.float64 else torch.complex64)
    freqs = np.arange(1, n_fft // 2) * sr / n_fft  # 0 Hz and Nyquist: on a pole of the transform
    for i in range(len(order)):
        wn = edges[i].numpy() if kind.startswith("band") else float(edges[i, 0])
        sos = scipy.signal.butter(int(order[i]), wn, kind, fs=sr, output="sos")
        reference = scipy.signal.sosfreqz(sos, worN=freqs, fs=sr)[1]
        np.testing.assert_allclose(response[i, 1:-1].numpy(), reference, rtol=0, atol=tolerance)


@pytest.mark.parametrize("cls", [LowPass, HighPass, BandPass, BandStop])
def test_waveform_equals_scipy_sosfilt(cls):
    sr = 16000
    aug = wide(cls, sr)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 2, 12000, generator=g, dtype=torch.float64)
    params = aug.sample(8, generator=g)
    y = aug.apply(x, params)
    for i in range(8):
        ref = scipy.signal.sosfilt(scipy_sos(aug, params, i), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5 * np.abs(ref).max())
    y32 = aug.apply(x.float(), params)  # float32: the same filter to float32 rounding
    np.testing.assert_allclose(y32.double().numpy(), y.numpy(), atol=1e-4 * float(y.abs().max()))


def test_cutoffs_are_log_uniform_and_orders_cover_the_range():
    aug = LowPass(16000, cutoff_hz=(100, 6400), order=(1, 4), p=1.0)
    params = aug.sample(20000, generator=torch.Generator().manual_seed(0))
    octaves = torch.log2(params["cutoff_hz"] / 100)  # 0 .. 6, evenly
    counts = torch.histc(octaves, bins=6, min=0, max=6)
    assert (counts / 20000 - 1 / 6).abs().max() < 0.01
    assert set(params["order"].tolist()) == {1, 2, 3, 4}


def test_band_edges_are_the_centre_and_width_in_octaves():
    aug = BandPass(16000, centre_hz=(1000, 1000), bandwidth_octaves=(2, 2), p=1.0)
    params = aug.sample(3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(filter_edges_hz("bandpass", params, 16000), torch.tensor([[500.0, 2000.0]] * 3,
                                                                                          dtype=torch.float64))
    top = BandPass(16000, centre_hz=(6000, 6000), bandwidth_octaves=(2, 2), p=1.0)
    assert filter_edges_hz("bandpass", top.sample(1), 16000)[0, 1] == pytest.approx(0.49 * 16000)


@pytest.mark.parametrize("make, word", [
    (lambda: LowPass(16000, cutoff_hz=(1000, 9000)), "cutoff_hz"),
    (lambda: HighPass(16000, cutoff_hz=(0, 100)), "cutoff_hz"),
    (lambda: LowPass(16000, order=(0, 2)), "order"),
    (lambda: LowPass(16000, order=(2.5, 3)), "order"),
    (lambda: BandPass(16000, bandwidth_octaves=(0, 1)), "bandwidth_octaves"),
    (lambda: BandStop(16000, centre_hz=(100, 8000)), "centre_hz"),
])
def test_bad_arguments_name_the_parameter(make, word):
    with pytest.raises(ValueError, match=word):
        make()


@pytest.mark.parametrize("cls", [LowPass, HighPass, BandPass, BandStop])
@pytest.mark.parametrize("sample_rate", [2000, 4000, 5000, 8000, 11025, 16000, 48000])
def test_the_default_ranges_hold_at_every_rate_and_filter_as_scipy_does(cls, sample_rate):
    """Defaults scale with low rates (HighPass's 2400 Hz top was above Nyquist below 4.8 kHz): every
    cutoff drawn lies below 0.45 sr (band edges: in order, the upper one held at 0.49 sr), and the
    filter is scipy's sosfilt there."""
    aug = cls(sample_rate, p=1.0)
    params = aug.sample(64, generator=torch.Generator().manual_seed(sample_rate))
    edges = filter_edges_hz(aug.kind, params, sample_rate)
    band = edges.shape[1] == 2
    assert (edges > 0).all() and (edges <= (0.49 if band else 0.45) * sample_rate).all()
    assert (edges[:, 1] > edges[:, 0]).all() if band else True
    if cls is HighPass:
        assert aug.cutoff_hz == (min(20.0, 0.01 * sample_rate), min(2400.0, 0.3 * sample_rate))
    x = torch.randn(4, 1, 4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = aug.apply(x, {k: v[:4] for k, v in params.items()})
    for i in range(4):
        ref = scipy.signal.sosfilt(scipy_sos(aug, params, i), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5 * np.abs(ref).max())
    assert cls(sample_rate).to_config()["cutoff_hz" if cls in (LowPass, HighPass) else "centre_hz"] is None


def test_a_band_centre_where_the_edges_are_held_is_refused():
    """The upper edge is held below 0.49 sr: a centre above it made the band's edges cross."""
    with pytest.raises(ValueError, match=r"centre_hz must be < 3920.0 Hz"):
        BandPass(8000, centre_hz=(3950, 3990), bandwidth_octaves=(0.01, 0.02))


def test_rows_that_ring_briefly_are_filtered_at_a_shorter_length_to_the_same_result():
    """A batch with 20 Hz and 4 kHz high-passes goes through in groups of FIR lengths (a 20 Hz
    filter rings for thousands of samples, a 4 kHz one for tens); every row still equals sosfilt."""
    sr = 16000
    aug = HighPass(sr, cutoff_hz=(20, 4000), order=(1, 6), p=1.0)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(16, 1, 4000, generator=g, dtype=torch.float64)
    params = aug.sample(16, generator=g)
    edges = filter_edges_hz("highpass", params, sr)
    classes = _ring_classes(_ring_samples("highpass", params["order"], edges, sr), 4000)
    assert len(classes) > 1
    assert sorted(torch.cat([rows for _, rows in classes]).tolist()) == list(range(16))
    y = aug.apply(x, params)
    for i in range(16):
        ref = scipy.signal.sosfilt(scipy_sos(aug, params, i), x[i].numpy(), axis=-1)
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-5 * np.abs(ref).max())
