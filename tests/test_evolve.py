"""evolve: per-epoch strongest activations against a brute-force scan, CKA against the formula."""
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from audioconv.app.figures import write_evolution
from audioconv.training.checkpoint import load_model, save_checkpoint
from audioconv.interpret.evolve import Evolution, evolve, find_snapshots

from _tiny_cnn import SR, tiny_cnn
from test_cka import _debiased_brute


def _model(seed):
    return tiny_cnn(seed)


def make_run(root, epochs=(1, 2, 5)):
    """Snapshots in the trainer's format: epoch 5 = final weights, epoch 2 near them, epoch 1 random."""
    final = _model(0)
    early = _model(1)
    labels = ["a", "b"]
    run = root / "run"
    for e in epochs:
        m = _model(0)
        with torch.no_grad():
            for (name, p), q in zip(m.state_dict().items(), early.state_dict().values()):
                if p.is_floating_point() and "running" not in name:
                    w = {1: 1.0, 2: 0.2, 5: 0.0}[e]
                    p.copy_((1 - w) * final.state_dict()[name] + w * q)
        save_checkpoint(run / "snapshots" / f"epoch_{e:03d}.pt",
                        {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(),
                         "labels": labels, "epoch": e, "train_config": {"clip_s": 0.3}})
    return run


