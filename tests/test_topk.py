"""top_k: exact against a brute-force scan of every activation; projections agree with the Projector."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.data.dataset import ManifestDataset
from audioconv.models.spectrogram_cnn import SpectrogramCNN
from audioconv.interpret.projector import Projector
from audioconv.interpret.topk import top_k

from _tiny_cnn import FRONTEND, SR, tiny_sequential_cnn


def tiny_model(seed=0, dead_channel=None):
    torch.manual_seed(seed)
    m = SpectrogramCNN(3, sample_rate=SR, channels=(4, 8), dropout=0.0, frontend=FRONTEND)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):  # non-trivial eval-mode statistics
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.8)
        m.features.input_norm.running_mean.fill_(-40.0)
        m.features.input_norm.running_var.fill_(400.0)
        if dead_channel is not None:  # a channel that is 0 everywhere: all ties
            m.features.bn1.bias[dead_channel] = -1e3
    return m.double().eval()


def write_clips(root, n=11, seconds=0.4, seed=1):
    """n WAVs of noise plus a tone at a random pitch, and their manifest."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    rows = []
    for i in range(n):
        x = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t)
        name = f"clip{i:02d}.wav"
        sf.write(root / name, x.astype(np.float32), SR)
        rows.append({"audio_filepath": name, "label": ["a", "b"][i % 2]})
    path = root / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def brute_force(model, dataset, layer, k):
    """Every activation of every example, one example at a time; ranked with numpy's lexsort."""
    maps = []
    for i in range(len(dataset)):
        wav = dataset[i][0]
        out = {}
        h = model.feature_module(layer).register_forward_hook(lambda m, a, o: out.setdefault("x", o))
        with torch.no_grad():
            model.classify(model.frontend(wav[None]).double())
        h.remove()
        maps.append(out["x"][0].numpy())
    acts = np.stack(maps)  # (N, C, H, W)
    n, c, hh, ww = acts.shape
    e, f, t = np.unravel_index(np.arange(n * hh * ww), (n, hh, ww))
    result = []
    for ch in range(c):
        v = acts[:, ch].reshape(-1)
        order = np.lexsort((t, f, e, -v))[:k]  # score desc, then example, f, t ascending
        result.append((v[order], e[order], np.stack([f[order], t[order]], 1)))
    return result


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_matches_brute_force(tmp_path, layer):
    ds = ManifestDataset(write_clips(tmp_path), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    res = top_k(model, ds, layer, k=9, batch_size=4, device="cpu", progress=False)
    ref = brute_force(model, ds, layer, 9)
    assert list(res.channels) == list(range(model.n_channels(layer)))
    for u, (scores, examples, positions) in enumerate(ref):
        np.testing.assert_allclose(res.scores[u], scores, rtol=1e-12)
        np.testing.assert_array_equal(res.example_indices[u], examples)
        np.testing.assert_array_equal(res.positions[u], positions)
    # clip ids and labels come from the manifest rows
    e = int(res.example_indices[0, 0])
    assert res.clip_ids[0][0].endswith(f"clip{e:02d}.wav") and res.labels[0][0] == ["a", "b"][e % 2]


def test_ties_follow_example_then_position_order(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=5), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model(dead_channel=2)
    res = top_k(model, ds, "conv1", channels=[2, 0], k=4, batch_size=2, device="cpu", progress=False)
    assert list(res.channels) == [2, 0]
    np.testing.assert_array_equal(res.scores[0], 0.0)
    np.testing.assert_array_equal(res.example_indices[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(res.positions[0], [[0, 0], [0, 1], [0, 2], [0, 3]])
    ref = brute_force(model, ds, "conv1", 4)[0]
    np.testing.assert_allclose(res.scores[1], ref[0], rtol=1e-12)


def test_projections_and_patches(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=6), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    res = top_k(model, ds, "conv2", channels=[1, 6], k=3, batch_size=4, device="cpu", progress=False)
    projector = Projector(model, mode="deconv", device="cpu")
    for u, ch in enumerate(res.channels):
        for r in range(res.k):
            e = int(res.example_indices[u, r])
            logmel = model.frontend(ds[e][0][None]).double()  # (1, 1, F, T), computed independently
            pos = torch.as_tensor(res.positions[u, r]).view(1, 1, 2)
            p = projector.project(logmel, "conv2", [int(ch)], position=pos, progress=False, crop=False)
            f0, f1, t0, t1 = res.receptive_fields[u, r]
            assert tuple(p.receptive_fields[0, 0].tolist()) == (f0, f1, t0, t1)
            assert float(p.activations[0, 0]) == pytest.approx(res.scores[u, r], rel=1e-10)
            full = p.maps[0, 0].numpy()
            np.testing.assert_allclose(res.projections[u][r], full[f0:f1, t0:t1], rtol=1e-9, atol=1e-12)
            outside = full.copy()
            outside[f0:f1, t0:t1] = 0
            assert np.abs(outside).max() == 0  # nothing lost by cropping to the receptive field
            np.testing.assert_allclose(res.patches[u][r], logmel[0, 0, f0:f1, t0:t1].numpy(), rtol=1e-6)
            assert (np.abs(res.projections[u][r]).max() > 0) == (res.scores[u, r] > 0)  # zero activation → zero map
    assert res.scores.min() > 0
    index = res.to_dict()
    assert index["units"][1]["channel"] == 6 and len(index["units"][1]["top"]) == 3
    top = index["units"][0]["top"][0]
    assert top["hz_range"][0] == pytest.approx(res.hz[top["receptive_field"][0]])
    json.dumps(index)


def test_bad_arguments(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=2), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    with pytest.raises(ValueError, match="valid layers: conv1, conv2"):
        top_k(model, ds, "conv7", device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"valid channels are 0\.\.7"):
        top_k(model, ds, "conv2", channels=[8], device="cpu", progress=False)
    with pytest.raises(ValueError, match="k must be"):
        top_k(model, ds, "conv2", k=0, device="cpu", progress=False)


def test_top_k_with_a_projector_uses_its_mode_and_agrees_with_the_function(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=5), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    projector = Projector(model, mode="guided", device="cpu")
    via_projector = top_k(projector, ds, "conv2", channels=[1, 6], k=3, batch_size=4, progress=False)
    via_function = top_k(model, ds, "conv2", channels=[1, 6], k=3, batch_size=4, device="cpu", mode="guided",
                         progress=False)
    assert via_projector.mode == "guided"
    np.testing.assert_array_equal(via_projector.scores, via_function.scores)
    np.testing.assert_array_equal(via_projector.positions, via_function.positions)
    for a, b in zip(via_projector.projections, via_function.projections):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="differs from the projector's mode 'guided'"):
        top_k(projector, ds, "conv2", mode="deconv", progress=False)


def test_module_names_and_short_names_address_the_same_layer(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=4), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    short = top_k(model, ds, "conv2", channels=[0, 3], k=4, batch_size=3, device="cpu", progress=False)
    named = top_k(model, ds, "features.act2", channels=[0, 3], k=4, batch_size=3, device="cpu", progress=False)
    np.testing.assert_array_equal(named.scores, short.scores)
    np.testing.assert_array_equal(named.example_indices, short.example_indices)
    np.testing.assert_array_equal(named.positions, short.positions)
    assert named.layer == "features.act2"


def _logmel_items(n=7, n_mels=12, frames=15, seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, n_mels, frames, generator=g) * 10 - 30 for _ in range(n)]


def test_plain_sequential_cnn_on_logmel_items_matches_brute_force():
    """top_k needs no SpectrogramCNN internals: a plain nn.Sequential on log-mel items, layers by module name."""
    model = tiny_sequential_cnn()
    items = _logmel_items()
    for layer, module in (("2", model[2]), ("5", model[5])):
        res = top_k(model, items, layer, k=5, batch_size=3, device="cpu", progress=False)
        maps = []
        for x in items:  # brute force: the model's own forward, one item at a time, read by a hook
            out = {}
            h = module.register_forward_hook(lambda m, a, o: out.setdefault("x", o))
            with torch.no_grad():
                model(x.double()[None])
            h.remove()
            maps.append(out["x"][0].numpy())
        acts = np.stack(maps)  # (N, C, H, W)
        n, c, hh, ww = acts.shape
        e, f, t = np.unravel_index(np.arange(n * hh * ww), (n, hh, ww))
        assert list(res.channels) == list(range(c)) and res.n_examples == len(items)
        for ch in range(c):
            v = acts[:, ch].reshape(-1)
            order = np.lexsort((t, f, e, -v))[:5]
            np.testing.assert_allclose(res.scores[ch], v[order], rtol=1e-12)
            np.testing.assert_array_equal(res.example_indices[ch], e[order])
            np.testing.assert_array_equal(res.positions[ch], np.stack([f[order], t[order]], 1))
    # projections and patches of the hits agree with the projector on the item itself
    ex, pos = int(res.example_indices[2, 0]), res.positions[2, 0]
    p = Projector(model, device="cpu").project(items[ex].double()[None], "5", [2],
                                               position=torch.as_tensor(pos).view(1, 1, 2), progress=False)
    f0, f1, t0, t1 = res.receptive_fields[2, 0]
    np.testing.assert_allclose(res.projections[2][0], p.maps[0, 0, f0:f1, t0:t1].numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.patches[2][0], items[ex][0, f0:f1, t0:t1].double().numpy())
    assert res.hz is None and res.clip_ids[0][0] == str(int(res.example_indices[0, 0]))
    assert "hz_range" not in res.to_dict()["units"][0]["top"][0]
    with pytest.raises(ValueError, match="different lengths"):
        top_k(model, items[:2] + [torch.zeros(1, 12, 9)], "5", batch_size=3, device="cpu", progress=False)
    with pytest.raises(ValueError, match="valid layers: 0, 1, 2"):
        top_k(model, items, "conv2", device="cpu", progress=False)
