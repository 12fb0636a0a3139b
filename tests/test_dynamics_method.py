"""The method and init dicts (validation, defaults), schedules and initializations."""

from __future__ import annotations

import numpy as np
import pytest

from reluflow import Problem
from reluflow._keys import init_key, trajectory_rng
from reluflow.dynamics import (
    ConstantStepSize,
    Dopri5,
    GradientDescent,
    PIDController,
    PiecewiseSchedule,
    PowerSchedule,
    ScheduledStepSize,
    global_min_center,
    init_from_dict,
    initialize,
    integrate,
    method_from_dict,
)


# ------------------------------------------------------------------------------------------------ method
def test_method_defaults():
    gd = method_from_dict({"kind": "gd"})
    assert gd.to_dict() == {"kind": "gd", "risk_tol": 1e-12, "grad_tol": 1e-10, "norm_bound": 1e8,
                            "n_checkpoints": 50, "refine": "auto", "step_size": 0.01, "schedule": "constant",
                            "n_steps": 1000}
    gf = method_from_dict({"kind": "gf"})
    assert gf.to_dict() == {"kind": "gf", "risk_tol": 1e-12, "grad_tol": 1e-10, "norm_bound": 1e8,
                            "n_checkpoints": 50, "refine": "auto", "solver": "dopri5", "t_end": 100.0, "dt": 0.01,
                            "rtol": 1e-6, "atol": 1e-9, "max_steps": 100000}
    rk4 = method_from_dict({"kind": "gf", "solver": "rk4", "dt": 0.1, "t_end": 1})
    assert "rtol" not in rk4.to_dict() and rk4.max_steps is None
    assert isinstance(rk4.make_controller(), ConstantStepSize)
    assert isinstance(gf.make_controller(), PIDController) and isinstance(gf.make_solver(), Dopri5)
    assert isinstance(gd.make_controller(), ScheduledStepSize) and isinstance(gd.make_solver(), GradientDescent)
    assert gd.refine_enabled(500) and not gd.refine_enabled(501)
    assert method_from_dict({"kind": "gd", "refine": False}).refine_enabled(3) is False
    assert method_from_dict({"kind": "gd", "n_steps": 1e3}).n_steps == 1000  # integral floats are integers
    # certified early stopping: off by default and then absent from the normalized dict (existing methods keep
    # their form); on, with its two defaults
    assert method_from_dict({"kind": "gd", "certified_stop": False}).to_dict() == gd.to_dict()
    on = method_from_dict({"kind": "gd", "certified_stop": True, "step_size": 0.05})
    assert (on.certified_stop, on.certify_every, on.certify_below, on.certified_step()) == (True, 1000, 1e-4, 0.05)
    assert method_from_dict({"kind": "gf", "certified_stop": True}).certified_step() is None


