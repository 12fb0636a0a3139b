"""The ``gaussian`` risk backend: closed-form L and G, bias-free shallow ReLU student and teacher.

Checked against (1) central finite differences, (2) Monte Carlo with its own standard errors, (3) an
independent kink-aware polar-coordinate quadrature in d = 2, and the package's Gauss-Hermite quadrature
backend, (4) a direct per-pair evaluation with the stable angle formula at nearly (anti)parallel
configurations; plus robustness at w_i = 0 and at angles 0 and pi, bitwise batch invariance, dead-unit counts
and applicability. Every test runs on both kernels: the compiled one (``risk/_gaussian_numba.py``, the default
where numba is installed) and the numpy one (tests/test_gaussian_numba.py compares the two directly).
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

import reluflow
from reluflow.network import forward
from reluflow.risk import _gaussian
from reluflow.risk._gaussian import GaussianRisk


@pytest.fixture(autouse=True, params=["numba", "numpy"])
def kernel(request, monkeypatch):
    """The kernel every problem of the test gets: ``numba`` (the default; skipped where numba is missing) or
    ``numpy`` (the backend then sees no numba)."""
    if request.param == "numba":
        pytest.importorskip("numba")
        assert _gaussian._compiled_module() is not None  # no silent fallback: numpy twice would prove nothing
    else:
        monkeypatch.setattr(_gaussian, "numba_installed", lambda: False)
    return request.param


def make_problem(d, H, n, k=1, *, fixed=False, sigma=1.0, backend="gaussian", dtype="float64", seed=0,
                 first_layer="normal", teacher_parameters=None, teacher_fixed=False, n_points=1024):
    network = {"input_dim": d, "widths": [H], "output_dim": k, "activation": "relu", "bias": False}
    target = {"kind": "teacher", "widths": [n], "output_dim": k, "bias": False}
    if fixed:
        network["fixed_output"] = 1.0
    if teacher_fixed:
        target["fixed_output"] = 1.0
    if teacher_parameters is not None:
        target["parameters"] = list(np.ravel(teacher_parameters))
    else:
        target["seed"] = seed
        target["first_layer"] = first_layer
    return reluflow.Problem.from_dict({
        "network": network,
        "measure": {"kind": "gaussian", "dim": d, "sigma": sigma},
        "target": target,
        "risk": {"backend": backend, "dtype": dtype, "n_points": n_points},
    })


def split(problem, theta):
    """``w`` (T, H, d) and ``a`` (T, k, H) of a batch (the fixed output layer materialized)."""
    (w, _), (a, _) = problem.unflatten(np.atleast_2d(theta))
    return w, np.broadcast_to(a, (w.shape[0], *a.shape[1:]))


def teacher(problem):
    return problem.target.first_layer()[0], problem.target.output_layer()[0]


def finite_differences(problem, theta, h=1e-5, coords=None):
    """Central differences of L at one point ``theta`` (P,), for the coordinates ``coords`` (default: all)."""
    coords = np.arange(theta.size) if coords is None else np.asarray(coords)
    steps = np.zeros((len(coords), theta.size))
    steps[np.arange(len(coords)), coords] = h
    up = problem.risk(theta[None, :] + steps)
    down = problem.risk(theta[None, :] - steps)
    return (up - down) / (2 * h)


def rel_err(x, ref):
    return np.max(np.abs(np.asarray(x) - ref)) / max(np.max(np.abs(ref)), 1e-300)


# ---------------------------------------------------------------------- reference implementations
def _angle(u, v):
    """Stable angle between nonzero vectors: 2 atan2(|uhat - vhat|, |uhat + vhat|)."""
    uh, vh = u / np.linalg.norm(u), v / np.linalg.norm(v)
    return 2.0 * np.arctan2(np.linalg.norm(uh - vh), np.linalg.norm(uh + vh))


def _kernel(u, v, sigma):
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return 0.0
    phi = _angle(u, v)
    return sigma**2 / (2 * np.pi) * nu * nv * (np.sin(phi) + (np.pi - phi) * np.cos(phi))


def _kernel_grad(u, v, sigma):
    """``E[x 1[u.x > 0] relu(v.x)]``: the gradient of K in u for u != 0, and 0 at u = 0 (SCIENCE.md §3)."""
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    if nu == 0 or nv == 0:
        return np.zeros_like(u)
    phi = _angle(u, v)
    return sigma**2 / (2 * np.pi) * ((np.pi - phi) * v + nv * np.sin(phi) * u / nu)


def pairwise_reference(w, a, w_star, a_star, sigma):
    """L, G_w (H, d), G_a (k, H) for one student by explicit loops over unit pairs (stable angles)."""
    rows = list(w) + list(w_star)
    cols = np.concatenate([a, -a_star], axis=1)  # (k, H + n)
    H = len(w)
    risk = sum(cols[:, l] @ cols[:, m] * _kernel(rows[l], rows[m], sigma)
               for l in range(len(rows)) for m in range(len(rows)))
    g_w = np.array([2 * sum(a[:, i] @ cols[:, l] * _kernel_grad(w[i], rows[l], sigma)
                            for l in range(len(rows))) for i in range(H)])
    g_a = np.array([2 * sum(cols[:, l] * _kernel(w[i], rows[l], sigma) for l in range(len(rows)))
                    for i in range(H)]).T
    return risk, g_w, g_a


def polar_reference(w, a, w_star, a_star, sigma, nodes=40):
    """L, G_w, G_a in d = 2 from the definitions (SCIENCE.md §2-3), integrating in polar coordinates.

    x = r e(t): every unit is 1-homogeneous, so with E[r^2] = 2 sigma^2 (r Rayleigh) the radial integral is
    that moment, and the angular mean over t is a Gauss-Legendre rule on each arc between kink angles (where
    some w . e(t) changes sign): the integrand is a trigonometric polynomial on each arc, so the rule is exact
    to rounding.
    """
    kinks = [0.0, 2 * np.pi]
    for u in np.concatenate([w, w_star]):
        if np.any(u != 0):
            base = np.arctan2(u[1], u[0])
            kinks += [(base + np.pi / 2) % (2 * np.pi), (base - np.pi / 2) % (2 * np.pi)]
    kinks = np.unique(kinks)
    x, wt = np.polynomial.legendre.leggauss(nodes)
    half, mid = np.diff(kinks)[:, None] / 2, (kinks[:-1] + kinks[1:])[:, None] / 2
    t, dt = (mid + half * x).ravel(), (half * wt).ravel() / (2 * np.pi)  # weights of the mean over t
    e = np.stack([np.cos(t), np.sin(t)], axis=1)  # (M, 2)
    pre = e @ w.T
    res = np.maximum(pre, 0) @ a.T - np.maximum(e @ w_star.T, 0) @ a_star.T  # (M, k)
    moment = 2 * sigma**2
    risk = moment * dt @ np.sum(res**2, axis=1)
    active = (pre > 0) * (res @ a)  # (M, H): 1[w_i.e > 0] <a_i, res>
    g_w = 2 * moment * np.einsum("m,mh,md->hd", dt, active, e)
    g_a = 2 * moment * np.einsum("m,mh,mc->ch", dt, np.maximum(pre, 0), res)
    return risk, g_w, g_a


# ---------------------------------------------------------------------- (1) finite differences
@pytest.mark.parametrize("d", [1, 3, 10])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("fixed", [False, True])
def test_gradient_matches_finite_differences(d, k, fixed):
    p = make_problem(d, 4, 3, k, fixed=fixed, sigma=0.8, seed=d + 10 * k)
    thetas = np.random.default_rng([d, k, fixed]).standard_normal((3, p.n_params))
    _, grad = p.risk_and_grad(thetas)
    for theta, g in zip(thetas, grad, strict=True):
        assert rel_err(g, finite_differences(p, theta)) <= 1e-6


# ---------------------------------------------------------------------- (2) Monte Carlo
def test_monte_carlo_agreement():
    sigma, M = 1.7, 1_000_000
    p = make_problem(3, 4, 3, 2, sigma=sigma, seed=7)
    theta = np.random.default_rng(11).standard_normal(p.n_params)
    risk, grad = p.risk_and_grad(theta)
    (w,), (a,) = split(p, theta)
    w_star, a_star = teacher(p)

    x = sigma * np.random.default_rng(2024).standard_normal((M, 3))
    pre = x @ w.T
    res = np.maximum(pre, 0) @ a.T - np.maximum(x @ w_star.T, 0) @ a_star.T  # (M, k)
    samples = {"L": np.sum(res**2, axis=1)}
    gw = grad[0, p.architecture.layers[0].weight].reshape(4, 3)
    ga = grad[0, p.architecture.layers[1].weight].reshape(2, 4)
    closed = {"L": risk[0]}
    for i in (0, 2):
        for j in range(3):
            samples[f"Gw[{i},{j}]"] = 2 * x[:, j] * (pre[:, i] > 0) * (res @ a[:, i])
            closed[f"Gw[{i},{j}]"] = gw[i, j]
        for c in range(2):
            samples[f"Ga[{c},{i}]"] = 2 * np.maximum(pre[:, i], 0) * res[:, c]
            closed[f"Ga[{c},{i}]"] = ga[c, i]
    for name, s in samples.items():
        se = s.std(ddof=1) / np.sqrt(M)
        assert abs(s.mean() - closed[name]) <= 5 * se, (name, s.mean(), closed[name], se)


# ---------------------------------------------------------------------- (3) d = 2 references
# (fixed, k, sigma, special): special puts a zero unit and (anti)parallel pairs in the student
POLAR_CASES = [
    (True, 1, 1.0, False),
    (False, 1, 0.7, False),
    (False, 2, 1.3, False),
    (True, 2, 0.7, True),
    (False, 2, 1.0, True),
]


@pytest.mark.parametrize(("fixed", "k", "sigma", "special"), POLAR_CASES)
def test_polar_reference_d2(fixed, k, sigma, special):
    p = make_problem(2, 4, 3, k, fixed=fixed, sigma=sigma, seed=5)
    w_star, a_star = teacher(p)
    thetas = np.random.default_rng([k, fixed, special]).standard_normal((3, p.n_params))
    if special:
        w = split(p, thetas)[0]  # a view: edits land in thetas
        w[:, 0] = 0.0  # a unit at the origin: G must vanish there (SCIENCE.md §3)
        w[:, 1] = 1.7 * w_star[0]  # parallel to a teacher row
        w[:, 2] = -0.4 * w[:, 3]  # antiparallel to another student row
    risk, grad = p.risk_and_grad(thetas)
    for t in range(len(thetas)):
        (w,), (a,) = split(p, thetas[t])
        ref_risk, ref_gw, ref_ga = polar_reference(w, a, w_star, a_star, sigma)
        ref_grad = np.concatenate([ref_gw.ravel(), [] if fixed else ref_ga.ravel()])
        assert abs(risk[t] - ref_risk) <= 1e-8 * max(1.0, abs(ref_risk))
        assert np.max(np.abs(grad[t] - ref_grad)) <= 1e-8 * max(1.0, np.max(np.abs(ref_grad)))
        if special:
            assert np.all(grad[t, 0:2] == 0.0)  # G_{w_0}
            if not fixed:
                assert np.all(grad[t, 8::4] == 0.0)  # G_{a_0}: entries (c, 0) of the (k, 4) output block


@pytest.mark.parametrize(("fixed", "k"), [(True, 1), (False, 2)])
def test_quadrature_backend_d2(fixed, k):
    """The Gauss-Hermite tensor rule converges to the closed form, but only at a low algebraic rate.

    Near the kink lines (through 0) GH nodes are spaced ~ pi / sqrt(2 n_axis) apart. The risk integrand r^2
    has a derivative jump there, so the rule errs at O(spacing^2) = O(1 / n_axis) (measured: about 1e-3
    relative at 100^2 points, 2e-4 at 400^2, order ~1.1); the G integrand jumps (the indicator), an
    O(spacing) error that also oscillates (measured 2e-3 to 1e-2 relative at 400^2). The tolerances below
    are those of the rule.
    """
    sigma = 0.7
    p = make_problem(2, 3, 2, k, fixed=fixed, sigma=sigma, seed=3)
    thetas = np.random.default_rng(1).standard_normal((3, p.n_params))
    risk, grad = p.risk_and_grad(thetas)
    errors = []
    for n_axis in (100, 400):
        q = make_problem(2, 3, 2, k, fixed=fixed, sigma=sigma, seed=3, backend="quadrature",
                         n_points=n_axis**2)
        assert q.backend_name == "quadrature"
        q_risk, q_grad = q.risk_and_grad(thetas)
        errors.append(rel_err(q_risk, risk))
    assert errors[1] <= 1e-3
    assert errors[1] <= errors[0] / 2.5  # at least first order in n_axis towards the closed form
    assert rel_err(q_grad, grad) <= 1e-2


# ---------------------------------------------------------------------- (4) robustness
@pytest.mark.parametrize("fixed", [False, True])
def test_zero_unit(fixed):
    d, H = 3, 4
    p = make_problem(d, H, 3, 2, fixed=fixed, seed=1)
    theta = np.random.default_rng(3).standard_normal(p.n_params)
    theta[d : 2 * d] = 0.0  # w_1 = 0
    risk, grad = p.risk_and_grad(theta)
    assert np.all(np.isfinite(risk)) and np.all(np.isfinite(grad))
    g_w = grad[0, : H * d].reshape(H, d)
    assert np.all(g_w[1] == 0.0)
    if not fixed:
        g_a = grad[0, H * d :].reshape(2, H)
        assert np.all(g_a[:, 1] == 0.0)
    # L does not depend on a_1 and is smooth in every coordinate but w_1's: there G is its gradient
    others = np.setdiff1d(np.arange(p.n_params), np.arange(d, 2 * d))
    assert rel_err(grad[0, others], finite_differences(p, theta, coords=others)) <= 1e-6
    # the unit contributes nothing: L equals the risk of the student without it
    q = make_problem(d, H - 1, 3, 2, fixed=fixed, seed=1)
    w, a = split(p, theta)
    keep = [0, 2, 3]
    reduced = np.concatenate([w[0, keep].ravel(), [] if fixed else a[0][:, keep].ravel()])
    assert abs(q.risk(reduced)[0] - risk[0]) <= 1e-14 * max(1.0, abs(risk[0]))


@pytest.mark.parametrize("d", [2, 5])
@pytest.mark.parametrize("fixed", [False, True])
def test_parallel_and_antiparallel_units(d, fixed):
    H = 6
    p = make_problem(d, H, 3, 2, fixed=fixed, sigma=1.4, seed=4)
    w_star, _ = teacher(p)
    theta = np.random.default_rng(9).standard_normal(p.n_params)
    w = theta[: H * d].reshape(H, d)  # a view
    w[0] = 2.5 * w_star[0]  # angle 0 to a teacher row
    w[1] = -0.7 * w_star[1]  # angle pi to a teacher row
    w[3] = 1.3 * w[2]  # angle 0 to another student row
    w[5] = -0.6 * w[4]  # angle pi to another student row
    risk, grad = p.risk_and_grad(theta)
    assert np.all(np.isfinite(risk)) and np.all(np.isfinite(grad))
    assert rel_err(grad[0], finite_differences(p, theta)) <= 1e-6
    (ws,), (a,) = split(p, theta)
    ref_risk, ref_gw, ref_ga = pairwise_reference(ws, a, *teacher(p), 1.4)
    assert abs(risk[0] - ref_risk) <= 1e-13 * max(1.0, abs(ref_risk))
    ref = np.concatenate([ref_gw.ravel(), [] if fixed else ref_ga.ravel()])
    assert rel_err(grad[0], ref) <= 1e-13


@pytest.mark.parametrize("fixed", [False, True])
def test_degenerate_teacher(fixed):
    """A teacher given by explicit parameters with a zero row, and with parallel and antiparallel rows."""
    d, n, k = 3, 4, 2
    rng = np.random.default_rng(12)
    w_star = rng.standard_normal((n, d))
    w_star[1] = 0.0
    w_star[2] = 0.5 * w_star[0]
    w_star[3] = -2.0 * w_star[0]
    params = np.concatenate([w_star.ravel(), rng.standard_normal(k * n)])
    p = make_problem(d, 3, n, k, fixed=fixed, sigma=0.6, teacher_parameters=params)
    theta = rng.standard_normal(p.n_params)
    theta[:d] = 1.5 * w_star[0]  # and a student unit along them
    risk, grad = p.risk_and_grad(theta)
    (ws,), (a,) = split(p, theta)
    ref_risk, ref_gw, ref_ga = pairwise_reference(ws, a, *teacher(p), 0.6)
    assert abs(risk[0] - ref_risk) <= 1e-13 * max(1.0, abs(ref_risk))
    assert rel_err(grad[0], np.concatenate([ref_gw.ravel(), [] if fixed else ref_ga.ravel()])) <= 1e-13
    assert rel_err(grad[0], finite_differences(p, theta)) <= 1e-6


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-5, 1e-2])
@pytest.mark.parametrize("end", [0.0, np.pi])
def test_near_parallel_accuracy(angle, end):
    """Angles from the Gram cosine lose half their digits near 0 and pi; L and G must not (see the module)."""
    d, H = 4, 3
    p = make_problem(d, H, 2, 2, sigma=0.9, seed=6)
    w_star, _ = teacher(p)
    rng = np.random.default_rng(2)
    theta = rng.standard_normal(p.n_params)
    w = theta[: H * d].reshape(H, d)
    # rotate teacher row 0 (for w_0) and student row 2 (for w_1) by `end + angle` within a random plane
    for i, base in ((0, w_star[0]), (1, w[2].copy())):
        u = base / np.linalg.norm(base)
        perp = rng.standard_normal(d)
        perp -= (perp @ u) * u
        perp /= np.linalg.norm(perp)
        w[i] = 1.9 * np.linalg.norm(base) * (np.cos(end + angle) * u + np.sin(end + angle) * perp)
    risk, grad = p.risk_and_grad(theta)
    (ws,), (a,) = split(p, theta)
    ref_risk, ref_gw, ref_ga = pairwise_reference(ws, a, *teacher(p), 0.9)
    assert abs(risk[0] - ref_risk) <= 1e-13 * max(1.0, abs(ref_risk))
    assert rel_err(grad[0], np.concatenate([ref_gw.ravel(), ref_ga.ravel()])) <= 1e-13


@pytest.mark.parametrize("fixed", [False, True])
def test_global_minimum(fixed):
    """Student = teacher (d = 1 too, where every angle is 0 or pi): L and G vanish up to rounding."""
    for d in (1, 5):
        p = make_problem(d, 4, 4, 2, fixed=fixed, teacher_fixed=fixed, sigma=1.2, seed=8)
        w_star, a_star = teacher(p)
        theta = np.concatenate([w_star.ravel(), [] if fixed else a_star.ravel()])
        risk, grad = p.risk_and_grad(theta)
        scale = p.backend.teacher_risk
        assert abs(risk[0]) <= 1e-14 * scale
        assert np.max(np.abs(grad)) <= 1e-14 * scale


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_risk_is_never_negative_at_the_teacher(dtype, kernel):
    """L = E[N^2] - 2 E[N f] + E[f^2] cancels at a global minimum: without a clamp, 11 of these 40 teachers gave
    a risk between -1.1e-16 and -1.4e-14 in float64 (9, down to -3.8e-6, in float32, numpy kernel). Every risk is
    >= 0 now, the clamped ones exactly 0. The compiled kernel computes float32 rows in float64, where the teacher's
    parameters rounded to float32 are no longer a minimum: most of those risks are small and positive (1e-16 to
    1e-13), the float64 risk of the rounded parameters, and few are clamped."""
    risks = []
    for d, h in ((2, 2), (3, 3), (5, 4), (4, 8)):
        for seed in range(5):
            for fixed in (False, True):
                p = make_problem(d, h, h, fixed=fixed, teacher_fixed=fixed, seed=seed, dtype=dtype)
                w_star, a_star = teacher(p)
                theta = np.concatenate([w_star.ravel(), [] if fixed else a_star.ravel()])[None]
                risk, grad = p.risk_and_grad(theta)
                assert risk[0] == p.risk(theta)[0]
                assert np.max(np.abs(grad)) <= (1e-13 if dtype == "float64" else 1e-5) * p.backend.teacher_risk
                risks.append(risk[0])
    risks = np.array(risks)
    assert np.all(risks >= 0)
    if kernel == "numpy" or dtype == "float64":
        assert np.sum(risks == 0) >= 5
    else:  # the float64 risk of the teacher rounded to float32: tiny, not a rounding residue of order 1e-6
        assert np.max(risks) < 1e-10


def test_sigma_scaling():
    """Every term is homogeneous of degree 2 in sigma: L(sigma) = sigma^2 L(1), G likewise."""
    thetas = np.random.default_rng(0).standard_normal((5, make_problem(3, 4, 3, 2).n_params))
    risk1, grad1 = make_problem(3, 4, 3, 2, sigma=1.0).risk_and_grad(thetas)
    risk2, grad2 = make_problem(3, 4, 3, 2, sigma=2.5).risk_and_grad(thetas)
    assert rel_err(risk2, 6.25 * risk1) <= 1e-14
    assert rel_err(grad2, 6.25 * grad1) <= 1e-14


@pytest.mark.parametrize(("dtype", "tiny", "larger"),
                         [("float64", 1e-200, 1e-150), ("float32", 1e-30, 1e-10)])
def test_tiny_units_stay_alive(dtype, tiny, larger):
    """|w_i|^2 underflows, yet w_i != 0: the unit is alive and G_{w_i} depends only on w_i's direction."""
    d, H = 3, 3
    p = make_problem(d, H, 2, 1, dtype=dtype, seed=2)
    theta = np.random.default_rng(4).standard_normal((2, p.n_params)).astype(dtype)
    theta[1] = theta[0]
    theta[0, :d] *= tiny
    theta[1, :d] *= larger
    risk, grad = p.risk_and_grad(theta)
    assert np.all(np.isfinite(risk)) and np.all(np.isfinite(grad))
    assert p.dead_neurons(theta).tolist() == [0, 0]
    g_w0 = grad[:, :d].astype(float)
    assert np.max(np.abs(g_w0[0])) > 0
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(g_w0[0], g_w0[1]) <= tol


