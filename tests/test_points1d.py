"""The quadrature backend's sorted-points kernel for 1D shallow ReLU nets (``risk/_points1d.py``), against the
mask-GEMM kernel and the generic backpropagation on the same point set, finite differences and hand-made cases."""

import numpy as np
import pytest

from conftest import central_differences
from reluflow.network import forward_backward
from reluflow.risk._exact1d import numba_installed
from test_quadrature import UNIFORM, make

NETS = {
    "shallow": {"input_dim": 1, "widths": [9]},
    "no_bias": {"input_dim": 1, "widths": [5], "bias": False},
    "no_output_bias": {"input_dim": 1, "widths": [5], "bias": [True, False]},
    "fixed_output": {"input_dim": 1, "widths": [6], "fixed_output": 0.5},
    "vector_out": {"input_dim": 1, "widths": [7], "output_dim": 3},
}
MEASURES = {
    "uniform": UNIFORM,
    "gaussian": {"kind": "gaussian", "dim": 1},
    # far from the origin, and a sample with repeated points
    "shifted": {"kind": "uniform", "low": 1000.0, "high": 1003.0},
    "empirical_ties": [0.1, 0.5, 0.5, 0.5, -0.2, 0.9, 0.1],
}


def _empirical(points, tmp_path):
    path = tmp_path / "points.npy"
    np.save(path, np.asarray(points, dtype=float).reshape(-1, 1))
    return {"kind": "empirical", "path": str(path)}


def _target(k, rng):
    return {"kind": "affine", "slope": rng.standard_normal((k, 1)).tolist(), "intercept": [0.3] * k}


def _theta(p, rng, n=40):
    theta = rng.standard_normal((n, p.n_params))
    if p.architecture.layers[0].bias is not None:
        theta[0, 0] = 0.0  # w = 0, b > 0: active everywhere
        theta[0, p.architecture.layers[0].bias.start] = 0.7
        theta[1, 0] = 0.0  # w = 0, b < 0: active nowhere
        theta[1, p.architecture.layers[0].bias.start] = -0.7
    return theta


@pytest.mark.parametrize("measure", sorted(MEASURES))
@pytest.mark.parametrize("net", sorted(NETS))
def test_points1d_matches_mask_kernel_and_backpropagation(net, measure, rng, tmp_path):
    spec = NETS[net]
    mu = MEASURES[measure]
    mu = _empirical(mu, tmp_path) if isinstance(mu, list) else mu
    p = make(spec, measure=mu, target=_target(spec.get("output_dim", 1), rng), n_points=257)
    be = p.backend
    # the compiled kernels (where numba is installed) aside; points1d_numba gives points1d's bytes
    # (tests/test_points1d_numba.py), mask_numba the mask kernel's numbers (tests/test_shallow_numba.py)
    assert [k for k in be.kernels if not k.endswith("_numba")] == ["points1d", "mask_gemm", "backprop"]
    be.kernel = "points1d"
    theta = _theta(p, rng)
    if measure == "shifted":
        theta[:, : spec["widths"][0]] *= 1e-3  # kinks inside [1000, 1003] for some units
    r, g = be.risk_and_grad(theta)
    r_ref, g_ref = forward_backward(p.architecture, theta, be.points, be.weights, be.target_values)
    be.kernel = "mask_gemm"
    r_mask, g_mask = be.risk_and_grad(theta)
    for r_other, g_other in ((r_ref, g_ref), (r_mask, g_mask)):
        np.testing.assert_allclose(r, r_other, rtol=1e-12)
        np.testing.assert_allclose(g, g_other, rtol=1e-11, atol=1e-12 * np.abs(g_other).max())


def test_points1d_gradient_matches_finite_differences(rng):
    # few points keep a kink from landing within the difference step of a point
    p = make({"input_dim": 1, "widths": [6]}, n_points=64)
    p.backend.kernel = "points1d"
    theta = rng.standard_normal((4, p.n_params))
    risk, grad = p.risk_and_grad(theta)
    np.testing.assert_array_equal(risk, p.risk(theta))
    fd = central_differences(p.risk, theta, h=1e-7)
    for t in range(len(theta)):
        assert np.linalg.norm(grad[t] - fd[t]) <= 1e-6 * np.linalg.norm(grad[t]), (t, grad[t], fd[t])


