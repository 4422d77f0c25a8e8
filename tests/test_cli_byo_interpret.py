"""Every interpretation command on a model the user brought (``build(n_classes, sample_rate)`` returning a
backbone on log-mel, wrapped as ``backbone`` by the package): the network's own layer names, a run's
``labels.json``, ``--model`` for ``sanity``/``faithfulness``, the default Grad-CAM layer, and flags (not
Python arguments) in the messages."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from audioconv.cli import main
from audioconv.commands._model import read_labels
from audioconv.data.dataset import save_labels
from audioconv.interpret.explain import explain
from audioconv.interpret.projector import Projector
from audioconv.interpret.traced import TracedModel
from audioconv.io import audio
from audioconv.models.registry import build_model, describe
from audioconv.training.checkpoint import save_checkpoint
from _tiny_cnn import FRONTEND, SR


def _brought(spec="_byo_models:resnet", seed=0):
    """The user's network as ``audioconv train --model SPEC`` builds it (8 kHz, 16 mel bins), eval mode."""
    torch.manual_seed(seed)
    model = build_model(spec, 2, SR, frontend={"n_mels": FRONTEND["n_mels"]})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(0.0, 0.5)
        if spec.endswith(":resnet"):
            model.backbone.stem[0].running_mean.fill_(-40.0)
            model.backbone.stem[0].running_var.fill_(400.0)
    return model.eval()


