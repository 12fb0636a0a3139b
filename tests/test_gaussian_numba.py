"""The gaussian backend's compiled kernel (``risk/_gaussian_numba.py``, kernel ``numba``) against its numpy kernel
(``GaussianRisk._chunk``), finite differences, and its own arccos against ``np.arccos``.

The compiled kernel sums in another order than numpy's matmuls and einsums (with fused multiply-adds), so the two
agree to rounding, not bit for bit. The tolerance is relative to the size of the terms the closed form adds up:
every kernel value satisfies ``|K(u, v)| <= q pi |u| |v|``, so with ``S = sum_l |At_l| |r_l|`` over the student and
teacher units (``At_l`` a unit's output weights, ``r_l`` its row) every term of ``L`` is at most ``q pi S^2`` and
every term of a component of ``G`` at most ``2 q (pi + 1) S max_i max(|a_i|, |w_i|)``. Each result is a sum of
``O(H + n)`` such terms, each with a few roundings (the Gram cosine, arccos within an ulp, the products), and near
angles 0 and pi the two kernels' cosines differ by rounding, which moves the angle by ``O(sqrt(eps))`` but ``L``
and ``G`` only by ``O(eps)`` (``_gaussian``'s docstring). Measured over ``test_agrees_with_the_numpy_kernel``: at
most 4.7e-16 of the scale for ``L``, 3.3e-16 for ``G``; ``TOL = 1e-14`` leaves a factor 20 and is 1e-10 of what one
missing or wrong term would change (~``S^2 / (H + n)^2``).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import conftest
import reluflow
from reluflow.risk import _gaussian
from test_gaussian import finite_differences, make_problem, split, teacher

pytest.importorskip("numba")
from reluflow.risk._gaussian_numba import acos  # noqa: E402  (it imports numba)

TOL = 1e-14

# (d, H, n): H, n, d in 1..20, with the SS2018 shapes (d = n = H; H = n + 1 = d + 1)
SHAPES = [(1, 1, 1), (1, 3, 2), (2, 1, 4), (3, 20, 1), (20, 1, 3), (2, 7, 13), (17, 3, 5), (5, 12, 9), (13, 9, 20),
          (6, 6, 6), (10, 10, 10), (20, 20, 20), (10, 11, 10), (6, 7, 6)]


def by_kernel(p, theta, kernels=("numba", "numpy")):
    return conftest.by_kernel(p, theta, kernels)


def scales(p, theta):
    """Per row, the bounds on the terms of ``L`` and of a component of ``G`` (module docstring): ``(T,), (T,)``."""
    w, a = split(p, theta)
    w_star, a_star = teacher(p)
    q = p.backend.sigma**2 / (2 * np.pi)
    student = np.linalg.norm(a, axis=1) * np.linalg.norm(w, axis=2)  # (T, H)
    S = student.sum(axis=1) + np.sum(np.linalg.norm(a_star, axis=0) * np.linalg.norm(w_star, axis=1))
    big = np.maximum(np.linalg.norm(a, axis=1), np.linalg.norm(w, axis=2)).max(axis=1)
    return q * np.pi * S**2, 2 * q * (np.pi + 1) * S * big


def assert_kernels_agree(p, theta):
    """The compiled kernel's risk and gradient within ``TOL`` of the scales of the numpy kernel's, each row; the
    risk without the gradient the same bits as with it."""
    out = by_kernel(p, theta)
    (r1, g1, r1_only), (r0, g0, _) = out["numba"], out["numpy"]
    assert r1.tobytes() == r1_only.tobytes()
    s_risk, s_grad = scales(p, theta)
    assert np.all(np.abs(r1 - r0) <= TOL * s_risk), np.max(np.abs(r1 - r0) / s_risk)
    assert np.all(np.abs(g1 - g0) <= TOL * s_grad[:, None]), np.max(np.abs(g1 - g0) / s_grad[:, None])
    return out


def special_rows(p, rng, T, tiny=1e-200, huge=1e150):
    """Random rows, and rows with a zero unit, tiny (``tiny``) and huge (``huge``) units, units collinear and
    antipodal to teacher and student rows (a cosine of exactly +-1 after rounding, or within rounding of it)."""
    H, d = p.architecture.widths[0], p.architecture.input_dim
    w_star, _ = teacher(p)
    theta = rng.standard_normal((T, p.n_params))
    w = theta[:, : H * d].reshape(T, H, d)  # a view
    w[1::7, 0] = 0.0
    w[2::7, 0] *= tiny
    w[3::7, 0] *= huge
    w[4::7, 0] = 2.5 * w_star[0]
    w[5::7, 0] = -0.5 * w_star[-1]
    if H > 1:
        w[6::7, 1] = 3.0 * w[6::7, 0]
        w[::7, H - 1] = -w[::7, 0]
    return theta


# ---------------------------------------------------------------------- arccos
def test_acos_is_numpy_arccos_to_an_ulp():
    """Dense on [-1, 1], geometric towards -1, 0 and 1 (both sides of 0), the range boundaries at +-1/2, and the
    special values: within one ulp of ``np.arccos`` (measured: at most 1), the same at -1, +-0 and 1 exactly, NaN
    for NaN and outside [-1, 1]."""
    import numba

    @numba.njit(fastmath={"contract", "reassoc"})  # the flags of the kernel that calls it
    def acos_all(x, out):
        for i in range(x.size):
            out[i] = acos(x[i])

    tails = np.logspace(-17, 0, 20_000)
    x = np.concatenate([np.linspace(-1, 1, 2_000_001), 1 - tails, -1 + tails, np.logspace(-320, 0, 20_000),
                        -np.logspace(-320, 0, 20_000), np.random.default_rng(0).uniform(-1, 1, 1_000_000),
                        [0.5, -0.5, np.nextafter(0.5, 0), np.nextafter(-0.5, 0), np.nextafter(0.5, 1),
                         np.nextafter(-0.5, -1), np.nextafter(1, 0), np.nextafter(-1, 0)]])
    out = np.empty_like(x)
    acos_all(x, out)
    ref = np.arccos(x)
    assert np.max(np.abs(out - ref) / np.spacing(ref)) <= 1.0
    special = np.array([-1.0, -0.0, 0.0, 1.0])
    acos_all(special, out[:4])
    assert out[:4].tobytes() == np.arccos(special).tobytes()  # pi, pi/2, pi/2, 0
    bad = np.array([np.nan, np.nextafter(1, 2), np.nextafter(-1, -2), 2.0, -np.inf, np.inf])
    acos_all(bad, out[:6])
    assert np.all(np.isnan(out[:6]))


# ---------------------------------------------------------------------- against the numpy kernel
@pytest.mark.parametrize(("d", "H", "n"), SHAPES)
@pytest.mark.parametrize(("k", "fixed"), [(1, True), (1, False), (2, False), (2, True)])
def test_agrees_with_the_numpy_kernel(d, H, n, k, fixed):
    sigma = 0.7 if (d + H + n + k) % 2 else 1.3
    p = make_problem(d, H, n, k, fixed=fixed, sigma=sigma, seed=d + H + n)
    assert p.backend.kernel == "numba"  # the default where numba is installed
    rng = np.random.default_rng([d, H, n, k, fixed])
    assert_kernels_agree(p, special_rows(p, rng, 21))


@pytest.mark.parametrize(("cell", "n_rows"), [("k6_n6", 64), ("k10_n10", 64), ("k10_n11", 64), ("k20_n20", 32)])
def test_ss2018_cells(cell, n_rows):
    """The study's problems (teacher rows e_1..e_k, output fixed to 1) at its initialization scale."""
    k, n = (int(x[1:]) for x in cell.split("_"))
    p = reluflow.Problem.from_dict({"network": {"input_dim": k, "widths": [n], "bias": False, "fixed_output": 1.0},
                           "measure": {"kind": "gaussian", "dim": k, "sigma": 1.0},
                           "target": {"kind": "teacher", "widths": [k], "bias": False, "fixed_output": 1.0,
                                      "seed": 0, "first_layer": "unit_vectors"},
                           "risk": {"backend": "gaussian"}})
    theta = np.random.default_rng(n).standard_normal((n_rows, p.n_params)) / np.sqrt(k)
    theta[1, :k] = 0.7 * np.eye(k)[0]  # a unit exactly parallel to a teacher row (cosine 1 exactly)
    theta[2, :k] = -np.eye(k)[1]  # exactly antiparallel
    assert_kernels_agree(p, theta)
    assert_kernels_agree(p, theta[:1])  # one trajectory: the case the compiled kernel is fastest at


