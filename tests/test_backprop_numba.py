"""The quadrature backend's compiled backpropagation (``risk/_backprop_numba.py``, kernel ``backprop_numba``) against
its numpy backpropagation (``network/_architecture.py``, kernel ``backprop``).

The compiled kernel sums in another order (BLAS for the wide layer products, blocked loops with fused multiply-adds
for the thin ones) and evaluates tanh its own way (within a few units in the last place of numpy's), so the two
agree to rounding, not bit for bit. What it must match exactly: ``relu'(0) = 0`` at points on a kink, exactly zero
gradients of dead units, NaN rows for non-finite parameters without touching other rows, bitwise batch invariance,
and a risk without the gradient that has the same bits as with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow.network import forward_backward
from reluflow.network._activations import ACTIVATIONS
from reluflow.risk import _quadrature
from test_quadrature import make
from test_shallow_numba import _by_kernel  # {kernel: (risk, G, risk without G)}, no silent fallback

pytest.importorskip("numba")
from reluflow.risk import _backprop_numba  # noqa: E402  (it imports numba)

KERNELS = ("backprop_numba", "backprop")
NETS = {
    "shallow_d1": {"input_dim": 1, "widths": [7]},
    "deep_d1": {"input_dim": 1, "widths": [5, 4]},
    "deep_d2_wide": {"input_dim": 2, "widths": [32, 32]},  # the middle layer's products go to BLAS
    "deep_d3_three": {"input_dim": 3, "widths": [6, 9, 5]},
    "vector_out": {"input_dim": 2, "widths": [6, 5], "output_dim": 2},
    "wide_vector_out": {"input_dim": 9, "widths": [12, 10], "output_dim": 8},  # BLAS everywhere but the output
    "no_bias": {"input_dim": 2, "widths": [5, 4], "bias": False},
    "mixed_bias": {"input_dim": 2, "widths": [5, 4, 3], "bias": [True, False, True, False], "output_dim": 2},
    "fixed_output": {"input_dim": 2, "widths": [6, 4], "fixed_output": 0.5},
    "fixed_output_k2": {"input_dim": 1, "widths": [9, 10], "fixed_output": -1.5, "output_dim": 2},
}
ACTIVATION_NAMES = sorted(ACTIVATIONS)
# 300 points: two full blocks of POINT_BLOCK = 128 and a partial one
N_POINTS = 300


def _problem(name, activation, rng, dtype="float64", n_points=N_POINTS, **extra):
    net = {**NETS[name], "activation": activation, **extra}
    d, k = net["input_dim"], net.get("output_dim", 1)
    target = {"kind": "affine", "slope": rng.standard_normal((k, d)).tolist(), "intercept": [0.3] * k}
    measure = {"kind": "empirical",
               "sample": {"distribution": "gaussian", "n_points": n_points, "seed": 4, "dim": d}}
    return make(net, measure=measure, target=target, dtype=dtype)


def _special_rows(p, rng):
    """Rows with first-layer kinks exactly on points, units whose pre-activation is exactly zero everywhere
    (``relu'(0) = 0``: dead), units dead beyond every point, and a zero weight."""
    arch = p.architecture
    first = arch.layers[0]
    h, d = arch.widths[0], arch.input_dim
    theta = rng.standard_normal((6, p.n_params))
    w = theta[:, first.weight].reshape(6, h, d)  # a view
    x = p.backend.points
    if first.bias is not None:
        b = theta[:, first.bias]
        # ties: w_j = 2^e e_i, b_j = -w_j . x_m, so that w_j . x_m + b_j is exactly 0 in any order of summation
        for row in range(3):
            for j in range(h):
                i, m, scale = j % d, rng.integers(len(x)), 2.0 ** (j % 3 - 1)
                w[row, j] = 0.0
                w[row, j, i] = scale if j % 2 else -scale
                b[row, j] = -w[row, j, i] * x[m, i]
        b[4, ::2] = -1e3  # dead beyond every point (relu)
        w[4, ::2] = 1e-3
    # dead units in every hidden layer: incoming weights and bias zero, so z = 0 exactly
    for ls in arch.layers[:-1]:
        wl = theta[:, ls.weight].reshape(6, ls.n_out, ls.n_in)
        wl[3, ::2] = 0.0
        if ls.bias is not None:
            theta[3, ls.bias.start : ls.bias.stop : 2] = 0.0
    w[5, 0, 0] = 0.0
    return theta


def _dead_mask(p):
    """Entries of row 3's gradient that belong to the dead units (incoming weights and bias of every other unit)."""
    mask = np.zeros(p.n_params, dtype=bool)
    for ls in p.architecture.layers[:-1]:
        m = np.zeros((ls.n_out, ls.n_in), dtype=bool)
        m[::2] = True
        mask[ls.weight] = m.reshape(-1)
        if ls.bias is not None:
            mask[ls.bias.start : ls.bias.stop : 2] = True
    return mask


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("name", sorted(NETS))
def test_compiled_kernel_matches_the_numpy_backpropagation(name, activation, rng):
    p = _problem(name, activation, rng)
    be = p.backend
    assert "backprop_numba" in be.kernels and be.kernels[-2:] == ["backprop_numba", "backprop"]
    theta = np.concatenate([_special_rows(p, rng), rng.standard_normal((20, p.n_params))])
    out = _by_kernel(p, theta, KERNELS)
    (r, g, r_only), (r_np, g_np, _) = out["backprop_numba"], out["backprop"]
    assert r.dtype == g.dtype == np.float64
    assert np.array_equal(r, r_only)  # the risk alone has the same bits as with the gradient
    r_ref, g_ref = forward_backward(p.architecture, theta, be.points, be.weights, be.target_values)
    assert np.array_equal(r_np, r_ref)
    np.testing.assert_allclose(r, r_np, rtol=1e-12)
    np.testing.assert_allclose(g, g_np, rtol=1e-10, atol=1e-12 * np.abs(g_np).max())
    if activation == "relu":  # relu'(0) = 0: exactly zero in both kernels
        dead = _dead_mask(p)
        assert np.all(g[3, dead] == 0) and np.all(g_np[3, dead] == 0)


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
@pytest.mark.parametrize("name", ["deep_d2_wide", "mixed_bias", "fixed_output_k2", "wide_vector_out"])
def test_float32_agrees_to_float32_rounding(name, activation, rng):
    p32 = _problem(name, activation, rng, "float32")
    p64 = _problem(name, activation, np.random.default_rng(20261122), "float64")
    be = p32.backend
    assert be.kernel == "backprop_numba"
    theta = rng.standard_normal((12, p32.n_params)) * 0.5
    out = _by_kernel(p32, theta.astype(np.float32), KERNELS)
    (r, g, r_only), (r_np, g_np, _) = out["backprop_numba"], out["backprop"]
    assert r.dtype == g.dtype == np.float32
    assert np.array_equal(r, r_only)
    r64, g64 = forward_backward(p64.architecture, theta.astype(np.float32).astype(np.float64), p64.backend.points,
                                p64.backend.weights, p64.backend.target_values)
    for rr, gg in ((r, g), (r_np, g_np)):
        np.testing.assert_allclose(rr, r64, rtol=1e-4)
        np.testing.assert_allclose(gg, g64, rtol=1e-2, atol=1e-4 * np.abs(g64).max())
    np.testing.assert_allclose(r, r_np, rtol=1e-4)
    np.testing.assert_allclose(g, g_np, rtol=1e-2, atol=1e-4 * np.abs(g_np).max())


def test_tanh_is_numpy_tanh_to_a_few_ulp():
    import numba

    @numba.njit
    def tanh_all(z, out):
        for i in range(z.size):
            out[i] = _backprop_numba._tanh(z[i])

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal(20000) * s for s in (1e-9, 1e-3, 0.1, 0.35, 1.0, 3.0, 10.0, 30.0)]
                       + [np.array([0.0, -0.0, 19.06, -19.07, 1e300, -1e300, np.inf, -np.inf, 5e-324, -5e-324])])
    out = np.empty_like(z)
    tanh_all(z, out)
    ref = np.tanh(z)
    assert np.all(np.abs(out - ref) <= 4 * np.spacing(np.abs(ref)))
    assert np.array_equal(np.signbit(out), np.signbit(ref))  # tanh(-0.0) = -0.0
    tanh_all(np.array([np.nan]), out[:1])
    assert np.isnan(out[0])


