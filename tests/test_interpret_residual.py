"""top_k, occlusion, project_filters and evolve on residual models (the package's BC-ResNet and a ResNet),
each against an outside reference: a brute-force scan through the model's own forward, a brute-force
occlusion loop, the gradient of a linearised copy of the network, the CKA formula."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from audioconv.interpret import occlusion, project_filters, top_k
from audioconv.interpret.evolve import evolve
from audioconv.interpret.projector import Projector
from audioconv.models.bcresnet import BCResNet
from audioconv.models.registry import describe
from audioconv.training.checkpoint import save_checkpoint
from _residual import bcresnet_cnn, randomise_batchnorm, resnet_cnn
from _tiny_cnn import FRONTEND, SR

LAYERS = ("stage1", "blocks.2:add")  # a short name and an operation (the residual sum before its ReLU)


def tiny_bcresnet(seed: int = 0) -> BCResNet:
    torch.manual_seed(seed)
    model = BCResNet(2, sample_rate=SR, width=0.5, dropout=0.0, frontend=FRONTEND)
    randomise_batchnorm(model, seed)
    with torch.no_grad():
        model.stem.input_norm.running_mean.fill_(-40.0)
        model.stem.input_norm.running_var.fill_(400.0)
    return model.double().eval()


def _clips(n=6, seconds=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    return [(0.02 * torch.randn(t.numel(), generator=g) + 0.3 * torch.sin(2 * torch.pi * (300 + 400 * i) * t))[None]
            for i in range(n)]


def _hooked_maps(model, logmel, layer):
    """The layer's output through the model's own forward: a module hook, or for the residual sum the
    input of the block's final ReLU."""
    out = {}
    if layer == "blocks.2:add":
        h = model.blocks[2].act.register_forward_pre_hook(lambda m, a: out.setdefault("x", a[0]))
    else:
        h = model.feature_module(layer).register_forward_hook(lambda m, a, o: out.setdefault("x", o))
    with torch.no_grad():
        model.classify(logmel)
    h.remove()
    return out["x"]


@pytest.mark.parametrize("layer", LAYERS)
def test_top_k_of_bcresnet_matches_brute_force(layer):
    """No limit per clip, silence allowed: the k strongest positive activations over all clips and positions
    (the pre-activation residual sum has negative ones, which are never hits)."""
    model = tiny_bcresnet()
    clips = _clips()
    res = top_k(model, clips, layer, channels=[0, 2, 3], k=4, batch_size=4, device="cpu", progress=False,
                max_per_clip=None, silence_db=None)
    acts = torch.cat([_hooked_maps(model, model.frontend(c[None]).double(), layer) for c in clips]).numpy()
    n, _, hh, ww = acts.shape
    e, f, t = np.unravel_index(np.arange(n * hh * ww), (n, hh, ww))
    for u, ch in enumerate([0, 2, 3]):
        v = acts[:, ch].reshape(-1)
        keep = v > 0
        order = np.lexsort((t[keep], f[keep], e[keep], -v[keep]))[:4]
        assert res.n_hits[u] == len(order) == 4
        np.testing.assert_allclose(res.scores[u], v[keep][order], rtol=1e-12)
        np.testing.assert_array_equal(res.example_indices[u], e[keep][order])
        np.testing.assert_array_equal(res.positions[u], np.stack([f[keep][order], t[keep][order]], 1))
    ex, pos = int(res.example_indices[1, 0]), res.positions[1, 0]  # a hit's projection = the projector's
    p = Projector(model, device="cpu").project(clips[ex][None], layer, [2], torch.as_tensor(pos).view(1, 1, 2),
                                               progress=False)
    f0, f1, t0, t1 = res.receptive_fields[1, 0]
    assert (f0, f1) == (0, acts.shape[2] * 0 + p.spectrograms.shape[1])  # the frequency mean: every mel bin
    np.testing.assert_allclose(res.projections[1][0], p.maps[0, 0, f0:f1, t0:t1].numpy(), rtol=1e-9, atol=1e-12)


def test_occlusion_of_bcresnet_matches_a_brute_force_loop():
    model = tiny_bcresnet(1)
    x = model.frontend(torch.stack(_clips(2))).double()  # (2, 1, 16, T)
    probs = occlusion(model, x, [0, 1], patch=(4, 6), stride=(4, 5), batch_size=5, device="cpu")
    for b, target in enumerate([0, 1]):
        for i, f0 in enumerate(range(0, x.shape[2] - 4 + 1, 4)):
            for j, t0 in enumerate(range(0, x.shape[3] - 6 + 1, 5)):
                y = x[b].clone()
                y[:, f0:f0 + 4, t0:t0 + 6] = x[b].mean()
                with torch.no_grad():
                    ref = torch.softmax(model.classify(y[None]), -1)[0, target]
                assert float(probs[b, i, j]) == pytest.approx(float(ref), rel=1e-5)


