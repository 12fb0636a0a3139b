"""Every shell command in docs/running.md (and in README.md) is run by a test, or says why it cannot run here.

``COMMANDS`` maps each command of the fenced shell blocks to how it is tested:

- ``Here``: run by this file, verbatim (placeholders such as ``/path/to/config.yaml`` filled in), in a temporary
  copy of the workflow with a tiny config; a command that would run jobs runs as a dry run (``-n`` appended), which
  still checks what the docs promise of it: the targets, the config merging, the workers, the resources;
- ``Elsewhere``: run by another test (named, and checked to exist and to hold the command);
- ``NotRun``: a reason it cannot run in a test (it installs from the network, or it is the test suite itself),
  with a check of what can be checked.

``test_every_documented_command_is_mapped`` fails when a command is added to the docs without an entry here, or
when an entry's command is no longer in the docs.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import reluflow
from tiny_config import STUDY, TINY

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "running.md", ROOT / "README.md"]
SHELL_BLOCK = re.compile(r"^```(?:bash|sh|shell|console|zsh)[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
BIN = Path(sys.executable).parent  # where the environment's `python`, `snakemake`, `reluflow`, `dask` are
TIMEOUT = 180  # seconds, any one command

MYSTUDY = f"studies:\n  mystudy:\n{STUDY}"
TWO = f"studies:\n  tiny:\n{STUDY}  mystudy:\n{STUDY}run: [tiny]\nexecution:\n  shard_size: 5\n"


# ------------------------------------------------------------------------------------------ extraction
def _words(line: str) -> list[tuple[str, bool]]:
    """``line`` as (character, quoted) pairs, up to a ``#`` comment outside quotes."""
    out: list[tuple[str, bool]] = []
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
            out.append((ch, True))
        elif ch in "'\"":
            quote = ch
            out.append((ch, True))
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            break
        else:
            out.append((ch, False))
    return out


def block_commands(block: str) -> list[str]:
    """The commands of a shell block: comments dropped, continued lines joined, ``a && b`` as two commands,
    runs of whitespace outside quotes as one space; a trailing ``&`` (run in the background) is kept."""
    commands, pending = [], ""
    for raw in block.splitlines():
        line = "".join(ch for ch, _ in _words(raw)).rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        part: list[str] = []
        chars, i = _words(line), 0
        while i < len(chars):
            ch, quoted = chars[i]
            if not quoted and chars[i:i + 2] == [("&", False), ("&", False)]:
                commands.append("".join(part))
                part, i = [], i + 2
                continue
            if not quoted and ch.isspace():
                if part and part[-1] != " ":
                    part.append(" ")
            else:
                part.append(ch)
            i += 1
        commands.append("".join(part))
    return [c.strip() for c in commands if c.strip()]


def documented_commands() -> dict[str, list[str]]:
    """{command: [the files that show it]} for every fenced shell block of ``DOCS``."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for block in SHELL_BLOCK.findall(path.read_text()):
            for command in block_commands(block):
                found.setdefault(command, []).append(path.name)
    return found


def test_extraction_reads_comments_continuations_quotes_and_chains():
    block = ("# a comment line\n"
             "a --x 1      # trailing comment\n"
             "VAR=1 \\\n  b --y 'q # not a comment' &\n"
             "c && d --z \"e && f\"\n")
    assert block_commands(block) == ["a --x 1", "VAR=1 b --y 'q # not a comment' &", "c", "d --z \"e && f\""]


# ------------------------------------------------------------------------------------------ the mapping
@dataclass(frozen=True)
class Here:
    """Run by ``test_documented_command`` in a copy of the workflow (Snakefile, workflow/, profiles/)."""

    config: str | None = TINY  # config.yaml of the copy (None: the shipped one)
    files: dict[str, str] = field(default_factory=dict)  # more files in the copy
    fill: dict[str, str] = field(default_factory=dict)  # placeholder -> value ({copy}: the copy's path)
    append: str = ""  # " -n": a dry run
    cwd: str = "."  # relative to the copy
    says: tuple[str, ...] = ()  # regexes the output must match
    not_says: tuple[str, ...] = ()  # regexes it must not match
    slow: bool = False  # run with pytest -m slow (each Snakemake dry run costs ~3 s)


@dataclass(frozen=True)
class Elsewhere:
    """Run by another test: ``test`` is ``tests/FILE.py::NAME`` (a test or fixture), whose file holds
    ``evidence``, the command as that test writes it."""

    test: str
    evidence: str


@dataclass(frozen=True)
class NotRun:
    """Not run by any test, for ``reason``; ``check`` checks what can be checked."""

    reason: str
    check: Callable[[], None] | None = None


def _ci_runs_the_readme_line() -> None:
    """The README's install-and-test line is what CI (.ci/run) runs, verbatim."""
    readme = SHELL_BLOCK.findall((ROOT / "README.md").read_text())[0].splitlines()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_line = next(line for line in readme if "pytest" in line)
    assert test_line in ci, (test_line, ci)