# (d, H, k, fixed student output, teacher rows w* (n, d), its output weights a* (k, n), its one-hot axes or None)
_PERM = np.diag([1.5, -0.25, 1.0, 2.0, -1.0, 0.5])[[3, 0, 5, 1, 4, 2]]  # permuted axes, scaled and signed
ONE_HOT_TEACHERS = [
    (6, 7, 1, True, np.eye(6), np.ones((1, 6)), [0, 1, 2, 3, 4, 5]),  # SS2018's teacher, n = H - 1
    (6, 6, 1, False, _PERM, np.array([[1.0, -2.0, 0.5, 1.0, 0.0, 3.0]]), [3, 0, 5, 1, 4, 2]),
    (5, 4, 2, False, np.eye(5)[[4, 1, 2]] * 0.7, np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 1.0]]), [4, 1, 2]),  # n < d
    (4, 5, 1, True, np.eye(4)[[0, 1, 1, 3, 2]], np.ones((1, 5)), [0, 1, 1, 3, 2]),  # two rows on one axis
    (4, 3, 1, False, np.eye(4)[[0, 1, 2]] + 0.25 * np.eye(4)[[1, 2, 3]], np.ones((1, 3)), None),  # two nonzeros
    (3, 3, 1, False, np.zeros((2, 3)) + np.eye(3)[[0, 0]] * [[1.0], [0.0]], np.ones((1, 2)), None),  # a zero row
    (20, 20, 1, True, np.eye(20), np.ones((1, 20)), list(range(20))),  # SS2018's k20_n20
    (7, 9, 3, False, -np.eye(7)[[6, 2, 2, 0]], np.array([[1.0, -0.0, 2.0, 0.5], [0.0, 1.0, 1.0, -1.0],
                                                          [3.0, 1.0, -0.5, 0.0]]), [6, 2, 2, 0]),  # -e_j, -0.0
]


