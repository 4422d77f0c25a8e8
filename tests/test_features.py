"""LogMel front end against librosa (an independent implementation), its calibration in dB re full
scale against sines of known amplitude, and the axis formulas."""
import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from audioconv.features import LogMel, LogMelConfig, normalize_logmel


def _full_scale_power(cfg: LogMelConfig) -> float:
    """Spectral power of a unit sine in one frame (Parseval): (1/2)² · n_fft · Σ w², scipy's periodic Hann."""
    w = scipy.signal.get_window("hann", cfg.win_length, fftbins=True)
    return cfg.n_fft * float(np.sum(w ** 2)) / 4


def _reference_power(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=cfg.n_mels,
        fmin=cfg.f_min_hz, fmax=cfg.f_max, htk=True, norm=None)


def test_mel_power_matches_librosa():
    cfg = LogMelConfig(sample_rate=16000, n_mels=40)
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ours = LogMel(cfg).power(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = _reference_power(x, cfg)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-3, atol=1e-7 * ref.max())


@pytest.mark.filterwarnings("ignore:At least one mel filterbank has all zero values", "ignore:Empty filters detected")
@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
@pytest.mark.parametrize("n_mels", [30, 40, 128])
@pytest.mark.parametrize("f_max_hz", [None, 3000.0, 6000.5, "nyquist - 3"])
def test_the_top_of_a_mel_filter_bank_is_read_back_from_its_filters(sample_rate, n_mels, f_max_hz):
    """``mel_top_hz`` recovers the ``f_max_hz`` a filter bank was built with (``None`` for the Nyquist
    frequency), also where the top band is narrower than two frequency bins (128 bands at 3 kHz); and the
    bank itself is librosa's HTK bank for that range."""
    import librosa

    from audioconv.features import mel_top_hz

    f_max_hz = sample_rate / 2 - 3 if f_max_hz == "nyquist - 3" else f_max_hz
    f_max_hz = None if f_max_hz is not None and f_max_hz >= sample_rate / 2 else f_max_hz
    front = LogMel(LogMelConfig(sample_rate=sample_rate, n_mels=n_mels, f_max_hz=f_max_hz))
    filters = front.mel.mel_scale.fb
    ref = librosa.filters.mel(sr=sample_rate, n_fft=front.config.n_fft, n_mels=n_mels, fmin=front.config.f_min_hz,
                              fmax=front.config.f_max, htk=True, norm=None)
    np.testing.assert_allclose(filters.T.numpy(), ref, atol=1e-4)
    assert mel_top_hz(filters, sample_rate) == f_max_hz


def test_the_top_read_back_from_low_precision_weights_and_a_bank_that_is_no_front_end():
    """Weights stored in bfloat16 still read back the round top they were built with (``None`` for the
    Nyquist frequency); a bank made at another sample rate, or an all-zero one, is refused, not fitted."""
    from audioconv.features import mel_top_hz

    for top_hz in (None, 7000.0, 4000.0):
        filters = LogMel(LogMelConfig(sample_rate=16000, n_mels=40, f_max_hz=top_hz)).mel.mel_scale.fb
        assert mel_top_hz(filters.bfloat16(), 16000) == top_hz
        assert mel_top_hz(filters.half(), 16000) == top_hz
        with pytest.raises(ValueError, match=r"^the mel filters are not the 40 HTK bands from 20 Hz of a log-mel "
                                             r"front end at 8000 Hz \(relative misfit"):
            mel_top_hz(filters, 8000)
    with pytest.raises(ValueError, match="weigh no frequency"):
        mel_top_hz(torch.zeros(257, 40), 16000)


def _tone_burst() -> np.ndarray:
    x = np.zeros(16000, np.float32)
    x[4000:12000] = np.sin(2 * np.pi * 1000 * np.arange(8000) / 16000) * 0.3
    return x


