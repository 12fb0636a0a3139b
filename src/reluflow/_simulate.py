"""``reluflow.simulate``: one cell of a study, from plain dicts to two pandas tables (no files, no dask).

The tables' columns and dtypes are documented in ``docs/methods.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .dynamics import (
    DEFAULT_INIT,
    Rosenbrock,
    init_from_dict,
    initialize,
    integrate,
    integrate_memory,
    method_from_dict,
)
from .problem import Problem
from .risk import Memory

if TYPE_CHECKING:  # imported where the tables are built: `import reluflow` stays free of pandas (see _load)
    import pandas as pd

__all__ = ["CURVE_COLUMNS", "STATE_COLUMNS", "TRAJECTORY_COLUMNS", "Simulation", "simulate", "simulate_memory"]

BASE_COLUMNS = (
    "trajectory", "status", "risk_init", "risk_final", "risk_min", "grad_norm_final", "param_norm_init",
    "param_norm_max", "param_norm_final", "t_final", "steps", "n_rejected", "max_risk_increase", "n_dead_final",
    "min_unit_norm", "balance_drift",
)
ENDPOINT_COLUMNS = (
    "refined", "refine_converged", "refine_moved", "refine_grad_norm", "refine_model_error", "refine_local",
    "nearest_class", "nearest_risk", "hessian_at", "n_negative", "n_zero", "lambda_min", "lambda_min_positive",
    "hessian_rank", "class",
)
RATE_COLUMNS = ("risk_inf", "rate_exp", "r2_exp", "rate_poly", "r2_poly")
ANALYSIS_COLUMNS = (*ENDPOINT_COLUMNS, *RATE_COLUMNS, "rate_best")
TRAJECTORY_COLUMNS = BASE_COLUMNS + ANALYSIS_COLUMNS
CURVE_COLUMNS = ("trajectory", "checkpoint", "step", "t", "risk", "grad_norm", "param_norm")
STATE_COLUMNS = ("trajectory", "theta_final", "theta_refined")
COUNT_COLUMNS = ("n_negative", "n_zero", "hessian_rank")  # counts measured at some endpoints only: nullable Int64


def _table_dtypes(trajectories: pd.DataFrame) -> pd.DataFrame:
    """``status``, ``class``, ``nearest_class``, ``hessian_at`` and ``rate_best`` as categoricals whose categories
    are every value the column can take (fixed lists: cells' tables concatenate as categoricals, and an absent
    value still counts zero); the counts of ``COUNT_COLUMNS`` as nullable ``Int64`` (<NA>: not measured)."""
    import pandas as pd

    from .analysis import CLASSES, CRITICAL_CLASSES, HESSIAN_AT, RATE_MODELS, STATUSES
    from .dynamics import STATUSES as INTEGRATOR_STATUSES

    categories = {
        "status": (*STATUSES, *(s for s in INTEGRATOR_STATUSES if s not in STATUSES and s != "running")),
        "class": CLASSES,
        "nearest_class": CRITICAL_CLASSES,
        "hessian_at": HESSIAN_AT,
        "rate_best": (*RATE_MODELS, "none"),
    }
    for col, cats in categories.items():
        if col in trajectories:
            values = trajectories[col].astype(object)
            unknown = set(values.dropna()) - set(cats)
            if unknown:  # pd.Categorical would turn them into NaN without a word
                raise ValueError(f"{col}: values {sorted(map(str, unknown))} are not among {list(cats)}")
            trajectories[col] = pd.Categorical(values, categories=list(cats))
    for col in COUNT_COLUMNS:
        if col in trajectories:
            trajectories[col] = trajectories[col].astype("Int64")  # a non-integral count raises
    return trajectories


class Simulation(NamedTuple):
    """What ``simulate`` returns: three tables with one row per trajectory (``curves``: per checkpoint), sorted
    by ``trajectory``.

    ``trajectories``: status, monitors, endpoint analysis and rate fits (docs/methods.md, docs/analysis.md);
    ``curves``: the recorded checkpoints; ``states``: ``theta_final`` (the final parameters, ``(P,)`` float64
    arrays) and ``theta_refined`` (the refined point, where refinement ran; None elsewhere). ``np.stack(
    states.theta_final)`` gives the ``(T, P)`` matrix.
    """

    trajectories: pd.DataFrame
    curves: pd.DataFrame
    states: pd.DataFrame


def simulate(
    problem: dict | Problem,
    *,
    method: dict,
    init: dict | None = None,
    n_trajectories: int,
    seed: int,
    trajectory_ids: Any = None,
    theta0: np.ndarray | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> Simulation:
    """Simulate trajectories of one cell; return ``Simulation(trajectories, curves, states)``.

    ``problem`` a problem dict (``Problem.from_dict`` shape, with ``optimal_risk`` where it is known) or a
    ``Problem``; ``method`` the method dict (``method_from_dict``); ``init`` the init dict (default ``{"kind":
    "normal"}``); ``trajectory_ids`` the ids in ``[0, n_trajectories)`` to run (default all: a pipeline shard passes
    its subset); ``theta0`` precomputed initial parameters ``(len(ids), P)`` instead of drawing them;
    ``progress(done, total)`` is called as trajectories finish.

    Trajectory ``i`` starts from ``initialize(problem, init, [i], seed)``, which depends on ``i``, the seed, the
    init and the network's parameter layout only: two calls that differ in their method (GD and GF, step sizes,
    stopping rules) start from the same points, so their results can be compared trajectory by trajectory. Row
    ``i`` of every table depends only on trajectory id ``i``, the cell and the seed: the same bits alone, in any
    batch or shard.
    """
    import pandas as pd

    prob = problem if isinstance(problem, Problem) else Problem.from_dict(problem)
    init_dict = dict(DEFAULT_INIT) if init is None else init
    m = method_from_dict(method)
    init_from_dict(init_dict)  # validate before anything runs
    if isinstance(n_trajectories, bool) or not isinstance(n_trajectories, int | np.integer) or n_trajectories < 0:
        raise ValueError(f"n_trajectories = {n_trajectories!r} is not allowed: expected an integer >= 0")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed = {seed!r} is not allowed: expected a non-negative integer")
    if trajectory_ids is None:
        ids = np.arange(n_trajectories, dtype=np.int64)
    else:
        ids = np.asarray(trajectory_ids).reshape(-1)
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= n_trajectories
                         or len(np.unique(ids)) != len(ids)):
            raise ValueError(f"trajectory_ids = {trajectory_ids!r} is not allowed: expected distinct integers in "
                             f"[0, n_trajectories = {n_trajectories})")
        ids = ids.astype(np.int64)
    n_par = prob.n_params
    if theta0 is None:
        theta0 = initialize(prob, init_dict, ids, seed)
    else:
        theta0 = np.asarray(theta0, dtype=np.float64)
        if theta0.shape != (len(ids), n_par):
            raise ValueError(f"theta0 has shape {theta0.shape}: expected (len(trajectory_ids), P) = "
                             f"({len(ids)}, {n_par})")

    sol = integrate(prob, m.make_solver(), theta0, stop=m.make_stop(), controller=m.make_controller(),
                    record=m.make_record(), progress=progress, certify=_certified_stop(prob, m))

    finite = np.isfinite(sol.theta).all(axis=1)
    n_dead = np.full(len(ids), -1, dtype=np.int64)  # -1: the final parameters are not finite
    if finite.any():
        n_dead[finite] = prob.dead_neurons(np.ascontiguousarray(sol.theta[finite]))
    table: dict[str, Any] = {
        "trajectory": ids, "status": sol.status.astype(object), "risk_init": sol.risk_init, "risk_final": sol.risk,
        "risk_min": sol.risk_min, "grad_norm_final": sol.grad_norm, "param_norm_init": sol.param_norm_init,
        "param_norm_max": sol.param_norm_max, "param_norm_final": sol.param_norm, "t_final": sol.t,
        "steps": sol.steps, "n_rejected": sol.n_rejected, "max_risk_increase": sol.max_risk_increase,
        "n_dead_final": n_dead, "min_unit_norm": sol.min_unit_norm, "balance_drift": sol.balance_drift,
    }
    cols = _analysis_columns(prob, m, sol)
    theta_refined = cols.pop("theta_refined")
    table.update({name: cols[name] for name in ANALYSIS_COLUMNS})
    trajectories = _table_dtypes(pd.DataFrame(table))
    order = np.argsort(ids, kind="stable")
    trajectories = trajectories.iloc[order].reset_index(drop=True)

    c = sol.curves
    curves = pd.DataFrame({
        "trajectory": ids[c["row"]] if len(c["row"]) else np.zeros(0, dtype=np.int64),
        "checkpoint": c["checkpoint"], "step": c["step"], "t": c["t"].astype(np.float64),
        "risk": c["risk"].astype(np.float64), "grad_norm": c["grad_norm"].astype(np.float64),
        "param_norm": c["param_norm"].astype(np.float64),
    })
    curves = curves.sort_values(["trajectory", "checkpoint"], kind="stable").reset_index(drop=True)

    refined = trajectories["refined"].to_numpy()
    theta_final = np.array(sol.theta, dtype=np.float64)[order]
    theta_ref = theta_refined[order]
    states = pd.DataFrame({
        "trajectory": trajectories["trajectory"].to_numpy(),
        "theta_final": pd.Series(list(theta_final), dtype=object),
        "theta_refined": pd.Series([theta_ref[i] if refined[i] else None for i in range(len(ids))], dtype=object),
    })
    return Simulation(trajectories, curves, states)


def _certified_stop(prob: Problem, m) -> Any:
    """The loop's ``CertifiedStop`` for ``method.certified_stop: true`` (``None`` otherwise); refuses a problem
    the certificate does not cover rather than silently running to convergence."""
    if not m.certified_stop:
        return None
    from .analysis import certify_available
    from .analysis._certstop import why_not
    from .dynamics import CertifiedStop

    why = why_not(prob)
    if why is None and not certify_available():
        why = "python-flint (ball arithmetic) is not installed: pip install 'reluflow[certify]'"
    if why is not None:
        raise ValueError(f"method.certified_stop = true is not allowed here: {why}")
    from .analysis._certify_gaussian import CertifiedBasins

    # certified balls about the minima met so far, reused for every run that enters one of them or a symmetric
    # image (docs/analysis.md): after the first run of a family of minima, a check is an aligned distance
    basins = CertifiedBasins(prob, m.certified_step())
    return CertifiedStop(basins.check, every=m.certify_every, below=m.certify_below)


def _analysis_columns(prob: Problem, m, sol) -> dict[str, np.ndarray]:
    """Endpoint analysis (refinement, spectra, classes: ``analysis.analyse_endpoints``) and rate fits."""
    from .analysis import analyse_endpoints, rate_fits

    n = len(sol.status)
    cols = analyse_endpoints(prob, sol.theta, sol.status.astype(object), sol.risk, sol.grad_norm,
                             risk_tol=m.risk_tol, grad_tol=m.grad_tol, optimal_risk=prob.optimal_risk,
                             second_order=m.refine_enabled(prob.n_params))

    # rate fits on the recorded curves: (T, C) padded arrays, C the most states the method records per trajectory,
    # not the most in this batch: the fits' row sums group their terms by the row length, so a batch-dependent C
    # gave a trajectory other last bits in another shard
    c = sol.curves
    rows, counts = np.unique(c["row"], return_counts=True)
    width = max(len(m.make_record().grid) + 1, int(counts.max()) if len(counts) else 1)
    t = np.full((n, width), np.nan)
    risk = np.full((n, width), np.nan)
    valid = np.zeros((n, width), dtype=bool)
    if len(c["row"]):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        pos = np.arange(len(c["row"])) - np.repeat(starts, counts)
        t[c["row"], pos] = c["t"]
        risk[c["row"], pos] = c["risk"]
        valid[c["row"], pos] = np.isfinite(c["risk"]) & np.isfinite(c["t"])
    bounded = ~np.isin(sol.status, ("diverged", "nonfinite"))
    fits = rate_fits(t, risk, valid, bounded=bounded)
    for name in RATE_COLUMNS:
        cols[name] = np.asarray(fits[name], dtype=np.float64)
    cols["rate_best"] = np.asarray(fits["rate_best"], dtype=object)
    return cols


# Memory of the tables (simulate_memory): the three DataFrames' own objects (indexes, blocks, categories); per
# trajectory the trajectories table's ~37 columns built, converted and reordered (about three copies), the states'
# row views and object columns; per recorded state the curves table's columns built, retyped, sorted, reordered
TABLE_BYTES = 96 << 10
TABLE_ROW_BYTES = 1600
CURVE_TABLE_BYTES = 32 * 8


def simulate_memory(problem: dict | Problem, *, method: dict, init: dict | None = None) -> Memory:
    """Upper estimate of the memory ``simulate`` needs at its peak, as a function of the number of trajectories
    it runs at once (a pipeline shard): a ``risk.Memory``, whose ``bytes(n)`` is the estimate for ``n``
    trajectories and ``max_trajectories(budget)`` the most that fit in ``budget`` bytes. Nothing is simulated.

    The same arguments as ``simulate`` (``init`` is validated; every initialization costs the same). Counted: the
    arrays and Python objects ``simulate`` allocates, its returned tables included, and the problem's own data
    (quadrature points, a sample); not counted: the interpreter and imported modules, and serializing the tables
    afterwards. ``simulate`` runs in phases, and the estimate bounds the largest of them:

    - the initial parameters ``(P,)`` per trajectory, held throughout;
    - ``integrate`` (``dynamics.integrate_memory``: the loop's arrays, the solver's stages, the backend's
      evaluations);
    - then the solution (final parameters and curves) with, one after the other: the dead units (the backend's
      ``dead_memory()``); the endpoint analysis (``analysis.endpoints_memory``: where the method refines, every
      endpoint refined and its Hessian taken, several ``(P, P)`` arrays per trajectory); the analysis columns with
      the rate fits (``analysis.rate_fits_memory``) or the tables (``TABLE_BYTES``, ``TABLE_ROW_BYTES`` per
      trajectory, ``CURVE_TABLE_BYTES`` per recorded state, copies of the final and refined parameters); and
      beside the phases that do not evaluate the backend themselves, the buffers it keeps (``kept_memory``: an
      arena at the size of the largest batch it evaluated).

    Every trajectory is counted as running to its budget and every endpoint as analysed, the most memory a batch
    can take; ``tests/test_memory_model.py`` holds the estimate between 1 and 4 times the measured peak.
    """
    from .analysis import endpoints_memory, hessian_kept_memory, rate_fits_memory

    prob = problem if isinstance(problem, Problem) else Problem.from_dict(problem)
    m = method_from_dict(method)
    init_from_dict(DEFAULT_INIT if init is None else init)
    p = prob.n_params
    record = m.make_record()
    n_records = len(record.grid) + 1
    integ = integrate_memory(prob, m.make_solver(), m.make_controller(), record)
    solution = Memory(0.0, 8 * (p + 16) + n_records * 7 * 8)
    dead = Memory(0.0, 8 * p).plus(prob.dead_memory())
    endpoints = endpoints_memory(prob, second_order=m.refine_enabled(p))
    columns = Memory(0.0, 8 * (p + 40))  # the analysis columns: theta_refined and some forty values
    rates = Memory(0.0, 8 * (p + 30) + n_records * (8 * 6 + 1)).plus(rate_fits_memory(n_records))  # padded curves
    tables = _tables_memory(p, n_records)
    # buffers a backend keeps after its calls (an arena, a workspace), at the largest batch it evaluated, held
    # beside the phases that do not evaluate it themselves
    kept = prob.kept_memory()
    # a Rosenbrock solver takes a Hessian every step (closed form, or G at 2P points per trajectory)
    if m.refine_enabled(p) or isinstance(m.make_solver(), Rosenbrock):
        kept = kept.max(hessian_kept_memory(prob))
    after = solution.plus(dead.plus(kept).max(endpoints, columns.plus(kept, rates.max(tables))))
    return Memory(0.0, 8 * p).plus(integ.max(after))


def simulate_tables_memory(problem: dict | Problem, *, method: dict) -> Memory:
    """Upper estimate of the memory of the tables ``simulate`` returns (trajectories, curves and states), as a
    function of the number of trajectories: what a caller holds of a finished batch. Part of
    :func:`simulate_memory`."""
    prob = problem if isinstance(problem, Problem) else Problem.from_dict(problem)
    return _tables_memory(prob.n_params, len(method_from_dict(method).make_record().grid) + 1)


def _tables_memory(n_params: int, n_records: int) -> Memory:
    return Memory(TABLE_BYTES, 8 * 3 * n_params + TABLE_ROW_BYTES + n_records * CURVE_TABLE_BYTES)
