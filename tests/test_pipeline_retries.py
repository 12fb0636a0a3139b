"""The retries guarantee of the integrate stage, shown by injected task failures (docs/reliability.md).

A shard task that raises is retried by dask up to ``execution.retries`` times: when a later try succeeds, every
table is bit for bit the fault-free run's. A shard that raises on every one of its ``1 + retries`` tries ends the
job with one sentence naming the shard, its cell and the exception; the shards finished by then stay, and a rerun
computes only the others, giving the same tables again.

The faults come from ``run_shard`` replaced by ``flaky_run_shard`` (monkeypatch) on a dask cluster of this process
(``LocalCluster(processes=False)``: its workers are threads that run the patched function and share the attempt
counts), which ``write_integrate`` joins as ``scheduler="address"``: the code path of a real run, no seam.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

import reluflow.pipeline._stages as _stages
from reluflow._simulate import simulate
from reluflow.config import Execution, load_config_files, plan_config
from reluflow.pipeline import CELL_TABLES, CellFiles, plan_shards, write_integrate

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"
PROBLEM = {"network": {"input_dim": 1, "widths": [3]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
           "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}}
# two cells of 12 trajectories, three shards of 4 each: six tasks
STUDY = {"problem": PROBLEM, "method": {"kind": "gd", "step_size": 0.05, "n_steps": 30, "n_checkpoints": 4},
         "grid": {"method.step_size": [0.05, 0.02]}, "n_trajectories": 12, "seed": 7}
SHARD_SIZE = 4
DEADLINE = 60.0  # seconds: the most any wait below (a task's, the test's) may take

pytestmark = pytest.mark.timeout(240)  # each test: a few in-process runs of a few seconds


# ------------------------------------------------------------------------------------------ the injected faults
class InjectedFault(Exception):
    """What a faulty try of a shard raises."""


_LOCK = threading.Lock()
_REAL_RUN_SHARD = _stages.run_shard
FAULTS: dict[tuple[str, int], int] = {}  # (cell id, first trajectory) -> tries that raise before one succeeds
ATTEMPTS: Counter[tuple[str, int]] = Counter()  # tries of each shard, faulty ones included
HOLD: dict[str, object] = {}  # "until": a callable; faulty tries wait until it is true before raising


def flaky_run_shard(cell, start: int, stop: int, theta0):
    """``run_shard``, but the first ``FAULTS[(cell, start)]`` tries of a shard raise ``InjectedFault``.

    Module level, so that dask pickles it by reference: the worker threads run this very function and count in
    this module's ``ATTEMPTS``."""
    shard = (cell.id, start)
    with _LOCK:
        ATTEMPTS[shard] += 1
        attempt = ATTEMPTS[shard]
    if attempt <= FAULTS.get(shard, 0):
        until = HOLD.get("until")
        t0 = time.monotonic()
        while until is not None and not until():
            if time.monotonic() - t0 > DEADLINE:
                raise TimeoutError(f"shard {shard}: the other shards were not written within {DEADLINE} s")
            time.sleep(0.02)
        raise InjectedFault(f"injected fault {attempt} of shard {shard[0]}:{start}")
    return _REAL_RUN_SHARD(cell, start, stop, theta0)


@pytest.fixture
def faults(monkeypatch):
    """Patch ``run_shard``; the test fills ``FAULTS`` (and ``HOLD``); the counts are cleared before and after."""
    FAULTS.clear()
    ATTEMPTS.clear()
    HOLD.clear()
    monkeypatch.setattr(_stages, "run_shard", flaky_run_shard)
    yield FAULTS
    FAULTS.clear()
    ATTEMPTS.clear()
    HOLD.clear()


# ------------------------------------------------------------------------------------------ runs
def _cells(tmp_path: Path):
    (tmp_path / "c.yaml").write_text(json.dumps({"studies": {"r": STUDY}}))
    return list(plan_config(load_config_files([tmp_path / "c.yaml"]), SCHEMA).study("r").cells.values())


@contextlib.contextmanager
def _cluster() -> Iterator[str]:
    """The address of a fresh in-process cluster: two worker threads (two shards at once), no dashboard. One per
    run, so that no task of an earlier run (an erred key) is still known to the scheduler."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _integrate(cells, study_dir: Path, *, retries: int) -> dict[str, int]:
    with _cluster() as address:
        execution = Execution.from_mapping(scheduler="address", address=address, workers=1, shard_size=SHARD_SIZE,
                                           retries=retries, progress_interval=1e9)
        return write_integrate(cells, study_dir, execution)


def _tables(study_dir: Path, cells) -> dict[tuple[str, str], object]:
    return {(c.id, t): pq.read_table(CellFiles(c, study_dir).output(t)) for c in cells for t in CELL_TABLES}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The fault-free run of the study: its cells and every table, read back."""
    d = tmp_path_factory.mktemp("reference")
    cells = _cells(d)
    assert _integrate(cells, d / "out", retries=0) == {"cells_reused": 0, "shards_reused": 0,
                                                        "shards_computed": 6}
    tables = _tables(d / "out", cells)
    for cell in cells:  # the reference is itself right: the Python API's trajectories, bit for bit
        sim = simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=12, seed=cell.seed)
        got = tables[(cell.id, "trajectories")].to_pandas().drop(columns="cell")
        pd.testing.assert_frame_equal(got, sim.trajectories, check_exact=True, check_dtype=False)
    return cells, tables


