"""Solvers and the integrate loop: convergence orders on closed-form flows, GD steps and GD rates.

Convergence-order tests in the style of diffrax's ``test_integrate.py``: integrate an ODE with a known solution
over a sweep of step sizes (or tolerances) and fit the slope of log(error).
"""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics import (
    RK4,
    ConstantSchedule,
    ConstantStepSize,
    Dopri5,
    Euler,
    GradientDescent,
    PIDController,
    Record,
    ScheduledStepSize,
    Stop,
    integrate,
)


class LinearFlow:
    """``L = 1/2 theta^T A theta`` so ``G = A theta`` and GF is ``theta(t) = exp(-A t) theta_0``.

    Only ``risk_and_grad``: the loop must accept any object with the contract. Row-wise sums, no BLAS, so rows
    never mix.
    """

    def __init__(self, a: np.ndarray) -> None:
        self.a = np.asarray(a, dtype=float)

    def risk_and_grad(self, theta):
        g = (theta[:, None, :] * self.a[None]).sum(axis=-1)
        return 0.5 * (theta * g).sum(axis=-1), g

    def exact(self, theta0: np.ndarray, t: float) -> np.ndarray:
        lam, q = np.linalg.eigh(self.a)
        return (q @ np.diag(np.exp(-lam * t)) @ q.T @ theta0.T).T


class QuarticFlow:
    """``L = |theta|^4 / 4``, ``G = |theta|^2 theta``: the speed depends on ``|theta|``, so trajectories in one batch
    need very different step sizes. ``|theta(t)|^2 = r0^2 / (1 + 2 r0^2 t)`` along a fixed direction."""

    def risk_and_grad(self, theta):
        r2 = (theta * theta).sum(axis=1)
        return 0.25 * r2 * r2, r2[:, None] * theta

    @staticmethod
    def exact(theta0: np.ndarray, t: float) -> np.ndarray:
        r2 = (theta0 * theta0).sum(axis=1)
        return theta0 * np.sqrt(1.0 / (1.0 + 2.0 * r2 * t))[:, None]


A = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
FREE = dict(risk_tol=0.0, grad_tol=0.0, norm_bound=np.inf)  # only the budget stops


def _theta0(rng, n=4, p=3):
    return rng.standard_normal((n, p))


def _gf(problem, solver, controller, theta0, t_end):
    return integrate(problem, solver, theta0, stop=Stop(t_end=t_end, max_steps=10**6, **FREE),
                     controller=controller)


def _slope(x, y):
    return np.polyfit(np.log(x), np.log(y), 1)[0]


@pytest.mark.parametrize(("solver", "order", "n_steps"), [
    (Euler(), 1, [40, 80, 160, 320, 640]),
    (RK4(), 4, [8, 16, 32, 64, 128]),
])
def test_fixed_step_order(rng, solver, order, n_steps):
    flow, theta0, t_end = LinearFlow(A), _theta0(rng), 2.0
    exact = flow.exact(theta0, t_end)
    dts, errs = [], []
    for n in n_steps:
        sol = _gf(flow, solver, ConstantStepSize(t_end / n), theta0, t_end)
        assert np.all(sol.status == "budget") and np.all(sol.steps == n) and np.all(sol.t == t_end)
        dts.append(t_end / n)
        errs.append(np.max(np.abs(sol.theta - exact)))
    assert abs(_slope(dts, errs) - order) < 0.3, (dts, errs)


def test_dopri5_meets_tolerance(rng):
    flow, theta0, t_end = LinearFlow(A), _theta0(rng), 2.0
    exact = flow.exact(theta0, t_end)
    rtols = [1e-3, 1e-5, 1e-7, 1e-9]
    errs = []
    for rtol in rtols:
        sol = _gf(flow, Dopri5(), PIDController(rtol=rtol, atol=rtol * 1e-3, dt0=0.1), theta0, t_end)
        assert np.all(sol.status == "budget") and np.all(sol.t == t_end)
        errs.append(np.max(np.abs(sol.theta - exact) / np.maximum(np.abs(exact), 1e-3)))
    errs = np.array(errs)
    assert np.all(errs <= 10 * np.array(rtols)), errs
    # tighter tolerances buy proportionally smaller errors (global error ~ tol)
    assert _slope(rtols, errs) > 0.7


