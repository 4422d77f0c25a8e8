"""Projector behaviour: crop = full computation, rules for LeakyReLU/tanh against an autograd oracle,
receptive fields against the closed-form formula, zero maps, errors, and a model left untouched.

Exactness against Captum is in ``test_projector_captum.py``.
"""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from audioconv.models.spectrogram_cnn import SpectrogramCNN
from audioconv.interpret import Projector, receptive_field, receptive_field_size

MODES = ["deconv", "guided", "gradient"]


# ---- models shared with the other projector tests ------------------------------------------------
def _randomise_batchnorm(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def spectrogram_cnn(activation="relu", seed=0):
    """Small package CNN in float64, eval, BatchNorm with random running statistics."""
    torch.manual_seed(seed)
    m = SpectrogramCNN(4, sample_rate=8000, channels=(6, 6, 8), activation=activation, dropout=0.0,
                       frontend=dict(n_mels=16, n_fft=256, win_length=200, hop_length=80))
    return _randomise_batchnorm(m.double()).eval()


def hand_built_cnn(seed=1):
    """nn.Sequential with BatchNorm, dilation, stride, ceil-mode pooling, dropout and a linear head."""
    torch.manual_seed(seed)
    m = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),  # 0-3
        nn.Conv2d(6, 5, 3, padding=(1, 2), dilation=(1, 2)), nn.Dropout(0.3), nn.ReLU(),  # 4-6
        nn.MaxPool2d(2, ceil_mode=True),  # 7
        nn.Conv2d(5, 6, (3, 2), stride=(1, 2), padding=1), nn.ReLU(),  # 8-9
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    return _randomise_batchnorm(m.double()).eval()


def overlapping_cnn(seed=2):
    """Overlapping max-pooling (3×3 windows, stride 2, padding 1)."""
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                      nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    return _randomise_batchnorm(m.double()).eval()


