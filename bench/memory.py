"""Peak memory of one worker running one shard of W1–W3, measured in a fresh subprocess (ru_maxrss) set up like a
local dask worker (one BLAS thread, the workers' malloc settings), for two shard sizes: a worker's memory follows
its shard, not the study."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from reluflow.pipeline._cluster import BLAS_THREAD_VARS, WORKER_MALLOC_ENV

from ._timing import print_table

_CHILD = r"""
import json, resource, sys
import numpy as np
from threadpoolctl import threadpool_limits
threadpool_limits(1)
import scipy.special, scipy.stats  # imported by the first shard that builds a quadrature rule; count it as baseline
import importlib
import reluflow
from reluflow.pipeline._cluster import WORKER_PRELOAD
for module in WORKER_PRELOAD:  # what a local worker imports as it starts (pandas and pyarrow among them)
    importlib.import_module(module)
from bench.workloads import WORKLOADS, build
name, shard = sys.argv[1], int(sys.argv[2])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spec = WORKLOADS[name]
method = dict(spec["method"], n_steps=5, refine=False)
problem = build(spec["problem"], spec.get("kernel"))
trajectories, *_ = reluflow.simulate(problem, method=method, n_trajectories=shard, seed=0)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_mb": before / 1024, "peak_mb": after / 1024}))
"""


def run(names: tuple[str, ...] = ("W1-quadrature", "W1-quadrature-mask", "W1-exact1d", "W1-exact1d-numpy", "W2",
                                  "W3"),
        shards: tuple[int, ...] = (256, 1024)) -> list[dict]:
    rows = []
    env = {**os.environ, **WORKER_MALLOC_ENV, **dict.fromkeys(BLAS_THREAD_VARS, "1")}
    for name in names:
        for shard in shards:
            proc = subprocess.run([sys.executable, "-c", _CHILD, name, str(shard)], capture_output=True, text=True,
                                  check=False, env=env)
            if proc.returncode != 0:
                rows.append({"workload": name, "shard": shard, "note": proc.stderr.strip().splitlines()[-1]})
                continue
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"workload": name, "shard": shard, "peak_mb": got["peak_mb"],
                         "above_import_mb": got["peak_mb"] - got["baseline_mb"]})
    print("peak resident memory of one worker process running one shard (5 GD steps, no refinement):")
    print_table(rows, ["workload", "shard", "peak_mb", "above_import_mb", "note"])
    return rows
