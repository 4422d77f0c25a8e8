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


# ---- debiased CKA (unbiased HSIC, Song et al. 2012) -----------------------------------------------
from itertools import permutations  # noqa: E402

from audioconv.interpret.cka import debiased_cka, debiased_cka_from_grams, hsic_unbiased  # noqa: E402


def _hsic_u_brute(k, l):
    """Song et al. (2012) Theorem 2 by brute force: the mean over ordered distinct 4-tuples (s, t, u, v)
    of K_st L_st + K_st L_uv - 2 K_st L_su (the U-statistic the closed form computes)."""
    total, count = 0.0, 0
    for s, t, u, v in permutations(range(k.shape[0]), 4):
        total += k[s, t] * l[s, t] + k[s, t] * l[u, v] - 2 * k[s, t] * l[s, u]
        count += 1
    return total / count


def _debiased_brute(x, y):
    k, l = x @ x.T, y @ y.T
    return _hsic_u_brute(k, l) / np.sqrt(_hsic_u_brute(k, k) * _hsic_u_brute(l, l))


def test_debiased_hand_example():
    # x = [1,-1,0,0], y = [1,0,-1,0] (one feature each): off-diagonal Grams K12 = -1, L13 = -1, so
    # tr(K~L~) = 0, (1'K~1)(1'L~1)/((n-1)(n-2)) = 4/6, 2/(n-2) 1'K~L~1 = 1  -> HSIC_u(K,L) = (2/3 - 1)/4 = -1/12
    # HSIC_u(K,K) = (2 + 2/3 - 2)/4 = 1/6 = HSIC_u(L,L)  -> debiased CKA = -1/2 (linear CKA: (y'x)^2/(|x|^2|y|^2) = 1/4)
    x = np.array([[1.0], [-1.0], [0.0], [0.0]])
    y = np.array([[1.0], [0.0], [-1.0], [0.0]])
    k, l = torch.tensor(x @ x.T), torch.tensor(y @ y.T)
    assert hsic_unbiased(k, l) == pytest.approx(-1 / 12, abs=1e-15)
    assert hsic_unbiased(k, k) == pytest.approx(1 / 6, abs=1e-15)
    assert debiased_cka(x, y) == pytest.approx(-0.5, abs=1e-14)
    assert linear_cka(x, y) == pytest.approx(0.25, abs=1e-14)


@pytest.mark.parametrize("n, p, q", [(5, 3, 4), (7, 20, 2), (6, 1, 9)])
def test_debiased_matches_the_u_statistic_by_brute_force(n, p, q):
    rng = np.random.default_rng(n * 100 + p)
    x = rng.normal(size=(n, p)) + 2.0
    y = x[:, :1] * rng.normal(size=(1, q)) + rng.normal(size=(n, q))
    k, l = torch.tensor(x @ x.T), torch.tensor(y @ y.T)
    assert hsic_unbiased(k, l) == pytest.approx(_hsic_u_brute(x @ x.T, y @ y.T), rel=1e-10)
    assert debiased_cka(x, y) == pytest.approx(_debiased_brute(x, y), rel=1e-10)
    # the same number from the centred Grams evolve keeps (HSIC_u of a linear kernel ignores feature means)
    assert debiased_cka_from_grams(centered_gram(x), centered_gram(y)) == pytest.approx(_debiased_brute(x, y), rel=1e-9)


def test_debiased_identity_and_invariances():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 12))
    y = np.tanh(x @ rng.normal(size=(12, 8))) + 0.3 * rng.normal(size=(30, 8))
    base = debiased_cka(x, y)
    assert debiased_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert debiased_cka(x, 7.5 * x + 4.0) == pytest.approx(1.0, abs=1e-12)  # scaling and translation
    q = ortho_group.rvs(12, random_state=5)
    assert debiased_cka(x @ q, y) == pytest.approx(base, rel=1e-10)  # orthogonal transform
    assert debiased_cka(x, 0.01 * y) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert debiased_cka(y, x) == pytest.approx(base, rel=1e-12)  # symmetric
    # not invariant to an arbitrary invertible map (like linear CKA)
    a = np.diag(np.linspace(0.1, 10, 12))
    assert abs(debiased_cka(x @ a, y) - base) > 1e-3


def test_debiased_removes_the_many_features_bias():
    # independent representations with far more features than examples: linear CKA is near 1, the
    # population value (and the debiased estimate) is 0
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 4000)), rng.normal(size=(128, 3000))
    assert linear_cka(x, y) > 0.9  # 0.964
    assert abs(debiased_cka(x, y)) < 0.05  # -0.010 (its spread over seeds is about 0.01 here)


def test_debiased_errors():
    with pytest.raises(ValueError, match="at least 4 examples"):
        debiased_cka(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="same number of examples"):
        debiased_cka(np.ones((5, 2)), np.ones((4, 2)))
    assert np.isnan(debiased_cka(np.ones((6, 2)), np.arange(12.0).reshape(6, 2)))  # constant side
