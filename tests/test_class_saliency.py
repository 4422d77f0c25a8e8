"""Class saliency runs the projector's own backward pass (one implementation of each rule): on the
package's BC-ResNet (SiLU in its temporal branch, sub-spectral norm, broadcast residuals) the class maps
of every mode equal an independent autograd reference (tests/_residual.py: activations replaced by
autograd functions whose backward is the rule) and the projector's map of the logit layer, in float64."""
import pytest
import torch
from torch import nn

from audioconv.interpret import Projector, Unit, saliency
from audioconv.interpret.traced import TracedModel
from audioconv.models.bcresnet import BCResNet
from _residual import randomise_batchnorm, reference_maps
from _tiny_cnn import FRONTEND, SR

TOL = 1e-9
MODES = ("deconv", "guided", "gradient")


def _bcresnet(seed: int = 0, n_classes: int = 3) -> BCResNet:
    torch.manual_seed(seed)
    model = BCResNet(n_classes, sample_rate=SR, width=0.5, dropout=0.0, frontend=FRONTEND)
    randomise_batchnorm(model, seed)
    with torch.no_grad():
        model.stem.input_norm.running_mean.fill_(-40.0)
        model.stem.input_norm.running_var.fill_(400.0)
    return model.double().eval()


def _logmel(model, n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(0.3 * SR)) / SR
    wav = torch.stack([(0.02 * torch.randn(t.numel(), generator=g) + 0.3 * torch.sin(2 * torch.pi * (300 + 500 * i) * t))
                       for i in range(n)])[:, None].double()
    return model.frontend(wav)


def _rel(a, b):
    scale = b.abs().max()
    assert scale > 0, "the reference is all zero: the comparison would be vacuous"
    return float((a - b).abs().max() / scale)


def test_bcresnet_class_saliency_matches_an_autograd_reference_and_the_projector():
    model = _bcresnet()
    x = _logmel(model)
    assert any(isinstance(m, nn.SiLU) for m in model.modules())  # the activation the old saliency refused
    target = [0, 2, 1]
    logits = model.classify(x).detach()
    maps = {}
    for mode in MODES:
        maps[mode] = saliency(model, x, target, mode, device="cpu")
        ref = reference_maps(model, x, model.head.fc, mode, lambda y: torch.eye(3, dtype=y.dtype)[target],
                             entry=model.classify)
        assert _rel(maps[mode], ref) <= TOL, mode
        # all classes of every input in one backward pass, and each class on its own
        many = Projector(model, mode, device="cpu").project_classes(x, [0, 1, 2], progress=False)
        for c in range(3):
            single = saliency(model, x, c, mode, device="cpu")
            assert _rel(many.maps[:, c], single) <= TOL
            # the projector seeds a unit of the logit layer with its value: map = logit × saliency where it is > 0
            positive = logits[:, c] > 0
            if positive.any():
                proj = Projector(model, mode, device="cpu").project(x[positive], "head.fc", [c], (0, 0), progress=False)
                assert _rel(proj.maps[:, 0], logits[positive, c, None, None] * single[positive]) <= TOL, (mode, c)
    assert bool((logits > 0).any())
    # the three rules really differ on this model
    assert _rel(maps["deconv"], maps["gradient"]) > 0.1 and _rel(maps["guided"], maps["gradient"]) > 0.1


@pytest.mark.parametrize("position", ["mean", "max", (1, 2)])
def test_bcresnet_unit_saliency_matches_the_autograd_reference(position):
    model = _bcresnet(1)
    x = _logmel(model, 2, seed=4)
    module = model.feature_module("stage1")
    unit = Unit("stage1", 3, position)
    fm = Projector(model, device="cpu").feature_maps(x, "stage1")
    H, W = fm.shape[-2:]

    def seed(y):
        s = torch.zeros_like(y)
        if position == "mean":
            s[:, 3] = 1.0 / (H * W)
        elif position == "max":
            flat = y[:, 3].flatten(1).argmax(1)
            s[torch.arange(y.shape[0]), 3, flat // W, flat % W] = 1.0
        else:
            s[:, 3, position[0], position[1]] = 1.0
        return s

    for mode in MODES:
        mine = saliency(model, x, unit, mode, device="cpu")
        ref = reference_maps(model, x, module, mode, seed, entry=model.classify)
        assert _rel(mine, ref) <= TOL, (mode, position)


def test_project_classes_defaults_and_errors():
    model = _bcresnet(2)
    x = _logmel(model, 3, seed=5)
    proj = Projector(model, "guided", device="cpu").project_classes(x, progress=False)
    predicted = model.classify(x).argmax(1)
    assert proj.channels.shape == (3, 1) and torch.equal(proj.channels[:, 0], predicted)
    assert proj.seeding == "class" and proj.layer == "logits"
    torch.testing.assert_close(proj.activations[:, 0], model.classify(x).detach().gather(1, predicted[:, None])[:, 0])
    assert proj.receptive_fields[0, 0].tolist() == [0, x.shape[-2], 0, x.shape[-1]]
    with pytest.raises(ValueError, match="class index 7 is out of range: the model has classes 0..2"):
        Projector(model, device="cpu").project_classes(x, [0, 7], progress=False)
    with pytest.raises(ValueError, match=r"per-input classes must be \(B=3, K\)"):
        Projector(model, device="cpu").project_classes(x, torch.zeros(2, 1, dtype=torch.long), progress=False)

    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            y = self.conv(x).mean(dim=(2, 3))
            return y, y

    with pytest.raises(ValueError, match="returns tuple that is not a traced signal"):
        saliency(TwoOutputs().double(), torch.randn(1, 1, 8, 8, dtype=torch.float64), 0, "deconv", device="cpu")


def test_class_saliency_traces_to_the_output_not_to_a_layer():
    """A model that does something after its last module (a temperature) is explained through it."""

    class Tempered(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = _bcresnet(3)

        def forward(self, x):
            return self.body.classify(x) / 4.0

    model = Tempered().double().eval()
    x = _logmel(model.body, 2, seed=6)
    graph = TracedModel(model, "cpu").trace_output(x, None)
    assert graph.nodes[graph.output].name.endswith(":div#1")
    for mode in MODES:
        torch.testing.assert_close(saliency(model, x, 1, mode, device="cpu"),
                                   saliency(model.body, x, 1, mode, device="cpu") / 4.0, rtol=1e-12, atol=1e-15)
