"""PitchShift and TimeStretch: measured fundamentals and durations of harmonic tone bursts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audioconv.augment import AddNoise, Compose, Gain, PitchShift, TimeStretch
from audioconv.augment.vocoder import stft_size

F0_HZ = 220.0


def harmonic_tone(sample_rate: int, seconds: float, f0: float = F0_HZ, on_s: float = 0.0,
                  off_s: float | None = None) -> np.ndarray:
    """Five harmonics with amplitudes 1/h (the fundamental is the strongest), gated to [on_s, off_s)."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = sum(np.sin(2 * np.pi * f0 * h * t + h) / h for h in range(1, 6)) * 0.2
    gate = (t >= on_s) & (t < (seconds if off_s is None else off_s))
    return (tone * gate).astype(np.float32)


def fundamental_hz(y: np.ndarray, sample_rate: int) -> float:
    """The strongest spectral peak below 1 kHz of a Hann-windowed stretch (zero-padded to 2^20
    points), refined by a parabola through the log magnitudes around it."""
    n = 1 << 20
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), n))
    k = int(np.argmax(spectrum[: int(1000 * n / sample_rate)]))
    a, b, c = np.log(spectrum[k - 1: k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n


def burst_edges_s(y: np.ndarray, sample_rate: int) -> tuple[float, float]:
    """Where the short-time energy (10 ms frames) first and last exceeds half its median over the
    loud frames: onset and offset of a tone burst, in seconds."""
    frame = sample_rate // 100
    energy = np.convolve(y.astype(np.float64) ** 2, np.ones(frame) / frame, "same")
    level = 0.5 * np.median(energy[energy > 0.1 * energy.max()])
    above = np.nonzero(energy > level)[0]
    return above[0] / sample_rate, above[-1] / sample_rate


@pytest.mark.parametrize("sample_rate", [8000, 16000, 44100])
def test_pitch_shift_moves_the_fundamental_by_the_drawn_ratio_per_example(sample_rate):
    x = torch.from_numpy(harmonic_tone(sample_rate, 1.0)).repeat(8, 1, 1)
    aug = PitchShift(sample_rate, semitones=(-4, 4), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(sample_rate))
    assert torch.unique(params["semitones"]).numel() == 8  # one shift per example, in one batch
    y = aug.apply(x, params).numpy()
    middle = slice(sample_rate // 4, 3 * sample_rate // 4)
    for i, semitones in enumerate(params["semitones"].tolist()):
        expected = F0_HZ * 2 ** (semitones / 12)
        assert fundamental_hz(y[i, 0, middle], sample_rate) == pytest.approx(expected, rel=0.01)
        level_db = 20 * np.log10(y[i, 0, middle].std() / x[i, 0, middle].numpy().std())
        assert abs(level_db) < 1.0, f"example {i}: level changed by {level_db:.2f} dB"


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_pitch_shift_keeps_the_duration(sample_rate):
    x = torch.from_numpy(harmonic_tone(sample_rate, 1.5, on_s=0.3, off_s=1.1)).repeat(6, 2, 1)
    aug = PitchShift(sample_rate, semitones=(-4, 4), p=1.0)
    y = aug(x, generator=torch.Generator().manual_seed(1)).numpy()
    assert y.shape == x.shape
    hop_s = stft_size(sample_rate)[1] / sample_rate
    for i in range(6):
        onset, offset = burst_edges_s(y[i, 1], sample_rate)
        assert onset == pytest.approx(0.3, abs=hop_s) and offset == pytest.approx(1.1, abs=hop_s)


@pytest.mark.parametrize("sample_rate", [8000, 16000])
def test_time_stretch_scales_the_duration_and_keeps_the_pitch(sample_rate):
    x = torch.from_numpy(harmonic_tone(sample_rate, 2.0, on_s=0.25, off_s=1.25)).repeat(8, 1, 1)
    aug = TimeStretch(sample_rate, rate=(0.8, 1.25), p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(2))
    assert torch.unique(params["rate"]).numel() == 8
    y = aug.apply(x, params).numpy()
    hop_s = stft_size(sample_rate)[1] / sample_rate
    for i, rate in enumerate(params["rate"].tolist()):
        onset, offset = burst_edges_s(y[i, 0], sample_rate)
        assert offset - onset == pytest.approx(1.0 / rate, abs=hop_s), f"rate {rate:.3f}"
        assert onset == pytest.approx(0.25 / rate, abs=hop_s)
        steady = y[i, 0, int(0.35 / rate * sample_rate): int(1.15 / rate * sample_rate)]
        assert fundamental_hz(steady, sample_rate) == pytest.approx(F0_HZ, rel=0.01)


def test_time_stretch_crops_or_pads_to_the_real_length_and_reports_the_new_lengths():
    sr = 8000
    x = torch.from_numpy(harmonic_tone(sr, 1.0)).repeat(4, 2, 1)
    lengths = torch.tensor([8000, 6000, 8000, 3000])
    x[1, :, 6000:] = 0.5  # padding with something in it: it must stay as it was
    x[3, :, 3000:] = 0.0
    aug = TimeStretch(sr, rate=(0.8, 1.25), p=1.0)
    params = aug.sample(4, generator=torch.Generator().manual_seed(0))
    params["rate"] = torch.tensor([1.25, 0.8, 0.8, 1.25])
    params["apply"] = torch.tensor([True, True, False, True])
    y = aug.apply(x, params, lengths)
    new = aug.output_lengths(params, lengths, 8000)
    assert new.tolist() == [6400, 6000, 8000, 2400]  # min(L, round(L / rate)); example 2 not applied
    assert torch.equal(y[1, :, 6000:], x[1, :, 6000:]) and torch.equal(y[2], x[2])
    assert (y[0, :, 6400:] == 0).all() and (y[3, :, 2400:] == 0).all()
    assert y[0, :, 6000:6400].abs().max() > 0.05 and y[1, :, 5000:6000].abs().max() > 0.05
    assert aug.output_lengths(params, None, 8000).tolist() == [6400, 8000, 8000, 6400]


def test_a_chain_hands_the_new_lengths_to_its_later_steps():
    sr = 8000
    x = torch.from_numpy(harmonic_tone(sr, 1.0)).repeat(3, 1, 1)
    chain = Compose([Gain(gain_db=0.0, p=1.0), TimeStretch(sr, rate=(1.25, 1.25), p=1.0),
                     AddNoise(snr_db=(10, 10), p=1.0)])
    params = chain.sample(3, generator=torch.Generator().manual_seed(0))
    y = chain.apply(x, params)
    assert (y[:, :, 6400:] == 0).all()  # no noise on the silence the stretch left
    assert chain.output_lengths(params, None, 8000).tolist() == [6400] * 3
    noise = y[:, :, :6400] - TimeStretch(sr, rate=(1.25, 1.25), p=1.0).apply(x, params["1.TimeStretch"])[:, :, :6400]
    snr = 10 * torch.log10(y[:, :, :6400].square().mean() / noise.square().mean())
    assert abs(float(snr) - 10) < 0.5


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="semitones"):
        PitchShift(16000, semitones=(-30, 4))
    with pytest.raises(ValueError, match="rate"):
        TimeStretch(16000, rate=(0.0, 1.2))
    with pytest.raises(ValueError, match="sample_rate"):
        PitchShift(0)


@pytest.mark.parametrize("time", [16000, 16001, 1000])
def test_stft_and_istft_match_torch_frames_first(time):
    from audioconv.augment.vocoder import istft, stft

    n_fft, hop = stft_size(16000)
    x = torch.randn(3, time, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    window = torch.hann_window(n_fft, dtype=torch.float64)
    want = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="constant", return_complex=True)
    spectrum = stft(x, n_fft, hop)
    torch.testing.assert_close(spectrum, want.transpose(1, 2), atol=1e-10, rtol=0)
    spectrum = spectrum * torch.rand(spectrum.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.istft(spectrum.transpose(1, 2), n_fft, hop, window=window, center=True, length=time)
    torch.testing.assert_close(istft(spectrum, n_fft, hop, time), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("aug", [TimeStretch(16000, rate=(0.8, 1.25), p=1.0), PitchShift(16000, p=1.0)],
                         ids=["stretch", "shift"])
def test_gradients_through_a_clip_with_silence_are_finite_and_match_finite_differences(aug):
    """Clips with digital silence (noise from 0.25 s on, one clip padded from 0.4 s on): the silent
    frames' bins sit at the origin, where hypot and atan2 have no derivative; they pass a zero
    gradient instead of NaN, and the gradient of the sound matches central differences. (Noise,
    not a tone: a tone's near-empty bins have phases too touchy for finite differences.)"""
    x = 0.1 * torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[..., :4000] = 0
    lengths = torch.tensor([8000, 6400])
    params = aug.sample(2, generator=torch.Generator().manual_seed(3))
    weights = torch.randn(2, 1, 8000, generator=torch.Generator().manual_seed(4), dtype=torch.float64)

    def loss(signal):
        return (aug.apply(signal, params, lengths) * weights).sum()

    leaf = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(loss(leaf), leaf)
    assert torch.isfinite(grad).all()
    for row, sample in [(0, 5000), (0, 7000), (1, 5500)]:  # well inside the sound
        step = torch.zeros_like(x)
        step[row, 0, sample] = 1e-6
        numeric = (loss(x + step) - loss(x - step)) / 2e-6
        assert float(grad[row, 0, sample]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-6)