@pytest.mark.parametrize(("d", "H", "k", "fixed", "w_star", "a_star", "axes"), ONE_HOT_TEACHERS)
def test_a_one_hot_teacher_gives_the_bits_of_the_full_products(d, H, k, fixed, w_star, a_star, axes):
    """A teacher whose unit vectors each have one nonzero entry (SS2018's ``e_j``) is recognized, with its axes, and
    the kernel's shortcut for it (one product per Gram cosine and per right-hand side instead of ``d``) gives the
    risk and gradient bit for bit as the full products do; any other teacher takes the full products."""
    n = w_star.shape[0]
    p = make_problem(d, H, n, k, fixed=fixed, teacher_parameters=np.concatenate([w_star.ravel(), a_star.ravel()]))
    backend = p.backend
    expected = np.zeros(0, dtype=np.int64) if axes is None else np.array(axes)
    assert backend._teacher_axes.tolist() == expected.tolist()
    theta = special_rows(p, np.random.default_rng([d, H, n, k]), 28)
    theta[0, : H * d] = np.tile(-w_star[0] / 3.0, H)  # every unit antiparallel to a teacher row: cosine 1
    shortcut = assert_kernels_agree(p, theta)["numba"]
    backend._teacher_axes = np.zeros(0, dtype=np.int64)
    full = by_kernel(p, theta, ("numba",))["numba"]
    for got, want in zip(shortcut, full, strict=True):
        assert got.tobytes() == want.tobytes()  # zero signs and NaN bits included


