"""audioconv.data.dataset against numbers from outside: soundfile's own decoding, scipy's periodogram,
the channel mean, sample indices written into the files, chi-square for the sampler."""
from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy import signal, stats
from torch.utils.data import DataLoader

from audioconv.io import audio
from audioconv.data.dataset import (
    ClassBalancedSampler,
    ClipError,
    ManifestDataset,
    SkippedClipWarning,
    collate,
    load_labels,
    save_labels,
)
from audioconv.io.manifest import write_manifest

TARGET_SR = 16000


def sine(sr: int, seconds: float, freq_hz: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    return np.stack([(0.5 - 0.05 * c) * np.sin(2 * np.pi * freq_hz * t + c) for c in range(channels)], 1).astype(np.float32)


def ramp_file(path: Path, seconds: float, sr: int = TARGET_SR) -> Path:
    """16-bit WAV whose sample k holds k / 32768 exactly: a decoded value tells where it came from."""
    n = int(round(sr * seconds))
    assert n < 32768
    sf.write(path, (np.arange(n) / 32768.0).astype(np.float32), sr, subtype="PCM_16")
    return path


def sample_index(w: torch.Tensor) -> np.ndarray:
    return np.round(w.numpy() * 32768).astype(int)


def rec(path, label="a", **kw) -> dict:
    return {"audio_filepath": str(path), "label": label, **kw}


# ----------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    "sr, subtype, suffix, channels",
    [(8000, "PCM_U8", ".wav", 1), (16000, "PCM_16", ".wav", 2), (44100, "PCM_24", ".wav", 6),
     (48000, "FLOAT", ".wav", 1), (44100, "PCM_16", ".flac", 2), (48000, "PCM_24", ".flac", 6), (8000, "PCM_S8", ".flac", 1)],
)
def test_resampled_sine_keeps_its_frequency_and_level(tmp_path, sr, subtype, suffix, channels):
    path = tmp_path / f"tone{suffix}"
    sf.write(path, sine(sr, 1.5, 1000.0, channels), sr, subtype=subtype)
    ds = ManifestDataset([rec(path)], TARGET_SR, 1.0, crop="center")
    w, label, length = ds[0]
    assert length == TARGET_SR and w.dtype == torch.float32 and w.shape == (1, TARGET_SR) and label == 0
    f, pxx = signal.periodogram(w[0].numpy(), fs=TARGET_SR, window="hann")
    assert f[np.argmax(pxx)] == pytest.approx(1000.0, abs=TARGET_SR / len(w[0]))
    # level: the mono mix of the channels' sines (amplitude of a sum of phase-shifted sines)
    phasor = sum((0.5 - 0.05 * c) * np.exp(1j * c) for c in range(channels)) / channels
    rms_expected = abs(phasor) / np.sqrt(2)
    tol = 0.03 if subtype in ("PCM_U8", "PCM_S8") else 0.005
    assert w.pow(2).mean().sqrt().item() == pytest.approx(rms_expected, rel=tol)


def test_same_rate_values_equal_soundfile_decoding(tmp_path):
    for subtype, suffix in [("PCM_U8", ".wav"), ("PCM_24", ".wav"), ("FLOAT", ".wav"), ("PCM_16", ".flac")]:
        path = tmp_path / f"x_{subtype}{suffix}"
        x = np.random.default_rng(0).uniform(-0.8, 0.8, (3000, 2)).astype(np.float32)
        sf.write(path, x, TARGET_SR, subtype=subtype)
        ref, _ = sf.read(str(path), dtype="float32", always_2d=True)
        w, _, n = ManifestDataset([rec(path)], TARGET_SR, None, channels="keep")[0]
        assert n == 3000
        np.testing.assert_array_equal(w.numpy(), ref.T)
        m = ManifestDataset([rec(path)], TARGET_SR, None)[0][0]
        np.testing.assert_allclose(m.numpy()[0], ref.mean(axis=1), rtol=0, atol=1e-7)  # downmix = channel mean