def _cluster_extra_installs_the_slurm_tools() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", req)[0] for req in extras["cluster"]}
    assert names == {"dask-jobqueue", "snakemake-executor-plugin-slurm"}, extras["cluster"]


def _integrate_job(pattern: str) -> str:
    """A regex: the dry run's integrate job, whose lines (up to its shell command) include ``pattern``."""
    return r"rule integrate:\n(?:    .*\n)*?(?:    |Shell command: ).*" + pattern


def _jobqueue_configs() -> list[str]:
    """TINY with the execution settings of each of docs/running.md's jobqueue examples (the first is the one
    tests/test_slurm.py runs on SLURM; the others plan larger runs)."""
    text = (ROOT / "docs" / "running.md").read_text()
    blocks = [b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S) if "scheduler: jobqueue" in b]
    assert blocks
    configs = []
    for block in blocks:
        config = yaml.safe_load(TINY)
        config["execution"] = yaml.safe_load(block)["execution"]
        configs.append(json.dumps(config))
    return configs


def _yaml_block(marker: str) -> str:
    """The yaml block of docs/running.md that mentions ``marker``."""
    text = (ROOT / "docs" / "running.md").read_text()
    (block,) = [b for b in re.findall(r"^```yaml\n(.*?)^```", text, re.M | re.S) if marker in b]
    return block


def _ci_brings_slurm_up_and_down() -> None:
    """.ci/run starts SLURM before the README's test line and stops it on exit, whatever the tests do."""
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_line = next(i for i, line in enumerate(ci) if "pytest -m slurm" in line)
    assert ".ci/slurm up" in ci[:test_line] and "trap '.ci/slurm down' EXIT" in ci[:test_line], ci


INSTALL = "sets up the environment the tests run in, from the network; CI (.ci/run) runs this line in a fresh venv"
EVERYDAY = "tests/test_everyday.py::test_snakemake_commands_that_run_no_job_need_no_cores"
SLOW_ADDRESS = "tests/test_docs_commands.py::test_the_existing_dask_cluster_block_runs_as_documented"
RUNS_THE_BLOCK = "assert commands == mapped"  # that test runs the block's lines, the commands mapped to it
SCHEDULER_FILE = "tests/test_cluster.py::test_the_scheduler_file_block_runs_as_documented"
RUNS_THE_FILE_BLOCK = '"dask scheduler --scheduler-file" in b'  # that test runs the block that holds it
DRY_SLURM = " -n --executor dryrun"  # the slurm executor plugin need not be installed: the profile still applies

