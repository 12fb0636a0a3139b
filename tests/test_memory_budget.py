"""The memory budget of the integrate stage: shards sized to fit ``execution.worker_memory_mb`` (same tables as
any other shard size), a cell whose single trajectory cannot fit refused when the config is checked, the rule's
memory from the same estimates, and the worker's own memory (``WORKER_BASELINE_MB``) measured on a live worker."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from reluflow.config import (
    DRIVER_BASELINE_MB,
    WORKER_BASELINE_MB,
    ConfigError,
    Execution,
    integrate_memory_mb,
    load_config_files,
    plan_config,
    shard_size_for,
    shards_in_flight,
)
from reluflow.pipeline import read_metadata, write_integrate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"
MB = 1 << 20

# width 64 on exact1d: about 1.7 MB more per trajectory (the endpoint analysis' Hessians), so a budget a few MB
# above one trajectory's estimate holds a few trajectories
CONFIG = """\
studies:
  budget:
    problem:
      network: {{input_dim: 1, widths: [{width}]}}
      measure: {{kind: uniform, low: 0.0, high: 1.0}}
      target: {{kind: piecewise_affine, knots: [0.0, 0.3, 1.0], values: [0.0, 1.0, -0.5]}}
    grid:
      method:
        - {{kind: gd, step_size: 0.05, n_steps: 40, n_checkpoints: 4{refine}}}
    n_trajectories: 12
    seed: 5
execution:
  worker_memory_mb: {budget}
"""


def _plan(tmp_path: Path, *, width: int = 64, budget: int = 2000, refine: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(CONFIG.format(width=width, budget=budget, refine=refine))
    return plan_config(load_config_files([tmp_path / "config.yaml"]), SCHEMA)


def _cell(plan):
    return next(iter(plan.study("budget").cells.values()))


def test_shard_size_is_the_largest_that_fits_the_budget(tmp_path):
    cell = _cell(_plan(tmp_path))
    one = math.ceil(cell.memory.bytes(1) / MB)
    for extra_mb in (one, one + 3, one + 6):
        ex = Execution.from_mapping(worker_memory_mb=WORKER_BASELINE_MB + extra_mb, shard_size=128)
        n = shard_size_for(cell, ex)
        assert 1 <= n < 128
        assert cell.memory.bytes(n) <= extra_mb * MB < cell.memory.bytes(n + 1)
    roomy = Execution.from_mapping(worker_memory_mb=100_000, shard_size=16)
    assert shard_size_for(cell, roomy) == 16  # the budget only lowers execution.shard_size


def test_a_trajectory_that_cannot_fit_is_refused_with_the_numbers(tmp_path):
    # refinement takes Hessians of P = 3 * 2048 + 1 parameters: hundreds of MB for one trajectory
    cell = _cell(_plan(tmp_path / "ok", width=2048, budget=100_000, refine=", refine: true"))
    one = math.ceil(cell.memory.bytes(1) / MB)
    assert one > 2000 - WORKER_BASELINE_MB
    with pytest.raises(ConfigError) as err:
        _plan(tmp_path / "tight", width=2048, budget=2000, refine=", refine: true")
    msg = str(err.value)
    assert "cell 'gd" in msg and "execution.worker_memory_mb = 2000" in msg
    assert f"about {one} MB" in msg and f"at least {one + WORKER_BASELINE_MB}" in msg
    # the same sentence from the command line, exit status 2, no traceback
    run = subprocess.run([sys.executable, "-m", "reluflow", "check", "-c", str(tmp_path / "tight" / "config.yaml")],
                         capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert f"at least {one + WORKER_BASELINE_MB}" in run.stderr


def test_integrate_memory_counts_the_driver_and_each_worker_at_its_largest_shard(tmp_path):
    plan = _plan(tmp_path)
    cells = list(plan.study("budget").cells.values())
    cell = cells[0]
    local = Execution.from_mapping(worker_memory_mb=1000, shard_size=8)
    n = shard_size_for(cell, local)
    for workers in (1, 2, 4):
        mb = integrate_memory_mb(cells, local, workers)
        worker_mb = WORKER_BASELINE_MB + cell.memory.bytes(n) / MB
        assert mb >= DRIVER_BASELINE_MB + workers * worker_mb
        # the driver's share: a few shards' parameters and tables, not more workers' worth
        assert mb <= DRIVER_BASELINE_MB + workers * worker_mb + shards_in_flight(workers) * worker_mb
        assert mb <= DRIVER_BASELINE_MB + workers * local.worker_memory_mb + shards_in_flight(workers) * 8
    remote = Execution.from_mapping(scheduler="address", worker_memory_mb=1000, shard_size=8)
    assert integrate_memory_mb(cells, remote, 4) < DRIVER_BASELINE_MB + WORKER_BASELINE_MB  # workers run elsewhere


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_a_budgeted_run_writes_the_same_tables_in_smaller_shards(tmp_path):
    plan = _plan(tmp_path)
    cell = _cell(plan)
    tight = Execution.from_mapping(workers=1, shard_size=128, keep_shards=True, progress_interval=1e9,
                                   worker_memory_mb=WORKER_BASELINE_MB + math.ceil(cell.memory.bytes(3) / MB))
    n = shard_size_for(cell, tight)
    assert 3 <= n < cell.n_trajectories
    roomy = Execution.from_mapping(workers=1, shard_size=128, keep_shards=True, progress_interval=1e9)
    script = textwrap.dedent(f"""
        if __name__ == "__main__":  # local dask workers start with spawn
            import logging
            logging.basicConfig(level=logging.INFO)
            from reluflow.config import Execution, Study
            from reluflow.pipeline import write_integrate
            study = Study.from_json({plan.study("budget").to_json()!r})
            for name, ex in (("tight", {tight.to_json()!r}), ("roomy", {roomy.to_json()!r})):
                write_integrate(list(study.cells.values()), {str(tmp_path)!r} + "/" + name, Execution.from_json(ex))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                         cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"cell {cell.id}: shards of {n} trajectories" in run.stderr
    assert "to fit execution.worker_memory_mb" in run.stderr
    shards = sorted((tmp_path / "tight" / ".shards" / cell.id).glob("*.trajectories.parquet"))
    assert len(shards) == math.ceil(cell.n_trajectories / n)
    assert read_metadata(tmp_path / "tight" / "trajectories" / f"{cell.id}.parquet")["reluflow.shard_size"] == str(n)
    for table in ("init", "trajectories", "curves", "final"):
        a = pd.read_parquet(tmp_path / "tight" / table / f"{cell.id}.parquet")
        b = pd.read_parquet(tmp_path / "roomy" / table / f"{cell.id}.parquet")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_the_integrate_stage_refuses_a_budget_set_after_validation(tmp_path):
    cell = _cell(_plan(tmp_path))
    ex = Execution.from_mapping(worker_memory_mb=WORKER_BASELINE_MB, workers=1)
    with pytest.raises(RuntimeError, match=r"execution\.worker_memory_mb = 400 allows"):
        write_integrate([cell], tmp_path / "out", ex)
    assert not (tmp_path / "out" / "init").exists()  # refused before anything is written