def test_downmix_of_six_channels_is_the_mean_after_resampling(tmp_path):
    path = tmp_path / "six.wav"
    x = sine(48000, 0.5, 440.0, 6)
    sf.write(path, x, 48000, subtype="FLOAT")
    mono = ManifestDataset([rec(path)], TARGET_SR, None)[0][0]
    keep = ManifestDataset([rec(path)], TARGET_SR, None, channels="keep")[0][0]
    assert keep.shape == (6, 8000) and mono.shape == (1, 8000)
    torch.testing.assert_close(mono, keep.mean(0, keepdim=True), atol=1e-6, rtol=0)
    ref = audio.resample(torch.from_numpy(x.T.copy()), 48000, TARGET_SR)
    torch.testing.assert_close(keep, ref, atol=1e-5, rtol=0)


def test_offset_and_duration_read_exactly_those_samples(tmp_path):
    path = ramp_file(tmp_path / "ramp.wav", 1.5)
    ds = ManifestDataset([rec(path, offset=0.25, duration=0.5)], TARGET_SR, 1.0, crop="start")
    w, _, n = ds[0]
    np.testing.assert_array_equal(sample_index(w[0, :8000]), np.arange(4000, 12000))
    assert n == 8000 and torch.count_nonzero(w[0, 8000:]) == 0  # zero padding after the real samples
    ds = ManifestDataset([rec(path, offset=0.25)], TARGET_SR, 0.5, crop="center")
    w, _, n = ds[0]  # clip = samples 4000..24000, centred 8000-sample crop starts at 4000 + 6000
    assert n == 8000
    np.testing.assert_array_equal(sample_index(w[0]), np.arange(10000, 18000))
    w = ManifestDataset([rec(path, offset=0.25)], TARGET_SR, 0.5, crop="start")[0][0]
    np.testing.assert_array_equal(sample_index(w[0]), np.arange(4000, 12000))


