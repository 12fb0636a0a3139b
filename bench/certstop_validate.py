"""Certified early stopping vs runs to convergence on SS2018 cells (docs/studies.md, SS2018):
``python -m bench.certstop_validate CELL:N ...`` (cells ``k8_n8`` ...; default k8_n8:1000 k7_n7:1000 k9_n9:1000
k6_n6:1000 k8_n9:1000).

Per cell: the study's method as is (``ss2018.yaml``), and with ``certified_stop: true`` (checks every 500 steps
from |G| <= 1e-4), on the same initializations (same seed, same trajectory ids). Reports agreement on the spurious
class (final L >= 2e-3) and on the final risk, the number of certified-stopped runs, steps and wall times. One
JSON line per cell (``--out``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import reluflow  # noqa: E402

from ._timing import report_line  # noqa: E402

METHOD = {"kind": "gd", "step_size": 0.05, "n_steps": 1000000, "grad_tol": 3.1831e-10, "risk_tol": 2.0e-3,
          "norm_bound": 1.0e+8, "n_checkpoints": 40, "refine": False}
CERT = {"certified_stop": True, "certify_every": 500, "certify_below": 1e-4}
INIT = {"kind": "scaled_normal", "sigma": "fan_in"}


def cell(label: str) -> dict:
    k, n = (int(x[1:]) for x in label.split("_"))
    return {"network": {"input_dim": k, "widths": [n], "bias": False, "fixed_output": 1.0},
            "measure": {"kind": "gaussian", "dim": k, "sigma": 1.0},
            "target": {"kind": "teacher", "widths": [k], "bias": False, "fixed_output": 1.0, "seed": 0,
                       "first_layer": "unit_vectors"},
            "risk": {"backend": "gaussian"}, "optimal_risk": 0.0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="*", default=["k8_n8:1000", "k7_n7:1000", "k9_n9:1000", "k6_n6:1000",
                                                 "k8_n9:1000"])
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for spec in args.cells:
        label, n_runs = spec.split(":")
        prob = cell(label)
        # wall and this process's CPU time (BLAS on one thread): on a shared machine the CPU time is the figure
        # that compares
        t, c = time.perf_counter(), time.process_time()
        a = reluflow.simulate(prob, method=METHOD, init=INIT, n_trajectories=int(n_runs), seed=args.seed)
        ta, ca = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        b = reluflow.simulate(prob, method={**METHOD, **CERT}, init=INIT, n_trajectories=int(n_runs),
                              seed=args.seed)
        tb, cb = time.perf_counter() - t, time.process_time() - c
        a, b = a.trajectories, b.trajectories
        la, lb = a.risk_final.to_numpy(), b.risk_final.to_numpy()
        cert = (b.status == "certified").to_numpy()
        row = {
            "cell": label, "runs": int(n_runs), "seconds_to_convergence": round(ta, 1),
            "seconds_certified": round(tb, 1), "cpu_seconds_to_convergence": round(ca, 1),
            "cpu_seconds_certified": round(cb, 1), "certified": int(cert.sum()),
            "spurious_to_convergence": int((la >= 2e-3).sum()), "spurious_certified": int((lb >= 2e-3).sum()),
            "class_disagreements": int(((la >= 2e-3) != (lb >= 2e-3)).sum()),
            "max_abs_risk_difference": float(np.max(np.abs(la - lb))),
            "max_abs_risk_difference_certified": float(np.max(np.abs(la - lb)[cert])) if cert.any() else None,
            "certified_were_critical": int((a.status[cert] == "critical").sum()),
            "steps_to_convergence": int(a.steps.sum()), "steps_certified": int(b.steps.sum()),
            "steps_of_certified_runs": [int(a.steps[cert].sum()), int(b.steps[cert].sum())],
        }
        report_line(row, args.out)


if __name__ == "__main__":
    main()
