"""Every per-trajectory monitor of the loop (``max_risk_increase``, ``risk_min``, ``param_norm_max``,
``min_unit_norm``, ``n_dead_final``, ``balance_drift``) against a value known independently of it: a closed form,
or a plain-Python reference loop that redoes GD step by step and recomputes risks with ``Problem.risk``, norms,
unit norms, balances and dead units with numpy from the flat parameters. Each test is built so that the monitor's
value is attained mid-run (neither at the start nor at the end) or changes during the run, so a monitor that
reports 0, the initial value or the final value fails it.

Layout of a shallow 1D net's ``theta``: ``w (H), b (H), v (H), c`` (docs/tables.md, init).
"""

from __future__ import annotations

import numpy as np
import pytest

import reluflow
from reluflow import Architecture
from reluflow.dynamics import ConstantSchedule, GradientDescent, ScheduledStepSize, Stop, integrate

# no event may stop a run early: the reference loops run every step
NO_STOP = {"risk_tol": 0.0, "grad_tol": 0.0, "norm_bound": 1e12, "refine": False, "n_checkpoints": 3}

HAT = {
    "network": {"widths": [3]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0.0, 1.0, 0.0]},
    "risk": {"backend": "exact1d"},
}


def gd_method(values: list[float], counts: list[int]) -> dict:
    """A piecewise GD schedule: ``counts[i]`` steps of size ``values[i]``."""
    boundaries = list(np.cumsum(counts)[:-1].astype(int).tolist())
    return {"kind": "gd", "schedule": "piecewise", "boundaries": boundaries, "values": values,
            "n_steps": int(sum(counts)), **NO_STOP}


def step_sizes(values: list[float], counts: list[int]) -> list[float]:
    return [v for v, n in zip(values, counts, strict=True) for _ in range(n)]


def reference_gd(problem: reluflow.Problem, theta0: np.ndarray, gammas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Plain GD ``theta <- theta - gamma_n G(theta)``: every state ``(n + 1, T, P)`` and its risk ``(n + 1, T)``,
    the risk recomputed with ``Problem.risk``."""
    theta = np.array(theta0, dtype=float)
    states = [theta]
    for gamma in gammas:
        _, grad = problem.risk_and_grad(theta)
        theta = theta - gamma * grad
        states.append(theta)
    s = np.stack(states)
    return s, np.stack([problem.risk(x) for x in s])


def reference_monitors(states: np.ndarray, risks: np.ndarray, h: int, lo: float, hi: float) -> dict[str, np.ndarray]:
    """The monitors' definitions (docs/methods.md §3, Recording) evaluated on every state of a shallow 1D net."""
    w, b, v = states[..., :h], states[..., h:2 * h], states[..., 2 * h:3 * h]
    balance = v**2 - w**2 - b**2
    rel = (risks[1:] - risks[:-1]) / np.abs(risks[:-1])
    return {
        "risk_min": risks.min(axis=0),
        "param_norm_max": np.linalg.norm(states, axis=2).max(axis=0),
        "max_risk_increase": np.maximum(0.0, rel.max(axis=0)),
        "min_unit_norm": (np.abs(w) + np.abs(b)).min(axis=(0, 2)),
        "balance_drift": np.abs(balance - balance[0]).max(axis=(0, 2)),
        # a unit is dead when its pre-activation is <= 0 at both ends of the interval (affine in x)
        "n_dead_final": ((w[-1] * lo + b[-1] <= 0) & (w[-1] * hi + b[-1] <= 0)).sum(axis=1),
    }


# ---------------------------------------------------------------------------------------------- closed forms
# Two dead units (kink left of [0, 1] with w < 0, right of it with w > 0) have exactly zero gradient, so GD moves
# the output bias alone: on the constant target f = 1, L = (c - 1)^2, G_c = 2 (c - 1), and one step of size gamma
# multiplies c - 1 by (1 - 2 gamma). Everything is a closed form in c_n.
CONSTANT = {
    "network": {"widths": [2]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 1], "values": [1.0, 1.0]},
    "risk": {"backend": "exact1d"},
}
DEAD_UNITS = [-1.0, 1.0, -0.5, -2.0, 0.7, -0.3]  # w, b, v of two units dead on [0, 1]