@pytest.mark.parametrize("fixed", [False, True])
def test_float32_agrees_with_float64(fixed):
    p64 = make_problem(10, 10, 10, 1, fixed=fixed, first_layer="unit_vectors")
    p32 = make_problem(10, 10, 10, 1, fixed=fixed, first_layer="unit_vectors", dtype="float32")
    thetas = np.random.default_rng(5).standard_normal((50, p64.n_params)) / np.sqrt(10)
    risk64, grad64 = p64.risk_and_grad(thetas)
    risk32, grad32 = p32.risk_and_grad(thetas.astype(np.float32))
    assert risk32.dtype == np.float32 and grad32.dtype == np.float32
    assert rel_err(risk32, risk64) <= 2e-6  # measured ~2e-7
    assert rel_err(grad32, grad64) <= 2e-6


# ---------------------------------------------------------------------- (5) batch invariance
def _special_batch(p, T, rng):
    """Random rows, some with a zero unit, a unit parallel to a teacher row, or two antiparallel units."""
    H, d = p.architecture.widths[0], p.architecture.input_dim
    w_star, _ = teacher(p)
    theta = rng.standard_normal((T, p.n_params)).astype(p.backend.dtype)
    w = theta[:, : H * d].reshape(T, H, d)
    w[::5, 0] = 0.0
    w[1::5, 1] = 3.0 * w_star[0]
    w[2::5, 2] = -w[2::5, 3]
    return theta


