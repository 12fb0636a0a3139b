"""The stages behind the Snakemake rules: cells, init, integrate (shards on dask), aggregate.

Orchestration only: the mathematics is ``reluflow.dynamics.initialize``, ``reluflow._simulate.simulate`` and
``reluflow.analysis.summarize_cell``; this module moves their inputs and outputs between files and workers.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._keys import canonical_json
from ._config import Cell, Study, validate_cell
from ._tables import provenance, read_metadata, table_from_frame, write_table, write_tables_streaming

__all__ = [
    "Shard",
    "cell_columns",
    "flatten_params",
    "plan_shards",
    "SHARD_TABLES",
    "final_table",
    "read_final",
    "read_init",
    "run_shard",
    "theta_column",
    "write_aggregate",
    "write_cells",
    "write_init",
    "write_integrate",
]

log = logging.getLogger("reluflow.pipeline")


# ---------------------------------------------------------------------------------------------- parameters
def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter dicts as dotted columns (``problem.network.widths``); lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = value
    return flat


def _arrow_column(values: list[Any]) -> pa.Array:
    """An arrow column for one parameter across cells; JSON text where the values have no common type
    (a width given as 16 in one cell and [16] in another)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else canonical_json(v) for v in values], pa.string())


def cell_columns(cells: list[Cell]) -> dict[str, pa.Array]:
    """The per-cell identification and parameter columns shared by cells.parquet and summary.parquet."""
    flats = [flatten_params(c.params) for c in cells]
    names: list[str] = []
    for f in flats:
        names += [n for n in f if n not in names]
    cols: dict[str, pa.Array] = {
        "cell": pa.array([c.id for c in cells], pa.string()),
        "key": pa.array([c.key for c in cells], pa.int64()),
        "seed": pa.array([c.seed for c in cells], pa.int64()),
        "n_trajectories": pa.array([c.n_trajectories for c in cells], pa.int64()),
    }
    for name in names:
        cols[name] = _arrow_column([f.get(name) for f in flats])
    return cols


def _study_meta(study: Study, table: str) -> dict[str, str]:
    return provenance(table, study=study.name, study_spec=study.to_json(), seed=str(study.seed))


def _cell_meta(cell: Cell, table: str, **extra: Any) -> dict[str, str]:
    return provenance(table, study=cell.study, cell=cell.id, cell_key=str(cell.key), params=cell.params,
                      seed=str(cell.seed), n_trajectories=str(cell.n_trajectories), **extra)


# ---------------------------------------------------------------------------------------------- cells
def write_cells(study: Study, output: str | Path) -> None:
    """``cells.parquet``: one row per cell with its id, key, every parameter, and the problem's size."""
    cells = list(study.cells.values())
    cols = cell_columns(cells)
    problems = [validate_cell(c) for c in cells]
    extra = {
        "study": pa.array([study.name] * len(cells), pa.string()),
        "n_params": pa.array([p.n_params for p in problems], pa.int64()),
        "risk_backend": pa.array([p.backend_name for p in problems], pa.string()),
        "params": pa.array([canonical_json(c.params) for c in cells], pa.string()),
        "grid": pa.array([canonical_json(c.grid_values) for c in cells], pa.string()),
    }
    head = {k: cols.pop(k) for k in ("cell", "key")}
    table = pa.table({**head, **extra, **cols})
    write_table(table, output, _study_meta(study, "cells"))
    log.info("cells: %d cells of study %r -> %s", len(cells), study.name, output)


# ---------------------------------------------------------------------------------------------- init
def write_init(cell: Cell, output: str | Path, *, chunk: int = 4096) -> None:
    """``init/{cell}.parquet``: trajectory and its initial parameters ``theta`` (a list of P float64).

    Written in chunks, so memory stays at ``chunk x P`` whatever ``n_trajectories``.
    """
    from ..dynamics import initialize

    problem = validate_cell(cell)
    n_params = problem.n_params

    def pieces() -> Iterator[pa.Table]:
        for start in range(0, cell.n_trajectories, chunk):
            ids = np.arange(start, min(start + chunk, cell.n_trajectories), dtype=np.int64)
            theta0 = np.ascontiguousarray(initialize(problem, cell.init, ids, cell.seed), np.float64)
            if theta0.shape != (len(ids), n_params):
                raise RuntimeError(f"initialize returned shape {theta0.shape}, expected {(len(ids), n_params)}")
            yield pa.table({
                "cell": pa.array([cell.id] * len(ids), pa.string()),
                "trajectory": pa.array(ids, pa.int64()),
                "theta": pa.FixedSizeListArray.from_arrays(pa.array(theta0.reshape(-1)), n_params),
            })

    n = write_tables_streaming(pieces(), output, _cell_meta(cell, "init", n_params=str(n_params)))
    log.info("init: %s, %d trajectories x %d parameters -> %s", cell.id, n, n_params, output)


