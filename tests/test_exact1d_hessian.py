"""The closed-form ``exact1d`` Hessian (``risk/_hessian1d.py``) against central differences of ``G``.

The reference is ``reluflow.analysis.hessian(..., method="fd")``: Richardson-extrapolated central differences of
the backend's gradient, which is itself checked against ``scipy.integrate.quad_vec`` in ``test_exact1d.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow.analysis import hessian, hessian_spectrum, refine_critical_points
from test_analysis_toys import PL_GLOBAL_MIN, PL_TARGET, shallow_problem
from test_exact1d import PROBLEMS, make_problem


def generic_theta(problem, rng, n: int) -> np.ndarray:
    """``(n, P)`` rows whose kinks lie inside the interval (so that the kink terms are exercised), with
    residuals of order one; drawn away from the knots by construction of the random draw (measure zero)."""
    lo, hi = problem.backend.alpha, problem.backend.beta
    theta = rng.standard_normal((n, problem.n_params))
    arch = problem.architecture
    hidden = arch.layers[0]
    if hidden.bias is not None:
        w = theta[:, hidden.weight]
        kinks = rng.uniform(lo, hi, size=w.shape)
        theta[:, hidden.bias] = -w * kinks
    return theta


def relative_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row: ``max |a - b| / max |b|``."""
    return np.abs(a - b).max(axis=(1, 2)) / np.abs(b).max(axis=(1, 2))


# relative step of the reference: Richardson differences have an O(h^2) truncation error, which with small |w|
# (fast-moving kinks) reaches ~1e-7 at the default step cbrt(eps) ~ 6e-6; at 2e-6 it is below ~2e-7 on every
# case here, and round-off (~eps / h) stays near 1e-10
FD_STEP = 2e-6


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_matches_central_differences(name, rng):
    problem = make_problem(name)
    theta = generic_theta(problem, rng, 5)
    closed = problem.hessian(theta)
    fd = hessian(problem, theta, method="fd", fd_step=FD_STEP)
    assert closed.shape == fd.shape == (5, problem.n_params, problem.n_params)
    assert np.all(relative_error(closed, fd) < 1e-6), relative_error(closed, fd)
    np.testing.assert_array_equal(closed, np.swapaxes(closed, 1, 2))


@pytest.mark.parametrize("name", ["far_interval", "quad_density_pp_target", "fixed_output_k2"])
def test_difference_error_shrinks_at_second_order(name, rng):
    """The gap between differences and the closed form falls like h^2 (Richardson leaves the O(h^2) term):
    dividing the step by 4 divides it by ~16, so the closed form is the limit the differences converge to."""
    problem = make_problem(name)
    theta = generic_theta(problem, rng, 4)
    closed = problem.hessian(theta)
    steps = np.array([4e-4, 1e-4, 2.5e-5])
    errs = np.array([np.abs(hessian(problem, theta, method="fd", fd_step=s) - closed).max() for s in steps])
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert 1.7 < slope < 2.3, (errs, slope)


def test_kink_term_is_needed(rng):
    """Without the point mass at each kink the Hessian is wrong: the (w, b) diagonal blocks carry it."""
    problem = make_problem("uniform_pw_affine")
    theta = generic_theta(problem, rng, 3)
    closed = problem.hessian(theta)
    fd = hessian(problem, theta, method="fd", fd_step=FD_STEP)
    hidden = problem.architecture.layers[0]
    w_idx = np.arange(problem.n_params)[hidden.weight]
    # the kink term is r(t) v p(t) t^2 / |w|: of order one at these points
    gap = np.abs(closed[:, w_idx, w_idx] - fd[:, w_idx, w_idx]).max()
    assert gap < 1e-6 * np.abs(fd).max()
    from reluflow.risk import _hessian1d

    original = _hessian1d._kink_weight
    try:
        _hessian1d._kink_weight = lambda *args: np.zeros_like(args[2])
        without = problem.hessian(theta)
    finally:
        _hessian1d._kink_weight = original
    assert np.abs(without - fd).max() > 1e-3 * np.abs(fd).max()


