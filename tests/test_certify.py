"""Certified critical points (``reluflow.analysis.certify_critical_points``, docs/analysis.md).

The exact fixtures: the zero-risk hat, the dead-unit minimum of an affine target, the three critical points of
f = x^2 with one unit (risks 4/3645, 1/180, 4/45, all local minima, the first global); a constructed saddle, a
saddle that the float classifier takes for a minimum, an isolated saddle found by refinement, and points that must
be refused (not critical, kink on the end of the interval, unsupported backend, non-finite).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import reluflow
from reluflow.analysis import (
    CERTIFY_COLUMNS,
    CERTIFY_REASONS,
    certify_critical_points,
    critical_class,
    hessian_spectrum,
)
from test_analysis_toys import PL_GLOBAL_MIN, PL_TARGET, theta_of
from test_exact1d import make_problem
from test_exact1d_hessian import generic_theta, special_units

flint = pytest.importorskip("flint")  # in the test extra; the module refuses with reason 'unavailable' without it

U01 = {"kind": "uniform", "low": 0.0, "high": 1.0}
HAT = {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}
X2 = {"kind": "polynomial", "coefficients": [0, 0, 1]}


def problem(width, target, backend="exact1d", **network):
    return reluflow.Problem.from_dict({"network": {"input_dim": 1, "widths": [width], **network}, "measure": U01,
                                       "target": target, "risk": {"backend": backend}})


def certify(p, theta, **kw):
    out = certify_critical_points(p, np.atleast_2d(theta), **kw)
    assert set(out) == set(CERTIFY_COLUMNS) and all(len(v) == len(np.atleast_2d(theta)) for v in out.values())
    assert set(out["certified_class"]) <= {"min", "saddle", "none"}
    assert set(out["certified_reason"]) <= set(CERTIFY_REASONS) | {""}
    return out


def contains(theta, exact, radius):
    """``max_i |theta_i - exact_i| <= radius`` in exact rational arithmetic."""
    return max(abs(Fraction(float(t)) - Fraction(e)) for t, e in zip(theta, exact, strict=True)) <= Fraction(radius)


def assert_min(out, i=0, radius=1e-12):
    assert out["certified_class"][i] == "min", out["certified_detail"][i]
    assert out["certified_reason"][i] == ""
    assert 0 <= out["certified_radius"][i] <= radius
    assert 0 < out["certified_eig_low"][i] <= out["certified_eig_high"][i]


# ------------------------------------------------------------------------------------------- the ball formulas
@pytest.mark.parametrize("name", ["uniform_pw_affine", "vector_k2", "quad_density_pp_target", "fixed_output_k2",
                                  "no_hidden_bias", "far_interval"])
def test_ball_gradient_and_hessian_match_the_float_closed_form(name, rng):
    """The ball-arithmetic G and H (kinked, dead and everywhere-active units) against the float backend."""
    from flint import arb, ctx

    from reluflow.analysis._certify import _Exact1D

    p = make_problem(name)
    theta = generic_theta(p, rng, 2)
    if p.architecture.layers[0].bias is not None:
        theta = np.concatenate([theta, special_units(p, rng)[0]])
    _, grad = p.risk_and_grad(theta)
    hess = p.hessian(theta)
    old, ctx.prec = ctx.prec, 192
    try:
        model = _Exact1D(p, arb)
        for i, row in enumerate(theta):
            point = [arb(float(x)) for x in row]
            w, b, _, _ = model.unpack(point)
            kinds, kinks = model.classify_units(w, b)
            g, h = model.grad_hess(point, kinds, kinks)
            gm = np.array([float(x.mid()) for x in g])
            hm = np.array([[float(x.mid()) for x in r] for r in h])
            assert np.abs(gm - grad[i]).max() <= 1e-12 * np.abs(grad[i]).max()
            assert np.abs(hm - hess[i]).max() <= 1e-12 * np.abs(hess[i]).max()
            assert all(x.rad() < 1e-40 for x in g)  # a point: the balls are (nearly) exact
    finally:
        ctx.prec = old


# --------------------------------------------------------------------------------------------- known minima
def test_zero_risk_hat_is_a_certified_minimum():
    """hat = 2x - 4 relu(x - 1/2) = 2 relu(x + 1/2) - 4 relu(x - 1/2) - 1 on [0, 1]: one unit active everywhere, one
    with its kink on the target's knot; and the same with two dead units added (width 4)."""
    p2 = problem(2, HAT)
    hat2 = theta_of(w=[1, 1], b=[0.5, -0.5], v=[2, -4], c=[-1])
    p4 = problem(4, HAT)
    hat4 = theta_of(w=[1, 1, -1, 2], b=[0.5, -0.5, -2, -3], v=[2, -4, 0.3, 1], c=[-1])
    for p, theta in ((p2, hat2), (p4, hat4)):
        assert p.risk(theta)[0] == 0
        out = certify(p, theta)
        assert_min(out)
        assert contains(theta[0], theta[0], out["certified_radius"][0])
        # the free coordinates: b, v of the kinked unit, v of the active one, c
        assert out["certified_n_free"][0] == 4
        # the Gauss-Newton matrix on {x + 1/2, 1, 1[x > 1/2], relu(x - 1/2)} has smallest eigenvalue ~6.8e-3
        assert 6.8e-3 < out["certified_eig_low"][0] <= out["certified_eig_high"][0] < 6.9e-3
    # a nearby point (what refinement would return): still certified, and the critical point is within the radius
    out = certify(p2, hat2 + 1e-9)
    assert_min(out, radius=1e-8)
    assert out["certified_radius"][0] >= 1e-9 * 0.5  # it is not the point itself


