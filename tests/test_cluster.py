"""Cluster modes without a SLURM cluster: a failed sbatch (a fake one on PATH) and a missing one, the jobqueue
keyword arguments (adapt, preload, prologue), a scheduler with no worker or no scheduler file within
execution.worker_wait, workers of another version; and (slow) docs/running.md's scheduler-file block run as
written, with tables identical to a local run. The same paths on a real SLURM: tests/test_slurm.py."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dask.utils import parse_bytes

from cluster_helpers import TINY, assert_same_tables, env, result_tables, workflow_copy
from reluflow.config import ConfigError, Execution, find_schema, load_config_files, plan_config
from reluflow.pipeline import StageError
from reluflow.pipeline._cluster import (
    BLAS_THREAD_VARS,
    WORKER_PRELOAD,
    check_worker_versions,
    dask_client,
    jobqueue_kwargs,
    worker_identity,
)

ROOT = Path(__file__).resolve().parents[1]
needs_jobqueue = pytest.mark.skipif(importlib.util.find_spec("dask_jobqueue") is None,
                                    reason="dask-jobqueue is not installed: pip install -e '.[cluster]'")

FAILING_SBATCH = """#!/bin/sh
echo "$@" >> "{calls}"
echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified" >&2
exit 1
"""


def tiny_study(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(TINY)
    return plan_config(load_config_files([tmp_path / "config.yaml"]), find_schema()).study("tiny")


@needs_jobqueue
@pytest.mark.timeout(120)
def test_a_failed_sbatch_ends_the_integrate_job_at_once_with_one_sentence(tmp_path):
    """sbatch exits 1 (a fake one, first on PATH): the integrate job stops within seconds, far inside
    execution.worker_wait, with sbatch's own message in one `error:` line and no traceback from dask."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(FAILING_SBATCH.format(calls=tmp_path / "calls"))
    (fake / "sbatch").chmod(0o755)
    study = tiny_study(tmp_path)
    execution = {"scheduler": "jobqueue", "worker_wait": 300, "workers": 2, "jobqueue": {"memory": "2.5GB"}}
    t0 = time.monotonic()
    run = subprocess.run(
        ["timeout", "-k", "10", "100", sys.executable, "-m", "reluflow", "integrate", "--study-json", study.to_json(),
         "--study-dir", str(tmp_path / "results" / "tiny"), "--execution-json", json.dumps(execution)],
        cwd=tmp_path, env=env(PATH=f"{fake}:{env()['PATH']}"), capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - t0
    assert run.returncode == 1, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: submitting a dask worker job to SLURM failed (sbatch: error: Batch job "
                           "submission failed: Invalid account"), run.stderr[-3000:]
    assert "check execution.jobqueue" in last
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    assert (tmp_path / "calls").read_text().strip()  # the job script really went to (the fake) sbatch
    assert elapsed < 60, elapsed  # not execution.worker_wait (300 s)
    assert not (tmp_path / "results" / "tiny" / "trajectories").exists()


@needs_jobqueue
def test_jobqueue_without_sbatch_says_where_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(StageError, match=r"submits its dask workers with sbatch, which is not on PATH here"):
        with dask_client("jobqueue", workers=1, jobqueue={"cores": 1}):
            pass


@pytest.mark.parametrize("jobqueue, memory", [({}, "2.3GB"), ({"cores": 4}, "8.9GB"), ({"memory": "2.3GB"}, "2.3GB"),
                                              ({"cores": 2, "processes": 1, "memory": "3GB"}, "3GB")])
def test_jobqueue_memory_holds_worker_memory_mb_per_worker(jobqueue, memory):
    """Unset, a worker job's memory is processes x worker_memory_mb / 0.95 (dask stops a worker at 95 % of its
    share), rounded up to 0.1 GB; set, it must hold that."""
    ex = Execution.from_mapping(scheduler="jobqueue", jobqueue=jobqueue)
    assert ex.jobqueue["memory"] == memory
    processes = jobqueue.get("processes") or jobqueue.get("cores") or 1
    assert parse_bytes(memory) * 0.95 / processes >= ex.worker_memory_mb * 2**20
    assert Execution.from_json(ex.to_json()) == ex


@pytest.mark.parametrize("settings, message", [
    ({"jobqueue": {"memory": "1GB"}},
     "execution.jobqueue.memory = '1GB' is not allowed with execution.worker_memory_mb = 2000: each of the job's 1 "
     "worker process(es) could use about 905 MB before dask stops it (95% of its share), less than the 2000 MB its "
     "shards are sized for; set jobqueue.memory to at least '2.3GB' or worker_memory_mb to at most 905"),
    ({"jobqueue": {"cores": 4, "memory": "8GB"}}, "each of the job's 4 worker process(es) could use about 1811 MB"),
    ({"worker_memory_mb": 4000, "jobqueue": {"memory": "4GB"}}, "at least '4.5GB' or worker_memory_mb to at most 3623"),
    ({"jobqueue": {"memory": "lots"}}, "execution.jobqueue.memory = 'lots' is not allowed: expected a size such as"),
])
def test_jobqueue_memory_too_small_for_worker_memory_mb_is_refused(settings, message):
    with pytest.raises(ConfigError) as err:
        Execution.from_mapping(scheduler="jobqueue", **settings)
    assert message in str(err.value)
    Execution.from_mapping(scheduler="local", **settings)  # only a jobqueue pool's workers live in that memory


def test_jobqueue_keyword_arguments_preload_the_stack_and_pin_blas():
    ex = Execution.from_mapping(scheduler="jobqueue", jobqueue={"cores": 4, "queue": "cpu",
                                                                "job_script_prologue": ["module load x"]})
    kw = jobqueue_kwargs(ex.jobqueue)
    assert (kw["cores"], kw["processes"], kw["walltime"], kw["queue"]) == (4, 4, "01:00:00", "cpu")
    assert kw["memory"] == "8.9GB"  # 4 x 2000 MB / 0.95
    assert "account" not in kw  # null: left to dask-jobqueue's own configuration
    assert kw["worker_extra_args"] == [a for m in WORKER_PRELOAD for a in ("--preload", m)]
    assert kw["job_script_prologue"][0] == "module load x"
    assert {f"export {v}=1" for v in BLAS_THREAD_VARS} <= set(kw["job_script_prologue"])
    assert "export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=${DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED:-False}" \
        in kw["job_script_prologue"]
    assert kw["scheduler_options"] == {"dashboard_address": ":0"}
    if importlib.util.find_spec("dask_jobqueue") is not None:  # the job script dask-jobqueue writes from them
        from dask_jobqueue import SLURMCluster

        with SLURMCluster(**{**kw, "log_directory": None}) as cluster:
            script = cluster.job_script()
        assert "#SBATCH -p cpu" in script and "#SBATCH --cpus-per-task=4" in script
        assert "--nthreads 1" in script and "--nworkers 4" in script
        assert all(f"--preload {m}" in script for m in WORKER_PRELOAD), script
        assert script.index("export OMP_NUM_THREADS=1") < script.index("distributed.cli.dask_worker")


def test_a_scheduler_without_workers_ends_within_worker_wait():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        t0 = time.monotonic()
        with pytest.raises(StageError, match=r"no dask worker joined the scheduler at \S+ \(execution.address = "
                                             r"'\S+'\) within 1 s \(execution.worker_wait\): start workers with "
                                             r"`dask worker"):
            with dask_client("address", workers=1, address=cluster.scheduler_address, worker_wait=1):
                pass
        assert time.monotonic() - t0 < 15


def test_a_scheduler_file_that_never_appears_ends_within_worker_wait(tmp_path):
    path = str(tmp_path / "scheduler.json")
    with pytest.raises(StageError, match=r"execution.scheduler_file = '.*scheduler.json' did not appear within "
                                         r"0.5 s \(execution.worker_wait\), or holds no scheduler address: start the "
                                         r"scheduler with `dask scheduler "
                                         r"--scheduler-file"):
        with dask_client("address", workers=1, scheduler_file=path, worker_wait=0.5):
            pass
    with pytest.raises(StageError, match=r"needs execution.address, execution.scheduler_file or "
                                         r"DASK_SCHEDULER_ADDRESS"):
        with dask_client("address", workers=1):
            pass


def test_workers_of_another_version_are_refused_with_one_sentence():
    from distributed import Client, LocalCluster

    mine = worker_identity()
    assert mine["version"] and mine["source"]
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster, Client(cluster) as client:
        check_worker_versions(client)  # the same code: accepted
        with pytest.raises(StageError, match=r"dask worker \S+ runs reluflow version '[^']+', this job "
                                             r"'0.0.0-other': install the same reluflow where the workers start"):
            check_worker_versions(client, expected={**mine, "version": "0.0.0-other"})
        with pytest.raises(StageError, match=r"runs reluflow source hash \(the code differs within a version\)"):
            check_worker_versions(client, expected={**mine, "source": "0" * 64})

    class OtherDask:  # what Client.get_versions(check=True) raises on a mismatch of required packages
        def get_versions(self, check=False):
            assert check
            raise ValueError("Mismatched versions found\n+-------------+\n| distributed | 2024.1.0 |")

    with pytest.raises(StageError, match=r"the dask workers run other package versions than this job "
                                         r"\(ValueError: Mismatched versions found .*distributed.*\): install the "
                                         r"same environment"):
        check_worker_versions(OtherDask())


# ------------------------------------------------------------------------------------------ an existing scheduler
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_scheduler_file_block_runs_as_documented(tmp_path, local_tiny_tables):
    """docs/running.md's scheduler-file block, line for line: `dask scheduler --scheduler-file`, `dask worker`
    processes and Snakemake with `scheduler: address`, tables identical to a local run."""
    from test_docs_commands import SHELL_BLOCK, _stop_group, block_commands

    text = (ROOT / "docs" / "running.md").read_text()
    (block,) = [b for b in SHELL_BLOCK.findall(text) if "dask scheduler --scheduler-file" in b]
    d = workflow_copy(tmp_path / "wf", TINY)
    with open(d / "console.txt", "w") as console:
        proc = subprocess.Popen(["timeout", "-k", "10", "300", "bash", "-c", "\n".join(block_commands(block))], cwd=d,
                                env=env(), stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=330)
        finally:
            _stop_group(proc)
    out = (d / "console.txt").read_text()
    assert rc == 0, out[-4000:]
    log = (d / "logs" / "tiny" / "integrate.log").read_text()
    assert "dask: existing scheduler at tcp://" in log, log[-3000:]
    assert_same_tables(result_tables(d / "results" / "tiny"), local_tiny_tables)


# ---------------------------------------------------------------------------------- code identity per shard
def test_every_shard_carries_the_identity_of_the_code_that_computed_it(tmp_path):
    """run_shard, on a dask worker, returns reluflow's version and source hash with the worker's address: what
    the driver checks before it writes the shard (a worker may join an elastic pool after the start-up check)."""
    import numpy as np
    from distributed import Client

    from reluflow.dynamics import initialize
    from reluflow.pipeline._cluster import local_cluster, worker_identity
    from reluflow.pipeline._stages import run_shard

    cell = next(iter(tiny_study(tmp_path).cells.values()))
    theta0 = initialize(cell.problem_object, cell.init, np.arange(2), cell.seed)
    with local_cluster(1) as cluster, Client(cluster) as client:
        tables = client.submit(run_shard, cell, 0, 2, theta0, pure=False).result()
        workers = list(client.scheduler_info()["workers"])
    assert tables["worker"] == {**worker_identity(), "address": workers[0]}
    assert tables["worker"]["source"] is not None


def test_a_shard_from_other_code_is_refused_and_not_written(tmp_path, monkeypatch):
    """The driver expects another source hash than its workers report (as if they had joined from another
    environment): the job stops with one sentence naming the worker and both hashes, and no shard is written."""
    from reluflow.pipeline import _cluster, write_integrate

    study = tiny_study(tmp_path)
    real = _cluster.worker_identity()
    # only this process (the driver) sees the patch: the local workers are processes of their own
    monkeypatch.setattr(_cluster, "worker_identity", lambda: {**real, "source": "0" * 64})
    out = tmp_path / "results" / "tiny"
    with pytest.raises(StageError) as err:
        write_integrate(list(study.cells.values()), out, Execution.from_mapping(workers=1, keep_shards=True))
    message = str(err.value)
    assert re.search(r"^shard \S+ of \S+ was computed by dask worker tcp://\S+ running reluflow source hash "
                     rf"\(the code differs within a version\) '{real['source']}', this job '{'0' * 64}'", message)
    assert "it is not written" in message
    assert not list(out.glob(".shards/*/*.parquet")) and not (out / "trajectories").exists()


def test_a_shard_identity_check_names_what_differs():
    from reluflow.pipeline._stages import check_shard_identity

    mine = {"version": "1.0", "source": "abc"}
    check_shard_identity({**mine, "address": "tcp://w:1"}, mine, "shard 0")  # the same code: accepted
    with pytest.raises(StageError, match=r"^shard 0 was computed by dask worker tcp://w:1 running reluflow version "
                                         r"'0\.9', this job '1\.0'"):
        check_shard_identity({"version": "0.9", "source": "abc", "address": "tcp://w:1"}, mine, "shard 0")
    with pytest.raises(StageError, match=r"dask worker \(unknown\) running reluflow version None"):
        check_shard_identity(None, mine, "shard 0")  # a worker whose run_shard predates the check
