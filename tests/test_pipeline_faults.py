"""Faults in the integrate stage: damaged shards are never merged, a lost cluster or dying workers end the job
with one sentence (issue #17, docs/reliability.md)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from reluflow._simulate import simulate
from reluflow.config import Execution, load_config_files, plan_config
from reluflow.pipeline import CellFiles, read_init, write_init, write_integrate
from reluflow.pipeline._stages import _init_slices, _run_shards, plan_shards

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package
PROBLEM = {"network": {"input_dim": 1, "widths": [3]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
           "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}}


def _cell(tmp_path: Path, method: dict, n: int):
    config = {"studies": {"f": {"problem": PROBLEM, "grid": {"method": [method]}, "n_trajectories": n, "seed": 2}}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    study = plan_config(load_config_files([tmp_path / "c.yaml"]), SCHEMA).study("f")
    return next(iter(study.cells.values()))


def _integrate(cell, tmp_path: Path, **kw) -> dict[str, int]:
    """Integrate the cell into ``tmp_path`` keeping its shards, as if it had not been merged before (no .done)."""
    shutil.rmtree(tmp_path / ".done", ignore_errors=True)
    counts = write_integrate([cell], tmp_path, Execution.from_mapping(workers=1, shard_size=4, keep_shards=True,
                                                                     progress_interval=1e9, **kw))
    return {"reused": counts["shards_reused"], "computed": counts["shards_computed"]}


@pytest.fixture
def finished(tmp_path):
    """A cell of 12 trajectories integrated once, its three shards kept."""
    cell = _cell(tmp_path, {"kind": "gd", "step_size": 0.05, "n_steps": 30, "n_checkpoints": 4}, 12)
    init = tmp_path / "init" / f"{cell.id}.parquet"
    assert _integrate(cell, tmp_path) == {"reused": 0, "computed": 3}
    reference = simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=12, seed=cell.seed)
    return cell, init, reference


def _assert_complete(tmp_path: Path, reference) -> None:
    (cell_id,) = [p.stem for p in (tmp_path / "trajectories").glob("*.parquet")]
    got = pd.read_parquet(tmp_path / "trajectories" / f"{cell_id}.parquet").drop(columns="cell")
    pd.testing.assert_frame_equal(got, reference.trajectories, check_exact=True, check_dtype=False)
    curves = pd.read_parquet(tmp_path / "curves" / f"{cell_id}.parquet").drop(columns="cell")
    pd.testing.assert_frame_equal(curves, reference.curves, check_exact=True, check_dtype=False)


@pytest.mark.parametrize("table", ["trajectories", "curves", "final"])
def test_a_shard_rewritten_with_missing_rows_is_recomputed_not_merged(finished, tmp_path, caplog, table):
    cell, init, reference = finished
    shard = plan_shards(cell, 4)[1]
    path = shard.paths(tmp_path / ".shards" / cell.id)[table]
    data = pq.read_table(path)
    pq.write_table(data.slice(0, data.num_rows - 2).replace_schema_metadata(data.schema.metadata), path)
    with caplog.at_level(logging.WARNING, logger="reluflow.pipeline"):
        assert _integrate(cell, tmp_path) == {"reused": 2, "computed": 1}
    warned = [r.getMessage() for r in caplog.records if "recomputing" in r.getMessage()]
    assert len(warned) == 1 and shard.stem in warned[0] and path.name in warned[0], warned
    _assert_complete(tmp_path, reference)


def test_a_shard_with_corrupt_pages_and_an_intact_footer_is_recomputed(finished, tmp_path, caplog):
    cell, init, reference = finished
    shard = plan_shards(cell, 4)[2]
    path = shard.paths(tmp_path / ".shards" / cell.id)["trajectories"]
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    assert raw[:4] == b"PAR1" and len(raw) > footer + 200
    for i in range(8, 8 + (len(raw) - footer - 8) // 2):  # the first half of the column chunks, footer untouched
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    pq.read_metadata(path)  # the footer still reads: only the pages are damaged
    with caplog.at_level(logging.WARNING, logger="reluflow.pipeline"):
        assert _integrate(cell, tmp_path) == {"reused": 2, "computed": 1}
    assert any(shard.stem in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    _assert_complete(tmp_path, reference)


def test_shards_of_another_cell_are_not_merged(finished, tmp_path, caplog):
    cell, init, reference = finished
    s0, s1 = plan_shards(cell, 4)[:2]
    # the first shard's trajectories file replaced by the second's (other ids, same metadata otherwise)
    shard_dir = tmp_path / ".shards" / cell.id
    a, b = s0.paths(shard_dir)["trajectories"], s1.paths(shard_dir)["trajectories"]
    wrong = pq.read_table(b).replace_schema_metadata(pq.read_table(a).schema.metadata)
    pq.write_table(wrong, a)
    with caplog.at_level(logging.WARNING, logger="reluflow.pipeline"):
        assert _integrate(cell, tmp_path) == {"reused": 2, "computed": 1}
    assert any("not 0..3" in r.getMessage() for r in caplog.records)
    _assert_complete(tmp_path, reference)


def test_init_is_read_shard_by_shard_and_checked(finished, tmp_path):
    cell, init, _ = finished
    shards = plan_shards(cell, 5)
    got = list(_init_slices(init, cell, shards[1:]))
    ids, theta = read_init(init)
    assert [s.start for s, _ in got] == [5, 10] and ids.tolist() == list(range(12))
    for shard, theta0 in got:
        np.testing.assert_array_equal(theta0, theta[shard.start:shard.stop])
    short = tmp_path / "short.parquet"
    pq.write_table(pq.read_table(init).slice(0, 7), short)
    with pytest.raises(RuntimeError, match=r"short.parquet holds 7 trajectories, not the cell's 12"):
        list(_init_slices(short, cell, shards))


def _slow_cell(tmp_path):
    # long enough that every shard is still running when the fault is injected, on any host: with step 0.01 a
    # fast host finished the first shard of two runs in 1.3 s, before the lost-cluster test's 2 s fault (one run
    # stops on the dead plateau within ~1400 steps, the other reaches zero risk in ~28,000); step 1e-4 needs about
    # a hundred times the steps for the same path
    return _cell(tmp_path, {"kind": "gd", "step_size": 1e-4, "n_steps": 10**7, "n_checkpoints": 3,
                            "refine": False}, 4)


def test_a_lost_cluster_ends_the_job_with_one_sentence(tmp_path):
    from distributed import Client, LocalCluster

    cell = _slow_cell(tmp_path)
    files = CellFiles(cell, tmp_path)
    write_init(cell, files.output("init"))
    shards = plan_shards(cell, 2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        timer = threading.Timer(2.0, cluster.close)
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"the dask cluster went away while shard .* was running .* rerun to "
                                               r"resume \(0 finished shard\(s\) are kept\)"):
            _run_shards(client, [files], {cell.id: shards}, retries=2, window=4, n_shards=2,
                        progress_interval=1e9, on_cell_done=lambda f: None)
        timer.join()
        assert time.monotonic() - t0 < 120  # a bounded wait, not a hang


def test_dying_workers_end_the_job_with_one_sentence(tmp_path, caplog):
    import dask
    import psutil
    from distributed import Client, LocalCluster

    cell = _slow_cell(tmp_path)
    files = CellFiles(cell, tmp_path)
    write_init(cell, files.output("init"))
    shards = plan_shards(cell, 4)

    def kill_workers(client, stop):
        while not stop.is_set():
            for pid in client.run(os.getpid).values():
                if client.processing() and any(client.processing().values()):
                    psutil.Process(pid).kill()
            time.sleep(0.3)

    with dask.config.set({"distributed.scheduler.allowed-failures": 1}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        stop = threading.Event()
        killer = threading.Thread(target=kill_workers, args=(client, stop), daemon=True)
        killer.start()
        try:
            with caplog.at_level(logging.INFO, logger="reluflow.pipeline"), \
                    pytest.raises(RuntimeError, match=r"dask workers died running it .* lower execution.shard_size"):
                _run_shards(client, [files], {cell.id: shards}, retries=0, window=2, n_shards=1,
                            progress_interval=1e9, on_cell_done=lambda f: None)
        finally:
            stop.set()
            killer.join(timeout=30)
    # each death and each restart is in the log, naming the shard that was running
    messages = [r.getMessage() for r in caplog.records]
    deaths = [m for m in messages if re.match(r"dask worker \S+ died or was lost while running 1 shard\(s\) \(k", m)]
    assert deaths and shards[0].stem in deaths[0], messages
    assert any(re.match(r"dask worker \S+ joined", m) for m in messages), messages


def test_damaged_finished_tables_are_not_put_back(finished, tmp_path, caplog):
    """A finished cell's .done name of a table that is truncated (the output and .done are one file: a disk
    fault hits both) is not reused: the cell is computed again, with a warning, and its tables are whole."""
    cell, _, reference = finished  # integrated once: its .done names are there
    shutil.rmtree(tmp_path / ".shards")
    done = next((tmp_path / ".done").glob("*.trajectories.parquet"))
    raw = done.read_bytes()
    done.write_bytes(raw[: len(raw) // 2])  # the footer is gone
    execution = Execution.from_mapping(workers=1, shard_size=4, progress_interval=1e9)
    with caplog.at_level(logging.WARNING, logger="reluflow.pipeline"):
        counts = write_integrate([cell], tmp_path, execution)
    assert counts == {"cells_reused": 0, "shards_reused": 0, "shards_computed": 3}
    assert any("finished tables not reused" in r.getMessage() for r in caplog.records)
    _assert_complete(tmp_path, reference)
    assert write_integrate([cell], tmp_path, execution)["cells_reused"] == 1