class _Subsample(nn.Module):
    """Keeps the top-left cell of each 2 × 2 window: the linear map whose transpose is "center" unpooling."""

    def forward(self, x):
        return x[..., ::2, ::2]


def _linearised(model):
    """ReLUs → identity, 2 × 2 max-pools → top-left subsampling, BatchNorm kept (an affine map)."""
    lin = copy.deepcopy(model)
    for name, m in list(lin.named_modules()):
        parent = lin.get_submodule(name.rpartition(".")[0]) if "." in name else lin
        if isinstance(m, nn.ReLU):
            setattr(parent, name.rpartition(".")[2], nn.Identity())
        elif isinstance(m, nn.MaxPool2d):
            setattr(parent, name.rpartition(".")[2], _Subsample())
    return lin


@pytest.mark.parametrize("layer, size", [("block1.relu2", (32, 32)), ("block2.relu2", (48, 48))])
def test_residual_filters_are_the_gradient_of_the_linearised_network(layer, size):
    model = resnet_cnn()
    filt = project_filters(model, layer, input_size=size)  # (K, F_rf, T_rf)
    lin = _linearised(model)
    x = torch.zeros(1, 1, *size, dtype=torch.float64, requires_grad=True)
    captured = {}
    lin.get_submodule(layer).register_forward_hook(lambda m, a, o: captured.setdefault("y", o))
    lin(x)
    y = captured["y"]
    H, W = y.shape[-2:]
    path = Projector(model, device="cpu").path(layer, torch.zeros(1, 1, *size, dtype=torch.float64))
    f0, rf_f, t0, rf_t = (int(v) for v in path.window(H // 2, W // 2))
    assert filt.shape == (y.shape[1], rf_f, rf_t) and f0 >= 0 and f0 + rf_f <= size[0]
    for c in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[0, c, H // 2, W // 2], x, retain_graph=True)
        np.testing.assert_allclose(filt[c].numpy(), g[0, 0, f0:f0 + rf_f, t0:t0 + rf_t].numpy(), rtol=1e-9, atol=1e-12)
        outside = g[0, 0].clone()
        outside[f0:f0 + rf_f, t0:t0 + rf_t] = 0
        assert outside.abs().max() == 0


def test_filters_through_a_frequency_mean_cover_the_whole_frequency_axis():
    model = bcresnet_cnn()
    filt = project_filters(model, "block1.relu", input_size=(16, 40))
    assert filt.shape == (6, 16, 7)  # all 16 mel bins; 5 + 2 frames in time


# ---- evolve on a BC-ResNet run ----------------------------------------------------------------------
def _bcresnet_run(root):
    final, early = tiny_bcresnet(0), tiny_bcresnet(1)
    spec, config = describe(final)
    run = root / "run"
    for e, w in ((1, 1.0), (2, 0.3), (3, 0.0)):
        m = tiny_bcresnet(0)
        with torch.no_grad():
            for (name, p), q in zip(m.state_dict().items(), early.state_dict().values()):
                if p.is_floating_point() and "running" not in name:
                    p.copy_((1 - w) * final.state_dict()[name] + w * q)
        save_checkpoint(run / "snapshots" / f"epoch_{e:03d}.pt",
                        {"kind": "model", "model": m.float().state_dict(), "model_spec": spec, "model_config": config,
                         "labels": ["a", "b"], "epoch": e, "train_config": {"clip_s": 0.3}})
    return run


def test_evolve_on_a_bcresnet_run(tmp_path):
    import json

    import soundfile as sf

    run = _bcresnet_run(tmp_path)
    rows = []
    for i, clip in enumerate(_clips(5)):
        sf.write(tmp_path / f"p{i}.wav", clip[0].numpy().astype(np.float32), SR)
        rows.append({"audio_filepath": f"p{i}.wav", "label": "ab"[i % 2]})
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = evolve(run, probe, layers=["stage1", "blocks.1:add#2"], channels_per_layer=2, progress=False, device="cpu")
    assert ev.epochs == [1, 2, 3]
    from audioconv.interpret.evolve import load_probe
    from audioconv.training.checkpoint import load_model

    first, last = (load_model(run / "snapshots" / f"epoch_{e:03d}.pt")[0] for e in (1, 3))
    logmel = last.frontend(load_probe(probe, SR, 0.3).waveforms)
    for layer in ("stage1", "blocks.1:add#2"):
        assert ev.cka[layer][-1] == pytest.approx(1.0)
        if layer == "stage1":  # epoch 1 against the final epoch, by the formula (Kornblith et al. eq. 4)
            a, b = (_hooked_maps(m, logmel, layer).flatten(1).double().numpy() for m in (first, last))
            a, b = a - a.mean(0), b - b.mean(0)
            cka = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
            assert ev.cka[layer][0] == pytest.approx(cka, rel=1e-4)
        grid = ev.grids[layer]
        assert len(grid.units) == 2 and len(grid.projections[0]) == 3
        f0, f1, _, _ = grid.receptive_fields[0][0]
        assert (f0, f1) == (0, 16)  # the frequency mean: every mel bin
