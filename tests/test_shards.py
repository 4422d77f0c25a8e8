"""WebDataset shards end to end (needs the optional webdataset package; skipped without it): written
shards hold the files' bytes and metadata and respect --max-size; clips read back equal the clips read
from the files; every clip once per epoch; resume replays exactly; the trainer reads them; and two
torchrun processes x 2 DataLoader workers see every clip exactly once per epoch."""
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("webdataset")

from _corpus import make_folder  # noqa: E402
from _tones import CLIP_S, SAMPLE_RATE, make_corpus, write_manifest  # noqa: E402
from audioconv.cli import main  # noqa: E402
from audioconv.data import ManifestDataset  # noqa: E402
from audioconv.data.shards import ShardClips, ShardLoader, open_shard_set, write_shards  # noqa: E402
from audioconv.io.importers import import_folder  # noqa: E402
from audioconv.io.manifest import read_manifest  # noqa: E402
from audioconv.training.batches import TrainingWarning  # noqa: E402
from audioconv.training.checkpoint import load_checkpoint  # noqa: E402
from audioconv.training.config import TrainConfig  # noqa: E402
from audioconv.training.loop import fit  # noqa: E402
from audioconv.training.shard_data import ShardEpochWarning  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """The tone corpus (72 train / 24 validation clips of 16 kB) in shards of 2 clips."""
    root = tmp_path_factory.mktemp("shards")
    corpus = make_corpus(root / "tones")
    result = write_shards(corpus["all"], str(root / "sh" / "{split}-%04d.tar"), max_size="40KiB")
    return {"corpus": corpus, "result": result, "root": root,
            **{k: v["spec"] for k, v in result["sets"].items()}}


def batches_of(loader):
    return [(x.clone(), y.clone(), n.clone()) for x, y, n in loader]


def clip_ids(x: torch.Tensor) -> list[str]:
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x]


# ------------------------------------------------------------------------------ writing
def test_shards_hold_the_files_bytes_and_metadata_within_max_size(tones):
    result, root = tones["result"], tones["root"]
    assert {k: v["clips"] for k, v in result["sets"].items()} == {"train": 72, "validation": 24, "test": 24}
    index = json.loads((root / "sh" / "shards.json").read_text())
    assert index["labels"] == ["beeps", "chirp", "steady"] and len(index["shards"]) == 60
    records = {r["audio_filepath"]: r for r in read_manifest(tones["corpus"]["all"])}
    seen = 0
    for entry in index["shards"]:
        path = root / "sh" / entry["name"]
        assert path.stat().st_size == entry["bytes"] <= 40 * 1024  # the index's size is the file's, under --max-size
        assert path.read_bytes()[156:157] == b"0"  # plain USTAR members: no PAX header blocks to parse
        with tarfile.open(path) as tar:
            names = tar.getnames()
            assert names == sorted(names) and len(names) == 2 * entry["clips"]
            for key in {n.split(".")[0] for n in names}:
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                source = records[meta["audio_filepath"]]
                assert meta["label"] == source["label"] and meta["split"] == source["split"] == entry["name"].split("-")[0]
                assert tar.extractfile(f"{key}.wav").read() == Path(meta["audio_filepath"]).read_bytes()
                seen += 1
    assert seen == 120


def test_one_set_needs_split_or_a_pattern_with_split(tones, tmp_path):
    with pytest.raises(ValueError, match=r"has the splits \['test', 'train', 'validation'\]: put \{split\}"):
        write_shards(tones["corpus"]["all"], str(tmp_path / "s-%06d.tar"))
    out = write_shards(tones["corpus"]["all"], str(tmp_path / "s-%06d.tar"), split="test", max_clips=5)
    assert [s["clips"] for s in out["sets"]["test"]["shards"]] == [5, 5, 5, 5, 4]
    assert out["sets"]["test"]["spec"] == str(tmp_path / "s-{000000..000004}.tar")
    # written again with fewer shards: the index forgets the two it no longer writes
    again = write_shards(tones["corpus"]["all"], str(tmp_path / "s-%06d.tar"), split="test", max_clips=8)
    assert again["dropped"] == ["s-000003.tar", "s-000004.tar"]
    assert [e["name"] for e in json.loads((tmp_path / "shards.json").read_text())["shards"]] == [
        "s-000000.tar", "s-000001.tar", "s-000002.tar"]


