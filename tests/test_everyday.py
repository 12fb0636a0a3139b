"""Everyday use: `snakemake --unlock`, `-n` and `--lint` without `--cores` (`--report` of a finished run:
tests/test_study_figures.py); the config schema shipped in the package, so `reluflow check` works from any
directory; `reluflow --version`; integrate progress lines (percent done, ETA) in the log and on the console, and the
shared cluster's dashboard link on the console."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import reluflow
import reluflow.config
from reluflow import cli
from reluflow.config import find_schema, load_config_files, plan_config
from tiny_config import TINY

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ version, check, schema
def test_version():
    run = subprocess.run([sys.executable, "-m", "reluflow", "--version"], capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout == f"reluflow {reluflow.__version__}\n", run
    assert re.fullmatch(r"\d+\.\d+\.\d+", reluflow.__version__)
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0


def test_check_works_from_any_directory(tmp_path):
    config = tmp_path / "project" / "config.yaml"
    config.parent.mkdir()
    config.write_text(TINY)
    elsewhere = tmp_path / "elsewhere"  # no config.yaml, no workflow/ here or above
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-m", "reluflow", "check", "-c", str(config)], cwd=elsewhere,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "* tiny: 1 cells x 10 trajectories" in run.stdout and "config OK" in run.stdout


def test_the_schema_ships_in_the_package_and_is_the_only_one():
    schema = find_schema()
    assert schema == Path(reluflow.config.__file__).with_name("config.schema.yaml") and schema.is_file()
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "config.schema.yaml" in package_data["reluflow.config"]
    assert not (ROOT / "workflow" / "schemas").exists()  # one copy: the Snakefile validates with find_schema()
    assert "find_schema()" in (ROOT / "Snakefile").read_text()
    plan_config(load_config_files([ROOT / "config.yaml"]), schema, check=False)  # the shipped config is valid


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


def test_a_report_before_the_run_names_the_missing_file(workflow_copy):
    """`snakemake --report` shows a finished run's figures and verdicts (run without --cores, with their captions:
    tests/test_study_figures.py::test_snakemake_report_has_each_figure_and_the_verdict_with_captions); before the
    run it stops with Snakemake's one line naming the first file it would show."""
    run = subprocess.run([sys.executable, "-m", "snakemake", "--report", "report.html"], cwd=workflow_copy,
                         capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in out, out[-3000:]
    assert re.search(r"File results/tiny/\S+ marked for report but does not exist", out), out[-3000:]


# ------------------------------------------------------------------------------------------ progress on the console
def test_console_stream_is_none_without_an_open_descriptor():
    assert cli._console(None) is None
    fd = os.open(os.devnull, os.O_WRONLY)
    os.close(fd)
    assert cli._console(fd) is None  # --console-fd 3 without `3>&2`: the job runs, with its log only


def test_integrate_writes_progress_to_the_log_and_one_line_per_report_to_the_console(tmp_path):
    """The integrate rule's shell line: everything goes to the log; the progress lines (percent done, rate, ETA),
    each cell's completion and the job's dashboard also go to the console, descriptor 3, naming the study."""
    (tmp_path / "config.yaml").write_text(TINY)
    study = plan_config(load_config_files([tmp_path / "config.yaml"]), find_schema()).study("tiny")
    command = " ".join([
        "set -euo pipefail;", sys.executable, "-m", "reluflow", "integrate", "--study-json", f"'{study.to_json()}'",
        "--study-dir", str(tmp_path / "r"), "--workers", "1", "--shard-size", "5", "--execution-json", "'{}'",
        "--progress-interval", "0.001", "--console-fd", "3", "3>&2", ">", str(tmp_path / "integrate.log"), "2>&1"])
    run = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False, cwd=tmp_path)
    log = (tmp_path / "integrate.log").read_text()
    assert run.returncode == 0, log[-3000:]
    assert run.stdout == ""
    console = run.stderr.splitlines()
    progress = [line for line in console if " progress: " in line]
    assert len(progress) == 2, run.stderr  # two shards of 5, a line after each (--progress-interval 0)
    assert re.fullmatch(r"tiny progress: 1/2 shards \(50 %\), [0-9.]+ trajectories/s, ETA \d+:\d\d:\d\d",
                        progress[0]), progress
    assert re.fullmatch(r"tiny progress: 2/2 shards \(100 %\), [0-9.]+ trajectories/s, ETA 0:00:00",
                        progress[1]), progress
    dashboard = [line for line in console if "dashboard" in line]
    assert len(dashboard) == 1 and re.fullmatch(
        r"tiny dask: LocalCluster with 1 single-threaded worker processes \(dashboard http://\S+\)", dashboard[0])
    assert sorted(set(console) - set(progress) - set(dashboard)) == ["tiny cell w3: done"]
    for line in progress:  # the log has every line, the progress lines included
        assert line.removeprefix("tiny ") in log
    assert "integrate: 1 cell(s); 0 with finished tables (reused); 2 shard(s) of <= 5 trajectories" in log
    assert "wrote trajectories" in log


def test_a_stage_that_cannot_finish_ends_with_one_error_line(tmp_path, monkeypatch, capsys):
    """A stage's one-sentence failure (a lost cluster, a shard failing beyond its retries, ...) reaches the console
    as one `error:` line, after the failing task's own traceback (kept for the log), with exit status 1."""
    from reluflow import cli
    from reluflow import pipeline as stages

    def fail(*args, **kwargs):
        try:
            raise ZeroDivisionError("inside the task")
        except ZeroDivisionError as exc:
            raise stages.StageError("shard s of c failed 3 time(s): rerun to resume") from exc

    monkeypatch.setattr(stages, "write_integrate", fail)
    (tmp_path / "config.yaml").write_text(TINY)
    study = plan_config(load_config_files([tmp_path / "config.yaml"]), find_schema()).study("tiny")
    code = cli.main(["integrate", "--study-json", study.to_json(), "--study-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and err.rstrip().splitlines()[-1] == "error: shard s of c failed 3 time(s): rerun to resume"
    assert "ZeroDivisionError: inside the task" in err


def test_the_snakefile_imports_neither_pandas_nor_scipy():
    # every Snakemake start (a run, -n, --unlock, --report) imports the config to validate it: pandas and scipy
    # were ~0.4 s of a ~0.6 s import, paid before the first job, and the config needs neither
    code = ("import sys, reluflow, reluflow.config; print(sorted(m for m in ('pandas', 'scipy', 'pyarrow', "
            "'matplotlib', 'distributed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_stage_imports_leave_the_heavy_libraries_to_the_stages_that_use_them():
    # every Snakemake job and dask worker is a fresh Python that imports these modules: scipy.stats (~1 s, only the
    # aggregate stage's bootstrap needs it), matplotlib (the figure jobs) and dask (the integrate job) would add
    # their import time to every job of a run
    code = ("import sys, reluflow.config, reluflow.pipeline, reluflow.cli, reluflow.pipeline._figures, "
            "reluflow._simulate; print(sorted(m for m in ('scipy.stats', 'matplotlib', 'distributed') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
