"""Linear CKA against the feature-space formula of Kornblith et al. (2019) and its invariances."""
import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from audioconv.interpret.cka import centered_gram, cka_from_grams, linear_cka


def _cka_formula(x, y):
    """Kornblith et al. eq. (4) in feature space with numpy: ||Yc^T Xc||_F^2 / (||Xc^T Xc|| ||Yc^T Yc||)."""
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    return np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def test_hand_example():
    # centred columns: x = [-1, 0, 1], y = [[-1,1],[0,-2],[1,1]]
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.0, 1.0], [1.0, -2.0], [2.0, 1.0]])
    # Yc^T Xc = [2, 0] → 4; Xc^T Xc = 2; Yc^T Yc = [[2,0],[0,6]] → sqrt(40)
    expected = 4.0 / (2.0 * np.sqrt(40.0))
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-12)
    assert _cka_formula(x, y) == pytest.approx(expected, rel=1e-12)


def test_matches_feature_space_formula_random():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 7))
    y = x @ rng.normal(size=(7, 30)) + 0.5 * rng.normal(size=(20, 30))
    assert linear_cka(x, y) == pytest.approx(_cka_formula(x, y), rel=1e-10)
    # torch input with trailing dims (flattened per example) gives the same number
    assert linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y).view(20, 5, 6)) == pytest.approx(
        _cka_formula(x, y), rel=1e-5)


def test_identical_is_one_and_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(15, 6))
    y = rng.normal(size=(15, 9))
    base = linear_cka(x, y)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    q = ortho_group.rvs(6, random_state=2)
    assert linear_cka(x @ q, y) == pytest.approx(base, rel=1e-10)  # orthogonal transform
    assert linear_cka(3.7 * x, 0.01 * y) == pytest.approx(base, rel=1e-10)  # isotropic scale
    assert linear_cka(x + 5.0, y) == pytest.approx(base, rel=1e-10)  # translation (centring)
    # not invariant to an anisotropic scaling
    assert linear_cka(x * np.array([10, 1, 1, 1, 1, 1.0]), y) != pytest.approx(base, rel=1e-3)
    assert 0.0 <= base <= 1.0


def test_grams_and_errors():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(8, 4)), rng.normal(size=(8, 3))
    assert cka_from_grams(centered_gram(x), centered_gram(y)) == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert np.isnan(linear_cka(np.ones((5, 3)), x[:5]))  # constant representation
    with pytest.raises(ValueError, match="same number of examples"):
        linear_cka(x, y[:5])
    with pytest.raises(ValueError, match="at least 2 examples"):
        linear_cka(x[:1], y[:1])