@pytest.mark.parametrize("fixed", [False, True])
def test_student_equal_to_the_teacher(fixed):
    """At the global minimum both kernels give a risk of 0 up to rounding (clamped at 0, never negative) and a
    gradient of 0 up to rounding."""
    for d, h in ((1, 3), (4, 4), (10, 10)):
        p = make_problem(d, h, h, 2, fixed=fixed, teacher_fixed=fixed, sigma=1.2, seed=d)
        w_star, a_star = teacher(p)
        theta = np.concatenate([w_star.ravel(), [] if fixed else a_star.ravel()])[None]
        out = assert_kernels_agree(p, theta)
        r, g, _ = out["numba"]
        assert 0.0 <= r[0] <= 1e-14 * p.backend.teacher_risk
        assert np.max(np.abs(g)) <= 1e-14 * p.backend.teacher_risk


def test_zero_units_and_their_gradient():
    """``w_i = 0``: ``G_{w_i}`` and ``G_{a_i}`` exactly 0 (SCIENCE.md §3), in every row of a batch."""
    d, H, k = 4, 5, 2
    p = make_problem(d, H, 3, k, seed=2)
    theta = np.random.default_rng(1).standard_normal((6, p.n_params))
    theta[:, d : 2 * d] = 0.0  # w_1 = 0
    theta[3, : H * d] = 0.0  # every unit
    (r, g, _), _ = assert_kernels_agree(p, theta).values()
    g_w = g[:, : H * d].reshape(6, H, d)
    g_a = g[:, H * d :].reshape(6, k, H)
    assert np.all(g_w[:, 1] == 0.0) and np.all(g_a[:, :, 1] == 0.0)
    assert np.all(g[3] == 0.0) and r[3] == pytest.approx(p.backend.teacher_risk, rel=1e-15)  # N = 0: L = E[f^2]


@pytest.mark.parametrize("scale", [1e-200, 1e150])
def test_units_far_outside_the_normal_range(scale):
    """Rows whose ``|w_i|^2`` under- or overflows: the norm and direction from the rescaled row, so the results are
    those of the row ``w_i / scale`` with the kernel's homogeneity (``L`` and ``G_a`` of degree 1 in ``w_i`` through
    the cross terms, ``G_{w_i}`` of degree 0 in its own row)."""
    d, H = 3, 3
    p = make_problem(d, H, 2, 1, fixed=True, seed=4)
    base = np.random.default_rng(5).standard_normal(p.n_params)
    theta = np.stack([base, base])
    theta[1, :d] *= scale
    assert_kernels_agree(p, theta)
    _, g = p.risk_and_grad(theta)
    assert np.all(np.isfinite(g)) and np.max(np.abs(g[1, :d])) > 0


def test_non_finite_rows_give_nan_and_leave_the_others_alone():
    p = make_problem(3, 4, 2, 2, seed=3)
    theta = np.random.default_rng(2).standard_normal((5, p.n_params))
    theta[1, 0] = np.nan
    theta[3, -1] = np.inf
    theta[4, 5] = -np.inf
    risk, grad = p.risk_and_grad(theta)
    for t in (1, 3, 4):
        assert np.isnan(risk[t]) and np.all(np.isnan(grad[t]))
    for t in (0, 2):
        r, g = p.risk_and_grad(theta[t])
        assert r.tobytes() == risk[t : t + 1].tobytes() and g.tobytes() == grad[t : t + 1].tobytes()


