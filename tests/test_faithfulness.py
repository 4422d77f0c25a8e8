"""Deletion / insertion curves against closed forms on a linear log-mel classifier (whose true
attribution is w·x), AUC against numpy's trapezoid rule, patch ranking against a brute-force loop,
and the `audioconv faithfulness` command."""
import json

import numpy as np
import pytest
import torch

from audioconv.cli import main
from audioconv.interpret import deletion_insertion, faithfulness
from audioconv.interpret.faithfulness import auc, patch_ranks
from audioconv.utils import mix_seed
from _methods_models import LinearLogMel
from _tiny_cnn import tiny_cnn


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_auc_is_numpys_trapezoid():
    rng = np.random.default_rng(0)
    x = np.sort(np.concatenate([[0.0, 1.0], rng.uniform(size=9)]))
    y = rng.uniform(size=(3, 4, x.size))
    np.testing.assert_allclose(auc(y, x), np.trapezoid(y, x, axis=-1), rtol=1e-13)


@pytest.fixture()
def linear():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 7, generator=g, dtype=torch.float64) * 0.3
    x = torch.randn(3, 1, 6, 7, generator=g, dtype=torch.float64)
    return LinearLogMel(w, bias=0.2).eval(), w, x


@pytest.mark.parametrize("steps", [42, 10])
def test_linear_model_curves_match_the_closed_form(linear, steps):
    model, w, x = linear
    contrib = (w * x[:, 0]).numpy()  # (B, F, T): the exact attribution of logit 0 with a zero baseline
    curves = deletion_insertion(model, x, contrib, target=0, steps=steps, fill=0.0, device="cpu")
    n = contrib[0].size
    counts = np.round(np.arange(steps + 1) * n / steps).astype(int)
    np.testing.assert_allclose(curves.fractions, counts / n)
    for b in range(3):
        order = np.argsort(-contrib[b].ravel(), kind="stable")
        removed = np.concatenate([[0.0], np.cumsum(contrib[b].ravel()[order])])  # Σ of the first n contributions
        total = contrib[b].sum()
        np.testing.assert_allclose(curves.deletion[b], _sigmoid(0.2 + total - removed[counts]), rtol=1e-12)
        np.testing.assert_allclose(curves.insertion[b], _sigmoid(0.2 + removed[counts]), rtol=1e-12)
        np.testing.assert_allclose(curves.deletion_auc[b], np.trapezoid(curves.deletion[b], curves.fractions))


def test_the_true_attribution_beats_every_random_order(linear):
    """For a linear model, removing the largest contributions first minimises the logit at every step."""
    model, w, x = linear
    contrib = w * x[:, 0]
    best = deletion_insertion(model, x, contrib, target=0, steps=42, fill=0.0, device="cpu")
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        shuffled = torch.rand(contrib.shape, generator=g, dtype=torch.float64)
        other = deletion_insertion(model, x, shuffled, target=0, steps=42, fill=0.0, device="cpu")
        assert np.all(best.deletion <= other.deletion + 1e-12) and np.all(best.insertion >= other.insertion - 1e-12)
        assert np.all(best.deletion_auc < other.deletion_auc) and np.all(best.insertion_auc > other.insertion_auc)


def test_patch_ranks_match_a_brute_force_loop():
    g = torch.Generator().manual_seed(1)
    a = torch.round(torch.randn(2, 7, 10, generator=g, dtype=torch.float64) * 2) / 2  # ties happen
    ranks = patch_ranks(a, (3, 4)).numpy()
    for b in range(2):
        scores = []
        for i, f0 in enumerate(range(0, 7, 3)):
            for j, t0 in enumerate(range(0, 10, 4)):
                scores.append((-float(a[b, f0:f0 + 3, t0:t0 + 4].mean()), i * 3 + j, (f0, t0)))
        for rank, (_, _, (f0, t0)) in enumerate(sorted(scores)):  # by mean, ties to the lower patch index
            assert np.all(ranks[b, f0:f0 + 3, t0:t0 + 4] == rank)


def test_fill_values_and_patches(linear):
    model, w, x = linear
    contrib = w * x[:, 0]
    for fill, value in (("mean", x.mean(dim=(1, 2, 3))), ("min", x.amin(dim=(1, 2, 3))), (-3.0, torch.full((3,), -3.0, dtype=torch.float64))):
        c = deletion_insertion(model, x, contrib, target=0, steps=4, patch=(2, 3), fill=fill, device="cpu")
        all_fill = (w.sum() * value + 0.2).numpy()
        np.testing.assert_allclose(c.deletion[:, -1], _sigmoid(all_fill), rtol=1e-12)  # everything removed
        np.testing.assert_allclose(c.insertion[:, 0], _sigmoid(all_fill), rtol=1e-12)
        np.testing.assert_allclose(c.deletion[:, 0], torch.softmax(model(x), -1)[:, 0].detach().numpy(), rtol=1e-12)


