"""The ``exact1d`` backend: closed-form risk and generalized gradient for shallow 1D ReLU nets.

References used here are independent of the backend's algorithm: ``scipy.integrate.quad_vec`` of the SCIENCE.md
§3 integrands (evaluated pointwise with ``reluflow.network.forward`` and ``target(x)``) split at every kink and
knot, central finite differences of ``L``, and the ``quadrature`` backend.
"""

from __future__ import annotations

import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.polynomial import polynomial as npoly
from scipy import integrate

from reluflow import Problem
from reluflow.network import forward
from reluflow.risk import Exact1DRisk
from reluflow.risk import _exact1d as exact1d_module

UNIFORM01 = {"kind": "uniform", "low": 0.0, "high": 1.0}
PW_AFFINE = {"kind": "piecewise_affine", "knots": [0.0, 0.3, 0.7, 1.0], "values": [0.0, 1.0, -0.5, 0.2]}
TENT = {"kind": "piecewise_polynomial", "knots": [0.0, 0.5, 1.0], "coefficients": [[0.0, 4.0], [4.0, -4.0]]}
# degree-2 density on two pieces (normalized by the measure), and a degree-3 / degree-2 piecewise target
QUAD_DENSITY = {"kind": "piecewise_polynomial", "knots": [-1.0, 0.2, 1.0],
                "coefficients": [[1.0, 0.5, 0.25], [1.1, 0.0, -0.5]], "normalize": True}
PP_TARGET = {"kind": "piecewise_polynomial", "knots": [-1.0, -0.3, 0.4, 1.0],
             "coefficients": [[0.2, -1.0, 0.5, 1.5], [0.1, 0.3, -2.0, 0.0], [-0.4, 1.0, 0.7, -0.3]]}
PP_TARGET_K2 = {"kind": "piecewise_polynomial", "knots": [0.0, 0.45, 1.0],
                "coefficients": [[[0.2, -1.0, 0.5], [1.0, 0.0, 2.0]], [[0.1, 0.3, -2.0], [-1.0, 2.0, 0.5]]]}

# name -> (network, measure, target)
PROBLEMS = {
    "uniform_pw_affine": ({"widths": [6]}, UNIFORM01, PW_AFFINE),
    "interval_m2_3_abs": ({"widths": [7]}, {"kind": "uniform", "low": -2.0, "high": 3.0},
                          {"kind": "function", "name": "abs", "shift": 0.5}),
    "far_interval": ({"widths": [5]}, {"kind": "uniform", "low": 10.0, "high": 12.0},
                     {"kind": "piecewise_affine", "knots": [10.0, 11.2, 12.0], "values": [1.0, -1.0, 0.5]}),
    "vector_k2": ({"widths": [6], "output_dim": 2}, UNIFORM01,
                  {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [[0, 1], [1, -1], [0.3, 0.2]]}),
    "vector_k3_affine": ({"widths": [5], "output_dim": 3}, UNIFORM01,
                         {"kind": "affine", "slope": [[1.0], [-2.0], [0.5]], "intercept": [0.0, 1.0, 2.0]}),
    "tent_cubic": ({"widths": [6]}, TENT, {"kind": "polynomial", "coefficients": [0.1, -1.0, 2.0, 0.5]}),
    "quad_density_pp_target": ({"widths": [6]}, QUAD_DENSITY, PP_TARGET),
    "pp_target_k2": ({"widths": [5], "output_dim": 2}, UNIFORM01, PP_TARGET_K2),
    "zero_density_piece": ({"widths": [5]}, {"kind": "piecewise_polynomial", "knots": [0.0, 0.4, 1.0],
                                             "coefficients": [[0.0], [1.0]], "normalize": True}, PW_AFFINE),
    "no_hidden_bias": ({"widths": [6], "bias": [False, True]}, {"kind": "uniform", "low": -1.0, "high": 2.0},
                       {"kind": "function", "name": "abs"}),
    "no_bias": ({"widths": [4], "bias": False}, {"kind": "uniform", "low": -1.0, "high": 1.0},
                {"kind": "polynomial", "coefficients": [0.0, 0.5, 1.0]}),
    "fixed_output_k2": ({"widths": [6], "output_dim": 2, "fixed_output": 1.0}, UNIFORM01,
                        {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [[0, 1], [1, -1], [0, 0]]}),
    "teacher": ({"widths": [6]}, {"kind": "uniform", "low": -1.0, "high": 1.0},
                {"kind": "teacher", "widths": [3], "seed": 3}),
    "constant_target": ({"widths": [4]}, UNIFORM01, {"kind": "constant", "value": 0.7}),
}