def test_bad_clips_are_named_or_skipped(tones, tmp_path):
    recs = read_manifest(tones["corpus"]["test"])[:4]
    recs[2] = {**recs[2], "audio_filepath": str(tmp_path / "gone.wav")}
    manifest = write_manifest(tmp_path / "m.jsonl", recs)
    with pytest.raises(FileNotFoundError, match=r"m\.jsonl:3: audio file not found: .*gone\.wav"):
        write_shards(manifest, str(tmp_path / "a" / "s-%06d.tar"))
    assert list((tmp_path / "a").iterdir()) == []  # the unfinished shard was removed, no index written
    out = write_shards(manifest, str(tmp_path / "b" / "s-%06d.tar"), skip_bad=True)
    assert out["sets"]["all"]["clips"] == 3 and list(out["skipped"]) == [f"{manifest}:3"]
    assert main(["shards", "--manifest", str(manifest), "-o", str(tmp_path / "c" / "s-%06d.tar"), "--no-progress"]) == 2


# ------------------------------------------------------------------------------ reading
def test_clips_from_shards_equal_clips_from_files(tmp_path):
    """Mixed formats (WAV 44.1 kHz stereo, 24-bit 48 kHz, 8 kHz, FLAC, OGG, MP3): the shard path decodes
    the stored bytes; the file path reads the files. Same rate: bit-identical; resampled: the file path
    resamples only the crop, equal up to float rounding."""
    root = make_folder(tmp_path / "folder", n_per_class=6)
    manifest = tmp_path / "folder.jsonl"
    write_manifest(manifest, [{k: v for k, v in r.items() if k != "split"}
                              for r in import_folder(root, progress=False).records])
    write_shards(manifest, str(tmp_path / "sh" / "s-%06d.tar"), max_clips=4)
    files = ManifestDataset(manifest, 16000, 1.0, crop="center")
    shards = ShardClips(str(tmp_path / "sh" / "s-{000000..000004}.tar"), 16000, 1.0, crop="center", shuffle=False,
                        labels=files.labels)
    x, y, n = next(iter(ShardLoader(shards, 0, batch_size=len(files))))
    assert len(files) == 18 and x.shape == (18, 1, 16000)
    for i, rec in enumerate(files.records):  # shards keep the manifest's order when not shuffled
        ref, label, length = files[i]
        assert (int(y[i]), int(n[i])) == (label, length)
        if rec.get("sample_rate") == 16000:
            assert torch.equal(x[i], ref)
        else:
            assert torch.allclose(x[i], ref, atol=2e-5), (rec["audio_filepath"], (x[i] - ref).abs().max())


