"""The Rosenbrock solvers (``rodas3``, ``rodas4``): convergence order, their error estimates, L-stability, the
closed-form Hessian against central differences, accuracy against Dormand–Prince on ``exact1d``, and the C11
setting (one ReLU unit fitting ``f(x) = x`` on ``U[0, 1]``) integrated to ``t = 1e6`` within a step budget."""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics import (
    SOLVERS,
    ConstantStepSize,
    Dopri5,
    PIDController,
    Record,
    Rodas3,
    Rodas4,
    Stop,
    integrate,
    method_from_dict,
)
from reluflow.dynamics._solvers import _solve, fd_hessian

FREE = dict(risk_tol=0.0, grad_tol=0.0, norm_bound=np.inf)  # only the budget stops
C11 = {"network": {"input_dim": 1, "widths": [1]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
       "target": {"kind": "affine", "slope": 1.0, "intercept": 0.0}}
# the stopping rules and tolerances of workflow/studies/c11_rate_one.yaml
C11_STOP = dict(risk_tol=1e-30, grad_tol=0.0, norm_bound=1e8)
C11_TOL = dict(rtol=1e-10, atol=1e-13)


class QuarticFlow:
    """``L = |theta|^4 / 4``: ``G = |theta|^2 theta``, ``H = |theta|^2 I + 2 theta theta^T``; along a fixed direction
    ``|theta(t)|^2 = r0^2 / (1 + 2 r0^2 t)``. Nonlinear, so every order condition of a method is exercised (a
    linear flow checks only those of the stability function)."""

    has_hessian = True

    def risk_and_grad(self, theta):
        r2 = (theta * theta).sum(axis=1)
        return 0.25 * r2 * r2, r2[:, None] * theta

    def hessian(self, theta):
        r2 = (theta * theta).sum(axis=1)
        return r2[:, None, None] * np.eye(theta.shape[1]) + 2.0 * theta[:, :, None] * theta[:, None, :]

    @staticmethod
    def exact(theta0, t):
        r2 = (theta0 * theta0).sum(axis=1)
        return theta0 * np.sqrt(1.0 / (1.0 + 2.0 * r2 * t))[:, None]


class GradientOnly(QuarticFlow):
    """The same flow without its Hessian: a Rosenbrock solver falls back to central differences of ``G``."""

    has_hessian = False


class StiffLinear:
    """``L = 1/2 theta^T diag(lam) theta`` with eigenvalues from 1e-2 to 1e8."""

    has_hessian = True
    lam = np.array([1e-2, 1.0, 1e4, 1e8])

    def risk_and_grad(self, theta):
        g = theta * self.lam
        return 0.5 * (theta * g).sum(axis=1), g

    def hessian(self, theta):
        return np.broadcast_to(np.diag(self.lam), (theta.shape[0], 4, 4)).copy()


def _slope(x, y):
    return np.polyfit(np.log(x), np.log(y), 1)[0]


THETA0 = np.array([[1.0, 0.5, -0.3], [-0.2, 0.8, 0.4], [2.0, -1.0, 0.5]])


@pytest.mark.parametrize("solver", [Rodas3(), Rodas4()], ids=lambda s: s.name)
def test_fixed_step_order(solver):
    """Global error at ``t = 1`` against ``h``: the slope of log(error) is the method's order. Rodas4's error
    approaches ``h^4`` from above (local rates 4.5, 4.5, 4.4 here: a large ``h^5`` term), hence the asymmetric
    window, which still tells order 4 from 3 or 5."""
    flow, t_end = QuarticFlow(), 1.0
    exact = flow.exact(THETA0, t_end)
    n_steps = [32, 64, 128, 256]
    errs = []
    for n in n_steps:
        sol = integrate(flow, solver, THETA0, stop=Stop(t_end=t_end, max_steps=10**6, **FREE),
                        controller=ConstantStepSize(t_end / n))
        assert np.all(sol.steps == n) and np.all(sol.t == t_end)
        errs.append(np.max(np.abs(sol.theta - exact)))
    slope = _slope([t_end / n for n in n_steps], errs)
    assert solver.order - 0.3 < slope < solver.order + 0.5, (slope, errs)


@pytest.mark.parametrize("solver", [Rodas3(), Rodas4()], ids=lambda s: s.name)
def test_error_estimate_order(solver):
    """One step from the same point: the embedded estimate shrinks like ``h^(error_order + 1)`` (it is the local
    error of the lower-order solution), which is what the step-size controller assumes."""
    flow, theta = QuarticFlow(), THETA0[:1]
    s = solver.for_problem(flow)
    _, g = flow.risk_and_grad(theta)
    hs = np.array([0.0125, 0.00625, 0.003125, 0.0015625])
    est = []
    for h in hs:
        res = s.step(flow.risk_and_grad, np.zeros(1), theta, np.full(1, h), g, None)
        est.append(np.max(np.abs(res.error)))
    slope = _slope(hs, est)
    assert abs(slope - (solver.error_order + 1)) < 0.3, (slope, est)


@pytest.mark.parametrize("name", ["rodas3", "rodas4"])
def test_l_stable_on_a_stiff_linear_flow(name):
    """One step of length 1 on eigenvalues up to 1e8 (``h lam = 1e8``): the stiff modes are damped to nearly
    nothing and the slow one follows ``exp(-lam t)``; Dormand–Prince at the same step blows up."""
    flow, theta0 = StiffLinear(), np.ones((1, 4))
    sol = integrate(flow, SOLVERS[name](), theta0, stop=Stop(t_end=1.0, **FREE), controller=ConstantStepSize(1.0))
    assert np.all(np.abs(sol.theta[0, 2:]) < 1e-3), sol.theta
    assert sol.theta[0, 0] == pytest.approx(np.exp(-1e-2), rel=1e-6)
    explicit = integrate(flow, Dopri5(), theta0, stop=Stop(t_end=1.0, **FREE), controller=ConstantStepSize(1.0))
    assert not np.all(np.abs(explicit.theta) < 1.0)


def test_closed_form_hessian_where_the_problem_has_one():
    prob = Problem.from_dict(C11)
    assert prob.has_hessian
    solver = Rodas4().for_problem(prob)
    assert solver.hessian is not None
    assert Rodas4().for_problem(GradientOnly()).hessian is None  # central differences
    # the fallback agrees with the closed form (at a point where G is smooth: the kink -b/w = 0.4 inside (0, 1))
    theta = np.array([[1.0, -0.4, 0.7, 0.1], [-2.0, 1.5, 0.3, -0.2]])
    np.testing.assert_allclose(fd_hessian(prob.risk_and_grad, theta), prob.hessian(theta), rtol=1e-6, atol=1e-8)


def test_fd_fallback_keeps_the_order_of_accuracy():
    """Without a Hessian (central differences of G) the adaptive solver still meets its tolerance."""
    flow, t_end = GradientOnly(), 2.0
    exact = flow.exact(THETA0, t_end)
    sol = integrate(flow, Rodas4(), THETA0, stop=Stop(t_end=t_end, max_steps=10**5, **FREE),
                    controller=PIDController(rtol=1e-8, atol=1e-10, dt0=0.01))
    assert np.all(sol.status == "budget") and np.all(sol.t == t_end)
    assert np.max(np.abs(sol.theta - exact) / np.abs(exact)) < 1e-6


def test_singular_rows_give_nan_not_an_error():
    w = np.stack([np.eye(2), np.zeros((2, 2)), 2 * np.eye(2)])
    x = _solve(w, np.ones((3, 2)))
    np.testing.assert_array_equal(x[0], [1.0, 1.0])
    assert np.all(np.isnan(x[1]))
    np.testing.assert_array_equal(x[2], [0.5, 0.5])


def test_rows_are_independent_of_the_batch():
    prob = Problem.from_dict(C11)
    theta0 = np.random.default_rng(3).standard_normal((4, 4))
    ctrl = PIDController(rtol=1e-8, atol=1e-11, dt0=0.01)
    stop = Stop(t_end=20.0, max_steps=10**5, **C11_STOP)
    sol = integrate(prob, Rodas4(), theta0, stop=stop, controller=ctrl)
    for i in (0, 3):
        alone = integrate(prob, Rodas4(), theta0[i:i + 1], stop=stop, controller=ctrl)
        assert np.array_equal(alone.theta[0], sol.theta[i])
        assert alone.steps[0] == sol.steps[i] and alone.n_rejected[0] == sol.n_rejected[i]


@pytest.mark.parametrize("name", ["rodas3", "rodas4"])
def test_matches_dopri5_on_a_short_horizon(name):
    """The C11 problem (exact1d, closed-form Hessian) to ``t = 10`` at rtol 1e-8 against Dormand–Prince at
    rtol 1e-13: parameters agree to the tolerance, and the risk never increases along the way (energy identity
    ``dL/dt = -|G|^2``)."""
    prob = Problem.from_dict(C11)
    theta0 = np.random.default_rng(20261122).standard_normal((4, 4))
    stop = Stop(t_end=10.0, max_steps=10**6, **FREE)
    ref = integrate(prob, Dopri5(), theta0, stop=stop, controller=PIDController(rtol=1e-13, atol=1e-15, dt0=0.01))
    sol = integrate(prob, SOLVERS[name](), theta0, stop=stop,
                    controller=PIDController(rtol=1e-8, atol=1e-11, dt0=0.01))
    assert np.all(sol.status == "budget") and np.all(sol.t == 10.0)
    rel = np.abs(sol.theta - ref.theta) / np.maximum(np.abs(ref.theta), 1e-3)
    assert np.max(rel) < 1e-7, np.max(rel)
    assert np.max(np.abs(sol.risk - ref.risk)) < 1e-10
    assert np.max(sol.max_risk_increase) <= 1e-12


def test_method_dict_selects_the_rosenbrock_solvers():
    m = method_from_dict({"kind": "gf", "solver": "rodas4", "t_end": 1e6, "rtol": 1e-10, "atol": 1e-13})
    assert isinstance(m.make_solver(), Rodas4)
    assert isinstance(m.make_controller(), PIDController)
    assert m.rtol == 1e-10 and m.max_steps == 100_000


def test_c11_to_t_1e6_within_the_step_budget():
    """C11 (one unit, ``f(x) = x`` on ``U[0, 1]``, 32 standard-normal starts) to ``t = 1e6`` at the study's
    tolerances: every run ends at ``t = 1e6`` or on an event (the float floor of ``L``, ``G = 0`` exactly), within
    5000 attempts (accepted + rejected), with the risk never increasing beyond round-off, and ``(1 + t) L`` over the
    last decade at most its value over the decade before (the C11 prediction, above the verdict's floor 1e-9)."""
    prob = Problem.from_dict(C11)
    theta0 = np.random.default_rng(11).standard_normal((32, 4))
    t_end = 1e6
    grid = np.concatenate([[0.0], np.geomspace(1.0, t_end, 25)])
    sol = integrate(prob, Rodas4(), theta0, stop=Stop(t_end=t_end, max_steps=5000, **C11_STOP),
                    controller=PIDController(dt0=0.01, **C11_TOL), record=Record(grid))
    attempts = sol.steps + sol.n_rejected
    assert np.all(attempts <= 5000) and np.all(attempts < 5000), attempts  # max_steps never stopped a run
    assert set(sol.status) <= {"budget", "zero_risk", "critical"}, sol.status
    assert np.all(sol.t[sol.status == "budget"] == t_end)
    assert np.sum(sol.status == "budget") >= 4  # the polynomial tails go the whole way
    assert np.all(sol.grad_norm[sol.status == "critical"] == 0.0)
    assert np.max(sol.max_risk_increase) <= 1e-12
    c, judged = sol.curves, 0
    for row in np.flatnonzero(sol.status == "budget"):
        m = c["row"] == row
        t, ratio = c["t"][m], (1.0 + c["t"][m]) * c["risk"][m]
        last, before = ratio[t >= t_end / 10], ratio[(t >= t_end / 100) & (t < t_end / 10)]
        if before.max() > 1e-9:
            judged += 1
            assert last.max() <= before.max(), (row, last, before)
    assert judged >= 4