# exact1d's kernels here: the tests below run on the default one (compiled where numba is installed), except
# those about batching and chunking, which run on each; test_exact1d_numba.py holds the two to the same bytes
KERNELS = ["numpy", "numba"] if exact1d_module.numba_installed() else ["numpy"]


def make_problem(name: str, backend: str = "exact1d", kernel: str | None = None, **risk) -> Problem:
    net, measure, target = PROBLEMS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # un-normalized densities are divided by their mass, with a note
        problem = Problem.from_dict({"network": {"input_dim": 1, **net}, "measure": measure, "target": target,
                                     "risk": {"backend": backend, **risk}})
    if kernel is not None:
        problem.backend.kernel = kernel
    return problem


def unpack(problem: Problem, theta: np.ndarray):
    """``w, b (H,)``, ``v (k, H)``, ``c (k,)`` of one parameter row (fixed and absent parts materialized)."""
    arch = problem.architecture
    (w, b), (v, c) = arch.unflatten(theta[None, :])
    w = w[0, :, 0]
    b = np.zeros_like(w) if b is None else b[0]
    v = np.array(np.broadcast_to(v[0], (arch.output_dim, len(w))))
    c = np.zeros(arch.output_dim) if c is None else c[0]
    return w, b, v, c


def static_knots(problem: Problem) -> np.ndarray:
    knots, _ = problem.measure.density_pieces()
    lo, hi = knots[0], knots[-1]
    breaks = problem.target.piecewise_polynomial().breakpoints
    return np.unique(np.concatenate([knots, breaks[(breaks > lo) & (breaks < hi)]]))


def density(problem: Problem, x: np.ndarray) -> np.ndarray:
    knots, coefs = problem.measure.density_pieces()
    piece = np.clip(np.searchsorted(knots, x, side="right") - 1, 0, len(coefs) - 1)
    return np.array([npoly.polyval(xi, coefs[i]) for xi, i in zip(x, piece, strict=True)])