@pytest.mark.parametrize("workers", [0, 2])
def test_every_clip_once_per_epoch_and_resume_replays_the_rest(tones, workers):
    ds = ShardClips(tones["train"], SAMPLE_RATE, CLIP_S, shuffle_buffer=7, seed=3)
    epochs = [batches_of(ShardLoader(ds, e, 4, workers, max_batches=18)) for e in (0, 1)]
    ids = [sorted(i for x, _, _ in ep for i in clip_ids(x)) for ep in epochs]
    assert len(ids[0]) == 72 and len(set(ids[0])) == 72 and ids[0] == ids[1]  # all 72 clips, each once
    order = [[i for x, _, _ in ep for i in clip_ids(x)] for ep in epochs]
    assert order[0] != order[1]  # another order each epoch
    # resumed after 7 batches: the same last 11 batches, bit for bit, without decoding the first 7
    rest = batches_of(ShardLoader(ds, 1, 4, workers, skip_batches=7, max_batches=18))
    assert len(rest) == 11
    for a, b in zip(rest, epochs[1][7:], strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_uneven_shards_give_equal_batches_per_process_and_no_clip_twice(tones, tmp_path):
    recs = read_manifest(tones["corpus"]["train"])[:31]  # 31 clips: shards of 4, 4, ..., 3
    write_shards(write_manifest(tmp_path / "m.jsonl", recs), str(tmp_path / "s-%06d.tar"), max_clips=4)
    spec = str(tmp_path / "s-{000000..000007}.tar")
    cfg = dict(train=spec, sample_rate=SAMPLE_RATE, clip_s=CLIP_S, epochs=3, batch_size=4, workers=2)
    from audioconv.training.distributed import DistInfo
    from audioconv.training.shard_data import build_shard_data

    with pytest.warns(ShardEpochWarning, match="leaves out up to 7 clips"):
        data = [build_shard_data(TrainConfig(**cfg), DistInfo(r, r, 2), torch.device("cpu"), 2)[0] for r in (0, 1)]
    assert data[0].steps_per_epoch == data[1].steps_per_epoch == 3  # 15 or 16 clips per process // 4
    for epoch in range(3):
        seen = [clip_ids(x) for d in data for x, _, _ in d.epoch_loader(epoch)]
        flat = [i for b in seen for i in b]
        assert len(seen) == 6 and all(len(b) == 4 for b in seen)
        assert len(flat) == len(set(flat)) == 24  # 31 - 24 = 7 left out, none twice
    assert issubclass(ShardEpochWarning, TrainingWarning)  # filtering a run's TrainingWarnings catches it too


def test_missing_index_and_mixed_inputs_are_one_line_errors(tones, tmp_path):
    (tmp_path / "s-000000.tar").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"no shard index .*shards\.json next to .*s-000000\.tar"):
        open_shard_set(str(tmp_path / "s-000000.tar"))
    folder = str(tones["root"] / "sh")
    with pytest.raises(ValueError, match=r"train-9999\.tar: not listed in .*shards\.json"):
        open_shard_set(folder + "/train-9999.tar")
    base = dict(sample_rate=SAMPLE_RATE, clip_s=CLIP_S, epochs=1, out=str(tmp_path / "run"), workers=0)
    with pytest.raises(ValueError, match="write the validation set as shards too"):
        fit(TrainConfig(train=tones["train"], val=str(tones["corpus"]["val"]), **base), progress=False)
    with pytest.raises(ValueError, match="some process gets no shard"):
        from audioconv.training.distributed import DistInfo
        from audioconv.training.shard_data import build_shard_data
        build_shard_data(TrainConfig(train=folder + "/test-0000.tar", **base), DistInfo(0, 0, 2), torch.device("cpu"), 0)


# ------------------------------------------------------------------------------ training
def tiny(tones, out, **kw) -> TrainConfig:
    base = dict(train=tones["train"], val=tones["validation"], out=str(out), sample_rate=SAMPLE_RATE, clip_s=CLIP_S,
                channels=(8, 16), n_mels=32, epochs=2, batch_size=4, augment="none", specaugment=False, workers=2,
                threads=1, seed=0, shuffle_buffer=8, checkpoint_every_steps=1, dropout=0.3, deterministic=True)
    return TrainConfig(**{**base, **kw})


def test_training_from_shards_resumes_bit_identically(tones, tmp_path):
    from test_train import Stop, chain_stopping_after

    ref = fit(tiny(tones, tmp_path / "ref"), progress=False)
    assert ref["steps"] == 36 and ref["data"]["train"]["clips"] == 72 and ref["data"]["validation"]["clips"] == 24
    assert ref["final"]["val_clips"] == 24
    cfg = tiny(tones, tmp_path / "run")
    with pytest.raises(Stop):  # stopped in the middle of epoch 2
        fit(cfg, progress=False, augment=chain_stopping_after(cfg, 23))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["progress"]["batches_done"] == 5
    resumed = fit(TrainConfig.from_dict({**cfg.to_dict(), "resume": True}), progress=False)
    assert resumed["state_sha1"] == ref["state_sha1"]
    assert resumed["final"] == {**ref["final"], "clips_per_s": resumed["final"]["clips_per_s"],
                                "time_s": resumed["final"]["time_s"]}