@pytest.mark.parametrize(("fixed", "k", "dtype"),
                         [(True, 1, "float64"), (False, 1, "float32"), (False, 2, "float64"),
                          (True, 3, "float32")])
def test_bitwise_batch_invariance(fixed, k, dtype, monkeypatch):
    first = "unit_vectors" if k == 1 else "normal"
    p = make_problem(10, 10, 10, k, fixed=fixed, dtype=dtype, first_layer=first)
    theta = _special_batch(p, 1000, np.random.default_rng(7))
    risk, grad = p.risk_and_grad(theta)
    assert np.array_equal(p.risk(theta), risk)  # risk() is the same arithmetic as risk_and_grad()
    for t in range(0, 1000, 37):  # alone, in place and copied (another alignment)
        for row in (theta[t : t + 1], theta[t : t + 1].copy()):
            r1, g1 = p.risk_and_grad(row)
            assert np.array_equal(r1, risk[t : t + 1]) and np.array_equal(g1, grad[t : t + 1])
    for start in range(0, 1000, 7):  # in batches of 7
        r7, g7 = p.risk_and_grad(theta[start : start + 7])
        assert np.array_equal(r7, risk[start : start + 7]) and np.array_equal(g7, grad[start : start + 7])
    # batches cut into several chunks, and the workspace reused at another size
    monkeypatch.setattr(_gaussian, "CHUNK_ELEMENTS", 64 * 2 * 20 * 10 * k)  # chunks of 64 rows
    r, g = p.risk_and_grad(theta)
    assert np.array_equal(r, risk) and np.array_equal(g, grad)


