"""The quadrature backend's compiled kernel for shallow ReLU nets (``risk/_shallow_numba.py``, kernel
``mask_numba``) against its numpy mask-GEMM kernel and the generic backpropagation.

The compiled kernel sums in another order than BLAS (and with fused multiply-adds), so the two agree to rounding,
not bit for bit; what it must match exactly: which units are active at a point on a unit's kink (``relu'(0) = 0``,
both kernels), exactly zero gradients of dead units, NaN rows for non-finite parameters without touching other
rows, bitwise batch invariance, and a risk without the gradient that has the same bits as with it.
"""

from __future__ import annotations

import numpy as np
import pytest

import conftest
from reluflow.network import forward_backward
from test_quadrature import make

pytest.importorskip("numba")
from reluflow.risk._shallow_numba import POINT_BLOCK  # noqa: E402  (it imports numba)

NETS = {
    "d1": {"input_dim": 1, "widths": [7]},
    "d2": {"input_dim": 2, "widths": [9]},
    "d5_vector_out": {"input_dim": 5, "widths": [6], "output_dim": 3},
    "d8": {"input_dim": 8, "widths": [13]},
    "d10_vector_out": {"input_dim": 10, "widths": [9], "output_dim": 2},
    "no_bias": {"input_dim": 3, "widths": [5], "bias": False},
    "no_hidden_bias": {"input_dim": 4, "widths": [6], "bias": [False, True]},
    "no_output_bias": {"input_dim": 3, "widths": [6], "bias": [True, False], "output_dim": 2},
    "fixed_output": {"input_dim": 2, "widths": [4], "fixed_output": 0.5},
}
# two full point blocks and a partial one
N_POINTS = 2 * POINT_BLOCK + 2


def _problem(name, rng, dtype="float64", measure=None):
    net = NETS[name]
    d, k = net["input_dim"], net.get("output_dim", 1)
    target = {"kind": "affine", "slope": rng.standard_normal((k, d)).tolist(), "intercept": [0.3] * k}
    return make(net, measure=measure or {"kind": "gaussian", "dim": d}, target=target, n_points=N_POINTS,
                dtype=dtype)


def _by_kernel(p, theta, kernels=("mask_numba", "mask_gemm")):
    return conftest.by_kernel(p, theta, kernels)


def _hidden(p):
    return p.architecture.layers[0]


def _special_rows(p, rng):
    """Rows with a unit whose kink passes exactly through a point, and dead units."""
    arch = p.architecture
    H, d = arch.widths[0], arch.input_dim
    hidden = _hidden(p)
    theta = rng.standard_normal((6, p.n_params))
    w = theta[:, hidden.weight].reshape(6, H, d)  # a view
    x = p.backend.points
    if hidden.bias is not None:
        b = theta[:, hidden.bias]
        # ties: w_j = 2^e e_i, b_j = -w_j . x_m, so that w_j . x_m + b_j is exactly 0 in any order of summation
        for row in range(3):
            for j in range(H):
                i, m, scale = j % d, rng.integers(len(x)), 2.0 ** (j % 3 - 1)
                w[row, j] = 0.0
                w[row, j, i] = scale if j % 2 else -scale
                b[row, j] = -w[row, j, i] * x[m, i]
        # dead units: w = 0 and b <= 0 (relu'(0) = 0 for b = 0), and units with a kink beyond every point
        w[3, ::2] = 0.0
        b[3, ::2] = np.where(np.arange(0, H, 2) % 4 == 0, 0.0, -1.0)
        b[4, :] = -1e3
    w[5, 0] = 0.0  # one coordinate of a weight zero
    return theta


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_compiled_kernel_matches_the_numpy_kernels(name, dtype, rng):
    p = _problem(name, rng, dtype)
    be = p.backend
    # in 1D the compiled sorted-points kernel comes first (it does no H x M work)
    assert be.kernel == ("points1d_numba" if name == "d1" else "mask_numba")
    assert "mask_numba" in be.kernels
    theta = np.concatenate([_special_rows(p, rng), rng.standard_normal((40, p.n_params))]).astype(dtype)
    out = _by_kernel(p, theta)
    (r, g, r_only), (r_np, g_np, _) = out["mask_numba"], out["mask_gemm"]
    assert r.dtype == g.dtype == np.dtype(dtype)
    # the risk alone has the same bits as with the gradient
    assert np.array_equal(r, r_only)
    if dtype == "float64":
        r_ref, g_ref = forward_backward(p.architecture, theta, be.points, be.weights, be.target_values)
        for r_other, g_other in ((r_np, g_np), (r_ref, g_ref)):
            np.testing.assert_allclose(r, r_other, rtol=1e-13)
            np.testing.assert_allclose(g, g_other, rtol=1e-12, atol=1e-13 * np.abs(g_other).max())
    else:
        np.testing.assert_allclose(r, r_np, rtol=2e-5)
        np.testing.assert_allclose(g, g_np, rtol=1e-3, atol=2e-5 * np.abs(g_np).max())
    # dead units: exactly zero in both kernels
    hidden = _hidden(p)
    if hidden.bias is not None:
        H, d = p.architecture.widths[0], p.architecture.input_dim
        dead = np.zeros(H, dtype=bool)
        dead[::2] = True
        for grads in (g, g_np):
            gw = grads[3, hidden.weight].reshape(H, d)
            assert np.all(gw[dead] == 0) and np.all(grads[3, hidden.bias][dead] == 0)
            assert np.all(grads[4, hidden.weight] == 0) and np.all(grads[4, hidden.bias] == 0)