def test_dopri5_per_trajectory_steps(rng):
    """Fast and slow rows in one batch: each takes its own step sizes, and each row's result is the same bits
    as when it runs alone."""
    flow, t_end = QuarticFlow(), 1.0
    theta0 = np.array([[0.1, 0.0], [0.0, 0.3], [3.0, 4.0], [-10.0, 2.0]])
    ctrl = PIDController(rtol=1e-8, atol=1e-10, dt0=0.01)
    sol = _gf(flow, Dopri5(), ctrl, theta0, t_end)
    exact = flow.exact(theta0, t_end)
    assert np.all(sol.status == "budget")
    assert np.max(np.abs(sol.theta - exact) / np.abs(exact).max(axis=1, keepdims=True)) < 1e-6
    assert sol.steps[3] > 3 * sol.steps[0]  # the fast row needed many more steps
    assert sol.n_rejected.sum() > 0
    for i in range(len(theta0)):
        alone = _gf(flow, Dopri5(), ctrl, theta0[i:i + 1], t_end)
        assert np.array_equal(alone.theta[0], sol.theta[i])
        assert alone.steps[0] == sol.steps[i] and alone.n_rejected[0] == sol.n_rejected[i]


def test_dopri5_max_steps_counts_attempts(rng):
    flow = LinearFlow(A)
    sol = integrate(flow, Dopri5(), _theta0(rng), stop=Stop(t_end=100.0, max_steps=5, **FREE),
                    controller=PIDController(rtol=1e-10, atol=1e-12, dt0=10.0), record=Record(np.array([0, 100.0])))
    assert np.all(sol.status == "budget")
    assert np.all(sol.steps + sol.n_rejected == 5) and np.all(sol.n_rejected > 0)
    assert np.all(sol.t < 100.0)
    # the final state is recorded even though the run stopped on a rejected attempt, between checkpoints
    for row in range(len(sol.t)):
        c = {k: v[sol.curves["row"] == row] for k, v in sol.curves.items()}
        assert c["step"][0] == 0 and c["step"][-1] == sol.steps[row] > 0
        assert c["t"][-1] == sol.t[row] and c["risk"][-1] == sol.risk[row]


def test_adaptive_needs_error_estimate(rng):
    with pytest.raises(ValueError, match="no error estimate"):
        integrate(LinearFlow(A), RK4(), _theta0(rng), stop=Stop(t_end=1.0),
                  controller=PIDController(rtol=1e-6, atol=1e-9, dt0=0.1))


def test_fixed_step_lands_on_t_end(rng):
    # t_end is not a multiple of dt: the last step is shortened
    sol = _gf(LinearFlow(A), Euler(), ConstantStepSize(0.3), _theta0(rng), 1.0)
    assert np.all(sol.steps == 4) and np.all(sol.t == 1.0)


# ------------------------------------------------------------------------------------------------- GD
SHALLOW = {
    "network": {"widths": [3]},
    "measure": {"kind": "uniform", "low": -1.0, "high": 2.0},
    "target": {"kind": "piecewise_affine", "knots": [-1, 0, 1, 2], "values": [1, 0, 2, 1]},
    "risk": {"backend": "quadrature", "n_points": 128},
}


