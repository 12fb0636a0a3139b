"""Per-unit monitors: unit norms (C8) and balances (C10) along GD and GF."""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Architecture, Problem
from reluflow.dynamics import (
    RK4,
    ConstantSchedule,
    ConstantStepSize,
    Euler,
    GradientDescent,
    ScheduledStepSize,
    Stop,
    integrate,
)
from reluflow.network._units import balance_defined, unit_balance, unit_norms


def test_unit_monitors_by_hand():
    arch = Architecture(input_dim=2, widths=(2,), output_dim=2)
    # w (2x2), b (2), v (2x2), c (2)
    theta = np.array([[3.0, 4.0, 0.0, -1.0, 2.0, -0.5, 1.0, 2.0, 0.0, 0.5, 9.0, 9.0]])
    np.testing.assert_allclose(unit_norms(arch, theta), [[5.0 + 2.0, 1.0 + 0.5]])
    # B_0 = (1 + 0) - 25 - 4, B_1 = (4 + 0.25) - 1 - 0.25 (v columns: (1, 0), (2, 0.5))
    np.testing.assert_allclose(unit_balance(arch, theta), [[1.0 - 29.0, 4.25 - 1.25]])


def test_unit_monitors_deep_nobias_fixed_output():
    arch = Architecture(input_dim=1, widths=(2, 3), bias=False, fixed_output=1.0)
    theta = np.arange(1.0, arch.n_params + 1)[None]  # W1 (2x1) = 1,2; W2 (3x2) = 3..8
    np.testing.assert_allclose(unit_norms(arch, theta), [[1.0, 2.0]])
    bal = unit_balance(arch, theta)
    assert bal.shape == (1, 5)
    # layer-1 units: outgoing = columns of W2 = (3, 5, 7), (4, 6, 8)
    np.testing.assert_allclose(bal[0, :2], [9 + 25 + 49 - 1, 16 + 36 + 64 - 4])
    assert np.all(np.isnan(bal[0, 2:]))  # the output layer is fixed: no balance law
    assert balance_defined(arch).tolist() == [True, True, False, False, False]


@pytest.mark.parametrize("arch", [
    Architecture(input_dim=3, widths=(4,), output_dim=2),
    Architecture(input_dim=3, widths=(4, 2), bias=False, fixed_output=1.0),
    Architecture(input_dim=5, widths=(6,), bias=False, fixed_output=1.0),
], ids=["bias", "deep-fixed", "shallow-fixed"])
def test_unit_norms_read_the_first_layer_alone_with_the_same_bits(arch, rng):
    """unit_norms reads the first layer's slice directly (no unflatten of every layer, once per step): the same bits
    as the norms of unflatten's first view."""
    theta = rng.normal(size=(7, arch.n_params))
    w, b = arch.unflatten(theta)[0]
    expected = np.sqrt(np.sum(w * w, axis=2)) + (np.abs(b) if b is not None else 0.0)
    assert np.array_equal(unit_norms(arch, theta), expected)


def test_a_schedule_at_many_steps_is_the_schedule_at_each():
    from reluflow.dynamics import PiecewiseSchedule, PowerSchedule

    n = np.array([0, 3, 3, 7, 0, 12, 1000])
    for schedule in (ConstantSchedule(0.05), PowerSchedule(0.1, 0.5), PiecewiseSchedule((2, 5), (0.1, 0.05, 0.01))):
        assert np.array_equal(schedule.at(n), np.array([schedule(int(k)) for k in n])), schedule
        h, t_next = ScheduledStepSize(schedule).propose(np.zeros(len(n)), n, np.ones(len(n)), np.inf)
        assert np.array_equal(h, schedule.at(n)) and np.array_equal(t_next, 1.0 + h)


PROBLEM = {
    "network": {"widths": [5]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 0.3, 0.7, 1], "values": [0.0, 1.0, -0.5, 0.2]},
    "risk": {"backend": "quadrature", "n_points": 128},
}