def test_random_crops_stay_inside_the_clip_and_cover_it(tmp_path):
    path = ramp_file(tmp_path / "ramp.wav", 1.0)
    ds = ManifestDataset([rec(path, offset=0.1, duration=0.5)], TARGET_SR, 0.25, seed=0)
    starts = []
    for epoch in range(300):
        ds.set_epoch(epoch)
        idx = sample_index(ds[0][0][0])
        np.testing.assert_array_equal(np.diff(idx), 1)
        starts.append(idx[0] - 1600)
    starts = np.array(starts)
    assert starts.min() >= 0 and starts.max() <= 8000 - 4000
    assert stats.kstest(starts / 4000.0, "uniform").pvalue > 1e-3  # uniform over the allowed range


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_crop_after_resampling_equals_resampling_the_whole_clip(tmp_path, sr):
    path = tmp_path / f"noise_{sr}.wav"
    sf.write(path, np.random.default_rng(sr).uniform(-0.5, 0.5, (int(sr * 1.3), 2)).astype(np.float32), sr, subtype="FLOAT")
    whole, _ = audio.load(path, offset_s=0.1, duration_s=1.1, sample_rate=TARGET_SR)  # torchaudio, whole clip
    whole = whole.mean(0)
    grid = sr // np.gcd(sr, TARGET_SR)  # input samples per aligned step
    for crop in ("start", "center", "random"):
        ds = ManifestDataset([rec(path, offset=0.1, duration=1.1)], TARGET_SR, 0.4, crop=crop, seed=5)
        for epoch in range(3):
            ds.set_epoch(epoch)
            w, _, n = ds[0]
            assert n == 6400
            q = int(np.argmax(signal.correlate(whole.numpy(), w[0].numpy(), mode="valid", method="fft")))
            if crop == "start":
                assert q == 0
            elif crop == "center":
                assert abs(q - (len(whole) - 6400) // 2) <= grid * TARGET_SR // sr
            torch.testing.assert_close(w[0], whole[q : q + 6400], atol=2e-5, rtol=0)


def test_short_clip_is_padded_and_lengths_are_real_counts(tmp_path):
    a = ramp_file(tmp_path / "a.wav", 0.3)
    b = tmp_path / "b.wav"
    sf.write(b, sine(44100, 0.1), 44100)
    ds = ManifestDataset([rec(a), rec(b, "b")], TARGET_SR, 0.5)
    waves, labels, lengths = collate([ds[0], ds[1]])
    assert waves.shape == (2, 1, 8000) and labels.tolist() == [0, 1]
    assert lengths.tolist() == [4800, 1600]
    assert torch.count_nonzero(waves[0, :, 4800:]) == 0 and torch.count_nonzero(waves[1, :, 1600:]) == 0
    # variable length: collate pads, lengths are each clip's own length
    ds = ManifestDataset([rec(a), rec(b, "b")], TARGET_SR, None)
    waves, labels, lengths = collate([ds[0], ds[1]])
    assert waves.shape == (2, 1, 4800) and lengths.tolist() == [4800, 1600]
    np.testing.assert_array_equal(sample_index(waves[0, 0]), np.arange(4800))
    with pytest.raises(ValueError, match="different channel counts"):
        collate([(torch.zeros(1, 5), 0), (torch.zeros(2, 5), 1)])
    empty = collate([None, None])
    assert empty[0].shape[0] == 0 and empty[1].numel() == 0


def test_collate_takes_bare_waveforms_tuples_and_skips_none():
    a, b = torch.arange(1.0, 4.0), torch.arange(1.0, 6.0).reshape(1, 5)
    waves, labels, lengths = collate([a, None, b])  # bare (T,) and (C, T) waveforms: label -1
    assert waves.shape == (2, 1, 5) and labels.tolist() == [-1, -1] and lengths.tolist() == [3, 5]
    assert waves[0, 0].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0] and torch.equal(waves[1], b)
    waves, labels, lengths = collate([(b, 4, 2), [a, 7], None])  # (waveform, label[, length]) as tuple or list
    assert waves.shape == (2, 1, 5) and labels.tolist() == [4, 7] and lengths.tolist() == [2, 3]
    assert labels.dtype == lengths.dtype == torch.int64 and waves.dtype == torch.float32
    with pytest.raises(ValueError, match=r"batch item 1 must be a waveform"):
        collate([a, ("not a tensor", 1)])
    with pytest.raises(ValueError, match=r"batch item 0 must be a waveform .*\(1, 2, 3\)"):
        collate([torch.zeros(1, 2, 3)])


# ----------------------------------------------------------------------------- labels
def test_labels_default_sorted_over_all_splits_and_saved(tmp_path):
    p = ramp_file(tmp_path / "r.wav", 0.1)
    recs = [rec(p, "zebra", split="train", offset=0.0), rec(p, "ant", split="train", offset=0.01),
            rec(p, "moose", split="validation", offset=0.02)]
    m = write_manifest(tmp_path / "m.jsonl", recs)
    train = ManifestDataset(m, TARGET_SR, 0.05, split="train")
    val = ManifestDataset(m, TARGET_SR, 0.05, split="validation")
    assert train.labels == val.labels == ["ant", "moose", "zebra"]
    assert train.targets == [2, 0] and val.targets == [1] and len(train) == 2
    save_labels(tmp_path / "run" / "labels.json", train.labels)
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == {"labels": ["ant", "moose", "zebra"]}
    assert load_labels(tmp_path / "run" / "labels.json") == train.labels
    (tmp_path / "plain.json").write_text('["x", "y"]')
    assert load_labels(tmp_path / "plain.json") == ["x", "y"]
    ev = ManifestDataset(m, TARGET_SR, 0.05, labels=tmp_path / "run" / "labels.json", split=["train", "validation"])
    assert ev.targets == [2, 0, 1]
    with pytest.raises(ValueError, match="duplicate labels"):
        save_labels(tmp_path / "bad.json", ["a", "a"])
    (tmp_path / "bad.json").write_text('{"labels": [1, 2]}')
    with pytest.raises(ValueError, match="bad.json: label 0 must be a non-empty string"):
        load_labels(tmp_path / "bad.json")