def test_ties_at_a_kink_use_relu_prime_zero(rng, tmp_path):
    """A deep net whose first-layer kinks pass through points of a small integer point set, and a second-layer unit
    with pre-activation exactly zero at one point: the kernels agree with the formula with ``relu'(0) = 0``."""
    pts = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 0.5]])
    path = tmp_path / "points.npy"
    np.save(path, pts)
    p = make({"input_dim": 2, "widths": [3, 2]}, measure={"kind": "empirical", "path": str(path)},
             target={"kind": "affine", "slope": [[1.0, -1.0]], "intercept": [0.25]})
    # layer 1: w = (0, 1), (-1, 0), (0, 2), b = -1, 2, -1 (kinks through points 0, 1, 2 and 4); layer 2: unit 0
    # reads unit 1 (2 - x_1) with bias -1: zero at x_1 = 1 (points 1 and 4 ... exactly on its kink)
    W1, b1 = np.array([[0.0, 1.0], [-1.0, 0.0], [0.0, 2.0]]), np.array([-1.0, 2.0, -1.0])
    W2, b2 = np.array([[0.0, 1.0, 0.0], [0.5, 0.25, -1.0]]), np.array([-1.0, 0.5])
    W3, b3 = np.array([[1.5, -0.75]]), np.array([0.1])
    theta = np.concatenate([W1.ravel(), b1, W2.ravel(), b2, W3.ravel(), b3])[None]
    z1 = pts @ W1.T + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ W2.T + b2
    assert np.count_nonzero(z1 == 0) >= 3 and np.count_nonzero(z2 == 0) >= 1
    a2 = np.maximum(z2, 0)
    res = (a2 @ W3.T + b3)[:, 0] - (pts @ [1.0, -1.0] + 0.25)
    delta3 = 2 * res[:, None] / len(pts)
    delta2 = (delta3 @ W3) * (z2 > 0)
    delta1 = (delta2 @ W2) * (z1 > 0)
    g = np.concatenate([(delta1.T @ pts).ravel(), delta1.sum(0), (delta2.T @ a1).ravel(), delta2.sum(0),
                        (delta3.T @ a2).ravel(), delta3.sum(0)])
    out = _by_kernel(p, theta, KERNELS)
    for kernel in KERNELS:
        r_k, g_k, _ = out[kernel]
        np.testing.assert_allclose(r_k[0], np.mean(res**2), rtol=1e-14)
        np.testing.assert_allclose(g_k[0], g, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_non_finite_rows_give_nan_and_leave_the_others_alone(dtype, rng):
    p = _problem("mixed_bias", "tanh", rng, dtype)
    theta = rng.standard_normal((8, p.n_params)).astype(dtype)
    r0, g0 = p.risk_and_grad(theta)
    first, second, third, output = p.architecture.layers
    bad = {1: (first.weight.start, np.nan), 2: (first.bias.start + 1, np.inf),
           4: (third.weight.start + 3, -np.inf), 6: (p.n_params - 1, np.nan)}
    for row, (col, value) in bad.items():
        theta[row, col] = value
    with np.errstate(invalid="ignore", over="ignore"):
        out = _by_kernel(p, theta, KERNELS)
    rows = sorted(bad)
    keep = [i for i in range(len(theta)) if i not in bad]
    r, g, r_only = out["backprop_numba"]
    assert np.isnan(r[rows]).all() and np.isnan(g[rows]).all() and np.isnan(r_only[rows]).all()
    assert np.array_equal(r[keep], r0[keep]) and np.array_equal(g[keep], g0[keep])
    # the numpy kernel: NaN where a parameter is NaN (an infinite one may saturate tanh: finite), the others as
    # before
    r_np = out["backprop"][0]
    assert np.isnan(r_np[[1, 6]]).all() and np.isfinite(r_np[keep]).all()


def test_overflow_in_a_finite_row_is_not_a_non_finite_row(rng):
    """Huge but finite parameters: the kernels may overflow (inf or NaN), and the compiled one must not call the
    row non-finite before it is evaluated, nor touch other rows."""
    p = _problem("deep_d1", "relu", rng)
    theta = rng.standard_normal((3, p.n_params))
    theta[1] *= 1e200
    with np.errstate(all="ignore"):
        out = _by_kernel(p, theta, KERNELS)
    r, g, _ = out["backprop_numba"]
    r_np, g_np, _ = out["backprop"]
    np.testing.assert_allclose(r[[0, 2]], r_np[[0, 2]], rtol=1e-12)
    assert np.isfinite(r_np[1]) == np.isfinite(r[1])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["deep_d2_wide", "deep_d3_three"])