@pytest.mark.parametrize(("d", "key"), [
    ({"kind": "sgd"}, "kind"),
    ({"kind": "gd", "stepsize": 0.1}, "stepsize"),
    ({"kind": "gd", "solver": "rk4"}, "solver"),
    ({"kind": "gf", "step_size": 0.1}, "step_size"),
    ({"kind": "gd", "step_size": -0.1}, "step_size"),
    ({"kind": "gd", "step_size": True}, "step_size"),
    ({"kind": "gd", "schedule": "cosine"}, "schedule"),
    ({"kind": "gd", "decay": 0.5}, "decay"),
    ({"kind": "gd", "schedule": "piecewise", "boundaries": [10], "values": [0.1]}, "values"),
    ({"kind": "gd", "schedule": "piecewise", "boundaries": [10, 5], "values": [0.1, 0.1, 0.1]}, "boundaries"),
    ({"kind": "gd", "schedule": "piecewise", "boundaries": [10], "values": [0.1, 0.0]}, "values[1]"),
    ({"kind": "gd", "schedule": "piecewise", "boundaries": [10], "values": [0.1, 0.01], "step_size": 0.1},
     "step_size"),
    ({"kind": "gd", "schedule": "piecewise", "values": [0.1]}, "boundaries"),
    ({"kind": "gd", "n_steps": 2.5}, "n_steps"),
    ({"kind": "gd", "n_steps": 0}, "n_steps"),
    ({"kind": "gf", "solver": "rk45"}, "solver"),
    ({"kind": "gf", "solver": "euler", "rtol": 1e-3}, "rtol"),
    ({"kind": "gf", "t_end": float("inf")}, "t_end"),
    ({"kind": "gf", "dt": 0}, "dt"),
    ({"kind": "gf", "max_steps": -3}, "max_steps"),
    ({"kind": "gf", "risk_tol": -1.0}, "risk_tol"),
    ({"kind": "gf", "grad_tol": "small"}, "grad_tol"),
    ({"kind": "gf", "norm_bound": float("nan")}, "norm_bound"),
    ({"kind": "gf", "n_checkpoints": 1}, "n_checkpoints"),
    ({"kind": "gf", "refine": "yes"}, "refine"),
    ({"kind": "gf", "refine": 1}, "refine"),
    ({"kind": "gd", "certified_stop": "yes"}, "certified_stop"),
    ({"kind": "gd", "certify_every": 100}, "certify_every"),
    ({"kind": "gd", "certified_stop": False, "certify_below": 1e-3}, "certify_below"),
    ({"kind": "gd", "certified_stop": True, "schedule": "power"}, "certified_stop"),
    ({"kind": "gd", "certified_stop": True, "certify_every": 0}, "certify_every"),
    ({"kind": "gf", "certified_stop": True, "certify_below": 0}, "certify_below"),
])
def test_method_errors_name_the_key(d, key):
    with pytest.raises(ValueError, match=rf"method.*{key.replace('[', '.').replace(']', '.')}") as exc:
        method_from_dict(d)
    assert "expected" in str(exc.value) or "allowed" in str(exc.value) or "missing" in str(exc.value)


def test_method_error_message_shows_the_value():
    with pytest.raises(ValueError, match=r"method.step_size = -0.1 is not allowed: expected a number > 0"):
        method_from_dict({"kind": "gd", "step_size": -0.1})


def test_schedules():
    p = PowerSchedule(0.5, 0.5)
    assert [p(n) for n in range(4)] == pytest.approx([0.5, 0.5 / np.sqrt(2), 0.5 / np.sqrt(3), 0.25], rel=1e-15)
    pw = PiecewiseSchedule((2, 5), (0.3, 0.2, 0.1))
    assert [pw(n) for n in range(7)] == [0.3, 0.3, 0.2, 0.2, 0.2, 0.1, 0.1]


class Zero:
    """A risk with ``G = 1`` everywhere, so that GD moves theta by exactly ``-gamma_n``."""

    def risk_and_grad(self, theta):
        return np.ones(len(theta)), np.ones_like(theta)


@pytest.mark.parametrize("method", [
    {"kind": "gd", "schedule": "power", "step_size": 0.5, "decay": 0.6, "n_steps": 9},
    {"kind": "gd", "schedule": "piecewise", "boundaries": [3, 6], "values": [0.25, 0.125, 0.0625], "n_steps": 9},
])
def test_gd_schedule_in_the_loop(method):
    m = method_from_dict(method)
    sched = m.schedule_fn()
    sol = integrate(Zero(), m.make_solver(), np.zeros((2, 1)), stop=m.make_stop(), controller=m.make_controller())
    gammas = [sched(n) for n in range(9)]
    assert np.all(sol.steps == 9)
    assert sol.t[0] == sol.t[1] == sum(gammas)  # the GD clock is the sum of the step sizes taken
    theta = 0.0
    for g in gammas:
        theta = theta - g * 1.0
    assert np.all(sol.theta == theta)


# ------------------------------------------------------------------------------------------------- init
PROBLEM = {
    "network": {"widths": [6]},
    "measure": {"kind": "uniform", "low": -1.0, "high": 2.0},
    "target": {"kind": "piecewise_affine", "knots": [-1, 0, 0.5, 2], "values": [1.0, -1.0, 0.5, 0.0]},
    "risk": {"backend": "quadrature", "n_points": 256},
}


