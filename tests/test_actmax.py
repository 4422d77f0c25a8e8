"""Activation maximisation: the penalties against their formulas, the ascent against an independent
loop, a measured gain over random and flat starts, seeding, and the sound of the result."""
import numpy as np
import pytest
import torch

from audioconv.features import LogMel
from audioconv.interpret import Unit, actmax_audio, maximize_activation
from audioconv.interpret.actmax import l2_penalty, smoothness_penalty
from _tiny_cnn import tiny_cnn


def test_penalties_and_their_gradients_follow_the_formulas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7)) * 4
    s_ref = 0.5 * (np.square(np.diff(x, axis=-2)).sum(axis=(-2, -1)) + np.square(np.diff(x, axis=-1)).sum(axis=(-2, -1)))
    t = torch.tensor(x, requires_grad=True)
    s = smoothness_penalty(t)
    np.testing.assert_allclose(s.detach().numpy(), s_ref, rtol=1e-13)
    s.sum().backward()
    lap = np.zeros_like(x)  # Σ over existing neighbours of (x[cell] − x[neighbour])
    lap[:, 1:, :] += x[:, 1:, :] - x[:, :-1, :]
    lap[:, :-1, :] += x[:, :-1, :] - x[:, 1:, :]
    lap[:, :, 1:] += x[:, :, 1:] - x[:, :, :-1]
    lap[:, :, :-1] += x[:, :, :-1] - x[:, :, 1:]
    np.testing.assert_allclose(t.grad.numpy(), lap, rtol=1e-12)
    np.testing.assert_allclose(l2_penalty(torch.tensor(x), -3.0).numpy(), 0.5 * np.square(x + 3).sum(axis=(-2, -1)))


def _conv2_unit3(model, x):
    """conv2 unit 3's strongest activation, computed through the Sequential directly (no hooks)."""
    return model.features[:8](x)[:, 3].flatten(1).amax(1)


def test_ascent_equals_an_independent_adam_loop():
    model = tiny_cnn(0).double()
    steps, lr, lam_s, lam_2, level, noise, seed = 25, 0.7, 0.03, 0.002, -40.0, 1.0, 3
    result = maximize_activation(model, Unit("conv2", 3), size=(16, 30), steps=steps, lr_db=lr, jitter=(0, 0),
                                 smoothness=lam_s, l2=lam_2, start_db=level, noise_db=noise, bounds_db=(-80, 0),
                                 seed=seed, device="cpu", progress=False)
    g = torch.Generator().manual_seed(seed)
    start = (level + noise * torch.randn(1, 1, 16, 30, generator=g, dtype=torch.float64)).clamp(-80, 0)
    x0 = start.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_conv2_unit3(model, x0).sum(), x0)
    c = float(grad.square().mean().sqrt())
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        d_f, d_t = x[0, 0].diff(dim=0), x[0, 0].diff(dim=1)
        j = (_conv2_unit3(model, x)[0] / c - lam_s * 0.5 * (d_f.square().sum() + d_t.square().sum())
             - lam_2 * 0.5 * (x[0, 0] - level).square().sum())
        (-j).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(-80, 0)
    torch.testing.assert_close(result.logmel, x.detach()[0, 0], rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        assert result.score == pytest.approx(float(_conv2_unit3(model, x.detach())[0]), rel=1e-10)


def test_the_result_excites_the_unit_far_more_than_random_or_flat_inputs():
    model = tiny_cnn(0)
    unit = Unit("conv2", 3)
    result = maximize_activation(model, unit, size=(16, 30), steps=100, lr_db=2.0, smoothness=0.01, seed=0,
                                 device="cpu", progress=False)
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(64, 1, 16, 30, generator=g) * 10 - 40).clamp(-80, 0)  # the front end's range
    flat = torch.full((1, 1, 16, 30), -40.0)
    with torch.no_grad():
        random_best = float(_conv2_unit3(model, noise).max())
        flat_score = float(_conv2_unit3(model, flat)[0])
        measured = float(_conv2_unit3(model, result.logmel[None, None])[0])
    assert measured == pytest.approx(result.score, rel=1e-5)
    # measured: 0.71 against 0.22 for the best of 64 random inputs and 0.09 at the start
    assert result.score > 2.5 * random_best and result.score > 2.5 * max(flat_score, result.score_start)
    assert result.history["score"][-1] > result.history["score"][0]
    # default bounds: the input BatchNorm's running mean −40 dB ± 3 × its std 20 dB
    assert result.settings["start_db"] == pytest.approx(-40.0) and result.settings["bounds_db"] == pytest.approx([-100, 20])
    assert float(result.logmel.min()) >= -100.0 and float(result.logmel.max()) <= 20.0


