"""Exactness of the projector against Captum, float64 on CPU.

Single position: ``map == activation × NeuronDeconvolution / NeuronGuidedBackprop / NeuronGradient``
attribution of that neuron. Whole map: ``map == attribution`` of ``Σ act_c · stopgrad(act_c)``
(Captum with a callable ``neuron_selector``), i.e. each position seeded with its own activation.
Captum defines deconv/guided rules for ``nn.ReLU`` only, so those modes are compared on ReLU
networks; ``gradient`` is compared on every activation.
"""
import warnings

import pytest
import torch
from torch import nn

from audioconv.interpret import Projector
from test_projector import hand_built_cnn, overlapping_cnn, spectrogram_cnn

captum_attr = pytest.importorskip("captum.attr")
CAPTUM = {"deconv": captum_attr.NeuronDeconvolution, "guided": captum_attr.NeuronGuidedBackprop,
          "gradient": captum_attr.NeuronGradient}
TOL = 1e-6


class _LogMelModel(nn.Module):
    """``SpectrogramCNN.classify`` as a module (Captum runs ``forward`` and hooks the ReLUs inside)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.classify(x) if hasattr(self.model, "classify") else self.model(x)


def _rel(a, b):
    scale = b.abs().max()
    return float((a - b).abs().max() / scale) if scale > 0 else float(a.abs().max())


def _attribute(mode, model, module, x, selector):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CAPTUM[mode](_LogMelModel(model), module).attribute(x, neuron_selector=selector)


def _check_positions(model, module, layer, x, mode, channels, position="max"):
    proj = Projector(model, mode, device="cpu").project(x, layer, channels, position, progress=False)
    B, K = proj.activations.shape
    checked = 0
    for b in range(B):
        for k, c in enumerate(channels):
            f, t = (int(v) for v in proj.positions[b, k])
            ref = _attribute(mode, model, module, x[b:b + 1], (c, f, t))[0, 0] * proj.activations[b, k]
            assert _rel(proj.maps[b, k], ref) <= TOL, (mode, layer, b, c, f, t)
            checked += int(ref.abs().max() > 0)
    if position == "max":
        assert checked >= B * K // 2  # most references are non-trivial
    return proj


def _check_map(model, module, layer, x, mode, channels):
    proj = Projector(model, mode, device="cpu").project(x, layer, channels, "map", progress=False)
    live = 0
    for k, c in enumerate(channels):
        ref = _attribute(mode, model, module, x, lambda out, c=c: (out[:, c] * out[:, c].detach()).sum((1, 2)))
        assert _rel(proj.maps[:, k], ref[:, 0]) <= TOL, (mode, layer, c)
        live += int(ref.abs().max() > 0)
    assert live > 0


@pytest.mark.parametrize("mode", ["deconv", "guided", "gradient"])
@pytest.mark.parametrize("layer", ["conv1", "conv3"])
def test_spectrogram_cnn_matches_captum(mode, layer):
    model = spectrogram_cnn()
    x = torch.randn(2, 1, 16, 23, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    module = model.feature_module(layer)
    _check_positions(model, module, layer, x, mode, [0, 3, 5])
    _check_positions(model, module, layer, x, mode, [1, 2], position=(1, 2))
    _check_map(model, module, layer, x, mode, [0, 3])


@pytest.mark.parametrize("mode", ["deconv", "guided", "gradient"])
@pytest.mark.parametrize("layer", ["6", "9"])
def test_hand_built_sequential_matches_captum(mode, layer):
    model = hand_built_cnn()
    x = torch.randn(2, 1, 20, 26, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    module = dict(model.named_modules())[layer]
    _check_positions(model, module, layer, x, mode, [0, 2, 4])
    _check_map(model, module, layer, x, mode, [0, 1, 4])


@pytest.mark.parametrize("mode", ["deconv", "guided", "gradient"])
def test_overlapping_pooling_matches_captum(mode):
    """Overlapping max-pool (3×3, stride 2): our unpooling sums over switch routes, as autograd does."""
    model = overlapping_cnn()
    x = torch.randn(2, 1, 17, 19, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    module = dict(model.named_modules())["5"]
    _check_positions(model, module, "5", x, mode, [0, 1, 3])
    _check_map(model, module, "5", x, mode, [2])


@pytest.mark.parametrize("activation", ["leaky_relu", "tanh"])
def test_gradient_mode_matches_captum_for_other_activations(activation):
    model = spectrogram_cnn(activation)
    x = torch.randn(2, 1, 16, 20, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 5
    _check_positions(model, model.feature_module("conv2"), "conv2", x, "gradient", [0, 4])
    _check_map(model, model.feature_module("conv2"), "conv2", x, "gradient", [1])
