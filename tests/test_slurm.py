"""The cluster paths on a real SLURM (marker `slurm`: `pytest -m slurm`; `.ci/slurm up` brings up a single-node
one on Debian as root, and `.ci/run` does before running these). Without SLURM every test here skips, saying why.

- Snakemake's SLURM executor plugin with profiles/slurm, docs/running.md's command as written: one SLURM job per
  Snakemake job, tables identical to a local run; a job failing in SLURM is reported as failed.
- dask-jobqueue: docs/running.md's jobqueue settings, workers as SLURM jobs that adapt, tables identical to a
  local run, every job released at the end; a worker job that never starts and a refused submission each end the
  integrate job with one sentence within execution.worker_wait.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cluster_helpers import (
    TINY,
    assert_same_tables,
    env,
    result_tables,
    run,
    slurm_missing,
    squeue_jobs,
    wait_for_empty_queue,
    workflow_copy,
)
from reluflow.config import find_schema, load_config_files, plan_config

ROOT = Path(__file__).resolve().parents[1]
RUNNING = (ROOT / "docs" / "running.md").read_text()
pytestmark = [pytest.mark.slurm, pytest.mark.timeout(900)]


@pytest.fixture(scope="module", autouse=True)
def slurm():
    why = slurm_missing()
    if why:
        pytest.skip(why)
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue is not installed: pip install -e '.[cluster]'")
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="snakemake-executor-plugin-slurm is not installed: pip install -e '.[cluster]'")
    assert wait_for_empty_queue(120) == [], "SLURM jobs of someone else are queued: these tests need the node"


@pytest.fixture(scope="module")
def local_tiny_tables(slurm, local_tiny_tables):
    """conftest's local run, only once SLURM is known to be there (a skip costs no local run)."""
    return local_tiny_tables


def _documented(command: str) -> str:
    """``command`` as docs/running.md shows it (so that a test runs what the docs say)."""
    from test_docs_commands import documented_commands

    assert command in documented_commands(), command
    return command


def _jobqueue_execution() -> dict:
    """The execution settings of docs/running.md's jobqueue example (the first; the other plans 100 nodes)."""
    block = [b for b in re.findall(r"^```yaml\n(.*?)^```", RUNNING, re.M | re.S) if "scheduler: jobqueue" in b][0]
    return yaml.safe_load(block)["execution"]


