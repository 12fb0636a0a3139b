"""reluflow installed from a built wheel, run outside any git checkout (issue #17: every other test runs from the
checkout, so none saw `KeyError: 'reluflow.git_commit'` on a resume of a wheel install)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]

CONFIG = {"studies": {"w": {
    "problem": {"network": {"input_dim": 1, "widths": [3]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
                "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}},
    "grid": {"method": [{"kind": "gd", "step_size": 0.05, "n_steps": 20, "n_checkpoints": 3}]},
    "n_trajectories": 6, "seed": 1}}}


@pytest.mark.slow
def test_a_wheel_install_checks_integrates_and_resumes_outside_a_checkout(tmp_path):
    # built from a copy of the sources: building in place would leave setuptools' build/ in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "build", "results", "logs", "benchmarks",
                                                                "__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(wheels), str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("reluflow-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    work = tmp_path / "work"  # not inside a git checkout
    work.mkdir()
    (work / "config.yaml").write_text(json.dumps(CONFIG))
    env = {**os.environ, "PYTHONPATH": str(site)}

    def reluflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reluflow", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([sys.executable, "-c", "import reluflow; print(reluflow.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), where  # the wheel's reluflow, not the checkout's
    run = reluflow("check", "-c", "config.yaml")  # the schema comes with the wheel
    assert run.returncode == 0 and "config OK" in run.stdout, run.stderr
    study_json = subprocess.run(
        [sys.executable, "-c", "import sys; from reluflow.config import find_schema, load_config_files, plan_config;"
         "print(plan_config(load_config_files(['config.yaml']), find_schema()).study('w').to_json())"],
        cwd=work, env=env, capture_output=True, text=True, check=True).stdout.strip()
    args = ["integrate", "--study-json", study_json, "--study-dir", "results/w", "--workers", "1", "--shard-size",
            "2", "--execution-json", json.dumps({"keep_shards": True})]
    first = reluflow(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    table = work / "results" / "w" / "trajectories" / "gd.parquet"
    meta = {k.decode(): v.decode() for k, v in pq.read_schema(table).metadata.items() if k != b"pandas"}
    assert "reluflow.git_commit" not in meta and len(meta["reluflow.source_hash"]) == 64
    # the resume that crashed: shards on disk, made without a git commit, are matched by the source hash
    for path in (work / "results" / "w" / ".done").glob("*"):
        path.unlink()
    second = reluflow(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "3 already finished (reused), 0 to compute" in second.stderr, second.stderr[-3000:]
