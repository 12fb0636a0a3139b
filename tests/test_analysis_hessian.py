"""Central-difference Hessians and their spectra: toys with known Hessians, constructed ReLU points."""

import numpy as np
import pytest

from reluflow.analysis import classify, hessian, hessian_spectrum, spectrum_from_hessian
from test_analysis_toys import PL_GLOBAL_MIN, PL_TARGET, Quadratic, Saddle2D, shallow_problem, theta_of

BACKENDS = ["quadrature", "exact1d"]  # exact1d tests are skipped until that backend exists


def random_spd(rng, p, eigenvalues):
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (q * np.asarray(eigenvalues, dtype=float)) @ q.T


def test_quadratic_hessian_is_a(rng):
    a = random_spd(rng, 6, [5.0, 3.0, 1.0, 0.5, -0.7, -2.0])
    theta = 3.0 * rng.standard_normal((4, 6))
    h = hessian(Quadratic(a), theta)
    assert h.shape == (4, 6, 6)
    np.testing.assert_allclose(h, np.broadcast_to(a, h.shape), rtol=0, atol=1e-8)
    np.testing.assert_array_equal(h, np.swapaxes(h, 1, 2))  # symmetrized


def test_quadratic_spectrum_counts_and_rank(rng):
    eig = [4.0, 2.0, 1e-3, 0.0, 0.0, -0.5, -3.0]  # a singular, indefinite A: rank 5
    a = random_spd(rng, 7, eig)
    theta = rng.standard_normal((3, 7))
    s = hessian_spectrum(Quadratic(a), theta)
    assert set(s) == {"n_negative", "n_zero", "lambda_min", "lambda_min_positive", "hessian_rank"}
    np.testing.assert_array_equal(s["n_negative"], 2)
    np.testing.assert_array_equal(s["n_zero"], 2)
    np.testing.assert_array_equal(s["hessian_rank"], 5)
    np.testing.assert_allclose(s["lambda_min"], -3.0, atol=1e-8)
    np.testing.assert_allclose(s["lambda_min_positive"], 1e-3, atol=1e-8)


def test_zero_tolerance_is_relative(rng):
    # the same matrix scaled by 1e-6 has the same counts: the zero band scales with max |lambda|
    a = np.diag([2.0, 1e-10, 0.5])
    for scale in (1.0, 1e-6, 1e6):
        s = spectrum_from_hessian((scale * a)[None])
        assert s["n_zero"][0] == 1 and s["hessian_rank"][0] == 2 and s["n_negative"][0] == 0
    s = spectrum_from_hessian(np.diag([1.0, 2.0])[None])
    assert s["lambda_min_positive"][0] == 1.0
    s = spectrum_from_hessian(np.diag([-1.0, -2.0, 0.0])[None])
    assert np.isnan(s["lambda_min_positive"][0]) and s["n_negative"][0] == 2


def test_non_finite_rows_are_nan_and_do_not_affect_others(rng):
    a = random_spd(rng, 5, [3.0, 1.0, 0.2, -1.0, 0.0])
    theta = rng.standard_normal((3, 5))
    theta[1, 2] = np.nan
    h = hessian(Quadratic(a), theta)
    assert np.all(np.isnan(h[1]))
    for i in (0, 2):
        np.testing.assert_array_equal(h[i], hessian(Quadratic(a), theta[i : i + 1])[0])
    s = hessian_spectrum(Quadratic(a), theta)
    assert all(np.isnan(v[1]) for v in s.values())
    assert s["n_negative"][0] == 1 and s["n_zero"][2] == 1


def test_fd_step_is_relative_and_validated(rng):
    a = random_spd(rng, 3, [1.0, 2.0, 3.0])
    theta = 1e3 * rng.standard_normal((2, 3))  # large coordinates: steps scale with |theta|
    np.testing.assert_allclose(hessian(Quadratic(a), theta, fd_step=1e-4)[0], a, atol=1e-7)
    with pytest.raises(ValueError, match="fd_step"):
        hessian(Quadratic(a), theta, fd_step=-1.0)


def test_toy_saddle():
    s = hessian_spectrum(Saddle2D(), np.zeros((1, 2)))
    assert s["n_negative"][0] == 1 and s["n_zero"][0] == 0
    np.testing.assert_allclose(s["lambda_min"], -2.0, atol=1e-9)
    np.testing.assert_allclose(s["lambda_min_positive"], 2.0, atol=1e-9)
    cls = classify(np.array(["critical"]), np.array([1.0]), np.array([True]), s["n_negative"], risk_tol=1e-12)
    assert cls[0] == "saddle"


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_risk_global_minimum_is_regular(backend):
    """C9: at a zero-risk point the Hessian has rank P - dim(zero-risk manifold).

    Near PL_GLOBAL_MIN the zero-risk set is: each active unit keeps its kink -b/w and its slope change v*w,
    which leaves one free parameter per active unit (the rescaling (w, b, v) -> (a w, a b, v / a)); c = f(0)
    is fixed because both active units vanish at x = 0; the dead unit's (w, b, v) are free while it stays
    dead. So dim = 2 + 3 = 5 and the rank is P - 5 = 10 - 5 = 5. Equivalently, H = 2 int grad N grad N^T dmu
    and grad N spans {1, 1[x>1/4], x 1[x>1/4], 1[x>1/2], x 1[x>1/2]}, five independent functions.
    """
    p = shallow_problem(3, PL_TARGET, backend)
    risk, grad = p.risk_and_grad(PL_GLOBAL_MIN)
    assert risk[0] < 1e-28 and np.linalg.norm(grad) < 1e-14
    s = hessian_spectrum(p, PL_GLOBAL_MIN)
    assert s["n_negative"][0] == 0
    assert s["n_zero"][0] == 5 and s["hessian_rank"][0] == p.n_params - 5
    assert s["lambda_min_positive"][0] > 1e-4
    h = hessian(p, PL_GLOBAL_MIN)[0]
    # zero directions: the rescaling of unit 1 is (w, b, -v) and everything of the dead unit
    rescale = np.zeros(p.n_params)
    rescale[[0, 3, 6]] = [1.0, -0.25, -1.0]
    np.testing.assert_allclose(h @ rescale, 0.0, atol=1e-9)
    np.testing.assert_allclose(h[:, [2, 5, 8]], 0.0, atol=1e-9)
    cls = classify(np.array(["critical"]), risk, np.linalg.norm(grad, axis=1) <= 1e-10, s["n_negative"],
                   risk_tol=1e-12)
    assert cls[0] == "global_min"