def read_init(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(trajectory (T,), theta0 (T, P))`` from an init table."""
    table = pq.read_table(path, columns=["trajectory", "theta"])
    ids = table.column("trajectory").to_numpy()
    theta = table.column("theta").combine_chunks()
    n_params = theta.type.list_size
    return ids, theta.flatten().to_numpy().reshape(len(ids), n_params)


def read_final(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(trajectory (T,), theta_final (T, P), theta_refined (T, P))`` from a final-state table; rows of
    ``theta_refined`` are NaN where no refinement ran."""
    table = pq.read_table(path, columns=["trajectory", "theta_final", "theta_refined"])
    ids = table.column("trajectory").to_numpy()
    final = _theta_matrix(table.column("theta_final"), len(ids))
    refined = _theta_matrix(table.column("theta_refined"), len(ids))
    return ids, final, refined


def _theta_matrix(column: pa.ChunkedArray, n: int) -> np.ndarray:
    """A ``list<double>`` column of equal-length vectors as a ``(T, P)`` array (NaN rows for nulls)."""
    arr = column.combine_chunks()
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    p = int(lengths[valid][0]) if valid.any() else 0
    out = np.full((n, p), np.nan)
    if valid.any():
        out[valid] = arr.filter(pa.array(valid)).flatten().to_numpy().reshape(-1, p)
    return out


# ---------------------------------------------------------------------------------------------- shards
@dataclass(frozen=True)
class Shard:
    """Trajectories ``[start, stop)`` of one cell: one dask task and one resumable pair of files."""

    start: int
    stop: int
    stem: str  # file stem: cell key, seed and trajectory range, so other settings never reuse it

    @property
    def n(self) -> int:
        return self.stop - self.start

    def paths(self, shard_dir: Path) -> dict[str, Path]:
        """The shard's file of each table of ``SHARD_TABLES``, by table name."""
        return {table: shard_dir / f"{self.stem}.{table}.parquet" for table in SHARD_TABLES}


# The per-cell tables integrate writes, in the order a shard's files are written: trajectories last, so that a
# shard counts as finished once its trajectories file exists.
SHARD_TABLES = ("curves", "final", "trajectories")


def plan_shards(cell: Cell, shard_size: int) -> list[Shard]:
    n = cell.n_trajectories
    return [
        Shard(a, min(a + shard_size, n), f"k{cell.key:016x}-s{cell.seed}-t{a:09d}-{min(a + shard_size, n):09d}")
        for a in range(0, n, shard_size)
    ]


def _shard_meta(cell: Cell, shard: Shard, table: str) -> dict[str, str]:
    return _cell_meta(cell, table, trajectory_range=[shard.start, shard.stop])


def _shard_is_finished(cell: Cell, shard: Shard, shard_dir: Path) -> bool:
    """Both files exist (each was written atomically, trajectories last) and were made for exactly this cell,
    seed, range and package version."""
    for path in shard.paths(shard_dir).values():
        if not path.is_file():
            return False
        try:
            meta = read_metadata(path)
        except (OSError, pa.ArrowException):
            return False
        expected = _shard_meta(cell, shard, meta.get("reluflow.table", ""))
        # The code too: a shard from another commit (or version) is recomputed, never mixed in.
        for key in ("reluflow.version", "reluflow.git_commit", "reluflow.params", "reluflow.seed",
                    "reluflow.trajectory_range"):
            if meta.get(key) != expected[key]:
                return False
    return True


def run_shard(cell_json: str, start: int, stop: int, theta0: np.ndarray) -> dict[str, pa.Table]:
    """The dask task: integrate trajectories ``[start, stop)`` of one cell from ``theta0`` ``(stop-start, P)``.

    Returns the shard's table of each of ``SHARD_TABLES``, with the ``cell`` column in front. Runs on a worker;
    pure: the same arguments give the same tables, whatever the worker or retry.
    """
    from threadpoolctl import threadpool_limits

    from .._simulate import simulate

    cell = Cell.from_json(cell_json, check=False)
    with threadpool_limits(limits=1):  # one BLAS thread per worker, whatever the worker's environment
        sim = simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=cell.n_trajectories,
                       seed=cell.seed, trajectory_ids=np.arange(start, stop, dtype=np.int64), theta0=theta0)
    return {"trajectories": _with_cell(sim.trajectories, cell), "curves": _with_cell(sim.curves, cell),
            "final": final_table(cell, sim.states)}


