"""The tables as pandas and pyarrow read them: categoricals (``cell`` in grid order, fixed category lists),
nullable integer counts, directories that read as one table, hashable grid values.

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
import pyarrow.parquet as pq
import pytest

from reluflow.config import Execution, load_config_files, plan_config
from reluflow.pipeline import read_init, write_aggregate, write_cells, write_init
from reluflow.pipeline._stages import (
    CATEGORY,
    THETA,
    _write_shard,
    cell_array,
    plan_shards,
    run_shard,
    theta_column,
    theta_matrix,
    write_integrate,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package
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
            tables = run_shard(cell, shard.start, shard.stop, theta0[shard.start:shard.stop])
            _write_shard(cell, shard, shard_dir, tables)
    counts = write_integrate(list(study.cells.values()), res, Execution.from_mapping(shard_size=2))
    assert counts == {"cells_reused": 0, "shards_reused": 3 * len(GRID), "shards_computed": 0}
    write_aggregate(study, {cid: res / "trajectories" / f"{cid}.parquet" for cid in GRID}, res / "summary.parquet")
    return res


def _categories():
    from reluflow.analysis import CLASSES, RATE_MODELS

    return {"status": ["zero_risk", "critical", "budget", "diverged", "nonfinite", "certified"], "class": list(CLASSES),
            "rate_best": [*RATE_MODELS, "none"]}


PER_CELL = ("init", "trajectories", "curves", "final")


def _assert_grid_order(series: pd.Series) -> None:
    assert isinstance(series.dtype, pd.CategoricalDtype), series.dtype
    assert series.cat.ordered and list(series.cat.categories) == GRID


# ------------------------------------------------------------------------------------------ cell
def test_cells_and_summary_hold_cell_ordered_in_grid_order(study_dir):
    for name in ("cells", "summary"):
        path = study_dir / f"{name}.parquet"
        assert pq.read_schema(path).field("cell").type == pa.dictionary(pa.int32(), pa.string(), ordered=True)
        df = pd.read_parquet(path)
        _assert_grid_order(df["cell"])
        assert df["cell"].tolist() == GRID
        assert df.sort_values("cell")["cell"].tolist() == GRID  # w4 < w16 < w2x2: grid order, not text order
        _assert_grid_order(ds.dataset(path).to_table().to_pandas()["cell"])


def test_a_per_cell_file_holds_its_own_id_as_an_unordered_category(study_dir):
    for table in PER_CELL:
        path = study_dir / table / "w16.parquet"
        assert pq.read_schema(path).field("cell").type == CATEGORY
        cell = pd.read_parquet(path)["cell"]
        assert list(cell.cat.categories) == ["w16"] and not cell.cat.ordered and (cell == "w16").all()


@pytest.mark.parametrize("table", PER_CELL)
def test_every_per_cell_directory_reads_as_one_table(study_dir, table):
    """pd.read_parquet and pyarrow.dataset of the directory: every cell, with the documented types (a
    fixed-size theta did not read: its size is part of the type). ``cell`` is unordered there, its categories
    in file-name order; the cells' dtype restores grid order."""
    d = study_dir / table
    df = pd.read_parquet(d)
    assert set(df["cell"]) == set(GRID)
    assert list(df["cell"].cat.categories) == sorted(GRID) and not df["cell"].cat.ordered
    per_file = pd.concat([pd.read_parquet(d / f"{cid}.parquet") for cid in sorted(GRID)], ignore_index=True)
    pd.testing.assert_frame_equal(df.drop(columns="cell"), per_file.drop(columns="cell"))
    arrow = ds.dataset(d).to_table()
    assert arrow.num_rows == len(df) and arrow.schema.field("cell").type == CATEGORY
    pd.testing.assert_frame_equal(arrow.to_pandas(), df)
    grid_cells = pd.read_parquet(study_dir / "cells.parquet")["cell"].dtype
    _assert_grid_order(df["cell"].astype(grid_cells))
    if table == "init":
        assert arrow.schema.field("theta").type == THETA
        assert sorted({len(v) for v in df["theta"]}) == [13, 49]


def test_load_gives_cell_in_grid_order_in_every_table(study_dir):
    from reluflow import load

    t = load(study_dir)
    for name in ("cells", "trajectories", "curves", "summary"):
        _assert_grid_order(getattr(t, name)["cell"])
    assert t.cell_dtype == t.cells["cell"].dtype
    assert t.trajectories["cell"].drop_duplicates().tolist() == GRID  # rows in grid order too
    assert list(t.trajectories.groupby("cell", observed=True)["risk_final"].size().index) == GRID


