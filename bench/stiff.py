"""Steps and wall time per trajectory to ``t = 1e6`` on the C11 setting: Rodas4 (the stiff solver) against
Dormand–Prince, at the study's tolerances and stopping rules (workflow/studies/c11_rate_one.yaml).

Dormand–Prince is run to ``t = 1e4`` and extrapolated: on the tails its step is held by stability, not accuracy,
so its step count grows linearly in ``t``; the extrapolation to ``1e6`` takes each run's steps per unit time over
its last decade ``[1e3, 1e4]`` (stated as such in the table)."""

from __future__ import annotations

import os

import numpy as np

from reluflow import Problem
from reluflow.dynamics import Record, integrate, method_from_dict

from ._timing import median_seconds, print_table

C11 = {"network": {"input_dim": 1, "widths": [1]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
       "target": {"kind": "affine", "slope": 1.0, "intercept": 0.0}}
STUDY = {"kind": "gf", "rtol": 1e-10, "atol": 1e-13, "risk_tol": 1e-30, "grad_tol": 0.0, "dt": 0.01,
         "max_steps": 10**7, "refine": False}


def _run(problem: Problem, method: dict, theta0: np.ndarray, grid: np.ndarray):
    m = method_from_dict(method)
    return integrate(problem, m.make_solver(), theta0, stop=m.make_stop(), controller=m.make_controller(),
                     record=Record(grid))


def run(n_trajectories: int = 32, repeats: int = 3, dopri5_t_end: float = 1e4) -> list[dict]:
    problem = Problem.from_dict(C11)
    theta0 = np.random.default_rng(11).standard_normal((n_trajectories, problem.n_params))
    rows = []
    for solver, t_end in (("rodas4", 1e6), ("dopri5", dopri5_t_end)):
        method = {**STUDY, "solver": solver, "t_end": t_end}
        grid = np.array([0.0, t_end / 10, t_end])
        sol = _run(problem, method, theta0, grid)
        seconds = median_seconds(lambda m=method, g=grid: _run(problem, m, theta0, g), repeats=repeats, warmup=0)
        attempts = sol.steps + sol.n_rejected
        row = {"solver": solver, "t_end": t_end, "T": n_trajectories,
               "attempts_median": float(np.median(attempts)), "attempts_max": int(attempts.max()),
               "reached_t_end": int(np.sum(sol.t == t_end)), "wall_s": seconds,
               "ms_per_trajectory": 1e3 * seconds / n_trajectories}
        if solver == "dopri5":
            # steps per unit time over the last decade of each run that reached t_end, times 1e6
            c = sol.curves
            full = np.flatnonzero(sol.t == t_end)
            rate = []
            for r in full:
                m = c["row"] == r
                t, s = c["t"][m], c["step"][m]
                rate.append((s[-1] - s[-2]) / (t[-1] - t[-2]))
            row["extrapolated_attempts_to_1e6_median"] = float(np.median(rate) * 1e6) if rate else float("nan")
            row["extrapolated_wall_s_to_1e6"] = seconds * 1e6 / t_end
        rows.append(row)
    print(f"C11 to t = 1e6 (one unit, f(x) = x on U[0, 1], {n_trajectories} standard-normal starts, rtol 1e-10, "
          f"atol 1e-13; load {os.getloadavg()[0]:.2f}); dopri5 run to {dopri5_t_end:g} and extrapolated:")
    print_table(rows, ["solver", "t_end", "T", "attempts_median", "attempts_max", "reached_t_end", "wall_s",
                       "ms_per_trajectory", "extrapolated_attempts_to_1e6_median", "extrapolated_wall_s_to_1e6"])
    return rows
