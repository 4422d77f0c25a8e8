"""`audioconv project`, `topk` and `evolve` on a BC-ResNet checkpoint and on a model brought by the user
(``--model package.module:factory --weights FILE --labels FILE``), against the library called directly."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.cli import main
from audioconv.interpret.projector import Projector
from audioconv.io import audio
from audioconv.models.registry import build_model, describe
from audioconv.training.checkpoint import save_checkpoint
from _tiny_cnn import FRONTEND, SR
from test_interpret_residual import tiny_bcresnet


@pytest.fixture()
def files(tmp_path):
    t = np.arange(int(0.5 * SR)) / SR
    rows = []
    for i, f in enumerate((500.0, 1200.0, 2400.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) * (t > 0.1) + 0.01 * np.random.default_rng(i).standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "labels.txt").write_text("a\nb\n")
    return tmp_path


def _byo(seed=0):
    """The user's model as audioconv builds it for --model _byo_models:backbone (8 kHz, 16 mel bins)."""
    torch.manual_seed(seed)
    model = build_model("_byo_models:backbone", 2, SR, frontend={"n_mels": FRONTEND["n_mels"]})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.bias.uniform_(0.0, 0.5)
        model.backbone[0].running_mean.fill_(-40.0)
        model.backbone[0].running_var.fill_(400.0)
    return model.eval()


BYO = ["--model", "_byo_models:backbone", "--labels", "LABELS", "--sample-rate", str(SR), "--n-mels",
       str(FRONTEND["n_mels"]), "--device", "cpu"]


def _args(root, extra):
    return [str(root / "labels.txt") if a == "LABELS" else a for a in extra]


def test_project_a_bcresnet_checkpoint_by_short_and_module_names(files):
    model = tiny_bcresnet()
    spec, config = describe(model)
    ckpt = {"kind": "model", "model": model.float().state_dict(), "model_spec": spec, "model_config": config,
            "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}}
    save_checkpoint(files / "run" / "best.pt", ckpt)
    model = model.float()
    wav, _ = audio.load(files / "tone1.wav")
    for layer in ("stage2", "blocks.1.temporal.act", "blocks.2:add"):
        out = files / layer.replace(":", "_")
        rc = main(["project", "--checkpoint", str(files / "run" / "best.pt"), "--audio", str(files / "tone1.wav"),
                   "--layer", layer, "--unit", "1", "--keep-silence", "--device", "cpu", "-o", str(out)])
        assert rc == 0, layer
        info = json.loads((out / "projection.json").read_text())
        proj = Projector(model, device="cpu").project(wav[None], layer, [1], progress=False)
        assert info["activation"] == pytest.approx(float(proj.activations[0, 0]), rel=1e-5)
        assert info["receptive_field"]["cells"] == proj.receptive_fields[0, 0].tolist()
        written = (out / "projection.png").is_file() and (out / "masked.wav").is_file()
        assert written == (info["activation"] > 0)  # an inactive unit gets no picture (issue 11)


@pytest.mark.filterwarnings("ignore:`torch.jit")
@pytest.mark.parametrize("weights", ["full", "backbone", "torchscript"])
def test_project_a_brought_model(files, weights, capsys):
    model = _byo()
    if weights == "full":
        torch.save(model.state_dict(), files / "w.pt")
    elif weights == "backbone":  # the user's own module's keys, as their training code saved them
        torch.save({"state_dict": model.backbone.state_dict()}, files / "w.pt")
    else:
        torch.jit.script(model.backbone).save(str(files / "w.pt"))
    out = files / "out"
    rc = main(["project", *_args(files, BYO), "--weights", str(files / "w.pt"), "--audio", str(files / "tone2.wav"),
               "--layer", "backbone.7", "--unit", "3,5", "--keep-silence", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    info = json.loads((out / "projection.json").read_text())
    wav, _ = audio.load(files / "tone2.wav")
    proj = Projector(model, device="cpu").project(wav[None], "backbone.7", [3, 5], progress=False)
    for k, unit in enumerate(info["units"]):
        assert unit["activation"] == pytest.approx(float(proj.activations[0, k]), rel=1e-5)
        assert unit["position"] == proj.positions[0, k].tolist()
    assert info["model"] == "_byo_models:backbone"
    assert (out / "unit_5" / "griffinlim.wav").is_file() == (info["units"][1]["activation"] > 0)


def test_topk_and_evolve_with_a_brought_model(files, capsys):
    model = _byo()
    torch.save(model.state_dict(), files / "w.pt")
    rc = main(["topk", *_args(files, BYO), "--weights", str(files / "w.pt"), "--manifest", str(files / "m.jsonl"),
               "--layers", "backbone.3,backbone.7", "--k", "2", "--units", "3", "--clip-s", "0.5", "--no-progress",
               "-o", str(files / "topk")])
    assert rc == 0, capsys.readouterr().err
    index = json.loads((files / "topk" / "index.json").read_text())
    assert set(index["layers"]) == {"backbone.3", "backbone.7"} and index["model"] == "_byo_models:backbone"
    # a run trained elsewhere: snapshots are plain state dicts of the brought architecture
    for e, seed in ((1, 1), (2, 0)):
        (files / "ext" / "snapshots").mkdir(parents=True, exist_ok=True)
        torch.save(_byo(seed).state_dict(), files / "ext" / "snapshots" / f"epoch_{e:03d}.pt")
    rc = main(["evolve", str(files / "ext"), "--probe", str(files / "m.jsonl"), *_args(files, BYO)[:-2],
               "--layers", "backbone.3", "--units-per-layer", "2", "--clip-s", "0.5", "--device", "cpu",
               "--no-progress", "-o", str(files / "evolve")])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((files / "evolve" / "evolve.json").read_text())
    assert summary["epochs"] == [1, 2] and summary["layers"]["backbone.3"]["cka"][-1] == pytest.approx(1.0)


@pytest.mark.parametrize("case, extra, message", [
    ("both", ["--checkpoint", "C.pt", "--model", "_byo_models:backbone"], "give --checkpoint or --model"),
    ("neither", [], "--checkpoint or --model is required"),
    ("no labels", ["--model", "_byo_models:backbone", "--weights", "W"], "--model needs --labels"),
    ("torchscript model", ["--model", "W", "--n-classes", "2"], "a TorchScript model cannot be projected"),
    ("bad weights", ["--model", "_byo_models:backbone", "--n-classes", "3", "--weights", "W"],
     "another model shape"),
    ("unknown layer", ["--model", "_byo_models:backbone", "--n-classes", "2", "--weights", "W", "--sample-rate",
                       str(SR), "--n-mels", "16", "--layer", "backbone.99"], "--layer: unknown layer 'backbone.99'"),
])
def test_bad_model_arguments_are_one_line_errors(files, case, extra, message, capsys):
    torch.save(_byo().state_dict(), files / "W")
    extra = [str(files / "W") if a == "W" else a for a in extra]
    layer = [] if "--layer" in extra else ["--layer", "backbone.3"]
    rc = main(["project", *extra, *layer, "--unit", "0", "--audio", str(files / "tone0.wav"), "--device", "cpu",
               "-o", str(files / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (case, err)
