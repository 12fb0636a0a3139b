"""Stopping events fire at the right step on hand-built cases; one bad trajectory never changes another."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics import (
    ConstantSchedule,
    ConstantStepSize,
    Dopri5,
    Euler,
    GradientDescent,
    PIDController,
    Record,
    ScheduledStepSize,
    Stop,
    check_events,
    integrate,
)


class Quadratic1D:
    """``L = a theta^2 / 2`` per coordinate, ``G = a theta``: GD multiplies theta by ``1 - gamma a``."""

    def __init__(self, a: float = 1.0) -> None:
        self.a = a

    def risk_and_grad(self, theta):
        return 0.5 * self.a * (theta * theta).sum(axis=1), self.a * theta


class Hill:
    """``L = C - |theta|^2 / 2`` (positive while ``|theta| < sqrt(2C)``): GF runs away, ``theta(t) = e^t theta_0``."""

    def risk_and_grad(self, theta):
        return 1e6 - 0.5 * (theta * theta).sum(axis=1), -theta


def gd(problem, theta0, gamma, n_steps, **stop):
    return integrate(problem, GradientDescent(), np.asarray(theta0, dtype=float),
                     stop=Stop(n_steps=n_steps, **stop), controller=ScheduledStepSize(ConstantSchedule(gamma)),
                     record=Record(np.arange(n_steps + 1.0), on="step"))


def test_gd_diverges_at_the_right_step():
    # theta_n = (1 - 3)^n = (-2)^n: |theta_n| >= 1000 first at n = 10
    sol = gd(Quadratic1D(), [[1.0]], gamma=3.0, n_steps=100, norm_bound=1000.0)
    assert sol.status[0] == "diverged" and sol.steps[0] == 10
    assert sol.theta[0, 0] == 1024.0 and sol.param_norm_max[0] == 1024.0
    assert sol.curves["step"][-1] == 10 and sol.curves["param_norm"][-1] == 1024.0


def test_gf_diverges_at_the_right_step():
    # explicit Euler on theta' = theta: theta_n = 1.01^n, first >= 100 at n = ceil(log 100 / log 1.01)
    sol = integrate(Hill(), Euler(), np.array([[1.0]]), stop=Stop(t_end=1000.0, norm_bound=100.0),
                    controller=ConstantStepSize(0.01))
    theta, n = 1.0, 0
    while theta < 100.0:  # the same arithmetic as the solver
        theta, n = theta - 0.01 * (-theta), n + 1
    expected = n
    assert expected == math.ceil(math.log(100) / math.log(1.01))
    assert sol.status[0] == "diverged" and sol.steps[0] == expected
    assert sol.t[0] == pytest.approx(0.01 * expected)


def test_zero_risk_at_the_right_step():
    # gamma a = 1 sends theta to 0 in one step
    sol = gd(Quadratic1D(a=4.0), [[3.0, -1.0]], gamma=0.25, n_steps=50)
    assert sol.status[0] == "zero_risk" and sol.steps[0] == 1 and sol.risk[0] == 0.0
    # risk below risk_tol but not zero: the first step where a (1 - gamma a)^(2n) theta0^2 / 2 <= tol
    sol = gd(Quadratic1D(a=1.0), [[1.0]], gamma=0.5, n_steps=200, risk_tol=1e-6)
    n = next(k for k in range(200) if 0.5 * 0.25 ** k <= 1e-6)
    assert sol.status[0] == "zero_risk" and sol.steps[0] == n


def test_budget_and_critical():
    sol = gd(Quadratic1D(), [[1.0], [0.0]], gamma=0.1, n_steps=7)
    # theta = 0 has zero risk, which takes precedence over critical
    assert sol.status[1] == "zero_risk" and sol.steps[1] == 0
    assert sol.steps[0] == 7 and sol.t[0] == pytest.approx(0.7)
    # a critical point with positive risk: the gradient vanishes, the risk does not
    sol = integrate(Hill(), Euler(), np.zeros((1, 2)), stop=Stop(t_end=1.0), controller=ConstantStepSize(0.1))
    assert sol.status[0] == "critical" and sol.steps[0] == 0 and sol.t[0] == 0.0


def test_precedence():
    stop = Stop(risk_tol=1.0, grad_tol=1.0, norm_bound=10.0, t_end=1.0)
    finite = np.array([False, True, True, True, True, True])
    status = check_events(stop, finite,
                          risk=np.array([0.0, 0.5, 0.5, 2.0, 2.0, 2.0]),
                          grad_norm=np.array([0.0, 0.5, 0.5, 0.5, 2.0, 2.0]),
                          param_norm=np.array([20.0, 20.0, 1.0, 1.0, 1.0, 1.0]),
                          t=np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5]),
                          n=np.zeros(6, dtype=int), attempts=np.zeros(6, dtype=int))
    names = ["running", "nonfinite", "diverged", "zero_risk", "critical", "budget"]
    assert [names[s] for s in status] == ["nonfinite", "diverged", "zero_risk", "critical", "budget", "running"]


# ------------------------------------------------------------------------------------------ real problems
PROBLEM = {
    "network": {"widths": [4]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 0.4, 1], "values": [0.0, 1.0, 0.5]},
    "risk": {"backend": "quadrature", "n_points": 64},
}


def test_start_at_a_critical_point_with_every_unit_dead():
    problem = Problem.from_dict(PROBLEM)
    h = 4
    theta = np.zeros((1, problem.n_params))
    theta[0, :h] = [-1.0, -2.0, -0.5, -3.0]  # w x + b <= -b' < 0 on [0, 1]
    theta[0, h:2 * h] = [-0.1, -1.0, -0.2, 0.0]
    theta[0, 2 * h:3 * h] = [1.0, -2.0, 3.0, 0.5]
    be = problem.backend
    mean = float(np.sum(be.weights * be.target_values[:, 0]))
    theta[0, -1] = mean  # the best constant
    sol = integrate(problem, GradientDescent(), theta, stop=Stop(n_steps=100),
                    controller=ScheduledStepSize(ConstantSchedule(0.1)))
    assert sol.status[0] == "critical" and sol.steps[0] == 0 and sol.t[0] == 0.0
    assert problem.dead_neurons(theta)[0] == h
    assert np.array_equal(sol.theta, theta)
    variance = float(np.sum(be.weights * (be.target_values[:, 0] - mean) ** 2))
    assert sol.risk[0] == pytest.approx(variance, rel=1e-12)


def test_start_at_zero_risk():
    from reluflow.dynamics import global_min_center

    problem = Problem.from_dict(PROBLEM)
    theta = global_min_center(problem)[None]
    sol = integrate(problem, GradientDescent(), theta, stop=Stop(n_steps=10),
                    controller=ScheduledStepSize(ConstantSchedule(0.1)))
    assert sol.status[0] == "zero_risk" and sol.steps[0] == 0


def _same_row(a, b, i, j):
    for name in ("status", "theta", "risk", "grad_norm", "param_norm", "t", "steps", "n_rejected", "risk_init",
                 "param_norm_init", "risk_min", "param_norm_max", "max_risk_increase", "min_unit_norm",
                 "balance_drift"):
        x, y = getattr(a, name)[i], getattr(b, name)[j]
        assert np.array_equal(x, y, equal_nan=name != "status"), (name, x, y)
    ca = {k: v[a.curves["row"] == i] for k, v in a.curves.items() if k != "row"}
    cb = {k: v[b.curves["row"] == j] for k, v in b.curves.items() if k != "row"}
    for k in ca:
        assert np.array_equal(ca[k], cb[k]), k


@pytest.mark.parametrize("method", ["gd", "dopri5"])
def test_nan_in_one_trajectory_changes_no_other(rng, method):
    problem = Problem.from_dict(PROBLEM)
    theta = rng.standard_normal((7, problem.n_params))
    bad = theta.copy()
    bad[3, 5] = np.nan

    def run(t0):
        if method == "gd":
            return integrate(problem, GradientDescent(), t0, stop=Stop(n_steps=40),
                             controller=ScheduledStepSize(ConstantSchedule(0.05)),
                             record=Record(np.array([0.0, 1, 5, 20, 40]), on="step"))
        return integrate(problem, Dopri5(), t0, stop=Stop(t_end=2.0, max_steps=2000),
                         controller=PIDController(rtol=1e-6, atol=1e-9, dt0=0.01),
                         record=Record(np.array([0.0, 0.1, 1.0, 2.0])))

    with np.errstate(all="raise"):  # the loop must not leak a floating-point warning either
        clean, dirty = run(theta), run(bad)
    assert dirty.status[3] == "nonfinite" and dirty.steps[3] == 0
    assert np.isnan(dirty.risk[3])
    for i in (0, 1, 2, 4, 5, 6):
        _same_row(clean, dirty, i, i)


def test_overflow_mid_run_changes_no_other():
    """One row overflows to inf after a few GD steps (no norm bound): it stops as nonfinite, the others run on
    exactly as without it."""
    toy = Quadratic1D()
    theta = np.array([[1.0], [1e150], [-0.5]])
    with np.errstate(all="raise"):
        sol = gd(toy, theta, gamma=3.0, n_steps=30, norm_bound=np.inf)
        ref = gd(toy, theta[[0, 2]], gamma=3.0, n_steps=30, norm_bound=np.inf)
    # theta_n = 1e150 (-2)^n stays finite, but theta^2 in its risk overflows once 4^n > 1.8e8
    x, n = 1e150, 0
    with np.errstate(over="ignore"):
        while np.isfinite(x * x):  # as the toy computes it
            x, n = x - 3.0 * x, n + 1
    assert sol.status[1] == "nonfinite" and sol.steps[1] == n == 14
    assert np.isinf(sol.risk[1]) and np.isfinite(sol.theta[1, 0])
    _same_row(sol, ref, 0, 0)
    _same_row(sol, ref, 2, 1)


class Abs:
    """``L = sum |theta_i|``, ``G = sign(theta)``: the field jumps at 0, where GF slides (a Filippov sliding mode,
    as when a kink sits on a quadrature point). An adaptive solver chatters there until ``max_steps``."""

    def risk_and_grad(self, theta):
        return np.abs(theta).sum(axis=1), np.sign(theta)


def test_max_steps_stop_on_a_rejected_attempt_records_the_final_state():
    theta0 = np.array([[0.3], [-0.7]])
    ctrl = PIDController(rtol=1e-6, atol=1e-9, dt0=0.1)
    sol = integrate(Abs(), Dopri5(), theta0, stop=Stop(t_end=2.0, max_steps=7, risk_tol=0.0, grad_tol=0.0),
                    controller=ctrl, record=Record(np.array([0.0, 2.0])))
    assert np.all(sol.status == "budget") and np.all(sol.steps + sol.n_rejected == 7)
    assert np.all(sol.t < 2.0)
    for row in range(2):
        c = {k: v[sol.curves["row"] == row] for k, v in sol.curves.items()}
        assert c["step"].tolist() == [0, sol.steps[row]] and c["t"][-1] == sol.t[row]
    # the chatter never ends on its own: the budget of attempts does
    sol = integrate(Abs(), Dopri5(), theta0, stop=Stop(t_end=2.0, max_steps=3000, risk_tol=0.0, grad_tol=0.0),
                    controller=ctrl)
    assert np.all(sol.status == "budget") and np.all(sol.steps + sol.n_rejected == 3000)
    assert np.all(np.abs(sol.theta) < 1e-3)