def test_unknown_label_raises_naming_line_or_is_counted(tmp_path):
    p = ramp_file(tmp_path / "r.wav", 0.1)
    m = write_manifest(tmp_path / "m.jsonl", [rec(p, "yes"), rec(p, "cat", offset=0.01), rec(p, "cat", offset=0.02)])
    with pytest.raises(ValueError, match=r"m\.jsonl:2: label 'cat' is not in the label map"):
        ManifestDataset(m, TARGET_SR, 0.05, labels=["yes", "no"])
    ds = ManifestDataset(m, TARGET_SR, 0.05, labels=["yes", "no"], allow_unknown=True)
    assert len(ds) == 1 and ds.unknown == 2 and ds.unknown_labels == {"cat": 2}


def test_a_label_in_another_unicode_form_is_named_not_taken_for_another_class(tmp_path):
    """'nö' as macOS writes a folder name (NFD) and as typed (NFC) look the same: against a label map
    it is refused naming both forms (with --allow-unknown it was silently "unknown"), and two such
    spellings in one manifest are refused (they would have been two classes)."""
    import unicodedata

    nfd, nfc = unicodedata.normalize("NFD", "nö"), unicodedata.normalize("NFC", "nö")
    p = ramp_file(tmp_path / "r.wav", 0.1)
    m = write_manifest(tmp_path / "m.jsonl", [rec(p, nfc), rec(p, "yes", offset=0.01)])
    for allow in (False, True):
        with pytest.raises(ValueError, match=rf"m\.jsonl:1: label '{nfc}' is the label map's '{nfd}' written in another "
                                             r"Unicode form \(NFC against NFD; macOS file names are NFD\)"):
            ManifestDataset(m, TARGET_SR, 0.05, labels=[nfd, "yes"], allow_unknown=allow)
    both = write_manifest(tmp_path / "both.jsonl", [rec(p, nfc), rec(p, nfd, offset=0.01)])
    with pytest.raises(ValueError, match=rf"both\.jsonl: labels '{nfd}' and '{nfc}' are the same text in two Unicode "
                                         r"forms \(NFD and NFC"):
        ManifestDataset(both, TARGET_SR, 0.05)


def test_empty_manifest_and_empty_split_are_clear_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="empty.jsonl has no clips"):
        ManifestDataset(tmp_path / "empty.jsonl", TARGET_SR, 1.0)
    m = write_manifest(tmp_path / "m.jsonl", [rec(tmp_path / "x.wav", split="train")])
    with pytest.raises(ValueError, match=r"no clips with split in \['test'\] \(splits present: \['train'\]\)"):
        ManifestDataset(m, TARGET_SR, 1.0, split="test")
    for kwargs, msg in [({"sample_rate": 0}, "sample_rate"), ({"clip_s": -1.0}, "clip_s"), ({"channels": "left"}, "channels"),
                        ({"crop": "middle"}, "crop")]:
        args = {"manifest": m, "sample_rate": TARGET_SR, "clip_s": 1.0, **kwargs}
        with pytest.raises(ValueError, match=msg):
            ManifestDataset(**args)


# ----------------------------------------------------------------------------- bad clips
@pytest.fixture()
def bad_manifest(tmp_path):
    good = ramp_file(tmp_path / "good.wav", 0.5)
    full = good.read_bytes()
    (tmp_path / "truncated.wav").write_bytes(full[: 44 + 2 * 1000])
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("definitely not audio " * 10)
    nan = np.zeros((800, 1), np.float32)
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, TARGET_SR, subtype="FLOAT")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), TARGET_SR)
    lines = [rec(good), rec("missing.wav"), rec("empty.wav"), rec("text.wav"), rec("nan.wav"),
             rec(good, offset=0.75), rec("zero.wav"), rec("truncated.wav")]
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return m