def test_ties_use_relu_prime_zero_in_both_kernels(rng, tmp_path):
    """Every unit's kink on a point of a small integer point set: a point on the kink counts as inactive."""
    pts = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 0.5]])
    path = tmp_path / "points.npy"
    np.save(path, pts)
    p = make({"input_dim": 2, "widths": [3]}, measure={"kind": "empirical", "path": str(path)},
             target={"kind": "affine", "slope": [[1.0, -1.0]], "intercept": [0.25]})
    # w = (0, 1), (-1, 0), (0, 2) and b = -1, 2, -1: kinks through points 1, 2 and 4
    theta = np.array([[0.0, 1.0, -1.0, 0.0, 0.0, 2.0, -1.0, 2.0, -1.0, -1.0, 0.5, -1.5, 0.1]])
    out = _by_kernel(p, theta)
    (r, g, _), (r_np, g_np, _) = out["mask_numba"], out["mask_gemm"]
    x = pts
    z = x @ theta[0, :6].reshape(3, 2).T + theta[0, 6:9]
    assert np.count_nonzero(z == 0) >= 3  # the three kinks, and whatever other points lie on them
    mask = z > 0
    n = (mask * z) @ theta[0, 9:12] + theta[0, 12]
    res = n - (x @ [1.0, -1.0] + 0.25)
    np.testing.assert_allclose(r, np.mean(res**2), rtol=1e-14)
    np.testing.assert_allclose(r_np, np.mean(res**2), rtol=1e-14)
    delta = 2 * res / len(x)
    g_w = ((mask * delta[:, None]) * theta[0, 9:12]).T @ x
    np.testing.assert_allclose(g[0, :6], g_w.reshape(-1), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(g_np[0, :6], g_w.reshape(-1), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_non_finite_rows_give_nan_and_leave_the_others_alone(dtype, rng):
    p = _problem("d5_vector_out", rng, dtype)
    theta = rng.standard_normal((8, p.n_params)).astype(dtype)
    r0, g0 = p.risk_and_grad(theta)
    hidden, output = p.architecture.layers
    bad = {1: (hidden.weight.start, np.nan), 2: (hidden.bias.start + 1, np.inf),
           4: (output.weight.start, -np.inf), 6: (p.n_params - 1, np.nan)}
    for row, (col, value) in bad.items():
        theta[row, col] = value
    with np.errstate(invalid="ignore", over="ignore"):
        out = _by_kernel(p, theta)
    rows = sorted(bad)
    keep = [i for i in range(len(theta)) if i not in bad]
    r, g, r_only = out["mask_numba"]
    assert np.isnan(r[rows]).all() and np.isnan(g[rows]).all() and np.isnan(r_only[rows]).all()
    assert np.array_equal(r[keep], r0[keep]) and np.array_equal(g[keep], g0[keep])
    # the numpy kernel: non-finite risk in the same rows (NaN or inf), the others as before
    r_np = out["mask_gemm"][0]
    assert not np.isfinite(r_np[rows]).any() and np.isfinite(r_np[keep]).all()


def test_float32_rows_are_bitwise_independent_of_the_batch(rng):
    p = _problem("d8", rng, "float32")
    theta = rng.standard_normal((300, p.n_params)).astype(np.float32)
    r_all, g_all = p.risk_and_grad(theta)
    for i in (0, 7, 299):
        r1, g1 = p.risk_and_grad(theta[i : i + 1])
        assert r1[0] == r_all[i] and np.array_equal(g1[0], g_all[i])


def test_the_numpy_kernel_is_kept_where_the_compiled_one_cannot_be_set_up(rng, monkeypatch):
    from reluflow.risk import _quadrature

    p = _problem("d2", np.random.default_rng(5))
    theta = rng.standard_normal((5, p.n_params))
    r, g = p.risk_and_grad(theta)
    monkeypatch.setattr(_quadrature, "_compiled_module", lambda: None)
    q = _problem("d2", np.random.default_rng(5))
    assert q.backend.kernel == "mask_numba"
    r_np, g_np = q.risk_and_grad(theta)
    assert q.backend.kernel == "mask_gemm" and "mask_numba" not in q.backend.kernels
    np.testing.assert_allclose(r_np, r, rtol=1e-13)
    np.testing.assert_allclose(g_np, g, rtol=1e-12, atol=1e-13 * np.abs(g).max())


def test_the_memory_model_uses_the_kernels_point_block():
    from reluflow.risk import _quadrature

    assert _quadrature.SHALLOW_POINT_BLOCK == POINT_BLOCK
