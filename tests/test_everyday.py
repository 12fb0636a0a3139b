"""Everyday use: `snakemake --unlock`, `--report`, `-n` and `--lint` without `--cores`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# execution.workers is left at its default (null: the cores given with --cores), which is what made the Snakefile
# ask for --cores even where no job runs
TINY = """\
studies:
  tiny:
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    method: {kind: gd, step_size: 0.05, n_steps: 20, n_checkpoints: 3}
    grid:
      problem.network.widths: [[3]]
    n_trajectories: 10
    seed: 3
execution:
  shard_size: 5
"""


# ------------------------------------------------------------------------------------------ snakemake, no --cores
@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    """The workflow (Snakefile, rules, profiles) and a small config in a directory of their own: Snakemake run
    there exactly as docs/running.md writes the commands, without touching the repository's .snakemake/."""
    d = tmp_path_factory.mktemp("workflow")
    shutil.copy(ROOT / "Snakefile", d)
    shutil.copytree(ROOT / "workflow", d / "workflow")
    shutil.copytree(ROOT / "profiles", d / "profiles")
    (d / "config.yaml").write_text(TINY)
    return d


@pytest.mark.parametrize(("command", "says"), [
    ("snakemake --unlock", "Unlocked working directory"),
    ("snakemake --report report.html", "Report created"),
    ("snakemake -n", "This was a dry-run"),
    ("snakemake --lint", "Congratulations"),
])
def test_snakemake_commands_that_run_no_job_need_no_cores(workflow_copy, command, says):
    assert command in (ROOT / "docs" / "running.md").read_text()  # verbatim, as documented
    run = subprocess.run([sys.executable, "-m", *command.split()], cwd=workflow_copy, capture_output=True,
                         text=True, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert says in out, out[-3000:]
    if "--report" in command:
        assert (workflow_copy / "report.html").stat().st_size > 0
