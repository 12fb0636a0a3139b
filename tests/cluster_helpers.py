"""Helpers of the cluster tests (tests/test_cluster.py, tests/test_slurm.py): a tiny study in a copy of the
workflow, commands run with a deadline, the tables of a run read back, SLURM's presence."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tiny_config import STUDY, TINY  # noqa: F401 (re-exported: the cluster tests take them from here)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's python, snakemake, dask


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), **extra}
    out.pop("DASK_SCHEDULER_ADDRESS", None)
    return out


def workflow_copy(d: Path, config: str) -> Path:
    d.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", d)
    shutil.copytree(ROOT / "workflow", d / "workflow")
    shutil.copytree(ROOT / "profiles", d / "profiles")
    (d / "config.yaml").write_text(config)
    return d


def run(command: str, cwd: Path, deadline: float, **extra_env: str) -> subprocess.CompletedProcess:
    """``bash -c command`` under ``timeout -k 10 deadline`` (Snakemake's SLURM plugin can ignore SIGTERM while it
    waits for a job), output captured."""
    return subprocess.run(["timeout", "-k", "10", str(int(deadline)), "bash", "-c", command], cwd=cwd,
                          env=env(**extra_env), capture_output=True, text=True, check=False, timeout=deadline + 30)


def result_tables(study_dir: Path) -> dict[str, object]:
    """Every visible parquet table under ``study_dir`` (results/{study}), by path relative to it."""
    return {str(p.relative_to(study_dir)): pq.read_table(p) for p in sorted(study_dir.rglob("*.parquet"))
            if not any(part.startswith(".") for part in p.relative_to(study_dir).parts)}


def assert_same_tables(got: dict[str, object], expected: dict[str, object]) -> None:
    """The same tables, each with the same columns, types and values, bit for bit (provenance metadata aside:
    host, times, scheduler)."""
    assert sorted(got) == sorted(expected)
    for name, table in expected.items():
        assert got[name].schema.remove_metadata() == table.schema.remove_metadata(), name
        assert got[name].equals(table), name  # values, row order, NaN equal to NaN


def slurm_missing() -> str | None:
    """Why the SLURM tests cannot run here, or None when a SLURM cluster answers."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return ("no SLURM here (sinfo/sbatch not on PATH): bring up a single-node SLURM with `.ci/slurm up` "
                "(Debian, root)")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15, check=False)
        info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM does not answer ({exc}): `.ci/slurm up` starts one"
    if "UP" not in ping.stdout or info.returncode != 0:
        return f"SLURM does not answer (scontrol ping: {ping.stdout.strip() or ping.stderr.strip()}): `.ci/slurm up`"
    if not any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in info.stdout.split()):
        return f"no SLURM node is up (sinfo: {info.stdout.strip()})"
    return None


def squeue_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, timeout=15, check=True)
    return out.stdout.split("\n")[:-1]


def wait_for_empty_queue(deadline: float = 60.0) -> list[str]:
    """Poll squeue until it lists no job or ``deadline`` seconds pass; the jobs still listed."""
    t0 = time.monotonic()
    while (jobs := squeue_jobs()) and time.monotonic() - t0 < deadline:
        time.sleep(1)
    return jobs