def integrands(problem: Problem, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``(M, 1 + P)``: ``|r|^2 p`` and the SCIENCE.md §3 integrands of ``G`` (times ``p``), in theta's layout."""
    arch = problem.architecture
    w, b, v, _ = unpack(problem, theta)
    xs = np.asarray(x, dtype=float)[:, None]
    r = forward(arch, theta[None, :], xs)[0] - problem.target(xs)  # (M, k)
    p = density(problem, xs[:, 0])[:, None]
    z = xs * w[None, :] + b[None, :]  # (M, H)
    active = (z > 0).astype(float)
    vr = r @ v  # (M, H): <v_j, r(x)>
    out = np.empty((len(xs), 1 + arch.n_params))
    out[:, 0] = np.sum(r * r, axis=1)
    g = out[:, 1:]
    (hidden, output) = arch.layers
    g[:, hidden.weight] = 2 * xs * active * vr
    if hidden.bias is not None:
        g[:, hidden.bias] = 2 * active * vr
    if output.weight is not None:
        g[:, output.weight] = (2 * r[:, :, None] * np.maximum(z, 0)[:, None, :]).reshape(len(xs), -1)
    if output.bias is not None:
        g[:, output.bias] = 2 * r
    return out * p


def reference(problem: Problem, theta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """``(L, G (P,), scale (P,))`` by adaptive Gauss–Kronrod on every piece between kinks and knots.

    ``scale`` is ``int |integrand|`` of each ``G`` component (the natural size for a relative error when the
    integrand changes sign), from a 64-point Gauss–Legendre rule per piece.
    """
    w, b, _, _ = unpack(problem, theta)
    knots = static_knots(problem)
    lo, hi = knots[0], knots[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        kinks = -b / w
    kinks = kinks[(w != 0) & (kinks > lo) & (kinks < hi)]
    edges = np.unique(np.concatenate([knots, kinks]))
    total = np.zeros(1 + problem.n_params)
    scale = np.zeros(problem.n_params)
    nodes, weights = np.polynomial.legendre.leggauss(64)
    for a, bb in zip(edges[:-1], edges[1:], strict=True):
        val, _ = integrate.quad_vec(lambda x: integrands(problem, theta, np.array([x]))[0], a, bb,
                                    epsabs=1e-300, epsrel=1e-14, norm="max")
        total += val
        xs = 0.5 * (a + bb) + 0.5 * (bb - a) * nodes
        scale += 0.5 * (bb - a) * (weights @ np.abs(integrands(problem, theta, xs)[:, 1:]))
    return total[0], total[1:], scale


def pack(problem: Problem, w, b, v=None, c=None) -> np.ndarray:
    """One theta row from per-part values (parts that are not trained are ignored)."""
    arch = problem.architecture
    (hidden, output) = arch.layers
    theta = np.zeros(arch.n_params)
    theta[hidden.weight] = w
    if hidden.bias is not None:
        theta[hidden.bias] = b
    if output.weight is not None:
        theta[output.weight] = np.ravel(v)
    if output.bias is not None:
        theta[output.bias] = c
    return theta


def special_rows(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """Rows with kinks exactly on knots and interval ends, w = 0 units, kinks outside, and all units dead.

    Weights are powers of two and ``b = -w t``, so that ``-b / w`` is exactly ``t``.
    """
    arch = problem.architecture
    H, k = arch.widths[0], arch.output_dim
    knots = static_knots(problem)
    lo, hi = knots[0], knots[-1]
    inner = knots[1:-1] if len(knots) > 2 else np.array([0.5 * (lo + hi)])
    span = hi - lo
    # (w, kink or None for a w = 0 unit with bias b)
    units = [(1.0, lo), (-2.0, lo), (0.5, hi), (-1.0, hi), (2.0, inner[0]), (-0.5, inner[-1]),
             (0.0, 1.5), (0.0, -0.75), (0.0, 0.0), (4.0, lo - 0.3 * span), (-1.0, hi + span),
             (-2.0, lo - span), (1.0, hi + 0.25 * span), (1.0, inner[-1])]
    rows = []
    for start in range(0, len(units), H):
        chunk = [units[(start + j) % len(units)] for j in range(H)]
        w = np.array([u[0] for u in chunk])
        b = np.array([u[1] if u[0] == 0 else -u[0] * u[1] for u in chunk])
        rows.append(pack(problem, w, b, rng.standard_normal((k, H)), rng.standard_normal(k)))
    # every unit dead: kinks at or beyond the far end, pointing outwards
    w = np.where(np.arange(H) % 2 == 0, 1.0, -2.0)
    t = np.where(w > 0, hi, lo) + np.where(np.arange(H) % 3 == 0, 0.0, np.where(w > 0, 0.5, -0.5) * span)
    rows.append(pack(problem, w, -w * t, rng.standard_normal((k, H)), rng.standard_normal(k)))
    return np.array(rows)


def random_rows(problem: Problem, rng: np.random.Generator, n: int) -> np.ndarray:
    """Standard-normal parameters, with hidden biases spread so that kinks land inside the interval."""
    theta = rng.standard_normal((n, problem.n_params))
    hidden = problem.architecture.layers[0]
    if hidden.bias is not None:
        knots = static_knots(problem)
        t = rng.uniform(knots[0] - 0.1, knots[-1] + 0.1, (n, problem.architecture.widths[0]))
        theta[:, hidden.bias] = -theta[:, hidden.weight] * t
    return theta


# ---------------------------------------------------------------------------------------------- (1) quad_vec
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_matches_adaptive_quadrature(name):
    problem = make_problem(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    rows = [random_rows(problem, rng, 3)]
    if problem.architecture.layers[0].bias is not None:
        rows.append(special_rows(problem, rng))
    else:  # without biases every kink is at 0: cover w = 0 and both signs
        theta = random_rows(problem, rng, 1)
        weight = problem.architecture.layers[0].weight
        theta[0, weight.start : weight.start + 2] = 0.0
        rows.append(theta)
    theta = np.concatenate(rows)
    L, G = problem.risk_and_grad(theta)
    assert L.shape == (len(theta),) and G.shape == theta.shape
    assert np.all(np.isfinite(L)) and np.all(np.isfinite(G))
    for i, row in enumerate(theta):
        L_ref, G_ref, scale = reference(problem, row)
        assert abs(L[i] - L_ref) <= 1e-10 * L_ref, (name, i, L[i], L_ref)
        err = np.abs(G[i] - G_ref)
        bad = np.flatnonzero(err > 1e-10 * scale + 1e-300)
        assert len(bad) == 0, (name, i, bad, G[i][bad], G_ref[bad], scale[bad])


def test_dead_units_have_zero_gradient_and_best_constant_is_critical():
    # all units dead, c = mean of f = 2x on [0, 1]: risk alpha^2 / 12 = 1/3 and G = 0 exactly (SCIENCE.md §6)
    problem = Problem.from_dict({"network": {"input_dim": 1, "widths": [3]}, "measure": UNIFORM01,
                                 "target": {"kind": "affine", "slope": 2.0}, "risk": {"backend": "exact1d"}})
    theta = pack(problem, [1.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [[3.0, -2.0, 5.0]], [1.0])
    L, G = problem.risk_and_grad(theta)
    assert abs(L[0] - 1.0 / 3.0) <= 1e-15
    assert np.all(G == 0)
    assert problem.dead_neurons(theta)[0] == 3


def test_zero_unit_never_moves():
    problem = make_problem("uniform_pw_affine")
    theta = random_rows(problem, np.random.default_rng(1), 1)[0]
    hidden = problem.architecture.layers[0]
    theta[hidden.weight.start] = theta[hidden.bias.start] = 0.0
    G = problem.risk_and_grad(theta)[1][0]
    assert G[hidden.weight.start] == 0 and G[hidden.bias.start] == 0
    assert G[problem.architecture.layers[1].weight][0] == 0  # v_0 (k = 1): its unit outputs relu(0) = 0
    assert np.any(G != 0)


# ---------------------------------------------------------------------------------------------- (2) finite differences
@pytest.mark.parametrize("name", ["uniform_pw_affine", "vector_k2", "quad_density_pp_target", "fixed_output_k2",
                                  "no_hidden_bias", "interval_m2_3_abs"])
def test_gradient_matches_central_differences(name):
    # generic points: |w| bounded below and kinks away from knots, so that the FD steps (which move kinks by about
    # eps / |w|) keep L smooth on the stencil
    problem = make_problem(name)
    rng = np.random.default_rng(7)
    theta = random_rows(problem, rng, 2)
    hidden = problem.architecture.layers[0]
    w = rng.choice([-1.0, 1.0], theta[:, hidden.weight].shape) * rng.uniform(0.5, 2.0, theta[:, hidden.weight].shape)
    theta[:, hidden.weight] = w
    if hidden.bias is not None:
        knots = static_knots(problem)
        piece = rng.integers(0, len(knots) - 1, w.shape)
        lo, length = knots[piece], np.diff(knots)[piece]
        t = lo + length * rng.uniform(0.02, 0.98, w.shape)
        theta[:, hidden.bias] = -w * t
    _, G = problem.risk_and_grad(theta)
    eps = 1e-5 * np.maximum(1.0, np.abs(theta))
    P = problem.n_params
    # all 2P perturbed copies of both rows in one batch
    plus = np.repeat(theta, P, axis=0) + np.tile(np.eye(P), (2, 1)) * eps.repeat(P, axis=0)
    minus = np.repeat(theta, P, axis=0) - np.tile(np.eye(P), (2, 1)) * eps.repeat(P, axis=0)
    fd = (problem.risk(plus) - problem.risk(minus)).reshape(2, P) / (2 * eps)
    for i in range(2):
        np.testing.assert_allclose(G[i], fd[i], rtol=1e-6, atol=1e-6 * np.abs(G[i]).max())


# ---------------------------------------------------------------------------------------------- (3) quadrature backend
def test_matches_quadrature_exactly_when_kinks_are_on_panel_edges():
    # 1024 points = 256 Gauss–Legendre panels of 4 nodes with edges j/256 on [0, 1]: with every kink and knot on an
    # edge each panel's integrand is a polynomial of degree <= 2, which the rule integrates exactly
    spec = {"network": {"input_dim": 1, "widths": [8], "output_dim": 2}, "measure": UNIFORM01,
            "target": {"kind": "piecewise_affine", "knots": [0.0, 0.25, 0.5, 1.0],
                       "values": [[0, 1], [1, -1], [-0.5, 0.5], [0.2, 0.0]]}}
    exact = Problem.from_dict({**spec, "risk": {"backend": "exact1d"}})
    quad = Problem.from_dict({**spec, "risk": {"backend": "quadrature", "n_points": 1024}})
    rng = np.random.default_rng(11)
    rows = []
    for _ in range(5):
        w = rng.choice([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0], 8)
        t = rng.integers(-20, 277, 8) / 256.0
        rows.append(pack(exact, w, -w * t, rng.standard_normal((2, 8)), rng.standard_normal(2)))
    theta = np.array(rows)
    L, G = exact.risk_and_grad(theta)
    Lq, Gq = quad.risk_and_grad(theta)
    np.testing.assert_allclose(L, Lq, rtol=1e-12)
    np.testing.assert_allclose(G, Gq, rtol=0, atol=1e-12 * np.abs(G).max())


def test_matches_quadrature_within_its_error_for_generic_kinks():
    # The quadrature rule (4-node Gauss–Legendre panels of width h) is exact on panels without a kink. On a panel
    # with a kink the integrand of L, |r|^2, has a jump of its derivative, and 4-node Gauss–Legendre then errs by at
    # most h^2 |jump| (a generous bound); the integrands of G jump themselves at their own unit's kink, an error of
    # at most h |jump| <= 2 h max|integrand|. Kinks: every unit and every target knot. n = 2^14 points on [0, 1]
    # give h = 2^-12.
    problem = make_problem("uniform_pw_affine")
    quad = make_problem("uniform_pw_affine", backend="quadrature", n_points=1 << 14)
    theta = random_rows(problem, np.random.default_rng(5), 4)
    L, G = problem.risk_and_grad(theta)
    Lq, Gq = quad.risk_and_grad(theta)
    h = 2.0**-12
    pp = problem.target.piecewise_polynomial()
    df_jump = np.abs(np.diff(pp.coefficients[:, 0, 1])).max()  # target slope jumps at its knots
    n_kinks = problem.architecture.widths[0] + len(pp.breakpoints)
    xs = np.linspace(0, 1, 2001)[:, None]
    for i in range(len(theta)):
        r = np.abs(forward(problem.architecture, theta[i : i + 1], xs)[0] - problem.target(xs)).max() * 1.01
        w, b, v, _ = unpack(problem, theta[i])
        jump = 2 * (np.abs(v[0] * w).max() + df_jump) * r  # |jump of (r^2)'| = 2 |r| |jump of r'|
        assert abs(L[i] - Lq[i]) <= n_kinks * h**2 * jump
        integrand_max = 2 * r * np.abs(v[0]).max() * (1.0 + np.abs(w).max() + np.abs(b).max()) + 2 * r
        assert np.abs(G[i] - Gq[i]).max() <= 2 * h * integrand_max
    assert np.abs(L - Lq).max() > 0  # the rule is not exact here: this test is about its error


# ---------------------------------------------------------------------------------------------- (4) batch invariance
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["uniform_pw_affine", "vector_k2", "quad_density_pp_target", "fixed_output_k2"])
def test_bitwise_batch_invariance(name, dtype, kernel):
    problem = make_problem(name, dtype=dtype, kernel=kernel)
    rng = np.random.default_rng(3)
    special = special_rows(problem, rng)
    theta = np.concatenate([special, random_rows(problem, rng, 1000 - len(special))])
    theta = theta[rng.permutation(len(theta))]
    L, G = problem.risk_and_grad(theta)
    assert L.dtype == np.dtype(dtype) and G.dtype == np.dtype(dtype)
    assert problem.risk(theta).tobytes() == L.tobytes()  # risk() is risk_and_grad()[0], bit for bit
    L7, G7 = problem.risk_and_grad(theta[:7])
    assert L7.tobytes() == L[:7].tobytes() and G7.tobytes() == G[:7].tobytes()
    for i in list(range(7)) + [499, 998, 999]:
        Li, Gi = problem.risk_and_grad(theta[i])
        assert Li.tobytes() == L[i : i + 1].tobytes() and Gi.tobytes() == G[i : i + 1].tobytes()
    # a row taken from the middle of a larger, differently chunked batch
    big = np.concatenate([theta, theta[::-1], theta])
    Lb, Gb = problem.risk_and_grad(big)
    assert Lb[:1000].tobytes() == L.tobytes() and Gb[1000:2000].tobytes() == G[::-1].tobytes()


def test_float32_is_the_float64_result_rounded_once():
    p64, p32 = make_problem("vector_k2"), make_problem("vector_k2", dtype="float32")
    theta = random_rows(p64, np.random.default_rng(2), 50).astype(np.float32).astype(np.float64)
    L64, G64 = p64.risk_and_grad(theta)
    L32, G32 = p32.risk_and_grad(theta)
    assert L32.dtype == np.float32 and G32.dtype == np.float32
    # computed in float64 from the same (float32-representable) parameters, then rounded once
    np.testing.assert_array_equal(L32, L64.astype(np.float32))
    np.testing.assert_array_equal(G32, G64.astype(np.float32))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chunking_and_threads_do_not_change_a_bit(monkeypatch, kernel):
    problem = make_problem("pp_target_k2", kernel=kernel)
    rng = np.random.default_rng(4)
    theta = np.concatenate([special_rows(problem, rng), random_rows(problem, rng, 300)])
    L, G = problem.risk_and_grad(theta)
    # many small chunks (of the numpy kernel), the last one shorter: the scratch arena is reused and regrown
    monkeypatch.setattr(exact1d_module, "CHUNK_ELEMENTS", 7 * 40)
    Ls, Gs = problem.risk_and_grad(theta)
    assert Ls.tobytes() == L.tobytes() and Gs.tobytes() == G.tobytes()
    monkeypatch.undo()
    # one backend used from several threads at once: each thread has its own scratch arena (numpy), or the
    # compiled kernel its own per-call buffers (it releases the GIL)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(problem.risk_and_grad, [theta] * 8))
    for Lt, Gt in results:
        assert Lt.tobytes() == L.tobytes() and Gt.tobytes() == G.tobytes()


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_finite_rows_stay_in_their_row(kernel):
    problem = make_problem("vector_k2", kernel=kernel)
    theta = random_rows(problem, np.random.default_rng(8), 6)
    L, G = problem.risk_and_grad(theta)
    bad = theta.copy()
    bad[1, 0] = np.nan
    bad[3, 7] = np.inf
    Lb, Gb = problem.risk_and_grad(bad)
    keep = [0, 2, 4, 5]
    assert Lb[keep].tobytes() == L[keep].tobytes() and Gb[keep].tobytes() == G[keep].tobytes()
    assert np.isnan(Lb[1]) and not np.isfinite(Lb[3])


def test_tiny_weights_put_the_kink_at_infinity():
    problem = make_problem("uniform_pw_affine")
    v = np.random.default_rng(9).standard_normal((1, 6))
    # w = +-1e-310 with b = 1: kink at -+inf (an overflow, silently): active everywhere, like w = 0, b = 1
    tiny = pack(problem, [1e-310, -1e-310, 0.5, -1.0, 0.0, 0.0], [1.0, 1.0, -0.25, 0.5, 1.0, -1.0], v, [0.2])
    flat = pack(problem, [0.0, 0.0, 0.5, -1.0, 0.0, 0.0], [1.0, 1.0, -0.25, 0.5, 1.0, -1.0], v, [0.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (L_tiny, G_tiny), (L_flat, G_flat) = problem.risk_and_grad(tiny), problem.risk_and_grad(flat)
    assert L_tiny[0] == L_flat[0]
    np.testing.assert_allclose(G_tiny, G_flat, rtol=1e-14, atol=1e-300)
    assert problem.dead_neurons(tiny).tolist() == problem.dead_neurons(flat).tolist() == [1]


# ---------------------------------------------------------------------------------------------- (5) dead neurons
def test_dead_neurons_hand_built():
    problem = make_problem("uniform_pw_affine")  # uniform on [0, 1], H = 6
    units = [(1.0, -2.0, True),    # kink at 2 > 1, active to the right: dead
             (1.0, -1.0, True),    # kink exactly at 1: active set {x > 1} misses [0, 1]
             (-1.0, 0.0, True),    # kink exactly at 0, active to the left: dead
             (1.0, -0.5, False),   # kink inside
             (-1.0, 0.5, False),   # kink inside
             (-3.0, 5.0, False)]   # kink beyond 1, active to the left: alive everywhere
    w, b, dead = (np.array(x) for x in zip(*units, strict=True))
    theta = pack(problem, w, b, np.ones((1, 6)), [0.0])
    assert problem.dead_neurons(theta).tolist() == [int(dead.sum())]
    assert problem.dead_neurons(theta).dtype == np.int64
    # w = 0: alive iff b > 0
    theta2 = pack(problem, np.zeros(6), [1.0, -1.0, 0.0, 0.0, 2.0, -3.0], np.ones((1, 6)), [0.0])
    assert problem.dead_neurons(theta2).tolist() == [4]
    # a batch: counts per row
    assert problem.dead_neurons(np.stack([theta, theta2, theta])).tolist() == [3, 4, 3]
    # the gradient of dead units vanishes
    G = problem.risk_and_grad(theta)[1][0]
    hidden, output = problem.architecture.layers
    for j in np.flatnonzero(dead):
        assert G[hidden.weight][j] == 0 and G[hidden.bias][j] == 0 and G[output.weight][j] == 0


def test_dead_neurons_count_zero_density_regions():
    problem = make_problem("zero_density_piece")  # density 0 on [0, 0.4], constant on [0.4, 1]; H = 5
    theta = pack(problem, [-1.0, -1.0, 1.0, 1.0, -1.0], [0.4, 0.3, -0.9, -1.0, 0.5], np.ones((1, 5)), [0.0])
    # active on [0, 0.4] (null), [0, 0.3] (null), [0.9, 1], {x > 1} (null), [0, 0.5]
    assert problem.dead_neurons(theta).tolist() == [3]
    G = problem.risk_and_grad(theta)[1][0]
    hidden = problem.architecture.layers[0]
    assert G[hidden.weight][0] == 0 and G[hidden.weight][1] == 0 and G[hidden.weight][3] == 0
    assert G[hidden.weight][2] != 0 and G[hidden.weight][4] != 0


def test_dead_neurons_without_bias():
    problem = make_problem("no_bias")  # uniform on [-1, 1]: a bias-free unit is dead only if w = 0
    theta = pack(problem, [0.0, 1.0, -1.0, 0.0], None, np.ones((1, 4)))
    assert problem.dead_neurons(theta).tolist() == [2]


# ---------------------------------------------------------------------------------------------- (6) applicability
BASE = {"network": {"input_dim": 1, "widths": [4]}, "measure": UNIFORM01, "target": PW_AFFINE,
        "risk": {"backend": "exact1d"}}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"network": {"input_dim": 2, "widths": [4]}, "measure": {"kind": "uniform"},
          "target": {"kind": "function", "name": "abs"}}, "input_dim = 1"),
        ({"network": {"input_dim": 1, "widths": [4, 4]}}, "one hidden layer"),
        ({"network": {"input_dim": 1, "widths": [4], "activation": "tanh"}}, "activation 'relu'"),
        ({"measure": {"kind": "gaussian"}}, "uniform or piecewise polynomial measure"),
        ({"target": {"kind": "function", "name": "sin"}}, "piecewise polynomial 1D target"),
    ],
)
def test_inapplicable_problem_names_the_reason(change, reason):
    with pytest.raises(ValueError, match="exact1d") as info:
        Problem.from_dict({**BASE, **change})
    assert reason in str(info.value)


def test_auto_picks_exact1d_and_describes_itself():
    problem = Problem.from_dict({**BASE, "risk": {"backend": "auto"}})
    assert problem.backend_name == "exact1d" and isinstance(problem.backend, Exact1DRisk)
    assert problem.backend.describe()["compute_dtype"] == "float64"


def test_rejects_wrong_theta_shape():
    problem = Problem.from_dict(BASE)
    with pytest.raises(ValueError, match="theta has shape"):
        problem.risk_and_grad(np.zeros((2, problem.n_params + 1)))