def test_one_gd_step_changes_the_balance_by_gamma_squared(rng):
    """B_j(theta - gamma G) - B_j(theta) = gamma^2 (|G_v|^2 - |G_w|^2 - G_b^2): the first-order term cancels
    because v_j G_{v_j} = w_j G_{w_j} + b_j G_{b_j} for the positively homogeneous ReLU."""
    problem = Problem.from_dict(PROBLEM)
    arch, h = problem.architecture, 5
    theta = rng.standard_normal((20, problem.n_params))
    gamma = 0.3
    _, g = problem.risk_and_grad(theta)
    sol = integrate(problem, GradientDescent(), theta, stop=Stop(n_steps=1, risk_tol=0, grad_tol=0),
                    controller=ScheduledStepSize(ConstantSchedule(gamma)))
    change = unit_balance(arch, sol.theta) - unit_balance(arch, theta)
    gw, gb, gv = g[:, :h], g[:, h:2 * h], g[:, 2 * h:3 * h]
    expected = gamma ** 2 * (gv ** 2 - gw ** 2 - gb ** 2)
    # round-off of B itself (|v|^2, |w|^2, b^2 ~ 1) bounds the comparison
    scale = np.abs(unit_balance(arch, theta)) + np.abs(theta[:, :h] ** 2) + 1.0
    assert np.max(np.abs(change - expected) / scale) < 1e-13
    assert np.max(np.abs(expected)) > 1e-3  # the identity is not vacuous
    # the loop's monitor reports the same drift
    np.testing.assert_allclose(sol.balance_drift, np.max(np.abs(change), axis=1), rtol=1e-12, atol=1e-15)


def test_balance_drift_along_gf_is_integrator_error(rng):
    """RK4 with a small step keeps the balance to the integrator's error; Euler/GD drifts O(dt) over a fixed
    horizon, and the drift halves with the step."""
    problem = Problem.from_dict(PROBLEM)
    theta = rng.standard_normal((8, problem.n_params))

    def drift(solver, dt):
        sol = integrate(problem, solver, theta, stop=Stop(t_end=1.0, risk_tol=0, grad_tol=0),
                        controller=ConstantStepSize(dt))
        assert np.all(sol.status == "budget")
        return sol.balance_drift

    rk4 = drift(RK4(), 1e-3)
    euler, euler_half = drift(Euler(), 1e-3), drift(Euler(), 5e-4)
    assert np.all(np.isfinite(rk4)) and np.all(rk4 < 1e-6)
    assert np.all(rk4 < 1e-3 * euler)
    np.testing.assert_allclose(euler_half / euler, 0.5, rtol=0.1)


def test_min_unit_norm_is_tracked_every_step(rng):
    # a unit passes close to w = b = 0 between checkpoints: the monitor sees it anyway
    problem = Problem.from_dict(PROBLEM)
    theta = rng.standard_normal((4, problem.n_params))
    sol = integrate(problem, GradientDescent(), theta, stop=Stop(n_steps=50),
                    controller=ScheduledStepSize(ConstantSchedule(0.05)))
    # replay the run and take the minimum over every step
    x, lowest = theta.copy(), unit_norms(problem.architecture, theta).min(axis=1)
    for _ in range(50):
        x = x - 0.05 * problem.risk_and_grad(x)[1]
        lowest = np.minimum(lowest, unit_norms(problem.architecture, x).min(axis=1))
    live = sol.status == "budget"
    assert live.all()
    np.testing.assert_array_equal(sol.min_unit_norm, lowest)


def test_monitors_are_nan_without_an_architecture():
    class Toy:
        def risk_and_grad(self, theta):
            return (theta * theta).sum(axis=1), 2 * theta

    sol = integrate(Toy(), GradientDescent(), np.ones((2, 3)), stop=Stop(n_steps=3),
                    controller=ScheduledStepSize(ConstantSchedule(0.1)))
    assert np.all(np.isnan(sol.min_unit_norm)) and np.all(np.isnan(sol.balance_drift))
    assert sol.risk_min[0] == pytest.approx(3 * 0.8 ** 6)
