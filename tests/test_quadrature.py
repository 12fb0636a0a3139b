"""The quadrature backend, the measures' rules, and the contract every backend shares."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import reluflow
from conftest import central_differences
from reluflow.problem import Gaussian, PiecewisePolynomialDensity, Uniform

UNIFORM = {"kind": "uniform", "low": -1.0, "high": 2.0}
PL_TARGET = {"kind": "piecewise_affine", "knots": [-1, 0.3, 2], "values": [0.5, -1, 2]}


def make(network, measure=UNIFORM, target=PL_TARGET, **risk):
    return reluflow.Problem.from_dict(
        {"network": network, "measure": measure, "target": target, "risk": {"backend": "quadrature", **risk}}
    )


ARCHITECTURES = {
    "shallow": {"input_dim": 1, "widths": [6]},
    "deep": {"input_dim": 1, "widths": [4, 3]},
    "no_bias": {"input_dim": 1, "widths": [5], "bias": False},
    "fixed_output": {"input_dim": 1, "widths": [5], "fixed_output": 1.0},
    "vector_out": {"input_dim": 1, "widths": [5], "output_dim": 2},
}


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "softplus", "sigmoid", "tanh"])
@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_gradient_matches_finite_differences(arch, activation, rng):
    net = {**ARCHITECTURES[arch], "activation": activation}
    target = PL_TARGET
    if net.get("output_dim", 1) == 2:
        target = {"kind": "affine", "slope": [[1.0], [-2.0]], "intercept": [0.1, 0.3]}
    # few points keep a kink from landing within the difference step of a node
    p = make(net, target=target, n_points=64)
    theta = rng.standard_normal((3, p.n_params))
    risk, grad = p.risk_and_grad(theta)
    fd = central_differences(p.risk, theta, h=1e-7)
    np.testing.assert_allclose(risk, p.risk(theta), rtol=0, atol=0)
    for t in range(3):
        assert np.linalg.norm(grad[t] - fd[t]) <= 1e-6 * np.linalg.norm(grad[t]), (t, grad[t], fd[t])


@pytest.mark.parametrize(
    "measure",
    [
        {"kind": "box", "low": 0, "high": 1, "dim": 2},
        {"kind": "gaussian", "dim": 2, "sigma": 0.7},
        {"kind": "gaussian", "dim": 5},
        {"kind": "uniform", "low": -1, "high": 1, "dim": 5},
        {"kind": "empirical", "sample": {"distribution": "gaussian", "n_points": 50, "seed": 3, "dim": 3}},
    ],
)
def test_gradient_matches_finite_differences_in_higher_dimensions(measure, rng):
    d = measure["dim"] if "dim" in measure else measure["sample"]["dim"]
    target = {"kind": "function", "name": "sin", "direction": list(np.linspace(1, 2, d))}
    p = make({"input_dim": d, "widths": [5]}, measure=measure, target=target, n_points=256)
    theta = rng.standard_normal((2, p.n_params))
    _, grad = p.risk_and_grad(theta)
    fd = central_differences(p.risk, theta, h=1e-7)
    for t in range(2):
        assert np.linalg.norm(grad[t] - fd[t]) <= 1e-6 * np.linalg.norm(grad[t])


def test_all_dead_network_has_closed_form_risk():
    # every unit off on [0, 1]: N = c, and for f = alpha x + beta the risk is (c - mean f)^2 + alpha^2 / 12
    alpha, beta, c = 3.0, -0.5, 0.25
    p = make({"input_dim": 1, "widths": [3]}, measure={"kind": "uniform", "low": 0, "high": 1},
             target={"kind": "affine", "slope": alpha, "intercept": beta})
    (w, b), (v, cc) = p.unflatten(np.zeros((1, p.n_params)))
    theta = np.zeros((1, p.n_params))
    views = p.unflatten(theta)
    views[0][0][0, :, 0] = [1.0, -2.0, 0.0]
    views[0][1][0, :] = [-1.0, 0.0, 0.0]  # kinks at 1 (right end) and 0 (left end), and a w = b = 0 unit
    views[1][0][0] = 5.0
    views[1][1][0] = c
    risk, grad = p.risk_and_grad(theta)
    expected = (c - (alpha / 2 + beta)) ** 2 + alpha**2 / 12
    np.testing.assert_allclose(risk, expected, rtol=1e-13)
    np.testing.assert_array_equal(p.dead_neurons(theta), [3])
    # dead units get no gradient on their incoming weights; c gets 2 (c - mean f)
    np.testing.assert_allclose(grad[0, :6], 0.0, atol=1e-15)
    np.testing.assert_allclose(grad[0, -1], 2 * (c - (alpha / 2 + beta)), rtol=1e-13)


@pytest.mark.parametrize("kernel", ["points1d_numba", "points1d", "mask_gemm", "mask_numba", "backprop_numba",
                                    "backprop"])
def test_rows_are_bitwise_independent_of_the_batch(kernel, rng):
    p = make({"input_dim": 1, "widths": [16]}, n_points=512)
    if kernel not in p.backend.kernels:
        pytest.skip(f"{kernel} needs numba (reluflow[fast])")
    p.backend.kernel = kernel
    theta = rng.standard_normal((1000, p.n_params))
    r_all, g_all = p.risk_and_grad(theta)
    for i in (0, 5, 999):
        r1, g1 = p.risk_and_grad(theta[i : i + 1])
        r7, g7 = p.risk_and_grad(theta[max(0, i - 3) : max(0, i - 3) + 7])
        j = i - max(0, i - 3)
        assert r1[0] == r_all[i] == r7[j]
        assert np.array_equal(g1[0], g_all[i]) and np.array_equal(g7[j], g_all[i])


def test_float32_is_selectable(rng):
    p64 = make({"input_dim": 1, "widths": [8]}, n_points=256)
    p32 = make({"input_dim": 1, "widths": [8]}, n_points=256, dtype="float32")
    theta = rng.standard_normal((4, p64.n_params))
    r32, g32 = p32.risk_and_grad(theta)
    r64, g64 = p64.risk_and_grad(theta)
    assert r32.dtype == np.float32 and g32.dtype == np.float32
    np.testing.assert_allclose(r32, r64, rtol=1e-5)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


# ------------------------------------------------------------------ the measures' rules, against closed forms
def _integrate(measure, fn, n_points=1024, seed=0):
    x, w = measure.quadrature(n_points, np.random.default_rng(seed))
    assert np.all(w > 0)
    return float(np.sum(w * fn(x)))


def test_uniform_gauss_legendre_is_exact_for_polynomials():
    m = Uniform(-1.0, 2.0)
    # int_{-1}^{2} x^7 dx / 3 = (2^8 - 1) / 24
    assert _integrate(m, lambda x: x[:, 0] ** 7, 64) == pytest.approx(255 / 24, rel=1e-13)
    # a kink converges at second order in the panel width: |x - 0.3| mean on [-1, 2]
    exact = (1.3**2 + 1.7**2) / 2 / 3
    err = [abs(_integrate(m, lambda x: np.abs(x[:, 0] - 0.3), n) - exact) for n in (256, 1024)]
    assert err[1] < err[0] / 8


def test_box_tensor_rule_and_sobol():
    box2 = Uniform(0.0, 1.0, dim=2)
    assert _integrate(box2, lambda x: x[:, 0] ** 2 * x[:, 1]) == pytest.approx(1 / 6, rel=1e-12)
    box6 = Uniform(0.0, 1.0, dim=6)
    # scrambled Sobol, 4096 points: QMC error of a smooth mean is far below Monte Carlo's 1e-2
    val = _integrate(box6, lambda x: np.prod(np.cos(x), axis=1), 4096)
    assert val == pytest.approx(np.sin(1.0) ** 6, abs=2e-4)


def test_gaussian_rules_match_moments():
    g = Gaussian(dim=2, sigma=1.5)
    assert _integrate(g, lambda x: x[:, 0] ** 2 * x[:, 1] ** 4, 400) == pytest.approx(1.5**2 * 3 * 1.5**4, rel=1e-12)
    g8 = Gaussian(dim=8, sigma=1.0)
    # E|x|^2 = 8; QMC with 8192 points
    assert _integrate(g8, lambda x: np.sum(x**2, axis=1), 8192) == pytest.approx(8.0, rel=5e-3)


def test_piecewise_polynomial_density_rule():
    # tent density on [0, 2]: p = x on [0,1], 2 - x on [1,2]; E[x^2] = 7/6
    m = PiecewisePolynomialDensity([0, 1, 2], [[0, 1], [2, -1]])
    assert _integrate(m, lambda x: x[:, 0] ** 2) == pytest.approx(7 / 6, rel=1e-13)


def test_unnormalized_density_is_normalized_with_a_note():
    with pytest.warns(UserWarning, match="total mass 2"):
        m = PiecewisePolynomialDensity([0, 1], [[2.0]])
    assert _integrate(m, lambda x: np.ones(len(x))) == pytest.approx(1.0, rel=1e-14)


def test_empirical_measure_from_files_and_seed(tmp_path, rng):
    pts = rng.standard_normal((40, 2))
    np.save(tmp_path / "pts.npy", pts)
    pq.write_table(pa.table({"a": pts[:, 0], "b": pts[:, 1]}), tmp_path / "pts.parquet")
    target = {"kind": "function", "name": "tanh"}
    net = {"input_dim": 2, "widths": [3]}
    p_npy = make(net, measure={"kind": "empirical", "path": str(tmp_path / "pts.npy")}, target=target)
    p_pq = make(net, measure={"kind": "empirical", "path": str(tmp_path / "pts.parquet")}, target=target)
    theta = rng.standard_normal((2, p_npy.n_params))
    np.testing.assert_array_equal(p_npy.risk(theta), p_pq.risk(theta))
    # the training loss is the plain mean over the sample
    out = reluflow.network.forward(p_npy.architecture, theta, pts)[..., 0]
    np.testing.assert_allclose(p_npy.risk(theta), np.mean((out - np.tanh(pts[:, 0])) ** 2, axis=1), rtol=1e-13)
    sample = {"distribution": "uniform", "n_points": 30, "seed": 7, "dim": 2}
    a = make(net, measure={"kind": "empirical", "sample": sample}, target=target).measure.points
    b = make(net, measure={"kind": "empirical", "sample": sample}, target=target).measure.points
    c = make(net, measure={"kind": "empirical", "sample": {**sample, "seed": 8}}, target=target).measure.points
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_targets_evaluate_as_specified():
    x = np.array([[-1.0], [0.0], [0.3], [1.0], [2.0], [3.0]])
    pl = reluflow.problem.target_from_dict(PL_TARGET, 1)
    # values at knots, linear between, extrapolated with the end slopes
    np.testing.assert_allclose(pl(x)[:, 0], [0.5, -1 + 1.5 * 0.3 / 1.3, -1, -1 + 3 * 0.7 / 1.7, 2, 2 + 3 / 1.7])
    ab = reluflow.problem.target_from_dict({"kind": "function", "name": "abs", "shift": -0.5}, 1)
    np.testing.assert_allclose(ab(x)[:, 0], np.abs(x[:, 0] - 0.5))
    np.testing.assert_allclose(ab.piecewise_polynomial()(x[:, 0])[:, 0], np.abs(x[:, 0] - 0.5))
    pp = reluflow.problem.target_from_dict(
        {"kind": "piecewise_polynomial", "knots": [0, 1, 2], "coefficients": [[0, 0, 1], [2, -1]]}, 1
    )
    np.testing.assert_allclose(pp(np.array([[0.5], [1.5]]))[:, 0], [0.25, 0.5])


def test_teacher_targets(rng):
    t = reluflow.problem.target_from_dict(
        {"kind": "teacher", "widths": [3], "bias": False, "fixed_output": 1.0, "first_layer": "unit_vectors",
         "seed": 1}, 4
    )
    x = rng.standard_normal((10, 4))
    np.testing.assert_allclose(t(x)[:, 0], np.maximum(x[:, :3], 0).sum(axis=1))
    o = reluflow.problem.target_from_dict({"kind": "teacher", "widths": [3], "first_layer": "orthonormal",
                                           "seed": 2}, 5)
    w, _ = o.first_layer()
    np.testing.assert_allclose(w @ w.T, np.eye(3), atol=1e-14)
    # a 1D shallow ReLU teacher is piecewise affine: its exact representation matches its values
    t1 = reluflow.problem.target_from_dict({"kind": "teacher", "widths": [4], "seed": 3}, 1)
    xs = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(t1.piecewise_polynomial()(xs), t1(xs[:, None]), atol=1e-13)


def test_dead_neurons_counts_hidden_units_of_every_layer():
    p = make({"input_dim": 1, "widths": [2, 2]}, measure={"kind": "uniform", "low": 0, "high": 1}, n_points=64)
    theta = np.zeros((1, p.n_params))
    (w1, b1), (w2, b2), _ = p.unflatten(theta)
    w1[0, :, 0] = [1.0, -1.0]
    b1[0] = [-2.0, 0.5]  # unit 0 never active on [0, 1]; unit 1 active on [0, 0.5)
    w2[0] = [[0.0, 1.0], [0.0, -1.0]]  # layer-2 unit 1 sees only non-positive input
    assert p.dead_neurons(theta)[0] == 2


@pytest.mark.parametrize(
    "net",
    [
        {"input_dim": 1, "widths": [7]},
        {"input_dim": 3, "widths": [5], "output_dim": 2},
        {"input_dim": 2, "widths": [6], "bias": [False, True]},
        {"input_dim": 2, "widths": [6], "bias": [True, False], "output_dim": 3},
        {"input_dim": 1, "widths": [4], "fixed_output": 0.5},
    ],
)
def test_shallow_relu_kernel_matches_generic_backpropagation(net, rng):
    from reluflow.network import forward_backward

    d, k = net["input_dim"], net.get("output_dim", 1)
    target = {"kind": "affine", "slope": rng.standard_normal((k, d)).tolist(), "intercept": [0.3] * k}
    p = make(net, measure={"kind": "gaussian", "dim": d}, target=target, n_points=300)
    be = p.backend
    assert "mask_gemm" in be.kernels and be.kernels[-1] == "backprop"
    theta = rng.standard_normal((9, p.n_params))
    theta[0, 0] = 0.0  # a unit with w = 0 in one coordinate
    r_ref, g_ref = forward_backward(p.architecture, theta, be.points, be.weights, be.target_values)
    for kernel in be.kernels[:-1]:  # mask_gemm, and points1d in 1D (tests/test_points1d.py has more)
        be.kernel = kernel
        r, g = p.risk_and_grad(theta)
        np.testing.assert_allclose(r, r_ref, rtol=1e-13)
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-13 * np.abs(g_ref).max())