COMMANDS: dict[str, Here | Elsewhere | NotRun] = {
    # setup and the test suite (README.md, docs/running.md)
    "python3 -m venv .venv": NotRun(INSTALL, _ci_runs_the_readme_line),
    ". .venv/bin/activate": NotRun(INSTALL, _ci_runs_the_readme_line),
    "pip install -q -e '.[test,fast]'": NotRun(INSTALL, _ci_runs_the_readme_line),
    "pip install -q -e '.[test,fast,cluster]'": NotRun(INSTALL, _ci_runs_the_readme_line),
    "ruff check .": NotRun("the lint of the whole suite: CI (.ci/run) runs it", _ci_runs_the_readme_line),
    "pytest": NotRun("the test suite itself: CI (.ci/run) runs it", _ci_runs_the_readme_line),
    "pytest -m slow": NotRun("the slow tests themselves: CI (.ci/run) runs them", _ci_runs_the_readme_line),
    "pytest -m slurm": NotRun("the SLURM tests themselves: CI (.ci/run) runs them after .ci/slurm up",
                              _ci_runs_the_readme_line),
    # a SLURM to try it on: CI brings it up before the tests and down after
    ".ci/slurm up": NotRun("starts daemons as root on the machine: CI (.ci/run) runs it before the tests",
                           _ci_brings_slurm_up_and_down),
    ".ci/slurm down": NotRun("stops the daemons .ci/slurm up started: CI (.ci/run) runs it when it ends",
                             _ci_brings_slurm_up_and_down),
    "pip install -e '.[cluster]'": NotRun("installs the SLURM tools from the network",
                                          _cluster_extra_installs_the_slurm_tools),
    # everyday commands
    "snakemake --cores 2": Elsewhere("tests/test_pipeline_workflow.py::e2e", 'snakemake(d, "--cores", "2")'),
    "python -m reluflow check": Here(config=None, says=(r"(?m)^\* \w+: \d+ cells x \d+ trajectories", "config OK")),
    "reluflow check -c /path/to/config.yaml": Here(
        fill={"/path/to/config.yaml": "{copy}/config.yaml"}, cwd="elsewhere",
        says=(r"(?m)^\* tiny: 1 cells x 10 trajectories, seed 3$", "config OK")),
    "reluflow --version": Here(says=(rf"\Areluflow {re.escape(reluflow.__version__)}\n\Z",)),
    "snakemake -n": Elsewhere(EVERYDAY, '"snakemake -n"'),
    "snakemake --cores 8": Here(append=" -n", says=(_integrate_job(r"--workers 8 "),), slow=True),  # 8 workers
    "snakemake --cores 2 results/mystudy/summary.parquet": Here(
        config=TWO, append=" -n", says=(_integrate_job("results/mystudy/trajectories"), r"rule aggregate:"),
        not_says=("results/tiny/", r"rule \w+_figures:")),  # one study's summary and what it needs, no more
    "snakemake --cores 2 --configfile mystudies.yaml": Here(
        files={"mystudies.yaml": MYSTUDY}, append=" -n",
        says=("results/tiny/summary.parquet", "results/mystudy/summary.parquet")),
    "snakemake --cores 2 --config 'run=[mystudy]'": Here(
        config=TWO, append=" -n", says=("results/mystudy/summary.parquet",), not_says=("results/tiny/",)),
    "snakemake --cores 2 --forcerun integrate": Here(append=" -n", says=(_integrate_job("reason: Forced execution"),)),
    "snakemake --lint": Elsewhere(EVERYDAY, '"snakemake --lint"'),
    "snakemake --unlock": Elsewhere(EVERYDAY, '"snakemake --unlock"'),
    "snakemake --report report.html": Elsewhere(
        "tests/test_study_figures.py::test_snakemake_report_has_each_figure_and_the_verdict_with_captions",
        '"snakemake --report report.html"'),
    # an existing dask cluster: the three lines together, slow
    "dask scheduler --port 8786 &": Elsewhere(SLOW_ADDRESS, RUNS_THE_BLOCK),
    "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 MALLOC_TRIM_THRESHOLD_=134217728 "
    "MALLOC_MMAP_THRESHOLD_=33554432 DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False dask worker tcp://HOST:8786 "
    "--nworkers 16 --nthreads 1 --preload reluflow._simulate &": Elsewhere(SLOW_ADDRESS, RUNS_THE_BLOCK),
    "DASK_SCHEDULER_ADDRESS=tcp://HOST:8786 snakemake --cores 4 --config 'execution={scheduler: address}'":
        Elsewhere(SLOW_ADDRESS, RUNS_THE_BLOCK),
    # an existing scheduler found through its scheduler file: the three lines together, slow
    "dask scheduler --scheduler-file scheduler.json &": Elsewhere(SCHEDULER_FILE, RUNS_THE_FILE_BLOCK),
    "dask worker --scheduler-file scheduler.json --nworkers 2 --nthreads 1 --preload reluflow._simulate &":
        Elsewhere(SCHEDULER_FILE, RUNS_THE_FILE_BLOCK),
    "snakemake --cores 2 --config 'execution={scheduler: address, scheduler_file: scheduler.json}'":
        Elsewhere(SCHEDULER_FILE, RUNS_THE_FILE_BLOCK),
    # SLURM through the executor plugin: run on SLURM (pytest -m slurm), and sized for a larger one as a dry run
    # (the slurm executor plugin need not be installed: the profile still applies)
    "snakemake --workflow-profile profiles/slurm": Elsewhere(
        "tests/test_slurm.py::test_snakemake_on_slurm_gives_the_tables_of_a_local_run",
        '_documented("snakemake --workflow-profile profiles/slurm")'),
    "snakemake --workflow-profile profiles/slurm --set-threads integrate=32 --default-resources slurm_account=abc123 "
    "slurm_partition=cpu": Here(
        append=DRY_SLURM, says=(_integrate_job("slurm_account=abc123, slurm_partition=cpu"),
                                _integrate_job("runtime=720")), slow=True),
    # planning 100 nodes: the documented settings, as dry runs
    "snakemake --cores 4 --configfile cluster100.yaml": Here(
        files={"cluster100.yaml": _yaml_block("cluster100.yaml")}, append=" -n",
        says=(_integrate_job("--workers 1 "),), slow=True),  # the driver: one core; the workers are SLURM's
    "snakemake --workflow-profile profiles/slurm --jobs 100 --set-threads integrate=32 "
    "--set-resources integrate:mem_mb=120000": Here(append=DRY_SLURM, says=(_integrate_job("mem_mb=120000"),),
                                                    slow=True),
    # SLURM through dask-jobqueue: the documented execution settings, run on SLURM (pytest -m slurm)
    "snakemake --cores 4": Elsewhere("tests/test_slurm.py::test_jobqueue_on_slurm_gives_the_tables_of_a_local_run_"
                                     "and_releases_its_jobs", '_documented("snakemake --cores 4")'),
}