WORKER_PEAK = """
if __name__ == "__main__":  # local dask workers start with spawn
    import resource
    from distributed import Client
    from reluflow.pipeline._cluster import local_cluster
    from reluflow.pipeline._stages import run_shard
    from reluflow.config import load_config_files, plan_config
    import numpy as np
    from reluflow.dynamics import initialize

    plan = plan_config(load_config_files([{config!r}]), {schema!r})
    with local_cluster(1) as cluster, Client(cluster) as client:
        peaks = []
        for cell in plan.study("budget").cells.values():
            theta0 = initialize(cell.problem_object, cell.init, np.arange(2), cell.seed)
            client.submit(run_shard, cell, 0, 2, theta0, pure=False).result()
            peaks += client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values()
        print("PEAK", max(peaks))
"""


@pytest.mark.parametrize("problem", ["exact1d", "gaussian"])
def test_a_workers_own_memory_is_within_its_stated_baseline(tmp_path, problem):
    """A dask worker's peak resident memory after two-trajectory shards (numba compiling its kernels where it is
    installed, scipy's special functions for the gaussian backend): within WORKER_BASELINE_MB, which the budget
    leaves to the worker."""
    if problem == "exact1d":
        text = CONFIG.format(width=4, budget=2000, refine="")
    else:
        text = textwrap.dedent("""\
            studies:
              budget:
                problem:
                  network: {input_dim: 6, widths: [6], bias: false, fixed_output: 1.0}
                  measure: {kind: gaussian, dim: 6, sigma: 1.0}
                  target: {kind: teacher, widths: [6], bias: false, fixed_output: 1.0, seed: 0,
                           first_layer: unit_vectors}
                  risk: {backend: gaussian}
                grid:
                  method: [{kind: gd, step_size: 0.05, n_steps: 40, n_checkpoints: 4, refine: true}]
                n_trajectories: 4
                seed: 5
            """)
    (tmp_path / "config.yaml").write_text(text)
    script = WORKER_PEAK.format(config=str(tmp_path / "config.yaml"), schema=str(SCHEMA))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    peak = float(run.stdout.split("PEAK")[1])
    assert 50 < peak <= WORKER_BASELINE_MB