def test_faithfulness_random_baseline_is_the_mean_of_seeded_orders():
    model = tiny_cnn(0).double()
    x = torch.randn(2, 1, 16, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 8 - 40
    result = faithfulness(model, x, ["gradient", "grad_cam"], target=1, n_random=2, seed=4, steps=6, patch=(4, 5),
                          device="cpu", progress=False)
    runs = []
    for r in range(2):
        ranks = patch_ranks(x[:, 0], (4, 5), torch.Generator().manual_seed(mix_seed(4, r)))
        order_map = -ranks.double()  # an attribution whose order is that permutation
        runs.append(deletion_insertion(model, x, order_map, 1, steps=6, patch=(4, 5), device="cpu"))
    np.testing.assert_allclose(result.curves["random"].deletion, np.mean([c.deletion for c in runs], 0), rtol=1e-12)
    np.testing.assert_allclose(result.curves["random"].insertion, np.mean([c.insertion for c in runs], 0), rtol=1e-12)
    from audioconv.interpret import explain
    maps = explain(model, x, ["gradient"], 1, device="cpu").maps["gradient"]
    ref = deletion_insertion(model, x, maps, 1, steps=6, patch=(4, 5), device="cpu")
    np.testing.assert_allclose(result.curves["gradient"].deletion, ref.deletion, rtol=1e-12)
    loud = deletion_insertion(model, x, x[:, 0], 1, steps=6, patch=(4, 5), device="cpu")  # the input as its own map
    np.testing.assert_allclose(result.curves["input"].insertion, loud.insertion, rtol=1e-12)
    again = faithfulness(model, x, ["gradient", "grad_cam"], target=1, n_random=2, seed=4, steps=6, patch=(4, 5),
                         device="cpu", progress=False)
    assert again.to_dict() == result.to_dict()


def test_bad_arguments_are_one_line_errors(linear):
    from audioconv.interpret import Unit

    model, w, x = linear
    a = w * x[:, 0]
    with pytest.raises(ValueError, match="target must be a class"):
        deletion_insertion(model, x, a, Unit("weight", 0), device="cpu")
    with pytest.raises(ValueError, match="attributions must be"):
        deletion_insertion(model, x, a[:2], 0, device="cpu")
    with pytest.raises(ValueError, match="NaN"):
        deletion_insertion(model, x, a * float("nan"), 0, device="cpu")
    with pytest.raises(ValueError, match="patch must be"):
        deletion_insertion(model, x, a, 0, patch=(0, 2), device="cpu")
    with pytest.raises(ValueError, match="larger than the input"):
        deletion_insertion(model, x, a, 0, patch=(9, 2), device="cpu")
    with pytest.raises(ValueError, match="fill must be"):
        deletion_insertion(model, x, a, 0, fill="median", device="cpu")
    with pytest.raises(ValueError, match="steps must be"):
        deletion_insertion(model, x, a, 0, steps=0, device="cpu")


def test_cli_faithfulness(tmp_path, capsys):
    import soundfile as sf

    from _tiny_cnn import SR
    from audioconv.training.checkpoint import save_checkpoint

    m = tiny_cnn(0)
    save_checkpoint(tmp_path / "best.pt", {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(),
                                           "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}})
    t = np.arange(int(0.5 * SR)) / SR
    rows = []
    for i, f in enumerate((700.0, 1500.0, 2500.0)):
        sf.write(tmp_path / f"t{i}.wav", (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32), SR)
        rows.append({"audio_filepath": f"t{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["faithfulness", "--checkpoint", str(tmp_path / "best.pt"), "--manifest", str(tmp_path / "m.jsonl"),
            "--device", "cpu", "--no-progress", "--steps", "4", "--patch", "4,5", "--methods", "gradient,grad_cam"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    info = json.loads((tmp_path / "out" / "faithfulness.json").read_text())
    assert set(info["summary"]) == {"gradient", "grad_cam", "random", "input"}
    assert info["fractions"][0] == 0.0 and info["fractions"][-1] == 1.0 and len(info["clips"]) == 3
    assert (tmp_path / "out" / "faithfulness.png").stat().st_size > 0
    assert "deletion" in capsys.readouterr().out
    for bad, message in ((["--patch", "4"], "--patch must be two positive integers"),
                         (["--fill", "median"], "--fill must be 'mean', 'min' or a number"),
                         (["--n-random", "0"], "--n-random must be >= 1")):
        assert main([*args, *bad, "-o", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
