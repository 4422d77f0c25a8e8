"""TracedModel, the one forward path: feature maps equal the model's own, the model goes to the device
once (never per call), and unit contributions to a logit equal the head's own arithmetic."""
import numpy as np
import pytest
import torch

import audioconv.interpret.traced as traced_module
from audioconv.interpret.contributions import logit_contributions
from audioconv.interpret.projector import Projector
from audioconv.interpret.topk import top_k
from audioconv.interpret.traced import TracedModel

from _tiny_cnn import tiny_cnn, tiny_sequential_cnn


def _logmel(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    wav = torch.randn(n, 1, 4000, generator=g) * 0.1
    return model.frontend(wav)


def test_feature_maps_of_several_layers_are_the_models_own():
    model = tiny_cnn().double()
    x = _logmel(model).double()
    traced = TracedModel(model, "cpu")
    both = traced.feature_maps(x, ["conv2", "conv1"])  # one pass along conv2's path, conv1 tapped on the way
    names = [n for n, _ in model.features.named_children()]
    for layer, act in (("conv1", "act1"), ("conv2", "act2")):
        expected = model.features[:names.index(act) + 1](x)
        assert torch.equal(both[layer], expected)
        assert torch.equal(traced.feature_maps(x, layer)[layer], expected)
    pooled = traced.activations(x, ["conv2"], batch_size=2, reduce="max")["conv2"]
    torch.testing.assert_close(pooled, both["conv2"].amax(dim=(2, 3)).float())
    plain = tiny_sequential_cnn()
    y = torch.randn(2, 1, 10, 12, dtype=torch.float64)
    maps = TracedModel(plain, "cpu").feature_maps(y, ["5", "2"])
    assert torch.equal(maps["2"], plain[:3](y)) and torch.equal(maps["5"], plain[:6](y))


def test_a_model_elsewhere_is_copied_to_the_device_once(monkeypatch):
    """top_k projects chunk by chunk; every call must reuse the one device copy (and never move the model)."""
    model = tiny_cnn().double()
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(1, 3000, generator=g) * 0.1 for _ in range(5)]
    x = _logmel(model, 4).double()
    reference = Projector(model, device="cpu").project(x, "conv2", [0, 3], progress=False)
    reference_topk = top_k(model, clips, "conv2", k=3, batch_size=2, device="cpu", progress=False)

    # pretend the caller's model lives on another device, and count copies of it
    real_device, real_deepcopy = traced_module.model_device, traced_module.copy.deepcopy
    copies = []
    monkeypatch.setattr(traced_module, "model_device",
                        lambda m: torch.device("meta") if m is model else real_device(m))
    monkeypatch.setattr(traced_module.copy, "deepcopy",
                        lambda obj, *a: (copies.append(obj) if obj is model else None, real_deepcopy(obj, *a))[1])
    projector = Projector(model, device="cpu")
    working = projector.traced.model
    assert working is not model and copies == [model]
    again = projector.project(x, "conv2", [0, 3], progress=False)
    projector.project(x, "conv2", [0, 3], batch_size=1, progress=False)
    projector.feature_maps(x, "conv1")
    result = top_k(projector, clips, "conv2", k=3, batch_size=2, progress=False)  # several scan and project chunks
    assert len(copies) == 1 and projector.traced.model is working
    torch.testing.assert_close(again.maps, reference.maps, rtol=0, atol=0)
    np.testing.assert_array_equal(result.scores, reference_topk.scores)
    for a, b in zip(result.projections, reference_topk.projections):
        for p, q in zip(a, b):
            np.testing.assert_array_equal(p, q)
    assert all(p.device.type == "cpu" for p in model.parameters())  # the caller's model stayed where it was


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cpu_model_projected_on_cuda_is_copied_once(monkeypatch):
    model = tiny_cnn()
    x = _logmel(model, 4)
    real_deepcopy = traced_module.copy.deepcopy
    copies = []
    monkeypatch.setattr(traced_module.copy, "deepcopy",
                        lambda obj, *a: (copies.append(obj) if obj is model else None, real_deepcopy(obj, *a))[1])
    projector = Projector(model, device="cuda")
    gpu = [projector.project(x, "conv2", [0, 3], batch_size=b, progress=False).maps for b in (1, 4)]
    assert copies == [model] and next(model.parameters()).device.type == "cpu"
    cpu = Projector(model, device="cpu").project(x, "conv2", [0, 3], progress=False).maps
    for m in gpu:
        torch.testing.assert_close(m, cpu, rtol=1e-4, atol=1e-5)


def test_logit_contributions_are_the_heads_own_arithmetic():
    """Last conv layer of a SpectrogramCNN: max-pool, global average, linear — contribution of unit c to
    class y is w[y, c] · mean(pool(A_c)), and contributions plus bias sum to the logit."""
    model = tiny_cnn(3).double()
    with torch.no_grad():
        model.head.fc.weight.normal_()
    x = _logmel(model, 3, seed=2).double()
    classes = torch.tensor([1, 0, 1])
    got = logit_contributions(model, x, "conv2", classes, device="cpu").double()
    with torch.no_grad():
        fm = model.features(x)  # after pool2: what the head averages
        logits = model.classify(x)
    w = model.head.fc.weight[classes]  # (B, C)
    expected = w * fm.mean(dim=(2, 3))
    torch.testing.assert_close(got, expected.float().double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.sum(1) + model.head.fc.bias[classes], logits.gather(1, classes[:, None])[:, 0],
                               rtol=1e-5, atol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="classes must be in 0..1"):
        logit_contributions(model, x, "conv2", 2, device="cpu")