def test_every_documented_command_is_mapped():
    documented = documented_commands()
    unmapped = sorted(set(documented) - set(COMMANDS))
    assert not unmapped, (f"commands in {sorted({f for c in unmapped for f in documented[c]})} that no test runs: "
                          f"{unmapped}; add each to COMMANDS in tests/test_docs_commands.py with how it is tested")
    stale = sorted(set(COMMANDS) - set(documented))
    assert not stale, f"COMMANDS lists commands no longer in {[p.name for p in DOCS]}: {stale}"


def _defined(path: Path) -> set[str]:
    return {node.name for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if isinstance(how, Elsewhere)])
def test_commands_run_elsewhere_are_in_the_named_test(command):
    how = COMMANDS[command]
    path, name = how.test.split("::")
    assert name in _defined(ROOT / path), f"{how.test} does not exist"
    assert how.evidence in (ROOT / path).read_text(), f"{path} does not run {how.evidence}"


@pytest.mark.parametrize("command", [c for c, how in COMMANDS.items() if isinstance(how, NotRun)])
def test_commands_not_run_say_why(command):
    how = COMMANDS[command]
    assert how.reason
    if how.check is not None:
        how.check()


# ------------------------------------------------------------------------------------------ running them here
def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def _workflow_copy(d: Path, config: str | None) -> Path:
    d.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", d)
    shutil.copytree(ROOT / "workflow", d / "workflow")
    shutil.copytree(ROOT / "profiles", d / "profiles")
    if config is None:
        shutil.copy(ROOT / "config.yaml", d)
    else:
        (d / "config.yaml").write_text(config)
    (d / "elsewhere").mkdir()
    return d


