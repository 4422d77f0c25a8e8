"""The projector on residual and branching graphs, float64 on CPU, against two outside references:

* Captum: ``map == activation × NeuronDeconvolution / NeuronGuidedBackprop / NeuronGradient``
  attribution of the neuron (single position), ``map == attribution of Σ act·stopgrad(act)`` (whole
  map), on a ResNet, a DenseNet-style concatenation net and a BC-ResNet (frequency-wise and
  temporal depthwise convs, sub-spectral norm, mean over frequency, broadcast residual);
* an autograd reference of our own (``_residual.reference_maps``: the network's ReLU/LeakyReLU/tanh
  replaced by ``torch.autograd.Function`` s whose backward is the mode's rule; autograd does the
  rest), also on a network of functional ops that Captum cannot hook (``F.relu``, in-place ReLU,
  ``F.max_pool2d``, ``F.avg_pool2d``, ``torch.tanh``, broadcasts, scaled skips).

Tolerance 1e-9 relative to the largest value of the reference map.
"""
import warnings

import pytest
import torch

from audioconv.interpret import Projector
from _residual import bcresnet_cnn, densenet_cnn, functional_resnet, reference_maps, resnet_cnn
from _tiny_cnn import Classify

captum_attr = pytest.importorskip("captum.attr")
CAPTUM = {"deconv": captum_attr.NeuronDeconvolution, "guided": captum_attr.NeuronGuidedBackprop,
          "gradient": captum_attr.NeuronGradient}
MODES = ["deconv", "guided", "gradient"]
TOL = 1e-9

ARCHS = {  # model, layers (module names), input shape
    "resnet": (resnet_cnn, ["block1.relu2", "block2.relu2", "block2.relu1"], (2, 1, 16, 22)),
    "densenet": (densenet_cnn, ["dense1.relu", "transition.2", "out_relu"], (2, 1, 12, 18)),
    "bcresnet": (bcresnet_cnn, ["block1.relu", "block2.relu", "block3.relu"], (2, 1, 16, 20)),
}