def _write_shard(cell: Cell, shard: Shard, shard_dir: Path, tables: Mapping[str, pa.Table]) -> None:
    paths = shard.paths(shard_dir)
    for name in SHARD_TABLES:  # in this order: the trajectories file marks the shard finished
        write_table(tables[name], paths[name], _shard_meta(cell, shard, name))


def _with_cell(df: pd.DataFrame, cell: Cell) -> pa.Table:
    df = df.copy()
    df.insert(0, "cell", cell.id)
    return table_from_frame(df)


def theta_column(theta: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """Parameter vectors ``(T, P)`` as an arrow ``list<double>`` column (null where ``valid`` is False).

    A variable-size list, not ``fixed_size_list[P]``: cells with different ``P`` then read as one directory.
    """
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    n, p = theta.shape
    offsets = pa.array(np.arange(0, (n + 1) * p, p, dtype=np.int32) if n else np.zeros(1, np.int32))
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    return pa.ListArray.from_arrays(offsets, pa.array(theta.reshape(-1)), mask=mask)


def final_table(cell: Cell, states: pd.DataFrame) -> pa.Table:
    """``final/{cell}.parquet`` rows from ``simulate``'s ``states``: final and refined parameters."""
    n = len(states)
    p = validate_cell(cell).n_params if n == 0 else len(states["theta_final"].iloc[0])
    final = np.stack(states["theta_final"].to_numpy()) if n else np.zeros((0, p))
    has_refined = states["theta_refined"].map(lambda v: v is not None).to_numpy(dtype=bool)
    refined = np.full((n, p), np.nan)
    if has_refined.any():
        refined[has_refined] = np.stack(states["theta_refined"].to_numpy()[has_refined])
    return pa.table({
        "cell": pa.array([cell.id] * n, pa.string()),
        "trajectory": pa.array(states["trajectory"].to_numpy(), pa.int64()),
        "theta_final": theta_column(final),
        "theta_refined": theta_column(refined, has_refined),
    })


def write_integrate(
    cell: Cell,
    init_path: str | Path,
    outputs: Mapping[str, str | Path],
    shard_dir: str | Path,
    *,
    scheduler: str = "local",
    workers: int = 1,
    address: str | None = None,
    jobqueue: Mapping[str, Any] | None = None,
    scheduler_file: str | Path | None = None,
    shard_size: int = 128,
    retries: int = 2,
    keep_shards: bool = False,
    progress_interval: float = 10.0,
) -> dict[str, int]:
    """Integrate one cell: run its unfinished shards as dask tasks, then join every shard into the cell's
    tables, ``outputs`` giving the path of each of ``SHARD_TABLES`` (trajectories, curves, final). Returns
    counts of shards ``reused`` and ``computed``.

    ``scheduler``, ``workers``, ``address``, ``jobqueue`` and ``scheduler_file`` choose the cluster
    (``dask_client``); none of them changes a result."""
    from distributed import as_completed

    from ._cluster import dask_client

    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    ids, theta0 = read_init(init_path)
    if not np.array_equal(ids, np.arange(cell.n_trajectories)):
        raise RuntimeError(f"{init_path} does not hold trajectories 0..{cell.n_trajectories - 1} in order")
    shards = plan_shards(cell, shard_size)
    todo = [s for s in shards if not _shard_is_finished(cell, s, shard_dir)]
    reused = len(shards) - len(todo)
    log.info("integrate: %s, %d trajectories in %d shards of <= %d; %d shard(s) already finished (reused), "
             "%d to compute", cell.id, cell.n_trajectories, len(shards), shard_size, reused, len(todo))

    if todo:
        cell_json = cell.to_json()
        with dask_client(scheduler, workers=workers, address=address, jobqueue=jobqueue,
                         scheduler_file=scheduler_file) as client:
            # Explicit, distinct keys: Client.map is pure by default and would merge equal-looking tasks;
            # these name exactly what is computed, so a shared scheduler may share identical work.
            futures = client.map(
                run_shard,
                [cell_json] * len(todo),
                [s.start for s in todo],
                [s.stop for s in todo],
                [theta0[s.start:s.stop] for s in todo],
                key=[f"reluflow-shard-{s.stem}" for s in todo],
                retries=retries,
                pure=False,
            )
            by_key = {f.key: s for f, s in zip(futures, todo, strict=True)}
            t0 = last = time.monotonic()
            done = done_traj = 0
            for future, tables in as_completed(futures, with_results=True):
                shard = by_key[future.key]
                n_rows = tables["trajectories"].num_rows
                if n_rows != shard.n:
                    raise RuntimeError(f"shard {shard.stem}: simulate returned {n_rows} rows, not {shard.n}")
                _write_shard(cell, shard, shard_dir, tables)
                future.release()
                done += 1
                done_traj += shard.n
                now = time.monotonic()
                if now - last >= progress_interval or done == len(todo):
                    rate = done_traj / max(now - t0, 1e-9)
                    eta = round((sum(s.n for s in todo) - done_traj) / rate)  # seconds, at the rate so far
                    log.info("progress: %d/%d shards (%d %%), %.1f trajectories/s, ETA %d:%02d:%02d", done + reused,
                             len(shards), 100 * (done + reused) // len(shards), rate, eta // 3600, eta // 60 % 60,
                             eta % 60, extra={"console": True})  # console: the CLI's --console-fd, if given
                    last = now

    missing = sorted(set(SHARD_TABLES) - set(outputs))
    if missing:
        raise ValueError(f"write_integrate: no output path for table(s) {missing}")
    for table in SHARD_TABLES:
        out = outputs[table]
        files = [s.paths(shard_dir)[table] for s in shards]
        schema = pa.unify_schemas([pq.read_schema(f).remove_metadata() for f in files],
                                  promote_options="permissive")
        pandas_meta = pq.read_schema(files[0]).metadata or {}
        schema = schema.with_metadata({k: v for k, v in pandas_meta.items() if k == b"pandas"})
        pieces = (pq.read_table(f) for f in files)
        n = write_tables_streaming(pieces, out, _cell_meta(cell, table, shard_size=str(shard_size)), schema=schema)
        log.info("wrote %s: %d rows -> %s", table, n, out)

    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    return {"reused": reused, "computed": len(todo)}


# ---------------------------------------------------------------------------------------------- aggregate
def write_aggregate(study: Study, trajectories: Mapping[str, str | Path], output: str | Path) -> None:
    """``summary.parquet``: one row per cell, its parameters as columns followed by ``summarize_cell``'s."""
    from ..analysis import summarize_cell

    cells = list(study.cells.values())
    missing = [c.id for c in cells if c.id not in trajectories]
    if missing:
        raise ValueError(f"aggregate: no trajectories table for cells {missing}")
    rows = []
    for cell in cells:
        df = pd.read_parquet(trajectories[cell.id])
        rows.append(summarize_cell(df, eps_list=study.eps_list, k_list=study.k_list))
    stats = pd.DataFrame.from_records(rows)
    # summarize_cell adds a status's columns only where that status occurs: elsewhere the count is zero.
    for col in stats.columns:
        if col.startswith("n_status_"):
            stats[col] = stats[col].fillna(0).astype("int64")
        elif col.startswith("frac_status_"):  # a fraction of no trajectories stays NaN
            stats[col] = stats[col].fillna(pd.Series(np.where(stats["n"] > 0, 0.0, np.nan), index=stats.index))
    table = pa.table(cell_columns(cells))
    stats_table = table_from_frame(stats)
    for name in stats_table.column_names:
        if name in table.column_names:
            raise ValueError(f"summarize_cell returned a column {name!r} that clashes with a parameter column")
        table = table.append_column(name, stats_table.column(name))
    meta = _study_meta(study, "summary")
    meta["reluflow.analysis"] = json.dumps({"eps": study.eps_list, "k": study.k_list})
    write_table(table, output, meta)
    log.info("aggregate: %d cells of study %r -> %s", len(cells), study.name, output)
