"""top_k: exact against a brute-force scan of every activation; projections agree with the Projector."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.data.dataset import ManifestDataset
from audioconv.models.spectrogram_cnn import SpectrogramCNN
from audioconv.interpret.projector import Projector
from audioconv.interpret.receptive_field import receptive_field
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


def _feature_maps(model, wav, layer):
    """The layer's feature map of one waveform ``(C, T)``, read by a forward hook: ``(C_l, H, W)``, and the log-mel."""
    out = {}
    h = model.feature_module(layer).register_forward_hook(lambda m, a, o: out.setdefault("x", o))
    with torch.no_grad():
        logmel = model.frontend(wav[None]).double()
        model.classify(logmel)
    h.remove()
    return out["x"][0].numpy(), logmel[0, 0].numpy()


def _time_box(layer, t, n_frames):
    """Receptive field of feature-map column ``t`` in frames, by hand for conv3/pad1 → pool2 blocks:
    conv1 reads [t-1, t+2); conv2 reads pool1 cells [t-1, t+2) = conv1 cells [2t-2, 2t+4) = frames
    [2t-3, 2t+5). Clipped to the input."""
    a, b = (t - 1, t + 2) if layer == "conv1" else (2 * t - 3, 2 * t + 5)
    return max(a, 0), min(b, n_frames)


