"""The integrate loop on SS2018 cells: step by step, in blocks of steps taken by the loop, and in blocks taken by
the compiled multi-step call: ``python -m bench.ss2018_loop CELL:N ... [--rounds R] [--shard S] [--modes M ...]``
(default ``k10_n11:1000``, 3 rounds, shards of 125 as the ss2018_full study runs them: 8 per cell, every mode).

Per cell and round, interleaved, each a new ``Problem`` with the study's method and initializations (seed 2018,
the compiled gaussian kernel where numba is installed, BLAS on one thread), the cell's ``N`` runs through
``reluflow.simulate`` in shards of ``S``:

- ``steps``: the loop step by step (``dynamics._integrate.MAX_BLOCK = 1``, no ``gd_steps``: the loop before
  blocks);
- ``blocks16``: blocks of up to 16 steps that the loop takes itself (``MAX_BLOCK = 16``, no ``gd_steps``: the loop
  of session 15);
- ``loop_stats``: the compiled blocks, but the loop computes the states' norms, finiteness and unit norms itself
  (``gd_steps`` without its ``StepStats``: session 17's loop);
- ``full_products``: the compiled blocks with the teacher's full rows in the kernel's products, not the one-hot
  shortcut (``GaussianRisk._teacher_axes`` emptied: session 17's kernel products);
- ``loop_stats_and_full_products``: both of the above (session 17's loop and kernel);
- ``compiled``: the default: blocks of up to ``MAX_BLOCK`` steps, each one ``GaussianRisk.gd_steps`` call.

Reported: this process's CPU seconds per mode (median over rounds and the range), each mode's ratio to ``steps``
and to ``blocks16``, and the default's speedup over every other mode (medians of the per-round ratios), and
whether every mode gave the same trajectories table (it must: blocks, the compiled call, its statistics and the
shortcut never change a result). One JSON line per cell (``--out``).
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

MODES = ("steps", "blocks16", "loop_stats_and_full_products", "loop_stats", "full_products", "compiled")


def run_mode(label: str, n_runs: int, mode: str, shard: int, seed: int) -> tuple[float, str, int]:
    """``(CPU seconds, hash of the trajectories table, total steps)`` of one cell in ``mode``."""
    from reluflow.risk import GaussianRisk

    prob = reluflow.Problem.from_dict(cell(label))
    saved_block, saved_call = _integrate.MAX_BLOCK, GaussianRisk.gd_steps
    _integrate.MAX_BLOCK = {"steps": 1, "blocks16": 16}.get(mode, saved_block)
    if mode in ("steps", "blocks16"):
        GaussianRisk.gd_steps = lambda self, theta, grad, h: None
    if mode in ("loop_stats", "loop_stats_and_full_products"):
        def without_stats(self, theta, grad, h):
            got = saved_call(self, theta, grad, h)
            return None if got is None else (*got[:3], None)

        GaussianRisk.gd_steps = without_stats
    if mode in ("full_products", "loop_stats_and_full_products"):
        prob.backend._teacher_axes = np.zeros(0, dtype=np.int64)
    try:
        c = time.process_time()
        parts = [reluflow.simulate(prob, method=METHOD, init=INIT, n_trajectories=n_runs, seed=seed,
                                   trajectory_ids=np.arange(a, min(a + shard, n_runs))).trajectories
                 for a in range(0, n_runs, shard)]
        cpu = time.process_time() - c
    finally:
        _integrate.MAX_BLOCK, GaussianRisk.gd_steps = saved_block, saved_call
    table = pd.concat(parts, ignore_index=True)
    digest = hashlib.sha1(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes()).hexdigest()
    return cpu, digest, int(table.steps.sum())


def _ratio(cpu: dict[str, list[float]], slow: str, fast: str) -> float | None:
    """The median over rounds of ``slow``'s CPU seconds over ``fast``'s (``None`` where a mode did not run)."""
    if slow not in cpu or fast not in cpu:
        return None
    return round(float(np.median(np.array(cpu[slow]) / np.array(cpu[fast]))), 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cells", nargs="*", default=["k10_n11:1000"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard", type=int, default=125)
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    modes = [m for m in MODES if m in args.modes]
    for spec in args.cells:
        label, n_runs = spec.split(":")
        n_runs = int(n_runs)
        p = reluflow.Problem.from_dict(cell(label))  # numba's compilation or cache load is not the cell's cost
        p.risk_and_grad(np.zeros((2, p.n_params)))
        p.gd_steps(np.zeros((1, p.n_params)), np.zeros((1, p.n_params)), np.full((1, 1), 0.05))
        cpu: dict[str, list[float]] = {m: [] for m in modes}
        digests, steps = set(), set()
        for r in range(args.rounds):
            for mode in modes:
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
            "speedup_over_steps": {m: _ratio(cpu, "steps", m) for m in cpu if m != "steps" and "steps" in cpu},
            "speedup_over_blocks16": _ratio(cpu, "blocks16", "compiled"),
            "speedup_of_compiled": {m: _ratio(cpu, m, "compiled") for m in cpu if m != "compiled"},
            "identical_tables": len(digests) == 1,
        }
        report_line(row, args.out)


if __name__ == "__main__":
    main()