def _x(shape, seed=0, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def _close(a, b, tol=1e-9):
    a, b = a.detach(), b.detach()
    scale = max(float(b.abs().max()), 1e-300)
    assert float((a - b).abs().max()) <= tol * scale


# ---- crop = full ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("which", ["spectrogram", "hand_built", "overlapping"])
def test_receptive_field_crop_equals_full_computation(mode, which):
    model, layer, shape = {"spectrogram": (spectrogram_cnn(), "conv3", (2, 1, 16, 23)),
                           "hand_built": (hand_built_cnn(), "9", (2, 1, 20, 26)),
                           "overlapping": (overlapping_cnn(), "5", (2, 1, 17, 19))}[which]
    x = _x(shape, 1)
    p = Projector(model, mode, device="cpu")
    H, W = p.feature_maps(x, layer).shape[-2:]
    cells = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (H // 2, W // 2)]  # borders included
    pos = torch.tensor(cells).view(1, len(cells), 2).expand(2, -1, -1)
    chans = torch.tensor([0, 1, 2, 3, 0]).expand(2, -1)
    crop = p.project(x, layer, chans, pos, crop=True, progress=False)
    full = p.project(x, layer, chans, pos, crop=False, progress=False)
    assert full.maps.abs().sum() > 0
    _close(crop.maps, full.maps, 1e-12)
    _close(p.project(x, layer, [0, 3], crop=True, progress=False).maps,
           p.project(x, layer, [0, 3], crop=False, progress=False).maps, 1e-12)


# ---- LeakyReLU and tanh rules against an autograd oracle ----------------------------------------
class _RuleFunction(torch.autograd.Function):
    """Forward: the activation. Backward: the documented deconv/guided rule, written out directly."""

    @staticmethod
    def forward(ctx, x, kind, slope, mode):
        y = torch.tanh(x) if kind == "tanh" else torch.nn.functional.leaky_relu(x, slope)
        ctx.save_for_backward(x, y)
        ctx.kind, ctx.slope, ctx.mode = kind, slope, mode
        return y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        if ctx.kind == "tanh":
            return (g if ctx.mode == "deconv" else g * (1 - y ** 2)), None, None, None
        a = ctx.slope
        slope = torch.where(x > 0, torch.ones_like(x), torch.full_like(x, a))  # leaky'(x)
        rect = torch.where(g > 0, g, a * g)  # leaky(g)
        out = {"deconv": rect, "guided": rect * slope, "gradient": g * slope}[ctx.mode]
        return out, None, None, None


class _RuleActivation(nn.Module):
    def __init__(self, kind, slope, mode):
        super().__init__()
        self.kind, self.slope, self.mode = kind, slope, mode

    def forward(self, x):
        return _RuleFunction.apply(x, self.kind, self.slope, self.mode)


def _oracle(model, layer_index, x, channel, mode, pos=None):
    """Autograd through a copy whose activations carry the rule; seed = activation(s) of ``channel``."""
    ref = copy.deepcopy(model)
    for name, m in list(ref.features.named_children()):
        if isinstance(m, (nn.LeakyReLU, nn.Tanh)):
            kind = "tanh" if isinstance(m, nn.Tanh) else "leaky"
            setattr(ref.features, name, _RuleActivation(kind, getattr(m, "negative_slope", 0.0), mode))
    x = x.clone().requires_grad_(True)
    names = [n for n, _ in ref.features.named_children()]
    out = ref.features[:names.index(f"act{layer_index}") + 1](x)[:, channel]  # (B, H, W)
    seed = torch.zeros_like(out)
    if pos is None:
        seed = out.detach()
    else:
        b = torch.arange(out.shape[0])
        seed[b, pos[:, 0], pos[:, 1]] = out.detach()[b, pos[:, 0], pos[:, 1]]
    (grad,) = torch.autograd.grad(out, x, seed)
    return grad[:, 0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_leaky_relu_and_tanh_rules_match_autograd_oracle(activation, mode):
    model = spectrogram_cnn(activation)
    x = _x((2, 1, 16, 22), 2)
    p = Projector(model, mode, device="cpu")
    for layer in (2, 3):
        proj = p.project(x, f"conv{layer}", [1, 4], "max", progress=False)
        whole = p.project(x, f"conv{layer}", [1, 4], "map", progress=False)
        for k, c in enumerate([1, 4]):
            _close(proj.maps[:, k], _oracle(model, layer, x, c, mode, proj.positions[:, k]))
            _close(whole.maps[:, k], _oracle(model, layer, x, c, mode))


def test_tanh_guided_equals_gradient_and_deconv_does_not_rectify():
    """Documented answer to "can the deconvnet work with tanh?": nothing to rectify, so guided = gradient."""
    model = spectrogram_cnn("tanh")
    x = _x((1, 1, 16, 20), 3)
    maps = {m: Projector(model, m, device="cpu").project(x, "conv2", [0, 1], (2, 3), progress=False).maps
            for m in MODES}
    _close(maps["guided"], maps["gradient"], 1e-12)
    assert not torch.allclose(maps["deconv"], maps["gradient"])
    assert (maps["deconv"] < 0).any() and (maps["deconv"] > 0).any()


# ---- receptive fields -----------------------------------------------------------------------------
def _closed_form(modules, f):
    """Araujo et al. (2019): r = 1 + Σ (k_l − 1) Π_{i<l} s_i, start = f Π s − Σ p_l Π_{i<l} s_i."""
    jump, size, start = 1, 1, 0
    for m in modules:
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            s = m.stride if isinstance(m.stride, int) else m.stride[0]
            p = m.padding if isinstance(m.padding, int) else m.padding[0]
            d = m.dilation if isinstance(m.dilation, int) else m.dilation[0]
            size += ((k - 1) * d) * jump
            start -= p * jump
            jump *= s
    return f * jump + start, size


def test_receptive_field_matches_closed_form_and_clips():
    model = spectrogram_cnn()
    feats = list(model.features.children())
    for layer, n in (("conv1", 4), ("conv2", 8), ("conv3", 12)):
        start, size = _closed_form(feats[:n], 0)
        assert receptive_field_size(model, layer) == (size, size)
        f0, f1, t0, t1 = receptive_field(model, layer, 1, 2, input_size=(16, 30))
        s_f, _ = _closed_form(feats[:n], 1)
        s_t, _ = _closed_form(feats[:n], 2)
        assert (f0, f1, t0, t1) == (max(s_f, 0), min(s_f + size, 16), max(s_t, 0), min(s_t + size, 30))
    assert receptive_field_size(model, "conv2") == (8, 8)  # conv 3×3 → pool 2 → conv 3×3
    assert receptive_field(model, "conv3", 0, 0, input_size=(16, 30))[0] == 0  # clipped at the border
    with pytest.raises(ValueError, match="valid f"):
        receptive_field(model, "conv2", 99, 0, input_size=(16, 30))


@pytest.mark.parametrize("mode", MODES)
def test_single_position_map_is_zero_outside_its_receptive_field(mode):
    model = spectrogram_cnn()
    x = _x((2, 1, 16, 30), 4)
    proj = Projector(model, mode, device="cpu").project(x, "conv2", None, "max", progress=False)
    inside_nonzero = 0
    for b in range(2):
        for k in range(proj.maps.shape[1]):
            f0, f1, t0, t1 = proj.receptive_fields[b, k].tolist()
            m = proj.maps[b, k].clone()
            if proj.activations[b, k] > 0:
                inside_nonzero += int(m[f0:f1, t0:t1].abs().sum() > 0)
            m[f0:f1, t0:t1] = 0
            assert m.abs().max() == 0
    assert inside_nonzero >= proj.maps.shape[1]  # non-zero inside for (nearly) every active unit


# ---- semantics ------------------------------------------------------------------------------------
def test_different_units_give_different_projections():
    model = spectrogram_cnn()
    x = _x((1, 1, 16, 24), 5)
    for mode in MODES:
        maps = Projector(model, mode, device="cpu").project(x, "conv2", None, "map", progress=False).maps[0]
        flat = maps.flatten(1)
        live = flat.abs().sum(1) > 0
        assert live.sum() >= 3
        f = flat[live] / flat[live].norm(dim=1, keepdim=True)
        sim = f @ f.T
        assert float((sim - torch.eye(len(f), dtype=sim.dtype)).abs().max()) < 0.999


def test_zero_activation_projects_to_zero():
    model = spectrogram_cnn()
    x = _x((1, 1, 16, 24), 6)
    p = Projector(model, "deconv", device="cpu")
    fm = p.feature_maps(x, "conv2")
    names = [n for n, _ in model.features.named_children()]
    _close(fm, model.features[:names.index("act2") + 1](x), 1e-12)  # feature maps = the model's own
    c, f, t = (int(v) for v in torch.nonzero(fm[0] == 0)[0])
    for mode in MODES:
        proj = Projector(model, mode, device="cpu").project(x, "conv2", [c], (f, t), progress=False)
        assert proj.activations[0, 0] == 0 and proj.maps.abs().max() == 0
    zero_input = Projector(nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU()).double(), device="cpu")
    proj = zero_input.project(torch.zeros(1, 1, 8, 8, dtype=torch.float64), "1", progress=False)
    assert proj.maps.abs().max() == 0 and proj.activations.abs().max() == 0


def test_batching_per_input_channels_and_position_tensor_agree():
    model = spectrogram_cnn()
    x = _x((3, 1, 16, 24), 7)
    p = Projector(model, "guided", device="cpu")
    whole = p.project(x, "conv2", [5, 0, 2], "max", progress=False)
    chunked = p.project(x, "conv2", [5, 0, 2], "max", batch_size=1, progress=False)
    _close(chunked.maps, whole.maps, 1e-12)
    assert torch.equal(whole.channels, torch.tensor([5, 0, 2]))
    per_input = torch.tensor([[5, 0, 2], [2, 5, 0], [0, 2, 5]])
    mixed = p.project(x, "conv2", per_input, "max", progress=False)
    assert mixed.channels.shape == (3, 3)
    for b in range(3):
        for k in range(3):
            j = [5, 0, 2].index(int(per_input[b, k]))
            _close(mixed.maps[b, k], whole.maps[b, j], 1e-12)
    again = p.project(x, "conv2", [5, 0, 2], whole.positions, progress=False)
    _close(again.maps, whole.maps, 1e-12)


def test_waveform_inputs_use_the_front_end_and_carry_axes():
    model = spectrogram_cnn()
    wav = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(8)) * 0.1
    p = Projector(model, "deconv", device="cpu")
    proj = p.project(wav, "conv1", [0, 1], progress=False)
    logmel = model.frontend(wav).double()
    _close(proj.spectrograms, logmel[:, 0], 1e-12)
    _close(proj.maps, p.project(logmel, "conv1", [0, 1], progress=False).maps, 1e-12)
    _close(proj.maps, p.project(logmel[:, 0], "conv1", [0, 1], progress=False).maps, 1e-12)
    np.testing.assert_allclose(proj.hz, model.frontend.mel_hz())
    np.testing.assert_allclose(proj.seconds, np.arange(logmel.shape[-1]) * 80 / 8000)
    assert proj.maps.shape == (2, 2, 16, logmel.shape[-1]) and proj.positions.dtype == torch.long
    assert proj.summary(0, 1)["channel"] == 1 and "receptive_field_hz" in proj.summary(0, 1)
    generic = Projector(hand_built_cnn(), device="cpu").project(_x((1, 1, 20, 26)), "2", [0], progress=False)
    assert generic.hz is None and generic.seconds is None


# ---- errors and side effects ---------------------------------------------------------------------
def test_bad_layer_channel_position_mode_raise_with_valid_choices():
    model = spectrogram_cnn()
    x = _x((1, 1, 16, 20))
    p = Projector(model, device="cpu")
    with pytest.raises(ValueError, match="valid layers: conv1, conv2, conv3"):
        p.project(x, "conv9", progress=False)
    with pytest.raises(ValueError, match=r"valid channels: 0\.\.5"):
        p.project(x, "conv2", [0, 6], progress=False)
    with pytest.raises(ValueError, match=r"valid positions .* f 0\.\.7, t 0\.\.9"):
        p.project(x, "conv2", [0], (8, 0), progress=False)
    with pytest.raises(ValueError, match='"max", "map"'):
        p.project(x, "conv2", [0], "strongest", progress=False)
    with pytest.raises(ValueError, match="mode must be one of deconv, guided, gradient"):
        Projector(model, "lrp")
    with pytest.raises(ValueError, match="valid layers: 0, 1"):
        Projector(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), device="cpu").project(
            torch.zeros(1, 1, 8, 8), "conv1", progress=False)


