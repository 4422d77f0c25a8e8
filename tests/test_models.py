"""Model families and the registry: BC-ResNet's size against the paper and a closed-form count, its
blocks and sub-spectral normalisation against explicit formulas (float64), the registry's specs and
its one-line errors for bad ones."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from audioconv.models import BCResNet, LogMelClassifier, SpectrogramCNN, SubSpectralNorm, build_model, describe, rebuild
from audioconv.models.bcresnet import BCResBlock
from audioconv.models.registry import count_parameters

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------------------------ size
def expected_parameters(width: float, n_classes: int, n_mels: int, sub_bands: int = 5) -> int:
    """BC-ResNet's parameter count from the paper's table (Kim et al. 2021, Table 1), counted by hand:
    input BatchNorm(1); stem conv 5×5 + BN; per block a frequency dw conv 3×1, sub-spectral norm
    (2 per channel and band), temporal dw conv 1×3, BN, pointwise conv (+ 1×1 conv and BN in a
    transition block); head dw conv (≤5)×5, pointwise conv, BN, linear."""
    ch = lambda f: max(1, round(8 * width * f))  # noqa: E731
    stem = ch(2)
    total = 2 + stem * 25 + 2 * stem
    rows, c_in = math.ceil(n_mels / 2), stem
    for factor, n_blocks, stride in ((1, 2, 1), (1.5, 2, 2), (2, 4, 2), (2.5, 4, 1)):
        c = ch(factor)
        for i in range(n_blocks):
            if i == 0:
                total += c_in * c + 2 * c
                rows = math.ceil(rows / stride)
            bands = max(d for d in range(1, min(sub_bands, rows) + 1) if rows % d == 0)
            total += 3 * c + 2 * c * bands + 3 * c + 2 * c + c * c
            c_in = c
    head = ch(4)
    return total + c_in * min(5, rows) * 5 + c_in * head + 2 * head + head * n_classes + n_classes


@pytest.mark.parametrize("width", [1, 1.5, 2, 3, 6, 8])
@pytest.mark.parametrize("n_mels", [40, 64])
def test_parameter_counts_follow_the_paper(width, n_mels):
    model = BCResNet(12, width=width, frontend={"n_mels": n_mels})
    n = count_parameters(model)
    assert n == expected_parameters(width, 12, n_mels)
    if n_mels == 40 and width == 1:  # the paper: BC-ResNet-1 has 9.2k parameters ...
        assert n == pytest.approx(9.2e3, rel=0.01)
    if n_mels == 40 and width == 8:  # ... and BC-ResNet-8 321k
        assert n == pytest.approx(321e3, rel=0.005)
    assert 8e3 < n < 3.3e5


# ------------------------------------------------------------------------------ sub-spectral norm
def explicit_ssn(x, weight, bias, mean=None, var=None, sub_bands=5, eps=1e-5):
    """Per (channel, band) BatchNorm written out in numpy: statistics over batch, the band's rows and
    time (biased variance) unless ``mean``/``var`` (C, S) are given (eval mode)."""
    out = np.empty_like(x)
    n_rows = x.shape[2] // sub_bands
    for c in range(x.shape[1]):
        for s in range(sub_bands):
            v = x[:, c, s * n_rows:(s + 1) * n_rows, :]
            m = v.mean() if mean is None else mean[c, s]
            var_ = v.var() if var is None else var[c, s]
            out[:, c, s * n_rows:(s + 1) * n_rows, :] = (v - m) / np.sqrt(var_ + eps) * weight[c, s] + bias[c, s]
    return out


def test_sub_spectral_norm_is_batchnorm_per_sub_band():
    rng = np.random.default_rng(0)
    C, S = 3, 5
    x = rng.normal(size=(4, C, 10, 7)) * rng.uniform(0.5, 3, size=(1, 1, 10, 1)) + rng.normal(size=(1, 1, 10, 1)) * 4
    ssn = SubSpectralNorm(C, S).double()
    with torch.no_grad():
        ssn.bn.weight.uniform_(0.5, 2.0)
        ssn.bn.bias.uniform_(-1.0, 1.0)
    w = ssn.bn.weight.detach().numpy().reshape(C, S)  # parameter c·S + s belongs to channel c, band s
    b = ssn.bn.bias.detach().numpy().reshape(C, S)

    y = ssn(torch.from_numpy(x)).detach().numpy()  # train mode: batch statistics per (channel, band)
    np.testing.assert_allclose(y, explicit_ssn(x, w, b), rtol=1e-10, atol=1e-10)
    # each band's statistics differ (the rows were scaled and shifted): a plain BatchNorm would not match
    plain = torch.nn.BatchNorm2d(C).double()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(plain - explicit_ssn(x, np.ones((C, S)), np.zeros((C, S)))).max() > 0.1

    # running statistics: momentum 0.1 towards the batch mean and the unbiased variance of each band
    bands = x.reshape(4, C, S, 2, 7)
    mean = bands.mean(axis=(0, 3, 4))
    var_unbiased = bands.var(axis=(0, 3, 4), ddof=1)
    np.testing.assert_allclose(ssn.bn.running_mean.numpy().reshape(C, S), 0.1 * mean, rtol=1e-10)
    np.testing.assert_allclose(ssn.bn.running_var.numpy().reshape(C, S), 0.9 + 0.1 * var_unbiased, rtol=1e-10)

    # eval mode: the affine map of the running statistics, also as affine()'s (C, F) scale and shift
    ssn.eval()
    rm, rv = 0.1 * mean, 0.9 + 0.1 * var_unbiased
    y_eval = ssn(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y_eval, explicit_ssn(x, w, b, rm, rv), rtol=1e-10, atol=1e-10)
    scale, shift = (t.detach().numpy() for t in ssn.affine(10))
    np.testing.assert_allclose(x * scale[None, :, :, None] + shift[None, :, :, None], y_eval, rtol=1e-10, atol=1e-10)

    with pytest.raises(ValueError, match=r"needs \(batch, 3, a multiple of 5 rows, time\), got \(4, 3, 8, 7\)"):
        ssn(torch.zeros(4, 3, 8, 7, dtype=torch.float64))


# ------------------------------------------------------------------------------ the blocks
def _randomise_norms(module, rng):
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                for t, lo, hi in ((m.weight, 0.5, 1.5), (m.bias, -0.5, 0.5), (m.running_mean, -0.5, 0.5),
                                  (m.running_var, 0.5, 2.0)):
                    t.copy_(torch.from_numpy(rng.uniform(lo, hi, size=t.shape)))


def _bn(x, bn):
    """Eval-mode BatchNorm written out: (x − running mean) / √(running var + eps) · γ + β, per channel."""
    v = lambda t: t.detach().view(1, -1, 1, 1)  # noqa: E731
    return (x - v(bn.running_mean)) / torch.sqrt(v(bn.running_var) + bn.eps) * v(bn.weight) + v(bn.bias)


def _ssn(x, ssn):
    b, c, f, t = x.shape
    return _bn(x.reshape(b, c * ssn.sub_bands, f // ssn.sub_bands, t), ssn.bn).reshape(b, c, f, t)


@pytest.mark.parametrize("transition", [False, True])
def test_broadcasted_residual_block_matches_its_formula(transition):
    """normal: relu(x + f2(x) + f1(mean_F f2(x))); transition: x' = relu(bn(conv1x1 x)), relu(f2(x') + f1(...)),
    where f2 = SSN(freq dw conv 3×1) and f1 = pw conv(SiLU(BN(temporal dw conv 1×3, dilated))), in float64."""
    rng = np.random.default_rng(1)
    c_in, c = (3, 4) if transition else (4, 4)
    stride = 2 if transition else 1
    block = BCResBlock(c_in, c, sub_bands=2, transition=transition, freq_stride=stride, dilation=2).double()
    _randomise_norms(block, rng)
    block.eval()
    x = torch.from_numpy(rng.normal(size=(2, c_in, 8, 11)))
    with torch.no_grad():
        y = block(x)
        h = F.relu(_bn(F.conv2d(x, block.transition.conv.weight), block.transition.bn)) if transition else x
        f2 = _ssn(F.conv2d(h, block.freq_conv.weight, stride=(stride, 1), padding=(1, 0), groups=c), block.freq_norm)
        tm = block.temporal
        t = F.conv2d(f2.mean(dim=2, keepdim=True), tm.conv.weight, padding=(0, 2), dilation=(1, 2), groups=c)
        t = _bn(t, tm.bn)
        t = F.conv2d(t * torch.sigmoid(t), tm.pwconv.weight)  # (B, C, 1, T): broadcast over the rows
        ref = F.relu(f2 + t + (0 if transition else x))
    assert y.shape == (2, c, 8 // stride, 11)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_mels,sample_rate,clip_s", [(16, 8000, 0.5), (40, 16000, 1.0), (64, 16000, 1.37),
                                                       (128, 22050, 0.25)])
def test_forward_shapes_and_layers(n_mels, sample_rate, clip_s):
    torch.manual_seed(0)
    model = BCResNet(5, sample_rate=sample_rate, width=1.5, frontend={"n_mels": n_mels}).eval()
    wav = torch.randn(3, 2, int(clip_s * sample_rate)) * 0.1
    with torch.no_grad():
        logits = model(wav)
        logmel = model.frontend(wav)
        assert torch.equal(logits, model.classify(logmel))
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()

    # the short layer names: channels and frequency rows of each feature map
    maps = {}
    hooks = [model.feature_module(name).register_forward_hook(lambda m, a, out, name=name: maps.setdefault(name, out))
             for name in model.layer_names]
    with torch.no_grad():
        model.classify(logmel)
    for h in hooks:
        h.remove()
    rows = math.ceil(n_mels / 2)
    expected_rows = {"stem": rows, "stage1": rows, "stage2": math.ceil(rows / 2), "stage3": math.ceil(rows / 4),
                     "stage4": math.ceil(rows / 4)}
    expected_rows["head"] = expected_rows["stage4"] - min(5, expected_rows["stage4"]) + 1
    assert model.layer_names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    for name, fmap in maps.items():
        assert fmap.shape == (3, model.n_channels(name), expected_rows[name], logmel.shape[-1]), name
    assert [model.n_channels(n) for n in model.layer_names] == [24, 12, 18, 24, 30, 48]
    assert model.feature_module("stage2") is model.blocks[3].act
    names = dict(model.named_modules())
    for name in ("blocks.3.freq_conv", "blocks.3.freq_norm.bn", "blocks.3.temporal.act", "blocks.2.transition.conv",
                 "head.fc"):
        assert name in names
    with pytest.raises(ValueError, match="unknown layer 'stage9'; valid layers: stem, stage1"):
        model.feature_module("stage9")
    with pytest.raises(ValueError, match=r"classify expects log-mel \(batch, 1, n_mels, frames\), got \(3, 64, 10\)"):
        model.classify(torch.zeros(3, 64, 10))


# ------------------------------------------------------------------------------ the registry
def test_builtin_specs_and_widths():
    cnn = build_model("cnn", 4, 16000)
    assert type(cnn) is SpectrogramCNN and cnn.config.channels == (32, 64, 128, 128)
    half = build_model("cnn", 4, 16000, width=0.5, channels=(8, 16, 32))
    assert half.config.channels == (4, 8, 16)
    bc = build_model("bcresnet", 4, 8000, width=2, frontend={"n_mels": 40}, dropout=0.0)
    assert type(bc) is BCResNet and count_parameters(bc) == expected_parameters(2, 4, 40)
    assert build_model("bcresnet", 4).config.width == 1.0
    with pytest.raises(ValueError, match="width must be a positive number, got 0"):
        build_model("bcresnet", 4, width=0)


@pytest.mark.parametrize("spec,width", [("cnn", None), ("bcresnet", 1.5), ("_byo_models:backbone", None),
                                        ("_byo_models:full", 2.0), ("_byo_models:Namespace.create", None)])
def test_describe_and_rebuild_give_the_same_model(spec, width):
    torch.manual_seed(0)
    model = build_model(spec, 3, 8000, width=width, frontend={"n_mels": 32}, n_frames=51)
    name, config = describe(model)
    assert name == spec and config["n_classes"] == 3 and config["sample_rate"] == 8000
    again = rebuild(name, config)
    assert type(again) is type(model) and describe(again) == (name, config)
    again.load_state_dict(model.state_dict())
    wav = torch.randn(2, 1, 4000) * 0.1
    with torch.no_grad():
        assert torch.equal(model.eval()(wav), again.eval()(wav))
    if spec == "_byo_models:backbone":
        assert isinstance(model, LogMelClassifier) and model.frontend.config.n_mels == 32
        assert "backbone.1" in dict(model.named_modules()) and config["wrapped"]


def test_bad_specs_say_what_and_where():
    cases = {
        "cnnn": "unknown model 'cnnn': use 'cnn', 'bcresnet' or 'package.module:factory'",
        "no_such_pkg_xyz.models:make": ("model 'no_such_pkg_xyz.models:make': cannot import module 'no_such_pkg_xyz"
                                        ".models' (ModuleNotFoundError: No module named 'no_such_pkg_xyz')"),
        "_byo_models:nope": "model '_byo_models:nope': module '_byo_models' has no attribute 'nope'",
        "_byo_models:NOT_CALLABLE": ("model '_byo_models:NOT_CALLABLE': 'NOT_CALLABLE' is a int, "
                                     "not a callable factory"),
        "_byo_models:raises": ("model '_byo_models:raises': the factory raised ValueError: boom: no such size "
                               "(called with n_classes=3, sample_rate=8000)"),
        "_byo_models:not_a_module": ("model '_byo_models:not_a_module': the factory returned a int, "
                                     "not a torch.nn.Module"),
        "_byo_models:wrong_shape": ("model '_byo_models:wrong_shape' gives output (2, 4) for log-mel input "
                                    "(2, 1, 32, 51); expected logits (2, 3)"),
        "_byo_models:fails_forward": ("model '_byo_models:fails_forward' fails on log-mel input (2, 1, 32, 51): "
                                      "RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
        "_byo_models:no_sample_rate": ("model '_byo_models:no_sample_rate': the factory must accept keyword "
                                       "'sample_rate'"),
        "_byo_models:full_at_16k": ("model '_byo_models:full_at_16k': the model's front end runs at 16000 Hz "
                                    "but the run's sample_rate is 8000 Hz"),
        "_byo_models:full_other_frontend": ("model '_byo_models:full_other_frontend': the model's frontend is a "
                                            "NotLogMel; a model with frontend/classify must use "
                                            "audioconv.features.LogMel"),
    }
    for spec, message in cases.items():
        with pytest.raises(ValueError) as e:
            build_model(spec, 3, 8000, frontend={"n_mels": 32}, n_frames=51)
        assert str(e.value).startswith(message), (spec, str(e.value))
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="model '_byo_models:backbone': the factory takes no 'width' argument"):
        build_model("_byo_models:backbone", 3, 8000, width=2.0)
    with pytest.raises(ValueError, match="the model's front end has n_mels=32 but the run asks for n_mels=64"):
        build_model("_byo_models:full", 3, 8000, frontend={"n_mels": 64})
    with pytest.raises(ValueError, match=r"options \['channels'\] apply to the built-in models only"):
        build_model("_byo_models:backbone", 3, 8000, channels=(4,))


def test_cli_bad_model_is_one_line(tmp_path):
    """`audioconv train --model ...` with a bad spec: exit 2 and one line naming the spec (no traceback)."""
    from _tones import make_corpus

    corpus = make_corpus(tmp_path / "c", per_class={"train": 2, "validation": 1})
    base = [sys.executable, "-m", "audioconv", "train", "--train", str(corpus["train"]), "--out", str(tmp_path / "run"),
            "--sample-rate", "8000", "--clip-s", "0.5", "--n-mels", "32", "--epochs", "1", "--workers", "0",
            "--batch-size", "2", "--no-progress"]  # a batch the set can fill: no warning line before the error
    env = {"PYTHONPATH": f"{REPO}:{TESTS}", "PATH": "/usr/bin:/bin"}
    for args, message in (
            (["--model", "resnet"], "unknown model 'resnet'"),
            (["--model", "_byo_models:raises"], "model '_byo_models:raises': the factory raised ValueError: boom"),
            (["--model", "bcresnet", "--channels", "8,16"], "channels=(8, 16) applies to model cnn only"),
            (["--model", "bcresnet", "--width", "-1"], "width must be > 0, got -1.0")):
        r = subprocess.run(base + args, cwd=tmp_path, capture_output=True, text=True, env=env)
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("audioconv train: error: ") and message in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1, r.stderr


def test_factory_module_in_the_current_folder(tmp_path, monkeypatch):
    """`audioconv train --model my_models:make` run from the folder holding my_models.py finds it, as
    `python -m` would, without leaving that folder on sys.path."""
    (tmp_path / "cwd_factory_mod.py").write_text(
        "from torch import nn\n"
        "def make(n_classes, sample_rate):\n"
        "    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, n_classes))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cwd_factory_mod", raising=False)
    model = build_model("cwd_factory_mod:make", 4, 16000, n_frames=101)
    assert isinstance(model, LogMelClassifier) and str(tmp_path) not in sys.path
    sys.modules.pop("cwd_factory_mod", None)
