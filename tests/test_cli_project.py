"""`audioconv project`, `topk` and `evolve` end to end on a tiny checkpoint."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.io import audio
from audioconv.training.checkpoint import save_checkpoint
from audioconv.cli import main
from audioconv.features import LogMel
from audioconv.interpret.projector import Projector
from audioconv.interpret.sonify import masked_audio

from _tiny_cnn import SR, tiny_cnn


@pytest.fixture()
def setup(tmp_path):
    m = tiny_cnn(0)
    ckpt = {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(), "labels": ["a", "b"],
            "epoch": 1, "train_config": {"clip_s": 0.5}}
    save_checkpoint(tmp_path / "run" / "best.pt", ckpt)
    save_checkpoint(tmp_path / "run" / "snapshots" / "epoch_001.pt", ckpt)
    save_checkpoint(tmp_path / "run" / "snapshots" / "epoch_002.pt", ckpt)
    t = np.arange(int(0.5 * SR)) / SR
    rng = np.random.default_rng(0)
    rows = []
    for i, f in enumerate((700.0, 1500.0, 2500.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) * (t > 0.2) + 0.01 * rng.standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, m


def test_project_one_unit(setup, capsys):
    root, model = setup
    out = root / "out"
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone1.wav"),
               "--layer", "conv2", "--unit", "5", "--device", "cpu", "-o", str(out)])
    assert rc == 0
    for name in ("projection.png", "masked.wav", "griffinlim.wav", "projection.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "projection.json").read_text())
    # the numbers agree with the library called directly
    wav, _ = audio.load(root / "tone1.wav")
    proj = Projector(model, device="cpu").project(wav[None], "conv2", [5], progress=False)
    assert info["activation"] == pytest.approx(float(proj.activations[0, 0]), rel=1e-5)
    assert info["position"] == proj.positions[0, 0].tolist()
    assert info["receptive_field"]["cells"] == proj.receptive_fields[0, 0].tolist()
    f0, f1, t0, t1 = info["receptive_field"]["cells"]
    lm = LogMel(model.frontend.config)
    assert info["receptive_field"]["hz"] == pytest.approx([lm.mel_hz()[f0], lm.mel_hz()[f1 - 1]])
    assert info["receptive_field"]["seconds"] == pytest.approx([t0 * 0.01, (t1 - 1) * 0.01])
    masked, sr = audio.load(out / "masked.wav")
    assert sr == SR and masked.shape == wav.shape
    expected = masked_audio(wav, proj.maps[0, 0], lm)
    np.testing.assert_allclose(masked.numpy(), expected.numpy(), atol=1e-4)  # 16-bit WAV rounding
    assert "conv2 unit 5" in capsys.readouterr().out


def test_project_several_units_and_positions(setup):
    root, _ = setup
    out = root / "multi"
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--layer", "conv1", "--unit", "0,2", "--position", "3,10", "--mode", "guided",
               "--device", "cpu", "-o", str(out)])
    assert rc == 0
    info = json.loads((out / "projection.json").read_text())
    assert [u["channel"] for u in info["units"]] == [0, 2]
    assert all(u["position"] == [3, 10] for u in info["units"])
    assert info["units"][0]["receptive_field"]["cells"] == [2, 5, 9, 12]  # one 3×3 conv around (3, 10)
    for unit in (0, 2):
        for name in ("projection.png", "masked.wav", "griffinlim.wav"):
            assert (out / f"unit_{unit}" / name).is_file()
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--layer", "conv2", "--unit", "1", "--position", "map", "--device", "cpu", "-o", str(root / "map")])
    assert rc == 0


@pytest.mark.parametrize("args, message", [
    (["--layer", "conv9", "--unit", "1"], "valid layers: conv1, conv2"),
    (["--layer", "conv2", "--unit", "8"], "valid units are 0..7"),
    (["--layer", "conv2", "--unit", "x"], "--unit must be"),
    (["--layer", "conv2", "--unit", "1", "--position", "1;2"], "--position must be"),
    (["--layer", "conv2", "--unit", "1", "--position", "99,0"], "outside the feature map"),
])
def test_project_errors(setup, capsys, args, message):
    root, _ = setup
    rc = main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone0.wav"),
               "--device", "cpu", "-o", str(root / "bad"), *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_topk_and_evolve_commands(setup):
    root, _ = setup
    out = root / "topk"
    rc = main(["topk", "--checkpoint", str(root / "run" / "best.pt"), "--manifest", str(root / "m.jsonl"),
               "--layers", "conv1,conv2", "--k", "2", "--units", "3", "--device", "cpu", "--no-progress",
               "-o", str(out)])
    assert rc == 0
    index = json.loads((out / "index.json").read_text())
    assert index["clip_s"] == 0.5 and index["n_clips"] == 3
    assert [u["channel"] for u in index["layers"]["conv2"]["units"]] == [0, 1, 2]
    assert (out / "topk_conv1.png").is_file() and (out / "topk_conv2.png").is_file()
    top = index["layers"]["conv2"]["units"][0]["top"]
    assert len(top) == 2 and top[0]["activation"] >= top[1]["activation"]
    rc = main(["evolve", str(root / "run"), "--probe", str(root / "m.jsonl"), "--units-per-layer", "2",
               "--device", "cpu", "--no-progress", "-o", str(root / "evo")])
    assert rc == 0
    summary = json.loads((root / "evo" / "evolve.json").read_text())
    assert summary["epochs"] == [1, 2] and summary["layers"]["conv1"]["cka"] == pytest.approx([1.0, 1.0])
