"""SS2018 cells end to end on each of the gaussian backend's kernels: ``python -m bench.gaussian_cells CELL:N ...``
(default ``k10_n10:200 k20_n20:64``; cells as in bench/certstop_validate.py).

Per cell and kernel (``numba``, then ``numpy``, then ``numba`` again, each on a new ``Problem`` with the same seed and
initializations): the study's method run to convergence with ``reluflow.simulate``, this process's CPU seconds
(``time.process_time``; BLAS on one thread) and wall seconds, the spurious count (final L >= 2e-3) and total steps;
then the kernels' agreement: spurious classes, steps and final risks. One JSON line per cell (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import reluflow  # noqa: E402

from ._timing import report_line  # noqa: E402
from .certstop_validate import INIT, METHOD, cell  # noqa: E402


def run_cell(label: str, n_runs: int, kernel: str, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """``(figures, final risks, steps)`` of one cell on ``kernel``."""
    prob = reluflow.Problem.from_dict(cell(label))
    prob.backend.kernel = kernel
    t, c = time.perf_counter(), time.process_time()
    res = reluflow.simulate(prob, method=METHOD, init=INIT, n_trajectories=n_runs, seed=seed)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    assert prob.backend.kernel == kernel  # no silent fallback
    tr = res.trajectories
    risk, steps = tr.risk_final.to_numpy(), tr.steps.to_numpy()
    return ({"kernel": kernel, "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
             "spurious": int((risk >= 2e-3).sum()), "steps": int(steps.sum())}, risk, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="*", default=["k10_n10:200", "k20_n20:64"])
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for spec in args.cells:
        label, n_runs = spec.split(":")
        # a short warm-up of each kernel first (numba's compilation or cache load is not the cell's cost)
        for kernel in ("numba", "numpy"):
            p = reluflow.Problem.from_dict(cell(label))
            p.backend.kernel = kernel
            p.risk_and_grad(np.zeros((2, p.n_params)))
        runs, risks, steps = [], {}, {}
        for i, kernel in enumerate(("numba", "numpy", "numba")):
            fig, risks[i], steps[i] = run_cell(label, int(n_runs), kernel, args.seed)
            runs.append(fig)
            print(json.dumps({"cell": label, "runs": int(n_runs), **fig}), flush=True)
        row = {
            "cell": label, "runs": int(n_runs), "load_average": os.getloadavg(),
            "runs_by_kernel": runs,
            "cpu_numpy_over_numba": round(runs[1]["cpu_seconds"] / np.mean([runs[0]["cpu_seconds"],
                                                                           runs[2]["cpu_seconds"]]), 2),
            "class_disagreements": int(((risks[0] >= 2e-3) != (risks[1] >= 2e-3)).sum()),
            "step_disagreements": int((steps[0] != steps[1]).sum()),
            "max_abs_risk_difference": float(np.max(np.abs(risks[0] - risks[1]))),
            "max_rel_risk_difference": float(np.max(np.abs(risks[0] - risks[1])
                                                    / np.maximum(np.abs(risks[1]), 1e-300))),
            "numba_repeat_identical": bool(risks[0].tobytes() == risks[2].tobytes()),
        }
        report_line(row, args.out)


if __name__ == "__main__":
    main()