@pytest.mark.parametrize(
    "line, exc, message",
    [(2, FileNotFoundError, "audio file not found"), (3, ValueError, "empty"), (4, ValueError, "cannot decode"),
     (5, ValueError, "non-finite"), (6, ValueError, "past the end"), (7, ValueError, "zero-length clip")],
)
def test_bad_clip_raises_naming_manifest_line_and_file(bad_manifest, line, exc, message):
    ds = ManifestDataset(bad_manifest, TARGET_SR, 0.1)
    with pytest.raises(exc, match=rf"m\.jsonl:{line}: .*{message}"):
        ds[line - 1]


def test_truncated_wav_is_refused_naming_both_sizes(bad_manifest):
    # the file was cut after 1000 of its 8000 16-bit frames: 44-byte header + 2000 bytes of data
    with pytest.raises(ClipError, match=r"m\.jsonl:8: truncated WAV file .*truncated\.wav: its data chunk declares "
                                         r"8000 frames \(16000 bytes\) but the file holds only 1000 frames \(2000 bytes\)$"):
        ManifestDataset(bad_manifest, TARGET_SR, 0.1, crop="start")[7]


def test_skip_bad_counts_each_bad_clip_once_and_warns_once(bad_manifest):
    with pytest.warns(SkippedClipWarning, match=r"skipping 6 of 8 clips that cannot be used \(first: .*m\.jsonl:2: "
                                                  r"audio file not found"):
        ds = ManifestDataset(bad_manifest, TARGET_SR, 0.1, skip_bad=True)
    assert len(ds) == 2 and ds.n_selected == 8  # good, nan (fails only when decoded)
    assert sorted(int(source.rsplit(":", 1)[1]) for source in ds.skipped) == [2, 3, 4, 6, 7, 8]
    with pytest.warns(SkippedClipWarning, match=r"m\.jsonl:5: .*non-finite") as caught:
        items = [ds[i] for i in range(len(ds))]
    assert items[1] is None and len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second epoch neither warns nor counts it again
        assert ds[1] is None
    assert len(ds.skipped) == 7 and "non-finite" in ds.skipped[f"{bad_manifest}:5"]
    assert [b["source"] for b in ds.bad] == [f"{bad_manifest}:{n}" for n in (2, 3, 4, 6, 7, 8, 5)]
    waves, labels, lengths = collate(items)
    assert waves.shape == (1, 1, 1600) and lengths.tolist() == [1600]


def test_skip_bad_counts_clips_that_fail_in_dataloader_workers(bad_manifest, capfd):
    with pytest.warns(SkippedClipWarning):
        ds = ManifestDataset(bad_manifest, TARGET_SR, 0.1, skip_bad=True)
    loader = DataLoader(ds, batch_size=1, num_workers=2, collate_fn=collate)
    with warnings.catch_warnings():  # warnings of the forked workers go to the real stderr, as outside pytest
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(msg, cat, filename, lineno, line))
        for _ in range(3):  # three epochs, fresh worker processes each time
            assert sum(len(y) for _, y, _ in loader) == 1
    # the worker's failure reached this process, with its reason, once
    assert ds.skipped[f"{bad_manifest}:5"].endswith("nan.wav contains non-finite samples (NaN or inf)")
    assert capfd.readouterr().err.count("skipping bad clip") == 1


def test_a_bad_clip_in_a_dataloader_worker_raises_one_line(bad_manifest):
    ds = ManifestDataset(bad_manifest, TARGET_SR, 0.1, split=None)
    records = [r for r in ds.records if r["audio_filepath"].endswith("nan.wav")]
    loader = DataLoader(ManifestDataset(records, TARGET_SR, 0.1), batch_size=1, num_workers=1, collate_fn=collate)
    with pytest.raises(ClipError) as caught:
        next(iter(loader))
    assert str(caught.value) == f"record 0: audio file {records[0]['audio_filepath']} contains non-finite samples (NaN or inf)"


