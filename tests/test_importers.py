"""Corpus importers against small fixtures built here in each exact layout (real audio files of
mixed rates, bit depths and channel counts). References: soundfile headers, the split lists and
CSVs we wrote, binomial statistics for the hash split."""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import stats

from audioconv.cli import main as cli_main
from audioconv.io.importers import (
    SILENCE,
    UNKNOWN,
    hash_fraction,
    import_esc50,
    import_folder,
    import_speech_commands,
    import_urbansound8k,
    split_for_group,
)
from audioconv.io.manifest import check_manifest, read_manifest, write_manifest

# (sample rate Hz, soundfile subtype, channels, suffix) cycled over the fixture files
FORMATS = [
    (16000, "PCM_16", 1, ".wav"),
    (8000, "PCM_U8", 1, ".wav"),
    (44100, "PCM_24", 2, ".wav"),
    (48000, "FLOAT", 6, ".wav"),
    (16000, "PCM_24", 1, ".flac"),
    (44100, "PCM_S8", 2, ".flac"),
]


def write_audio(path: Path, seconds: float, fmt_index: int, seed: int = 0) -> Path:
    """Write noise in format ``FORMATS[fmt_index]`` (suffix replaced); return the path written."""
    sr, subtype, ch, suffix = FORMATS[fmt_index % len(FORMATS)]
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(round(sr * seconds))
    x = np.random.default_rng(seed).uniform(-0.3, 0.3, (frames, ch)).astype(np.float32)
    sf.write(path, x, sr, subtype=subtype)
    return path


# ----------------------------------------------------------------------------- Speech Commands
SPEAKERS = ["0a7c2a8d", "1b4c9b89", "2c5d0c9a", "3d6e1dab", "4e7f2ebc"]


@pytest.fixture()
def speech_commands(tmp_path):
    """ROOT/<word>/<hash>_nohash_<n>.wav for 3 words x 5 speakers x 2 takes, split lists by speaker,
    _background_noise_ with two recordings (16 kHz mono 6 s, 44.1 kHz stereo 4 s)."""
    root = tmp_path / "speech_commands_v0.02"
    words = ["yes", "no", "marvin"]
    val_speakers, test_speakers = {"1b4c9b89"}, {"2c5d0c9a", "3d6e1dab"}
    val_lines, test_lines = [], []
    k = 0
    for word in words:
        for spk in SPEAKERS:
            for take in range(2):
                p = write_audio(root / word / f"{spk}_nohash_{take}", 0.2 + 0.05 * take, k, seed=k)
                rel = f"{word}/{p.name}"
                (val_lines if spk in val_speakers else test_lines if spk in test_speakers else []).append(rel)
                k += 1
    (root / "validation_list.txt").write_text("\n".join(val_lines) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test_lines) + "\n")
    (root / "README.md").write_text("not audio")
    (root / "yes" / ".DS_Store").write_bytes(b"\0\1")
    bg = root / "_background_noise_"
    bg.mkdir()
    sf.write(bg / "white_noise.wav", np.random.default_rng(1).uniform(-0.5, 0.5, 6 * 16000).astype(np.float32), 16000)
    sf.write(bg / "running_tap.wav", np.random.default_rng(2).uniform(-0.5, 0.5, (4 * 44100, 2)).astype(np.float32),
             44100, subtype="PCM_24")
    (bg / "README.md").write_text("noise files")
    return root, {"validation": set(val_lines), "test": set(test_lines)}