def test_points1d_rows_are_bitwise_independent_of_the_batch(rng):
    p = make({"input_dim": 1, "widths": [16], "output_dim": 2},
             target={"kind": "affine", "slope": [[1.0], [-0.5]], "intercept": [0.0, 0.2]}, n_points=700)
    p.backend.kernel = "points1d"
    theta = rng.standard_normal((1000, p.n_params))  # several chunks
    r_all, g_all = p.risk_and_grad(theta)
    for i in (0, 5, 31, 999):
        r1, g1 = p.risk_and_grad(theta[i : i + 1])
        lo = max(0, i - 3)
        r7, g7 = p.risk_and_grad(theta[lo : lo + 7])
        assert r1[0] == r_all[i] == r7[i - lo]
        assert np.array_equal(g1[0], g_all[i]) and np.array_equal(g7[i - lo], g_all[i])


def test_kink_on_a_point_uses_relu_prime_zero(tmp_path):
    # points 0, 0.25, ..., 1 with weight 1/5; one unit relu(x - 0.5): its kink sits on the point 0.5
    p = make({"input_dim": 1, "widths": [1]}, measure=_empirical([0.0, 0.25, 0.5, 0.75, 1.0], tmp_path),
             target={"kind": "constant", "value": 0.0})
    for sign in (1.0, -1.0):  # relu(x - 0.5) (suffix unit) and relu(0.5 - x) (prefix unit)
        theta = np.array([[sign, -0.5 * sign, 1.0, 0.0]])  # w, b, v, c
        risk, grad = p.risk_and_grad(theta)
        # N = relu(+-(x - 0.5)) is 0.25, 0.5 at two points and 0 elsewhere; 0.5 itself is inactive
        np.testing.assert_allclose(risk, [(0.25**2 + 0.5**2) / 5], rtol=1e-15)
        active = [0.75, 1.0] if sign > 0 else [0.25, 0.0]
        n_vals = [0.25, 0.5]
        g_w = sum(2 * n * x for n, x in zip(n_vals, active, strict=True)) / 5
        g_b = sum(2 * n for n in n_vals) / 5
        np.testing.assert_allclose(grad[0, :2], [g_w, g_b], rtol=1e-14)
        np.testing.assert_allclose(grad[0, 2], sum(2 * n * n for n in n_vals) / 5, rtol=1e-14)


def test_non_finite_rows_give_nan_and_leave_the_others_alone(rng):
    p = make({"input_dim": 1, "widths": [8]}, n_points=128)
    theta = rng.standard_normal((6, p.n_params))
    r0, g0 = p.risk_and_grad(theta)
    theta[2, 3] = np.nan
    theta[4, 0] = np.inf
    r, g = p.risk_and_grad(theta)
    assert np.isnan(r[[2, 4]]).all() and np.isnan(g[[2, 4]]).all()
    keep = [0, 1, 3, 5]
    assert np.array_equal(r[keep], r0[keep]) and np.array_equal(g[keep], g0[keep])


def test_float32_and_higher_dimensions_keep_the_other_kernels():
    mask = "mask_numba" if numba_installed() else "mask_gemm"  # the compiled mask kernel where numba is installed
    # float32 in 1D: the compiled sorted-points kernel where numba is installed, else the mask kernel
    assert make({"input_dim": 1, "widths": [4]}, dtype="float32").backend.kernel == (
        "points1d_numba" if numba_installed() else "mask_gemm")
    target2 = {"kind": "affine", "slope": [[1.0, 2.0]], "intercept": [0.0]}
    p2 = make({"input_dim": 2, "widths": [4]}, measure={"kind": "gaussian", "dim": 2}, target=target2)
    assert p2.backend.kernel == mask
    # everything else: backpropagation, compiled where numba is installed (tests/test_backprop_numba.py)
    backprop = "backprop_numba" if numba_installed() else "backprop"
    assert make({"input_dim": 1, "widths": [4, 3]}).backend.kernel == backprop
    assert make({"input_dim": 1, "widths": [4], "activation": "tanh"}).backend.kernel == backprop


def test_an_unknown_kernel_is_named(rng):
    p = make({"input_dim": 1, "widths": [4]})
    p.backend.kernel = "magic"
    with pytest.raises(ValueError, match=r"kernel = 'magic' is not allowed: expected one of \['points1d(_numba)?'"):
        p.risk_and_grad(np.zeros((1, p.n_params)))