def test_init_defaults_and_errors():
    assert init_from_dict(None) == {"kind": "normal", "sigma": 1.0}
    assert init_from_dict({"kind": "scaled_normal"}) == {"kind": "scaled_normal", "sigma": "fan_in",
                                                         "bias_sigma": "same"}
    assert init_from_dict({"kind": "uniform"}) == {"kind": "uniform", "low": -1.0, "high": 1.0}
    assert init_from_dict({"kind": "perturbed", "epsilon": 0.1}) == {"kind": "perturbed", "epsilon": 0.1,
                                                                   "center": "global_min"}
    for bad, key in [({"kind": "xavier"}, "kind"), ({"kind": "normal", "sigma": 0}, "sigma"),
                     ({"kind": "normal", "scale": 1}, "scale"), ({"kind": "uniform", "low": 1, "high": 0}, "low"),
                     ({"kind": "scaled_normal", "sigma": "fan_out"}, "sigma"),
                     ({"kind": "scaled_normal", "bias_sigma": -1}, "bias_sigma"),
                     ({"kind": "perturbed", "epsilon": -1}, "epsilon"), ({"kind": "perturbed"}, "epsilon"),
                     ({"kind": "perturbed", "epsilon": 1, "center": "origin"}, "center")]:
        with pytest.raises(ValueError, match=rf"init.*{key}"):
            init_from_dict(bad)


def test_initialize_rows_are_their_own():
    problem = Problem.from_dict(PROBLEM)
    seed = 7
    for init in ({"kind": "normal", "sigma": 2.0}, {"kind": "scaled_normal"}, {"kind": "uniform", "low": 0.5},
                 {"kind": "perturbed", "epsilon": 0.01}):
        batch = initialize(problem, init, np.arange(10), seed)
        for i in (0, 4, 9):
            alone = initialize(problem, init, [i], seed)
            assert np.array_equal(alone[0], batch[i])
        shuffled = initialize(problem, init, [9, 4, 0], seed)
        assert np.array_equal(shuffled, batch[[9, 4, 0]])
    # the seeds' default: iid standard normals straight from trajectory_rng, keyed by the init and the layout
    theta = initialize(problem, None, [3], seed)
    key = init_key({"kind": "normal", "sigma": 1.0}, problem.architecture.layout())
    assert np.array_equal(theta[0], trajectory_rng(3, key, seed).standard_normal(problem.n_params))
    assert not np.array_equal(initialize(problem, None, [3], seed + 1), theta)
    # defaults written out or not: the same init, the same points
    assert np.array_equal(initialize(problem, {"kind": "normal"}, [3], seed), theta)


def test_initialization_depends_on_init_and_layout_only():
    """Common random numbers: the rest of the problem (activation, target, measure, risk backend) never changes
    an initialization; the layout (widths, biases, a fixed output layer) and the init spec do."""
    problem = Problem.from_dict(PROBLEM)
    theta = initialize(problem, None, np.arange(5), 3)
    same_layout = [
        {**PROBLEM, "network": {**PROBLEM["network"], "activation": "tanh"}},
        {**PROBLEM, "target": {"kind": "affine", "slope": 2.0, "intercept": 0.0}},
        {**PROBLEM, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0}},
    ]
    for spec in same_layout:
        assert np.array_equal(initialize(Problem.from_dict(spec), None, np.arange(5), 3), theta), spec
    other_layout = Problem.from_dict({**PROBLEM, "network": {**PROBLEM["network"], "bias": [False, True]}})
    assert other_layout.n_params < problem.n_params
    assert not np.array_equal(initialize(other_layout, None, np.arange(5), 3)[:, :4], theta[:, :4])
    assert not np.array_equal(initialize(problem, {"kind": "normal", "sigma": 2.0}, np.arange(5), 3), 2 * theta)