def test_speech_commands_splits_groups_and_headers(speech_commands):
    root, lists = speech_commands
    result = import_speech_commands(root, progress=False)
    recs = result.records
    assert len(recs) == 3 * 5 * 2 and not result.skipped and not result.warnings
    for r in recs:
        rel = Path(r["audio_filepath"]).relative_to(root).as_posix()
        want = "validation" if rel in lists["validation"] else "test" if rel in lists["test"] else "train"
        assert r["split"] == want
        assert r["group"] == Path(rel).name.split("_nohash_")[0]
        assert r["label"] == rel.split("/")[0]
        info = sf.info(r["audio_filepath"])
        assert r["sample_rate"] == info.samplerate
        assert r["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-6)
    assert Counter(r["split"] for r in recs) == {"train": 12, "validation": 6, "test": 12}
    # a speaker never crosses splits
    assert all(len({r["split"] for r in recs if r["group"] == g}) == 1 for g in SPEAKERS)


def test_speech_commands_background_regions_are_disjoint_and_cover_each_file(speech_commands):
    root, _ = speech_commands
    bg = import_speech_commands(root, progress=False).background
    assert {r["label"] for r in bg} == {"_background_noise_"}
    for name in ("white_noise.wav", "running_tap.wav"):
        regions = sorted((r for r in bg if r["audio_filepath"].endswith(name)), key=lambda r: r["offset"])
        info = sf.info(str(root / "_background_noise_" / name))
        assert [r["split"] for r in regions] == ["train", "validation", "test"]
        assert regions[0]["offset"] == 0
        for a, b in zip(regions, regions[1:]):
            assert a["offset"] + a["duration"] == pytest.approx(b["offset"], abs=1e-9)  # back to back, no overlap
        assert sum(r["duration"] for r in regions) == pytest.approx(info.frames / info.samplerate, abs=1e-9)
        # region shares follow the word clips' split sizes 12 : 6 : 12
        fractions = [r["duration"] / (info.frames / info.samplerate) for r in regions]
        assert fractions == pytest.approx([0.4, 0.2, 0.4], abs=1 / info.samplerate)


def test_speech_commands_twelve_class_variant(speech_commands, tmp_path):
    root, _ = speech_commands
    result = import_speech_commands(root, twelve=True, silence_fraction=0.5, clip_s=0.5, progress=False)
    words = [r for r in result.records if r["label"] != SILENCE]
    silence = [r for r in result.records if r["label"] == SILENCE]
    assert {r["label"] for r in words} == {"yes", "no", UNKNOWN}
    assert all(r["word"] == "marvin" for r in words if r["label"] == UNKNOWN)
    per_split = Counter(r["split"] for r in words)
    assert Counter(r["split"] for r in silence) == {s: round(0.5 * n) for s, n in per_split.items()}
    regions = {(r["audio_filepath"], r["split"]): (r["offset"], r["offset"] + r["duration"]) for r in result.background}
    for r in silence:
        lo, hi = regions[(r["audio_filepath"], r["split"])]  # each crop inside its own split's region
        assert r["duration"] == 0.5 and lo - 1e-9 <= r["offset"] and r["offset"] + r["duration"] <= hi + 1e-9
        assert r["offset"] * r["sample_rate"] == pytest.approx(round(r["offset"] * r["sample_rate"]))  # on the sample grid
    # the whole manifest is usable: every crop decodes to exactly 0.5 s
    m = write_manifest(tmp_path / "sc12.jsonl", result.records)
    report = check_manifest(m, progress=False)
    assert report.ok and not report.warnings
    assert all(r["duration"] == 0.5 for r in report.records if r["label"] == SILENCE)


def test_speech_commands_bad_inputs(speech_commands):
    root, _ = speech_commands
    with open(root / "testing_list.txt", "a") as f:
        f.write("yes/ffffffff_nohash_0.wav\n")
    n_test_lines = len((root / "testing_list.txt").read_text().splitlines())
    with pytest.raises(ValueError, match=rf"testing_list.txt:{n_test_lines}: listed file 'yes/ffffffff_nohash_0.wav'"):
        import_speech_commands(root, progress=False)
    (root / "no" / "deadbeef_nohash_0.wav").write_text("not audio at all, really")
    result = import_speech_commands(root, skip_bad=True, progress=False)
    assert len(result.records) == 30 and len(result.skipped) == 2
    assert any("deadbeef" in s["audio_filepath"] and "cannot decode" in s["error"] for s in result.skipped)
    (root / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt"):
        import_speech_commands(root, progress=False)


def test_speech_commands_twelve_needs_background(tmp_path):
    root = tmp_path / "sc"
    write_audio(root / "yes" / "aa_nohash_0", 0.1, 0)
    (root / "validation_list.txt").write_text("")
    (root / "testing_list.txt").write_text("")
    with pytest.raises(ValueError, match="_background_noise_"):
        import_speech_commands(root, twelve=True, progress=False)
    assert len(import_speech_commands(root, twelve=True, silence_fraction=0, progress=False).records) == 1
    (root / "_background_noise_").mkdir()
    with pytest.raises(ValueError, match="no word folders"):
        import_speech_commands(root / "_background_noise_", progress=False)


def test_cli_speech_commands_writes_manifests(speech_commands, tmp_path, capsys):
    root, _ = speech_commands
    out, bg = tmp_path / "out" / "sc.jsonl", tmp_path / "out" / "bg.jsonl"
    rc = cli_main(["manifest", "speech-commands", str(root), "-o", str(out), "--twelve", "--background-out", str(bg),
                   "--split-files", "-q"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == len(read_manifest(out)) and summary["labels"][UNKNOWN] == 10
    for split in ("train", "validation", "test"):
        part = read_manifest(tmp_path / "out" / f"sc_{split}.jsonl")
        assert part and {r["split"] for r in part} == {split}
        assert {r["split"] for r in read_manifest(tmp_path / "out" / f"bg_{split}.jsonl")} == {split}
    assert sum(len(read_manifest(tmp_path / "out" / f"sc_{s}.jsonl")) for s in ("train", "validation", "test")) == summary["n"]
    assert len(read_manifest(bg)) == 6


# ----------------------------------------------------------------------------- ESC-50
ESC_ROWS = [
    # filename, fold, target, category, esc10, src_file, take
    ("1-100032-A-0.wav", 1, 0, "dog", "True", "100032", "A"),
    ("1-100038-A-14.wav", 1, 14, "chirping_birds", "False", "100038", "A"),
    ("2-100648-A-43.wav", 2, 43, "car_horn", "False", "100648", "A"),
    ("2-100648-B-43.wav", 2, 43, "car_horn", "False", "100648", "B"),
    ("5-9032-A-0.wav", 5, 0, "dog", "True", "9032", "A"),
]


def make_esc50(root: Path, rows=ESC_ROWS, header=("filename", "fold", "target", "category", "esc10", "src_file", "take")):
    (root / "meta").mkdir(parents=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    for i, row in enumerate(rows):
        p = write_audio(root / "audio" / row[0], 0.1, i, seed=i)
        p.rename(root / "audio" / row[0])  # keep the CSV's name even for FLAC content (soundfile sniffs)
    return root


def test_esc50(tmp_path):
    root = make_esc50(tmp_path / "ESC-50-master")
    recs = import_esc50(root, progress=False).records
    assert [Path(r["audio_filepath"]).name for r in recs] == [r[0] for r in ESC_ROWS]
    for r, row in zip(recs, ESC_ROWS):
        assert r["label"] == row[3] and r["split"] == f"fold{row[1]}" and r["group"] == row[5]
        assert r["fold"] == row[1] and r["class_id"] == row[2] and r["esc10"] is (row[4] == "True") and r["take"] == row[6]
        info = sf.info(r["audio_filepath"])
        assert (r["sample_rate"], r["duration"]) == (info.samplerate, pytest.approx(info.frames / info.samplerate, abs=1e-6))
    assert recs[2]["group"] == recs[3]["group"]  # two takes of one source recording share a group


def test_esc50_bad_inputs(tmp_path):
    root = make_esc50(tmp_path / "a", header=("filename", "fold", "target", "category", "esc10", "src_file", "oops"))
    with pytest.raises(ValueError, match=r"esc50.csv:1: missing column\(s\) \['take'\]"):
        import_esc50(root, progress=False)
    bad_rows = list(ESC_ROWS)
    bad_rows[2] = ("2-100648-A-43.wav", "two", 43, "car_horn", "False", "100648", "A")
    root = make_esc50(tmp_path / "b", rows=bad_rows)
    with pytest.raises(ValueError, match=r"esc50.csv:4: bad value 'two' in column 'fold'"):
        import_esc50(root, progress=False)
    root = make_esc50(tmp_path / "c")
    (root / "audio" / ESC_ROWS[1][0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"esc50.csv:3: audio file not found"):
        import_esc50(root, progress=False)
    result = import_esc50(root, skip_bad=True, progress=False)
    assert len(result.records) == 4 and "esc50.csv:3" in result.skipped[0]["error"]
    with pytest.raises(FileNotFoundError, match="ESC-50 folder not found"):
        import_esc50(tmp_path / "nope", progress=False)


# ----------------------------------------------------------------------------- UrbanSound8K
US_ROWS = [
    # slice_file_name, fsID, start, end, salience, fold, classID, class
    ("100032-3-0-0.wav", 100032, 0.0, 0.317551, 1, 5, 3, "dog_bark"),
    ("100263-2-0-117.wav", 100263, 58.5, 62.5, 1, 5, 2, "children_playing"),
    ("100263-2-0-121.wav", 100263, 60.5, 64.5, 1, 5, 2, "children_playing"),
    ("102305-6-0-0.wav", 102305, 0.0, 2.61, 2, 1, 6, "gun_shot"),
    ("7383-3-0-0.wav", 7383, 0.0, 4.0, 1, 10, 3, "dog_bark"),
]


def test_urbansound8k(tmp_path):
    root = tmp_path / "UrbanSound8K"
    (root / "metadata").mkdir(parents=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(US_ROWS)
    for i, row in enumerate(US_ROWS):
        p = write_audio(root / "audio" / f"fold{row[5]}" / row[0], 0.1, i + 1, seed=i)
        p.rename(p.with_name(row[0]))
    recs = import_urbansound8k(root, progress=False).records
    for r, row in zip(recs, US_ROWS):
        assert Path(r["audio_filepath"]) == root / "audio" / f"fold{row[5]}" / row[0]
        assert r["label"] == row[7] and r["split"] == f"fold{row[5]}" and r["group"] == str(row[1])
        assert (r["fold"], r["class_id"], r["salience"]) == (row[5], row[6], row[4])
        assert (r["source_start_s"], r["source_end_s"]) == (row[2], row[3])
        assert "offset" not in r  # the slice file is read whole
        info = sf.info(r["audio_filepath"])
        assert (r["sample_rate"], r["duration"]) == (info.samplerate, pytest.approx(info.frames / info.samplerate, abs=1e-6))
    (root / "audio" / "fold10" / US_ROWS[4][0]).write_bytes(b"")
    with pytest.raises(ValueError, match=r"UrbanSound8K.csv:6: audio file is empty"):
        import_urbansound8k(root, progress=False)


# ----------------------------------------------------------------------------- folder
def test_folder_importer_groups_nested_files_and_is_deterministic(tmp_path):
    root = tmp_path / "corpus"
    k = 0
    for label in ("cat", "dog"):
        for spk in SPEAKERS:
            for take in range(2):
                write_audio(root / label / f"{spk}_nohash_{take}", 0.05, k, seed=k)
                k += 1
        write_audio(root / label / "deeper" / "plainfile", 0.05, k)
        k += 1
    write_audio(root / "_background_noise_" / "noise", 0.05, 0)  # ignored
    write_audio(root / "stray_at_root", 0.05, 0)  # ignored: not in a class folder
    result = import_folder(root, val=0.3, test=0.3, seed=3, progress=False)
    recs = result.records
    assert len(recs) == 2 * (len(SPEAKERS) * 2 + 1)
    assert {r["label"] for r in recs} == {"cat", "dog"}
    by_group = {}
    for r in recs:
        name = Path(r["audio_filepath"]).stem
        assert r["group"] == (name.split("_nohash_")[0] if "_nohash_" in name else name)
        assert r["split"] == split_for_group(r["group"], 0.3, 0.3, 3)
        by_group.setdefault(r["group"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_group.values())  # a speaker stays in one split, across classes too
    again = import_folder(root, val=0.3, test=0.3, seed=3, progress=False).records
    assert [(r["audio_filepath"], r["split"]) for r in again] == [(r["audio_filepath"], r["split"]) for r in recs]


def test_folder_exact_split_hits_the_fractions(tmp_path):
    root = tmp_path / "corpus"
    speakers = [f"{i:08x}" for i in range(40)]
    for i, spk in enumerate(speakers):
        for take in range(2):
            write_audio(root / ("cat" if i % 2 else "dog") / f"{spk}_nohash_{take}", 0.02, 0, seed=i)
    recs = import_folder(root, val=0.1, test=0.25, seed=0, exact=True, progress=False).records
    groups_per_split = {s: {r["group"] for r in recs if r["split"] == s} for s in ("train", "validation", "test")}
    assert {s: len(g) for s, g in groups_per_split.items()} == {"train": 26, "validation": 4, "test": 10}
    # the validation groups are the 4 smallest hashes (the ranking rule)
    assert groups_per_split["validation"] == set(sorted(speakers, key=lambda g: hash_fraction(g, 0))[:4])


def test_hash_split_fractions_match_binomial():
    groups = [f"spk{i:05d}" for i in range(20000)]
    counts = Counter(split_for_group(g, 0.1, 0.2, seed=0) for g in groups)
    # chi-square goodness of fit against the requested fractions
    observed = [counts["train"], counts["validation"], counts["test"]]
    assert stats.chisquare(observed, [0.7 * 20000, 0.1 * 20000, 0.2 * 20000]).pvalue > 1e-4
    u = np.array([hash_fraction(g, 7) for g in groups])
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    # another seed reshuffles groups, but the fractions hold
    moved = sum(split_for_group(g, 0.1, 0.2, 0) != split_for_group(g, 0.1, 0.2, 1) for g in groups)
    assert moved > 0.3 * len(groups)


def test_folder_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="val \\+ test < 1"):
        import_folder(tmp_path, val=0.6, test=0.5, progress=False)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        import_folder(tmp_path, progress=False)
    write_audio(tmp_path / "a" / "only", 0.05, 0)
    result = import_folder(tmp_path, val=0.1, test=0.1, progress=False)
    assert len(result.records) == 1  # a single group cannot fill 3 splits; the empty folder is said
    assert result.warnings[0] == f"1 class folder(s) of {tmp_path} hold no audio and give no class: empty_class"
    assert len(result.warnings) == 3 and all(w.endswith("received no clips") for w in result.warnings[1:])


def test_folder_says_what_it_leaves_out(tmp_path, capsys):
    """Valid audio outside a class folder, and a class folder without audio, give no records: the
    summary's warnings say so (one line each, counted) instead of dropping them without a word."""
    for label in ("cat", "dog"):
        write_audio(tmp_path / label / "one", 0.05, 0)
        write_audio(tmp_path / label / "two", 0.05, 1)
    write_audio(tmp_path / "loose", 0.05, 0)
    write_audio(tmp_path / "stray", 0.05, 0)
    (tmp_path / "bird").mkdir()
    (tmp_path / "bird" / "notes.txt").write_text("not audio")
    (tmp_path / "_background_noise_").mkdir()  # ignored on purpose, not reported
    assert cli_main(["manifest", "folder", str(tmp_path), "-o", str(tmp_path / "m.jsonl"), "-q", "--val", "0",
                     "--test", "0"]) == 0
    out, err = capsys.readouterr()
    expected = [f"2 audio file(s) directly in {tmp_path} are in no class folder and were left out (e.g. loose.wav; "
                f"put them in ROOT/<class>/)", f"1 class folder(s) of {tmp_path} hold no audio and give no class: bird"]
    assert json.loads(out)["warnings"] == expected
    assert err.splitlines() == [f"warning: {w}" for w in expected]
    assert len(read_manifest(tmp_path / "m.jsonl")) == 4


def test_a_file_without_samples_is_refused_with_the_clip_range_message(tmp_path):
    write_audio(tmp_path / "a" / "one", 0.05, 0)
    write_audio(tmp_path / "b" / "two", 0.05, 1)
    sf.write(tmp_path / "b" / "silent.wav", np.zeros((0, 1), np.float32), 16000)  # a header, no frames
    with pytest.raises(ValueError, match=r"zero-length clip: .*silent\.wav has no samples"):
        import_folder(tmp_path, progress=False)
    result = import_folder(tmp_path, skip_bad=True, progress=False)
    assert len(result.records) == 2 and [Path(s["audio_filepath"]).name for s in result.skipped] == ["silent.wav"]


def test_cli_folder_and_esc50(tmp_path, capsys):
    make_esc50(tmp_path / "esc")
    assert cli_main(["manifest", "esc50", str(tmp_path / "esc"), "-o", str(tmp_path / "esc.jsonl"), "--split-files", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"] == {"fold1": 2, "fold2": 2, "fold5": 1}
    assert len(read_manifest(tmp_path / "esc_fold2.jsonl")) == 2
    rc = cli_main(["manifest", "folder", str(tmp_path / "esc" / "meta"), "-o", str(tmp_path / "f.jsonl"), "-q", "--exact"])
    assert rc == 2  # no class folders with audio: a clean error, not a traceback
    assert "no audio files" in capsys.readouterr().err


# ----------------------------------------------------------------------------- relative paths
def _corpus_of(layout: str, root: Path) -> Path:
    import _corpus

    maker = {"folder": _corpus.make_folder, "esc50": _corpus.make_esc50, "urbansound8k": _corpus.make_urbansound8k}[layout]
    return maker(root, n_per_class=2)


@pytest.mark.parametrize("layout", ["folder", "esc50", "urbansound8k", "speech-commands"])
def test_a_relative_corpus_gives_manifests_that_point_at_it_from_any_folder(layout, speech_commands, tmp_path,
                                                                             monkeypatch, capsys):
    # `audioconv manifest LAYOUT corpora/words -o m2/words.jsonl` run in tmp_path, then checked from elsewhere
    root = speech_commands[0] if layout == "speech-commands" else _corpus_of(layout, tmp_path / "corpora" / "words")
    monkeypatch.chdir(tmp_path)
    args = ["manifest", layout, os.path.relpath(root, tmp_path), "-o", "m2/words.jsonl", "--split-files", "-q"]
    if layout == "speech-commands":
        args += ["--background-out", "m3/background.jsonl"]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    written = [summary["manifest"], *summary["split_files"].values(), *summary.get("background_split_files", {}).values()]
    written += [summary["background_manifest"]] if "background_manifest" in summary else []
    assert len(written) >= 2
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for manifest in written:
        report = check_manifest(tmp_path / manifest, progress=False)
        assert report.ok and report.n_ok == report.n_lines > 0, report.bad[:1]
        assert {os.path.realpath(r["audio_filepath"]) for r in report.records} <= \
            {os.path.realpath(p) for p in Path(root).rglob("*") if p.is_file()}


def test_a_corpus_under_the_manifest_folder_is_written_relative(tmp_path, monkeypatch, capsys):
    _corpus_of("folder", tmp_path / "project" / "words")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["manifest", "folder", "project/words", "-o", "project/words.jsonl", "-q"]) == 0
    lines = [json.loads(s) for s in (tmp_path / "project" / "words.jsonl").read_text().splitlines()]
    assert lines and all(r["audio_filepath"].startswith("words/") for r in lines)  # the folder can move as a whole
    (tmp_path / "project").rename(tmp_path / "moved")
    assert check_manifest(tmp_path / "moved" / "words.jsonl", progress=False).ok


def test_importers_refuse_a_truncated_wav_unless_skip_bad(tmp_path):
    write_audio(tmp_path / "a" / "one", 0.2, 0)  # 16-bit mono 16 kHz: 3200 frames, 6400 bytes of data
    whole = write_audio(tmp_path / "b" / "two", 0.2, 0).read_bytes()
    (tmp_path / "b" / "cut.wav").write_bytes(whole[: len(whole) - 6400 + 1000])
    with pytest.raises(ValueError, match=r"truncated WAV file .*cut\.wav: its data chunk declares 3200 frames \(6400 bytes\) "
                                         r"but the file holds only 500 frames \(1000 bytes\)"):
        import_folder(tmp_path, progress=False)
    result = import_folder(tmp_path, skip_bad=True, progress=False)
    assert [Path(s["audio_filepath"]).name for s in result.skipped] == ["cut.wav"] and len(result.records) == 2


def test_a_metadata_csv_that_is_not_utf8_is_named_by_line(tmp_path):
    """An ESC-50 / UrbanSound8K CSV saved in a Windows code page: one line naming ``file:line``
    and the fix (the CSV's own line numbers, as for its other errors); UTF-8 with a BOM reads."""
    from audioconv.io.importers._csv import csv_rows

    text = "filename,category\r\na.wav,dog\r\nb.wav,café\r\n"
    bad = tmp_path / "cp1252.csv"
    bad.write_bytes(text.encode("cp1252"))
    with pytest.raises(ValueError, match=r"cp1252\.csv:3: not UTF-8 text \(byte 0xe9 at column 10\); save the "
                                         r"metadata CSV as UTF-8$"):
        list(csv_rows(bad, ("filename", "category")))
    good = tmp_path / "bom.csv"
    good.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert [(where.rsplit(":", 1)[1], row["category"]) for where, row in csv_rows(good, ("filename", "category"))] == \
        [("2", "dog"), ("3", "café")]


def test_a_file_name_that_is_not_utf8_is_named_and_skipped_with_skip_bad(tmp_path):
    """A Latin-1 file name on Linux (``caf\\xe9.wav`` from an old archive): a manifest is UTF-8 JSON
    and cannot hold it, so the importer names it with the byte escaped and says to rename it (it
    crashed with a codec error naming nothing); ``skip_bad`` lists it and imports the rest."""
    import os

    write_audio(tmp_path / "a" / "one", 0.2, 0)
    write_audio(tmp_path / "b" / "two", 0.2, 0)
    os.rename(tmp_path / "b" / "two.wav", os.fsencode(tmp_path / "b") + b"/caf\xe9.wav")
    with pytest.raises(ValueError, match=r"the file name is not UTF-8 text: .*/b/caf\\xe9\.wav; rename it"):
        import_folder(tmp_path, progress=False)
    result = import_folder(tmp_path, skip_bad=True, progress=False)
    assert [s["audio_filepath"].endswith("/b/caf\\xe9.wav") for s in result.skipped] == [True]
    assert [Path(r["audio_filepath"]).name for r in result.records] == ["one.wav"]
    json.dumps(result.skipped)  # what the command prints