def test_the_smoothness_prior_and_the_l2_term_do_what_they_say():
    model = tiny_cnn(0)
    common = dict(size=(16, 30), steps=60, lr_db=2.0, seed=1, device="cpu", progress=False)
    rough = maximize_activation(model, 1, smoothness=0.0, **common)
    smooth = maximize_activation(model, 1, smoothness=0.2, **common)
    assert float(smoothness_penalty(smooth.logmel)) < 0.2 * float(smoothness_penalty(rough.logmel))
    assert smooth.score > smooth.score_start  # the ascent still makes progress
    near = maximize_activation(model, 1, smoothness=0.0, l2=1.0, **common)
    assert float((near.logmel + 40).abs().mean()) < 0.3 * float((rough.logmel + 40).abs().mean())


def test_start_and_bounds_come_from_a_reference_batch():
    model = tiny_cnn(0)
    ref = torch.randn(3, 1, 16, 30, generator=torch.Generator().manual_seed(0)) * 5 - 20
    r = maximize_activation(model, 1, reference=ref, size=(16, 30), steps=5, device="cpu", progress=False)
    assert r.settings["start_db"] == pytest.approx(float(ref.double().mean()))
    assert r.settings["bounds_db"] == pytest.approx([float(ref.min()), float(ref.max())])
    assert float(r.logmel.min()) >= float(ref.min()) and float(r.logmel.max()) <= float(ref.max())
    r = maximize_activation(model, 1, reference=ref, start_db=-30.0, bounds_db=(-60, 10), size=(16, 30), steps=5,
                            noise_db=0.0, device="cpu", progress=False)
    assert r.settings["start_db"] == -30.0 and r.settings["bounds_db"] == [-60.0, 10.0]
    assert torch.equal(r.start, torch.full((16, 30), -30.0))


def test_a_seed_makes_it_deterministic():
    model = tiny_cnn(0)
    a = maximize_activation(model, Unit("conv2", 1, "mean"), steps=15, seed=7, device="cpu", progress=False)
    b = maximize_activation(model, Unit("conv2", 1, "mean"), steps=15, seed=7, device="cpu", progress=False)
    c = maximize_activation(model, Unit("conv2", 1, "mean"), steps=15, seed=8, device="cpu", progress=False)
    assert torch.equal(a.logmel, b.logmel) and a.history == b.history
    assert not torch.equal(a.logmel, c.logmel)


def test_the_sound_has_the_optimised_spectrum():
    model = tiny_cnn(0)
    result = maximize_activation(model, Unit("conv2", 3), steps=60, lr_db=2.0, smoothness=0.02, device="cpu",
                                 progress=False)
    fe = LogMel(model.frontend.config)
    wav = actmax_audio(result, fe)
    assert wav.shape == ((result.logmel.shape[1] - 1) * fe.config.hop_length,)
    assert float(wav.abs().max()) == pytest.approx(0.5, rel=1e-6)
    heard = fe(wav[None])[0, 0]
    r = np.corrcoef(heard.numpy().ravel(), result.logmel.numpy().ravel())[0, 1]
    assert r > 0.6  # Griffin-Lim of the optimised log-mel gives back its shape (measured 0.88)


def test_bad_arguments_are_one_line_errors():
    model = tiny_cnn(0)
    with pytest.raises(ValueError, match="one Unit or one class index"):
        maximize_activation(model, None, progress=False)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        maximize_activation(model, 0, steps=0, progress=False)
    with pytest.raises(ValueError, match="jitter must be"):
        maximize_activation(model, 0, jitter=(-1, 2), progress=False)
    with pytest.raises(ValueError, match="bounds_db must be"):
        maximize_activation(model, 0, bounds_db=(0, -80), progress=False)
    with pytest.raises(ValueError, match="zero gradient at the start"):
        _dead_unit(model)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"size=\(n_mels, frames\) is needed"):
        maximize_activation(plain, 0, progress=False, device="cpu")
    r = maximize_activation(plain, 0, size=(8, 9), steps=3, progress=False, device="cpu")  # no front end: no bounds
    assert r.logmel.shape == (8, 9) and r.hz is None and r.settings["bounds_db"] is None


def _dead_unit(model):
    """A unit whose ReLU is off everywhere at a flat start: its gradient is zero."""
    import copy

    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead.features.bn2.bias[0] = -1e6
    maximize_activation(dead, Unit("conv2", 0), noise_db=0.0, steps=1, progress=False, device="cpu")
