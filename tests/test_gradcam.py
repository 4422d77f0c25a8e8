"""Grad-CAM, guided Grad-CAM and class saliency against Captum in float64, on a chain CNN and on
three residual graphs (module ReLUs, functional/in-place ReLUs, a BC-ResNet-style broadcast block);
unit targets against the projector; errors for nonlinearities without a rule."""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from audioconv.interpret import Projector, Unit, grad_cam, guided_grad_cam, saliency
from audioconv.models.spectrogram_cnn import SpectrogramCNN
from _methods_models import make
from _tiny_cnn import Classify, tiny_cnn

captum_attr = pytest.importorskip("captum.attr")
TOL = 1e-9




class _LayerOutput(nn.Module):
    """A model's layer output as the forward result (Captum's target then indexes a unit)."""

    def __init__(self, model, module):
        super().__init__()
        self.model, self.module = model, module

    def forward(self, x):
        out = []
        handle = self.module.register_forward_hook(lambda m, a, o: out.append(o))
        try:
            self.model(x)
        finally:
            handle.remove()
        self.shape = tuple(out[-1].shape)
        return out[-1].flatten(1)


def _rel(a, b):
    a, b = a.detach(), b.detach()
    scale = b.abs().max()
    assert scale > 0, "the reference is all zero: the comparison would be vacuous"
    return float((a - b).abs().max() / scale)