def test_rows_are_batch_invariant_and_nonfinite_rows_isolated(rng):
    problem = make_problem("vector_k2")
    theta = generic_theta(problem, rng, 7)
    theta[3, 0] = np.nan
    batch = problem.hessian(theta)
    assert np.all(np.isnan(batch[3]))
    for i in (0, 1, 2, 4, 5, 6):
        np.testing.assert_array_equal(batch[i], problem.hessian(theta[i : i + 1])[0])


def test_large_batch_is_chunked_consistently(rng, monkeypatch):
    from reluflow.risk import _hessian1d

    problem = make_problem("quad_density_pp_target")
    theta = generic_theta(problem, rng, 9)
    whole = problem.hessian(theta)
    monkeypatch.setattr(_hessian1d, "PAIR_CHUNK_ELEMENTS", 2 * 36)  # two rows of (H = 6)^2 per chunk
    np.testing.assert_array_equal(problem.hessian(theta), whole)


def test_analysis_uses_the_closed_form_by_default(rng):
    problem = make_problem("uniform_pw_affine")
    theta = generic_theta(problem, rng, 2)
    np.testing.assert_array_equal(hessian(problem, theta), problem.hessian(theta))
    with pytest.raises(ValueError, match="method"):
        hessian(problem, theta, method="exact")


def test_zero_risk_point_with_kinks_on_knots():
    """At PL_GLOBAL_MIN every active kink sits on a target knot: G is C^1 but not C^2, the residual part is zero
    and the Hessian is the Gauss-Newton matrix; Richardson differences agree with it, and the spectrum is the
    one test_analysis_hessian derives by hand (rank P - 5)."""
    p = shallow_problem(3, PL_TARGET, "exact1d")
    closed = p.hessian(PL_GLOBAL_MIN)
    fd = hessian(p, PL_GLOBAL_MIN, method="fd")
    assert relative_error(closed, fd)[0] < 1e-8
    for method in ("auto", "fd"):
        s = hessian_spectrum(p, PL_GLOBAL_MIN, method=method)
        assert s["n_negative"][0] == 0 and s["hessian_rank"][0] == p.n_params - 5


def test_refinement_with_the_closed_form_matches_finite_differences(rng, monkeypatch):
    """Newton with the exact Jacobian reaches the critical sets that it reaches with the central-difference one.

    The critical points here are not isolated (rescalings), so the two runs stop at different points of the same
    critical set: compared are the risks there (constant on a connected critical set) and |G|. With the exact
    Jacobian every row converges to the tolerance; the differences stall above it on some rows.
    """
    from reluflow.analysis import _critical

    problem = make_problem("uniform_pw_affine")
    # near-critical points: a GD run from random starts, then refinement both ways
    theta = generic_theta(problem, rng, 6) * 0.5
    for _ in range(3000):
        theta -= 0.05 * problem.risk_and_grad(theta)[1]
    exact = refine_critical_points(problem, theta)
    fd_hessian = _critical.hessian
    monkeypatch.setattr(_critical, "hessian", lambda *a, **k: fd_hessian(*a, **k, method="fd"))
    by_fd = refine_critical_points(problem, theta)
    assert exact["converged"].all()
    assert np.all(exact["grad_norm"] < 1e-12)
    assert np.all(by_fd["grad_norm"] < 1e-10)
    np.testing.assert_allclose(problem.risk(exact["theta"]), problem.risk(by_fd["theta"]), rtol=1e-9, atol=1e-15)