@pytest.mark.parametrize("backend", BACKENDS)
def test_affine_target_single_unit_global_minimum(backend):
    # f = 2x + 1 by one unit active on all of [0, 1] (kink at -1): v w = 2, c + v b = 1 leaves a 2-dimensional
    # zero-risk set in R^4, and grad N spans {1, x}: rank 2
    p = shallow_problem(1, {"kind": "affine", "slope": 2.0, "intercept": 1.0}, backend)
    theta = theta_of(w=[0.5], b=[0.5], v=[4.0], c=[-1.0])
    assert p.risk(theta)[0] < 1e-28
    s = hessian_spectrum(p, theta)
    assert s["n_negative"][0] == 0 and s["hessian_rank"][0] == 2 and s["n_zero"][0] == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_dead_point_is_a_non_global_local_minimum(backend):
    """Every unit dead on [0, 1] with margin, c = mean f: a critical point with risk alpha^2 / 12.

    Its kinks lie strictly outside [0, 1], so in a neighbourhood no unit turns on and the risk is exactly
    alpha^2/12 + (c - alpha/2)^2: a (non-strict) local minimum that is not global. The Hessian is 2 in the c
    direction and zero elsewhere: n_negative = 0, rank 1, and the right class is local_min.
    """
    alpha = 2.0
    p = shallow_problem(3, {"kind": "affine", "slope": alpha}, backend)
    theta = theta_of(w=[1.0, -1.0, 2.0], b=[-2.0, -0.5, -3.0], v=[0.4, -1.2, 0.9], c=[alpha / 2])
    risk, grad = p.risk_and_grad(theta)
    np.testing.assert_allclose(risk, alpha**2 / 12, rtol=1e-13)
    assert np.linalg.norm(grad) < 1e-14
    s = hessian_spectrum(p, theta)
    assert s["n_negative"][0] == 0 and s["hessian_rank"][0] == 1 and s["n_zero"][0] == p.n_params - 1
    np.testing.assert_allclose(s["lambda_min_positive"], 2.0, rtol=1e-8)
    cls = classify(np.array(["critical"]), risk, np.linalg.norm(grad, axis=1) <= 1e-10, s["n_negative"],
                   risk_tol=1e-10, optimal_risk=0.0)
    assert cls[0] == "local_min"


@pytest.mark.parametrize("backend", BACKENDS)
def test_constructed_network_saddle(backend):
    """One unit with w = 0, v = 0, b > 0 (a constant unit with zero output weight), c = mean f, f = alpha x.

    G = 0 (v = 0 kills G_w, G_b; int r = 0 kills G_v = 2 b int r and G_c). Locally L = int (c + v b + v w x -
    alpha x)^2, whose Hessian in (w, b, v, c) is [[0, 0, -alpha/6, 0], [0, 0, 0, 0], [-alpha/6, 0, 2b^2, 2b],
    [0, 0, 2b, 2]]: the (w, v, c) block has determinant -alpha^2/18 < 0 and positive trace, so exactly one
    negative eigenvalue: a saddle at risk alpha^2/12.
    """
    alpha, b = 2.0, 0.5
    p = shallow_problem(1, {"kind": "affine", "slope": alpha}, backend)
    theta = theta_of(w=[0.0], b=[b], v=[0.0], c=[alpha / 2])
    risk, grad = p.risk_and_grad(theta)
    assert np.linalg.norm(grad) < 1e-14
    expected = np.array([[0, 0, -alpha / 6, 0], [0, 0, 0, 0], [-alpha / 6, 0, 2 * b * b, 2 * b],
                         [0, 0, 2 * b, 2]])
    np.testing.assert_allclose(hessian(p, theta)[0], expected, atol=1e-9)
    s = hessian_spectrum(p, theta)
    assert s["n_negative"][0] == 1 and s["n_zero"][0] == 1 and s["hessian_rank"][0] == 3
    np.testing.assert_allclose(s["lambda_min"], np.linalg.eigvalsh(expected)[0], atol=1e-9)
    cls = classify(np.array(["budget"]), risk, np.linalg.norm(grad, axis=1) <= 1e-10, s["n_negative"],
                   risk_tol=1e-10)
    assert cls[0] == "saddle"
    # and the risk really decreases along the negative-curvature direction, by lambda_min t^2 / 2
    lam, vec = np.linalg.eigh(expected)
    t = 1e-3
    drop = p.risk(theta + t * vec[:, 0])[0] - risk[0]
    np.testing.assert_allclose(drop, 0.5 * lam[0] * t * t, rtol=1e-2)


def test_hessian_is_batch_invariant_on_a_network(rng):
    p = shallow_problem(3, PL_TARGET)
    theta = np.concatenate([PL_GLOBAL_MIN, PL_GLOBAL_MIN + 0.01 * rng.standard_normal((2, p.n_params))])
    h = hessian(p, theta)
    for i in range(3):
        np.testing.assert_array_equal(h[i], hessian(p, theta[i : i + 1])[0])
