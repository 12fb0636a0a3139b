"""More runs of chosen SS2018 cells, to tell our sampling noise from the published table's:
``python -m bench.ss2018_replicate CELL:N ...`` (e.g. ``k13_n13:5000``).

Each cell is the ``ss2018_full`` study's (``workflow/studies/ss2018.yaml``: problem, method, initialization, seed,
published rate), run for trajectories ``0 .. N-1``: the first 1000 are the full table's runs exactly (each
trajectory's randomness comes from its own id), the others are new and independent. Both the first 1000 and all N
are judged by the study's own verdict rule (``rates_agree_with_published``: the rate, its interval, the distance
to the published rate in standard errors of the difference, docs/science.md §8). Also printed: that distance
with the published run's noise alone (``sqrt(p (1 - p) / 1000)``), which is what is left as N grows. A
diagnostic, not a verdict: the study is judged on the protocol's 1000 runs.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402

import reluflow  # noqa: E402
from reluflow.analysis import evaluate_verdict  # noqa: E402
from reluflow.config import expand_study, load_config_files  # noqa: E402

from ._timing import report_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STUDY = "ss2018_full"


def _judged(verdict_spec: dict, label: str, trajectories: pd.DataFrame) -> dict:
    """The study's verdict rule on these runs of one cell: its evidence row (estimate, interval, z, agrees)."""
    tables = SimpleNamespace(cells=pd.DataFrame({"cell": [label]}), trajectories=trajectories.assign(cell=label),
                             curves=None, summary=None, best_of_k=None, final=None)
    verdict = evaluate_verdict({**verdict_spec, "certify_families": False}, tables)
    row = verdict.evidence["cells"][0]
    return {key: row[key] for key in ("n", "spurious", "estimate", "low", "high", "published", "allowed", "z",
                                      "agrees")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="+", help="CELL:N, e.g. k13_n13:5000 (cells of the ss2018_full study)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    spec = load_config_files([ROOT / "config.yaml"])["studies"][STUDY]
    study = expand_study(STUDY, spec, check=False)
    verdict_spec = spec["verdict"]
    for arg in args.cells:
        label, n_runs = arg.split(":")
        if label not in study.cells:
            ap.error(f"cell {label!r} is not a cell of {STUDY}: choose from {sorted(study.cells)}")
        cell = study.cells[label]
        t, c = time.perf_counter(), time.process_time()
        sim = reluflow.simulate(cell.problem_object, method=cell.method, init=cell.init,
                                n_trajectories=int(n_runs), seed=cell.seed)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        tr = sim.trajectories.sort_values("trajectory")
        first = _judged(verdict_spec, label, tr[tr["trajectory"] < cell.n_trajectories])  # the table's runs
        every = _judged(verdict_spec, label, tr)
        p, runs = every["published"], verdict_spec.get("published_runs", 1000)
        report_line({"cell": label, "first_runs": first, "all_runs": every,
                     "z_published_noise_alone": (every["estimate"] - p) / math.sqrt(p * (1 - p) / runs),
                     "status_counts": {str(k): int(v) for k, v in tr.status.value_counts().items()},
                     "steps": int(tr.steps.sum()), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}, args.out)


if __name__ == "__main__":
    main()