def _assert_identical(study_dir: Path, reference) -> None:
    """Every table of every cell holds exactly the fault-free run's data (values, types, row order)."""
    cells, expected = reference
    got = _tables(study_dir, cells)
    assert set(got) == set(expected) and len(got) == 2 * len(CELL_TABLES)
    for key, table in expected.items():
        assert got[key].schema.remove_metadata() == table.schema.remove_metadata(), key
        assert got[key].equals(table), key  # Table.equals: every value, bit for bit (NaN equal to NaN)


# ------------------------------------------------------------------------------------------ tests
def test_failures_within_the_retries_are_absorbed_and_the_tables_are_identical(tmp_path, faults, reference):
    cells, _ = reference
    a, b = cells[0].id, cells[1].id
    faults.update({(a, 4): 2, (b, 0): 1, (b, 8): 2})  # up to retries = 2 failed tries of a shard
    counts = _integrate(cells, tmp_path, retries=2)
    assert counts == {"cells_reused": 0, "shards_reused": 0, "shards_computed": 6}
    tried = {(c.id, s.start): 1 + faults.get((c.id, s.start), 0) for c in cells for s in plan_shards(c, SHARD_SIZE)}
    assert dict(ATTEMPTS) == tried  # each faulty shard was retried until it succeeded, the others ran once
    _assert_identical(tmp_path, reference)


def test_a_shard_failing_more_often_than_the_retries_ends_the_job_and_a_rerun_resumes(tmp_path, faults, reference):
    cells, _ = reference
    a, b = cells[0].id, cells[1].id
    last = plan_shards(cells[1], SHARD_SIZE)[-1]
    faults[(b, last.start)] = 2  # two failed tries, one retry allowed
    files = {c.id: CellFiles(c, tmp_path) for c in cells}

    def others_written() -> bool:  # the first cell merged, the second's other shards on disk
        shard_dir = files[b].shard_dir
        return files[a].output("trajectories").is_file() and all(
            s.paths(shard_dir)["trajectories"].is_file() for s in plan_shards(cells[1], SHARD_SIZE)[:-1])

    # the faulty tries wait until the other five shards are written, so what is kept does not depend on timing
    HOLD["until"] = others_written
    with pytest.raises(RuntimeError) as caught:
        _integrate(cells, tmp_path, retries=1)
    message = str(caught.value)
    assert message == (f"shard {last.stem} of {b} failed 2 time(s) (1 + execution.retries), last with "
                       f"InjectedFault: injected fault 2 of shard {b}:{last.start}; rerun to resume "
                       "(5 finished shard(s) are kept and reused)")
    assert isinstance(caught.value.__cause__, InjectedFault)  # the task's own traceback stays with the error
    assert ATTEMPTS[(b, last.start)] == 2
    # what the failed job leaves: the first cell's tables, the second's finished shards, nothing of the third shard
    assert all(files[a].output(t).is_file() for t in CELL_TABLES)
    assert not files[b].output("trajectories").exists()
    assert not any(last.paths(files[b].shard_dir)[t].exists() for t in last.paths(files[b].shard_dir))

    # the rerun, without faults: the finished cell put back, the two finished shards reused, one shard computed
    FAULTS.clear()
    ATTEMPTS.clear()
    counts = _integrate(cells, tmp_path, retries=1)
    assert counts == {"cells_reused": 1, "shards_reused": 2, "shards_computed": 1}
    assert dict(ATTEMPTS) == {(b, last.start): 1}  # no other shard ran again
    _assert_identical(tmp_path, reference)
    assert not files[b].shard_dir.exists()  # merged, so its shards are gone


def test_with_no_retries_the_first_failure_ends_the_job(tmp_path, faults, reference):
    cells, _ = reference
    first = plan_shards(cells[0], SHARD_SIZE)[0]
    faults[(cells[0].id, first.start)] = 1  # one failed try would be absorbed by any retry
    with pytest.raises(RuntimeError, match=rf"^shard {first.stem} of {cells[0].id} failed 1 time\(s\) \(1 \+ "
                                           r"execution.retries\), last with InjectedFault: injected fault 1 of shard "
                                           r".*; rerun to resume \(\d finished shard\(s\) are kept and reused\)$"):
        _integrate(cells, tmp_path, retries=0)
    assert ATTEMPTS[(cells[0].id, first.start)] == 1  # not retried