def test_initialize_distributions():
    problem = Problem.from_dict({**PROBLEM, "network": {"widths": [16, 9]}})
    arch = problem.architecture
    theta = initialize(problem, {"kind": "scaled_normal", "sigma": "fan_in"}, np.arange(400), 2)
    views = arch.unflatten(theta)
    for (w, b), n_in in zip(views, (1, 16, 9), strict=True):
        assert np.std(w) == pytest.approx(1 / np.sqrt(n_in), rel=0.1)
        assert np.std(b) == pytest.approx(1 / np.sqrt(n_in), rel=0.1)
    theta = initialize(problem, {"kind": "scaled_normal", "sigma": [1.0, 0.5, 0.1], "bias_sigma": 0.0},
                       np.arange(200), 2)
    views = arch.unflatten(theta)
    assert [np.std(w) for w, _ in views] == pytest.approx([1.0, 0.5, 0.1], rel=0.1)
    assert all(np.all(b == 0) for _, b in views)
    with pytest.raises(ValueError, match="init.sigma.*3 values"):
        initialize(problem, {"kind": "scaled_normal", "sigma": [1.0, 0.5]}, [0], 2)
    theta = initialize(problem, {"kind": "uniform", "low": -0.5, "high": 0.25}, np.arange(50), 2)
    assert theta.min() >= -0.5 and theta.max() < 0.25
    center = np.linspace(-1, 1, problem.n_params)
    theta = initialize(problem, {"kind": "perturbed", "epsilon": 0.0, "center": center.tolist()}, [0, 1], 2)
    assert np.array_equal(theta, np.stack([center, center]))
    with pytest.raises(ValueError, match="init.center"):
        initialize(problem, {"kind": "perturbed", "epsilon": 0.1, "center": [1.0, 2.0]}, [0], 2)


@pytest.mark.parametrize("target", [
    {"kind": "piecewise_affine", "knots": [-1, 0, 0.5, 2], "values": [1.0, -1.0, 0.5, 0.0]},
    {"kind": "piecewise_affine", "knots": [-3, -2, 0.5, 5], "values": [1.0, -1.0, 0.5, 0.0]},  # 1 kink inside
    {"kind": "affine", "slope": -2.0, "intercept": 0.5},
    {"kind": "constant", "value": 3.0},
    {"kind": "function", "name": "abs", "shift": -0.25},
    {"kind": "teacher", "width": 3, "seed": 4},
])
def test_global_min_center_has_zero_risk(target):
    problem = Problem.from_dict({**PROBLEM, "target": target})
    theta = global_min_center(problem)
    assert theta.shape == (problem.n_params,)
    assert problem.risk(theta[None])[0] < 1e-26
    # units that carry a slope are balanced, |v_j|^2 = w_j^2 + b_j^2
    h = 6
    w, b, v = theta[:h], theta[h:2 * h], theta[2 * h:3 * h]
    carrying = v != 0
    np.testing.assert_allclose(v[carrying] ** 2, w[carrying] ** 2 + b[carrying] ** 2, rtol=1e-12)
    # the perturbed init is centered there
    theta0 = initialize(problem, {"kind": "perturbed", "epsilon": 1e-3}, np.arange(3), 6)
    assert np.max(np.abs(theta0 - theta)) < 1e-2


def test_global_min_center_errors():
    narrow = Problem.from_dict({**PROBLEM, "network": {"widths": [2]}})
    with pytest.raises(ValueError, match=r"at least 3 hidden units"):
        global_min_center(narrow)
    poly = Problem.from_dict({**PROBLEM, "target": {"kind": "polynomial", "coefficients": [0, 0, 1]}})
    with pytest.raises(ValueError, match="not piecewise affine"):
        global_min_center(poly)
    jump = Problem.from_dict({**PROBLEM, "target": {"kind": "piecewise_polynomial", "knots": [-1, 0, 2],
                                                    "coefficients": [[0, 1], [1, 1]]}})
    with pytest.raises(ValueError, match="jumps at x = 0"):
        global_min_center(jump)
    sine = Problem.from_dict({**PROBLEM, "target": {"kind": "function", "name": "sin"}})
    with pytest.raises(ValueError, match="piecewise affine"):
        global_min_center(sine)
    deep = Problem.from_dict({**PROBLEM, "network": {"widths": [4, 4]}})
    with pytest.raises(ValueError, match="shallow relu"):
        global_min_center(deep)
    gauss = Problem.from_dict({**PROBLEM, "measure": {"kind": "gaussian"}})
    with pytest.raises(ValueError, match="interval"):
        global_min_center(gauss)