def _x(shape, seed=0, scale=2.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _rel(a, b):
    scale = float(b.abs().max())
    return float((a - b).abs().max()) / scale if scale > 0 else float(a.abs().max())


def _captum(mode, model, module, x, selector):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CAPTUM[mode](model, module).attribute(x, neuron_selector=selector)[:, 0]


def _unit_seed(proj, k):
    """seed_fn for the reference: unit k's activation at its position, all else zero."""
    def seed(y):
        s = torch.zeros_like(y)
        b = torch.arange(y.shape[0])
        c = torch.tensor([proj.channel_of(i, k) for i in range(y.shape[0])])
        if y.dim() == 2:
            s[b, c] = y[b, c]
        else:
            f, t = proj.positions[:, k, 0], proj.positions[:, k, 1]
            s[b, c, f, t] = y[b, c, f, t]
        return s
    return seed


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_residual_graphs_match_captum(arch, mode):
    build, layers, shape = ARCHS[arch]
    model = build()
    x = _x(shape, 1)
    modules = dict(model.named_modules())
    p = Projector(model, mode, device="cpu")
    live = 0
    for layer in layers:
        chans = [0, 1, 2]
        proj = p.project(x, layer, chans, "max", progress=False)
        for b in range(x.shape[0]):
            for k, c in enumerate(chans):
                f, t = (int(v) for v in proj.positions[b, k])
                ref = _captum(mode, model, modules[layer], x[b:b + 1], (c, f, t))[0] * proj.activations[b, k]
                assert _rel(proj.maps[b, k], ref) <= TOL, (arch, layer, mode, b, c)
                live += int(ref.abs().max() > 0)
        whole = p.project(x, layer, [1], "map", progress=False)
        ref = _captum(mode, model, modules[layer], x, lambda out: (out[:, 1] * out[:, 1].detach()).sum((1, 2)))
        assert _rel(whole.maps[:, 0], ref) <= TOL, (arch, layer, mode, "map")
    assert live >= len(layers) * 4  # most references are non-trivial


@pytest.mark.parametrize("mode", MODES)
def test_a_logit_of_a_residual_net_matches_captum(mode):
    """A (B, C) layer (the classifier's linear output) projects like a 1 × 1 feature map."""
    model = resnet_cnn()
    x = _x((2, 1, 16, 22), 2)
    proj = Projector(model, mode, device="cpu").project(x, "head.3", [0, 2], "max", progress=False)
    assert proj.feature_size == (1, 1) and proj.positions.abs().sum() == 0
    for k, c in enumerate([0, 2]):
        ref = _captum(mode, model, model.head[3], x, c) * proj.activations[:, k, None, None]
        assert _rel(proj.maps[:, k], ref) <= TOL


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("arch", sorted(ARCHS) + ["functional"])
def test_graphs_match_the_autograd_reference_on_crops_and_full_planes(arch, mode):
    if arch == "functional":
        model, layers, shape = functional_resnet(), ["fc"], (2, 1, 12, 16)
    else:
        build, layers, shape = ARCHS[arch]
        model = build()
    x = _x(shape, 3)
    modules = dict(model.named_modules())
    p = Projector(model, mode, device="cpu")
    for layer in layers:
        for crop in (True, False):
            proj = p.project(x, layer, [0, 1, 2], "max", progress=False, crop=crop)
            for k in range(proj.maps.shape[1]):
                ref = reference_maps(model, x, modules[layer], mode, _unit_seed(proj, k))
                assert _rel(proj.maps[:, k], ref) <= TOL, (arch, layer, mode, crop, k)
        whole = p.project(x, layer, [0, 1], "map", progress=False)
        for k in range(2):
            ref = reference_maps(model, x, modules[layer], mode, lambda y, k=k: torch.zeros_like(y).index_copy(
                1, torch.tensor([k]), y[:, k:k + 1]))
            assert _rel(whole.maps[:, k], ref) <= TOL, (arch, layer, mode, "map")


def test_functional_and_in_place_ops_match_captums_gradient():
    """Captum's NeuronGradient is the plain gradient whatever the activation (Captum hooks nn.ReLU
    modules only, so the functional net's deconv/guided are checked against the reference above)."""
    mode = "gradient"
    model = functional_resnet()
    x = _x((2, 1, 12, 16), 4)
    proj = Projector(model, mode, device="cpu").project(x, "fc", [0, 1, 2], "max", progress=False)
    for k in range(3):
        ref = _captum(mode, model, model.fc, x, k) * proj.activations[:, k, None, None]
        assert _rel(proj.maps[:, k], ref) <= TOL


# ---- negative seeds: pre-activation layers ------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_negative_activations_project_as_the_negated_neuron(mode):
    """A pre-activation layer (BatchNorm output, the residual sum before its ReLU) has negative
    activations. ``gradient`` is linear in the seed: ``map = a · attribution(neuron)``. The deconv and
    guided rules rectify the backward signal, which is only positively homogeneous, so for a < 0
    ``map = |a| · attribution(−neuron)`` (Captum with the selector ``−out[c, f, t]``), and
    ``a · attribution(neuron)`` does not hold."""
    model = resnet_cnn()
    x = _x((1, 1, 16, 22), 5)
    p = Projector(model, mode, device="cpu")
    fm = p.feature_maps(x, "block1.bn2")[0]  # pre-activation (before += and ReLU)
    negative = torch.nonzero(fm < -0.3)[:3].tolist()
    positive = torch.nonzero(fm > 0.3)[:2].tolist()
    differs = 0
    for c, f, t in negative + positive:
        proj = p.project(x, "block1.bn2", [c], (f, t), progress=False)
        a = float(proj.activations[0, 0])
        sign = 1.0 if a >= 0 else -1.0
        signed = _captum(mode, model, model.block1.bn2, x, lambda out: sign * out[:, c, f, t])[0]
        assert _rel(proj.maps[0, 0], abs(a) * signed) <= TOL, (mode, c, f, t)
        plain = _captum(mode, model, model.block1.bn2, x, (c, f, t))[0] * a
        differs += int(_rel(proj.maps[0, 0], plain) > 1e-6)
    if mode == "gradient":
        assert differs == 0
    else:
        assert differs >= 1  # the simple identity fails for some negative seed


# ---- the package's own residual family ------------------------------------------------------------


def _builtin_bcresnet():
    from audioconv.models.bcresnet import BCResNet
    from _residual import randomise_batchnorm

    torch.manual_seed(0)
    model = BCResNet(3, sample_rate=8000, width=0.5, frontend=dict(n_mels=20, n_fft=256, win_length=200, hop_length=80))
    return randomise_batchnorm(model.double(), 4).eval()


@pytest.mark.parametrize("mode", MODES)
def test_builtin_bcresnet_matches_the_reference_and_captum(mode):
    """BCResNet: stage names, SiLU in the temporal branch (the ReLU-family rule), the frequency mean as
    AdaptiveAvgPool2d((1, None)), SubSpectralNorm's reshape; crop and full plane."""
    model = _builtin_bcresnet()
    x = _x((2, 1, 20, 18), 6) * 5
    p = Projector(model, mode, device="cpu")
    modules = dict(model.named_modules())
    for layer, module in (("stage1", model.feature_module("stage1")), ("stage2", model.feature_module("stage2")),
                          ("blocks.2.temporal.act", modules["blocks.2.temporal.act"])):
        for crop in (True, False):
            proj = p.project(x, layer, [0, 1, 3], "max", progress=False, crop=crop)
            for k in range(3):
                ref = reference_maps(model, x, module, mode, _unit_seed(proj, k), entry=model.classify)
                assert _rel(proj.maps[:, k], ref) <= TOL, (layer, mode, crop, k)
                if mode == "gradient":
                    cap = _captum(mode, Classify(model), module, x, lambda out, k=k: out[
                        torch.arange(2), proj.channel_of(0, k), proj.positions[:, k, 0], proj.positions[:, k, 1]])
                    assert _rel(proj.maps[:, k], cap * proj.activations[:, k, None, None]) <= TOL
