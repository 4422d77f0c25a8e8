"""PolarityInversion: exact negation, invisible to a magnitude (log-mel) front end."""
from __future__ import annotations

import torch
import torchaudio

from audioconv.augment import PolarityInversion


def test_exact_negation_of_the_selected_examples():
    x = torch.randn(64, 2, 300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    aug = PolarityInversion(p=0.5)
    params = aug.sample(64, generator=torch.Generator().manual_seed(1))
    y = aug.apply(x, params)
    flipped = params["apply"]
    assert 0 < flipped.sum() < 64
    assert torch.equal(y[flipped], -x[flipped]) and torch.equal(y[~flipped], x[~flipped])
    assert torch.equal(PolarityInversion(p=1.0)(x[0, 0]), -x[0, 0])  # (time,) too


def test_a_log_mel_front_end_cannot_see_it():
    """|STFT(-x)| = |-STFT(x)| = |STFT(x)|: the log-mel features are bit-for-bit the same, while
    the waveforms are as different as can be (they sum to zero)."""
    sr = 16000
    x = torch.randn(8, 1, sr, generator=torch.Generator().manual_seed(2)) * 0.1
    y = PolarityInversion(p=1.0)(x)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=sr, n_fft=512, hop_length=160, n_mels=64)
    log_mel = lambda w: torch.log(mel(w) + 1e-6)  # noqa: E731
    assert torch.equal(log_mel(y), log_mel(x))
    assert torch.equal(x + y, torch.zeros_like(x))
    assert (x - y).abs().max() > 0.3
