"""The quadrature backend's compiled 1D kernel (``risk/_points1d_numba.py``, kernel ``points1d_numba``) against its
numpy sorted-points kernel (``points1d``), the mask kernels and the generic backpropagation.

In float64 the compiled kernel does the numpy kernel's operations in its order, so the two must give the same
bytes (signed zeros included) on every test problem of ``test_points1d.py`` and on rows with kinks exactly on
points, ``w = 0`` units, dead units and non-finite parameters: a d = 1 table must not depend on whether numba is
installed. In float32 (which the numpy sorted-points kernel does not do) it must agree with the float32 mask
kernels and the float64 kernel to float32 rounding, with exactly zero gradients for dead units and bitwise batch
invariance.
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow.network import forward_backward
from reluflow.risk import _quadrature
from test_points1d import MEASURES, NETS, _empirical, _target
from test_quadrature import make
from test_shallow_numba import _by_kernel  # {kernel: (risk, G, risk without G)}, no silent fallback

pytest.importorskip("numba")
from reluflow.risk import _points1d_numba  # noqa: E402  (it imports numba)


def _problem(net, measure, rng, tmp_path, dtype="float64", n_points=257):
    spec = NETS[net]
    mu = MEASURES[measure]
    mu = _empirical(mu, tmp_path) if isinstance(mu, list) else mu
    return make(spec, measure=mu, target=_target(spec.get("output_dim", 1), rng), n_points=n_points, dtype=dtype)


def _assert_same_bytes(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b), err_msg=f"{what}: NaN in different places")
    a, b = np.where(nan, 0, a), np.where(nan, 0, b)  # NaN payloads are not part of the contract
    differ = (a != b) | (np.signbit(a) != np.signbit(b))  # a signed zero counts as a difference
    rows = np.flatnonzero(differ.reshape(len(a), -1).any(axis=1))
    assert a.tobytes() == b.tobytes(), f"{what} differs in rows {rows[:10].tolist()}"


def _special_rows(p, rng, n=12):
    """Random rows, then rows with kinks exactly on points (both signs of ``w``), ``w = 0`` units (active
    everywhere, nowhere, or ``b = 0``), units whose kink lies beyond every point on either side, ``-0.0``
    parameters, and non-finite parameters."""
    hidden = p.architecture.layers[0]
    H = p.architecture.widths[0]
    x = np.sort(p.backend.points[:, 0].astype(np.float64))
    theta = rng.standard_normal((n, p.n_params))
    w = theta[:, hidden.weight]  # (n, H) views: d = 1
    b = theta[:, hidden.bias] if hidden.bias is not None else None
    if b is not None:
        # kinks on points: w = +-2^e (exact -b / w), b = -w x_m
        for row in (0, 1):
            for j in range(H):
                m = rng.integers(len(x))
                w[row, j] = (1.0 if j % 2 else -1.0) * 2.0 ** (j % 3 - 1)
                b[row, j] = -w[row, j] * x[m]
        w[2, :] = 0.0  # w = 0: active everywhere (b > 0), nowhere (b < 0), and b = 0 (inactive: relu'(0) = 0)
        b[2, :] = np.resize([0.5, -0.5, 0.0, -0.0], H)
        w[3, :] = np.resize([1.0, -1.0], H)  # kinks beyond every point, on either side
        b[3, :] = np.resize([-1e6, 1e6, 1e6, -1e6], H)
    else:
        w[2, ::2] = 0.0  # bias-free: w = 0 is dead
        w[3, :] = -0.0
    theta[4, ::3] = -0.0
    theta[5, 1] = np.nan
    theta[6, -1] = np.inf
    theta[7, 0] = -np.inf
    return theta


@pytest.mark.parametrize("measure", sorted(MEASURES))
@pytest.mark.parametrize("net", sorted(NETS))
def test_compiled_kernel_gives_the_numpy_kernels_bytes(net, measure, rng, tmp_path):
    p = _problem(net, measure, rng, tmp_path)
    be = p.backend
    assert be.kernel == "points1d_numba" and be.kernels[:2] == ["points1d_numba", "points1d"]
    theta = np.concatenate([_special_rows(p, rng), rng.standard_normal((30, p.n_params))])
    if measure == "shifted":
        theta[12:, : NETS[net]["widths"][0]] *= 1e-3  # kinks inside [1000, 1003] for some units
    with np.errstate(invalid="ignore", over="ignore"):
        out = _by_kernel(p, theta, ("points1d_numba", "points1d"))
    for part, what in enumerate(("risk", "gradient", "risk without gradient")):
        _assert_same_bytes(out["points1d_numba"][part], out["points1d"][part], what)
    r, g, _ = out["points1d_numba"]
    bad = ~np.isfinite(theta).all(axis=1)
    assert np.isnan(r[bad]).all() and np.isnan(g[bad]).all() and np.isfinite(r[~bad]).all()
    # and what both compute: the generic backpropagation, to rounding (kinks exactly on points aside, where the
    # mask of w x + b > 0 and x > -b / w agree only because those rows are exact: w a power of two)
    ok = ~bad
    r_ref, g_ref = forward_backward(p.architecture, theta[ok], be.points, be.weights, be.target_values)
    np.testing.assert_allclose(r[ok], r_ref, rtol=1e-12)
    np.testing.assert_allclose(g[ok], g_ref, rtol=1e-11, atol=1e-12 * np.abs(g_ref).max())


def test_dead_units_get_exactly_zero_gradient(rng, tmp_path):
    p = _problem("shallow", "uniform", rng, tmp_path)
    hidden = p.architecture.layers[0]
    theta = _special_rows(p, rng)[:4]
    _, g = p.risk_and_grad(theta)
    assert p.backend.kernel == "points1d_numba"
    H = p.architecture.widths[0]
    b = theta[2, hidden.bias]
    dead = b <= 0  # row 2: w = 0, so a unit is dead where b <= 0
    assert dead.any() and (~dead).any()
    assert np.all(g[2, hidden.weight][dead] == 0) and np.all(g[2, hidden.bias][dead] == 0)
    assert np.all(g[2, p.architecture.layers[1].weight][:H][dead] == 0)
    # row 3: kinks beyond every point (|b| = 1e6, |w| = 1): a unit active nowhere (b < 0) has no gradient, one
    # active everywhere has
    nowhere = theta[3, hidden.bias] < 0
    assert nowhere.any() and np.all(g[3, hidden.bias][nowhere] == 0)
    assert np.all(g[3, hidden.bias][~nowhere] != 0)


@pytest.mark.parametrize("net", sorted(NETS))
def test_float32_agrees_with_the_float32_mask_kernels_and_float64(net, rng, tmp_path):
    p = _problem(net, "gaussian", rng, tmp_path, dtype="float32", n_points=130)
    be = p.backend
    assert be.kernel == "points1d_numba" and "points1d" not in be.kernels  # the numpy one is float64 only
    theta = np.concatenate([_special_rows(p, rng)[2:5], rng.standard_normal((40, p.n_params))]).astype(np.float32)
    out = _by_kernel(p, theta, ("points1d_numba", "mask_gemm", "mask_numba"))
    r, g, r_only = out["points1d_numba"]
    assert r.dtype == g.dtype == np.float32
    _assert_same_bytes(r, r_only, "risk without gradient")
    for other in ("mask_gemm", "mask_numba"):
        r_o, g_o, _ = out[other]
        np.testing.assert_allclose(r, r_o, rtol=2e-5)
        np.testing.assert_allclose(g, g_o, rtol=1e-3, atol=2e-5 * np.abs(g_o).max())
    # the float64 backpropagation on the float32 points, parameters and target values
    r64, g64 = forward_backward(p.architecture, theta.astype(np.float64), be.points.astype(np.float64),
                                be.weights.astype(np.float64), be.target_values.astype(np.float64))
    np.testing.assert_allclose(r, r64, rtol=2e-5)
    np.testing.assert_allclose(g, g64, rtol=1e-3, atol=2e-5 * np.abs(g64).max())
    # dead units (row 0: w = 0 and b <= 0): exactly zero, as in the mask kernels
    hidden = p.architecture.layers[0]
    if hidden.bias is not None:
        dead = theta[0, hidden.bias] <= 0
        for grads in (g, out["mask_gemm"][1]):
            assert np.all(grads[0, hidden.weight][dead] == 0) and np.all(grads[0, hidden.bias][dead] == 0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_rows_are_bitwise_independent_of_the_batch(dtype, rng):
    p = make({"input_dim": 1, "widths": [16], "output_dim": 2}, n_points=700, dtype=dtype,
             target={"kind": "affine", "slope": [[1.0], [-0.5]], "intercept": [0.0, 0.2]})
    assert p.backend.kernel == "points1d_numba"
    theta = rng.standard_normal((300, p.n_params)).astype(dtype)
    r_all, g_all = p.risk_and_grad(theta)
    for i in (0, 7, 299):
        r1, g1 = p.risk_and_grad(theta[i : i + 1])
        lo = max(0, i - 3)
        r7, g7 = p.risk_and_grad(theta[lo : lo + 7])
        assert r1[0] == r_all[i] == r7[i - lo]
        assert np.array_equal(g1[0], g_all[i]) and np.array_equal(g7[i - lo], g_all[i])


def test_the_numpy_kernels_are_kept_where_the_compiled_one_cannot_be_set_up(rng, monkeypatch):
    p = make({"input_dim": 1, "widths": [6]}, n_points=100)
    p32 = make({"input_dim": 1, "widths": [6]}, n_points=100, dtype="float32")
    theta = rng.standard_normal((5, p.n_params))
    r, g = p.risk_and_grad(theta)
    r32, g32 = p32.risk_and_grad(theta)
    monkeypatch.setattr(_quadrature, "_compiled_points1d_module", lambda: None)
    q = make({"input_dim": 1, "widths": [6]}, n_points=100)
    q32 = make({"input_dim": 1, "widths": [6]}, n_points=100, dtype="float32")
    assert q.backend.kernel == q32.backend.kernel == "points1d_numba"  # installed; set up on first use
    rq, gq = q.risk_and_grad(theta)
    rq32, gq32 = q32.risk_and_grad(theta)
    assert q.backend.kernel == "points1d" and "points1d_numba" not in q.backend.kernels
    assert q32.backend.kernel == "mask_numba" and "points1d_numba" not in q32.backend.kernels
    assert rq.tobytes() == r.tobytes() and gq.tobytes() == g.tobytes()  # float64: the same bytes
    np.testing.assert_allclose(rq32, r32, rtol=2e-5)
    np.testing.assert_allclose(gq32, g32, rtol=1e-3, atol=2e-5 * np.abs(g32).max())


def test_the_memory_model_counts_the_kernels_scratch():
    assert _quadrature.POINTS1D_SCRATCH_ROWS == _points1d_numba.SCRATCH_ROWS
