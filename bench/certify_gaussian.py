"""Cost of one gaussian certificate (``certify_critical_points``, SS2018 setting) and of one certified-GD-limit
check (``certified_gd_limit``, step 0.05), at n = k = 6, 10, 20: ``python -m bench.certify_gaussian [k ...]``.

Points: the global minimum (the teacher's rows, permuted) moved by 1e-9 (certificate: the Krawczyk test, not the
exact point, does the work) and by 1e-5 (limit check: Newton, Krawczyk and the ball's bounds). Median of
``--repeat`` runs (after one warm-up), BLAS on one thread, wall time.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import reluflow  # noqa: E402
from reluflow.analysis import certified_gd_limit, certify_critical_points  # noqa: E402


def ss_problem(k: int, n: int) -> reluflow.Problem:
    return reluflow.Problem.from_dict({
        "network": {"input_dim": k, "widths": [n], "bias": False, "fixed_output": 1.0},
        "measure": {"kind": "gaussian", "dim": k, "sigma": 1.0},
        "target": {"kind": "teacher", "widths": [k], "bias": False, "fixed_output": 1.0, "seed": 0,
                   "first_layer": "unit_vectors"},
        "risk": {"backend": "gaussian"}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("k", nargs="*", type=int, default=[6, 10, 20])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prec", type=int, nargs="*", default=[192, 128])
    args = ap.parse_args()
    for k in args.k:
        p = ss_problem(k, k)
        rng = np.random.default_rng(k)
        theta = np.eye(k)[rng.permutation(k)].reshape(1, -1) + 1e-9 * rng.standard_normal((1, k * k))
        for prec in args.prec:
            times = []
            for _ in range(args.repeat + 1):
                t = time.perf_counter()
                out = certify_critical_points(p, theta, prec=prec)
                times.append(time.perf_counter() - t)
            assert out["certified_class"][0] == "min", out["certified_detail"][0]
            print(f"k = n = {k:2d}  P = {k * k:3d}  prec {prec}: {np.median(times[1:]):7.3f} s per certificate "
                  f"(runs {', '.join(f'{x:.3f}' for x in times[1:])})", flush=True)
            far = theta + 1e-5 * rng.standard_normal(theta.shape)
            times = []
            for _ in range(args.repeat + 1):
                t = time.perf_counter()
                out = certified_gd_limit(p, far, 0.05, prec=prec)
                times.append(time.perf_counter() - t)
            assert out["limit_certified"][0], out["limit_detail"][0]
            print(f"k = n = {k:2d}  P = {k * k:3d}  prec {prec}: {np.median(times[1:]):7.3f} s per limit check "
                  f"(runs {', '.join(f'{x:.3f}' for x in times[1:])})", flush=True)


if __name__ == "__main__":
    main()
