"""The tables as pandas and pyarrow read them: directories that read as one table.

A three-cell study written by the stages themselves, in this process (the shards are computed with
``run_shard`` and written as finished, so ``write_integrate`` only joins them: no dask cluster). Its grid
order ``w4, w16, w2x2`` is not the order of the file names (``w16, w2x2, w4``), and its cells have different
numbers of parameters (13, 49, 13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from reluflow.pipeline import load_config_files, plan_config, read_init, write_aggregate, write_cells, write_init
from reluflow.pipeline._stages import (
    THETA,
    _write_shard,
    plan_shards,
    run_shard,
    theta_column,
    theta_matrix,
    write_integrate,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
GRID = ["w4", "w16", "w2x2"]
CONFIG = """\
studies:
  grid:
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    method: {kind: gd, step_size: 0.05, n_steps: 30, n_checkpoints: 3}
    grid:
      problem.network.widths: [[4], [16], [2, 2]]
    n_trajectories: 5
    seed: 3
"""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pandas")
    (d / "config.yaml").write_text(CONFIG)
    study = plan_config(load_config_files([d / "config.yaml"]), SCHEMA).study("grid")
    assert study.cell_ids == GRID
    res = d / "results" / "grid"
    write_cells(study, res / "cells.parquet")
    for cid, cell in study.cells.items():
        init = res / "init" / f"{cid}.parquet"
        write_init(cell, init, chunk=3)  # two row groups
        _, theta0 = read_init(init)
        shard_dir = res / ".shards" / cid
        for shard in plan_shards(cell, 2):  # three shards: the tables are joined from several files
            traj, curves = run_shard(cell.to_json(), shard.start, shard.stop, theta0[shard.start:shard.stop])
            _write_shard(cell, shard, shard_dir, traj, curves)
        counts = write_integrate(cell, init, res / "trajectories" / f"{cid}.parquet",
                                 res / "curves" / f"{cid}.parquet", shard_dir, shard_size=2)
        assert counts == {"reused": 3, "computed": 0}
    write_aggregate(study, {cid: res / "trajectories" / f"{cid}.parquet" for cid in GRID}, res / "summary.parquet")
    return res


PER_CELL = ("init", "trajectories", "curves")


@pytest.mark.parametrize("table", PER_CELL)
def test_every_per_cell_directory_reads_as_one_table(study_dir, table):
    """pd.read_parquet and pyarrow.dataset of the directory: every cell, with the documented types (a
    fixed-size theta did not read: its size is part of the type)."""
    d = study_dir / table
    df = pd.read_parquet(d)
    assert set(df["cell"]) == set(GRID)
    per_file = pd.concat([pd.read_parquet(d / f"{cid}.parquet") for cid in sorted(GRID)], ignore_index=True)
    pd.testing.assert_frame_equal(df.drop(columns="cell"), per_file.drop(columns="cell"))
    arrow = ds.dataset(d).to_table()
    assert arrow.num_rows == len(df)
    pd.testing.assert_frame_equal(arrow.to_pandas(), df)
    if table == "init":
        assert arrow.schema.field("theta").type == THETA
        assert sorted({len(v) for v in df["theta"]}) == [13, 49]


# ------------------------------------------------------------------------------------------ theta helpers
def test_theta_column_and_matrix_round_trip():
    theta = np.arange(12.0).reshape(4, 3)
    col = theta_column(theta)
    assert col.type == THETA
    np.testing.assert_array_equal(theta_matrix(col), theta)
    np.testing.assert_array_equal(theta_matrix(pa.chunked_array([col.slice(0, 1), col.slice(1)])), theta)
    np.testing.assert_array_equal(theta_matrix(col.slice(2)), theta[2:])
    fixed = pa.FixedSizeListArray.from_arrays(pa.array(theta.reshape(-1)), 3)  # init files of earlier versions
    np.testing.assert_array_equal(theta_matrix(fixed), theta)
    assert theta_matrix(col.slice(0, 0), 3).shape == (0, 3) and theta_column(np.zeros((0, 5))).type == THETA
    ragged = pa.array([[1.0, 2.0], [3.0]], THETA)
    with pytest.raises(ValueError, match="holds 1 values, not P = 2"):
        theta_matrix(ragged)
    with pytest.raises(ValueError, match="expected \\(T, P\\)"):
        theta_column(np.zeros(3))


def test_read_init_gives_the_matrix_written(study_dir):
    ids, theta = read_init(study_dir / "init" / "w16.parquet")
    assert ids.tolist() == list(range(5)) and theta.shape == (5, 49) and theta.dtype == np.float64
    df = pd.read_parquet(study_dir / "init" / "w16.parquet")
    np.testing.assert_array_equal(np.stack(df["theta"].to_list()), theta)
