"""The integrate stage: identical tables whatever the worker count and shard size, equal to simulate; a killed
job resumes from its finished shards and gives the identical table."""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from reluflow._simulate import simulate
from reluflow.config import Execution, load_config_files, plan_config
from reluflow.pipeline import read_final, read_metadata

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package

CONFIG = """\
studies:
  {name}:
    problem:
      network: {{input_dim: 1, widths: [{width}]}}
      measure: {{kind: uniform, low: 0.0, high: 1.0}}
      target: {{kind: piecewise_affine, knots: [0.0, 0.3, 1.0], values: [0.0, 1.0, -0.5]}}
    grid:
      method:
        - {method}
    n_trajectories: {n}
    seed: 11
execution:
  workers: {workers}
  shard_size: {shard_size}
  keep_shards: true
"""


def _study(tmp_path: Path, text: str):
    (tmp_path / "config.yaml").write_text(text)
    plan = plan_config(load_config_files([tmp_path / "config.yaml"]), SCHEMA)
    return plan.studies[plan.run[0]]


def _cell(tmp_path: Path, text: str):
    return next(iter(_study(tmp_path, text).cells.values()))


def _reference(cell):
    """The same cell through the Python API, in this process, no dask, no files: ``Simulation``."""
    return simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=cell.n_trajectories,
                    seed=cell.seed)


def _without_cell(df: pd.DataFrame) -> pd.DataFrame:
    assert df.columns[0] == "cell"
    return df.drop(columns="cell")


def _assert_same(table: pd.DataFrame, reference: pd.DataFrame) -> None:
    # every value, bit for bit; strings may come back as pandas' str dtype rather than object
    pd.testing.assert_frame_equal(table, reference, check_exact=True, check_dtype=False)
    for col in reference.columns:
        if reference[col].dtype.kind in "iufb":
            assert table[col].dtype == reference[col].dtype, col


RUNS = [(1, 1000), (2, 7)]  # worker count and shard size both change; the e2e test adds (1 worker, 7)


@pytest.mark.parametrize("runs", [RUNS, pytest.param([(1, 7), (2, 1000)], marks=pytest.mark.slow)],
                         ids=["fast", "other-pairs"])