def _hand_gradient(problem: Problem, theta: np.ndarray) -> np.ndarray:
    """SCIENCE.md §3 for one shallow 1D net, written out from the measure's own quadrature rule."""
    x, wq = problem.measure.quadrature(128)
    x = np.asarray(x, dtype=float).reshape(-1)
    f = problem.target(x[:, None])[:, 0]
    h = problem.architecture.widths[0]
    w, b, v, c = theta[:h], theta[h:2 * h], theta[2 * h:3 * h], theta[3 * h]
    z = np.outer(x, w) + b  # (M, H)
    r = np.maximum(z, 0.0) @ v + c - f
    active = (z > 0).astype(float)
    g_w = 2 * (wq * x * r) @ active * v
    g_b = 2 * (wq * r) @ active * v
    g_v = 2 * (wq * r) @ np.maximum(z, 0.0)
    g_c = 2 * np.sum(wq * r)
    return np.concatenate([g_w, g_b, g_v, [g_c]])


def test_one_gd_step_is_the_hand_computed_update(rng):
    problem = Problem.from_dict(SHALLOW)
    theta0 = rng.standard_normal((5, problem.n_params))
    gamma = 0.05
    sol = integrate(problem, GradientDescent(), theta0, stop=Stop(n_steps=1, **FREE),
                    controller=ScheduledStepSize(ConstantSchedule(gamma)))
    assert np.all(sol.status == "budget") and np.all(sol.steps == 1) and np.all(sol.t == gamma)
    for i in range(len(theta0)):
        expected = theta0[i] - gamma * _hand_gradient(problem, theta0[i])
        np.testing.assert_allclose(sol.theta[i], expected, rtol=1e-12, atol=1e-13)


class OutputLayerOnly:
    """The risk of ``SHALLOW`` as a function of the output layer ``(v, c)`` alone, the hidden layer held fixed:
    a convex quadratic with Hessian ``2 Phi^T diag(omega) Phi`` (features ``Phi = [relu(w x + b), 1]``)."""

    def __init__(self, problem: Problem, hidden: np.ndarray) -> None:
        self.problem, self.hidden = problem, hidden
        self.h = problem.architecture.widths[0]

    def full(self, phi):
        return np.concatenate([np.broadcast_to(self.hidden, (len(phi), 2 * self.h)), phi], axis=1)

    def risk_and_grad(self, phi):
        risk, grad = self.problem.risk_and_grad(self.full(phi))
        return risk, grad[:, 2 * self.h:]


def test_gd_linear_rate_on_a_convex_problem():
    problem = Problem.from_dict(SHALLOW)
    hidden = np.array([1.0, 1.0, -1.0, 0.0, -0.5, 1.5])  # kinks at 0, 0.5, 1.5 (w = 1, 1, -1)
    toy = OutputLayerOnly(problem, hidden)
    be = problem.backend
    z = be.points[:, 0, None] * hidden[:3] + hidden[3:]
    phi = np.concatenate([np.maximum(z, 0.0), np.ones((len(z), 1))], axis=1)
    hess = 2 * phi.T @ (be.weights[:, None] * phi)
    lam = np.linalg.eigvalsh(hess)
    gamma = 1.0 / lam[-1]
    # the minimum risk from the normal equations
    coef = np.linalg.solve(hess / 2, phi.T @ (be.weights * be.target_values[:, 0]))
    l_star = toy.risk_and_grad(coef[None])[0][0]
    n_steps = 1500
    sol = integrate(toy, GradientDescent(), np.zeros((1, 4)), stop=Stop(n_steps=n_steps, **FREE),
                    controller=ScheduledStepSize(ConstantSchedule(gamma)),
                    record=Record(np.arange(n_steps + 1.0), on="step"))
    c = sol.curves
    assert np.array_equal(c["step"], np.arange(n_steps + 1))
    gap = c["risk"] - l_star
    tail = slice(800, 1500)  # the faster modes have died out (by e^-15); the gap is far above round-off
    assert np.all(gap[tail] > 1e-10)
    rate = np.polyfit(c["step"][tail], np.log(gap[tail]), 1)[0]
    # the slowest mode contracts like (1 - gamma lambda_min)^n, the risk gap like its square
    expected = 2 * np.log(1 - gamma * lam[0])
    assert rate == pytest.approx(expected, rel=0.02)