def test_rows_are_bitwise_independent_of_the_batch(name, dtype, rng):
    p = _problem(name, "tanh", rng, dtype)
    assert p.backend.kernel == "backprop_numba"
    theta = rng.standard_normal((40, p.n_params)).astype(dtype)
    r_all, g_all = p.risk_and_grad(theta)
    for i in (0, 7, 39):
        r1, g1 = p.risk_and_grad(theta[i : i + 1])
        r7, g7 = p.risk_and_grad(theta[max(0, i - 3) : max(0, i - 3) + 7])
        j = i - max(0, i - 3)
        assert r1[0] == r_all[i] == r7[j]
        assert np.array_equal(g1[0], g_all[i]) and np.array_equal(g7[j], g_all[i])
    # and with a read-only or non-contiguous theta (copied to the kernel's layout first)
    ro = theta.copy()
    ro.flags.writeable = False
    assert np.array_equal(p.risk_and_grad(ro)[1], g_all)
    assert np.array_equal(p.risk(np.asfortranarray(theta)), r_all)


def test_risk_without_the_gradient(rng):
    p = _problem("vector_out", "sigmoid", rng)
    theta = rng.standard_normal((5, p.n_params))
    r, g = p.risk_and_grad(theta)
    assert p.backend.kernel == "backprop_numba"
    assert np.array_equal(p.risk(theta), r)
    be = p.backend
    r_only, none = _backprop_numba.backprop_rows(p.architecture, theta, be._compiled_backprop, need_grad=False)
    assert none is None and np.array_equal(r_only, r)


