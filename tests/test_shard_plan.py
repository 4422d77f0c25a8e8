"""The epoch plan of WebDataset shards, checked against brute-force simulations (no webdataset needed):
shards dealt to processes, the workers' streams interleaved into one, sizes parsed, tar sizes predicted."""
import io
import random
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audioconv.data import shards as S


def simulate_stream(worker_clips, chunk):
    """The process's stream as a list of (worker, local clip): chunk clips of each worker in turn."""
    queues = [[(w, i) for i in range(c)] for w, c in enumerate(worker_clips)]
    out = []
    while any(queues):
        for q in queues:
            out.extend(q[:chunk])
            del q[:chunk]
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=5), st.integers(1, 8), st.data())
def test_piece_plan_covers_exactly_the_asked_positions_of_the_stream(worker_clips, chunk, data):
    total = sum(worker_clips)
    start = data.draw(st.integers(0, total))
    stop = data.draw(st.integers(start, total))
    pieces = S.piece_plan(worker_clips, chunk, start, stop)
    flat = [(w, first + i) for w, first, n in pieces for i in range(n)]
    assert flat == simulate_stream(worker_clips, chunk)[start:stop]
    assert all(n > 0 for _, _, n in pieces)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=40), st.integers(1, 6), st.integers(0, 10**6))
def test_assign_shards_gives_each_shard_to_one_process_and_balances_them(clips, world, seed):
    order = list(range(len(clips)))
    random.Random(seed).shuffle(order)
    ranks = S.assign_shards(clips, world, order)
    assert sorted(i for r in ranks for i in r) == list(range(len(clips)))  # every shard once, no process shares one
    held = [sum(clips[i] for i in r) for r in ranks]
    if len(clips) >= world:  # greedy: the fullest and the emptiest process differ by at most one shard
        assert max(held) - min(held) <= max(clips)
    for r in ranks:  # each process reads its shards in the epoch's order
        assert r == [i for i in order if i in r]


def test_shard_order_is_a_seeded_permutation_per_epoch():
    a, b = S.shard_order(50, 7, 0, True), S.shard_order(50, 7, 1, True)
    assert sorted(a) == sorted(b) == list(range(50)) and a != b
    assert a == S.shard_order(50, 7, 0, True) and S.shard_order(5, 7, 3, False) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("text, expected", [("256MB", 256 * 10**6), ("1.5GiB", int(1.5 * 2**30)), ("4096", 4096),
                                            ("64 kib", 65536), (300, 300)])
def test_parse_size(text, expected):
    assert S.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "12 parsecs", "-3MB", "0", "1e3MB"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError, match="size must be"):
        S.parse_size(text)


def test_is_shard_spec():
    assert S.is_shard_spec("d/shard-{000000..000123}.tar") and S.is_shard_spec("a.tar::b.tar")
    assert not S.is_shard_spec("train.jsonl") and not S.is_shard_spec(None) and not S.is_shard_spec("a.tar::b.jsonl")


@pytest.mark.parametrize("sizes", [[0], [1], [511, 512, 513], [10000, 3, 70000], [10240 - 3 * 512] * 3])
def test_tar_size_prediction_matches_tarfile(sizes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for i, n in enumerate(sizes):
            info = tarfile.TarInfo(f"{i:09d}.wav")
            info.size = n
            tar.addfile(info, io.BytesIO(b"x" * n))
    assert len(buf.getvalue()) == S._tar_bytes(sum(S._tar_member_bytes(n) for n in sizes))


@pytest.mark.parametrize("pattern", ["out/shard.tar", "out/shard-%06d-%d.tar", "out%d/shard-%06d.tar",
                                     "out/{split}/s-%06d.tar", "out/shard-%06d.zip", "out/shard-%s.tar"])
def test_bad_output_patterns(pattern):
    with pytest.raises(ValueError, match="output pattern"):
        S._check_pattern(pattern)


def test_webdataset_missing_is_a_one_line_error(monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "webdataset" or m.startswith("webdataset.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(RuntimeError, match=r"pip install 'audioconv\[shards\]'"):
        S.open_shard_set("d/shard-000000.tar")