@pytest.fixture()
def run(tmp_path):
    """Three tones, a manifest, the run's labels.json, a checkpoint of the brought ResNet, its state dict."""
    t = np.arange(int(0.5 * SR)) / SR
    rows = []
    for i, f in enumerate((500.0, 1200.0, 2400.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * np.random.default_rng(i).standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_labels(tmp_path / "run" / "labels.json", ["a", "b"])
    model = _brought()
    spec, config = describe(model)
    save_checkpoint(tmp_path / "run" / "best.pt", {"kind": "model", "model": model.state_dict(), "model_spec": spec,
                                                   "model_config": config, "labels": ["a", "b"], "epoch": 1,
                                                   "train_config": {"clip_s": 0.5}})
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return tmp_path


def _byo(root, spec="_byo_models:resnet", weights=True):
    return ["--model", spec, *(["--weights", str(root / "w.pt")] if weights else []),
            "--labels", str(root / "run" / "labels.json"), "--sample-rate", str(SR), "--n-mels", "16"]


def _err(capsys) -> str:
    return capsys.readouterr().err.strip()


# ---- 1. one layer-name resolution ----------------------------------------------------------------
def test_topk_and_evolve_take_the_networks_own_layer_names(run, capsys):
    """layer1.act (a module), layer2 (a block), layer1:add (a functional operation), without `backbone.`."""
    ckpt = str(run / "run" / "best.pt")
    rc = main(["topk", "--checkpoint", ckpt, "--manifest", str(run / "m.jsonl"), "--layers", "layer1.act,layer2,layer1:add",
               "--k", "2", "--units", "2", "--keep-silence", "--device", "cpu", "--no-progress", "-o", str(run / "t")])
    assert rc == 0, _err(capsys)
    index = json.loads((run / "t" / "index.json").read_text())
    model = _brought()
    wav = torch.stack([audio.load(run / f"tone{i}.wav")[0] for i in range(3)])
    for layer in ("layer1.act", "layer2", "layer1:add"):
        maps = Projector(model, device="cpu").feature_maps(wav, f"backbone.{layer}")  # (3, C, F', T')
        best = maps[:, :2].amax(dim=(2, 3)).sort(dim=0, descending=True).values[:2].T  # (unit, rank)
        got = [[hit["activation"] for hit in unit["top"]] for unit in index["layers"][layer]["units"]]
        np.testing.assert_allclose(got, best.numpy(), rtol=1e-5)
    for e in (1, 2):  # a run trained elsewhere: its snapshots are state dicts of the brought network
        (run / "ext" / "snapshots").mkdir(parents=True, exist_ok=True)
        torch.save(_brought(seed=e).state_dict(), run / "ext" / "snapshots" / f"epoch_{e:03d}.pt")
    rc = main(["evolve", str(run / "ext"), "--probe", str(run / "m.jsonl"), *_byo(run, weights=False),
               "--layers", "layer1.act,layer2:add", "--units-per-layer", "2", "--clip-s", "0.5", "--cka", "linear", "--device", "cpu",
               "--no-progress", "-o", str(run / "evolve")])
    assert rc == 0, _err(capsys)
    summary = json.loads((run / "evolve" / "evolve.json").read_text())
    assert summary["layers"]["layer2:add"]["cka"][-1] == pytest.approx(1.0)


def test_topk_draws_its_grid_with_the_models_front_end(run, capsys, monkeypatch):
    """The grid's axes and its input colour bar come from the model's own front end (dB, or the
    name of its normalisation); without it a PCEN model's patches were labelled dB."""
    from audioconv.app import figures

    seen, draw = [], figures.plot_topk_grid
    monkeypatch.setattr(figures, "plot_topk_grid", lambda topk, logmel=None: seen.append(logmel) or draw(topk, logmel=logmel))
    rc = main(["topk", "--checkpoint", str(run / "run" / "best.pt"), "--manifest", str(run / "m.jsonl"), "--layers",
               "layer2", "--k", "1", "--units", "1", "--keep-silence", "--device", "cpu", "--no-progress",
               "-o", str(run / "t1")])
    assert rc == 0, _err(capsys)
    assert len(seen) == 1 and seen[0].config.n_mels == 16 and seen[0].config.sample_rate == SR


@pytest.mark.parametrize("command", ["topk", "evolve"])
def test_an_unknown_layer_names_the_flag(run, command, capsys):
    if command == "topk":
        args = ["topk", "--checkpoint", str(run / "run" / "best.pt"), "--manifest", str(run / "m.jsonl"), "-o",
                str(run / "o")]
    else:
        (run / "ext" / "snapshots").mkdir(parents=True)
        torch.save(_brought().state_dict(), run / "ext" / "snapshots" / "epoch_001.pt")
        args = ["evolve", str(run / "ext"), "--probe", str(run / "m.jsonl"), "--model", "_byo_models:resnet",
                "--n-classes", "2", "--sample-rate", str(SR), "--n-mels", "16"]
    rc = main([*args, "--layers", "layer1.nope", "--device", "cpu", "--no-progress"])
    err = _err(capsys)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"audioconv {command}: error: --layers: unknown layer 'layer1.nope'" in err and "backbone.layer1.act" in err
    assert "frontend" not in err  # the front end's modules are not on the log-mel's way: naming one is refused


# ---- 2. --labels: a run's labels.json, a JSON list, or one name per line --------------------------------
def test_labels_json_json_list_and_text_are_read(tmp_path):
    save_labels(tmp_path / "labels.json", ["dog", "rain", "siren"])
    (tmp_path / "list.json").write_text('["dog", "rain", "siren"]')
    (tmp_path / "labels.txt").write_text("dog\n\nrain\nsiren\n")
    (tmp_path / "list.txt").write_text(' ["dog", "rain", "siren"]\n')  # JSON whatever the suffix
    for name in ("labels.json", "list.json", "labels.txt", "list.txt"):
        assert read_labels(tmp_path / name) == ["dog", "rain", "siren"], name


def test_weights_from_a_checkpoint_with_ema_load_its_ema_copy_as_checkpoint_does(tmp_path):
    """``--model cnn --weights last.pt`` of a run trained with ``--ema`` (``model`` the trained weights, ``ema``
    their average) loads the EMA weights, as ``--checkpoint last.pt`` does (checkpoint_weights "auto")."""
    from argparse import Namespace

    from audioconv.commands._model import load_cli_model

    torch.manual_seed(0)
    model = build_model("cnn", 2, SR, frontend={"n_mels": FRONTEND["n_mels"]}, n_frames=16)
    spec, config = describe(model)
    raw, trained = model.state_dict(), {name for name, _ in model.named_parameters()}
    ema = {k: v + 0.5 if k in trained else v.clone() for k, v in raw.items()}  # another copy of the weights
    save_checkpoint(tmp_path / "last.pt", {"kind": "train", "model": raw, "weights": "raw", "model_spec": spec,
                                           "ema": {"weights": ema, "updates": 3}, "model_config": config,
                                           "labels": ["a", "b"]})
    brought, _, ckpt = load_cli_model(Namespace(checkpoint=None, model="cnn", weights=str(tmp_path / "last.pt"),
                                                labels=None, n_classes=2, sample_rate=SR, n_mels=FRONTEND["n_mels"],
                                                width=None), "cpu")
    recorded, _, _ = load_cli_model(Namespace(checkpoint=str(tmp_path / "last.pt"), model=None), "cpu")
    assert ckpt is None
    for name, value in brought.state_dict().items():
        assert torch.equal(value, ema[name]) and torch.equal(recorded.state_dict()[name], value), name


@pytest.mark.parametrize("spec", ["cnn", "bcresnet"])
@pytest.mark.parametrize("bands, top_hz", [("default", None), (64, None), ("default", 3000.0)])
def test_a_built_in_model_without_n_mels_gets_the_front_end_of_its_weights(tmp_path, spec, bands, top_hz):
    """``--model cnn|bcresnet --weights W`` without ``--n-mels`` builds the front end the weights were
    trained with: ``audioconv train``'s default bands, or the 64 of runs from before that default, and the
    top frequency of a run trained with ``--f-max-hz`` (read from the mel filters in the state dict; other
    bands would refuse the weights, another top would mislabel the Hz axis and resynthesise wrong audio)."""
    from argparse import Namespace

    from audioconv.commands._model import load_cli_model, snapshot_loader
    from audioconv.training.config import TrainConfig

    bands = TrainConfig.n_mels if bands == "default" else bands
    trained = build_model(spec, 2, SR, frontend={"n_mels": bands, "f_max_hz": top_hz})
    torch.save(trained.state_dict(), tmp_path / "weights.pt")
    model, _, _ = load_cli_model(Namespace(checkpoint=None, model=spec, weights=str(tmp_path / "weights.pt"),
                                           labels=None, n_classes=2, sample_rate=SR, n_mels=None, width=None), "cpu")
    assert model.frontend.config.n_mels == bands and model.frontend.config.f_max_hz == top_hz
    x = torch.randn(2, 1, SR // 2)
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x))
    load = snapshot_loader(Namespace(model=spec, labels=None, n_classes=2, sample_rate=SR, n_mels=None, width=None))
    for _ in range(2):  # evolve's snapshots of such a run, one after another
        snapshot = load(tmp_path / "weights.pt", "cpu")
        assert snapshot.frontend.config.n_mels == bands and snapshot.frontend.config.f_max_hz == top_hz
        with torch.no_grad():
            assert torch.allclose(snapshot(x), model(x))


def test_a_factory_without_n_mels_gets_the_bands_of_its_weights_or_those_audioconv_train_gives(tmp_path):
    """A backbone's own weights hold no mel filters: it gets ``audioconv train``'s default bands (it had
    64, so a network that takes any height ran on other bands than it was trained on, silently); a
    whole model's weights (a run's checkpoint as ``--weights``) give their own bands. A head over
    flattened features, which takes only the bands and frames it was trained on, is checked on a clip
    of ``audioconv train``'s length (it was refused: a fixed 16-frame probe)."""
    from argparse import Namespace

    from audioconv.commands._model import load_cli_model
    from audioconv.training.config import TrainConfig

    def brought(spec, weights):
        model, _, _ = load_cli_model(Namespace(checkpoint=None, model=spec, weights=str(weights), labels=None,
                                               n_classes=2, sample_rate=SR, n_mels=None, width=None), "cpu")
        return model

    x = torch.randn(2, 1, SR)
    for spec in ("_byo_models:backbone", "_byo_models:flathead"):
        torch.manual_seed(0)
        trained = build_model(spec, 2, SR, frontend={"n_mels": TrainConfig.n_mels}).eval()
        torch.save(trained.backbone.state_dict(), tmp_path / "backbone.pt")
        model = brought(spec, tmp_path / "backbone.pt")
        assert model.frontend.config.n_mels == TrainConfig.n_mels
        with torch.no_grad():
            assert torch.allclose(model(x), trained(x))
    torch.manual_seed(0)
    trained = build_model("_byo_models:backbone", 2, SR, frontend={"n_mels": 24}).eval()
    torch.save(trained.state_dict(), tmp_path / "whole.pt")
    model = brought("_byo_models:backbone", tmp_path / "whole.pt")
    assert model.frontend.config.n_mels == 24
    with torch.no_grad():
        assert torch.allclose(model(x), trained(x))


def test_weights_of_another_sample_rate_are_refused_naming_it(tmp_path):
    """The mel filters in ``--weights`` tell the sample rate they were made for: weights of a 16 kHz
    model given with ``--sample-rate 8000`` are refused (their bands would be read at the wrong
    frequencies), not loaded with a top frequency fitted to the wrong rate."""
    from argparse import Namespace

    from audioconv.commands._model import load_cli_model

    torch.save(build_model("cnn", 2, 16000).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match=r"^the weights' front end does not fit --sample-rate 8000: the mel filters are "
                                         r"not the 64 HTK bands from 20 Hz of a log-mel front end at 8000 Hz"):
        load_cli_model(Namespace(checkpoint=None, model="cnn", weights=str(tmp_path / "weights.pt"), labels=None,
                                 n_classes=2, sample_rate=8000, n_mels=None, width=None), "cpu")


def test_a_factory_model_with_a_front_end_of_its_own_loads_its_filters_as_they_are(tmp_path):
    """A factory's full model may build its log-mel its own way (here from 0 Hz): its mel filters fit no
    front end the package would build, and that is no error: they load with the weights, as before."""
    from argparse import Namespace

    from audioconv.commands._model import load_cli_model
    from audioconv.features import LogMel, LogMelConfig
    from _byo_models import full

    own = full(2, SR)
    own.frontend = LogMel(LogMelConfig(sample_rate=SR, n_mels=32, f_min_hz=0.0))
    torch.save(own.state_dict(), tmp_path / "weights.pt")
    model, _, _ = load_cli_model(Namespace(checkpoint=None, model="_byo_models:full", weights=str(tmp_path / "weights.pt"),
                                           labels=None, n_classes=2, sample_rate=SR, n_mels=32, width=None), "cpu")
    x = torch.randn(2, 1, SR // 2)
    with torch.no_grad():
        assert torch.equal(model.frontend.mel.mel_scale.fb, own.frontend.mel.mel_scale.fb)
        assert torch.allclose(model(x), own.eval()(x))


@pytest.mark.parametrize("text, message", [
    ('{"classes": ["a", "b"]}', 'bad.json: expected {"labels": [...]} or a JSON list of label strings'),
    ('["a", 3]', "bad.json: label 1 must be a non-empty string, got 3"),
    ('["a", "b"', "bad.json:1: bad JSON in labels file"),
])
def test_a_json_labels_file_of_another_shape_is_one_line_naming_it(run, text, message, capsys):
    (run / "bad.json").write_text(text)
    rc = main(["topk", *_byo(run)[:-6], "--labels", str(run / "bad.json"), "--manifest", str(run / "m.jsonl"),
               "--layers", "layer1.act", "--device", "cpu", "-o", str(run / "o")])
    err = _err(capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and f"error: --labels: {run / message}" in err, err


# ---- 3./4. sanity and faithfulness on a brought model, default Grad-CAM layer ----------------------------
def _cam_reference(model, logmel, block, relu_of_add: bool, cls):
    """Grad-CAM by hand (Selvaraju et al.: weights = spatial mean of the gradient; relu(Σ_k w_k A_k)) at the
    residual sum of ``block`` (relu_of_add=False) or at its output, taken with plain autograd."""
    saved = []
    original = type(block).forward

    def forward(self, x):
        a = self.act(self.bn(self.conv(x))) + x
        out = F.relu(a)
        if self is block:
            saved.append(out if relu_of_add else a)
        return out

    type(block).forward = forward
    try:
        x = logmel.clone().requires_grad_(True)
        logits = model.classify(x)
        (g,) = torch.autograd.grad(logits[torch.arange(len(cls)), cls].sum(), saved[0])
    finally:
        type(block).forward = original
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * saved[0]).sum(1)).detach()


def test_grad_cam_default_layer_and_operation_layers_match_a_hand_reference():
    model = _brought().double()
    torch.manual_seed(1)
    logmel = -40 + 10 * torch.randn(3, 1, 16, 24, dtype=torch.float64)
    cls = model.classify(logmel).argmax(1)
    assert TracedModel(model, "cpu").last_feature_map() == "backbone.layer2"
    default = explain(model, logmel, ["grad_cam"], device="cpu")
    assert default.gradcam_layer == "backbone.layer2"
    ref = F.interpolate(_cam_reference(model, logmel, model.backbone.layer2, True, cls)[:, None], size=(16, 24),
                        mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(default.maps["grad_cam"], ref)
    at_add = explain(model, logmel, ["grad_cam"], gradcam_layer="layer1:add", device="cpu")
    ref = F.interpolate(_cam_reference(model, logmel, model.backbone.layer1, False, cls)[:, None], size=(16, 24),
                        mode="bilinear", align_corners=False)[:, 0]
    assert ref.abs().sum() > 0
    torch.testing.assert_close(at_add.maps["grad_cam"], ref)


def test_sanity_and_faithfulness_take_a_brought_model(run, capsys):
    common = ["--manifest", str(run / "m.jsonl"), "--n-clips", "3", "--clip-s", "0.5", "--device", "cpu",
              "--no-progress"]
    rc = main(["sanity", *_byo(run), *common, "--methods", "gradient,grad_cam", "--layers", "fc,layer2.conv",
               "-o", str(run / "s")])
    assert rc == 0, _err(capsys)
    summary = json.loads((run / "s" / "sanity.json").read_text())
    assert summary["gradcam_layer"] == "backbone.layer2" and summary["steps"] == ["none", "backbone.fc",
                                                                                  "backbone.layer2.conv"]
    assert summary["labels"] == ["a", "b"] and summary["model"] == "_byo_models:resnet"
    rc = main(["faithfulness", *_byo(run), *common, "--methods", "grad_cam", "--gradcam-layer", "layer1:add",
               "--steps", "4", "-o", str(run / "f")])
    assert rc == 0, _err(capsys)
    from audioconv.interpret.faithfulness import faithfulness

    wav = torch.stack([audio.load(run / f"tone{i}.wav")[0] for i in range(3)])
    ref = faithfulness(_brought(), wav, ["grad_cam"], gradcam_layer="backbone.layer1:add", steps=4, device="cpu",
                       progress=False)
    got = json.loads((run / "f" / "faithfulness.json").read_text())
    assert got["gradcam_layer"] == "layer1:add"
    assert got["summary"]["grad_cam"]["deletion_auc"] == pytest.approx(
        float(ref.curves["grad_cam"].deletion_auc.mean()), rel=1e-6)


@pytest.mark.parametrize("spec, extra, message", [
    ("_byo_models:resnet", ["--gradcam-layer", "layer9"], "--gradcam-layer: unknown layer 'layer9'"),
    ("_byo_models:resnet", ["--gradcam-layer", "fc"], "--gradcam-layer: layer 'fc' gives (1, 2); Grad-CAM needs"),
    ("_byo_models:flat", [], "Grad-CAM needs --gradcam-layer, a layer with feature maps below the target: the model "
                             "has no layer with feature maps (B, C, F, T)"),
    ("_byo_models:sigmoid", ["--methods", "gradient,guided"], "use --methods gradient,grad_cam for this model"),
])
def test_sanity_errors_name_the_flags(run, spec, extra, message, capsys):
    rc = main(["sanity", *_byo(run, spec, weights=False), "--manifest", str(run / "m.jsonl"), "--n-clips", "2",
               "--clip-s", "0.5", "--device", "cpu", "--no-progress", *extra, "-o", str(run / "s")])
    err = _err(capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and message in err and "mode=" not in err, err


def test_topk_names_its_mode_flag_for_a_function_without_a_rule(run, capsys):
    rc = main(["topk", *_byo(run, "_byo_models:sigmoid", weights=False), "--manifest", str(run / "m.jsonl"),
               "--layers", ":add", "--mode", "deconv", "--clip-s", "0.5", "--device", "cpu", "--no-progress",
               "-o", str(run / "t")])
    err = _err(capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "use --mode gradient for this model" in err, err


def test_grad_cam_at_an_operation_that_an_in_place_call_overwrites_later():
    """FunctionalNet: ``x = F.relu_(y + 2.0 * x)`` — Grad-CAM at ``:add#2`` is at the sum, not at its ReLU."""
    from audioconv.interpret.gradcam import grad_cam
    from _residual import functional_resnet

    model = functional_resnet()
    torch.manual_seed(0)
    x = 3 * torch.randn(4, 1, 16, 20, dtype=torch.float64)
    saved = []
    original = type(model).forward

    def forward(self, x):  # FunctionalNet.forward, keeping the sum (a copy goes through the in-place ReLU)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        y = self.conv3(F.leaky_relu(self.conv2(x), 0.1)) + self.gate(x) * 0.5
        saved.append(y + 2.0 * x)
        x = F.avg_pool2d(F.relu(saved[-1]), 2, ceil_mode=True, count_include_pad=False, padding=1)
        x = torch.tanh(x) - x / 3
        return self.fc(x.mean((2, 3)))

    type(model).forward = forward
    try:
        logits = model(x)
        cls = logits.argmax(1)
        (g,) = torch.autograd.grad(logits[torch.arange(4), cls].sum(), saved[0])
    finally:
        type(model).forward = original
    ref = (g.mean((2, 3), keepdim=True) * saved[0]).sum(1).detach()
    assert ref.abs().max() > 0 and (saved[0] < 0).any()  # the ReLU changes the sum
    torch.testing.assert_close(grad_cam(model, x, ":add#2", relu=False, device="cpu"), ref)


def test_a_bare_operation_name_finds_the_backbones_own_operation():
    """``max_pool`` alone names the ``F.max_pool2d`` of the user's network's own ``forward``, as
    ``:max_pool`` does (behind the package's front end it was "unknown layer")."""
    from audioconv.interpret.traced import TracedModel

    traced = TracedModel(_brought(), torch.device("cpu"))
    assert traced.key("max_pool") == traced.key(":max_pool") == traced.key("backbone:max_pool")
    assert traced.key("layer1") == traced.key("backbone.layer1")  # a module name still goes first