def _bias_only(values: list[float], counts: list[int], c0: float = 2.0):
    theta0 = np.array([[*DEAD_UNITS, c0]])
    tr, *_ = reluflow.simulate(CONSTANT, method=gd_method(values, counts), n_trajectories=1, seed=0, theta0=theta0)
    c = [c0]
    for gamma in step_sizes(values, counts):
        c.append(1.0 + (1.0 - 2.0 * gamma) * (c[-1] - 1.0))
    c = np.array(c)
    return tr.iloc[0], c, (c - 1.0) ** 2, np.sqrt(np.sum(np.square(DEAD_UNITS)) + c**2)


def test_closed_form_units_are_frozen():
    problem = reluflow.Problem.from_dict(CONSTANT)
    theta = np.array([[*DEAD_UNITS, 3.0]])
    risk, grad = problem.risk_and_grad(theta)
    assert risk[0] == pytest.approx(4.0, rel=1e-14)
    np.testing.assert_array_equal(grad[0, :6], 0.0)
    assert grad[0, 6] == pytest.approx(4.0, rel=1e-14)
    assert problem.dead_neurons(theta).tolist() == [2]


def test_max_risk_increase_is_the_largest_step_up_mid_run():
    """Factors of c - 1 per step: 0.5 (L x 1/4), -1.5 (L x 2.25: +1.25), 0.5, -2 (L x 4: +3), 0.5 ...: the largest
    relative increase is 3, at the fourth update, neither the first nor the last increase."""
    row, _, risks, _ = _bias_only([0.25, 1.25, 0.25, 1.5, 0.25], [1, 1, 1, 1, 3])
    rel = np.diff(risks) / risks[:-1]
    np.testing.assert_allclose(rel, [-0.75, 1.25, -0.75, 3.0, -0.75, -0.75, -0.75])
    assert row["steps"] == 7 and row["status"] == "budget"
    assert row["max_risk_increase"] == pytest.approx(3.0, rel=1e-12)
    assert row["risk_final"] < row["risk_init"]  # the run as a whole went down: the increase is only mid-run


def test_max_risk_increase_is_zero_when_the_risk_only_falls():
    row, _, risks, _ = _bias_only([0.25], [6])
    assert np.all(np.diff(risks) < 0)
    assert row["max_risk_increase"] == 0.0


def test_risk_min_is_attained_mid_run_below_the_final_risk():
    """Three steps of 0.25 bring L from 1 to 1/64, two steps of 1.5 raise it to 1/4: risk_min = 1/64."""
    row, _, risks, _ = _bias_only([0.25, 1.5], [3, 2])
    np.testing.assert_allclose(risks, [1.0, 0.25, 1 / 16, 1 / 64, 1 / 16, 0.25])
    assert row["risk_min"] == pytest.approx(1 / 64, rel=1e-12)
    assert row["risk_final"] == pytest.approx(0.25, rel=1e-12)
    assert row["risk_init"] == pytest.approx(1.0, rel=1e-12)


def test_param_norm_max_peaks_mid_run():
    """Two steps of 1.5 take c from 2 to 5 (c - 1 x 4), six steps of 0.25 bring it back to 1 + 1/16: the norm
    peaks at the second update, above both the initial and the final norm."""
    row, c, _, norms = _bias_only([1.5, 0.25], [2, 6])
    assert c[2] == 5.0 and c[-1] == 1.0 + 1 / 16
    peak = np.sqrt(np.sum(np.square(DEAD_UNITS)) + 25.0)
    assert norms.max() == peak and norms[0] < peak and norms[-1] < peak
    assert row["param_norm_max"] == pytest.approx(peak, rel=1e-14)
    assert row["param_norm_init"] == pytest.approx(norms[0], rel=1e-14)
    assert row["param_norm_final"] == pytest.approx(norms[-1], rel=1e-14)