def _captum(cls, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(*args).attribute(**kwargs)


def _cases():
    """(name, model we explain, the module-ReLU model Captum runs, Grad-CAM layer name, that module)."""
    tiny = tiny_cnn(0).double()
    res, fun, bc = make("resnet"), make("functional"), make("bcblock")
    return [
        ("spectrogram_cnn", tiny, Classify(tiny), "conv2", tiny.feature_module("conv2")),
        ("resnet", res, res, "top", res.top),
        ("functional", fun, make("resnet"), "top", make("resnet").top),  # same weights, F.relu / relu_ inside
        ("bcblock", bc, bc, "out_relu", bc.out_relu),
    ]


def _input(seed=3, shape=(3, 1, 16, 20)):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


@pytest.mark.parametrize("case", range(4))
def test_class_saliency_matches_captum(case):
    name, model, ref_model, _, _ = _cases()[case]
    if name == "functional":
        ref_model = make("resnet")
    x = _input()
    if name == "spectrogram_cnn":
        x = x * 5 - 40
    target = [0, 1, 0] if name == "spectrogram_cnn" else [0, 1, 2]
    maps = {}
    for mode, cls, kw in (("gradient", captum_attr.Saliency, {"abs": False}),
                          ("guided", captum_attr.GuidedBackprop, {}), ("deconv", captum_attr.Deconvolution, {})):
        maps[mode] = saliency(model, x, target, mode, device="cpu")
        ref = _captum(cls, ref_model, inputs=x, target=target, **kw)[:, 0]
        assert _rel(maps[mode], ref) <= TOL, (name, mode)
    # the three rules really differ on these models (so the agreement above is not vacuous)
    assert _rel(maps["deconv"], maps["gradient"]) > 0.1 and _rel(maps["guided"], maps["gradient"]) > 0.1


@pytest.mark.parametrize("case", range(4))
@pytest.mark.parametrize("relu", [True, False])
def test_grad_cam_matches_captum_layer_grad_cam(case, relu):
    name, model, ref_model, layer, module = _cases()[case]
    if name == "functional":
        ref_model = make("resnet")
        module = ref_model.top
    x = _input(5)
    if name == "spectrogram_cnn":
        x = x * 5 - 40
    target = [1, 0, 1]
    cam = grad_cam(model, x, layer, target, relu=relu, device="cpu")
    ref = _captum(captum_attr.LayerGradCam, ref_model, module, inputs=x, target=target, relu_attributions=relu)
    assert cam.shape == ref[:, 0].shape
    assert _rel(cam, ref[:, 0]) <= TOL, name
    up = grad_cam(model, x, layer, target, relu=relu, upsample=True, device="cpu")
    ref_up = captum_attr.LayerAttribution.interpolate(ref, tuple(x.shape[-2:]))[:, 0]
    assert up.shape == x.shape[:1] + x.shape[-2:]
    assert _rel(up, ref_up) <= TOL
    bil = grad_cam(model, x, layer, target, relu=relu, upsample=True, interpolation="bilinear", device="cpu")
    ref_bil = captum_attr.LayerAttribution.interpolate(ref, tuple(x.shape[-2:]), "bilinear")[:, 0]
    assert _rel(bil, ref_bil) <= TOL


@pytest.mark.parametrize("case", range(4))
def test_guided_grad_cam_matches_captum(case):
    name, model, ref_model, layer, module = _cases()[case]
    if name == "functional":
        ref_model = make("resnet")
        module = ref_model.top
    x = _input(7)
    if name == "spectrogram_cnn":
        x = x * 5 - 40
    target = [0, 0, 1]
    mine = guided_grad_cam(model, x, layer, target, device="cpu")
    ref = _captum(captum_attr.GuidedGradCam, ref_model, module, inputs=x, target=target)[:, 0]
    assert _rel(mine, ref) <= TOL, name


def test_grad_cam_of_a_unit_matches_captum():
    model = tiny_cnn(1).double()
    x = _input(9) * 5 - 40
    unit = Unit("conv2", 5, (3, 4))
    cam = grad_cam(model, x, "conv1", unit, relu=False, device="cpu")
    fm = _LayerOutput(Classify(model), model.feature_module("conv2"))
    fm(x)
    _, _, H, W = fm.shape
    index = 5 * H * W + 3 * W + 4  # (channel 5, f 3, t 4) in the flattened layer output
    ref = _captum(captum_attr.LayerGradCam, fm, model.feature_module("conv1"), inputs=x, target=index)[:, 0]
    assert _rel(cam, ref) <= TOL


def test_unit_saliency_times_activation_is_the_projection():
    model = tiny_cnn(0).double()
    x = _input(11, (3, 1, 16, 23)) * 10 - 40
    fm = Projector(model, device="cpu").feature_maps(x, "conv2")[:, 5]  # (B, H, W)
    cell = int(fm.amin(0).flatten().argmax())  # a cell active in every example
    for mode in ("gradient", "guided", "deconv"):
        for position in ("max", (cell // fm.shape[-1], cell % fm.shape[-1])):
            proj = Projector(model, mode, device="cpu").project(x, "conv2", [5], position, progress=False)
            s = saliency(model, x, Unit("conv2", 5, position), mode, device="cpu")
            assert float(proj.activations.min()) > 0
            assert _rel(s * proj.activations[:, 0, None, None], proj.maps[:, 0]) <= TOL, (mode, position)


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_leaky_relu_and_tanh_rules_match_the_projector(activation):
    torch.manual_seed(0)
    model = SpectrogramCNN(2, sample_rate=8000, channels=(4, 6), activation=activation, dropout=0.0,
                           frontend=dict(n_mels=16, n_fft=256, win_length=200, hop_length=80)).double().eval()
    x = _input(13, (2, 1, 16, 21))
    fm = Projector(model, device="cpu").feature_maps(x, "conv2")[:, 1]
    cell = int(fm.amin(0).flatten().argmax())  # positive in every example: map = activation × saliency there
    pos = (cell // fm.shape[-1], cell % fm.shape[-1])
    assert float(fm.amin(0).max()) > 0
    for mode in ("guided", "deconv"):
        proj = Projector(model, mode, device="cpu").project(x, "conv2", [1], pos, progress=False)
        s = saliency(model, x, Unit("conv2", 1, pos), mode, device="cpu")
        a = proj.activations[:, 0, None, None]
        assert _rel(s * a, proj.maps[:, 0]) <= TOL, mode


def test_waveform_inputs_go_through_the_front_end():
    model = tiny_cnn(0)
    wav = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    logmel = model.frontend(wav)
    a = grad_cam(model, wav, "conv2", 1, device="cpu")
    b = grad_cam(model, logmel, "conv2", 1, device="cpu")
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(guided_grad_cam(model, wav, "conv2", 1, device="cpu"),
                               guided_grad_cam(model, logmel, "conv2", 1, device="cpu"))


def test_predicted_class_is_the_default_target():
    model = tiny_cnn(0).double()
    x = _input(1) * 5 - 40
    predicted = model.classify(x).argmax(1)
    torch.testing.assert_close(grad_cam(model, x, "conv2", device="cpu"), grad_cam(model, x, "conv2", predicted, device="cpu"))


class _Activated(nn.Module):
    """conv → an activation (``"gelu"``, ``"sigmoid"`` modules, or a ``"gate"`` ``relu(y) * y``, a product of two signals) → mean → linear."""

    def __init__(self, kind: str):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = {"gelu": nn.GELU(), "sigmoid": nn.Sigmoid(), "gate": nn.Identity()}[kind]
        self.kind = kind
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        y = self.conv(x)
        y = torch.relu(y) * y if self.kind == "gate" else self.act(y)
        return self.fc(y.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind, message", [
    ("sigmoid", r"sigmoid has no {mode} rule.* operation 'act:sigmoid#1' in module 'act' is on the path to layer 'logits'"),
    ("gate", r"Tensor.mul: mul of two signals .* operation ':mul#1' in the model's own forward is on the path")])
def test_nonlinearity_without_a_rule_is_refused_by_name(kind, message):
    """deconv / guided class saliency runs the projector's rules: an operation without one is the projector's
    one-line error naming it and its module; the gradient (autograd) takes any differentiable model."""
    model = _Activated(kind).double().eval()
    x = _input(0, (1, 1, 8, 8))
    for mode in ("deconv", "guided"):
        with pytest.raises(ValueError, match=message.format(mode=mode)):
            saliency(model, x, 0, mode, device="cpu")
    with pytest.raises(ValueError, match="on the path to layer 'logits'"):
        guided_grad_cam(model, x, "conv", 0, device="cpu")
    g = saliency(model, x, 0, "gradient", device="cpu")
    x1 = x.clone().requires_grad_(True)
    model(x1)[:, 0].sum().backward()
    torch.testing.assert_close(g, x1.grad[:, 0])


def test_gelu_class_saliency_follows_the_projector_rule():
    """GELU (like BC-ResNet's SiLU) has the projector's rule (deconv: relu(g); guided: relu(g)·f'(x)), checked
    against the independent autograd reference of tests/_residual.py."""
    from _residual import reference_maps

    model = _Activated("gelu").double().eval()
    x = _input(2, (2, 1, 8, 8))
    for mode in ("deconv", "guided", "gradient"):
        mine = saliency(model, x, [1, 0], mode, device="cpu")
        ref = reference_maps(model, x, model.fc, mode, lambda y: torch.eye(2, dtype=y.dtype)[[1, 0]])
        assert _rel(mine, ref) <= TOL, mode


def test_bad_layers_and_targets_are_one_line_errors():
    model = tiny_cnn(0).double()
    x = _input(0, (2, 1, 16, 20))
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        grad_cam(model, x, "conv9", 0, device="cpu")
    with pytest.raises(ValueError, match=r"needs a layer with feature maps .* 'head.fc'"):
        grad_cam(model, x, "head.fc", 0, device="cpu")
    with pytest.raises(ValueError, match="does not depend on layer 'conv2'"):
        grad_cam(model, x, "conv2", Unit("conv1", 0), device="cpu")
    with pytest.raises(ValueError, match="class index 5 is out of range"):
        grad_cam(model, x, "conv2", 5, device="cpu")
    with pytest.raises(ValueError, match="one class index or one per example"):
        grad_cam(model, x, "conv2", [0, 1, 0], device="cpu")
    with pytest.raises(ValueError, match="channel 99 does not exist"):
        grad_cam(model, x, "conv1", Unit("conv2", 99), device="cpu")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        grad_cam(model, x, "conv2", 0, upsample=True, interpolation="cubic", device="cpu")
    with pytest.raises(ValueError, match="Unit position"):
        Unit("conv2", 0, "center")


def test_model_is_left_as_it_was():
    model = tiny_cnn(0).double()
    model.train()
    model.features.bn1.eval()
    flags = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _input(0, (2, 1, 16, 20)) * 5 - 40
    guided_grad_cam(model, x, "conv2", 1, device="cpu")
    saliency(model, x, Unit("conv2", 1), "deconv", device="cpu")
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_grad_cam_figure_has_seconds_and_hz_axes():
    from audioconv.interpret.traced import TracedModel
    from audioconv.plots.explanations import plot_grad_cam
    from audioconv.plots.spectrogram import hz_edges, seconds_edges

    model = tiny_cnn(0)
    wav = torch.randn(1, 1, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    logmel = model.frontend(wav)
    cam = grad_cam(model, logmel, "conv2", 1, device="cpu")  # layer resolution, drawn over the input cells
    ggc = guided_grad_cam(model, logmel, "conv2", 1, device="cpu")
    hz, seconds = TracedModel(model, "cpu").axes(*logmel.shape[-2:])
    fig = plot_grad_cam(logmel[0, 0], cam[0], ggc[0], hz, seconds, title="class b")
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_xlim(), seconds_edges(seconds)[[0, -1]])
    np.testing.assert_allclose(ax.get_ylim(), hz_edges(hz)[[0, -1]])
    assert ax.get_xlabel() == "Time (s)" and ax.get_ylabel() == "Frequency (Hz)"
    assert [a.get_title() for a in fig.axes[:3]] == ["input (log-mel)", "Grad-CAM", "guided Grad-CAM"]
