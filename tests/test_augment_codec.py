"""Codec: each format's real encoder, aligned to the input; measured bitrate, band limit and SNR."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from audioconv.augment import Codec
from audioconv.augment.codec import CODECS, codec_rate
from audioconv.io.audio import codec_round_trip

SR = 16000


def noise(seconds=2.0, seed=0, channels=1):
    return torch.randn(1, channels, int(seconds * SR), generator=torch.Generator().manual_seed(seed)) * 0.1


def through(name: str, x: torch.Tensor, level: float = 0.0, sample_rate: int = SR) -> torch.Tensor:
    aug = Codec(sample_rate, formats=[name], compression_level=(level, level), p=1.0)
    return aug(x, generator=torch.Generator().manual_seed(0))


def lag_of(x: np.ndarray, y: np.ndarray) -> int:
    """The shift of ``y`` against ``x`` that maximises their cross-correlation (samples)."""
    n = 1 << int(np.ceil(np.log2(2 * len(x))))
    c = np.fft.irfft(np.fft.rfft(y, n) * np.conj(np.fft.rfft(x, n)), n)
    k = int(np.argmax(c))
    return k if k < n // 2 else k - n


def band_limit_hz(x: np.ndarray, y: np.ndarray) -> float:
    """Highest frequency where the output's Welch spectrum is within 20 dB of the input's."""
    f, pxx = scipy.signal.welch(x, SR, nperseg=1024)
    _, pyy = scipy.signal.welch(y, SR, nperseg=1024)
    return float(f[np.nonzero(10 * np.log10(pyy / pxx) > -20)[0].max()])


def snr_db(x: np.ndarray, y: np.ndarray, below_hz: float | None = None) -> float:
    if below_hz is not None:  # compare within the codec's band
        sos = scipy.signal.butter(8, below_hz, fs=SR, output="sos")
        x, y = scipy.signal.sosfiltfilt(sos, x), scipy.signal.sosfiltfilt(sos, y)
    return float(10 * np.log10(np.sum(x ** 2) / np.sum((y - x) ** 2)))


@pytest.mark.parametrize("name, levels", [("mulaw", [0.0]), ("alaw", [0.0]), ("gsm", [0.0]),
                                          ("mp3", [0.0, 0.5, 0.9, 0.99]), ("vorbis", [0.0, 0.99]),
                                          ("opus", [0.0, 0.99])])
def test_every_format_comes_back_aligned_and_as_long(name, levels):
    x = noise()
    for level in levels:
        y = through(name, x, level)
        assert y.shape == x.shape
        assert lag_of(x[0, 0].numpy(), y[0, 0].numpy()) == 0, f"{name} at level {level}"


def test_measured_quality_per_format():
    """White noise at -20 dBFS, 16 kHz: what each codec keeps (numbers in docs/augmentations.md)."""
    x = noise()[0, 0].numpy()
    out = {(name, level): through(name, torch.from_numpy(x)[None, None], level)[0, 0].numpy()
           for name, level in [("mulaw", 0.0), ("alaw", 0.0), ("gsm", 0.0), ("mp3", 0.0), ("mp3", 0.99),
                               ("vorbis", 0.0), ("opus", 0.0), ("opus", 0.99)]}
    assert snr_db(x, out["mulaw", 0.0]) > 35 and snr_db(x, out["alaw", 0.0]) > 35  # G.711: ~38 dB
    assert band_limit_hz(x, out["gsm", 0.0]) < 4700  # 8 kHz telephony: the 4 kHz band
    assert band_limit_hz(x, out["mp3", 0.0]) > 7000 and snr_db(x, out["mp3", 0.0], 7000) > 20
    assert band_limit_hz(x, out["mp3", 0.99]) < 4000  # 8 kbit/s: LAME low-passes hard
    assert snr_db(x, out["vorbis", 0.0]) > 15
    assert band_limit_hz(x, out["opus", 0.0]) > 7500 and snr_db(x, out["opus", 0.0]) > 20
    assert band_limit_hz(x, out["opus", 0.99]) < 5000


@pytest.mark.parametrize("name", ["mp3", "vorbis", "opus"])
def test_compression_level_lowers_the_bitrate(name):
    spec = CODECS[name]
    x = noise()[0]
    sizes = [codec_round_trip(x, SR, spec.file_format, spec.subtype, level, spec.bitrate_mode)[1]
             for level in (0.0, 0.5, 0.99)]
    assert sizes[0] > sizes[1] > sizes[2]


@pytest.mark.parametrize("name, subtype", [("mulaw", "ulaw"), ("alaw", "alaw")])
def test_g711_samples_lie_on_the_g711_levels(name, subtype):
    """Every output sample is one of the 256 levels of Python's own G.711 codec (audioop), the one
    nearest the input or its neighbour (G.711 encodes by truncating to 13/14 bits, libsndfile
    converts float to 16 bits its own way first)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    decode = getattr(audioop, f"{subtype}2lin")
    levels = np.unique(np.frombuffer(decode(bytes(range(256)), 2), dtype=np.int16) / 32768.0)
    x = noise(0.5)
    y = through(name, x)[0, 0].numpy().astype(np.float64)
    position = np.searchsorted(levels, y)
    assert np.array_equal(levels[position.clip(max=len(levels) - 1)], y)
    nearest = np.abs(levels[None, :] - x[0, 0].numpy().astype(np.float64)[:, None]).argmin(1)
    assert np.abs(position - nearest).max() <= 1 and np.mean(position == nearest) > 0.8


