"""The integrate loop: one loop for GD and every GF solver.

``integrate(problem, solver, theta0, stop=..., controller=..., record=...)`` advances a batch of trajectories
``theta0`` ``(T, P)`` and owns everything that is not the step itself: step-size control (accept/reject per
trajectory), stopping events (``_events``), checkpoints, per-step monitors and compaction (a trajectory that
stops leaves the live batch, so the cost follows the live ones). Under a fixed-step controller it takes the steps
in blocks (``MAX_BLOCK``, ``BLOCK_ROWS``) and does that bookkeeping once per block over the stacked states, with
the same results as step by step.

``problem`` is any object with ``risk_and_grad(theta (A, P)) -> (risk (A,), grad (A, P))`` whose rows do not
interact; when it also has an ``architecture`` (a ``Problem``), the per-unit monitors are tracked.

Bitwise reproducibility: every operation on live rows is elementwise in the trajectory axis or a reduction inside
one row, and rows are only ever selected (compaction, accepted subsets, a row's state at its event inside a
block), never mixed; the clock of a fixed-step or GD run is a function of the step count. So a trajectory's
numbers are the same in any batch and any block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network._units import balance_defined, unit_balance, unit_norms
from ..risk import Memory
from ._events import CERTIFIED, RUNNING, STATUSES, Stop, check_events
from ._schedules import ConstantStepSize, PIDController, StepSizeController
from ._solvers import AbstractSolver

__all__ = ["CertifiedStop", "Record", "Solution", "checkpoint_grid", "integrate", "integrate_memory"]

# Relative risk increases are measured against max(|L_old|, _TINY) so that L_old = 0 cannot divide by zero.
_TINY = np.finfo(np.float64).tiny


@dataclass(frozen=True)
class Record:
    """Where to record curves: the states at the first accepted step whose clock reaches each ``grid`` point
    (``on = "t"``: the time; ``on = "step"``: the step index), plus every trajectory's start and end state.
    ``grid`` is ascending and starts at 0."""

    grid: np.ndarray = field(default_factory=lambda: np.zeros(1))
    on: str = "t"

    def __post_init__(self) -> None:
        if self.on not in ("t", "step"):
            raise ValueError(f"Record.on = {self.on!r} is not allowed: expected 't' or 'step'")
        object.__setattr__(self, "grid", np.asarray(self.grid, dtype=float))


def checkpoint_grid(n_checkpoints: int, end: float, first: float, *, integer: bool = False) -> np.ndarray:
    """``0`` followed by ``n_checkpoints - 1`` log-spaced points from ``first`` to ``end`` (both included).

    ``integer=True`` rounds to step indices and drops duplicates (GD), so there may be fewer points.
    """
    if n_checkpoints < 2:
        raise ValueError(f"n_checkpoints = {n_checkpoints!r} is not allowed: expected an integer >= 2")
    first = min(first, end)
    pts = np.geomspace(first, end, n_checkpoints - 1) if n_checkpoints > 2 else np.array([end], float)
    if integer:
        pts = np.unique(np.round(pts))
    return np.concatenate([[0.0], pts])


@dataclass(frozen=True)
class CertifiedStop:
    """Certified early stopping in the loop: every ``every`` accepted steps, the running rows with
    ``|G| <=`` their threshold (``below`` at first) are passed to ``check(theta (A, P), grad_norm (A,)) -> (ok (A,)
    bool, theta_limit (A, P), next_below (A,))``; a row with ``ok`` stops with status ``certified`` and its final
    state is ``theta_limit`` (its risk and gradient are evaluated there), the certified limit of the dynamics, as
    a run to convergence would report it. A row that fails waits until ``|G| <= next_below`` (a schedule only: a
    failed check costs time, never correctness). ``check`` must be rigorous (``analysis.certified_gd_limit``);
    the loop only schedules it."""

    check: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
    every: int = 1000
    below: float = 1e-4

    def __post_init__(self) -> None:
        if int(self.every) < 1 or not self.below > 0:
            raise ValueError(f"CertifiedStop(every={self.every!r}, below={self.below!r}): expected every >= 1 and "
                             "below > 0")


@dataclass
class Solution:
    """What ``integrate`` returns; every ``(T,)`` array follows the rows of ``theta0``.

    ``status`` (T,) str; ``theta`` (T, P) final parameters; ``risk``, ``grad_norm``, ``param_norm``, ``t`` final
    values; ``steps`` accepted steps and ``n_rejected`` rejected attempts (int64); ``risk_init``,
    ``param_norm_init``; ``risk_min`` and ``param_norm_max`` over all accepted states; ``max_risk_increase`` the
    largest ``(L_{n+1} - L_n) / |L_n|`` over consecutive accepted states (0 if the risk never increased);
    ``min_unit_norm`` the minimum over states and first-layer units of ``|w_j| + |b_j|`` and ``balance_drift``
    the maximum over states and units of ``|B_j(t) - B_j(0)|`` (NaN without an architecture or a trained
    outgoing layer). ``curves`` holds the recorded states as flat arrays ``row, checkpoint, step, t, risk,
    grad_norm, param_norm``, sorted by row, then checkpoint.
    """

    status: np.ndarray
    theta: np.ndarray
    risk: np.ndarray
    grad_norm: np.ndarray
    param_norm: np.ndarray
    t: np.ndarray
    steps: np.ndarray
    n_rejected: np.ndarray
    risk_init: np.ndarray
    param_norm_init: np.ndarray
    risk_min: np.ndarray
    param_norm_max: np.ndarray
    max_risk_increase: np.ndarray
    min_unit_norm: np.ndarray
    balance_drift: np.ndarray
    curves: dict[str, np.ndarray]


def _row_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean norms over the last axis: ``(..., P) -> (...)``. A reduction inside each row only: the same bits
    whatever the batch or block holds."""
    return np.sqrt(np.sum(x * x, axis=-1))


