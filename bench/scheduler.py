"""How many tasks per second one integrate job's scheduler and driver sustain: the number that sizes shards for a
large cluster (docs/running.md, "Planning a run on 100 nodes").

    python -m bench.scheduler                      # 8 and 16 single-threaded workers (~2 min on 2 cores)
    python -m bench.scheduler --workers 16 --tasks 3000 --shards 600

Two measurements on a LocalCluster of W single-threaded worker processes, tasks far shorter than the round trip
so that the workers wait for the scheduler, never the other way round:

- ``noop``: tasks that return at once, submitted and collected as ``_run_shards`` does (at most ``2 W + 2`` in
  flight, one ``as_completed`` loop): the scheduler's and the client's cost per task;
- ``integrate``: ``write_integrate`` of a one-cell study with one trajectory of 5 GD steps per shard: that, plus
  what the driver does per shard (its initial parameters read, three parquet files written, verified and merged).

Each is reported as wall-clock rate and as the CPU time the driver process (scheduler, client, integrate driver:
one process) spends per task. On a shared 2-core machine the wall-clock rate mostly measures how much CPU the
driver gets beside W workers; the CPU time per task is what a dedicated core would pay, so 1 / (CPU per task)
bounds the rate one integrate job's driver can sustain. Results go to bench/results/scheduler.json; the numbers
are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from reluflow.config import Execution, find_schema, plan_config
from reluflow.pipeline._cluster import local_cluster


def _noop(i: int) -> int:
    return i


def _timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: the scheduler, the client and the integrate driver all run
    here) of ``fn(*args)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0


def noop_tasks(client, n_tasks: int, window: int) -> None:
    from distributed import as_completed

    it = iter(range(n_tasks))
    running = as_completed()
    for _ in range(window):
        i = next(it, None)
        if i is not None:
            running.add(client.submit(_noop, i, key=f"noop-{i}", pure=False))
    done = 0
    for future in running:
        future.result()
        future.release()
        done += 1
        i = next(it, None)
        if i is not None:
            running.add(client.submit(_noop, i, key=f"noop-{i}", pure=False))
    assert done == n_tasks


def integrate_shards(address: str, workers: int, n_shards: int) -> None:
    from reluflow.pipeline import write_integrate

    config = {"studies": {"bench": {
        "problem": {"network": {"input_dim": 1, "widths": [4]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
                    "target": {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [0.0, 1.0, 0.0]}},
        "method": {"kind": "gd", "step_size": 0.05, "n_steps": 5, "n_checkpoints": 2},
        "grid": {"problem.network.widths": [[4]]}, "n_trajectories": n_shards, "seed": 1}}}
    study = plan_config(config, find_schema()).study("bench")
    execution = Execution.from_mapping(scheduler="address", address=address, workers=workers, shard_size=1,
                                       progress_interval=1e9)
    with tempfile.TemporaryDirectory() as d:
        counts = write_integrate(list(study.cells.values()), Path(d) / "bench", execution)
    assert counts["shards_computed"] == n_shards, counts


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--tasks", type=int, default=2000, help="no-op tasks per measurement")
    parser.add_argument("--shards", type=int, default=400, help="one-trajectory shards per integrate measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "runs": []}
    from distributed import Client

    for w in args.workers:
        with local_cluster(w) as cluster, Client(cluster) as client:
            client.wait_for_workers(w, timeout=120)
            noop_tasks(client, 200, 2 * w + 2)  # warm-up
            integrate_shards(cluster.scheduler_address, w, 20)  # warm-up: imports, numba
            noop = [_timed(noop_tasks, client, args.tasks, 2 * w + 2) for _ in range(args.repeats)]
            shards = [_timed(integrate_shards, cluster.scheduler_address, w, args.shards) for _ in range(args.repeats)]
        row = {"workers": w, "load_average": os.getloadavg()[0],
               "noop_tasks_per_s": sorted(args.tasks / wall for wall, _ in noop),
               "noop_cpu_ms_per_task": sorted(1e3 * cpu / args.tasks for _, cpu in noop),
               "integrate_shards_per_s": sorted(args.shards / wall for wall, _ in shards),
               "integrate_cpu_ms_per_shard": sorted(1e3 * cpu / args.shards for _, cpu in shards)}
        out["runs"].append(row)
        med = {k: v[len(v) // 2] for k, v in row.items() if isinstance(v, list)}
        print(f"{w:3d} workers (load {row['load_average']:.1f}): no-op {med['noop_tasks_per_s']:6.0f} tasks/s, "
              f"{med['noop_cpu_ms_per_task']:5.2f} ms CPU/task in the driver; integrate "
              f"{med['integrate_shards_per_s']:5.1f} shards/s, {med['integrate_cpu_ms_per_shard']:5.1f} ms CPU/shard",
              flush=True)
        results = Path(__file__).parent / "results"  # after each worker count: a long run keeps what it measured
        results.mkdir(exist_ok=True)
        (results / "scheduler.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
