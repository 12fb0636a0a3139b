"""Trajectory-steps per second of the batched integrate loop (GD and Dormand–Prince GF) on d = 1, H = 32,
with exact1d and 1024-point quadrature, and its speedup over a plain Python loop over trajectories that runs the
same loop one trajectory at a time."""

from __future__ import annotations

import numpy as np

import reluflow
from reluflow.dynamics import integrate, method_from_dict

from ._timing import median_seconds, print_table
from .kernels import reluflow_init
from .workloads import w1_problem

METHODS = {
    "gd": {"kind": "gd", "step_size": 0.01, "n_steps": 200, "refine": False},
    # a horizon short enough that every trajectory is still live at the end: throughput, not events
    "dopri5": {"kind": "gf", "solver": "dopri5", "t_end": 2.0, "rtol": 1e-8, "refine": False},
}


def _run(problem: reluflow.Problem, method: dict, theta0: np.ndarray):
    m = method_from_dict(method)
    return integrate(problem, m.make_solver(), theta0, stop=m.make_stop(), controller=m.make_controller(),
                     record=m.make_record())


def run(T: int = 4096, loop_trajectories: int = 32, repeats: int = 5) -> list[dict]:
    rows = []
    for backend in ("exact1d", "quadrature"):
        problem = reluflow.Problem.from_dict(w1_problem(backend))
        for name, method in METHODS.items():
            n = T if name == "gd" else max(1, T // 4)  # dopri5 does ~6 evaluations a step
            theta0 = reluflow_init(problem, n)
            steps = int(_run(problem, method, theta0).steps.sum())
            seconds = median_seconds(lambda p=problem, m=method, th=theta0: _run(p, m, th), repeats=repeats)
            few = theta0[:loop_trajectories]
            loop_steps = int(_run(problem, method, few).steps.sum())

            def loop(p=problem, m=method, th=few):
                for i in range(len(th)):
                    _run(p, m, th[i : i + 1])

            loop_seconds = median_seconds(loop, repeats=max(3, repeats // 2))
            rate, loop_rate = steps / seconds, loop_steps / loop_seconds
            rows.append({"backend": backend, "method": name, "T": n, "accepted_steps": steps,
                         "traj_steps_per_s": rate, "loop_traj_steps_per_s": loop_rate,
                         "batched_over_loop": rate / loop_rate})
    print("integrate loop throughput (d = 1, H = 32, float64, one core; dopri5 counts accepted steps):")
    print_table(rows, ["backend", "method", "T", "accepted_steps", "traj_steps_per_s", "loop_traj_steps_per_s",
                       "batched_over_loop"])
    return rows