def test_duplicate_lines_in_a_manifest_are_refused(tmp_path):
    p = ramp_file(tmp_path / "r.wav", 0.1)
    (tmp_path / "m.jsonl").write_text(json.dumps(rec(p)) + "\n" + json.dumps(rec(p, "b")) + "\n")
    with pytest.raises(ValueError, match=r"m\.jsonl:2: duplicate of line 1"):
        ManifestDataset(tmp_path / "m.jsonl", TARGET_SR, 0.05)


# ----------------------------------------------------------------------------- randomness
def _offsets(loader) -> list[list[int]]:
    """Per batch: each example's crop start, recovered from the ramp (minus the record offset)."""
    out = []
    for waves, labels, lengths in loader:
        out.append([int(sample_index(w[0])[0]) - 80 * int(i) for w, i in zip(waves, labels)])
    return out


@pytest.fixture()
def ramp_dataset_records(tmp_path):
    path = ramp_file(tmp_path / "ramp.wav", 1.5)
    # 16 clips of 0.5 s at offsets of 80 samples apart; the label carries the clip number
    return [rec(path, f"c{i:02d}", offset=i * 80 / TARGET_SR, duration=0.5) for i in range(16)]


def test_dataloader_workers_differ_and_a_seed_reproduces_the_epoch(ramp_dataset_records):
    ds = ManifestDataset(ramp_dataset_records, TARGET_SR, 0.1)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate, shuffle=False)
    torch.manual_seed(123)
    epoch1 = _offsets(loader)
    epoch2 = _offsets(loader)
    torch.manual_seed(123)
    again = _offsets(loader)
    assert again == epoch1  # same seed, same epoch
    assert epoch2 != epoch1  # next epoch, new crops
    # batch 0 came from worker 0 and batch 1 from worker 1: a shared RNG state would repeat draws
    assert epoch1[0] != epoch1[1] and epoch1[2] != epoch1[3]
    flat = [o for b in epoch1 for o in b]
    assert all(0 <= o <= 8000 - 1600 for o in flat) and len(set(flat)) > 12
    torch.manual_seed(123)
    single = _offsets(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate))
    torch.manual_seed(123)
    assert _offsets(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate)) == single


def test_explicit_seed_does_not_depend_on_workers_or_order(ramp_dataset_records):
    ds = ManifestDataset(ramp_dataset_records, TARGET_SR, 0.1, seed=7)
    in_workers = _offsets(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate))
    in_main = _offsets(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate))
    assert in_workers == in_main
    reversed_order = [ds[i] for i in reversed(range(len(ds)))]
    assert [int(sample_index(w[0])[0]) - 80 * lab for w, lab, _ in reversed(reversed_order)] == [o for b in in_main for o in b]
    ds.set_epoch(1)
    assert _offsets(DataLoader(ds, batch_size=4, num_workers=0, collate_fn=collate)) != in_main


def test_transform_gets_the_example_generator(ramp_dataset_records):
    seen = []

    def add_noise(wav, generator):
        seen.append(generator)
        return wav + 1e-3 * torch.randn(wav.shape, generator=generator)

    ds = ManifestDataset(ramp_dataset_records[:2], TARGET_SR, 0.1, crop="start", transform=add_noise, seed=1)
    a, b = ds[0][0], ds[0][0]
    assert all(isinstance(g, torch.Generator) for g in seen)
    torch.testing.assert_close(a, b)  # same (seed, epoch, index): same noise
    ds.set_epoch(1)
    assert not torch.equal(ds[0][0], a)
    ds = ManifestDataset(ramp_dataset_records[:2], TARGET_SR, 0.1, crop="start", transform=lambda w: 2 * w)
    np.testing.assert_array_equal(sample_index(ds[1][0][0] / 2), np.arange(80, 1680))
    bad = ManifestDataset(ramp_dataset_records[:2], TARGET_SR, 0.1, transform=lambda w: w[0])
    with pytest.raises(ValueError, match=r"transform must return a \(C, T\) tensor"):
        bad[0]


