"""Blocks of steps (``dynamics._integrate``: up to ``MAX_BLOCK`` steps of every live row, then the loop's bookkeeping
once) give bit for bit what the loop gives step by step (``MAX_BLOCK = 1``): statuses, final states, every
monitor and every recorded curve, for rows that stop inside a block on each kind of event, budgets that are not a
multiple of the block, certified stops on a period that does not divide it, and batches on both sides of
``BLOCK_ROWS``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from reluflow import Problem
from reluflow.dynamics import (
    RK4,
    CertifiedStop,
    ConstantSchedule,
    ConstantStepSize,
    Euler,
    GradientDescent,
    PiecewiseSchedule,
    PowerSchedule,
    Record,
    ScheduledStepSize,
    Stop,
    checkpoint_grid,
    integrate,
)
from reluflow.dynamics import _integrate as loop

UNIFORM = {"kind": "uniform", "low": 0.0, "high": 1.0}
ZIGZAG = {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0.0, 1.0, 0.5]}
# trained output layer with biases: balances defined, every monitor live
EXACT1D = {"network": {"widths": [4]}, "measure": UNIFORM, "target": ZIGZAG, "risk": {"backend": "exact1d"}}
# Safran and Shamir's setting in small: fixed output layer, no balances
GAUSSIAN = {"network": {"widths": [3], "input_dim": 3, "bias": False, "fixed_output": 1.0},
            "measure": {"kind": "gaussian", "dim": 3, "sigma": 1.0},
            "target": {"kind": "teacher", "widths": [3], "bias": False, "fixed_output": 1.0, "seed": 0,
                       "first_layer": "unit_vectors"},
            "risk": {"backend": "gaussian"}}


class Quadratic:
    """``L = |theta|^2 / 2``, ``G = theta`` (rows independent; the limit of GD and GF is 0)."""

    def risk_and_grad(self, theta):
        return 0.5 * (theta * theta).sum(axis=1), theta.copy()


def _blocks_used(monkeypatch) -> list[int]:
    sizes: list[int] = []
    size = loop._block_size

    def recording(*args):
        m = size(*args)
        sizes.append(m)
        return m

    monkeypatch.setattr(loop, "_block_size", recording)
    return sizes


def _step_by_step(monkeypatch, run):
    with monkeypatch.context() as m:
        m.setattr(loop, "MAX_BLOCK", 1)
        return run()


def _assert_same(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "curves":
            assert x.keys() == y.keys()
            for k in x:
                assert x[k].dtype == y[k].dtype and x[k].tobytes() == y[k].tobytes(), f"curves[{k!r}]"
        elif x.dtype == object:
            assert list(x) == list(y), f.name
        else:
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), f.name


def _theta0(problem, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    theta = np.random.default_rng(seed).normal(size=(n, problem.n_params)) * scale
    theta[6::7] *= 40.0  # some rows far out: they diverge or take longer
    if n > 3:
        theta[3, 0] = np.nan  # a row that stops at its start
    return theta


@pytest.mark.parametrize("spec", [EXACT1D, GAUSSIAN], ids=["exact1d", "gaussian"])
@pytest.mark.parametrize("n_rows", [1, 5, 40, 300])
def test_gd_in_blocks_is_step_by_step_bit_for_bit(monkeypatch, spec, n_rows):
    problem = Problem.from_dict(spec)
    theta0 = _theta0(problem, n_rows, seed=n_rows)
    n_steps = 203  # not a multiple of any block size
    stop = Stop(n_steps=n_steps, risk_tol=1e-3, grad_tol=1e-3, norm_bound=30.0)
    record = Record(checkpoint_grid(12, n_steps, 1, integer=True), on="step")

    def run():
        return integrate(problem, GradientDescent(), theta0, stop=stop,
                         controller=ScheduledStepSize(ConstantSchedule(0.2)), record=record)

    sizes = _blocks_used(monkeypatch)
    blocked = run()
    reference = _step_by_step(monkeypatch, run)
    _assert_same(blocked, reference)
    assert max(sizes) > 1
    if n_rows >= 40:  # rows stopped inside blocks, on different events
        assert len(set(blocked.status)) >= 3
        assert (blocked.steps[blocked.status != "budget"] % loop.MAX_BLOCK != 0).any()


def _gf_on_the_clock(spec, solver, seed: int):
    """A fixed-step GF run of 24 rows to ``t = 2.345`` (not a multiple of the step), recorded on the clock."""
    problem = Problem.from_dict(spec)
    theta0 = _theta0(problem, 24, seed=seed)
    stop = Stop(t_end=2.345, risk_tol=1e-4, norm_bound=60.0)
    record = Record(checkpoint_grid(9, 2.345, 0.01))
    return lambda: integrate(problem, solver, theta0, stop=stop, controller=ConstantStepSize(0.01), record=record)


def test_fixed_step_gf_recorded_on_the_clock_in_blocks_is_step_by_step(monkeypatch):
    run = _gf_on_the_clock(EXACT1D, RK4(), seed=3)
    sizes = _blocks_used(monkeypatch)
    blocked = run()
    _assert_same(blocked, _step_by_step(monkeypatch, run))
    assert max(sizes) > 1
    assert (blocked.t[blocked.status == "budget"] == 2.345).all()


@pytest.mark.parametrize("every", [1, 7, 40])
def test_certified_stops_in_blocks_are_step_by_step(monkeypatch, every):
    problem = Quadratic()
    theta0 = np.random.default_rng(every).normal(size=(30, 4)) * np.geomspace(1.0, 1e3, 30)[:, None]
    checks: list[int] = []

    def check(theta, grad_norm):
        # a row-by-row rule: certified once |G| < 1e-2, with the exact limit 0; otherwise try again below half
        checks.append(len(theta))
        return grad_norm < 1e-2, np.zeros_like(theta), grad_norm / 2

    def run():
        return integrate(problem, GradientDescent(), theta0, stop=Stop(n_steps=500, grad_tol=1e-12),
                         controller=ScheduledStepSize(ConstantSchedule(0.05)),
                         record=Record(checkpoint_grid(10, 500, 1, integer=True), on="step"),
                         certify=CertifiedStop(check, every=every, below=0.5))

    sizes = _blocks_used(monkeypatch)
    blocked = run()
    n_checks = list(checks)
    checks.clear()
    reference = _step_by_step(monkeypatch, run)
    _assert_same(blocked, reference)
    assert checks == n_checks  # the same checks, of the same numbers of rows
    assert (blocked.status == "certified").sum() >= 10 and (blocked.risk[blocked.status == "certified"] == 0).all()
    assert max(sizes) > 1 or every == 1


# ---------------------------------------------------------------------------------------------- compiled GD blocks
def _loop_steps_itself(monkeypatch, run):
    """``run()`` with ``RiskBackend.gd_steps`` unavailable: the loop takes every GD step itself (numpy update, then
    ``risk_and_grad``), the reference for the compiled blocks."""
    from reluflow.risk import GaussianRisk

    with monkeypatch.context() as m:
        m.setattr(GaussianRisk, "gd_steps", lambda self, theta, grad, h: None)
        return run()


def _gd_steps_calls(monkeypatch) -> list[int]:
    from reluflow.risk import GaussianRisk

    calls: list[int] = []
    compiled = GaussianRisk.gd_steps

    def counting(self, theta, grad, h):
        got = compiled(self, theta, grad, h)
        calls.append(0 if got is None else h.shape[0])
        return got

    monkeypatch.setattr(GaussianRisk, "gd_steps", counting)
    return calls


@pytest.mark.parametrize("schedule", [ConstantSchedule(0.2), PowerSchedule(0.3, 0.5),
                                      PiecewiseSchedule((30, 90), (0.3, 0.1, 0.2))], ids=["constant", "power",
                                                                                        "piecewise"])
@pytest.mark.parametrize("n_rows", [1, 5, 40, 300])
def test_compiled_gd_blocks_are_the_loops_own_steps_bit_for_bit(monkeypatch, schedule, n_rows):
    pytest.importorskip("numba")
    problem = Problem.from_dict(GAUSSIAN)
    theta0 = _theta0(problem, n_rows, seed=10 + n_rows)
    n_steps = 203
    stop = Stop(n_steps=n_steps, risk_tol=1e-3, grad_tol=1e-3, norm_bound=30.0)
    record = Record(checkpoint_grid(12, n_steps, 1, integer=True), on="step")

    def run():
        return integrate(problem, GradientDescent(), theta0, stop=stop,
                         controller=ScheduledStepSize(schedule), record=record)

    calls = _gd_steps_calls(monkeypatch)
    compiled = run()
    assert calls and min(calls) > 0  # the compiled call took every block
    if n_rows <= 40:  # (300 rows: while more than BLOCK_ROWS / 2 are live, a block is one step)
        assert max(calls) > 1
    reference = _loop_steps_itself(monkeypatch, run)
    _assert_same(compiled, reference)
    if n_rows >= 40:  # rows stopped inside blocks, on different events
        assert len(set(compiled.status)) >= 3


def test_compiled_euler_blocks_on_the_clock_are_the_loops_own_steps(monkeypatch):
    pytest.importorskip("numba")
    run = _gf_on_the_clock(GAUSSIAN, Euler(), seed=4)
    calls = _gd_steps_calls(monkeypatch)
    compiled = run()
    assert calls and max(calls) > 1
    _assert_same(compiled, _loop_steps_itself(monkeypatch, run))
    assert (compiled.t[compiled.status == "budget"] == 2.345).all()


@pytest.mark.parametrize("controller", [ScheduledStepSize(ConstantSchedule(0.05)),
                                        ScheduledStepSize(PowerSchedule(0.3, 0.7)),
                                        ScheduledStepSize(PiecewiseSchedule((3, 9), (0.3, 0.1, 0.2))),
                                        ConstantStepSize(0.1)], ids=["constant", "power", "piecewise", "clock"])
def test_propose_block_is_m_proposals(controller):
    n = np.array([0, 0, 5, 7])
    t = np.array([0.0, 0.3, 1.25, 1.0 / 3.0])
    h_s, t_s = controller.propose_block(controller.initial(4), n, t, 1.7, 13)
    for j in range(13):
        h, t_next = controller.propose(controller.initial(4), n + j, t, 1.7)
        assert h_s[j].tobytes() == h.tobytes() and t_s[j].tobytes() == t_next.tobytes(), j
        t = t_next


def _gaussian_spec(d: int, H: int, k: int = 1, fixed: bool = True, first_layer: str = "unit_vectors") -> dict:
    network = {"widths": [H], "input_dim": d, "output_dim": k, "bias": False}
    if fixed:
        network["fixed_output"] = 1.0
    return {**GAUSSIAN, "network": network, "measure": {"kind": "gaussian", "dim": d, "sigma": 1.0},
            "target": {"kind": "teacher", "widths": [d], "output_dim": k, "bias": False, "seed": 0,
                       "first_layer": first_layer}}


@pytest.mark.parametrize("spec", [GAUSSIAN, _gaussian_spec(12, 13), _gaussian_spec(5, 4, k=2, fixed=False,
                                                                                    first_layer="orthonormal"),
                                  _gaussian_spec(130, 2, first_layer="normal")],
                         ids=["P9", "P156", "trainable_k2_orthonormal_teacher", "units_of_130"])
def test_gaussian_gd_steps_are_numpy_updates_and_risk_and_grad(spec):
    """The compiled block's states bit for bit as numpy updates and ``risk_and_grad`` give them, and its
    ``StepStats`` bit for bit as the loop computes them from the states: norms of 9, 156 and 260 parameters
    (numpy's pairwise sums below and above its block of 128), units of 3, 12 and 130 weights, a trainable output
    layer with two outputs, and teachers with one-hot rows (the kernel's shortcut) and without."""
    pytest.importorskip("numba")
    from reluflow.dynamics._integrate import _Monitors, _row_norm

    problem = Problem.from_dict(spec)
    monitors = _Monitors(problem)
    rng = np.random.default_rng(7)
    theta = rng.normal(size=(7, problem.n_params))
    theta[2, 1] = np.inf  # a non-finite row: NaN results, as the loop's guarded evaluation gives
    theta[4] = 0.0  # every unit dead: G = 0
    theta[5, :3] *= 1e160  # finite entries whose squares overflow: |theta| = inf, the row still finite
    theta[6, :3] *= 1e-170  # a unit whose squares underflow (before its first step)
    risk, grad = problem.risk_and_grad(np.where(np.isfinite(theta), theta, 0.0))
    h = rng.uniform(0.01, 0.3, size=(5, 7))
    got = problem.gd_steps(theta, grad, h)
    assert got is not None
    th_s, gr_s, rk_s, stats = got
    th, gr = theta, grad
    for j in range(5):
        th = th - h[j][:, None] * gr
        ok = np.isfinite(th).all(axis=1)
        rk, gr = np.full(7, np.nan), np.full(th.shape, np.nan)
        with np.errstate(all="ignore"):
            rk[ok], gr[ok] = problem.risk_and_grad(th[ok])
        assert th_s[j].tobytes() == th.tobytes() and gr_s[j].tobytes() == gr.tobytes(), j
        assert rk_s[j].tobytes() == rk.tobytes(), j
        with np.errstate(all="ignore"):
            expected = (_row_norm(th), _row_norm(gr),
                        np.isfinite(th).all(axis=1) & np.isfinite(rk) & np.isfinite(gr).all(axis=1),
                        monitors.unit_min(th))
        for name, want in zip(("param_norm", "grad_norm", "finite", "unit_min"), expected, strict=True):
            assert getattr(stats, name)[j].tobytes() == want.tobytes(), (name, j)
    assert np.isnan(rk_s[:, 2]).all() and (gr_s[:, 4] == 0).all()
    assert not stats.finite[:, 2].any() and stats.finite[:, 4].all() and (stats.unit_min[:, 4] == 0).all()
    assert np.isinf(stats.param_norm[0, 5])


def test_gd_steps_is_none_without_a_compiled_multi_step_call():
    assert Problem.from_dict(EXACT1D).gd_steps(np.zeros((1, 13)), np.zeros((1, 13)), np.ones((2, 1))) is None
    spec = {**GAUSSIAN, "risk": {"backend": "gaussian", "dtype": "float32"}}
    try:
        problem = Problem.from_dict(spec)
    except (ValueError, TypeError):
        pytest.skip("no float32 gaussian problem from a dict")
    theta = np.zeros((1, problem.n_params))
    assert problem.gd_steps(theta, theta, np.ones((2, 1))) is None