# ---------------------------------------------------------------------- batch invariance, finite differences
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("d", "H", "n", "k", "fixed"), [(10, 10, 10, 1, True), (5, 7, 3, 2, False)])
def test_rows_are_bitwise_independent_of_the_batch(d, H, n, k, fixed, dtype):
    """A row alone, in place or copied (another alignment), and inside a batch of 100: the same bits."""
    p = make_problem(d, H, n, k, fixed=fixed, dtype=dtype, seed=1)
    extremes = (1e-200, 1e150) if dtype == "float64" else (1e-30, 1e18)  # |w_i|^2 under- and overflows
    theta = special_rows(p, np.random.default_rng(8), 100, *extremes).astype(dtype)
    risk, grad = p.risk_and_grad(theta)
    assert p.risk(theta).tobytes() == risk.tobytes()
    for t in range(0, 100, 9):
        for row in (theta[t], theta[t : t + 1].copy(), np.concatenate([theta[:1], theta[t : t + 1]])[1:]):
            r, g = p.risk_and_grad(row)
            assert r.tobytes() == risk[t : t + 1].tobytes() and g.tobytes() == grad[t : t + 1].tobytes()


@pytest.mark.parametrize(("d", "H", "n", "k", "fixed"),
                         [(10, 11, 10, 1, True), (6, 6, 6, 1, True), (3, 4, 5, 2, False), (1, 3, 2, 1, False)])
def test_gradient_matches_finite_differences_of_the_risk(d, H, n, k, fixed):
    """An independent check of the compiled gradient: central differences of the compiled risk (step 1e-5, error
    ~1e-10 relative from the third derivative and rounding; 1e-6 allowed)."""
    p = make_problem(d, H, n, k, fixed=fixed, sigma=0.9, seed=7)
    thetas = np.random.default_rng([d, H, n]).standard_normal((3, p.n_params)) / np.sqrt(d)
    _, grad = p.risk_and_grad(thetas)
    for theta, g in zip(thetas, grad, strict=True):
        fd = finite_differences(p, theta)
        assert np.max(np.abs(g - fd)) <= 1e-6 * np.max(np.abs(fd))


# ---------------------------------------------------------------------- float32
@pytest.mark.parametrize(("k", "fixed"), [(1, True), (2, False)])
def test_float32_is_the_float64_result_of_the_same_parameters_rounded(k, fixed):
    """The compiled kernel computes float32 rows in float64 (module docstring): the float64 kernel's results at the
    float32 parameters, rounded, bit for bit; and within float32 rounding of the numpy float32 kernel."""
    p32 = make_problem(10, 10, 10, k, fixed=fixed, dtype="float32")
    p64 = make_problem(10, 10, 10, k, fixed=fixed)
    theta = (np.random.default_rng(3).standard_normal((50, p32.n_params)) / np.sqrt(10)).astype(np.float32)
    r32, g32 = p32.risk_and_grad(theta)
    r64, g64 = p64.risk_and_grad(theta.astype(np.float64))
    assert r32.dtype == np.float32 and g32.dtype == np.float32
    assert r32.tobytes() == r64.astype(np.float32).tobytes() and g32.tobytes() == g64.astype(np.float32).tobytes()
    out = by_kernel(p32, theta)
    (r1, g1, _), (r0, g0, _) = out["numba"], out["numpy"]
    assert np.max(np.abs(r1 - r0)) <= 1e-5 * np.max(np.abs(r0))  # numpy's float32 kernel: ~1e-6 (test_gaussian)
    assert np.max(np.abs(g1 - g0)) <= 1e-5 * np.max(np.abs(g0))


# ---------------------------------------------------------------------- selection, fallback, memory
def test_numpy_kernel_without_numba(monkeypatch):
    monkeypatch.setattr(_gaussian, "numba_installed", lambda: False)
    p = make_problem(4, 5, 3, 2)
    assert p.backend.kernels == ["numpy"] and p.backend.kernel == "numpy"
    assert p.backend.describe()["kernel"] == "numpy"
    monkeypatch.undo()
    compiled = make_problem(4, 5, 3, 2)
    assert compiled.backend.kernels == ["numba", "numpy"] and compiled.backend.describe()["kernel"] == "numba"
    theta = np.random.default_rng(0).standard_normal((7, p.n_params))
    r0, g0 = p.risk_and_grad(theta)
    r1, g1 = compiled.risk_and_grad(theta)
    s_risk, s_grad = scales(p, theta)
    assert np.all(np.abs(r1 - r0) <= TOL * s_risk) and np.all(np.abs(g1 - g0) <= TOL * s_grad[:, None])