def test_class_balanced_sampler_draws_classes_equally(tmp_path):
    targets = [0] * 90 + [1] * 9 + [2] * 1
    sampler = ClassBalancedSampler(targets, num_samples=30000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sampler.weights[[0, 90, 99]], torch.tensor([1 / 90, 1 / 9, 1.0], dtype=torch.float64))
    drawn = list(sampler)
    counts = np.bincount([targets[i] for i in drawn], minlength=3)
    assert stats.chisquare(counts).pvalue > 1e-4  # each class 1/3 of the draws
    assert list(ClassBalancedSampler(targets, 50, generator=torch.Generator().manual_seed(3))) == \
        list(ClassBalancedSampler(targets, 50, generator=torch.Generator().manual_seed(3)))
    torch.manual_seed(0)
    first = list(ClassBalancedSampler(targets, 50))
    torch.manual_seed(0)
    assert list(ClassBalancedSampler(targets, 50)) == first
    with pytest.raises(ValueError, match="replacement=True"):
        ClassBalancedSampler(targets, 200, replacement=False)
    # it is torch's WeightedRandomSampler with 1/count weights: the same draws for the same generator
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler) and len(sampler) == 30000
    reference = torch.utils.data.WeightedRandomSampler(
        [1 / np.bincount(targets)[t] for t in targets], 50, generator=torch.Generator().manual_seed(3))
    assert list(ClassBalancedSampler(targets, 50, generator=torch.Generator().manual_seed(3))) == list(reference)
    with pytest.raises(ValueError, match="num_samples must be > 0"):
        ClassBalancedSampler(targets, 0)
    with pytest.raises(ValueError, match="label indices >= 0"):
        ClassBalancedSampler([0, -1])


# ----------------------------------------------------------------------------- lengths and compressed files
def test_items_carry_their_real_length_so_noise_snr_ignores_padding(tmp_path):
    from audioconv.augment import AddNoise

    short = tmp_path / "short.wav"
    sf.write(short, sine(TARGET_SR, 0.3), TARGET_SR, subtype="FLOAT")
    ds = ManifestDataset([rec(short)], TARGET_SR, 1.0, crop="start")  # 0.3 s of tone, 0.7 s of zero padding
    wavs, _, lengths = next(iter(DataLoader(ds, batch_size=1, collate_fn=collate)))
    assert lengths.tolist() == [4800]
    noisy = AddNoise(snr_db=(10.0, 10.0), p=1.0)(wavs, generator=torch.Generator().manual_seed(0), lengths=lengths)
    signal_power = wavs[0, 0, :4800].pow(2).mean()
    noise_power = (noisy - wavs)[0, 0, :4800].pow(2).mean()
    assert 10 * torch.log10(signal_power / noise_power).item() == pytest.approx(10.0, abs=0.3)  # measured SNR


def test_return_length_is_deprecated(tmp_path):
    path = ramp_file(tmp_path / "r.wav", 0.1)
    with pytest.warns(DeprecationWarning, match="return_length"):
        ds = ManifestDataset([rec(path)], TARGET_SR, 0.2, return_length=True)
    assert len(ds[0]) == 3
    with pytest.warns(DeprecationWarning, match="return_length"):
        pairs = ManifestDataset([rec(path)], TARGET_SR, 0.2, return_length=False)
    assert len(pairs[0]) == 2  # still honoured while deprecated


