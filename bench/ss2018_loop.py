"""The integrate loop on SS2018 cells, step by step against blocks of steps, and shard sizes:
``python -m bench.ss2018_loop CELL:N ... [--rounds R] [--shard S]`` (default ``k10_n11:1000``, 3 rounds, shards of
125 as the ss2018_full study runs them: 8 per cell).

Per cell and round, interleaved, each a new ``Problem`` with the study's method and initializations (seed 2018,
the compiled gaussian kernel where numba is installed, BLAS on one thread), the cell's ``N`` runs through
``reluflow.simulate``:

- ``steps``: shards of ``S`` trajectories, the loop step by step (``dynamics._integrate.MAX_BLOCK = 1``, the loop
  before blocks);
- ``blocks``: shards of ``S``, the loop in blocks (the default);
- ``blocks_one_shard``: all ``N`` in one batch, in blocks: a run's long tail shared by the whole cell.

Reported: this process's CPU seconds per mode (median over rounds and the range), each mode's ratio to ``steps``
(median of the per-round ratios), and whether every mode gave the same trajectories table (it must: blocks and
shard sizes never change a result). One JSON line per cell (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import reluflow  # noqa: E402
from reluflow.dynamics import _integrate  # noqa: E402

from ._timing import report_line  # noqa: E402
from .certstop_validate import INIT, METHOD, cell  # noqa: E402

MODES = ("steps", "blocks", "blocks_one_shard")


def run_mode(label: str, n_runs: int, mode: str, shard: int, seed: int) -> tuple[float, str, int]:
    """``(CPU seconds, hash of the trajectories table, total steps)`` of one cell in ``mode``."""
    prob = reluflow.Problem.from_dict(cell(label))
    size = n_runs if mode == "blocks_one_shard" else shard
    saved = _integrate.MAX_BLOCK
    _integrate.MAX_BLOCK = 1 if mode == "steps" else saved
    try:
        c = time.process_time()
        parts = [reluflow.simulate(prob, method=METHOD, init=INIT, n_trajectories=n_runs, seed=seed,
                                   trajectory_ids=np.arange(a, min(a + size, n_runs))).trajectories
                 for a in range(0, n_runs, size)]
        cpu = time.process_time() - c
    finally:
        _integrate.MAX_BLOCK = saved
    table = pd.concat(parts, ignore_index=True)
    digest = hashlib.sha1(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()).hexdigest()
    return cpu, digest, int(table.steps.sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="*", default=["k10_n11:1000"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard", type=int, default=125)
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    for spec in args.cells:
        label, n_runs = spec.split(":")
        n_runs = int(n_runs)
        p = reluflow.Problem.from_dict(cell(label))  # numba's compilation or cache load is not the cell's cost
        p.risk_and_grad(np.zeros((2, p.n_params)))
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        digests, steps = set(), set()
        for r in range(args.rounds):
            for mode in MODES:
                seconds, digest, total = run_mode(label, n_runs, mode, args.shard, args.seed)
                cpu[mode].append(seconds)
                digests.add(digest)
                steps.add(total)
                print(json.dumps({"cell": label, "runs": n_runs, "round": r, "mode": mode,
                                  "cpu_seconds": round(seconds, 2)}), flush=True)
        row = {
            "cell": label, "runs": n_runs, "shard": args.shard, "rounds": args.rounds,
            "load_average": os.getloadavg(), "steps": steps.pop() if len(steps) == 1 else sorted(steps),
            "cpu_seconds": {m: {"median": round(float(np.median(v)), 2), "min": round(min(v), 2),
                                "max": round(max(v), 2)} for m, v in cpu.items()},
            "speedup_over_steps": {m: round(float(np.median(np.array(cpu["steps"]) / np.array(v))), 2)
                                   for m, v in cpu.items() if m != "steps"},
            "identical_tables": len(digests) == 1,
        }
        report_line(row, args.out)


if __name__ == "__main__":
    main()