def make_probe(root, n=6):
    rng = np.random.default_rng(4)
    t = np.arange(int(0.3 * SR)) / SR
    rows = []
    for i in range(n):
        x = 0.02 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (400 + 500 * i) * t)
        sf.write(root / f"p{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"p{i}.wav", "label": "ab"[i % 2]})
    path = root / "probe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def _acts(model, logmel, layer):
    out = {}
    h = model.feature_module(layer).register_forward_hook(lambda m, a, o: out.setdefault("x", o))
    with torch.no_grad():
        model.classify(logmel)
    h.remove()
    return out["x"].double().numpy()


def _cka_formula(x, y):  # Kornblith et al. eq. (4), feature space
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_evolve_against_brute_force(tmp_path):
    run = make_run(tmp_path)
    probe, rows = make_probe(tmp_path)
    out = tmp_path / "evo"
    evolution = evolve(run, probe, channels_per_layer=3, k=1, progress=False, device="cpu")
    assert isinstance(evolution, Evolution) and not out.exists()  # computing writes nothing
    written = write_evolution(evolution, out)
    res = evolution.to_dict()
    assert res["epochs"] == [1, 2, 5] and written["epochs"] == [1, 2, 5]
    assert res["probe"]["clip_ids"] == [str(tmp_path / r["audio_filepath"]) for r in rows]  # manifest order
    saved = json.loads((out / "evolve.json").read_text())
    assert saved["layers"]["conv1"]["cka"] == res["layers"]["conv1"]["cka"]
    assert saved["layers"]["conv2"]["grid_png"] == str(out / "evolution_conv2.png") == written["layers"]["conv2"]["grid_png"]
    for name in ("evolution_conv1.png", "evolution_conv2.png", "convergence.png"):
        assert (out / name).stat().st_size > 5000

    # reference: activations of each snapshot on the probe log-mels, computed here independently
    from audioconv.io import audio
    wavs = torch.stack([audio.load(tmp_path / r["audio_filepath"])[0] for r in rows])  # (N, 1, T)
    models = {e: load_model(p, "cpu")[0] for e, p in find_snapshots(run)}
    logmel = models[5].frontend(wavs)
    for layer in ("conv1", "conv2"):
        acts = {e: _acts(m, logmel, layer) for e, m in models.items()}
        n_ch = acts[5].shape[1]
        peak = acts[5].transpose(1, 0, 2, 3).reshape(n_ch, -1).max(1)
        expected_units = sorted(np.argsort(-peak, kind="stable")[:3].tolist())
        info = res["layers"][layer]
        assert info["units"] == expected_units
        # CKA of flattened maps vs the last epoch, by the feature-space formula
        flat = {e: a.reshape(a.shape[0], -1) for e, a in acts.items()}
        expected = [_cka_formula(flat[e], flat[5]) for e in (1, 2, 5)]
        np.testing.assert_allclose(info["cka_linear"], expected, rtol=1e-6)
        # debiased CKA (the default shown) against the brute-force U-statistic of Song et al. (2012)
        debiased = [_debiased_brute(flat[e].astype(np.float64), flat[5].astype(np.float64)) for e in (1, 2, 5)]
        np.testing.assert_allclose(info["cka_debiased"], debiased, rtol=1e-5)
        assert info["cka"] == info["cka_debiased"] and res["cka_estimator"] == "debiased"
        assert info["cka"][2] == pytest.approx(1.0) and info["cka"][1] > info["cka"][0]
        # every cell: the unit's strongest activation over all clips and positions at that epoch
        for cell in info["cells"]:
            a = acts[cell["epoch"]][:, cell["unit"]]
            n, f, t = np.unravel_index(np.argmax(a), a.shape)  # first max in (clip, f, t) order
            assert cell["activation"] == pytest.approx(a.max(), rel=1e-5)
            assert (cell["example"], *cell["position"]) == (n, f, t)
    grid = evolution.grids["conv2"]
    assert grid.epochs == [1, 2, 5] and len(grid.projections) == 3 and len(grid.projections[0]) == 3
    f0, f1, t0, t1 = grid.receptive_fields[0][2]
    assert grid.projections[0][2].shape == (f1 - f0, t1 - t0)


def test_pooled_cka_and_explicit_units(tmp_path):
    run = make_run(tmp_path, epochs=(1, 5))
    probe, _ = make_probe(tmp_path)
    evolution = evolve(run, probe, layers=["conv2"], units={"conv2": [0, 7]}, k=2,
                       cka_features="pool", progress=False, device="cpu")
    res = evolution.to_dict()
    info = res["layers"]["conv2"]
    assert list(res["layers"]) == ["conv2"] and info["units"] == [0, 7]
    assert len(info["cells"]) == 2 * 2 * 2  # units × k × epochs
    assert info["cka"][-1] == pytest.approx(1.0)
    grid = evolution.grids["conv2"]
    assert grid.row_units == [0, 0, 7, 7] and grid.row_ranks == [0, 1, 0, 1]


def test_errors(tmp_path):
    probe, _ = make_probe(tmp_path, n=2)
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        (tmp_path / "empty").mkdir()
        evolve(tmp_path / "empty", probe, progress=False)
    run = make_run(tmp_path, epochs=(1,))
    with pytest.raises(ValueError, match="valid layers"):
        evolve(run, probe, layers=["conv9"], progress=False, device="cpu")
    with pytest.raises(ValueError, match="cka_features"):
        evolve(run, probe, cka_features="mean", progress=False, device="cpu")


def test_untrained_baseline_is_a_fresh_network_of_the_same_architecture(tmp_path):
    from audioconv.interpret.evolve import reinitialised
    from audioconv.io import audio
    from audioconv.models.spectrogram_cnn import SpectrogramCNN
    from _tiny_cnn import FRONTEND

    run = make_run(tmp_path, epochs=(1, 5))
    probe, rows = make_probe(tmp_path)
    ev = evolve(run, probe, layers=["conv1", "conv2"], grids=False, baseline=2, baseline_seed=7, progress=False,
                device="cpu")
    assert ev.grids == {} and ev.to_dict()["layers"]["conv2"]["cells"] == []
    final = load_model(find_snapshots(run)[-1][1], "cpu")[0]
    logmel = final.frontend(torch.stack([audio.load(tmp_path / r["audio_filepath"])[0] for r in rows]))
    for i, seed in enumerate((7, 8)):
        torch.manual_seed(seed)  # the reference: the constructor's own initialisation under that seed
        fresh = SpectrogramCNN(2, sample_rate=SR, channels=(4, 8), dropout=0.0, frontend=FRONTEND).eval()
        for (name, a), b in zip(fresh.state_dict().items(), reinitialised(final, seed).state_dict().values()):
            assert torch.equal(a, b), name
        for layer in ("conv1", "conv2"):
            x = _acts(fresh, logmel, layer).reshape(len(rows), -1)
            y = _acts(final, logmel, layer).reshape(len(rows), -1)
            assert ev.baseline[layer]["linear"][i] == pytest.approx(_cka_formula(x, y), rel=1e-6)
            assert ev.baseline[layer]["debiased"][i] == pytest.approx(_debiased_brute(x, y), rel=1e-5)
    assert final.state_dict()["features.conv1.weight"].equal(
        load_model(find_snapshots(run)[-1][1], "cpu")[0].state_dict()["features.conv1.weight"])  # not modified


def test_debiased_cka_needs_four_probe_clips(tmp_path):
    run = make_run(tmp_path, epochs=(1, 5))
    probe, _ = make_probe(tmp_path, n=3)
    with pytest.raises(ValueError, match="needs at least 4 clips for debiased CKA, got 3"):
        evolve(run, probe, layers=["conv1"], grids=False, progress=False, device="cpu")
    ev = evolve(run, probe, layers=["conv1"], grids=False, progress=False, device="cpu", cka_estimator="linear")
    assert ev.cka is ev.cka_linear and all(np.isnan(ev.cka_debiased["conv1"]))
    with pytest.raises(ValueError, match="cka_estimator must be one of debiased, linear"):
        evolve(run, probe, cka_estimator="rbf", progress=False, device="cpu")
    with pytest.raises(ValueError, match=r"baseline must be an int >= 0 \(freshly initialised networks\), got -1"):
        evolve(run, probe, baseline=-1, progress=False, device="cpu")
