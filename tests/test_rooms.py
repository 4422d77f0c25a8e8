"""Image-source rooms (audioconv.augment.rooms) and `audioconv rirs`: RT60 by Schroeder integration
against the request, arrival times against the geometry, pyroomacoustics as a second opinion, and
the bank the command writes feeding Reverb(rirs=...)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.augment import Reverb
from audioconv.augment.reverb import direct_path
from audioconv.augment.rooms import Room, direct_to_reverberant_db, image_source_rir, random_rooms, room_rirs
from audioconv.cli import main

SR = 16000
C = 343.0


def schroeder_t30_s(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 as ISO 3382 defines it (T30): the -5 to -35 dB slope of the backward-integrated energy
    (Schroeder 1965), fitted by least squares, extrapolated to 60 dB. (Image-source decays curve:
    their T20 reads ~8 % shorter.)"""
    edc = np.cumsum(rir[::-1].astype(np.float64) ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    fit = (edc_db <= -5) & (edc_db >= -35)
    slope = np.polyfit(np.nonzero(fit)[0] / sample_rate, edc_db[fit], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("room", [
    Room((4.0, 3.0, 2.5), (1.0, 1.2, 1.5), (3.1, 2.2, 1.2), 0.3),
    Room((9.0, 6.5, 3.5), (2.0, 5.0, 1.7), (6.5, 1.5, 1.2), 0.9),
    Room((3.2, 7.8, 2.7), (1.6, 1.0, 1.1), (1.1, 6.9, 1.9), 0.6),
])
def test_image_source_rt60_by_schroeder_matches_the_request(room):
    rir = image_source_rir(room, SR)
    start = int(direct_path(torch.from_numpy(rir)[None])[0])
    assert schroeder_t30_s(rir[start:], SR) == pytest.approx(room.rt60_s, rel=0.05)


def test_direct_path_and_first_reflections_arrive_at_the_image_distances():
    """Direct path at |s - m| / c; the floor and ceiling images at (x, y, -z_s) and (x, y, 2H - z_s)."""
    room = Room((8.0, 6.0, 3.0), (2.0, 2.5, 1.0), (5.0, 3.5, 2.0), 0.4)
    rir = image_source_rir(room, SR)
    src, mic, height = np.array(room.source_m), np.array(room.mic_m), room.size_m[2]
    arrivals = {"direct": np.linalg.norm(src - mic),
                "floor": np.linalg.norm(src * [1, 1, -1] - mic),
                "ceiling": np.linalg.norm(src * [1, 1, -1] + [0, 0, 2 * height] - mic)}
    peaks = np.argsort(np.abs(rir[: int(0.02 * SR)]))[::-1]
    direct = arrivals["direct"] / C * SR
    # the direct path is one whole tap at the travel time (rounded down), and the first strong one:
    # where Reverb aligns its output (several reflections arriving together can outweigh it here)
    assert int(direct_path(torch.from_numpy(rir)[None])[0]) == int(direct)
    assert abs(rir[int(direct)]) > 0.9 * np.abs(rir).max()
    for name in ("floor", "ceiling"):  # each among the 8 strongest early taps, within one sample
        t = arrivals[name] / C * SR
        assert np.min(np.abs(peaks[:8] - t)) <= 1, name
    # nothing before the direct sound
    assert np.abs(rir[: int(direct) - 1]).max() < 1e-3


def test_direct_to_reverberant_db_of_a_response_with_known_energies():
    """A direct tap of amplitude 2 and a tail of 1000 taps of 0.05 (2.5 ms window = 40 samples at
    16 kHz, so the tail starts outside it): DRR = 10 log10(4 / (1000 * 0.0025)) = +2.04 dB."""
    rir = np.zeros(1200)
    rir[100] = 2.0
    rir[141:1141] = 0.05
    assert direct_to_reverberant_db(rir, SR) == pytest.approx(10 * np.log10(4 / 2.5), abs=1e-9)


@pytest.mark.parametrize("rt60_s", [0.4, 0.8])
def test_drr_falls_with_distance_by_the_inverse_square_law(rt60_s):
    """Moving the microphone from 1 to 2 to 4 m: the direct energy falls 6.02 dB per doubling
    (inverse square) while the reverberant field stays nearly constant (diffuse-field theory;
    Barron's revised theory lets it fall slightly), so the DRR falls ~4-7 dB per doubling; and a
    longer RT60 (more reverberant energy, Sabine: proportional to RT60 / V) gives a lower DRR."""
    drr = [direct_to_reverberant_db(image_source_rir(Room((8.0, 6.0, 3.0), (1.5, 3.0, 1.5), (1.5 + d, 3.0, 1.5),
                                                          rt60_s), SR), SR) for d in (1.0, 2.0, 4.0)]
    for near, far in zip(drr, drr[1:]):
        assert -7.0 <= far - near <= -3.5, drr
    # Sabine critical distance r_c = sqrt(0.161 V / (16 pi RT60)); at 1 m the DRR is 20 log10(r_c) dB in a
    # diffuse field; image-source rooms (coherent, no scattering) stay within a few dB of it
    critical_m = np.sqrt(0.161 * 8 * 6 * 3 / (16 * np.pi * rt60_s))
    assert drr[0] == pytest.approx(20 * np.log10(critical_m), abs=4.0)


def test_drr_agrees_with_pyroomacoustics():
    pytest.importorskip("pyroomacoustics")
    rooms = random_rooms(4, rt60_s=(0.3, 0.9), seed=3)
    ours, theirs = room_rirs(rooms, SR, engine="image"), room_rirs(rooms, SR, engine="pyroomacoustics")
    for a, b in zip(ours, theirs):  # pyroomacoustics' sinc taps spread the direct path a little: ~1.5 dB lower
        assert direct_to_reverberant_db(a, SR) == pytest.approx(direct_to_reverberant_db(b, SR), abs=3.0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reverb_with_an_image_source_bank_on_cuda_replays_the_cpu_draw():
    from audioconv.augment import params_to

    rirs = torch.from_numpy(np.stack([np.pad(r, (0, 20000 - len(r)))[:20000] for r in
                                      room_rirs(random_rooms(3, rt60_s=(0.3, 0.8), seed=1), SR)])).float()
    aug = Reverb(SR, rirs=rirs, p=1.0)
    x = torch.randn(8, 1, SR, generator=torch.Generator().manual_seed(0)) * 0.1
    params = aug.sample(8, generator=torch.Generator().manual_seed(1))
    y_cpu = aug.apply(x, params)
    y_gpu = aug.apply(x.cuda(), params_to(params, "cuda"))
    assert y_gpu.device.type == "cuda"
    torch.testing.assert_close(y_gpu.cpu(), y_cpu, rtol=1e-3, atol=1e-4 * float(y_cpu.abs().max()))


def test_random_rooms_keep_positions_inside_with_margins_and_are_reproducible():
    rooms = random_rooms(200, rt60_s=(0.3, 0.7), size_m=((3, 5), (3, 4), (2.5, 3)), margin_m=0.4,
                         min_distance_m=0.8, seed=4)
    for r in rooms:
        size = np.array(r.size_m)
        assert np.all((size >= [3, 3, 2.5]) & (size <= [5, 4, 3]))
        for pos in (np.array(r.source_m), np.array(r.mic_m)):
            assert np.all(pos >= 0.4 - 1e-9) and np.all(pos <= size - 0.4 + 1e-9)
        assert r.distance_m >= 0.8 - 1e-3 and 0.3 <= r.rt60_s <= 0.7
    assert random_rooms(3, seed=4) == random_rooms(3, seed=4) != random_rooms(3, seed=5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(size_m=(3, 4, 3), source_m=(1, 1, 1), mic_m=(3.5, 1, 1), rt60_s=0.5), "mic_m .* not inside"),
    (dict(size_m=(3, 4, 3), source_m=(0, 1, 1), mic_m=(1, 1, 1), rt60_s=0.5), "source_m .* not inside"),
    (dict(size_m=(3, -4, 3), source_m=(1, 1, 1), mic_m=(1, 2, 1), rt60_s=0.5), "size_m must be 3 positive"),
    (dict(size_m=(3, 4, 3), source_m=(1, 1, 1), mic_m=(1, 2, 1), rt60_s=0.0), "rt60_s must be > 0"),
])
def test_bad_rooms_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Room(**kwargs)


def test_pyroomacoustics_engine_agrees_on_rt60_and_arrival():
    pra = pytest.importorskip("pyroomacoustics")
    room = Room((6.0, 5.0, 3.0), (1.5, 2.0, 1.4), (4.2, 3.1, 1.6), 0.5)
    ours, theirs = room_rirs([room, room], SR, engine="image")[0], room_rirs([room], SR, engine="pyroomacoustics")[0]
    onsets = [int(direct_path(torch.from_numpy(rir)[None])[0]) for rir in (ours, theirs)]
    for rir, onset in zip((ours, theirs), onsets):
        assert schroeder_t30_s(rir[onset:], SR) == pytest.approx(0.5, rel=0.05)
    # pyroomacoustics delays every tap by half its fractional-delay filter
    lag = pra.constants.get("frac_delay_length") // 2
    assert abs(onsets[1] - lag - onsets[0]) <= 1


def test_rirs_command_writes_a_bank_that_reverb_uses(tmp_path, capsys):
    out = tmp_path / "bank"
    assert main(["rirs", "-o", str(out), "--n", "6", "--rt60-s", "0.25,0.6", "--size-m", "3,6,3,5,2.5,3",
                 "--seed", "2", "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    lines = [json.loads(line) for line in (out / "rirs.jsonl").read_text().splitlines()]
    assert summary["n"] == len(lines) == 6
    for line in lines:
        rir, sr = sf.read(out / line["audio_filepath"], dtype="float64")
        assert sr == SR and np.abs(rir).max() == pytest.approx(1.0)
        assert 0.25 <= line["rt60_s"] <= 0.6
        start = int(direct_path(torch.from_numpy(rir)[None])[0])
        assert schroeder_t30_s(rir[start:], SR) == pytest.approx(line["rt60_s"], rel=0.05)
        size = np.array(line["size_m"])
        for key in ("source_m", "mic_m"):
            assert np.all(np.array(line[key]) > 0) and np.all(np.array(line[key]) < size)
        assert "label" not in line
    aug = Reverb(SR, rirs=out / "rirs.jsonl", p=1.0)
    x = torch.zeros(4, 1, 8000)
    x[:, :, 2000] = 1.0
    params = aug.sample(4, generator=torch.Generator().manual_seed(0))
    y = aug.apply(x, params)[:, 0].double().numpy()
    for i, k in enumerate(params["rir_index"].tolist()):  # each bank RIR from its direct path on, at sample 2000
        rir, _ = sf.read(out / lines[k]["audio_filepath"], dtype="float64")
        ref = rir[int(direct_path(torch.from_numpy(rir)[None])[0]):][:6000]
        assert np.abs(y[i, :2000]).max() < 1e-6 * np.abs(y[i]).max()
        np.testing.assert_allclose(y[i, 2000: 2000 + len(ref)] / y[i, 2000], ref / ref[0], atol=1e-4)


def test_pyroomacoustics_missing_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyroomacoustics", None)  # import raises ModuleNotFoundError
    assert main(["rirs", "-o", str(tmp_path / "b"), "--n", "2", "--engine", "pyroomacoustics"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'audioconv[rooms]'" in err[0]
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, match", [
    (["--rt60-s", "0.2"], "--rt60-s needs 2 numbers"),
    (["--rt60-s", "1.0,0.2"], "rt60_s must be"),
    (["--size-m", "3,4,5"], "--size-m needs 6 numbers"),
    (["--n", "0"], "n must be a positive integer"),
])
def test_rirs_command_bad_input_is_one_line(tmp_path, capsys, argv, match):
    try:
        code = main(["rirs", "-o", str(tmp_path / "b"), *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(match, err[-1])  # one error line (argparse prints its usage lines above it)