def _masked(reduce: np.ufunc, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``reduce`` (``np.fmin`` or ``np.fmax``) over axis 0 of ``values`` ``(m, A)`` where ``mask``; NaN where a
    column has none (``fmin``/``fmax`` then leave the running value as it was)."""
    return reduce.reduce(np.where(mask, values, np.nan), axis=0)


# Blocks of steps. The loop takes up to MAX_BLOCK steps of every live row before its bookkeeping (events,
# monitors, checkpoints, certified stops) runs once over the block's stacked states, so that bookkeeping is paid
# per block, not per step: a block holds about BLOCK_ROWS row-steps, one step while many rows are live, up to
# MAX_BLOCK for a run's last few rows, whose bookkeeping per step would cost more than their gradients (a GD run
# of the published table spends most of its steps with a handful of rows left). A row whose event fires inside a
# block takes the block's remaining steps too; they are discarded and the row ends where the event fired, as it
# would step by step (rows never interact). Only for a fixed-step (non-adaptive) controller, where every live row
# takes every step, and an explicit solver (``AbstractSolver.explicit``). A GD (or Euler) block on a backend with a
# compiled multi-step call (``RiskBackend.gd_steps``) is one call, which leaves the block's bookkeeping as the
# loop's main cost for a run's last rows: hence blocks of up to 64 steps (a row's last block may waste up to 63).
MAX_BLOCK = 64
BLOCK_ROWS = 256


def _block_size(controller: StepSizeController, solver: AbstractSolver, stop: Stop,
                certify: CertifiedStop | None, n: np.ndarray) -> int:
    """Steps in the next block, for the live rows' accepted step counts ``n`` (A,), which are equal: without
    rejections every live row has taken every step since the start. Blocks never run past ``stop.n_steps`` or
    ``stop.max_steps`` and end on every multiple of ``certify.every``, so the checks run where they would step by
    step."""
    if controller.adaptive or not solver.explicit:
        return 1
    m = min(MAX_BLOCK, max(1, BLOCK_ROWS // len(n)))
    n0 = int(n[0])
    for bound in (stop.n_steps, stop.max_steps):
        if bound is not None:
            m = min(m, max(1, int(bound) - n0))
    if certify is not None:
        every = int(certify.every)
        m = min(m, every - n0 % every)
    return m


def _gd_block(problem: Any, controller: StepSizeController, live: dict[str, np.ndarray], m: int, t_end: float,
              t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any] | None:
    """A block of ``m`` GD updates of every live row in one ``problem.gd_steps`` call (a compiled kernel, where the
    backend has one): ``(theta_s, grad_s, risk_s, stats)`` (``stats``: the states' ``risk.StepStats`` or
    ``None``), and the times in ``t_s`` ``(m, A)``; ``None`` where the backend has no such call (the loop then
    steps itself). The same step sizes and times as the loop's own steps: the controller proposes them from the
    same counts and times."""
    h_s, t_s[:] = controller.propose_block(live["h"], live["n"], live["t"], t_end, m)
    return problem.gd_steps(live["theta"], live["grad"], h_s)


def _safe(risk_and_grad: Callable) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``risk_and_grad`` that never sees a non-finite row (it gets NaN results instead) and never warns."""

    def fn(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            ok = np.isfinite(theta).all(axis=1)
            if ok.all():
                risk, grad = risk_and_grad(theta)
                return np.asarray(risk, dtype=float), np.asarray(grad, dtype=float)
            risk = np.full(theta.shape[0], np.nan)
            grad = np.full(theta.shape, np.nan)
            if ok.any():
                r, g = risk_and_grad(np.ascontiguousarray(theta[ok]))
                risk[ok], grad[ok] = r, g
            return risk, grad

    return fn


class _Monitors:
    """Per-unit monitors (``min_unit_norm``, ``balance_drift``) of a problem with an architecture."""

    def __init__(self, problem: Any) -> None:
        self.arch = getattr(problem, "architecture", None)
        self.any_defined = False
        if self.arch is not None:
            self.defined = balance_defined(self.arch)
            self.any_defined = bool(self.defined.any())

    def unit_min(self, theta: np.ndarray) -> np.ndarray:
        if self.arch is None:
            return np.full(theta.shape[0], np.nan)
        return unit_norms(self.arch, theta).min(axis=1)

    def balance(self, theta: np.ndarray) -> np.ndarray:
        if not self.any_defined:
            return np.full((theta.shape[0], 1), np.nan)
        return unit_balance(self.arch, theta)[:, self.defined]


# Bytes of one recorded state in the curves (row, checkpoint, step, t, risk, grad_norm, param_norm) and of the
# seven small arrays of one ``emit`` call (numpy's array header), which adaptive steps make per row
CURVE_ROW_BYTES = 7 * 8
EMIT_BYTES = 7 * 128
# per trajectory: the live and output vectors (about 30 float64 and int64 values, twice while the live set is
# compacted) and a step's vector temporaries
ROW_BYTES = 100 * 8
# per row-step of a block: the scalar columns stacked (risk, clock, steps, norms, flags, grid positions and the
# temporaries of their reductions), about sixteen float64 values
BLOCK_SCALARS = 16 * 8


def integrate_memory(problem: Any, solver: AbstractSolver, controller: StepSizeController,
                     record: Record | None = None) -> Memory:
    """Upper estimate of the bytes ``integrate`` holds at its peak (``risk.Memory``), as a function of the batch
    size, for ``problem`` (its ``memory()``: the backend's evaluations), ``solver``, ``controller`` and
    ``record``; the caller's ``theta0`` is not counted.

    Per trajectory: ``theta``, ``G`` and the output ``theta`` (``P`` float64 each), what the solver keeps from the
    previous step (``memory_result``, and the gradient the loop evaluated, or the accepted rows' copies under an
    adaptive controller), then the larger of the solver's own peak (``memory_step``) and its stages during an
    evaluation (``memory_stages``) plus the evaluation itself (``problem.memory()``); the per-unit monitors (the
    squares of a layer's weights and five vectors of the units: the balances at the start and now, temporaries);
    a solver's ``(P, P)`` matrices (``memory_matrices``) and its Jacobian evaluation (``jacobian_memory``);
    a block's stacked states (``MAX_BLOCK``, ``BLOCK_ROWS``); the recorded curves, sorted at the end (three
    copies), with one set of array headers per recorded state
    where steps are adaptive (rows reach their checkpoints at different steps), else once per row, for the final
    state.
    """
    p = problem.n_params
    arch = getattr(problem, "architecture", None)
    units = sum(arch.widths) if arch is not None else 0
    layer = max(ls.n_in * ls.n_out for ls in arch.layers) if arch is not None else 0
    n_records = (len(record.grid) if record is not None else 1) + 1
    kept = 3 + solver.memory_result + (2 if controller.adaptive else 1 if solver.memory_result < 3 else 0)
    emits = n_records if controller.adaptive else 1
    # a block's stacked states (theta and G, the scalar columns, the monitors' arrays): per row-step, for one
    # step of every row, or for at most BLOCK_ROWS row-steps (MAX_BLOCK steps of each of up to
    # BLOCK_ROWS / MAX_BLOCK rows)
    block_row = 8 * (2 * p + layer + 5 * units) + BLOCK_SCALARS
    per_trajectory = (8 * p * kept + 8 * (layer + 5 * units) + ROW_BYTES
                      + n_records * 3 * CURVE_ROW_BYTES + emits * EMIT_BYTES + block_row)
    blocks = Memory(chunked=((MAX_BLOCK * block_row, BLOCK_ROWS // MAX_BLOCK),))
    solver = solver.for_problem(problem)
    step = Memory(0.0, 8 * p * (solver.memory_step + p * solver.memory_matrices))
    stages = Memory(0.0, 8 * p * (solver.memory_stages + p * solver.memory_matrices)).plus(problem.memory())
    # a Rosenbrock step's Jacobian is taken while only theta and G are held beside it
    jacobian = solver.jacobian_memory(problem)
    return Memory(0.0, per_trajectory).plus(blocks).plus(step.max(stages, jacobian))


def integrate(
    problem: Any,
    solver: AbstractSolver,
    theta0: np.ndarray,
    *,
    stop: Stop,
    controller: StepSizeController,
    record: Record | None = None,
    progress: Callable[[int, int], Any] | None = None,
    certify: CertifiedStop | None = None,
) -> Solution:
    """Integrate every row of ``theta0`` ``(T, P)`` until its stopping event; see ``Solution`` for the result.

    ``controller``: ``ScheduledStepSize`` (GD), ``ConstantStepSize`` (fixed-step GF) or ``PIDController``
    (adaptive; the solver must have an error estimate). ``progress(done, total)`` is called whenever
    trajectories finish. ``certify`` schedules certified early stopping (``CertifiedStop``).
    """
    theta = np.array(theta0, dtype=np.float64, order="C", copy=True)
    if theta.ndim != 2:
        raise ValueError(f"theta0 has shape {theta.shape}: expected (T, P)")
    if controller.adaptive and solver.error_order is None:
        raise ValueError(f"solver {solver!r} has no error estimate: it cannot run under {controller!r}")
    if isinstance(controller, ConstantStepSize | PIDController) and stop.t_end is None:
        raise ValueError(f"{type(controller).__name__} needs Stop.t_end")
    record = record if record is not None else Record()
    grid = record.grid
    t_end = np.inf if stop.t_end is None else float(stop.t_end)
    n_total, n_par = theta.shape
    fn = _safe(problem.risk_and_grad)
    solver = solver.for_problem(problem)
    gd_blocks = solver.gd_update and not controller.adaptive and hasattr(problem, "gd_steps")
    mon = _Monitors(problem)

    # ------------------------------------------------------------------ outputs, indexed by row of theta0
    out_status = np.zeros(n_total, dtype=np.int8)
    out = {name: np.full(n_total, np.nan) for name in (
        "risk", "grad_norm", "param_norm", "t", "risk_init", "param_norm_init", "risk_min", "param_norm_max",
        "max_risk_increase", "min_unit_norm", "balance_drift")}
    out_steps = np.zeros(n_total, dtype=np.int64)
    out_rejected = np.zeros(n_total, dtype=np.int64)
    out_theta = np.full((n_total, n_par), np.nan)
    curves: dict[str, list[np.ndarray]] = {k: [] for k in (
        "row", "checkpoint", "step", "t", "risk", "grad_norm", "param_norm")}

    # ------------------------------------------------------------------ live state, compacted as rows stop
    with np.errstate(all="ignore"):
        risk, grad = fn(theta)
        gnorm, pnorm = _row_norm(grad), _row_norm(theta)
        finite = np.isfinite(theta).all(axis=1) & np.isfinite(risk) & np.isfinite(grad).all(axis=1)
        live: dict[str, np.ndarray] = {
            "row": np.arange(n_total),
            "theta": theta, "risk": risk, "grad": grad, "gnorm": gnorm, "pnorm": pnorm, "finite": finite,
            "t": np.zeros(n_total), "n": np.zeros(n_total, dtype=np.int64),
            "rejected": np.zeros(n_total, dtype=np.int64),
            "h": controller.initial(n_total),
            "next_cp": np.ones(n_total, dtype=np.int64), "n_rec": np.zeros(n_total, dtype=np.int64),
            "last_rec": np.full(n_total, -1, dtype=np.int64),  # step of the latest recorded state
            "risk_min": risk.copy(), "pnorm_max": pnorm.copy(), "incr": np.zeros(n_total),
            "umin": mon.unit_min(theta), "B0": mon.balance(theta),
            "cert_below": np.full(n_total, np.inf if certify is None else float(certify.below)),
        }
        # NaN where the balance is undefined (no architecture, fixed outgoing layer) or theta0 is not finite
        live["drift"] = np.where(np.isfinite(live["B0"]).all(axis=1), 0.0, np.nan)
    out["risk_init"][:], out["param_norm_init"][:] = risk, pnorm
    state = solver.init(fn, theta, risk, grad)

    def emit(sel: np.ndarray) -> None:
        """Record the current state of live rows ``sel`` (indices into the live arrays)."""
        curves["row"].append(live["row"][sel])
        curves["checkpoint"].append(live["n_rec"][sel].copy())
        curves["step"].append(live["n"][sel].copy())
        curves["t"].append(live["t"][sel].copy())
        curves["risk"].append(live["risk"][sel])
        curves["grad_norm"].append(live["gnorm"][sel])
        curves["param_norm"].append(live["pnorm"][sel])
        live["n_rec"][sel] += 1
        live["last_rec"][sel] = live["n"][sel]

    # the start is checkpoint 0 of every trajectory
    emit(np.arange(n_total))
    status = check_events(stop, live["finite"], live["risk"], live["gnorm"], live["pnorm"], live["t"], live["n"],
                          live["n"] + live["rejected"])
    done = 0

    while True:
        stopped = status != RUNNING
        if stopped.any():
            sel = np.flatnonzero(stopped)
            rows = live["row"][sel]
            out_status[rows] = status[sel]
            for src, dst in (("risk", "risk"), ("gnorm", "grad_norm"), ("pnorm", "param_norm"), ("t", "t"),
                             ("risk_min", "risk_min"), ("pnorm_max", "param_norm_max"),
                             ("incr", "max_risk_increase"), ("umin", "min_unit_norm"),
                             ("drift", "balance_drift")):
                out[dst][rows] = live[src][sel]
            out_steps[rows] = live["n"][sel]
            out_rejected[rows] = live["rejected"][sel]
            out_theta[rows] = live["theta"][sel]
            keep = np.flatnonzero(~stopped)
            live = {k: v[keep] for k, v in live.items()}
            if state is not None:
                state = {k: v[keep] for k, v in state.items()}
            done += len(sel)
            if progress is not None:
                progress(done, n_total)
        n_live = len(live["row"])
        if n_live == 0:
            break

        # ------------------------------------------- a block of m step attempts of every live row, stacked
        m = _block_size(controller, solver, stop, certify, live["n"])
        t_s = np.empty((m, n_live))
        accepted = np.ones((m, n_live), dtype=bool)
        th, gr, rk, tt = live["theta"], live["grad"], live["risk"], live["t"]
        with np.errstate(all="ignore"):
            fused = _gd_block(problem, controller, live, m, t_end, t_s) if gd_blocks else None
            stats = None
            if fused is not None:
                th_s, gr_s, rk_s, stats = fused
            else:
                gd_blocks = False  # the backend has no such call: the loop steps itself from now on
                th_s = np.empty((m, n_live, n_par))
                gr_s = np.empty((m, n_live, n_par))
                rk_s = np.empty((m, n_live))
            for j in range(m if fused is None else 0):
                h, t_next = controller.propose(live["h"], live["n"] + j, tt, t_end)
                res = solver.step(fn, tt, th, h, gr, state)
                sl: slice | np.ndarray = slice(None)
                if controller.adaptive:  # then m = 1
                    err = controller.error_norm(res.error, th, res.theta)
                    accept, live["h"] = controller.adapt(h, err, solver.error_order)
                    live["rejected"] += ~accept
                    if not accept.all():
                        sl = np.flatnonzero(accept)
                        accepted[j] = accept
                        # a rejected row keeps its state
                        th_s[j], gr_s[j], rk_s[j], t_s[j] = th, gr, rk, tt
                new_theta = res.theta[sl]
                if res.grad is not None:
                    new_risk, new_grad = res.risk[sl], res.grad[sl]
                else:
                    new_risk, new_grad = fn(new_theta)
                if res.state is not None:
                    state = res.state
                th_s[j][sl], gr_s[j][sl], rk_s[j][sl], t_s[j][sl] = new_theta, new_grad, new_risk, t_next[sl]
                th, gr, rk, tt = th_s[j], gr_s[j], rk_s[j], t_s[j]

            # ------------------------------------------------- every attempt's state, events and monitors
            n_s = live["n"] + np.cumsum(accepted, axis=0)
            if stats is not None:  # the compiled block computed them beside the steps, the same bits
                gn_s, pn_s, fin_s = stats.grad_norm, stats.param_norm, stats.finite
            else:
                gn_s, pn_s = _row_norm(gr_s), _row_norm(th_s)
                fin_s = np.isfinite(th_s).all(axis=2) & np.isfinite(rk_s) & np.isfinite(gr_s).all(axis=2)
            st_s = check_events(stop, fin_s.ravel(), rk_s.ravel(), gn_s.ravel(), pn_s.ravel(), t_s.ravel(),
                                n_s.ravel(), (n_s + live["rejected"]).ravel()).reshape(m, n_live)
            # each row ends the block at its first event (the steps it took past it are discarded), else at its
            # last attempt; the monitors run over the accepted states up to there
            event = st_s != RUNNING
            last = np.where(event.any(axis=0), event.argmax(axis=0), m - 1)
            kept = accepted & (np.arange(m)[:, None] <= last)
            before = np.concatenate([live["risk"][None], rk_s[:-1]])
            rel = (rk_s - before) / np.maximum(np.abs(before), _TINY)
            live["risk_min"] = np.fmin(live["risk_min"], _masked(np.fmin, rk_s, kept))
            live["pnorm_max"] = np.fmax(live["pnorm_max"], _masked(np.fmax, pn_s, kept))
            live["incr"] = np.fmax(live["incr"], _masked(np.fmax, rel, kept))
            flat = th_s.reshape(m * n_live, n_par)
            umin = stats.unit_min if stats is not None else mon.unit_min(flat).reshape(m, n_live)
            live["umin"] = np.fmin(live["umin"], _masked(np.fmin, umin, kept))
            if mon.any_defined:  # else the drift stays NaN: no unit has a balance (a fixed output layer)
                b = mon.balance(flat).reshape(m, n_live, -1)
                drift = np.max(np.abs(b - live["B0"][None]), axis=2)
                live["drift"] = np.fmax(live["drift"], _masked(np.fmax, drift, kept))

        cols = np.arange(n_live)
        at = (last, cols)
        if m == 1:  # no copies: the block's arrays become the live ones
            live["theta"], live["grad"] = th_s[0], gr_s[0]
        else:
            live["theta"], live["grad"] = th_s[at], gr_s[at]
        live["risk"], live["gnorm"], live["pnorm"] = rk_s[at], gn_s[at], pn_s[at]
        live["finite"], live["t"], live["n"] = fin_s[at], t_s[at], n_s[at]
        status = st_s[at]
        stepped = accepted[at]  # the row's last attempt was accepted

        if certify is not None:
            # rows that just stepped onto a multiple of ``every`` (the block ends there) with a small gradient:
            # is their limit certified?
            cand = stepped & (status == RUNNING) & (live["n"] % int(certify.every) == 0)
            cand &= live["gnorm"] <= live["cert_below"]
            if cand.any():
                idx = np.flatnonzero(cand)
                ok, th_lim, nxt = certify.check(live["theta"][idx], live["gnorm"][idx])
                ok = np.asarray(ok, dtype=bool)
                live["cert_below"][idx] = np.fmin(np.asarray(nxt, dtype=float), live["gnorm"][idx])
                if ok.any():
                    won = idx[ok]
                    th_lim = np.array(th_lim, dtype=np.float64)[ok]
                    with np.errstate(all="ignore"):
                        r_lim, g_lim = fn(th_lim)
                    live["theta"][won], live["risk"][won], live["grad"][won] = th_lim, r_lim, g_lim
                    live["gnorm"][won], live["pnorm"][won] = _row_norm(g_lim), _row_norm(th_lim)
                    live["risk_min"][won] = np.fmin(live["risk_min"][won], r_lim)
                    status[won] = CERTIFIED
                    # the limit is what the row's final record shows
                    rk_s[m - 1, won], gn_s[m - 1, won], pn_s[m - 1, won] = (
                        live["risk"][won], live["gnorm"][won], live["pnorm"][won])

        # checkpoints: accepted states whose clock reached the row's next grid point, and the state each row stops
        # at. A row's next grid point after a record is the first one above its clock then, so the one before
        # attempt j is the largest position reached by its kept states before j (positions only grow).
        clock = t_s if record.on == "t" else n_s.astype(float)
        pos = np.searchsorted(grid, clock, side="right")  # (m, A): grid points at or below the clock
        reached = np.maximum.accumulate(
            np.concatenate([live["next_cp"][None], np.where(kept, pos, 0)[:-1]]), axis=0)
        record_at = kept & (pos > reached)
        record_at[last, cols] |= stepped & (status != RUNNING)
        jj, aa = np.nonzero(record_at)
        if len(jj):
            number = live["n_rec"] + np.cumsum(record_at, axis=0) - 1
            for name, values in (("row", live["row"][aa]), ("checkpoint", number[jj, aa]), ("step", n_s[jj, aa]),
                                 ("t", t_s[jj, aa]), ("risk", rk_s[jj, aa]), ("grad_norm", gn_s[jj, aa]),
                                 ("param_norm", pn_s[jj, aa])):
                curves[name].append(values)
            recorded = record_at.any(axis=0)
            latest = m - 1 - np.argmax(record_at[::-1], axis=0)
            live["n_rec"] = live["n_rec"] + record_at.sum(axis=0)
            live["last_rec"] = np.where(recorded, n_s[latest, cols], live["last_rec"])
            live["next_cp"] = np.where(recorded, pos[latest, cols], live["next_cp"])
        # a row that stops on a rejected attempt (max_steps) was recorded at its last accepted state already,
        # unless that state fell between grid points
        pending = np.flatnonzero((status != RUNNING) & ~stepped)
        missing = pending[live["last_rec"][pending] != live["n"][pending]]
        if len(missing):
            emit(missing)

    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in curves.items()}
    order = np.lexsort((cat["checkpoint"], cat["row"]))
    cat = {k: v[order] for k, v in cat.items()}
    for k in ("row", "checkpoint", "step"):
        cat[k] = cat[k].astype(np.int64)
    return Solution(
        status=np.array(STATUSES, dtype=object)[out_status],
        theta=out_theta,
        risk=out["risk"], grad_norm=out["grad_norm"], param_norm=out["param_norm"], t=out["t"],
        steps=out_steps, n_rejected=out_rejected,
        risk_init=out["risk_init"], param_norm_init=out["param_norm_init"],
        risk_min=out["risk_min"], param_norm_max=out["param_norm_max"],
        max_risk_increase=out["max_risk_increase"], min_unit_norm=out["min_unit_norm"],
        balance_drift=out["balance_drift"], curves=cat,
    )