def test_rates_the_codec_does_not_take_are_resampled_there_and_back():
    assert codec_rate("opus", 44100) == 48000 and codec_rate("gsm", 16000) == 8000
    assert codec_rate("mp3", 16000) == 16000 and codec_rate("mp3", 20000) == 22050
    assert codec_rate("vorbis", 44100) == 44100
    sr = 44100
    white = np.random.default_rng(0).standard_normal(sr)
    sos = scipy.signal.butter(8, 3000, fs=sr, output="sos")  # within GSM's band
    speechband = torch.from_numpy((0.1 * scipy.signal.sosfilt(sos, white)).astype(np.float32))[None, None]
    for name in ("opus", "gsm"):
        y = through(name, speechband, 0.3, sample_rate=sr)[0, 0].numpy()
        assert lag_of(speechband[0, 0].numpy(), y) == 0


def test_only_real_samples_are_encoded_and_padding_stays():
    x = noise(1.0, channels=2).repeat(3, 1, 1)
    x[1, :, 9000:] = 0.25
    lengths = torch.tensor([16000, 9000, 0])
    aug = Codec(SR, formats=["mp3", "gsm", "vorbis"], p=1.0)
    params = aug.sample(3, generator=torch.Generator().manual_seed(1))
    y = aug.apply(x, params, lengths)
    assert torch.equal(y[1, :, 9000:], x[1, :, 9000:]) and torch.equal(y[2], x[2])
    assert lag_of(x[1, 1, :9000].numpy(), y[1, 1, :9000].numpy()) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_batch_goes_to_the_cpu_and_back():
    x = noise(0.5).repeat(4, 1, 1)
    aug = Codec(SR, formats=["mulaw", "mp3"], p=0.7)
    params = aug.sample(4, generator=torch.Generator().manual_seed(0))
    y = aug.apply(x.cuda(), params)
    assert y.device.type == "cuda"
    torch.testing.assert_close(y.cpu(), aug.apply(x, params))


@pytest.mark.parametrize("kwargs, word", [
    ({"formats": ["mp3", "aac"]}, "aac"),
    ({"formats": "mp3"}, "formats"),
    ({"formats": []}, "formats"),
    ({"compression_level": (0.5, 1.5)}, "compression_level"),
])
def test_bad_arguments_name_the_parameter(kwargs, word):
    with pytest.raises(ValueError, match=word):
        Codec(SR, **kwargs)


