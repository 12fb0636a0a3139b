"""Trajectory-steps per second of the batched integrate loop (GD and Dormand–Prince GF) on d = 1, H = 32,
with exact1d and 1024-point quadrature, and its speedup over a plain Python loop over trajectories that runs the
same loop one trajectory at a time."""

from __future__ import annotations

import numpy as np

import reluflow
from reluflow.dynamics import integrate, method_from_dict

from ._timing import median_seconds, print_table
from .kernels import reluflow_init
from .workloads import build, w1_problem

GD = {"kind": "gd", "step_size": 0.01, "n_steps": 200, "refine": False}


def dopri5(t_end: float) -> dict:
    return {"kind": "gf", "solver": "dopri5", "t_end": t_end, "rtol": 1e-8, "refine": False}


# (label, backend, method, fraction of T): short dopri5 horizons keep every trajectory live (throughput, not
# events); on quadrature G jumps at every point a kink crosses and dopri5 crawls, so it gets a shorter horizon
# and fewer trajectories. W4 is the canonical long run.
CASES = (
    ("gd", "exact1d", GD, 1),
    ("gd", "exact1d-numpy", GD, 1),
    ("dopri5 t<=2", "exact1d", dopri5(2.0), 4),
    ("gd", "quadrature", GD, 1),
    ("gd", "quadrature-mask", GD, 1),
    ("dopri5 t<=0.5", "quadrature", dopri5(0.5), 64),
    ("W4: dopri5 t<=100", "exact1d", dopri5(100.0), 32),
)
# label -> (backend, kernel); exact1d runs the kernel it picks (the compiled one where numba is installed)
BACKEND_KERNEL = {"exact1d": ("exact1d", None), "exact1d-numpy": ("exact1d", "numpy"),
                  "quadrature": ("quadrature", "points1d"), "quadrature-mask": ("quadrature", "mask_gemm")}


def _run(problem: reluflow.Problem, method: dict, theta0: np.ndarray):
    m = method_from_dict(method)
    return integrate(problem, m.make_solver(), theta0, stop=m.make_stop(), controller=m.make_controller(),
                     record=m.make_record())


def run(T: int = 4096, loop_trajectories: int = 32, repeats: int = 5) -> list[dict]:
    rows = []
    for name, backend, method, fraction in CASES:
        backend_name, kernel = BACKEND_KERNEL[backend]
        problem = build(w1_problem(backend_name), kernel)
        n = max(1, T // fraction)
        theta0 = reluflow_init(problem, n)
        steps = int(_run(problem, method, theta0).steps.sum())
        reps = repeats if name != CASES[-1][0] else max(3, repeats // 2)
        seconds = median_seconds(lambda p=problem, m=method, th=theta0: _run(p, m, th), repeats=reps)
        few = theta0[: max(2, loop_trajectories // fraction)]
        loop_steps = int(_run(problem, method, few).steps.sum())

        def loop(p=problem, m=method, th=few):
            for i in range(len(th)):
                _run(p, m, th[i : i + 1])

        loop_seconds = median_seconds(loop, repeats=max(3, repeats // 2))
        rate, loop_rate = steps / seconds, loop_steps / loop_seconds
        rows.append({"backend": backend, "kernel": problem.backend.kernel, "method": name, "T": n,
                     "accepted_steps": steps,
                     "traj_steps_per_s": rate, "loop_traj_steps_per_s": loop_rate,
                     "batched_over_loop": rate / loop_rate})
    print("integrate loop throughput (d = 1, H = 32, float64, one core; dopri5 counts accepted steps):")
    print_table(rows, ["backend", "kernel", "method", "T", "accepted_steps", "traj_steps_per_s",
                       "loop_traj_steps_per_s", "batched_over_loop"])
    return rows