class _FunctionalBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        return torch.nn.functional.relu(self.conv(x))


def test_functional_relu_projects_like_the_module_and_unsupported_modules_raise_naming_them():
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    torch.manual_seed(0)
    functional = nn.Sequential(_FunctionalBlock(), nn.Conv2d(3, 2, 3), nn.ReLU()).double()
    modular = nn.Sequential(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU()), nn.Conv2d(3, 2, 3), nn.ReLU())
    modular = modular.double()
    modular[0][0].load_state_dict(functional[0].conv.state_dict())
    modular[1].load_state_dict(functional[1].state_dict())
    for mode in MODES:
        a = Projector(functional, mode, device="cpu").project(x, "2", progress=False).maps
        b = Projector(modular, mode, device="cpu").project(x, "2", progress=False).maps
        _close(a, b, 1e-12)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Sigmoid(), nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match=r"torch\.sigmoid: sigmoid has no deconv rule.*in module '1'"):
        Projector(net, device="cpu").project(x.float(), "2", progress=False)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, track_running_stats=False), nn.ReLU())
    with pytest.raises(ValueError, match=r"statistics of the batch.*in module '1'"):
        Projector(net, device="cpu").project(x.float(), "2", progress=False)


def test_model_is_left_unmodified():
    model = spectrogram_cnn()
    x = _x((2, 1, 16, 20), 9)
    with torch.no_grad():
        before = model.classify(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for mode in MODES:
        Projector(model, mode, device="cpu").project(x, "conv3", [0, 1], "max", progress=False)
        Projector(model, mode, device="cpu").project(x, "conv2", [0], "map", progress=False)
    with pytest.raises(ValueError):
        Projector(model, device="cpu").project(x, "conv2", [99], progress=False)
    assert all(m.training for m in model.modules())
    for m in model.modules():
        assert not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                    or m._backward_pre_hooks), m
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.classify(x), before)