class _Pull:
    """``L = |theta - theta*|^2`` on a shallow 1D net's parameters (so the loop tracks the unit monitors): GD of
    size 1/4 halves the distance to ``theta*`` at every step, ``theta_n = theta* + 2^-n (theta_0 - theta*)``."""

    def __init__(self, target: np.ndarray) -> None:
        self.architecture = Architecture(input_dim=1, widths=(2,), output_dim=1)
        self.target = target

    def risk_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = theta - self.target
        return np.sum(d * d, axis=1), 2.0 * d


def test_min_unit_norm_and_balance_drift_are_attained_mid_run():
    """Unit 0's w goes 1, 0, -1/2, -3/4, ... (to -1) with b = 1/4 fixed: |w| + |b| is 5/4, 1/4, 3/4, 1, ..., so
    its minimum 1/4 is at step 1; unit 1 stays at |w| + |b| = 2. The balance B_0 = v^2 - w^2 - b^2 with v = 0 is
    -w^2 - 1/16: it moves by |1 - w_n^2| = 1, 3/4, 7/16, 15/64 after steps 1 to 4: the drift is 1, at step 1."""
    #                    w0   w1   b0    b1   v0   v1   c
    start = np.array([[1.0, 1.0, 0.25, 1.0, 0.0, 3.0, 0.0]])
    goal = np.array([-1.0, 1.0, 0.25, 1.0, 0.0, 3.0, 0.0])
    sol = integrate(_Pull(goal), GradientDescent(), start, stop=Stop(n_steps=4, risk_tol=0, grad_tol=0),
                    controller=ScheduledStepSize(ConstantSchedule(0.25)))
    assert sol.theta[0, 0] == -1.0 + 2.0**-4 * 2.0
    assert sol.min_unit_norm[0] == 0.25
    assert 0.25 < np.abs(sol.theta[0, 0]) + 0.25  # the end is above the minimum
    assert sol.balance_drift[0] == 1.0
    assert sol.param_norm_max[0] == pytest.approx(np.linalg.norm(start), rel=1e-15)  # |w_0| only shrinks


# ---------------------------------------------------------------------------------------------- reference loop
def test_all_monitors_equal_a_reference_gd_loop():
    """A hat target, 8 random starts, 10 small steps, one step of 12 (raises the risk and the norm of some rows,
    kills units in others), 30 small steps: every monitor in the table equals the reference loop's, and each is
    attained mid-run in at least one row (checked first, so the comparison cannot pass trivially)."""
    problem = reluflow.Problem.from_dict(HAT)
    theta0 = np.random.default_rng(4).standard_normal((8, problem.n_params))
    values, counts = [0.1, 12.0, 0.1], [10, 1, 30]
    tr, *_ = reluflow.simulate(HAT, method=gd_method(values, counts), n_trajectories=8, seed=0, theta0=theta0)
    states, risks = reference_gd(problem, theta0, step_sizes(values, counts))
    ref = reference_monitors(states, risks, 3, 0.0, 1.0)
    assert (tr["status"] == "budget").all() and (tr["steps"] == 41).all()

    # the reference's values are not the start's or the end's in some row
    norms = np.linalg.norm(states, axis=2)
    unit = (np.abs(states[..., :3]) + np.abs(states[..., 3:6])).min(axis=2)
    balance = states[..., 6:9] ** 2 - states[..., :3] ** 2 - states[..., 3:6] ** 2
    final_drift = np.abs(balance[-1] - balance[0]).max(axis=1)
    dead0 = ((theta0[:, 3:6] <= 0) & (theta0[:, :3] + theta0[:, 3:6] <= 0)).sum(axis=1)
    assert (ref["max_risk_increase"] > 1.0).any()
    assert (ref["risk_min"] < 0.9 * np.minimum(risks[0], risks[-1])).any()
    assert (ref["param_norm_max"] > 1.1 * np.maximum(norms[0], norms[-1])).any()
    assert (ref["min_unit_norm"] < 0.9 * np.minimum(unit[0], unit[-1])).any()
    assert (ref["balance_drift"] > 1.5 * final_drift).any()
    assert (ref["n_dead_final"] != dead0).any()

    for name in ("risk_min", "param_norm_max", "max_risk_increase", "min_unit_norm", "balance_drift"):
        np.testing.assert_allclose(tr[name].to_numpy(), ref[name], rtol=1e-10, atol=1e-14, err_msg=name)
    np.testing.assert_array_equal(tr["n_dead_final"].to_numpy(), ref["n_dead_final"])
    np.testing.assert_allclose(tr["risk_final"].to_numpy(), risks[-1], rtol=1e-12)
    np.testing.assert_allclose(tr["param_norm_final"].to_numpy(), norms[-1], rtol=1e-12)


