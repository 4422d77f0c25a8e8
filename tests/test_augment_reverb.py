"""Reverb: RT60 by Schroeder integration, direct-path alignment, level, recorded RIR banks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import torch

import audioconv.io.audio
from audioconv.augment import Reverb, synthetic_rir


def schroeder_rt60_s(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 from the T30 slope (-5 to -35 dB) of the Schroeder backward-integrated energy curve."""
    edc = np.cumsum(rir[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -35)
    t = np.arange(len(rir))[fit] / sample_rate
    slope_db_per_s = np.polyfit(t, edc_db[fit], 1)[0]
    return -60.0 / slope_db_per_s


@pytest.mark.parametrize("rt60", [0.2, 0.35, 0.5, 0.8, 1.0, 1.5])
@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_synthetic_rir_rt60_by_schroeder_within_10_percent(rt60, sample_rate):
    g = torch.Generator().manual_seed(int(rt60 * 100))
    rirs = synthetic_rir(torch.full((4,), rt60), sample_rate, generator=g, length_s=1.5 * rt60)
    for rir in rirs.double().numpy():
        assert abs(schroeder_rt60_s(rir, sample_rate) / rt60 - 1) < 0.10


def test_synthetic_rir_direct_to_reverberant_ratio():
    rir = synthetic_rir(torch.tensor([0.3, 0.6, 0.9]), 16000, drr_db=torch.tensor([-3.0, 4.0, 10.0]),
                        generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    drr = 10 * torch.log10(rir[:, 0] ** 2 / rir[:, 1:].square().sum(-1))
    torch.testing.assert_close(drr, torch.tensor([-3.0, 4.0, 10.0], dtype=torch.float64))
    assert rir.abs().amax(-1).allclose(torch.ones(3, dtype=torch.float64))
    one = synthetic_rir(0.5, 16000, generator=torch.Generator().manual_seed(0))
    assert one.shape == (8000,) and one.dtype == torch.float32


@pytest.mark.parametrize("drr", [(0.0, 12.0), (-6.0, -3.0), None])
def test_impulse_stays_where_it_was(drr):
    """Output aligned to the RIR's direct path (its first tap of at least half the largest
    magnitude): an impulse at t0 starts at t0 exactly; with a direct path (any DRR) it peaks there
    and nothing comes before it."""
    sr, t0 = 16000, 3000
    aug = Reverb(sr, rt60_s=(0.2, 0.8), drr_db=drr, p=1.0)
    x = torch.zeros(16, 1, 12000)
    x[:, :, t0] = 1.0
    y = aug(x, generator=torch.Generator().manual_seed(0))[:, 0].abs()
    onset = (y >= 0.5 * y.amax(-1, keepdim=True)).to(torch.uint8).argmax(-1)
    assert (onset == t0).all()
    if drr is not None:
        assert (y.argmax(-1) == t0).all() and (y[:, :t0] < 1e-6 * y.amax(-1, keepdim=True)).all()


def test_level_length_and_scipy_convolution():
    sr = 16000
    aug = Reverb(sr, rt60_s=(0.2, 0.6), p=1.0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 2, 9000, generator=g, dtype=torch.float64) * torch.tensor([0.01, 0.1, 1, 3, 0.3],
                                                                              dtype=torch.float64)[:, None, None]
    params = aug.sample(5, generator=g)
    y = aug.apply(x, params)
    assert y.shape == x.shape
    rms = lambda v: v.square().mean((1, 2)).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(y), rms(x))
    rirs = aug.rirs_for(params, torch.float64).numpy()
    for i in range(5):
        peak = int(np.abs(rirs[i]).argmax())
        full = scipy.signal.fftconvolve(x[i].numpy(), rirs[i][None, :], axes=-1)
        ref = full[:, peak: peak + x.shape[-1]]
        ref *= np.sqrt(np.mean(x[i].numpy() ** 2) / np.mean(ref ** 2))
        np.testing.assert_allclose(y[i].numpy(), ref, atol=1e-9)


def test_silent_input_stays_silent_and_finite():
    aug = Reverb(16000, p=1.0)
    y = aug(torch.zeros(3, 1, 5000), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, torch.zeros_like(y))


def test_padded_batch_keeps_padding_and_matches_rms_on_real_samples():
    aug = Reverb(16000, p=1.0)
    x = torch.randn(3, 1, 8000, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([8000, 5000, 2000])
    x[1, :, 5000:] = 0
    x[2, :, 2000:] = 0
    y = aug(x, generator=torch.Generator().manual_seed(1), lengths=lengths)
    for i, n in enumerate(lengths.tolist()):
        assert (y[i, :, n:] == 0).all()
        torch.testing.assert_close(y[i, :, :n].square().mean(), x[i, :, :n].square().mean())


def _write_rirs(folder, sr):
    """Two recorded-style RIRs: one with a 40-sample pre-delay (sound travel), one with 0."""
    g = torch.Generator().manual_seed(5)
    a = synthetic_rir(0.3, sr, drr_db=3.0, generator=g).numpy()
    b = np.concatenate([np.zeros(40, np.float32), 0.5 * synthetic_rir(0.6, sr, drr_db=8.0, generator=g).numpy()])
    paths = [folder / "a.wav", folder / "sub" / "b.flac"]
    paths[1].parent.mkdir()
    sf.write(paths[0], a, sr, subtype="FLOAT")
    sf.write(paths[1], b, sr, subtype="PCM_24")
    return paths, [a, b]


def test_recorded_rirs_from_files_folder_and_manifest(tmp_path, monkeypatch):
    sr = 16000
    paths, rirs = _write_rirs(tmp_path, sr)
    calls = []
    real_load = audioconv.io.audio.load
    monkeypatch.setattr(audioconv.io.audio, "load", lambda *a, **k: calls.append(a[0]) or real_load(*a, **k))
    manifest = tmp_path / "rirs.jsonl"
    manifest.write_text("\n".join(json.dumps({"audio_filepath": str(p.relative_to(tmp_path))}) for p in paths) + "\n")
    x = torch.zeros(8, 1, 6000)
    x[:, :, 1000] = 1.0
    for source in (paths, tmp_path, manifest):
        calls.clear()
        aug = Reverb(sr, rirs=source, p=1.0)
        for seed in range(3):  # decoded once, however many batches
            params = aug.sample(8, generator=torch.Generator().manual_seed(seed))
            y = aug.apply(x, params)
        assert sorted(map(str, calls)) == sorted(map(str, paths))
        assert (y[:, 0].abs().argmax(-1) == 1000).all()
        for i, k in enumerate(params["rir_index"].tolist()):  # the chosen RIR, from its peak on
            seg = y[i, 0, 1000:1000 + 200].numpy()
            ref = rirs[k][np.abs(rirs[k]).argmax():][:200]
            np.testing.assert_allclose(seg / seg[0], ref / ref[0], atol=2e-4)


def test_recorded_rirs_from_tensors_are_resampled_only_when_files(tmp_path):
    paths, _ = _write_rirs(tmp_path, 8000)
    aug = Reverb(16000, rirs=[paths[0]], p=1.0)
    bank = aug._bank.signal("cpu")
    assert abs(bank.shape[0] - 2 * sf.info(paths[0]).frames) <= 2  # resampled 8 -> 16 kHz
    tensors = Reverb(16000, rirs=torch.randn(3, 500), p=1.0)
    assert tensors._bank.signal("cpu").shape == (1500,)


@pytest.mark.parametrize("kwargs, error, word", [
    (dict(rt60_s=(-0.2, 0.5)), ValueError, "rt60_s"),
    (dict(rt60_s=(0.8, 0.2)), ValueError, "rt60_s"),
    (dict(rt60_s=0.0), ValueError, "rt60_s"),
    (dict(drr_db=(10, 0)), ValueError, "drr_db"),
    (dict(rirs=[]), ValueError, "rirs"),
    (dict(rirs=torch.zeros(2, 3, 4)), ValueError, "rirs"),
    (dict(rirs=["/nonexistent/rir.wav"]), FileNotFoundError, "rir.wav"),
])
def test_bad_parameters_raise_naming_them(kwargs, error, word):
    with pytest.raises(error, match=word):
        Reverb(16000, **kwargs)


def test_silent_or_bad_recorded_rir_raises_on_load():
    aug = Reverb(16000, rirs=[torch.zeros(100)], p=1.0)
    with pytest.raises(ValueError, match="silent"):
        aug(torch.ones(1, 1, 200))
    with pytest.raises(ValueError, match="rt60_s"):
        synthetic_rir(-1.0, 16000)