def special_units(problem, rng) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose first five units are: on everywhere (w = 0, b > 0), on everywhere (kink left of the interval,
    w > 0), dead (kink right of it, w > 0), on everywhere (kink right, w < 0), dead (kink left, w < 0); the others
    generic. Returns ``(theta (3, P), dead (5,) bool)`` for those five units."""
    lo, hi = problem.backend.alpha, problem.backend.beta
    span = hi - lo
    theta = generic_theta(problem, rng, 3)
    hidden = problem.architecture.layers[0]
    w = theta[:, hidden.weight]
    b = theta[:, hidden.bias]
    w[:, 0], b[:, 0] = 0.0, 0.7
    for j, (sign, kink) in enumerate([(1, lo - 0.3 * span), (1, hi + 0.2 * span), (-1, hi + 0.4 * span),
                                      (-1, lo - 0.1 * span)], start=1):
        w[:, j] = sign * rng.uniform(0.5, 2.0, size=3)
        b[:, j] = -w[:, j] * kink
    return theta, np.array([False, False, True, False, True])


@pytest.mark.parametrize("name", ["uniform_pw_affine", "vector_k2", "quad_density_pp_target", "far_interval"])
def test_units_outside_the_interval_and_dead_units(name, rng):
    """Units on everywhere or dead (kinks outside the interval, w = 0) agree with differences, and a dead unit's
    rows are exactly zero (what the refinement's deflated eigendecomposition relies on)."""
    problem = make_problem(name)
    theta, dead = special_units(problem, rng)
    closed = problem.hessian(theta)
    fd = hessian(problem, theta, method="fd", fd_step=FD_STEP)
    assert np.all(relative_error(closed, fd) < 1e-6), relative_error(closed, fd)
    np.testing.assert_array_equal(problem.dead_neurons(theta), dead.sum())
    arch = problem.architecture
    (hidden, output) = arch.layers
    per_unit = [np.arange(arch.n_params)[sl] for sl in (hidden.weight, hidden.bias)]
    per_unit += [np.arange(arch.n_params)[output.weight].reshape(arch.output_dim, -1)[o]
                 for o in range(arch.output_dim)]
    for j in np.flatnonzero(dead):
        coords = [idx[j] for idx in per_unit]
        assert np.all(closed[:, coords, :] == 0.0) and np.all(closed[:, :, coords] == 0.0)
    live = [idx[j] for idx in per_unit for j in np.flatnonzero(~dead)]
    assert np.all(np.any(closed[:, live, :] != 0.0, axis=2))


def test_unit_dead_on_a_zero_density_piece_keeps_zero_rows():
    """A unit active only left of a knot where the density jumps from zero to positive is dead; its kink sits
    on the knot, where the density on its active side (zero) is the one used."""
    problem = make_problem("zero_density_piece")  # p = 0 on [0, 0.4), constant on [0.4, 1]
    theta = np.zeros((1, problem.n_params))
    hidden, output = problem.architecture.layers
    theta[0, hidden.weight] = [-1.0, 1.0, 2.0, -0.5, 1.5]
    theta[0, hidden.bias] = [0.4, -0.6, -1.0, 0.45, -0.9]  # unit 0: active on [0, 0.4)
    theta[0, output.weight] = [0.8, -0.6, 1.1, 0.3, -0.7]
    assert problem.dead_neurons(theta)[0] == 1
    closed = problem.hessian(theta)[0]
    unit0 = [hidden.weight.start, hidden.bias.start, output.weight.start]
    assert np.all(closed[unit0] == 0.0) and np.all(closed[:, unit0] == 0.0)


def test_wide_batch_is_row_independent(rng):
    """Width 37 with a cubic target (numpy's pairwise sums unroll at 8 and split at 128): rows alone and in a
    batch of 11 are bitwise the same."""
    import warnings

    from reluflow import Problem

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problem = Problem.from_dict({
            "network": {"input_dim": 1, "widths": [37], "output_dim": 2},
            "measure": {"kind": "uniform", "low": -1.0, "high": 2.0},
            "target": {"kind": "polynomial", "coefficients": [[0.1, -1.0, 0.5, 0.3], [0.0, 0.2, -0.4, 1.0]]},
            "risk": {"backend": "exact1d"}})
    theta = generic_theta(problem, rng, 11)
    batch = problem.hessian(theta)
    for i in (0, 5, 10):
        np.testing.assert_array_equal(batch[i], problem.hessian(theta[i : i + 1])[0])
