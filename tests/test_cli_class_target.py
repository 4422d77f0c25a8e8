"""`audioconv project --target CLASS`: class saliency from the command line, against Captum (float64) and
the library; file names from class names made safe; one-line errors."""
import json
import warnings

import numpy as np
import pytest
import torch

from audioconv.cli import main
from audioconv.features import LogMel
from audioconv.interpret import saliency
from audioconv.interpret.sonify import masked_audio
from audioconv.io import audio
from audioconv.training.checkpoint import save_checkpoint
from _tiny_cnn import Classify, tiny_cnn
import test_cli_project

setup = test_cli_project.setup  # the fixture: a tiny checkpoint and three tones




def _project(root, *extra, out="cls"):
    return main(["project", "--checkpoint", str(root / "run" / "best.pt"), "--audio", str(root / "tone1.wav"),
                 "--device", "cpu", "-o", str(root / out), *extra])


def test_project_a_class_by_name_matches_captum_deconvolution(setup):
    captum_attr = pytest.importorskip("captum.attr")
    root, model = setup
    assert _project(root, "--target", "b", "--mode", "deconv") == 0
    out = root / "cls"
    for name in ("projection.png", "masked.wav", "griffinlim.wav", "projection.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "projection.json").read_text())
    wav, _ = audio.load(root / "tone1.wav")
    logmel = model.frontend(wav[None])
    logits = model.classify(logmel)[0].detach()
    assert info["class"] == "b" and info["index"] == 1 and info["layer"] == "logits"
    assert info["logit"] == pytest.approx(float(logits[1]), rel=1e-5)
    assert info["probability"] == pytest.approx(float(torch.softmax(logits, 0)[1]), rel=1e-5)
    # the map: the logit's deconvnet derivative, Captum's Deconvolution in float64
    m64 = tiny_cnn(0).double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = captum_attr.Deconvolution(Classify(m64)).attribute(logmel.double(), target=1)[0, 0]
    assert info["map_max"] == pytest.approx(float(ref.max()), rel=1e-4)
    assert info["map_min"] == pytest.approx(float(ref.min()), rel=1e-4)
    masked, _ = audio.load(out / "masked.wav")
    expected = masked_audio(wav, ref.float(), LogMel(model.frontend.config))
    np.testing.assert_allclose(masked.numpy(), expected.numpy(), atol=2e-4)  # 16-bit WAV rounding


def test_project_predicted_and_several_classes(setup, capsys):
    root, model = setup
    wav, _ = audio.load(root / "tone1.wav")
    logmel = model.frontend(wav[None])
    predicted = int(model.classify(logmel).argmax())
    assert _project(root, "--target", "predicted", "--mode", "gradient", out="pred") == 0
    info = json.loads((root / "pred" / "projection.json").read_text())
    assert info["index"] == predicted and info["predicted"] == "ab"[predicted]
    assert not (root / "pred" / "griffinlim.wav").exists()  # a signed gradient is not a spectrogram
    g = saliency(model, logmel, predicted, "gradient", device="cpu")[0]
    assert info["map_max"] == pytest.approx(float(g.max()), rel=1e-4)
    assert ("masked.wav" in info["files"]) == (float(g.max()) > 0)
    assert _project(root, "--target", "a,1", "--mode", "guided", out="both") == 0
    both = json.loads((root / "both" / "projection.json").read_text())
    assert [c["class"] for c in both["classes"]] == ["a", "b"]
    for c in both["classes"]:
        guided = saliency(model, logmel, c["index"], "guided", device="cpu")[0]
        assert c["map_max"] == pytest.approx(float(guided.max()), rel=1e-4)
        assert (root / "both" / f"class_{c['class']}" / "projection.png").is_file()
    assert "class a (logit" in capsys.readouterr().out


def test_class_names_become_safe_folder_names(setup):
    root, model = setup
    save_checkpoint(root / "odd.pt", {"kind": "model", "model": model.state_dict(), "model_config": model.config.to_dict(),
                                      "labels": ["dog:bark#1", "a b/c"], "epoch": 1})
    rc = main(["project", "--checkpoint", str(root / "odd.pt"), "--audio", str(root / "tone0.wav"), "--device", "cpu",
               "--target", "0,1", "-o", str(root / "odd")])
    assert rc == 0
    assert (root / "odd" / "class_dog__bark-1" / "projection.png").is_file()
    assert (root / "odd" / "class_a_b_c" / "projection.png").is_file()
    info = json.loads((root / "odd" / "projection.json").read_text())
    assert [c["class"] for c in info["classes"]] == ["dog:bark#1", "a b/c"]
    assert info["classes"][0]["files"]["projection.png"] == "class_dog__bark-1/projection.png"


@pytest.mark.parametrize("args, message", [
    ([], "give --unit (with --layer) to project hidden units, or --target CLASS"),
    (["--target", "a", "--layer", "conv2", "--unit", "1"], "give --unit or --target, not both"),
    (["--unit", "1"], "--unit needs --layer"),
    (["--target", "a", "--layer", "conv2"], "--layer applies only to --unit; --target explains the class logits of the whole clip"),
    (["--target", "a", "--position", "max"], "--position applies only to --unit"),
    (["--target", "cat"], "--target 'cat' is not a class: use 'predicted', a class name (a, b) or an index 0..1"),
    (["--target", "2"], "--target 2 is out of range: the model has classes 0..1"),
])
def test_project_target_errors(setup, capsys, args, message):
    root, _ = setup
    rc = _project(root, *args, out="bad")
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