@pytest.mark.parametrize("name", ["mulaw", "alaw", "gsm", "vorbis"])
def test_samples_beyond_full_scale_clip_as_in_a_file(name):
    """A 200 Hz tone peaking at 1.2 comes back as the tone clipped at ±1 (libsndfile alone wraps
    such samples round, flipping their sign), and far louder input does not crash the encoder."""
    t = torch.arange(SR) / SR
    loud = (1.2 * torch.sin(2 * torch.pi * 200 * t))[None, None]
    y = through(name, loud)[0, 0].numpy()
    clipped = loud.clamp(-1, 1)[0, 0].numpy()
    assert np.abs(y).max() < 1.1
    assert snr_db(clipped, y, below_hz=3000) > 15
    assert np.isfinite(through(name, torch.full((1, 1, 1600), 40.0)).numpy()).all()


def test_the_docstring_states_the_vorbis_bitrates_libsndfile_gives():
    """1 s of white noise at 16 kHz, levels 0 / 0.5 / 1: the kbit/s the encoded size gives are the
    docstring's (it said ~63 down to ~47, which is neither the 1-s nor the long-clip rate)."""
    text = " ".join(Codec.__doc__.split())
    stated = re.search(r"Vorbis (\d+) kbit/s at level 0, (\d+) at 0\.5, (\d+) at 1", text)
    assert stated, "the Codec docstring states no Vorbis bitrates"
    for level, kbit in zip((0.0, 0.5, 1.0), map(int, stated.groups())):
        size = codec_round_trip(noise(1.0)[0], SR, "OGG", "VORBIS", level)[1]
        assert size * 8 / 1000 == pytest.approx(kbit, rel=0.1), f"level {level}"


@pytest.mark.parametrize("name, subtype", [("mulaw", "ULAW"), ("alaw", "ALAW")])
def test_g711_on_the_device_equals_libsndfile(name, subtype):
    """Mu-law and A-law are companded as tensors (no file): every sample equals libsndfile's round
    trip, over the whole range, tiny values, both zeros, full scale and beyond it."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1.3, 1.3, 60000), rng.uniform(-0.01, 0.01, 40000),
                        np.linspace(-1, 1, 65537), [0.0, -0.0, 1.0, -1.0, 1e-9, -1e-9]]).astype(np.float32)
    x = torch.from_numpy(x)[None, None]
    reference = codec_round_trip(x[0], SR, "WAV", subtype)[0]
    assert torch.equal(through(name, x)[0], reference)


def test_g711_examples_mixed_with_file_codecs_and_padding():
    """A batch drawing mu-law, A-law and GSM: each example equals its own codec's round trip,
    padding (lengths) is kept, and an example holding NaN passes as it was."""
    x = noise(0.5).repeat(4, 1, 1)
    x[2, :, 3000:] = 0.25
    x[3, 0, 10] = float("nan")
    aug = Codec(SR, formats=["mulaw", "alaw", "gsm"], p=1.0)
    params = {"apply": torch.ones(4, dtype=torch.bool), "format_index": torch.tensor([0, 2, 1, 1]),
              "compression_level": torch.zeros(4)}
    lengths = torch.tensor([8000, 8000, 3000, 8000])
    y = aug.apply(x, params, lengths)
    assert torch.equal(y[0], codec_round_trip(x[0], SR, "WAV", "ULAW")[0])
    assert torch.equal(y[1], through("gsm", x[1:2])[0])
    assert torch.equal(y[2, :, :3000], codec_round_trip(x[2, :, :3000], SR, "WAV", "ALAW")[0])
    assert torch.equal(y[2, :, 3000:], x[2, :, 3000:])
    torch.testing.assert_close(y[3], x[3], rtol=0, atol=0, equal_nan=True)


def test_codec_round_trip_refuses_nan_in_one_line():
    """A NaN sample given straight to codec_round_trip is a ValueError naming the codec (libsndfile
    indexed its mu-law table with it and the process died); Codec itself passes such examples through."""
    x = noise(0.1)[0]
    x[0, 5] = float("nan")
    for subtype in ("ULAW", "ALAW", "GSM610"):
        with pytest.raises(ValueError, match=f"WAV/{subtype}: the waveform holds NaN samples"):
            codec_round_trip(x, 8000, "WAV", subtype)