def test_dead_unit_minima_of_affine_targets():
    """Every unit dead, c = mean f (f = 2x: risk 1/3; docs/analysis.md): a non-strict local minimum whose Hessian is
    2 in c and 0 elsewhere; certified on the slice {c}. And the zero-risk point of PL_TARGET with a dead unit."""
    p = problem(3, {"kind": "affine", "slope": 2.0})
    theta = theta_of(w=[1.0, -1.0, 2.0], b=[-2.0, -0.5, -3.0], v=[0.4, -1.2, 0.9], c=[1.0])
    out = certify(p, theta)
    assert_min(out)
    assert out["certified_n_free"][0] == 1
    assert out["certified_eig_low"][0] <= 2 <= out["certified_eig_high"][0]
    assert out["certified_eig_high"][0] - out["certified_eig_low"][0] < 1e-12
    out = certify(problem(3, PL_TARGET), PL_GLOBAL_MIN)
    assert_min(out)
    assert out["certified_n_free"][0] == 5  # (b, v) of the two kinked units and c


@pytest.mark.parametrize("which, exact, risk", [
    # kink at 1/3: N = 1/27 + 4/3 relu(x - 1/3), the global minimum
    ("global", (1, Fraction(-1, 3), Fraction(4, 3), Fraction(1, 27)), Fraction(4, 3645)),
    # unit active on all of [0, 1]: N = x - 1/6, the best affine fit (a non-strict local minimum)
    ("affine", (1, Fraction(1, 2), 1, Fraction(-2, 3)), Fraction(1, 180)),
    # unit dead: N = 1/3 (a non-strict local minimum)
    ("dead", (1, -2, Fraction(1, 2), Fraction(1, 3)), Fraction(4, 45)),
])
def test_three_critical_points_of_x_squared_with_one_unit(which, exact, risk):
    p = problem(1, X2)
    theta = np.array([[float(x) for x in exact]])
    np.testing.assert_allclose(p.risk(theta), float(risk), rtol=1e-13)
    out = certify(p, theta)
    assert_min(out, radius=1e-15)
    # the slice holds w (and, for the affine fit, b; for the dead unit w, b, v) at theta's values, which are the
    # exact point's: the exact critical point lies in the certified box
    assert contains(theta[0], exact, out["certified_radius"][0])
    assert out["certified_n_free"][0] == {"global": 3, "affine": 2, "dead": 1}[which]


# ------------------------------------------------------------------------------------------------- saddles
def test_constructed_saddle_is_certified():
    """w = 0, v = 0, b > 0, c = mean f for f = 2x: exactly critical, one negative eigenvalue (docs/analysis.md)."""
    p = problem(1, {"kind": "affine", "slope": 2.0})
    out = certify(p, theta_of(w=[0.0], b=[0.5], v=[0.0], c=[1.0]))
    assert out["certified_class"][0] == "saddle" and out["certified_radius"][0] == 0
    lam = np.linalg.eigvalsh(np.array([[0, 0, -1 / 3, 0], [0, 0, 0, 0], [-1 / 3, 0, 0.5, 1], [0, 0, 1, 2]]))[0]
    assert out["certified_eig_low"][0] <= lam <= out["certified_eig_high"][0] < 0


def test_saddle_disguised_as_a_minimum_is_not_certified_a_minimum():
    """The same construction with f = 1e-8 x: the negative eigenvalue, about -1.5e-9, is below the float
    classifier's zero tolerance (1e-8 of the spectral radius), which therefore calls the point a local minimum. The
    certificate proves the negative curvature."""
    alpha = 1e-8
    p = problem(1, {"kind": "affine", "slope": alpha})
    theta = theta_of(w=[0.0], b=[0.5], v=[0.0], c=[alpha / 2])
    spectrum = hessian_spectrum(p, theta)
    assert spectrum["n_negative"][0] == 0 and spectrum["lambda_min"][0] < 0  # the disguise
    assert critical_class(p.risk(theta), spectrum["n_negative"], risk_tol=1e-20)[0] == "local_min"
    out = certify(p, theta)
    assert out["certified_class"][0] == "saddle"
    assert -2e-9 < out["certified_eig_high"][0] < -1e-9
    # slightly off the critical point the symmetry of the w = 0 unit cannot be quotiented: refused, never 'min'
    for delta in (1e-12, 1e-6):
        out = certify(p, theta + np.array([[0, 0, 0, delta]]))
        assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "symmetry"