def test_same_tables_for_any_worker_count_and_shard_size(tmp_path, runs):
    """1 vs 2 workers and shard sizes 7 vs 1000, through the CLI entry point (one interpreter, a LocalCluster
    per run), each table equal to reluflow._simulate.simulate for the same cell and seed, so equal to each
    other; the slow variant runs the other two combinations."""
    method = "{kind: gd, step_size: 0.05, n_steps: 40, n_checkpoints: 4}"
    study = _study(tmp_path, CONFIG.format(name="ident", width=3, method=method, n=20, workers=1, shard_size=7))
    cell = next(iter(study.cells.values()))
    script = textwrap.dedent(f"""
        if __name__ == "__main__":  # local dask workers start with spawn
            from reluflow.cli import main
            study = {study.to_json()!r}
            out = {str(tmp_path)!r}
            for workers, shard in {runs!r}:
                tag = f"{{workers}}-{{shard}}"
                assert main(["integrate", "--study-json", study, "--study-dir", out + f"/r-{{tag}}",
                             "--workers", str(workers), "--shard-size", str(shard), "--execution-json", "{{}}"]) == 0
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "LocalCluster with 2 single-threaded worker processes" in run.stderr
    assert re.search(r"progress: \d/\d shards \(\d+ %\), [0-9.]+ trajectories/s, ETA \d+:\d\d:\d\d", run.stderr)

    ref_traj, ref_curves, ref_states = _reference(cell)
    assert len(ref_traj) == 20 and ref_traj["trajectory"].tolist() == list(range(20))
    ref_final = np.stack(ref_states["theta_final"].to_numpy())
    for workers, shard in runs:
        res = tmp_path / f"r-{workers}-{shard}"
        _assert_same(_without_cell(pd.read_parquet(res / "trajectories" / f"{cell.id}.parquet")), ref_traj)
        _assert_same(_without_cell(pd.read_parquet(res / "curves" / f"{cell.id}.parquet")), ref_curves)
        ids, final, refined = read_final(res / "final" / f"{cell.id}.parquet")
        assert ids.tolist() == list(range(20))
        np.testing.assert_array_equal(final, ref_final)
        has = ref_states["theta_refined"].map(lambda v: v is not None).to_numpy()
        assert (~np.isnan(refined).any(axis=1) == has).all()
        if has.any():
            np.testing.assert_array_equal(refined[has], np.stack(ref_states["theta_refined"].to_numpy()[has]))
        assert not (res / ".shards" / cell.id).exists()  # shards are removed once the tables are written
        assert read_metadata(res / "trajectories" / f"{cell.id}.parquet")["reluflow.shard_size"] == str(shard)


def _integrate_driver(root: psutil.Process) -> psutil.Process | None:
    for p in root.children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if cmd and "python" in Path(cmd[0]).name and "reluflow" in cmd and "integrate" in cmd:
            return p
    return None


def _kill_tree(proc: psutil.Process) -> None:
    """SIGKILL a process and everything under it at once (like a node failure or an out-of-time job)."""
    procs = [proc, *proc.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs)


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_killed_integrate_job_resumes_from_finished_shards(tmp_path):
    method = "{kind: gd, step_size: 0.02, n_steps: 120, n_checkpoints: 5, refine: false}"
    cell = _cell(tmp_path, CONFIG.format(name="resume", width=8, method=method, n=40, workers=1, shard_size=2))
    target = f"results/resume/trajectories/{cell.id}.parquet"
    snakemake_target = "results/resume/trajectories"  # the integrate job's output (one directory per table)
    shard_dir = tmp_path / "results" / "resume" / ".shards" / cell.id
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(tmp_path), "--cores", "1",
           snakemake_target]

    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # wait until a few shards are finished (a shard's trajectories file is written last), then kill the job
        deadline = time.monotonic() + 300
        while len(list(shard_dir.glob("*.trajectories.parquet"))) < 3:
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "no shard finished within 300 s"
            time.sleep(0.02)
        driver = _integrate_driver(psutil.Process(first.pid))
        assert driver is not None
        _kill_tree(driver)
        out = first.communicate()[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, out[-3000:]
    finished = sorted(shard_dir.glob("*.trajectories.parquet"))
    assert 3 <= len(finished) < 20, "the job was not killed mid-run"
    assert not (tmp_path / target).exists()  # no half-written final table
    mtimes = {p: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}

    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    log = (tmp_path / "logs" / "resume" / "integrate.log").read_text()
    m = re.search(r"(\d+) already finished \(reused\), (\d+) to compute", log)
    assert m, log[-2000:]
    assert int(m.group(1)) == len(finished) and int(m.group(2)) == 20 - len(finished)
    for path, mtime in mtimes.items():  # the finished shards were not recomputed
        if path.name.endswith(".trajectories.parquet"):
            assert path.stat().st_mtime_ns == mtime, path.name

    ref_traj, ref_curves, _ = _reference(cell)
    _assert_same(_without_cell(pd.read_parquet(tmp_path / target)), ref_traj)
    curves = tmp_path / "results" / "resume" / "curves" / f"{cell.id}.parquet"
    _assert_same(_without_cell(pd.read_parquet(curves)), ref_curves)


def _real_shard(cell, shard):
    """The tables ``run_shard`` returns for ``shard``, computed in this process."""
    from reluflow import Problem
    from reluflow.dynamics import initialize
    from reluflow.pipeline._stages import run_shard

    theta0 = initialize(Problem.from_dict(cell.problem), cell.init, np.arange(shard.start, shard.stop), cell.seed)
    return run_shard(cell, shard.start, shard.stop, theta0)


def test_stale_shards_are_not_reused(tmp_path, caplog):
    """A shard made for other parameters, seed, code or table schema is recomputed, never mixed in, and the
    rejection is logged once, with its reason; the git commit is not compared, and no missing key raises."""
    from reluflow.pipeline._stages import Shard, _shard_is_finished, _shard_meta, plan_shards
    from reluflow.pipeline._tables import source_hash, write_table

    method = "{kind: gd, step_size: 0.05, n_steps: 5, n_checkpoints: 2}"
    cell = _cell(tmp_path, CONFIG.format(name="stale", width=2, method=method, n=10, workers=1, shard_size=4))
    shards = plan_shards(cell, 4)
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 8), (8, 10)]
    assert all(f"k{cell.key:016x}" in s.stem and "-s11-" in s.stem for s in shards)
    assert {s.stem for s in plan_shards(cell, 5)}.isdisjoint(s.stem for s in shards)  # shard size is in the name
    shard: Shard = shards[0]
    tables = _real_shard(cell, shard)
    paths = shard.paths(tmp_path)
    traj_path, curves_path = paths["trajectories"], paths["curves"]
    meta = _shard_meta(cell, shard, "trajectories")
    for table in ("curves", "final"):
        write_table(tables[table], paths[table], _shard_meta(cell, shard, table))

    def finished_with(traj_meta: dict[str, str]) -> tuple[bool, list[str]]:
        write_table(tables["trajectories"], traj_path, traj_meta)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="reluflow.pipeline"):
            ok = _shard_is_finished(cell, shard, tmp_path)
        return ok, [r.getMessage() for r in caplog.records]

    assert finished_with(meta) == (True, [])
    other = dataclasses.replace(cell, method={**cell.method, "step_size": 0.06})
    assert not _shard_is_finished(other, shard, tmp_path)  # same file name, other parameters
    ok, logged = finished_with({**meta, "reluflow.source_hash": "0" * 64})  # other code
    here = source_hash()
    assert not ok and logged == [f"shard {shard.stem}: written by other code (reluflow.source_hash "
                                 f"000000000000... != {here[:12]}...), recomputing"]
    ok, logged = finished_with({**meta, "reluflow.schema_version": "1"})
    assert not ok and logged == [f"shard {shard.stem}: written by another table schema (reluflow.schema_version 1 "
                                 "!= 2), recomputing"]
    # a shard from before source hashes and schema versions, without a git commit either (a wheel): no KeyError
    old = {k: v for k, v in meta.items()
           if k not in ("reluflow.source_hash", "reluflow.schema_version", "reluflow.git_commit")}
    ok, logged = finished_with(old)
    assert not ok and logged == [f"shard {shard.stem}: written by other code (reluflow.source_hash (none recorded) "
                                 f"!= {here[:12]}...), recomputing"]
    # the commit is not what identifies the code: another one (or none) with the same source is the same code
    assert finished_with({**meta, "reluflow.git_commit": "0" * 40}) == (True, [])
    assert finished_with({k: v for k, v in meta.items() if k != "reluflow.git_commit"}) == (True, [])
    os.remove(curves_path)
    assert finished_with(meta) == (False, [])  # curves missing: not finished (nothing on disk to reject)


def test_shards_resume_without_a_git_checkout(tmp_path, monkeypatch):
    """Issue #17: reluflow installed from a wheel knows no git commit; checking a shard raised
    KeyError('reluflow.git_commit'). Without a commit, shards written by the same code are reused."""
    from reluflow.pipeline import _tables
    from reluflow.pipeline._stages import _shard_is_finished, _shard_meta, plan_shards

    monkeypatch.setattr(_tables, "git_commit", lambda: None)
    monkeypatch.setattr(_tables, "git_dirty", lambda: None)
    method = "{kind: gd, step_size: 0.05, n_steps: 5, n_checkpoints: 2}"
    cell = _cell(tmp_path, CONFIG.format(name="wheel", width=2, method=method, n=4, workers=1, shard_size=4))
    shard = plan_shards(cell, 4)[0]
    tables = _real_shard(cell, shard)
    for table, path in shard.paths(tmp_path).items():
        meta = _shard_meta(cell, shard, table)
        assert "reluflow.git_commit" not in meta and "reluflow.git_dirty" not in meta
        _tables.write_table(tables[table], path, meta)
    assert _shard_is_finished(cell, shard, tmp_path)
    # a shard that does record a commit (written from a checkout of the same source) is the same code
    traj_path = shard.paths(tmp_path)["trajectories"]
    _tables.write_table(tables["trajectories"], traj_path,
                        {**_shard_meta(cell, shard, "trajectories"), "reluflow.git_commit": "1" * 40})
    assert _shard_is_finished(cell, shard, tmp_path)


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_resume_recomputes_a_shard_written_by_other_code(tmp_path):
    """Through the CLI: integrate keeping its shards; one shard's metadata is rewritten as if other code had made
    it; the next integrate reuses the others, recomputes that one with a warning naming it, and the tables equal
    simulate's."""
    import pyarrow.parquet as pq

    method = "{kind: gd, step_size: 0.05, n_steps: 20, n_checkpoints: 3, refine: false}"
    study = _study(tmp_path, CONFIG.format(name="recode", width=3, method=method, n=9, workers=1, shard_size=3))
    cell = next(iter(study.cells.values()))
    script = textwrap.dedent(f"""
        import shutil
        import sys
        import pyarrow.parquet as pq
        from pathlib import Path
        if __name__ == "__main__":  # local dask workers start with spawn
            from reluflow.cli import main
            study, out = {study.to_json()!r}, Path({str(tmp_path)!r})
            args = ["integrate", "--study-json", study, "--study-dir", str(out / "r"),
                    "--workers", "1", "--shard-size", "3", "--execution-json", '{{"keep_shards": true}}']
            assert main(args) == 0
            shutil.rmtree(out / "r" / ".done")  # as if the job had been killed before the cell was merged
            victim = sorted((out / "r" / ".shards" / {cell.id!r}).glob("*.trajectories.parquet"))[1]
            table = pq.read_table(victim)
            meta = dict(table.schema.metadata)
            meta[b"reluflow.source_hash"] = b"f" * 64
            pq.write_table(table.replace_schema_metadata(meta), victim)
            print("REWRITTEN", victim.name, file=sys.stderr, flush=True)
            assert main(args) == 0
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    second = run.stderr.split("REWRITTEN ", 1)[1]
    victim = second.split()[0]
    stem = victim.removesuffix(".trajectories.parquet")
    warnings = [line for line in second.splitlines() if "recomputing" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], second[-3000:]
    assert f"shard {stem}: written by other code (reluflow.source_hash ffffffffffff... != " in warnings[0]
    assert "3 shard(s) of <= 3 trajectories, 2 already finished (reused), 1 to compute" in second
    res = tmp_path / "r"
    assert read_metadata(res / ".shards" / cell.id / victim)["reluflow.source_hash"] != "f" * 64  # written again
    ref_traj, ref_curves, _ = _reference(cell)
    _assert_same(_without_cell(pd.read_parquet(res / "trajectories" / f"{cell.id}.parquet")), ref_traj)
    _assert_same(_without_cell(pd.read_parquet(res / "curves" / f"{cell.id}.parquet")), ref_curves)
    schema = pq.read_schema(res / "trajectories" / f"{cell.id}.parquet")
    assert schema.metadata[b"reluflow.schema_version"] == b"2"


@pytest.mark.slow
def test_snakemake_run_is_independent_of_execution_settings(tmp_path):
    """Slow: the same study through Snakemake with two execution settings gives identical tables."""
    method = "{kind: gf, solver: dopri5, t_end: 2.0, n_checkpoints: 4}"
    tables = []
    for workers, shard in ((1, 1), (2, 1000)):
        d = tmp_path / f"{workers}-{shard}"
        d.mkdir()
        cell = _cell(d, CONFIG.format(name="exec", width=4, method=method, n=12, workers=workers,
                                      shard_size=shard))
        run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(d), "--cores",
                              "2"], cwd=d, capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        tables.append(pd.read_parquet(d / "results" / "exec" / "trajectories" / f"{cell.id}.parquet"))
    pd.testing.assert_frame_equal(tables[0], tables[1], check_exact=True)


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_keeps_finished_shards(tmp_path):
    """Slow: SIGTERM (a SLURM time limit, scancel) unwinds the driver: exit status 143, the dask workers are gone,
    no final or temporary table is left, and the finished shards stay for the next run."""
    method = "{kind: gd, step_size: 0.02, n_steps: 200, n_checkpoints: 3, refine: false}"
    study = _study(tmp_path, CONFIG.format(name="term", width=8, method=method, n=40, workers=1, shard_size=2))
    cell = next(iter(study.cells.values()))
    res = tmp_path / "r"
    shards = res / ".shards" / cell.id
    proc = subprocess.Popen([sys.executable, "-m", "reluflow", "integrate", "--study-json", study.to_json(),
                             "--study-dir", str(res), "--workers", "1", "--shard-size", "2", "--execution-json",
                             "{}"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(shards.glob("*.trajectories.parquet"))) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shard finished within 300 s"
        time.sleep(0.02)
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate()[1]
    assert proc.returncode == 143, err[-3000:]
    psutil.wait_procs(children)  # the workers exit once the driver has shut its cluster down
    assert not (res / "trajectories" / f"{cell.id}.parquet").exists() and not (res / ".done").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]
    assert len(list(shards.glob("*.trajectories.parquet"))) >= 2


_WORKER_PROBE = """
import os, sys
import dask
from reluflow.pipeline._cluster import BACKGROUND_INTERVALS, dask_client

def probe():
    import dask
    return ({k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS")},
            "reluflow._simulate" in sys.modules, dask.config.get("distributed.worker.profile.enabled"),
            [dask.config.get(k) for k in BACKGROUND_INTERVALS])

if __name__ == "__main__":
    with dask_client("local", workers=1) as client:
        worker = list(client.run(probe).values())[0]
        here = [dask.config.get(k) for k in BACKGROUND_INTERVALS]
        print(repr((*worker, client.run_on_scheduler(probe)[3], here)))
    # leaving the client restores the config, and keeps distributed's defaults (imported inside it)
    print(repr(dask.config.get("distributed.scheduler.allowed-failures")))
"""


@pytest.mark.parametrize("user_set", [False, True])
def test_local_workers_get_malloc_settings_blas_pinning_and_the_stack_preloaded(tmp_path, user_set):
    """dask's nanny default MALLOC_TRIM_THRESHOLD_=65536 made workers ~1.5x slower, its profiler ~20 % on small
    shards, its 20 ms event-loop ticks and 100 ms memory polls ~7 % of a core per idle cluster
    (bench/README.md); ours replace them unless the user set them."""
    import dask
    import distributed  # noqa: F401  (its defaults, to compare with)

    from reluflow.pipeline._cluster import BACKGROUND_INTERVALS, PROFILE_VAR, WORKER_MALLOC_ENV

    script = tmp_path / "probe.py"
    script.write_text(_WORKER_PROBE)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != PROFILE_VAR and not k.startswith("DASK_DISTRIBUTED__")}
    user_trim = "1048576" if user_set else None
    if user_set:
        env["MALLOC_TRIM_THRESHOLD_"] = user_trim
        env[PROFILE_VAR] = "True"
        env["DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL"] = "7ms"
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    *_, probed, after = out.stdout.strip().splitlines()
    worker_env, preloaded, profile, worker_intervals, scheduler_intervals, client_intervals = ast.literal_eval(probed)
    assert preloaded
    assert profile is user_set
    assert worker_env["OMP_NUM_THREADS"] == "1"
    assert worker_env["MALLOC_MMAP_THRESHOLD_"] == WORKER_MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    expected_trim = user_trim if user_trim is not None else WORKER_MALLOC_ENV["MALLOC_TRIM_THRESHOLD_"]
    assert worker_env["MALLOC_TRIM_THRESHOLD_"] == expected_trim
    expected = dict(BACKGROUND_INTERVALS)
    if user_set:
        expected["distributed.admin.tick.interval"] = "7ms"
    defaults = dask.config.merge(*dask.config.defaults)
    assert all(dask.config.get(k, config=defaults) != v for k, v in BACKGROUND_INTERVALS.items())  # not dask's
    assert worker_intervals == scheduler_intervals == client_intervals == list(expected.values())
    assert ast.literal_eval(after) == dask.config.get("distributed.scheduler.allowed-failures", config=defaults)


def test_background_intervals_keep_what_the_user_set_and_name_the_env_vars_dask_reads(monkeypatch):
    import dask
    import distributed  # noqa: F401  (its defaults)

    from reluflow.pipeline._cluster import BACKGROUND_INTERVALS, _background_intervals, _dask_env_var

    for key in BACKGROUND_INTERVALS:  # the SLURM prologue exports these names: dask must read them back
        assert dask.config.get(key, config=dask.config.collect_env({_dask_env_var(key): "9s"})) == "9s"
    for key in BACKGROUND_INTERVALS:
        monkeypatch.delenv(_dask_env_var(key), raising=False)
    with dask.config.set({k: dask.config.get(k, config=dask.config.merge(*dask.config.defaults))
                          for k in BACKGROUND_INTERVALS}):
        assert _background_intervals() == BACKGROUND_INTERVALS
        with dask.config.set({"distributed.admin.tick.interval": "250ms"}):  # e.g. from a dask YAML file
            assert "distributed.admin.tick.interval" not in _background_intervals()
        monkeypatch.setenv(_dask_env_var("distributed.worker.memory.monitor-interval"), "100ms")
        assert "distributed.worker.memory.monitor-interval" not in _background_intervals()


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_a_changed_cell_is_the_only_one_computed_again(tmp_path):
    """The study's integrate job reruns when any cell changes (Snakemake removes all its outputs first); the
    cells whose parameters did not change get their finished tables back from .done (the same files: hard links),
    only the changed one is computed, and a removed cell's .done names go."""
    from reluflow.pipeline import write_integrate

    def study(step: float):
        text = CONFIG.format(name="two", width=2, method="{kind: gd, step_size: 0.05, n_steps: 10, n_checkpoints: 2}",
                             n=6, workers=1, shard_size=3)
        config = load_config_files([_write(tmp_path / "c.yaml", text)])
        spec = config["studies"]["two"]
        spec["method"], spec["grid"] = spec["grid"]["method"][0], {"method.step_size": [0.05, step]}
        return plan_config(config, SCHEMA).study("two")

    res = tmp_path / "r"
    first = study(0.02)
    execution = Execution.from_mapping(shard_size=3, progress_interval=1e9)
    assert write_integrate(list(first.cells.values()), res, execution) == {
        "cells_reused": 0, "shards_reused": 0, "shards_computed": 4}
    kept = first.cell_ids[0]
    inode = (res / "trajectories" / f"{kept}.parquet").stat().st_ino
    shutil.rmtree(res / "trajectories")  # what Snakemake does to the outputs of a job it reruns
    shutil.rmtree(res / "curves")
    second = study(0.03)
    assert second.cell_ids[0] == kept and second.cell_ids[1] != first.cell_ids[1]
    assert write_integrate(list(second.cells.values()), res, execution) == {
        "cells_reused": 1, "shards_reused": 0, "shards_computed": 2}
    assert (res / "trajectories" / f"{kept}.parquet").stat().st_ino == inode  # the same file, not recomputed
    for cell in second.cells.values():
        ref_traj, ref_curves, _ = _reference(cell)
        _assert_same(_without_cell(pd.read_parquet(res / "trajectories" / f"{cell.id}.parquet")), ref_traj)
        _assert_same(_without_cell(pd.read_parquet(res / "curves" / f"{cell.id}.parquet")), ref_curves)
    stems = {p.name.split(".")[0] for p in (res / ".done").glob("*.parquet")}
    assert len(stems) == 2 and all(f"k{c.key:016x}" in " ".join(stems) for c in second.cells.values())


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
