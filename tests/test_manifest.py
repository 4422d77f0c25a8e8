"""audioconv.io.manifest: JSONL read / write / validate / check, against files built in tmp_path.

References: soundfile (frame counts, rates), json (what is on disk), the line numbers we wrote.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from audioconv.cli import main as cli_main
from audioconv.io.manifest import (
    KEY_ORDER,
    Clip,
    ManifestError,
    check_manifest,
    iter_manifest,
    read_manifest,
    validate_record,
    write_manifest,
    write_split_manifests,
)

REPO = Path(__file__).resolve().parents[1]


def tone(sr: int, seconds: float, channels: int = 1, freq_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(sr * seconds))) / sr
    x = 0.5 * np.sin(2 * np.pi * freq_hz * t)
    return np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------- read / write
def test_write_then_read_round_trip_relative_paths_and_extra_keys(tmp_path):
    out = tmp_path / "m" / "train.jsonl"
    inside = tmp_path / "m" / "yes" / "a.wav"
    outside = tmp_path / "elsewhere" / "b.wav"
    records = [
        {"label": "yes", "audio_filepath": str(inside), "speaker": "s1", "offset": 0.5, "duration": 1.0},
        {"audio_filepath": str(outside), "label": "no", "split": "test", "group": 7},
        {"audio_filepath": "sub/c.flac", "label": "no", "sample_rate": 8000},
    ]
    write_manifest(out, records)
    on_disk = [json.loads(line) for line in out.read_text().splitlines()]
    assert on_disk[0]["audio_filepath"] == "yes/a.wav"  # under the folder: relative, POSIX
    assert on_disk[1]["audio_filepath"] == str(outside)  # outside: absolute
    assert on_disk[2]["audio_filepath"] == "sub/c.flac"  # already relative: unchanged
    assert list(on_disk[0]) == ["audio_filepath", "label", "duration", "offset", "speaker"]  # KEY_ORDER first
    back = read_manifest(out)
    assert back[0] == {**records[0], "audio_filepath": str(inside)}
    assert back[1] == records[1]
    assert back[2]["audio_filepath"] == str(tmp_path / "m" / "sub" / "c.flac")
    assert back[0]["speaker"] == "s1" and back[1]["group"] == 7  # extra keys pass through
    assert set(KEY_ORDER) >= {"audio_filepath", "label", "duration", "offset", "split", "group", "sample_rate"}


_names = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\0"), min_size=1, max_size=12).filter(
    lambda n: n not in (".", ".."))
_records = st.lists(
    st.fixed_dictionaries(
        {"name": _names, "label": _names},
        optional={
            "duration": st.floats(1e-3, 1e4),
            "offset": st.floats(0, 1e4),
            "split": st.sampled_from(["train", "validation", "test", "fold3"]),
            "group": st.one_of(_names, st.integers(0, 10**9)),
            "sample_rate": st.integers(1, 384000),
            "extra": st.recursive(st.none() | st.booleans() | st.integers() | _names,
                                  lambda c: st.lists(c, max_size=3) | st.dictionaries(_names, c, max_size=3), max_leaves=6),
        },
    ),
    max_size=8,
    unique_by=lambda r: r["name"],
)


@settings(max_examples=40, deadline=None)
@given(records=_records)
def test_round_trip_property(tmp_path_factory, records):
    """Whatever valid records go in (unicode names, nested extra keys) come back equal."""
    folder = tmp_path_factory.mktemp("rt")
    recs = [{"audio_filepath": str(folder / "audio" / r.pop("name")), **r} for r in (dict(x) for x in records)]
    out = write_manifest(folder / "m.jsonl", recs)
    assert all(not json.loads(line)["audio_filepath"].startswith("/") for line in out.read_text().splitlines())
    assert read_manifest(out) == recs


@settings(max_examples=40, deadline=None)
@given(records=_records)
def test_clip_from_dict_and_to_dict_mirror_each_other(records):
    """``Clip.from_dict(d).to_dict() == d`` for any valid record; unit-named fields; extra keys kept."""
    for r in records:
        d = {"audio_filepath": "audio/" + r.pop("name"), **r}  # a path, as in the round-trip test
        clip = Clip.from_dict(d)
        assert clip.to_dict() == d and list(clip.to_dict())[0] == "audio_filepath"
        assert clip.duration_s == d.get("duration") and clip.offset_s == d.get("offset")
        assert clip.label == d["label"] and clip.split == d.get("split")
        assert set(clip.extra) == set(d) - {"audio_filepath", "label", "duration", "offset", "split"}
        assert Clip.from_dict(clip.to_dict()) == clip


def test_clip_validates_and_computes_its_frames():
    clip = Clip.from_dict({"audio_filepath": "/a/x.wav", "label": "yes", "offset": 0.5, "duration": 0.25, "group": "s1"})
    assert (clip.offset_s, clip.duration_s, clip.extra) == (0.5, 0.25, {"group": "s1"})
    assert clip.frames(16000, 16000) == (8000, 4000)  # 0.5 s in, 0.25 s long
    assert clip.frames(8000, 5000) == (4000, 1000)  # cut at the end of a 0.625 s file
    assert Clip.from_dict({"audio_filepath": "n.wav"}).frames(16000, 300) == (0, 300)  # no label: fine
    with pytest.raises(ValueError, match=r"offset 0\.5 s is past the end of /a/x\.wav"):
        clip.frames(16000, 8000)
    with pytest.raises(ManifestError, match=r"train\.jsonl:3: 'offset' must be >= 0"):
        Clip.from_dict({"audio_filepath": "x.wav", "offset": -1.0}, where="train.jsonl:3")
    with pytest.raises(ManifestError, match="missing required key 'label'"):
        Clip.from_dict({"audio_filepath": "x.wav"}, require_label=True)


def test_relative_paths_resolve_from_manifest_folder_not_cwd(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    m = write_lines(tmp_path / "data" / "m.jsonl", [{"audio_filepath": "../audio/x.wav", "label": "a"}])
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    assert read_manifest(m)[0]["audio_filepath"] == str(tmp_path / "audio" / "x.wav")
    assert read_manifest(m, resolve=False)[0]["audio_filepath"] == "../audio/x.wav"


def test_iter_manifest_is_lazy_and_names_the_bad_line(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", [
        {"audio_filepath": "a.wav", "label": "x"},
        "",  # blank lines are skipped but still counted
        {"audio_filepath": "b.wav", "label": "y"},
        '{"audio_filepath": "c.wav", "label": ',  # line 4: truncated JSON
    ])
    it = iter_manifest(m, line_numbers=True)
    assert next(it)[0] == 1
    assert next(it)[0] == 3  # the two good lines come out before the bad one is read
    with pytest.raises(ManifestError, match=rf"{m}:4: bad JSON"):
        next(it)


@pytest.mark.parametrize(
    "line, message",
    [
        ({"label": "x"}, "missing required key 'audio_filepath'"),
        ({"audio_filepath": "a.wav"}, "missing required key 'label'"),
        ({"audio_filepath": "a.wav", "label": 3}, "'label' must be a non-empty string"),
        ({"audio_filepath": "", "label": "x"}, "'audio_filepath' must be a non-empty string"),
        ({"audio_filepath": "a.wav", "label": "x", "duration": "1.0"}, "'duration' must be a finite number"),
        ({"audio_filepath": "a.wav", "label": "x", "duration": 0}, "zero-length clip"),
        ({"audio_filepath": "a.wav", "label": "x", "duration": True}, "'duration' must be a finite number"),
        ('{"audio_filepath": "a.wav", "label": "x", "duration": NaN}', "'duration' must be a finite number"),
        ({"audio_filepath": "a.wav", "label": "x", "offset": -0.1}, "'offset' must be >= 0"),
        ({"audio_filepath": "a.wav", "label": "x", "sample_rate": 16000.0}, "'sample_rate' must be a positive integer"),
        ({"audio_filepath": "a.wav", "label": "x", "split": 1}, "'split' must be a non-empty string"),
        ({"audio_filepath": "a.wav", "label": "x", "group": [1]}, "'group' must be a string or integer"),
        ('["a.wav", "x"]', "expected a JSON object, got list"),
    ],
)
def test_bad_lines_raise_naming_file_and_line(tmp_path, line, message):
    m = write_lines(tmp_path / "m.jsonl", [{"audio_filepath": "ok.wav", "label": "x"}, line])
    with pytest.raises(ValueError, match=rf"m\.jsonl:2: .*{message}") as e:
        read_manifest(m)
    assert isinstance(e.value, ManifestError) and e.value.where.endswith("m.jsonl:2")


def test_duplicates_name_both_lines_unless_allowed(tmp_path):
    m = write_lines(tmp_path / "m.jsonl", [
        {"audio_filepath": "a.wav", "label": "x"},
        {"audio_filepath": "a.wav", "label": "x", "offset": 1.0},  # other offset: not a duplicate
        {"audio_filepath": "./sub/../a.wav", "label": "y", "offset": 0.0},  # same file, same offset
    ])
    with pytest.raises(ManifestError, match=r"m\.jsonl:3: duplicate of line 1"):
        read_manifest(m)
    assert len(read_manifest(m, allow_duplicates=True)) == 3
    with pytest.raises(ManifestError, match="duplicate of record 0"):
        write_manifest(tmp_path / "w.jsonl", [{"audio_filepath": "a.wav", "label": "x"}] * 2)


def test_empty_and_missing_manifest(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert read_manifest(tmp_path / "empty.jsonl") == []
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.jsonl")
    report = check_manifest(tmp_path / "empty.jsonl", progress=False)
    assert not report.ok and report.n_lines == 0


def test_write_is_atomic_and_validates(tmp_path):
    out = tmp_path / "m.jsonl"
    write_manifest(out, [{"audio_filepath": "a.wav", "label": "x"}])
    before = out.read_text()
    with pytest.raises(ManifestError, match=r"record 1 .*missing required key 'label'"):
        write_manifest(out, [{"audio_filepath": "b.wav", "label": "x"}, {"audio_filepath": "c.wav"}])
    assert out.read_text() == before  # old manifest untouched
    assert [p.name for p in tmp_path.iterdir()] == ["m.jsonl"]  # no temp file left behind


def test_write_split_manifests(tmp_path):
    recs = [{"audio_filepath": f"{i}.wav", "label": "x", "split": s} for i, s in enumerate(["train", "test", "train", "validation"])]
    recs.append({"audio_filepath": "nosplit.wav", "label": "x"})
    paths = write_split_manifests(tmp_path / "all.jsonl", recs)
    assert {s: p.name for s, p in paths.items()} == {
        "train": "all_train.jsonl", "test": "all_test.jsonl", "validation": "all_validation.jsonl"}
    assert [Path(r["audio_filepath"]).name for r in read_manifest(paths["train"])] == ["0.wav", "2.wav"]


def test_validate_record_returns_copy():
    rec = {"audio_filepath": "a.wav", "label": "x", "extra": {"k": 1}}
    out = validate_record(rec)
    assert out == rec and out is not rec


# ----------------------------------------------------------------------------- check
@pytest.fixture()
def bad_corpus(tmp_path):
    """A manifest whose lines exercise every failure; returns (manifest, expected bad lines)."""
    d = tmp_path / "c"
    d.mkdir()
    sf.write(d / "u8_8k.wav", tone(8000, 0.5), 8000, subtype="PCM_U8")
    sf.write(d / "s24_44k_stereo.flac", tone(44100, 0.3, 2), 44100, subtype="PCM_24")
    sf.write(d / "f32_48k_6ch.wav", tone(48000, 0.25, 6), 48000, subtype="FLOAT")
    sf.write(d / "s16_16k.wav", tone(16000, 1.0), 16000, subtype="PCM_16")
    full = (d / "s16_16k.wav").read_bytes()
    (d / "truncated.wav").write_bytes(full[: 44 + 2 * 4000])  # header says 1 s, data holds 0.25 s
    (d / "header_only.wav").write_bytes(full[:30])
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("this is not audio " * 20)
    nan = tone(16000, 0.2)
    nan[100, 0] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "zero.wav", np.zeros((0, 1), np.float32), 16000)
    lines = [
        {"audio_filepath": "u8_8k.wav", "label": "a", "split": "train"},                        # 1 ok
        {"audio_filepath": "s24_44k_stereo.flac", "label": "b", "offset": 0.1},                  # 2 ok, 0.2 s left
        {"audio_filepath": "f32_48k_6ch.wav", "label": "b", "duration": 0.1, "sample_rate": 48000},  # 3 ok
        {"audio_filepath": "truncated.wav", "label": "a", "duration": 1.0},                      # 4 bad (truncated)
        {"audio_filepath": "missing.wav", "label": "a"},                                         # 5 bad
        {"audio_filepath": "empty.wav", "label": "a"},                                           # 6 bad
        {"audio_filepath": "text.wav", "label": "a"},                                            # 7 bad
        {"audio_filepath": "nan.wav", "label": "a"},                                             # 8 bad
        {"audio_filepath": "s16_16k.wav", "label": "a", "offset": 2.0},                          # 9 bad
        {"audio_filepath": "zero.wav", "label": "a"},                                            # 10 bad
        '{"audio_filepath": "s16_16k.wav", "label": "a"',                                       # 11 bad JSON
        {"audio_filepath": "u8_8k.wav", "label": "a"},                                           # 12 duplicate of 1
        {"audio_filepath": "header_only.wav", "label": "a"},                                     # 13 bad
        {"audio_filepath": "s16_16k.wav", "label": "a", "sample_rate": 8000},                    # 14 ok + warning
    ]
    expected_bad = {
        4: "declares 16000 frames (32000 bytes) but the file holds only 4000 frames (8000 bytes)",
        5: "audio file not found", 6: "empty (0 bytes)", 7: "cannot decode", 8: "non-finite samples",
        9: "past the end", 10: "no samples", 11: "bad JSON", 12: "duplicate of line 1", 13: "cannot decode",
    }
    return write_lines(d / "m.jsonl", lines), expected_bad


def test_check_manifest_reports_every_bad_line(bad_corpus):
    m, expected_bad = bad_corpus
    report = check_manifest(m, progress=False)
    assert not report.ok
    assert report.n_lines == 14 and report.n_ok == 4
    got = {b["line"]: b["error"] for b in report.bad}
    assert set(got) == set(expected_bad)
    for line, text in expected_bad.items():
        assert text in got[line], (line, got[line])
    assert {w["line"] for w in report.warnings} == {14}
    # measured durations / rates agree with soundfile's own header reading
    by_name = {Path(r["audio_filepath"]).name: r for r in report.records}
    d = m.parent
    info = sf.info(str(d / "u8_8k.wav"))
    assert by_name["u8_8k.wav"]["duration"] == pytest.approx(info.frames / info.samplerate)
    assert by_name["u8_8k.wav"]["sample_rate"] == 8000
    assert by_name["s24_44k_stereo.flac"]["duration"] == pytest.approx(sf.info(str(d / "s24_44k_stereo.flac")).duration - 0.1, abs=1e-6)
    assert by_name["f32_48k_6ch.wav"]["duration"] == 0.1
    assert report.sample_rates == {8000: 1, 44100: 1, 48000: 1, 16000: 1}
    assert report.channels == {1: 2, 2: 1, 6: 1}
    summary = report.to_dict()
    json.dumps(summary)  # JSON-ready
    assert summary["n_bad"] == len(expected_bad) and summary["labels"] == {"a": 2, "b": 2}
    assert math.isclose(summary["total_duration_s"], sum(r["duration"] for r in report.records), rel_tol=1e-9)


def test_check_headers_only_misses_nan_but_not_missing(bad_corpus):
    m, _ = bad_corpus
    report = check_manifest(m, decode=False, progress=False)
    lines = {b["line"] for b in report.bad}
    assert 8 not in lines and {5, 6, 7} <= lines


def test_cli_check_prints_json_and_exit_code(bad_corpus, tmp_path, capsys):
    m, expected_bad = bad_corpus
    fixed = tmp_path / "fixed.jsonl"
    assert cli_main(["manifest", "check", str(m), "-q", "--write", str(fixed)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["n_bad"] == len(expected_bad) and report["ok"] is False
    assert cli_main(["manifest", "check", str(fixed), "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["n_ok"] == 4 and report["warnings"] == []
    assert all("duration" in r and "sample_rate" in r for r in read_manifest(fixed))


# ----------------------------------------------------------------------------- data_manifests/
def test_schema_and_example_agree_with_the_reader():
    schema = json.loads((REPO / "data_manifests" / "schema.json").read_text())
    assert set(schema["required"]) == {"audio_filepath", "label"}
    assert set(KEY_ORDER) <= set(schema["properties"])
    assert schema.get("additionalProperties", True) is not False  # extra keys are allowed
    records = read_manifest(REPO / "data_manifests" / "example.jsonl")
    assert len(records) >= 3
    for rec in records:  # every example key has the schema's JSON type
        for key, value in rec.items():
            if key in schema["properties"] and key != "audio_filepath":
                types = schema["properties"][key]["type"]
                types = [types] if isinstance(types, str) else types
                py = {"string": str, "number": (int, float), "integer": int}
                assert any(isinstance(value, py[t]) for t in types), (key, value)


def test_label_is_optional_only_when_asked(tmp_path):
    path = tmp_path / "noise.jsonl"
    path.write_text(json.dumps({"audio_filepath": "a.wav"}) + "\n" + json.dumps({"audio_filepath": "b.wav", "label": "x"}) + "\n")
    with pytest.raises(ManifestError, match=r"noise\.jsonl:1: missing required key 'label'"):
        list(iter_manifest(path))
    rows = list(iter_manifest(path, require_label=False))
    assert [Path(r["audio_filepath"]).name for r in rows] == ["a.wav", "b.wav"] and "label" not in rows[0]
    with pytest.raises(ManifestError, match="'label' must be a non-empty string"):
        validate_record({"audio_filepath": "a.wav", "label": 3}, require_label=False)
    with pytest.raises(ManifestError, match="missing required key 'audio_filepath'"):
        validate_record({"label": "x"}, require_label=False)


def test_a_manifest_that_is_not_utf8_is_named_by_line_byte_and_fix(tmp_path):
    """A Windows code page (cp1252) or UTF-16 (PowerShell's ``>``): one line naming ``file:line``,
    the byte and the fix, from the reader and from ``check`` (which goes on with the other lines);
    a UTF-8 byte-order mark and CRLF line ends read as before; an audio file given as the manifest
    is named as such."""
    wav = tmp_path / "café.wav"
    sf.write(wav, np.zeros(800, np.float32), 8000)
    good = json.dumps({"audio_filepath": "café.wav", "label": "yes"}, ensure_ascii=False)
    plain = json.dumps({"audio_filepath": "café.wav", "label": "no", "offset": 0.05})
    cp1252 = tmp_path / "cp1252.jsonl"
    cp1252.write_bytes((plain + "\r\n" + good + "\r\n").encode("cp1252"))
    with pytest.raises(ValueError, match=r"^.*cp1252\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 24\); save the "
                                         r"manifest as UTF-8$"):
        read_manifest(cp1252)
    report = check_manifest(cp1252, progress=False)
    assert report.n_ok == 1 and [b["line"] for b in report.bad] == [2] and "not UTF-8 text" in report.bad[0]["error"]
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text(good + "\n", encoding="utf-16")
    with pytest.raises(ValueError, match=r"utf16\.jsonl:1: the manifest is UTF-16 text .*save it as UTF-8$"):
        read_manifest(utf16)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (good + "\r\n\r\n" + plain + "\r\n").encode("utf-8"))
    assert [r["label"] for r in read_manifest(bom)] == ["yes", "no"]
    old_mac = tmp_path / "cr.jsonl"  # classic Mac line ends, as text mode read them: lines and their numbers
    old_mac.write_bytes((good + "\r" + plain + "\r{oops\r").encode("utf-8"))
    with pytest.raises(ValueError, match=r"cr\.jsonl:3: bad JSON"):
        read_manifest(old_mac)
    assert [b["line"] for b in check_manifest(old_mac, progress=False).bad] == [3]
    with pytest.raises(ValueError, match=r"café\.wav is an audio file, not a manifest"):
        read_manifest(wav)