def test_threads_and_pickle():
    """Per-thread workspaces: concurrent calls give the serial results; a pickled backend gives them too."""
    p = make_problem(5, 6, 4, 2, seed=3)
    thetas = [np.random.default_rng(i).standard_normal((200 + 13 * i, p.n_params)) for i in range(4)]
    serial = [p.risk_and_grad(t) for t in thetas]
    results = [None] * 4

    def work(i):
        for _ in range(20):
            results[i] = p.risk_and_grad(thetas[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for (r, g), (rs, gs) in zip(results, serial, strict=True):
        assert np.array_equal(r, rs) and np.array_equal(g, gs)
    clone = pickle.loads(pickle.dumps(p.backend))
    r, g = clone.risk_and_grad(thetas[0])
    assert np.array_equal(r, serial[0][0]) and np.array_equal(g, serial[0][1])


# ---------------------------------------------------------------------- (6) dead neurons
def test_dead_neurons():
    d, H = 3, 5
    p = make_problem(d, H, 2, 2, seed=1)
    theta = np.random.default_rng(0).standard_normal((4, p.n_params))
    w = theta[:, : H * d].reshape(4, H, d)
    w[1, 2] = 0.0
    w[2, [0, 1, 4]] = 0.0
    w[3] = 0.0
    w[0, 3] = [0.0, 1e-300, 0.0]  # tiny but nonzero: active on a half-space
    theta[:, H * d :] = 0.0  # output weights play no part
    counts = p.dead_neurons(theta)
    assert counts.dtype == np.int64 and counts.tolist() == [0, 1, 3, 5]
    risk, grad = p.risk_and_grad(theta[3])
    assert risk[0] == pytest.approx(p.backend.teacher_risk, rel=1e-15)  # N = 0: L = E[f^2]
    assert np.all(grad == 0.0)


# ---------------------------------------------------------------------- (7) applicability
VALID = {
    "network": {"input_dim": 2, "widths": [3], "output_dim": 1, "activation": "relu", "bias": False},
    "measure": {"kind": "gaussian", "dim": 2, "sigma": 1.0},
    "target": {"kind": "teacher", "widths": [2], "bias": False, "seed": 0},
}

INAPPLICABLE = [
    ("student biases", {"network": {**VALID["network"], "bias": True}}, "bias-free student"),
    ("tanh", {"network": {**VALID["network"], "activation": "tanh"}}, "activation 'relu'"),
    ("uniform measure", {"measure": {"kind": "uniform", "dim": 2, "low": -1.0, "high": 1.0}},
     "gaussian measure"),
    ("non-teacher target", {"target": {"kind": "function", "name": "abs", "direction": [1.0, 0.0]}},
     "teacher target"),
    ("deep student", {"network": {**VALID["network"], "widths": [3, 3]}}, "one hidden layer"),
    ("teacher biases", {"target": {**VALID["target"], "bias": True}}, "bias-free teacher"),
    ("deep teacher", {"target": {**VALID["target"], "widths": [2, 2]}}, "shallow teacher"),
    ("tanh teacher", {"target": {**VALID["target"], "activation": "tanh"}}, "ReLU teacher"),
]


@pytest.mark.parametrize(("label", "change", "reason"), INAPPLICABLE, ids=[c[0] for c in INAPPLICABLE])
def test_inapplicable_problems(label, change, reason):
    spec = {**VALID, **change}
    with pytest.raises(ValueError, match=f"'gaussian' does not apply.*{reason}"):
        reluflow.Problem.from_dict({**spec, "risk": {"backend": "gaussian"}})
    assert reluflow.Problem.from_dict({**spec, "risk": {"backend": "auto"}}).backend_name == "quadrature"


def test_auto_picks_gaussian():
    for extra in ({}, {"fixed_output": 1.0}):
        spec = {**VALID, "network": {**VALID["network"], **extra}, "risk": {"backend": "auto"}}
        p = reluflow.Problem.from_dict(spec)
        assert p.backend_name == "gaussian" and isinstance(p.backend, GaussianRisk)
    w3 = make_problem(10, 10, 10, 1, fixed=True, first_layer="unit_vectors", backend="auto")
    assert w3.backend_name == "gaussian"
    assert w3.backend.describe() == {"backend": "gaussian", "dtype": "float64", "sigma": 1.0,
                                     "kernel": w3.backend.kernels[0]}


def test_matches_forward_on_a_sample_mean():
    """Sanity of the layout: with the target evaluated by ``forward``, a Monte Carlo mean sits near L."""
    p = make_problem(3, 2, 2, 1, fixed=True, sigma=1.0, seed=0)
    theta = np.random.default_rng(1).standard_normal((1, p.n_params))
    x = np.random.default_rng(2).standard_normal((200_000, 3))
    sq = np.sum((forward(p.architecture, theta, x)[0] - p.target(x)) ** 2, axis=1)
    assert abs(sq.mean() - p.risk(theta)[0]) <= 5 * sq.std(ddof=1) / np.sqrt(len(sq))


def test_arccos_kernel_in_chunks_is_the_closed_form(monkeypatch):
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=(37, 4)), rng.normal(size=(29, 4))
    whole = _gaussian.arccos_kernel(u, v, 1.3)
    monkeypatch.setattr(_gaussian, "_PAIR_CHUNK", 4 * 29 * 3)  # three rows of u a chunk, the last one short
    assert _gaussian.arccos_kernel(u, v, 1.3).tobytes() == whole.tobytes()
    # E[relu(u.x) relu(v.x)] = sigma^2 / (2 pi) |u| |v| (sin phi + (pi - phi) cos phi), phi from the cosine
    nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
    phi = np.arccos(np.clip(u @ v.T / np.outer(nu, nv), -1, 1))
    expected = 1.3**2 / (2 * np.pi) * np.outer(nu, nv) * (np.sin(phi) + (np.pi - phi) * np.cos(phi))
    np.testing.assert_allclose(whole, expected, rtol=1e-12, atol=1e-14)