def test_selection_and_the_numpy_fallback(rng, monkeypatch):
    # deep nets and shallow nets that are not ReLU take the compiled backpropagation; shallow ReLU its own kernels
    assert make({"input_dim": 1, "widths": [4, 3]}).backend.kernel == "backprop_numba"
    assert make({"input_dim": 1, "widths": [4], "activation": "tanh"}).backend.kernel == "backprop_numba"
    assert make({"input_dim": 2, "widths": [4], "activation": "softplus"}, measure={"kind": "gaussian", "dim": 2},
                target={"kind": "affine", "slope": [[1.0, 2.0]], "intercept": [0.0]}).backend.kernel == "backprop_numba"
    shallow = make({"input_dim": 1, "widths": [4]}).backend
    assert shallow.kernel == "points1d_numba" and shallow.kernels[-2:] == ["backprop_numba", "backprop"]
    p = _problem("deep_d1", "tanh", np.random.default_rng(5))
    theta = rng.standard_normal((5, p.n_params))
    r, g = p.risk_and_grad(theta)
    monkeypatch.setattr(_quadrature, "_compiled_backprop_module", lambda: None)
    q = _problem("deep_d1", "tanh", np.random.default_rng(5))
    assert q.backend.kernel == "backprop_numba"
    r_np, g_np = q.risk_and_grad(theta)
    assert q.backend.kernel == "backprop" and "backprop_numba" not in q.backend.kernels
    np.testing.assert_allclose(r_np, r, rtol=1e-12)
    np.testing.assert_allclose(g_np, g, rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_numba_missing_keeps_the_numpy_backpropagation(monkeypatch):
    monkeypatch.setattr(_quadrature, "numba_installed", lambda: False)
    be = make({"input_dim": 1, "widths": [4, 3]}).backend
    assert be.kernels == ["backprop"] and be.kernel == "backprop"


def test_the_quadrature_module_repeats_the_kernels_constants():
    assert _quadrature.BACKPROP_NUMBA_ACTIVATIONS == set(_backprop_numba.ACTIVATION_CODES) == set(ACTIVATIONS)
    assert _quadrature.BACKPROP_POINT_BLOCK == _backprop_numba.POINT_BLOCK


@pytest.mark.parametrize("name", sorted(NETS))
def test_the_memory_model_counts_the_kernels_scratch(name, rng):
    p = _problem(name, "relu", rng, "float32")
    be = p.backend
    be.kernel = "backprop_numba"
    scratch = _backprop_numba.scratch_elements(p.architecture) * 4
    mem = be._evaluate_memory()
    assert scratch <= mem.fixed - _quadrature.CALL_BYTES <= scratch + 4096
    assert mem.chunked == ()