def test_db_has_a_top_db_floor_below_the_clip_peak():
    cfg = LogMelConfig(top_db=60.0)
    x = _tone_burst()
    db = LogMel(cfg)(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = 10 * np.log10(np.maximum(_reference_power(x, cfg), 1e-10) / _full_scale_power(cfg))
    np.testing.assert_allclose(db, np.maximum(ref, ref.max() - 60.0), atol=0.05)
    assert db.max() - db.min() == pytest.approx(60.0)


def test_peak_relative_db_ignores_the_recording_level():
    cfg = LogMelConfig(relative_to_peak=True)
    x = _tone_burst()
    fe = LogMel(cfg)
    db = fe(torch.from_numpy(x)[None])[0, 0].double().numpy()
    ref = 10 * np.log10(np.maximum(_reference_power(x, cfg), 1e-10))
    ref = np.maximum(ref, ref.max() - cfg.top_db) - ref.max()
    np.testing.assert_allclose(db, ref, atol=0.05)
    assert db.max() == pytest.approx(0.0) and db.min() == pytest.approx(-cfg.top_db)
    # a gain change does not move a peak-relative log-mel (up to float32 rounding)
    louder = fe(torch.from_numpy(x * 10 ** (-25 / 20))[None])[0, 0].double().numpy()
    np.testing.assert_allclose(louder, db, atol=0.05)


def test_axes_follow_the_formulas():
    cfg = LogMelConfig(sample_rate=22050, hop_length=256, n_mels=32, f_min_hz=50.0, f_max_hz=8000.0)
    fe = LogMel(cfg)
    hz = fe.mel_hz()
    # HTK mel: m = 2595 log10(1 + f / 700); centres evenly spaced in m between the band edges
    m = 2595 * np.log10(1 + np.array([50.0, 8000.0]) / 700)
    centres = 700 * (10 ** (np.linspace(m[0], m[1], 34)[1:-1] / 2595) - 1)
    np.testing.assert_allclose(hz, centres, rtol=1e-6)
    np.testing.assert_allclose(fe.frame_s(5), np.arange(5) * 256 / 22050)
    assert fe.n_frames(22050) == fe(torch.zeros(1, 22050) + 1e-3).shape[-1] == 22050 // 256 + 1


def test_mel_to_linear_spreads_a_constant_to_a_constant():
    fe = LogMel(LogMelConfig(n_mels=64))
    lin = fe.mel_to_linear(torch.ones(64, 3))
    covered = fe.mel.mel_scale.fb.sum(dim=1) > 0
    torch.testing.assert_close(lin[covered], torch.ones(int(covered.sum()), 3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(f_max_hz=9000.0), "f_max_hz"), (dict(win_length=1024), "win_length"),
    (dict(hop_length=0), "hop_length"), (dict(n_mels=0), "n_mels"), (dict(sample_rate=-1), "sample_rate"),
])
def test_bad_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LogMel(LogMelConfig(**kwargs))


def test_bad_waveforms_are_refused():
    fe = LogMel()
    with pytest.raises(ValueError, match="waveform"):
        fe(torch.zeros(1, 1, 1, 100))
    with pytest.raises(ValueError, match="float"):
        fe(torch.zeros(1, 100, dtype=torch.int16))