def test_isolated_saddle_found_by_refinement():
    """f = x^2, two units, output weights fixed at 1 (no rescaling symmetry): a saddle at risk ~1.18e-3 found by
    refine_critical_points from a random start, certified by the Krawczyk test (not exactly critical)."""
    p = problem(2, X2, fixed_output=1.0)
    theta = np.array([[1.3556145957429926, -0.0367369781393452, -0.43235754268252147, 0.03614473418653483]])
    out = certify(p, theta)
    assert out["certified_class"][0] == "saddle", out["certified_detail"][0]
    assert 0 < out["certified_radius"][0] < 1e-13
    assert out["certified_eig_high"][0] < -1
    assert hessian_spectrum(p, theta)["n_negative"][0] == 1


# ----------------------------------------------------------------------------------------------- refusals
def test_a_point_that_is_not_critical_is_refused():
    p = problem(1, X2)
    theta = np.array([[1.0, -1 / 3, 4 / 3, 1 / 27 + 1e-3]])  # the global minimum, 1e-3 off in c
    out = certify(p, theta)
    assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "not_critical"
    # a stated box that cannot contain the critical point: Krawczyk fails, and G != 0 is proven on the box
    out = certify(p, theta, radius=1e-5)
    assert out["certified_reason"][0] == "not_critical" and "excluded" in out["certified_detail"][0]


def test_kink_on_the_end_of_the_interval_is_refused():
    """hat = 2 relu(x) - 4 relu(x - 1/2): zero risk, but the first kink sits on x = 0 where G is not
    differentiable."""
    p = problem(2, HAT)
    theta = theta_of(w=[1, 1], b=[0.0, -0.5], v=[2, -4], c=[0])
    assert p.risk(theta)[0] == 0
    out = certify(p, theta)
    assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "nonsmooth"


def test_redundant_units_are_refused_as_singular():
    """hat = 1 - 2 relu(1/2 - x) - 2 relu(x - 1/2): relu(x - 1/2) - relu(1/2 - x) = x - 1/2 adds a direction of
    zero-risk points that no known symmetry explains: the slice's Hessian is singular."""
    p = problem(2, HAT)
    out = certify(p, theta_of(w=[-1, 1], b=[0.5, -0.5], v=[-2, -2], c=[1]))
    assert out["certified_class"][0] == "none" and out["certified_reason"][0] == "singular"


def test_unsupported_backend_and_nonfinite_rows():
    p = problem(1, X2, backend="quadrature")
    out = certify(p, np.array([[1.0, -1 / 3, 4 / 3, 1 / 27]]))
    assert out["certified_reason"][0] == "unsupported_backend"
    p = problem(1, X2)
    out = certify(p, np.array([[np.nan, 0, 0, 0]]))
    assert out["certified_reason"][0] == "nonfinite"
    with pytest.raises(ValueError, match="shape"):
        certify_critical_points(p, np.zeros((1, 3)))


def test_rows_are_independent():
    p = problem(1, X2)
    rows = np.array([[1.0, -1 / 3, 4 / 3, 1 / 27], [1.0, 0.5, 1.0, -2 / 3], [np.inf, 0, 0, 0],
                     [1.0, -1 / 3, 4 / 3, 1 / 27 + 1e-3], [1.0, -2.0, 0.7, 1 / 3]])
    batch = certify(p, rows)
    for i in range(len(rows)):
        one = certify(p, rows[i:i + 1])
        for key in CERTIFY_COLUMNS:
            a, b = batch[key][i], one[key][0]
            assert a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)), key


def test_refined_endpoints_of_gradient_descent():
    """Refined GD endpoints for f = x^2 with one unit: every certified minimum has one of the three critical risks,
    and no row the float classifier calls a saddle is certified a minimum."""
    p = problem(1, X2)
    rng = np.random.default_rng(5)
    refined = reluflow.analysis.refine_critical_points(p, rng.standard_normal((24, 4)), max_iter=100)
    theta = refined["theta"][refined["converged"]]
    out = certify(p, theta)
    assert (out["certified_class"] == "min").sum() >= 5
    risks = p.risk(theta)[out["certified_class"] == "min"]
    known = np.array([4 / 3645, 1 / 180, 4 / 45])
    assert np.all(np.min(np.abs(risks[:, None] - known[None]) / known[None], axis=1) < 1e-12)
    assert not np.any((out["certified_class"] == "min") & (hessian_spectrum(p, theta)["n_negative"] > 0))