def test_load_restores_grid_order_and_unions_categories_of_files_from_other_versions(tmp_path):
    """Files of earlier versions hold cell as text; a category list that grew between versions (a class added)
    gives the union, not text."""
    from reluflow import load
    from reluflow.pipeline import provenance, write_table

    cells = pd.DataFrame({"cell": ["w4", "w16"], "key": [1, 2], "problem.network.widths": [[4], [16]]})
    write_table(cells, tmp_path / "cells.parquet", provenance("cells"))
    for cid, cats in (("w4", ["a", "b"]), ("w16", ["a", "b", "c"])):
        t = pd.DataFrame({"cell": cid, "trajectory": [0, 1], "status": "budget", "risk_final": 0.5,
                          "class": pd.Categorical(["b", cats[-1]], cats)})
        write_table(t, tmp_path / "trajectories" / f"{cid}.parquet", provenance("trajectories"))
    t = load(tmp_path, curves=False)
    for df in (t.cells, t.trajectories):
        assert df["cell"].cat.ordered and list(df["cell"].cat.categories) == ["w4", "w16"]
    assert list(t.trajectories["class"].cat.categories) == ["a", "b", "c"]
    assert t.trajectories["class"].tolist() == ["b", "b", "b", "c"]
    assert t.trajectories["problem.network.widths"].tolist() == [(4,), (4,), (16,), (16,)]


# ------------------------------------------------------------------------------------------ other columns
def test_status_class_and_rate_best_are_categoricals_of_every_possible_value(study_dir):
    from reluflow import load

    traj = pd.read_parquet(study_dir / "trajectories" / "w4.parquet")
    everything = load(study_dir).trajectories
    for col, cats in _categories().items():
        assert pq.read_schema(study_dir / "trajectories" / "w4.parquet").field(col).type == CATEGORY
        for df in (traj, everything, pd.read_parquet(study_dir / "trajectories")):
            assert list(df[col].cat.categories) == cats and not df[col].cat.ordered, col
    counts = everything["status"].value_counts()
    assert set(counts.index) == set(_categories()["status"])  # the statuses that did not occur too, with 0
    assert counts.sum() == 15


def test_counts_are_nullable_integers(study_dir):
    traj = pd.read_parquet(study_dir / "trajectories")
    for col in ("n_negative", "n_zero", "hessian_rank"):
        assert pq.read_schema(study_dir / "trajectories" / "w4.parquet").field(col).type == pa.int64()
        assert traj[col].dtype == "Int64", col
    for col in ("steps", "n_rejected", "n_dead_final"):
        assert traj[col].dtype == np.int64, col
    summary = pd.read_parquet(study_dir / "summary.parquet")
    assert all(summary[c].dtype == np.int64 for c in summary.columns if c.startswith(("n_status_", "n_class_")))


def test_grid_values_are_hashable_in_loaded_tables(study_dir):
    from reluflow import load

    t = load(study_dir)
    assert t.cells["problem.network.widths"].tolist() == [(4,), (16,), (2, 2)]
    assert type(t.cells["problem.network.widths"][0][0]) is int
    sizes = t.trajectories.groupby("problem.network.widths", sort=False).size()
    assert sizes.to_dict() == {(4,): 5, (16,): 5, (2, 2): 5}
    assert t.summary.groupby("problem.network.widths", sort=False)["n"].sum().to_dict() == sizes.to_dict()
    # pd.read_parquet gives the numpy arrays of the list column (docs/tables.md): not hashable
    raw = pd.read_parquet(study_dir / "cells.parquet")
    assert isinstance(raw["problem.network.widths"][0], np.ndarray)
    with pytest.raises(TypeError, match="unhashable"):
        raw.groupby("problem.network.widths").size()


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


def test_cell_array():
    a = cell_array(["b", "b", "a"], categories=["b", "a", "c"])
    assert a.type.ordered and a.dictionary.to_pylist() == ["b", "a", "c"] and a.indices.to_pylist() == [0, 0, 1]
    u = cell_array(["x", "x"])
    assert u.type == CATEGORY and u.dictionary.to_pylist() == ["x"]
    with pytest.raises(ValueError, match="not among"):
        cell_array(["z"], categories=["a"])