@pytest.mark.parametrize("n_fft", [512, 256])
def test_a_clip_of_at_most_half_an_fft_is_refused_naming_its_length(n_fft):
    """Centred frames pad ``n_fft // 2`` samples by reflection, which needs more samples than that:
    a shorter clip is a ValueError saying so (it was torch's "Padding size should be less than the
    corresponding input dimension"); one sample more gives ``T // hop + 1`` frames."""
    fe = LogMel(LogMelConfig(sample_rate=16000, n_fft=n_fft, win_length=n_fft, hop_length=n_fft // 4))
    for n in (1, n_fft // 2):
        with pytest.raises(ValueError, match=rf"too short .*: {n} samples .* at least {n_fft // 2 + 1}"):
            fe(torch.randn(2, 1, n))
    n = n_fft // 2 + 1
    assert fe(torch.randn(2, 1, n)).shape == (2, 1, fe.config.n_mels, n // (n_fft // 4) + 1)
    with pytest.raises(ValueError, match="clip.wav is too short"):
        fe.check_length(n - 1, "clip.wav")

# ------------------------------------------------------------------------------ calibration: dB re full scale
def _sine(freq_hz: float, amplitude: float, sample_rate: int) -> torch.Tensor:
    t = torch.arange(sample_rate, dtype=torch.float64) / sample_rate
    return (amplitude * torch.sin(2 * np.pi * freq_hz * t + 0.3))[None]


def _band_halfwidths_bins(fe: LogMel) -> tuple[np.ndarray, np.ndarray]:
    """Each band's left and right half-width in FFT bins (HTK triangles between neighbouring centres)."""
    c = fe.config
    edges = np.concatenate([[c.f_min_hz], fe.mel_hz(), [c.f_max]])
    bin_hz = c.sample_rate / c.n_fft
    return np.diff(edges)[:-1] / bin_hz, np.diff(edges)[1:] / bin_hz


def _main_lobe_mean_offset_bins(cfg: LogMelConfig) -> float:
    """Energy-weighted mean |offset| (in FFT bins) of the window's spectrum, from scipy's Hann, finely sampled."""
    w = scipy.signal.get_window("hann", cfg.win_length, fftbins=True)
    fine = 64
    power = np.abs(np.fft.fft(w, cfg.n_fft * fine)) ** 2
    offset = np.abs(np.fft.fftfreq(cfg.n_fft * fine, 1 / (cfg.n_fft * fine))) / fine
    return float((offset * power).sum() / power.sum())


@pytest.mark.parametrize("sample_rate, n_mels", [(16000, 64), (8000, 32), (44100, 64)])
def test_a_sine_of_amplitude_a_reads_20_log10_a_db(sample_rate, n_mels):
    """0 dB is a full-scale sine. Two checks against formulas:

    * the bands together: HTK triangles sum to 1 between the first and last centres, so a sine's
      band powers add up to its spectral power, (A/2)² · n_fft · Σw² (Parseval): 20·log10(A) dB to
      within float rounding (0.01 dB), at any frequency whose main lobe lies inside that range;
    * its own band: the triangle weighs the main lobe by 1 - |d|/h (d the offset from the centre, h
      the half-width, both in FFT bins), so a sine at a band centre reads 20·log10(A) +
      10·log10(1 - E|d| (1/h_left + 1/h_right) / 2) with E|d| (≈ 0.6 bins) the energy-weighted mean
      offset of scipy's Hann spectrum; within 0.15 dB (the bin grid samples the lobe at the
      sine's fractional position), and so within 1 dB of 20·log10(A) for bands >= 3 bins wide.
    """
    fe = LogMel(sample_rate=sample_rate, n_mels=n_mels, top_db=250.0).double()
    cfg, hz = fe.config, fe.mel_hz()
    bin_hz = sample_rate / cfg.n_fft
    amplitudes = np.array([1.0, 0.6, 0.1, 0.003])
    freqs = np.geomspace(hz[0] + 4 * bin_hz, hz[-1] - 4 * bin_hz, 9)
    grid = [(f, a) for f in freqs for a in amplitudes]
    db = fe(torch.cat([_sine(f, a, sample_rate) for f, a in grid]))[:, 0, :, 3:-3]  # frames away from the ends
    total = 10 * torch.log10(torch.pow(10.0, db / 10).sum(dim=1))  # (examples, frames)
    want = torch.tensor([20 * np.log10(a) for _, a in grid], dtype=torch.float64)[:, None].expand_as(total)
    torch.testing.assert_close(total, want, atol=0.01, rtol=0)

    left, right = _band_halfwidths_bins(fe)
    mean_offset = _main_lobe_mean_offset_bins(cfg)
    wide = [m for m in range(n_mels) if min(left[m], right[m]) >= 3]
    assert len(wide) >= n_mels // 3
    grid = [(m, a) for m in wide for a in (1.0, 0.6, 0.01)]
    db = fe(torch.cat([_sine(hz[m], a, sample_rate) for m, a in grid]))[:, 0, :, 3:-3]
    for (m, amplitude), example in zip(grid, db):
        reading = float(example[m].mean())
        model = 20 * np.log10(amplitude) + 10 * np.log10(1 - mean_offset * (1 / left[m] + 1 / right[m]) / 2)
        assert reading == pytest.approx(model, abs=0.15), (m, hz[m], amplitude)
        assert 20 * np.log10(amplitude) - 1.0 <= reading <= 20 * np.log10(amplitude) + 0.01


def test_the_issue_example_a_06_sine_reads_minus_4_db_not_plus_37():
    fe = LogMel()  # the default front end: 16 kHz, 64 bands
    db = fe(_sine(1000.0, 0.6, 16000).float())[0, 0, :, 3:-3]
    total = 10 * torch.log10(torch.pow(10.0, db / 10).sum(dim=0))
    assert float(total.mean()) == pytest.approx(20 * np.log10(0.6), abs=0.01)  # -4.44 dB
    # its loudest band: 1 kHz lies between two centres (the power splits) in bands ~2 bins wide
    assert 20 * np.log10(0.6) - 3.5 < float(db.amax(dim=0).mean()) < 20 * np.log10(0.6)  # it read +37 before
    assert fe.reference_power == pytest.approx(_full_scale_power(fe.config))
    # the old scale is one setting away (checkpoints from before version 2 load with it): +42.8 dB
    old = LogMel(db_reference="unit_power")(_sine(1000.0, 0.6, 16000).float())[0, 0, :, 3:-3]
    assert float((old - db).mean()) == pytest.approx(10 * np.log10(_full_scale_power(fe.config)), abs=1e-3)
    with pytest.raises(ValueError, match="db_reference must be"):
        LogMel(db_reference="dBFS")


def _numpy_normalised(db: np.ndarray, mode: str) -> np.ndarray:
    """The normalisations written out with numpy: ``db`` (n_mels, frames)."""
    if mode == "clip":
        centred = db - db.mean()
        return centred / max(np.sqrt(np.mean(centred ** 2)), 1e-3)
    centred = db - db.mean(axis=1, keepdims=True)
    if mode == "bin_mean":
        return centred
    return centred / np.maximum(np.sqrt(np.mean(centred ** 2, axis=1, keepdims=True)), 1e-3)


@pytest.mark.parametrize("mode", ["clip", "bin_mean", "bin_mean_var"])
def test_normalised_logmel_matches_the_formula(mode):
    """Each example normalised on its own: the dB log-mel (checked against librosa above) minus its
    mean (per clip, or per mel bin over the frames), divided by the matching standard deviation."""
    x = np.stack([_tone_burst(), 0.05 * np.random.default_rng(1).standard_normal(16000).astype(np.float32)])
    plain = LogMel(LogMelConfig())(torch.from_numpy(x))[:, 0].double().numpy()
    ours = LogMel(LogMelConfig(normalize=mode))(torch.from_numpy(x))[:, 0].double().numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], _numpy_normalised(plain[i], mode), atol=2e-4)


@pytest.mark.parametrize("mode", ["bin_mean", "bin_mean_var"])
def test_bin_normalisation_removes_a_fixed_gain_per_band(mode):
    """A time-invariant filter whose gain is flat within each mel band is an offset per row in dB:
    a per-bin normalised log-mel does not see it (nor the level). Here: a gain of -20 dB and a
    +12 dB step above 4 kHz applied to white noise (rows whose band holds the step are left out)."""
    n = 32000
    x = np.random.default_rng(2).standard_normal(n)
    f = np.fft.rfftfreq(n, 1 / 16000)
    edges = librosa.mel_frequencies(n_mels=42, fmin=20.0, fmax=8000.0, htk=True)
    cut = 4000.0
    gain = np.where(f >= cut, 10 ** (12 / 20), 1.0) * 10 ** (-20 / 20)
    y = np.fft.irfft(np.fft.rfft(x) * gain, n)
    # rows whose triangle (edges[k] .. edges[k + 2]) reaches within 100 Hz of the step see part of it
    far = [k for k in range(40) if edges[k + 2] < cut - 100 or edges[k] > cut + 100]
    assert len(far) == 37
    plain = LogMel(LogMelConfig(n_mels=40))
    # the edge frames see the reflect padding, which a circular filter does not commute with: left out
    a, b = (normalize_logmel(plain(torch.tensor(v[None], dtype=torch.float32))[:, :, :, 3:-3], mode)[0, 0, far]
            for v in (x, y))
    assert plain(torch.tensor(y[None], dtype=torch.float32)).mean() < \
        plain(torch.tensor(x[None], dtype=torch.float32)).mean() - 10  # the gain is there
    torch.testing.assert_close(a, b, atol=0.05 if mode == "bin_mean" else 0.02, rtol=0)


def _librosa_pcen(db: np.ndarray, frame_rate_hz: float) -> np.ndarray:
    """``librosa.pcen`` of the power ``10 ** (db / 10)`` (``(n_mels, frames)``) with the filter
    started in its steady state at the first frame, in float64."""
    from scipy.signal import lfilter_zi

    power = 10.0 ** (db.astype(np.float64) / 10)
    t_frames = 0.4 * frame_rate_hz
    b = (np.sqrt(1 + 4 * t_frames ** 2) - 1) / (2 * t_frames ** 2)
    zi = lfilter_zi([b], [1, b - 1])[None, :] * power[:, :1]
    return librosa.pcen(power, sr=frame_rate_hz, hop_length=1, gain=0.98, bias=2.0, power=0.5, time_constant=0.4,
                        eps=1e-12, zi=zi)


def test_pcen_matches_librosa():
    """``normalize="pcen"``: librosa's PCEN (same constants, steady-state start) of the floored dB
    log-mel, for a tone burst and a noise clip with 3 s of zero padding after it."""
    noise = 0.05 * np.random.default_rng(1).standard_normal(16000)
    x = np.stack([np.pad(_tone_burst(), (0, 48000)), np.pad(noise, (0, 48000))]).astype(np.float32)
    cfg = LogMelConfig()
    plain = LogMel(cfg)(torch.from_numpy(x))[:, 0].double().numpy()
    ours = LogMel(LogMelConfig(normalize="pcen"))(torch.from_numpy(x))[:, 0].double().numpy()
    for i in range(2):
        reference = _librosa_pcen(plain[i], cfg.sample_rate / cfg.hop_length)
        assert reference.max() > 0.5  # the onsets stand out
        np.testing.assert_allclose(ours[i], reference, rtol=1e-4, atol=1e-5)


def test_pcen_under_float16_autocast_is_the_float32_pcen():
    """``evaluate`` runs the model under autocast: PCEN must not compute in float16, where the
    smoothed power of bands below about -72 dB rounds to 0 and ``E / M ** 0.98`` explodes."""
    x = torch.from_numpy((10 ** (-70 / 20) * np.random.default_rng(3).standard_normal((2, 16000))).astype(np.float32))
    front = LogMel(LogMelConfig(normalize="pcen"))
    reference = front(x)
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        under = front(x)
    assert reference.abs().max() < 4
    torch.testing.assert_close(under.float(), reference, rtol=0, atol=1e-5)


def test_pcen_gain_control_leaves_a_level_change_to_the_power_1_minus_gain():
    """PCEN's gain control: scaling the power by ``g`` scales ``E / M ** 0.98`` by ``g ** 0.02`` in
    every cell (the smoother is linear), so 30 dB less level (the dB log-mel 30 lower) changes
    ``E / M ** 0.98`` = ``(PCEN + sqrt 2) ** 2 - 2`` by the factor ``10 ** (-3 * 0.02)`` = 0.871."""
    x = 0.1 * np.random.default_rng(2).standard_normal(24000)
    batch = torch.tensor(np.stack([x, x * 10 ** (-30 / 20)]), dtype=torch.float64)
    loud, quiet = LogMel(LogMelConfig(normalize="pcen", n_mels=40))(batch)[:, 0].double()
    agc = [(v + np.sqrt(2.0)) ** 2 - 2 for v in (loud, quiet)]
    assert agc[0].mean() > 0.5
    torch.testing.assert_close(agc[1] / agc[0], torch.full_like(agc[0], 10 ** (-3 * 0.02)), rtol=1e-3, atol=0)


def test_normalisation_of_a_constant_row_is_zero_not_nan():
    db = torch.full((2, 1, 4, 10), -80.0)
    for mode in ("clip", "bin_mean", "bin_mean_var"):
        out = normalize_logmel(db, mode)
        assert torch.equal(out, torch.zeros_like(out))
    assert torch.isfinite(normalize_logmel(db, "pcen", 100.0)).all()
    with pytest.raises(ValueError, match="pcen' needs frame_rate_hz"):
        normalize_logmel(db, "pcen")
    with pytest.raises(ValueError, match="normalize must be one of"):
        normalize_logmel(db, "per_bin")
    with pytest.raises(ValueError, match="normalize must be one of"):
        LogMel(LogMelConfig(normalize="bins"))