def _run_here(command: str, how: Here, d: Path) -> tuple[str, subprocess.CompletedProcess]:
    _workflow_copy(d, how.config)
    for name, text in how.files.items():
        (d / name).write_text(text)
    line = command
    for placeholder, value in how.fill.items():
        line = line.replace(placeholder, value.format(copy=d))
    line += how.append
    run = subprocess.run(["bash", "-c", line], cwd=d / how.cwd, env=_env(), capture_output=True, text=True,
                         check=False, timeout=TIMEOUT)
    return line, run


@pytest.mark.parametrize("command", [
    pytest.param(c, marks=[pytest.mark.slow] if how.slow else []) for c, how in COMMANDS.items()
    if isinstance(how, Here)])
def test_documented_command(tmp_path, command):
    how = COMMANDS[command]
    line, run = _run_here(command, how, tmp_path / "wf")
    out = run.stdout + run.stderr
    assert run.returncode == 0, f"{line}\n{out[-3000:]}"
    for pattern in how.says:
        assert re.search(pattern, out), f"{line}: no {pattern!r} in\n{out[-3000:]}"
    for pattern in how.not_says:
        assert not re.search(pattern, out), f"{line}: {pattern!r} in\n{out[-3000:]}"


def test_the_jobqueue_example_is_a_valid_config(tmp_path):
    """The fast part of the jobqueue command's check: docs/running.md's execution settings pass the schema and the
    package's checks (the dry run with them is slow)."""
    from reluflow.config import find_schema, load_config_files, plan_config

    for i, text in enumerate(_jobqueue_configs()):
        (tmp_path / f"config{i}.yaml").write_text(text)
        execution = plan_config(load_config_files([tmp_path / f"config{i}.yaml"]), find_schema()).execution
        assert execution.scheduler == "jobqueue" and execution.worker_processes(None) >= 2
        assert execution.minimum_jobs <= execution.n_workers(None)


# ------------------------------------------------------------------------------------------ an existing cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group the script started (scheduler, workers): SIGTERM, then SIGKILL after 20 s."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_existing_dask_cluster_block_runs_as_documented(tmp_path):
    """docs/running.md's "An existing dask cluster" block, line for line: a scheduler, workers with the documented
    settings, and a full Snakemake run of a tiny study on them; HOST is this machine, 8786 a free port, and 2
    workers instead of 16."""
    text = (ROOT / "docs" / "running.md").read_text()
    (block,) = [b for b in SHELL_BLOCK.findall(text) if "dask scheduler --port" in b]
    commands = block_commands(block)
    mapped = [c for c, how in COMMANDS.items() if isinstance(how, Elsewhere) and how.test == SLOW_ADDRESS]
    assert commands == mapped  # the commands COMMANDS says this test runs, in the documented order
    port = str(_free_port())
    script = "\n".join(c.replace("HOST", "127.0.0.1").replace("8786", port).replace("--nworkers 16", "--nworkers 2")
                       for c in commands)
    d = _workflow_copy(tmp_path / "wf", TINY)
    with open(d / "console.txt", "w") as console:  # background processes keep no pipe of ours open
        proc = subprocess.Popen(["bash", "-c", script], cwd=d, env=_env(), stdout=console, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=480)
        finally:
            _stop_group(proc)
    out = (d / "console.txt").read_text()
    assert rc == 0, out[-4000:]
    log = (d / "logs" / "tiny" / "integrate.log").read_text()
    assert f"dask: existing scheduler at tcp://127.0.0.1:{port}" in log, log[-3000:]
    assert "integrate done: 0 cell(s) reused; 0 shard(s) reused, 2 computed" in log, log[-3000:]
    assert (d / "results" / "tiny" / "summary.parquet").is_file()