def test_compiled_kernel_that_cannot_be_set_up_falls_back_to_numpy(monkeypatch):
    """numba installed but the module does not import (here: numba itself fails): one warning, then the numpy
    kernel, reported as such."""
    p = make_problem(3, 4, 2, 1)
    theta = np.random.default_rng(1).standard_normal((3, p.n_params))
    monkeypatch.delattr(reluflow.risk, "_gaussian_numba")
    monkeypatch.delitem(sys.modules, "reluflow.risk._gaussian_numba")
    monkeypatch.setitem(sys.modules, "numba", None)
    _gaussian._compiled_module.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="gaussian's compiled kernel cannot be set up.*ModuleNotFoundError"):
            r, g = p.risk_and_grad(theta)
        assert p.backend.kernel == "numpy" and p.backend.kernels == ["numpy"]
        assert p.backend.describe()["kernel"] == "numpy"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once
            p.risk_and_grad(theta)
        p.backend.kernels = ["numpy"]
        r0, g0 = p.risk_and_grad(theta)
        assert r.tobytes() == r0.tobytes() and g.tobytes() == g0.tobytes()
    finally:
        monkeypatch.undo()
        _gaussian._compiled_module.cache_clear()


def test_unknown_kernel_is_an_error():
    p = make_problem(2, 3, 2)
    p.backend.kernel = "fortran"
    with pytest.raises(ValueError, match="kernel = 'fortran' is not allowed"):
        p.risk(np.zeros(p.n_params))


def test_memory_model_per_kernel():
    """The compiled kernel needs no per-row workspace and keeps nothing; the numpy kernel's chunked workspace is
    per row and stays on the backend."""
    p = make_problem(10, 10, 10, 1, fixed=True)
    be = p.backend
    assert be.kernel == "numba"
    compiled, compiled_kept = be.memory(), be.kept_memory()
    be.kernel = "numpy"
    numpy_mem, numpy_kept = be.memory(), be.kept_memory()
    P = p.n_params
    assert compiled.bytes(1000) - compiled.bytes(1) == 999 * 8 * (P + 1)  # the results only
    assert compiled_kept.bytes(1000) == 0
    assert numpy_mem.bytes(1000) - numpy_mem.bytes(1) > 999 * 8 * (P + 1)
    assert numpy_kept.bytes(1000) > 0


# ---------------------------------------------------------------------- the loop's statistics, compiled
def test_sum_of_squares_is_numpys_sum_bit_for_bit():
    """``_numba_rows.sum_of_squares`` (what the compiled GD block computes its norms with) against ``np.sum(x * x)``
    along a row, for every length up to 700 (numpy's eight running sums start at 8, its halving above 128) and
    some long ones (several levels of halving), with values spread over twenty decades so that a different order
    of additions shows in the bits; and from an offset into the row, as for a unit's weights."""
    from reluflow.risk._numba_rows import PW_FRAMES, sum_of_squares

    frames, left = np.empty((PW_FRAMES, 3), dtype=np.int64), np.empty(PW_FRAMES)
    rng = np.random.default_rng(0)
    lengths = [*range(700), 1000, 1024, 4096, 5000, 123_457]
    for n in lengths:
        x = rng.standard_normal((2, n + 5)) * 10.0 ** rng.uniform(-10, 10, (2, n + 5))
        for t, lo in ((0, 0), (1, 3)):
            want = np.sum(x[t, lo:lo + n] * x[t, lo:lo + n])
            assert sum_of_squares(x, t, lo, n, frames, left) == want, (n, lo)
