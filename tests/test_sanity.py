"""Sanity checks (model-parameter randomisation): Spearman ρ against scipy, the cascade's bookkeeping
against an independent re-run, the initialisation against PyTorch's, and the `audioconv sanity` command."""
import copy
import json

import numpy as np
import pytest
import torch

from audioconv.cli import main
from audioconv.interpret import Unit, explain, sanity_check, spearman
from audioconv.interpret.sanity import randomisable_layers, reinitialise
from audioconv.utils import mix_seed
from _methods_models import make
from _tiny_cnn import tiny_cnn

stats = pytest.importorskip("scipy.stats")


def test_spearman_matches_scipy_with_ties_and_constant_rows():
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(6, 5, 7)), 1)  # many ties
    b = np.round(a + rng.normal(scale=0.8, size=a.shape), 1)
    b[1] = a[1] ** 2  # monotone for a ≥ 0 only
    b[2] = 0.0  # a zero map (all ties): undefined
    mine = spearman(torch.as_tensor(a), torch.as_tensor(b)).numpy()
    for i in range(6):
        if i == 2:
            assert np.isnan(mine[i])
            continue
        ref = stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic
        assert mine[i] == pytest.approx(ref, abs=1e-12)
    np.testing.assert_allclose(spearman(torch.as_tensor(a), torch.as_tensor(a)).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(spearman(torch.as_tensor(a), -torch.as_tensor(a)).numpy(), -1.0, atol=1e-12)


def test_reinitialise_draws_pytorchs_default_initialisation():
    conv = torch.nn.Conv2d(16, 32, 3)
    reinitialise(conv, torch.Generator().manual_seed(0))
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform_(a=√5) = U(±1/√fan_in); bias likewise
    w = conv.weight.detach().numpy().ravel()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    # a uniform distribution on ±bound: mean 0, variance bound²/3 (4608 draws)
    assert abs(w.mean()) < 0.05 * bound and w.var() == pytest.approx(bound ** 2 / 3, rel=0.06)
    ref = torch.nn.Conv2d(16, 32, 3)  # torch's own init, for the same bound
    assert np.abs(ref.weight.detach().numpy()).max() <= bound
    before = conv.weight.detach().clone()
    reinitialise(conv, torch.Generator().manual_seed(0))
    assert torch.equal(conv.weight, before)  # seeded


def test_layers_are_randomised_from_the_top_down():
    model = tiny_cnn(0)
    x = torch.randn(1, 1, 16, 20)
    assert randomisable_layers(model, x, model.classify) == ["head.fc", "features.conv2", "features.conv1"]
    res = make("resnet")
    assert randomisable_layers(res, x.double()) == ["fc", "top", "conv_b", "conv_a", "stem.0"]


def _inputs():
    return torch.randn(4, 1, 16, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 8 - 40


def test_randomising_nothing_gives_one():
    model = tiny_cnn(0).double()
    result = sanity_check(model, _inputs(), layers=[], device="cpu", progress=False)
    assert result.steps == ["none"]
    for m in result.methods:
        ok = np.isfinite(result.spearman_abs[m][0])
        assert ok.any()
        np.testing.assert_allclose(result.spearman_abs[m][0][ok], 1.0, atol=1e-12)
        np.testing.assert_allclose(result.spearman[m][0][ok], 1.0, atol=1e-12)


@pytest.mark.parametrize("cascade", [True, False])
def test_each_step_equals_an_independent_rerun(cascade):
    model = tiny_cnn(0).double()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = _inputs()
    methods = ["gradient", "deconv", "grad_cam"]
    result = sanity_check(model, x, methods, target=1, gradcam_layer="conv2", cascade=cascade, seed=5,
                          example=2, device="cpu", progress=False)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the model is untouched
    assert result.steps == ["none", "head.fc", "features.conv2", "features.conv1"]
    trained = explain(model, x, methods, 1, gradcam_layer="conv2", device="cpu")
    work = copy.deepcopy(model)
    for i, name in enumerate(result.steps[1:], start=1):
        if not cascade:
            work = copy.deepcopy(model)
        reinitialise(dict(work.named_modules())[name], torch.Generator().manual_seed(mix_seed(5, i)))
        random = explain(work, x, methods, 1, gradcam_layer="conv2", device="cpu")
        for m in methods:
            ref = [stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
                   for a, b in zip(trained.maps[m].numpy(), random.maps[m].numpy())]
            np.testing.assert_allclose(result.spearman_abs[m][i], ref, atol=1e-10)
            ref_in = [stats.spearmanr(a.ravel(), np.abs(b).ravel()).statistic
                      for a, b in zip(x[:, 0].numpy(), random.maps[m].numpy())]
            np.testing.assert_allclose(result.spearman_input[m][i], ref_in, atol=1e-10)
            np.testing.assert_allclose(result.example_maps[m][i], random.maps[m][2].numpy(), atol=1e-12)
    # destroying the weights really changes the gradient: the check can fail
    assert np.nanmean(result.spearman_abs["gradient"][-1]) < 0.9


def test_a_unit_target_uses_the_projector_and_ignores_layers_above_it():
    model = tiny_cnn(0).double()
    result = sanity_check(model, _inputs(), ["deconv", "guided"], target=Unit("conv2", 3), device="cpu",
                          progress=False)
    assert result.classes is None and result.target == "conv2 unit 3 (max)"
    for m in ("deconv", "guided"):  # the unit does not depend on the classifier layer above it
        np.testing.assert_allclose(result.spearman_abs[m][1], 1.0, atol=1e-12)


def test_bad_arguments_are_one_line_errors():
    model = tiny_cnn(0).double()
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        sanity_check(model, _inputs(), ["lime"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="cannot re-initialise 'features.bn1'"):
        sanity_check(model, _inputs(), layers=["features.bn1"], device="cpu", progress=False)
    with pytest.raises(ValueError, match="example must be in 0..3"):
        sanity_check(model, _inputs(), example=4, device="cpu", progress=False)
    no_maps = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2)).double()
    with pytest.raises(ValueError, match="Grad-CAM needs gradcam_layer.*no layer with feature maps"):
        sanity_check(no_maps, _inputs(), ["grad_cam"], device="cpu", progress=False)
    # a model without short layer names: Grad-CAM at its last feature map (B, C, F, T)
    assert sanity_check(make("resnet"), _inputs(), ["grad_cam"], layers=[], device="cpu",
                        progress=False).gradcam_layer == "relu_top"


@pytest.fixture()
def checkpoint(tmp_path):
    import soundfile as sf

    from _tiny_cnn import SR
    from audioconv.training.checkpoint import save_checkpoint

    m = tiny_cnn(0)
    save_checkpoint(tmp_path / "best.pt", {"kind": "model", "model": m.state_dict(), "model_config": m.config.to_dict(),
                                           "labels": ["a", "b"], "epoch": 1, "train_config": {"clip_s": 0.5}})
    t = np.arange(int(0.5 * SR)) / SR
    rows = []
    for i, f in enumerate((700.0, 1500.0, 2500.0, 400.0)):
        x = 0.3 * np.sin(2 * np.pi * f * t) * (t > 0.2) + 0.01 * np.random.default_rng(i).standard_normal(t.size)
        sf.write(tmp_path / f"tone{i}.wav", x.astype(np.float32), SR)
        rows.append({"audio_filepath": f"tone{i}.wav", "label": "ab"[i % 2]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_cli_sanity_writes_json_and_figures(checkpoint, capsys):
    out = checkpoint / "out"
    rc = main(["sanity", "--checkpoint", str(checkpoint / "best.pt"), "--manifest", str(checkpoint / "m.jsonl"),
               "--methods", "gradient,guided,grad_cam", "--target", "label", "--device", "cpu", "--no-progress",
               "-o", str(out)])
    assert rc == 0
    info = json.loads((out / "sanity.json").read_text())
    assert info["steps"] == ["none", "head.fc", "features.conv2", "features.conv1"]
    assert info["classes"] == [0, 1, 0, 1] and len(info["clips"]) == 4
    for m in ("gradient", "guided", "grad_cam"):
        assert info["spearman_abs"][m]["mean"][0] == pytest.approx(1.0)
        assert len(info["per_example"]["spearman_abs"][m]) == 4
    assert (out / "sanity.png").stat().st_size > 0 and (out / "sanity_maps.png").stat().st_size > 0
    assert "head.fc" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--methods", "gradient,lime"], "--methods: unknown method 'lime'"),
    (["--unit", "conv2"], "--unit must be LAYER:CHANNEL"),
    (["--target", "dog"], "--target 'dog' is not a class: use 'predicted', 'label', a class name (a, b) or an index 0..1"),
    (["--target", "7"], "--target 7 is out of range"),
    (["--layers", "features.bn1"], "cannot re-initialise 'features.bn1'"),
])
def test_cli_sanity_bad_input(checkpoint, capsys, argv, message):
    rc = main(["sanity", "--checkpoint", str(checkpoint / "best.pt"), "--manifest", str(checkpoint / "m.jsonl"),
               "--device", "cpu", "--no-progress", "-o", str(checkpoint / "bad"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
