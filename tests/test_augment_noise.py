"""AddNoise: SNR over real samples, colours by spectral slope, recorded backgrounds."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

from audioconv.augment import AddNoise


def snr_db(clean: torch.Tensor, noisy: torch.Tensor, n: int | None = None) -> torch.Tensor:
    """10 log10(signal power / added-noise power) per example, over the first ``n`` samples."""
    clean, noise = clean[..., :n], (noisy - clean)[..., :n]
    return 10 * torch.log10(clean.double().square().mean((1, 2)) / noise.double().square().mean((1, 2)))


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_measured_snr_equals_drawn_within_0_1_db(color):
    g = torch.Generator().manual_seed(0)
    levels = 10 ** (torch.rand(32, 1, 1, generator=g) * 4 - 3)  # signals from -60 to -20 dB
    x = torch.randn(32, 2, 8000, generator=g) * levels * torch.linspace(0, 2, 8000)  # non-stationary
    aug = AddNoise(snr_db=(-5, 40), color=color, p=1.0)
    params = aug.sample(32, generator=g)
    y = aug.apply(x, params)
    assert (snr_db(x, y) - params["snr_db"].double()).abs().max() < 0.1


def test_snr_over_real_samples_of_a_padded_batch():
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([8000, 6000, 1500, 0])
    x = torch.randn(4, 1, 8000, generator=g) * 0.2
    for i, n in enumerate(lengths.tolist()):
        x[i, :, n:] = 0
    aug = AddNoise(snr_db=(0, 30), p=1.0)
    params = aug.sample(4, generator=g)
    y = aug.apply(x, params, lengths=lengths)
    for i, n in enumerate(lengths.tolist()[:3]):
        assert abs(snr_db(x[i:i + 1], y[i:i + 1], n).item() - params["snr_db"][i].item()) < 0.1
        assert (y[i, :, n:] == 0).all()  # padding gets no noise
    assert torch.equal(y[3], x[3])  # nothing real: nothing added, no NaN


@pytest.mark.parametrize("background", [False, True])
def test_silent_clip_stays_finite(background):
    kwargs = {"background": torch.randn(3000)} if background else {}
    aug = AddNoise(snr_db=(-20, 20), p=1.0, **kwargs)
    x = torch.zeros(3, 2, 4000)
    x[1] = 1e-30  # tiny but not zero: noise at the SNR, still finite
    y = aug(x, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all()
    assert torch.equal(y[0], x[0]) and torch.equal(y[2], x[2])


@pytest.mark.parametrize("color, slope", [("white", 0.0), ("pink", -3.01), ("brown", -6.02), (-4.5, -4.5)])
def test_colour_is_a_spectral_slope_in_db_per_octave(color, slope):
    sr = 16000
    aug = AddNoise(color=color, p=1.0)
    params = aug.sample(8, generator=torch.Generator().manual_seed(2))
    noise = aug.noise_for(params, channels=1, time=2 ** 16).double().numpy()[:, 0]
    freqs, psd = scipy.signal.welch(noise, fs=sr, nperseg=4096, axis=-1)
    band = (freqs >= 100) & (freqs <= 6400)
    fitted = np.polyfit(np.log2(freqs[band]), 10 * np.log10(psd.mean(0)[band]), 1)[0]
    assert abs(fitted - slope) < 0.25


def test_channels_get_different_noise_and_examples_different_windows():
    aug = AddNoise(p=1.0)
    params = aug.sample(3, generator=torch.Generator().manual_seed(3))
    noise = aug.noise_for(params, channels=2, time=4000)
    corr = torch.corrcoef(noise.reshape(6, -1))
    assert (corr - torch.eye(6)).abs().max() < 0.1


def _write_background(folder, sr):
    t = np.arange(sr) / sr
    hum = (0.3 * np.sin(2 * np.pi * 100 * t)).astype(np.float32)  # 1 s of 100 Hz hum
    hiss = np.random.default_rng(0).standard_normal(sr // 4).astype(np.float32) * 0.05  # 0.25 s
    (folder / "noise").mkdir()
    sf.write(folder / "noise" / "hum.wav", hum, sr, subtype="FLOAT")
    sf.write(folder / "noise" / "hiss.wav", np.stack([hiss, hiss], 1), sr, subtype="FLOAT")
    return hum, hiss


def test_background_from_manifest_relative_paths(tmp_path):
    sr = 8000
    hum, hiss = _write_background(tmp_path, sr)
    manifest = tmp_path / "noise.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "noise/hum.wav", "label": "hum"}) + "\n\n"
                        + json.dumps({"audio_filepath": "noise/hiss.wav"}) + "\n")
    aug = AddNoise(snr_db=(10, 10), background=manifest, sample_rate=sr, p=1.0)
    x = torch.randn(16, 1, 3 * sr, generator=torch.Generator().manual_seed(0)) * 0.1
    params = aug.sample(16, generator=torch.Generator().manual_seed(0))
    y = aug.apply(x, params)
    assert (snr_db(x, y) - 10).abs().max() < 0.1
    for i, k in enumerate(params["noise_index"].tolist()):
        added = (y[i, 0] - x[i, 0]).numpy()
        clip = hum if k == 0 else hiss
        start = int(params["noise_pos"][i].double() * len(clip))
        expected = np.resize(np.roll(clip, -start), added.shape)  # a random crop, tiled when short
        np.testing.assert_allclose(added / np.abs(added).max(), expected / np.abs(expected).max(), atol=1e-4)


def test_background_from_folder_list_and_tensors(tmp_path):
    sr = 8000
    _write_background(tmp_path, sr)
    x = torch.randn(4, 1, sr) * 0.1
    for source in (tmp_path / "noise", sorted((tmp_path / "noise").iterdir()), [torch.randn(500), torch.randn(900)]):
        aug = AddNoise(background=source, sample_rate=sr, p=1.0)
        assert len(aug._bank) == 2
        y = aug(x, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(y).all() and not torch.equal(y, x)


def test_background_folder_skips_hidden_files_and_takes_every_audio_ending(tmp_path):
    """A folder copied from macOS holds ``._hum.wav`` resource forks (not audio) and may hold hidden
    folders; Opus files are audio. The bank takes exactly the files ``manifest folder`` would."""
    sr = 8000
    _write_background(tmp_path, sr)
    folder = tmp_path / "noise"
    (folder / "._hum.wav").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    (folder / ".Trash").mkdir()
    sf.write(folder / ".Trash" / "old.wav", np.ones(100, np.float32) * 0.1, sr)
    rain = np.random.default_rng(1).standard_normal(48000).astype(np.float32) * 0.05
    sf.write(folder / "rain.opus", rain, 48000, format="OGG", subtype="OPUS")
    aug = AddNoise(background=folder, sample_rate=sr, p=1.0)
    assert sorted(clip.path.name for clip in aug._bank.items) == ["hiss.wav", "hum.wav", "rain.opus"]
    y = aug(torch.randn(4, 1, sr) * 0.1, generator=torch.Generator().manual_seed(0))  # decodes the bank
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("make, error, word", [
    (lambda d: AddNoise(snr_db=(30, 0)), ValueError, "snr_db"),
    (lambda d: AddNoise(snr_db=(0, math.inf)), ValueError, "snr_db"),
    (lambda d: AddNoise(color="purple"), ValueError, "color"),
    (lambda d: AddNoise(p=-0.1), ValueError, "p "),
    (lambda d: AddNoise(background=d / "missing.wav", sample_rate=8000), FileNotFoundError, "missing.wav"),
    (lambda d: AddNoise(background=d / "noise"), ValueError, "sample_rate"),
    (lambda d: AddNoise(background=d / "bad.jsonl", sample_rate=8000), ValueError, r"bad.jsonl:2"),
    (lambda d: AddNoise(background=d / "empty", sample_rate=8000), ValueError, "no audio files"),
    (lambda d: AddNoise(background=np.ones(800, np.float32)), ValueError, r"numpy array \(pass torch.from_numpy"),
    (lambda d: AddNoise(background=[np.ones(800, np.float32)]), ValueError, r"numpy array \(pass torch.from_numpy"),
])
def test_bad_parameters_raise_naming_them(tmp_path, make, error, word):
    _write_background(tmp_path, 8000)
    (tmp_path / "bad.jsonl").write_text('{"audio_filepath": "noise/hum.wav"}\n{"path": "x.wav"}\n')
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=word):
        make(tmp_path)