def test_shards_command(tones, tmp_path, capsys):
    out = str(tmp_path / "{split}-%03d.tar")
    assert main(["shards", "--manifest", str(tones["corpus"]["all"]), "-o", out, "--max-size", "1MB",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "train: 72 clips in 2 shards" in text and repr(str(tmp_path / "train-{000..001}.tar")) in text
    assert main(["shards", "--manifest", str(tones["corpus"]["all"]), "-o", out, "--max-size", "big"]) == 2
    assert "size must be a number with a unit" in capsys.readouterr().err


# ------------------------------------------------------------------------------ torchrun: 2 processes x 2 workers
SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import audioconv.training.loop as T
    from audioconv.cli import main

    record = {"rank": int(os.environ["RANK"]), "steps": []}
    real_fit = T.fit

    def recorded(x, generator=None, **kw):  # the augmentation slot: sees each batch as it is trained on
        record["steps"].append([hashlib.sha1(row.cpu().numpy().tobytes()).hexdigest() for row in x])
        return x

    def fit(config, progress=True, augment=None, **kwargs):
        record["summary"] = real_fit(config, progress, recorded, **kwargs)
        return record["summary"]

    T.fit = fit
    code = main(sys.argv[2:])
    with open(os.path.join(sys.argv[1], f"rank{record['rank']}.json"), "w") as f:
        json.dump(record, f)
    sys.exit(code)
""")


def test_two_processes_two_workers_see_every_clip_once_per_epoch(tones, tmp_path):
    script = tmp_path / "ddp_shards.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
           str(tmp_path), "train", "--train", tones["train"], "--val", tones["validation"], "--out", str(tmp_path / "run"),
           "--sample-rate", str(SAMPLE_RATE), "--clip-s", str(CLIP_S), "--channels", "8,16", "--n-mels", "32",
           "--epochs", "2", "--batch-size", "4", "--workers", "2", "--shuffle-buffer", "6", "--no-progress"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ranks = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    # the clips as decoded from their files (0.5 s at 8 kHz: no crop, no resampling)
    files = ManifestDataset(tones["corpus"]["train"], SAMPLE_RATE, CLIP_S, crop="center")
    every = sorted(clip_ids(torch.stack([files[i][0] for i in range(len(files))])))
    for rec in ranks:  # 36 clips per process // 4 = 9 steps per epoch on both
        assert len(rec["steps"]) == 18 and all(len(s) == 4 for s in rec["steps"])
    for epoch in (0, 1):
        seen = [i for rec in ranks for s in rec["steps"][9 * epoch : 9 * epoch + 9] for i in s]
        assert sorted(seen) == every  # every clip exactly once per epoch, across the two processes
    assert ranks[0]["summary"]["state_sha1"] == ranks[1]["summary"]["state_sha1"]
    assert ranks[0]["summary"]["final"]["val_clips"] == 24


def test_a_clip_that_does_not_decode_is_named_or_skipped(tones, tmp_path):
    write_shards(write_manifest(tmp_path / "m.jsonl", read_manifest(tones["corpus"]["test"])[:5]),
                 str(tmp_path / "s-%06d.tar"))
    with tarfile.open(tmp_path / "s-000000.tar") as tar:  # the same shard with clip 2's audio replaced by junk
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(tmp_path / "s-000000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            data = b"not audio at all" if m.name == "000000002.wav" else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    spec = str(tmp_path / "s-000000.tar")
    with pytest.raises(ValueError, match=r"cannot decode audio data .*s-000000\.tar:000000002: .*Format not recognised"):
        list(ShardLoader(ShardClips(spec, SAMPLE_RATE, CLIP_S, shuffle=False), 0, 4))
    ds = ShardClips(spec, SAMPLE_RATE, CLIP_S, shuffle=False, skip_bad=True)
    with pytest.warns(UserWarning, match="skipping bad clip"):
        sizes = [x.shape[0] for x, _, _ in ShardLoader(ds, 0, 4)]
    assert sizes == [3, 1] and list(ds.skipped) == [f"{spec}[2]"]