def test_random_crops_of_an_mp3_shorter_than_its_header_stay_in_what_decodes(tmp_path):
    from _corpus import cut_short

    t = np.arange(44100) / 44100
    sf.write(tmp_path / "full.mp3", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100, format="MP3")
    cut = cut_short(tmp_path / "full.mp3", tmp_path / "cut.mp3", keep=0.6)
    decoded, _ = sf.read(cut, dtype="float32")  # soundfile decoding from the start
    assert sf.info(str(cut)).frames == 44100 and len(decoded) < 0.7 * 44100
    whole = audio.resample(torch.from_numpy(decoded)[None], 44100, TARGET_SR)[0]
    ds = ManifestDataset([rec(cut, duration=1.0)], TARGET_SR, 0.25, seed=0)  # the header's duration, as importers write it
    for epoch in range(12):
        ds.set_epoch(epoch)
        w, _, n = ds[0]
        assert n == 4000  # never a crop past the real end, never zero padding
        # a crop of the decoded audio resampled whole, starting on the grid where 441 input samples = 160 output
        errors = [(w[0] - whole[q:q + 4000]).abs().max().item() for q in range(0, len(whole) - 4000 + 1, 160)]
        assert min(errors) < 1e-4


def test_a_transform_sees_the_clip_and_the_padding_stays_silent(tmp_path):
    from audioconv.augment import AddNoise

    short = tmp_path / "short.wav"
    sf.write(short, sine(TARGET_SR, 0.3), TARGET_SR, subtype="FLOAT")
    ds = ManifestDataset([rec(short)], TARGET_SR, 1.0, crop="start", transform=AddNoise(snr_db=(10.0, 10.0), p=1.0), seed=0)
    clean = ManifestDataset([rec(short)], TARGET_SR, 1.0, crop="start")[0][0]
    noisy, _, n = ds[0]
    assert n == 4800 and torch.count_nonzero(noisy[0, 4800:]) == 0
    snr_db = 10 * torch.log10(clean[0, :4800].pow(2).mean() / (noisy - clean)[0, :4800].pow(2).mean()).item()
    assert snr_db == pytest.approx(10.0, abs=0.3)  # measured on the clip: the padding did not dilute its level


@pytest.mark.parametrize("clip_s", [1.0, None])
def test_an_item_transformed_by_a_speed_change_reports_where_its_real_samples_now_end(tmp_path, clip_s):
    """TimeStretch ends a clip of L samples at round(L / rate), SpeedPerturb at ceil(L / factor),
    a chain of both at the one after the other: the item's length is that end, not L."""
    from audioconv.augment import Compose, Gain, SpeedPerturb, TimeStretch

    short = tmp_path / "short.wav"
    sf.write(short, sine(TARGET_SR, 0.3, freq_hz=440.0), TARGET_SR, subtype="FLOAT")  # L = 4800
    chain = Compose([SpeedPerturb(TARGET_SR, factors=[1.1], p=1.0), Gain(gain_db=(0.0, 0.0), p=1.0),
                     TimeStretch(TARGET_SR, rate=(1.25, 1.25), p=1.0)])
    expected = {"stretch": (TimeStretch(TARGET_SR, rate=(1.25, 1.25), p=1.0), 3840),
                "speed": (SpeedPerturb(TARGET_SR, factors=[1.25], p=1.0), 3840),
                "slower": (SpeedPerturb(TARGET_SR, factors=[0.8], p=1.0), 4800),  # cut at L
                "chain": (chain, round(math.ceil(4800 / 1.1) / 1.25))}  # 4364, then 3491
    for name, (transform, n_expected) in expected.items():
        wav, _, n = ManifestDataset([rec(short)], TARGET_SR, clip_s, crop="start", transform=transform, seed=0)[0]
        assert n == n_expected, name
        assert wav.shape[-1] == (16000 if clip_s else 4800), name
        assert torch.count_nonzero(wav[0, n:]) == 0 and wav[0, n - 40:n].abs().max() > 0.05, name
    plain, _, n = ManifestDataset([rec(short)], TARGET_SR, clip_s, crop="start", transform=lambda w: w[:, :1000])[0]
    assert n == 1000  # a plain callable: its output's length