def test_n_dead_final_counts_units_killed_during_the_run():
    """Target 0 on [0, 1]. Units 0 and 1 are dead from the start (kink left of the interval with w < 0, right of it
    with w > 0): their gradient is zero and they stay dead. Unit 2, relu(x - 1/2) with v = 1, is pushed down by
    one step of 4 (G_b = 1/4, G_w = 5/24, so b -> -3/2, w -> 1/6): dead afterwards. Unit 3 is active on the whole
    interval with v = 0 (G_w = G_b = 0) and stays alive. So n_dead goes from 2 to 3."""
    problem_dict = {**HAT, "network": {"widths": [4]},
                    "target": {"kind": "piecewise_affine", "knots": [0, 1], "values": [0.0, 0.0]}}
    problem = reluflow.Problem.from_dict(problem_dict)
    #           w: 0     1    2    3    b: 0     1     2     3    v: 0    1    2    3   c
    theta0 = np.array([[-1.0, 1.0, 1.0, 1.0, -0.5, -2.0, -0.5, 0.5, 0.7, -0.3, 1.0, 0.0, 0.0]])
    values, counts = [4.0, 0.05], [1, 5]
    tr, *_ = reluflow.simulate(problem_dict, method=gd_method(values, counts), n_trajectories=1, seed=0,
                              theta0=theta0)
    states, risks = reference_gd(problem, theta0, step_sizes(values, counts))
    w1, b1 = states[1, 0, :4], states[1, 0, 4:8]
    assert b1[2] == pytest.approx(-1.5, rel=1e-14) and w1[2] == pytest.approx(1 / 6, rel=1e-14)
    ref = reference_monitors(states, risks, 4, 0.0, 1.0)
    assert ref["n_dead_final"].tolist() == [3]
    assert problem.dead_neurons(theta0).tolist() == [2]  # at the start: the count differs from the end's
    assert tr["n_dead_final"].tolist() == [3]


def test_balance_drift_gd_is_order_step_gf_is_near_zero():
    """GD's drift equals the reference loop's; halving the step (same horizon t = n gamma) halves it, and GF with
    a fine adaptive solver keeps the balance to round-off (C10)."""
    problem = reluflow.Problem.from_dict(HAT)
    theta0 = np.random.default_rng(1).standard_normal((4, problem.n_params))
    drifts = {}
    for gamma, n in ((0.02, 50), (0.01, 100)):
        method = {"kind": "gd", "step_size": gamma, "n_steps": n, **NO_STOP}
        tr, *_ = reluflow.simulate(HAT, method=method, n_trajectories=4, seed=0, theta0=theta0)
        states, risks = reference_gd(problem, theta0, [gamma] * n)
        ref = reference_monitors(states, risks, 3, 0.0, 1.0)
        np.testing.assert_allclose(tr["balance_drift"].to_numpy(), ref["balance_drift"], rtol=1e-10)
        drifts[gamma] = tr["balance_drift"].to_numpy()
    assert np.all(drifts[0.02] > 1e-4)
    np.testing.assert_allclose(drifts[0.01] / drifts[0.02], 0.5, rtol=0.15)
    gf = {"kind": "gf", "solver": "dopri5", "t_end": 1.0, "rtol": 1e-11, "atol": 1e-13, **NO_STOP}
    tr_gf, *_ = reluflow.simulate(HAT, method=gf, n_trajectories=4, seed=0, theta0=theta0)
    assert (tr_gf["status"] == "budget").all()
    assert np.all(tr_gf["balance_drift"].to_numpy() < 1e-6 * drifts[0.02])