def _slurm_jobs_since(t0: str) -> list[list[str]]:
    """sacct's jobs (name, state) submitted since ``t0`` (sacct's time format)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", t0, "-o", "JobID,JobName,State"], capture_output=True,
                         text=True, timeout=30, check=True)
    return [line.split("|") for line in out.stdout.splitlines() if line]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ------------------------------------------------------------------------------------------ Snakemake's executor
def test_snakemake_on_slurm_gives_the_tables_of_a_local_run(tmp_path, local_tiny_tables):
    command = _documented("snakemake --workflow-profile profiles/slurm")
    d = workflow_copy(tmp_path / "wf", TINY)
    t0, start = _now(), time.monotonic()
    done = run(command, d, 600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    elapsed = time.monotonic() - start
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", out)
    # integrate (and the cells table), aggregate (and the summary's figures), the per-cell tables' figures
    assert len(submitted) == 3, out[-5000:]
    states = {job: state for job, _, state in _slurm_jobs_since(t0)}
    assert all(states.get(j) == "COMPLETED" for j in submitted), (submitted, states)
    assert "--workers 2" in out  # the profile's integrate threads: the job's LocalCluster
    assert_same_tables(result_tables(d / "results" / "tiny"), local_tiny_tables)
    assert wait_for_empty_queue(30) == []
    print(f"snakemake on SLURM: {elapsed:.0f} s for {len(submitted)} SLURM jobs")


def test_a_job_failing_in_slurm_is_reported_as_failed(tmp_path):
    """An integrate job that cannot reach its scheduler fails inside SLURM: Snakemake exits non-zero naming the
    rule, and the job's log holds reluflow's one sentence."""
    config = TINY + "  scheduler: address\n  address: tcp://127.0.0.1:9\n  worker_wait: 3\n"
    d = workflow_copy(tmp_path / "wf", config)
    done = run("snakemake --workflow-profile profiles/slurm --retries 0", d, 300)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-5000:]
    assert re.search(r"Error in rule integrate:", out), out[-5000:]
    assert re.search(r"SLURM-job '\d+' failed, SLURM status is: 'FAILED'", out), out[-5000:]
    log = (d / "logs" / "tiny" / "integrate.log").read_text()
    assert re.search(r"(?m)^error: cannot reach the dask scheduler of execution.address = 'tcp://127.0.0.1:9'",
                     log), log
    assert "Traceback" not in log, log
    assert not (d / "results" / "tiny" / "summary.parquet").exists()
    assert wait_for_empty_queue(30) == []


# ------------------------------------------------------------------------------------------ dask-jobqueue
def test_jobqueue_on_slurm_gives_the_tables_of_a_local_run_and_releases_its_jobs(tmp_path, local_tiny_tables):
    command = _documented("snakemake --cores 4")  # the login-node command of the jobqueue section
    execution = {**_jobqueue_execution(), "shard_size": 2}  # 5 shards: work for both worker jobs
    config = yaml.safe_load(TINY)
    config["execution"] = execution
    d = workflow_copy(tmp_path / "wf", json.dumps(config))
    t0, start = _now(), time.monotonic()
    done = run(command, d, 600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    elapsed = time.monotonic() - start
    log = (d / "logs" / "tiny" / "integrate.log").read_text()
    lo, hi = execution["minimum_jobs"], execution["workers"]
    assert f"dask: SLURMCluster of {lo} to {hi} SLURM job(s) of 1 worker(s) each" in log, log[-3000:]
    assert re.search(r"dask: \d+ worker\(s\) up after \d+ s", log), log[-3000:]
    assert_same_tables(result_tables(d / "results" / "tiny"), local_tiny_tables)
    workers = [(job, state) for job, name, state in _slurm_jobs_since(t0) if name == "dask-worker"]
    assert 1 <= len(workers) <= hi, workers
    assert wait_for_empty_queue(30) == []  # every worker job released (scancel) when the integrate job ended
    assert list((d / "logs" / "jobqueue").glob("dask-worker-*.err"))  # the workers' own logs, where documented
    print(f"jobqueue on SLURM: {elapsed:.0f} s, worker jobs {workers}")


def _integrate(tmp_path: Path, execution: dict, deadline: float) -> tuple[subprocess.CompletedProcess, float]:
    (tmp_path / "config.yaml").write_text(TINY)
    study = plan_config(load_config_files([tmp_path / "config.yaml"]), find_schema()).study("tiny")
    t0 = time.monotonic()
    done = subprocess.run(
        ["timeout", "-k", "10", str(int(deadline)), sys.executable, "-m", "reluflow", "integrate", "--study-json",
         study.to_json(), "--study-dir", str(tmp_path / "results" / "tiny"), "--execution-json",
         json.dumps(execution)], cwd=tmp_path, env=env(), capture_output=True, text=True, check=False)
    return done, time.monotonic() - t0


def test_a_worker_job_that_never_starts_ends_the_job_within_worker_wait(tmp_path):
    """The worker job pends (it may not begin for an hour): after execution.worker_wait seconds the integrate job
    stops with one sentence, and the pending job is cancelled."""
    execution = {"scheduler": "jobqueue", "worker_wait": 15,
                 "jobqueue": {"memory": "2.5GB", "job_extra_directives": ["--begin=now+3600"]}}
    (tmp_path / "config.yaml").write_text(TINY)
    study = plan_config(load_config_files([tmp_path / "config.yaml"]), find_schema()).study("tiny")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["timeout", "-k", "10", "120", sys.executable, "-m", "reluflow", "integrate", "--study-json", study.to_json(),
         "--study-dir", str(tmp_path / "results" / "tiny"), "--execution-json", json.dumps(execution)],
        cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    pending = []
    while not pending and proc.poll() is None and time.monotonic() - t0 < 60:  # the job, pending in SLURM
        pending = [line.split()[0] for line in squeue_jobs() if "dask-worker" in line and "PENDING" in line]
        time.sleep(0.5)
    stderr = proc.communicate(timeout=150)[1]
    elapsed = time.monotonic() - t0
    assert pending, stderr[-3000:]
    assert proc.returncode == 1, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: no dask worker job started within 15 s (execution.worker_wait): the SLURM jobs "
                           "are still pending (see `squeue --me`)"), stderr[-3000:]
    assert "Traceback" not in stderr
    assert 15 <= elapsed < 90, elapsed
    states = subprocess.run(["sacct", "-X", "-n", "-P", "-j", ",".join(pending), "-o", "State"], capture_output=True,
                            text=True, timeout=30, check=True).stdout.splitlines()
    assert states and all(s.startswith("CANCELLED") for s in states), states  # released, not left pending
    assert wait_for_empty_queue(30) == []


def test_a_submission_slurm_refuses_ends_the_job_at_once(tmp_path):
    execution = {"scheduler": "jobqueue", "worker_wait": 300, "jobqueue": {"queue": "nosuchpartition"}}
    done, elapsed = _integrate(tmp_path, execution, 120)
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert re.match(r"error: submitting a dask worker job to SLURM failed \(sbatch: error: .*[Ii]nvalid partition",
                    last), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert elapsed < 60, elapsed
    assert squeue_jobs() == []