def _allowed_reference(model, layer, logmel, n_real_frames, silence_db, hw):
    """(H, W) bool by the documented rule: the receptive field's centre frame is real and its loudest
    mel bin is more than ``silence_db`` above the lowest cell of the real frames."""
    F, T = logmel.shape
    real = np.arange(T) < n_real_frames
    loud = logmel.max(axis=0)
    ok = real if silence_db is None else real & (loud > logmel[:, real].min() + silence_db)
    centre = [(lambda a, b: (a + b - 1) // 2)(*_time_box(layer, t, T)) for t in range(hw[1])]
    assert receptive_field(model, layer, 0, hw[1] - 1, input_size=(F, T))[2:] == _time_box(layer, hw[1] - 1, T)
    return np.repeat(ok[centre][None, :], hw[0], axis=0)


def brute_force(model, dataset, layer, k, max_per_clip=None, silence_db=None):
    """Every activation of every example, one example at a time; disallowed positions and activations
    <= 0 dropped; each clip's best ``max_per_clip``; ranked with numpy's lexsort (score desc, example, f, t)."""
    per_channel = None
    for i in range(len(dataset)):
        item = dataset[i]
        wav = item[0]
        n_real = model.frontend.n_frames(item[2]) if len(item) > 2 else None
        acts, logmel = _feature_maps(model, wav, layer)
        c, hh, ww = acts.shape
        allowed = _allowed_reference(model, layer, logmel, n_real or logmel.shape[1], silence_db, (hh, ww))
        if per_channel is None:
            per_channel = [[] for _ in range(c)]
        f, t = np.unravel_index(np.arange(hh * ww), (hh, ww))
        for ch in range(c):
            v = acts[ch].reshape(-1)
            keep = allowed.reshape(-1) & (v > 0)
            order = np.lexsort((t[keep], f[keep], -v[keep]))[:max_per_clip]
            per_channel[ch] += [(v[keep][o], i, f[keep][o], t[keep][o]) for o in order]
    result = []
    for hits in per_channel:
        v, e, f, t = (np.array(x) for x in zip(*hits)) if hits else (np.zeros(0),) * 4
        order = np.lexsort((t, f, e, -v))[:k]
        result.append((v[order], e[order].astype(int), np.stack([f[order], t[order]], 1).astype(int)))
    return result


def _check_against(res, ref):
    for u, (scores, examples, positions) in enumerate(ref):
        n = len(scores)
        assert res.n_hits[u] == n
        np.testing.assert_allclose(res.scores[u, :n], scores, rtol=1e-12)
        np.testing.assert_array_equal(res.example_indices[u, :n], examples)
        np.testing.assert_array_equal(res.positions[u, :n], positions)
        assert (res.example_indices[u, n:] == -1).all() and all(p is None for p in res.projections[u][n:])


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
def test_matches_brute_force(tmp_path, layer):
    """No limit per clip, silence allowed: the k strongest positive activations over all clips and positions."""
    ds = ManifestDataset(write_clips(tmp_path), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model()
    res = top_k(model, ds, layer, k=9, batch_size=4, device="cpu", progress=False, max_per_clip=None,
                silence_db=None)
    assert list(res.channels) == list(range(model.n_channels(layer)))
    _check_against(res, brute_force(model, ds, layer, 9))
    # clip ids and labels come from the manifest rows
    u = int(np.flatnonzero(res.n_hits > 0)[0])  # a unit with hits (a random unit may never fire)
    e = int(res.example_indices[u, 0])
    assert res.clip_ids[u][0].endswith(f"clip{e:02d}.wav") and res.labels[u][0] == ["a", "b"][e % 2]


def _padded_corpus(root, n=6, seed=3):
    """Clips as real corpora have them: 2-s files that are mostly digital silence around a 0.3-s tone
    (ESC-50 style), and 0.5-s clips the loader pads to 2 s; returns the manifest and each clip's
    sounding span in seconds (start, end)."""
    rng = np.random.default_rng(seed)
    rows, spans = [], []
    for i in range(n):
        seconds = 2.0 if i % 2 == 0 else 0.5
        x = np.zeros(int(seconds * SR))
        a = int(rng.uniform(0.05, seconds - 0.35) * SR)
        t = np.arange(int(0.3 * SR)) / SR
        x[a:a + t.size] = 0.4 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t) + 0.02 * rng.standard_normal(t.size)
        sf.write(root / f"pad{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"pad{i}.wav", "label": "ab"[i % 2]})
        spans.append((a / SR, (a + t.size) / SR))
    path = root / "padded.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, spans


@pytest.mark.parametrize("layer", ["conv1", "conv2"])
@pytest.mark.parametrize("max_per_clip", [1, 2, None])
def test_padded_clips_match_brute_force_with_the_rules(tmp_path, layer, max_per_clip):
    """Padding from the true lengths, silence from the log-mel floor, the per-clip limit: brute force agrees."""
    manifest, _ = _padded_corpus(tmp_path)
    ds = ManifestDataset(manifest, sample_rate=SR, clip_s=2.0, crop="start")
    model = tiny_model()
    res = top_k(model, ds, layer, k=5, batch_size=4, device="cpu", progress=False, max_per_clip=max_per_clip)
    _check_against(res, brute_force(model, ds, layer, 5, max_per_clip=max_per_clip, silence_db=6.0))


def test_default_top_k_on_padded_clips_is_one_hit_per_clip_on_the_sound(tmp_path):
    """The defect seen on ESC-50: the top 9 were adjacent positions of one clip, or sat on the silent
    padding. By default each hit comes from another clip and its receptive field is centred on the sound."""
    manifest, spans = _padded_corpus(tmp_path, n=8)
    ds = ManifestDataset(manifest, sample_rate=SR, clip_s=2.0, crop="start")
    model = tiny_model()
    for layer in ("conv1", "conv2"):
        res = top_k(model, ds, layer, k=4, batch_size=3, device="cpu", progress=False)
        hop_s = FRONTEND["hop_length"] / SR
        win_s = FRONTEND["n_fft"] / SR / 2  # a frame sees ± half a window around its centre
        for u in range(len(res.channels)):
            n = int(res.n_hits[u])
            examples = res.example_indices[u, :n].tolist()
            assert len(set(examples)) == n, (layer, u, examples)  # one hit per clip
            for r, e in enumerate(examples):
                f0, f1, t0, t1 = res.receptive_fields[u, r]
                centre_s = (t0 + t1 - 1) // 2 * hop_s
                a, b = spans[e]
                assert a - win_s <= centre_s <= b + win_s, (layer, u, r, centre_s, spans[e])
        assert res.n_hits.sum() > 0


def test_ties_follow_example_then_position_order_and_a_dead_unit_has_no_hits(tmp_path):
    ds = ManifestDataset(write_clips(tmp_path, n=5), sample_rate=SR, clip_s=0.4, crop="center")
    model = tiny_model(dead_channel=2)
    with torch.no_grad():  # channel 1: a constant 0.5 everywhere (all ties): bn(0) = b - mean * w / sqrt(var + eps)
        bn = model.features.bn1
        model.features.conv1.weight[1] = 0.0
        bn.bias[1] = 0.5 + bn.running_mean[1] * bn.weight[1] / (bn.running_var[1] + bn.eps).sqrt()
    refs = brute_force(model, ds, "conv1", 4)
    live = next(c for c in range(len(refs)) if c not in (1, 2) and len(refs[c][0]) == 4)  # a unit that fires
    res = top_k(model, ds, "conv1", channels=[1, 2, live], k=4, batch_size=2, device="cpu", progress=False,
                max_per_clip=None, silence_db=None)
    assert list(res.channels) == [1, 2, live]
    np.testing.assert_allclose(res.scores[0], 0.5, rtol=1e-12)
    np.testing.assert_array_equal(res.example_indices[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(res.positions[0], [[0, 0], [0, 1], [0, 2], [0, 3]])
    assert res.n_hits[1] == 0 and (res.example_indices[1] == -1).all() and res.projections[1] == [None] * 4
    assert res.to_dict()["units"][1] == {"channel": 2, "n_hits": 0, "top": []}
    np.testing.assert_allclose(res.scores[2], refs[live][0], rtol=1e-12)
    once = top_k(model, ds, "conv1", channels=[1], k=4, batch_size=2, device="cpu", progress=False, silence_db=None)
    np.testing.assert_array_equal(once.example_indices[0], [0, 1, 2, 3])  # one per clip: the first cell of each
    np.testing.assert_array_equal(once.positions[0], [[0, 0]] * 4)


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
    with pytest.raises(ValueError, match=r"max_per_clip must be a positive int or None \(no limit\), got 0"):
        top_k(model, ds, "conv2", max_per_clip=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"silence_db must be >= 0 dB or None"):
        top_k(model, ds, "conv2", silence_db=-3, device="cpu", progress=False)


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
        res = top_k(model, items, layer, k=5, batch_size=3, device="cpu", progress=False, max_per_clip=None,
                    silence_db=None)
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
            order = [o for o in np.lexsort((t, f, e, -v)) if v[o] > 0][:5]  # only activations above zero are hits
            n = len(order)
            assert res.n_hits[ch] == n
            np.testing.assert_allclose(res.scores[ch, :n], v[order], rtol=1e-12)
            np.testing.assert_array_equal(res.example_indices[ch, :n], e[order])
            np.testing.assert_array_equal(res.positions[ch, :n], np.stack([f[order], t[order]], 1))
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


@pytest.mark.parametrize("normalize", ["pcen", "bin_mean_var", "clip"])
def test_a_normalising_front_end_judges_silence_on_its_db_not_on_the_normalised_values(tmp_path, normalize):
    """PCEN's values span 0..3 and z-scores a few units: judged as dB, every frame of every clip was
    "silent" and top-k found nothing. Silence is judged on the front end's dB before normalising, so
    the hits are those of the plain model's rules: on the sound, one per clip."""
    manifest, spans = _padded_corpus(tmp_path, n=6)
    ds = ManifestDataset(manifest, sample_rate=SR, clip_s=2.0, crop="start")
    model = tiny_model()
    model.frontend = type(model.frontend)(model.frontend.config, normalize=normalize)
    with torch.no_grad():  # inputs of order 1 now, not dB
        model.features.input_norm.running_mean.fill_(0.0)
        model.features.input_norm.running_var.fill_(1.0)
    res = top_k(model, ds, "conv1", k=4, batch_size=3, device="cpu", progress=False)
    hop_s = FRONTEND["hop_length"] / SR
    win_s = FRONTEND["n_fft"] / SR / 2
    assert res.n_silent == 0 and res.n_hits.sum() >= 8
    for u in range(len(res.channels)):
        for r, e in enumerate(res.example_indices[u, :int(res.n_hits[u])].tolist()):
            f0, f1, t0, t1 = res.receptive_fields[u, r]
            centre_s = (t0 + t1 - 1) // 2 * hop_s
            assert spans[e][0] - win_s <= centre_s <= spans[e][1] + win_s


def test_top_k_and_activations_of_a_linear_head_treat_its_output_as_one_position():
    """A ``(B, C)`` layer (the classifier's linear layer, here the logits themselves) is a 1 x 1 map:
    top-k are the largest positive logits of each class over the clips, as the model's own forward
    gives them; ``activations`` and the receptive field read it as ``(N, C, 1, 1)``. (It crashed:
    ``not enough values to unpack``.)"""
    from audioconv.interpret.traced import TracedModel

    model = tiny_model(seed=4).double()  # classes 0 and 2 score above zero on these clips
    g = torch.Generator().manual_seed(5)
    clips = [0.3 * torch.randn(1, int(0.4 * SR), generator=g, dtype=torch.float64) for _ in range(8)]
    res = top_k(model, clips, "head.fc", channels=[0, 2], k=3, batch_size=3, device="cpu", progress=False,
                max_per_clip=None, silence_db=None)
    with torch.no_grad():
        logits = torch.cat([model(c[None]) for c in clips]).numpy()  # (8, 3)
    for u, ch in enumerate([0, 2]):
        v = logits[:, ch]
        order = [e for e in np.argsort(-v, kind="stable") if v[e] > 0][:3]
        assert order  # some clips score the class above zero
        assert res.n_hits[u] == len(order)
        np.testing.assert_allclose(res.scores[u][:len(order)], v[order], rtol=1e-12)
        np.testing.assert_array_equal(res.example_indices[u][:len(order)], order)
        assert (res.positions[u][:len(order)] == 0).all()
    traced = TracedModel(model, torch.device("cpu"))
    logmel = torch.cat([model.frontend(c[None]) for c in clips])
    acts = traced.activations(logmel, ["head.fc"], batch_size=3)["head.fc"]
    assert acts.shape == (8, 3, 1, 1)
    np.testing.assert_allclose(acts[:, :, 0, 0].numpy(), logits, rtol=1e-6)
    assert receptive_field(model, "head.fc", 0, 0, input_size=tuple(logmel.shape[-2:]))[1] == logmel.shape[-2]
