"""More runs of chosen SS2018 cells, to tell our sampling noise from the published table's:
``python -m bench.ss2018_replicate CELL:N ...`` (e.g. ``k13_n13:5000``).

Runs trajectories ``0 .. N-1`` of the cell with the study's method and seed (``ss2018_full``): the first 1000 are
the full table's runs exactly (each trajectory's randomness comes from its own id), the others are new and
independent. Prints, per cell, the spurious count of the first 1000 and of all N, each rate with its 95 % Wilson
interval, and the distance to the published rate in standard errors of the difference by docs/science.md §8
(``sqrt(p (1 - p) (1/N + 1/1000))``), and that distance with the published run's noise alone
(``sqrt(p (1 - p) / 1000)``): as N grows, our estimate's noise vanishes and what is left is the published rate's.
A diagnostic, not a verdict: the study's rule is judged on the protocol's 1000 runs.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from scipy.stats import binomtest  # noqa: E402

import reluflow  # noqa: E402

from ._timing import report_line  # noqa: E402
from .certstop_validate import INIT, METHOD, cell  # noqa: E402

# docs/science.md §8, the cells this script is meant for first; others with --published
PUBLISHED = {"k13_n13": 0.730, "k18_n18": 0.900, "k12_n12": 0.585, "k14_n14": 0.736, "k17_n17": 0.897,
             "k19_n19": 0.934}
SEED = 2018  # ss2018_full's seed
THRESHOLD = 2e-3  # spurious: final L >= 2e-3 (F >= 1e-3)


def _wilson(s: int, n: int) -> tuple[float, float]:
    ci = binomtest(s, n).proportion_ci(confidence_level=0.95, method="wilson")
    return ci.low, ci.high


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="+", help="CELL:N, e.g. k13_n13:5000")
    ap.add_argument("--published", nargs="*", default=[], help="CELL=RATE for a cell not in the built-in list")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    published = {**PUBLISHED, **{k: float(v) for k, v in (s.split("=") for s in args.published)}}
    for spec in args.cells:
        label, n_runs = spec.split(":")
        n = int(n_runs)
        t, c = time.perf_counter(), time.process_time()
        sim = reluflow.simulate(cell(label), method=METHOD, init=INIT, n_trajectories=n, seed=SEED)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        tr = sim.trajectories.sort_values("trajectory")
        spurious = (tr.risk_final.to_numpy() >= THRESHOLD)
        first = int(spurious[:1000].sum())
        total = int(spurious.sum())
        p = published[label]
        rate = total / n
        row = {"cell": label, "runs": n, "spurious_first_1000": first, "spurious": total, "rate": rate,
               "wilson_95": _wilson(total, n), "rate_first_1000": first / min(n, 1000), "published": p,
               "z_difference": (rate - p) / math.sqrt(p * (1 - p) * (1 / n + 1 / 1000)),
               "z_published_noise_alone": (rate - p) / math.sqrt(p * (1 - p) / 1000),
               "status_counts": {str(k): int(v) for k, v in tr.status.value_counts().items()},
               "steps": int(tr.steps.sum()), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}
        report_line(row, args.out)


if __name__ == "__main__":
    main()
