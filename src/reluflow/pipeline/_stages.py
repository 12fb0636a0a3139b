"""The stages behind the Snakemake rules: cells, init, integrate (shards on dask), aggregate.

Orchestration only: the mathematics is ``reluflow.dynamics.initialize``, ``reluflow._simulate.simulate`` and
``reluflow.analysis.summarize_cell``; this module moves their inputs and outputs between files and workers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .._keys import canonical_json
from ..config import CELL_TABLES, Cell, ConfigError, Execution, Study, shard_size_for, shards_in_flight
from ._errors import StageError
from ._tables import provenance, read_metadata, table_from_frame, write_table, write_tables_streaming

__all__ = [
    "StageError",
    "CATEGORY",
    "THETA",
    "Shard",
    "cell_array",
    "cell_columns",
    "flatten_params",
    "plan_shards",
    "CELL_TABLES",
    "CellFiles",
    "SHARD_TABLES",
    "final_table",
    "read_final",
    "read_init",
    "check_shard_identity",
    "run_shard",
    "theta_column",
    "theta_matrix",
    "write_aggregate",
    "write_cells",
    "write_init",
    "write_integrate",
]

log = logging.getLogger("reluflow.pipeline")


# The Arrow types of the tables (docs/tables.md), fixed whatever the pandas version or the number of categories:
# categoricals as dictionaries of int32 indices into string values (pandas would pick the smallest index type and
# large_string values); parameter vectors as variable-size lists, so that the files of cells with different
# numbers of parameters read as one dataset. Both are the types a parquet file reads back as.
CATEGORY = pa.dictionary(pa.int32(), pa.string())
THETA = pa.list_(pa.field("element", pa.float64()))
_MAX_LIST_VALUES = 2**31 - 1  # int32 offsets of a list array


# ---------------------------------------------------------------------------------------------- arrow types
def cell_array(ids: Sequence[str], *, categories: Sequence[str] | None = None) -> pa.DictionaryArray:
    """The ``cell`` column: a dictionary array of ``ids``; ordered with ``categories`` (the study's cell ids in
    grid order: cells.parquet and summary.parquet), unordered with the ids' own values otherwise (a per-cell
    file, which cannot know the grid's other cells without being rewritten whenever the grid changes)."""
    ordered = categories is not None
    values = list(categories) if ordered else list(dict.fromkeys(ids))
    index = {c: i for i, c in enumerate(values)}
    missing = [c for c in dict.fromkeys(ids) if c not in index]
    if missing:
        raise ValueError(f"cells {missing} are not among the categories {values}")
    return pa.DictionaryArray.from_arrays(pa.array([index[c] for c in ids], pa.int32()),
                                          pa.array(values, pa.string()), ordered=ordered)


def _arrow_types(table: pa.Table) -> pa.Table:
    """A table from pandas with the documented Arrow types: categoricals as ``CATEGORY`` (ordered ones stay
    ordered), text as ``string``."""
    columns = []
    for col in table.columns:
        if pa.types.is_dictionary(col.type):
            kind = pa.dictionary(pa.int32(), pa.string(), ordered=col.type.ordered)
            col = pa.chunked_array([pa.DictionaryArray.from_arrays(c.indices.cast(pa.int32()),
                                                                   c.dictionary.cast(pa.string()),
                                                                   ordered=col.type.ordered)
                                    for c in col.chunks], kind)
        elif pa.types.is_large_string(col.type):
            col = col.cast(pa.string())
        columns.append(col)
    return pa.Table.from_arrays(columns, names=table.column_names, metadata=table.schema.metadata)


def theta_column(theta: np.ndarray, valid: np.ndarray | None = None) -> pa.ListArray:
    """A ``(T, P)`` parameter matrix as a ``THETA`` column: T rows of P float64 (init/ and final-state files),
    null where ``valid`` ``(T,)`` is False.

    A variable-size list although every row has P values: a fixed-size list's type includes P, so a directory
    of cells with different P would not read as one dataset. ``theta_matrix`` reads it back."""
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    if theta.ndim != 2:
        raise ValueError(f"theta has shape {theta.shape}: expected (T, P)")
    n, p = theta.shape
    if n * p > _MAX_LIST_VALUES:
        raise ValueError(f"theta of shape {theta.shape} has more values than one list array holds "
                         f"({_MAX_LIST_VALUES}): write it in chunks of fewer rows")
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * p, pa.int32())
    mask = None if valid is None else pa.array(~np.asarray(valid, dtype=bool))
    return pa.ListArray.from_arrays(offsets, pa.array(theta.reshape(-1), pa.float64()), type=THETA, mask=mask)


def theta_matrix(column: pa.Array | pa.ChunkedArray, n_params: int | None = None, *,
                 nulls: bool = False) -> np.ndarray:
    """The ``(T, P)`` float64 matrix of a theta column (``list``, ``large_list`` or ``fixed_size_list`` of
    double, as written by ``theta_column`` or by earlier versions). ``n_params``: P (default: the first row's
    length; a column of no rows then gives ``(0, 0)``). Raises where a row is not P values long, and where a row
    is null unless ``nulls`` (null rows are then NaN rows: ``theta_refined``; P must then be given)."""
    if nulls and n_params is None:
        raise ValueError("theta_matrix(..., nulls=True) needs n_params: a column of null rows does not know P")
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for chunk in chunks:
        if not len(chunk):
            continue
        if chunk.null_count:
            if not nulls:
                raise ValueError(f"theta column has {chunk.null_count} null rows")
            chunk = pc.fill_null(chunk, pa.scalar([np.nan] * n_params, chunk.type))
        lengths = pc.list_value_length(chunk).to_numpy(zero_copy_only=False)
        if n_params is None:
            n_params = int(lengths[0])
        if (lengths != n_params).any():
            bad = int(np.flatnonzero(lengths != n_params)[0])
            raise ValueError(f"theta column: a row holds {int(lengths[bad])} values, not P = {n_params}")
        parts.append(chunk.flatten().to_numpy(zero_copy_only=False))
    n_params = 0 if n_params is None else int(n_params)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return flat.astype(np.float64, copy=False).reshape(len(column), n_params)


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
    ids = [c.id for c in cells]
    cols: dict[str, pa.Array] = {
        "cell": cell_array(ids, categories=ids),
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
    # data files: their content hash is in params (and the key); where this run found them, in data_paths
    paths = {path: f["resolved"] for path, f in cell.data_files.items()} or None
    return provenance(table, study=cell.study, cell=cell.id, cell_key=str(cell.key), params=cell.params,
                      seed=str(cell.seed), n_trajectories=str(cell.n_trajectories), data_paths=paths, **extra)


# ---------------------------------------------------------------------------------------------- cells
def write_cells(study: Study, output: str | Path) -> None:
    """``cells.parquet``: one row per cell with its id, key, every parameter, and the problem's size."""
    cells = list(study.cells.values())
    cols = cell_columns(cells)
    problems = [c.problem_object for c in cells]
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

    Written in chunks (row groups) of ``chunk`` trajectories, so memory stays at ``chunk x P`` whatever
    ``n_trajectories``; the integrate stage writes one row group per shard.
    """
    from ..dynamics import initialize

    problem = cell.problem_object
    n_params = problem.n_params

    def pieces() -> Iterator[pa.Table]:
        for start in range(0, cell.n_trajectories, chunk):
            ids = np.arange(start, min(start + chunk, cell.n_trajectories), dtype=np.int64)
            theta0 = np.ascontiguousarray(initialize(problem, cell.init, ids, cell.seed), np.float64)
            if theta0.shape != (len(ids), n_params):
                raise StageError(f"initialize returned shape {theta0.shape}, expected {(len(ids), n_params)}")
            yield pa.table({
                "cell": cell_array([cell.id] * len(ids)),
                "trajectory": pa.array(ids, pa.int64()),
                "theta": theta_column(theta0),
            })

    n = write_tables_streaming(pieces(), output, _cell_meta(cell, "init", n_params=str(n_params)))
    log.info("init: %s, %d trajectories x %d parameters -> %s", cell.id, n, n_params, output)


def read_init(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(trajectory (T,), theta0 (T, P))`` from an init table."""
    table = pq.read_table(path, columns=["trajectory", "theta"])
    ids = table.column("trajectory").to_numpy()
    n_params = (table.schema.metadata or {}).get(b"reluflow.n_params")
    return ids, theta_matrix(table.column("theta"), None if n_params is None else int(n_params))


def read_final(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(trajectory (T,), theta_final (T, P), theta_refined (T, P))`` from a final-state table; rows of
    ``theta_refined`` are NaN where no refinement ran."""
    table = pq.read_table(path, columns=["trajectory", "theta_final", "theta_refined"])
    ids = table.column("trajectory").to_numpy()
    final = theta_matrix(table.column("theta_final"))
    refined = theta_matrix(table.column("theta_refined"), final.shape[1], nulls=True)
    return ids, final, refined


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


# The per-cell tables integrate writes from shards, in the order a shard's files are written: trajectories last,
# so that a shard counts as finished once its trajectories file exists (init is written whole, before the shards).
SHARD_TABLES = ("curves", "final", "trajectories")
assert set(CELL_TABLES) == {"init", *SHARD_TABLES}


def plan_shards(cell: Cell, shard_size: int) -> list[Shard]:
    n = cell.n_trajectories
    return [
        Shard(a, min(a + shard_size, n), f"k{cell.key:016x}-s{cell.seed}-t{a:09d}-{min(a + shard_size, n):09d}")
        for a in range(0, n, shard_size)
    ]


def _shard_meta(cell: Cell, shard: Shard, table: str) -> dict[str, str]:
    return _cell_meta(cell, table, trajectory_range=[shard.start, shard.stop])


def _shard_is_finished(cell: Cell, shard: Shard, shard_dir: Path) -> bool:
    """Every file of the shard exists (each was written atomically, trajectories last), was made for exactly this
    cell, seed, range, package source, version and table schema, and holds intact data
    (``_shard_data_problem``). A shard on disk that fails the check is logged (WARNING, with the reason) and
    recomputed (damaged files are removed); a missing metadata key is a mismatch, never an error."""
    for path in shard.paths(shard_dir).values():
        if not path.is_file():
            return False
        problem = _metadata_problem(path, lambda table: _shard_meta(cell, shard, table), _SHARD_CHECKS)
        if problem is not None:
            log.warning("shard %s: %s, recomputing", shard.stem, problem)
            return False
    problem = _shard_data_problem(cell, shard, shard_dir)
    if problem is not None:
        log.warning("shard %s: %s, recomputing", shard.stem, problem)
        for path in shard.paths(shard_dir).values():
            path.unlink(missing_ok=True)
        return False
    return True


def _metadata_problem(path: Path, expected_meta: Any, checks: Sequence[tuple[str, str]]) -> str | None:
    """Why the file at ``path`` was not made for what ``expected_meta(table)`` describes (None: it was), comparing
    the metadata keys of ``checks``. The code too: a file from other code (source hash), version or table schema
    is never mixed in. The git commit is not compared: it is unknown outside a checkout, and a dirty tree hides
    edits. A missing key is a mismatch, never an error."""
    try:
        meta = read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        return f"cannot read {path.name} ({exc})"
    expected = expected_meta(meta.get("reluflow.table", ""))
    for key, what in checks:
        found, want = meta.get(key), expected.get(key)
        if want is None:  # e.g. no source hash: this process cannot tell which code wrote the file
            return f"{key} is unknown in this process, so no file can be matched to this code"
        if found != want:
            detail = f"{key} differs" if key == "reluflow.params" else f"{key} {_short(found)} != {_short(want)}"
            return f"written by {what} ({detail})"
    return None


def _shard_data_problem(cell: Cell, shard: Shard, shard_dir: Path) -> str | None:
    """Why a shard's data cannot be merged (None: it can): a page that fails its checksum or cannot be decoded, a
    row count or trajectory ids other than the shard's range, another cell's id, or curves that do not run from
    checkpoint 0 to each trajectory's final state (``steps``)."""
    expected = np.arange(shard.start, shard.stop, dtype=np.int64)
    data = {}
    for table, path in shard.paths(shard_dir).items():
        try:
            data[table] = pq.read_table(path, page_checksum_verification=True)  # every page of every column
        except (OSError, pa.ArrowException) as exc:
            return f"{path.name} is damaged ({type(exc).__name__}: {exc})"
        lacking = [c for c in _SHARD_COLUMNS[table] if c not in data[table].column_names]
        if lacking:
            return f"{path.name} has no column(s) {lacking}"
        ids = data[table].column("trajectory").to_numpy()
        found = np.unique(ids) if table == "curves" else ids  # curves: one row per checkpoint
        if not np.array_equal(found, expected):
            return (f"{path.name} holds {len(ids)} rows of trajectories {_id_range(found)}, not "
                    f"{shard.start}..{shard.stop - 1}")
        cells = set(pc.unique(data[table].column("cell").cast(pa.string())).to_pylist())
        if cells - {cell.id}:
            return f"{path.name} holds rows of cell(s) {sorted(cells - {cell.id})}, not {cell.id!r}"
    curves = data["curves"]
    ids = curves.column("trajectory").to_numpy()
    first = np.r_[0, np.flatnonzero(np.diff(ids)) + 1]
    last = np.r_[first[1:] - 1, len(ids) - 1]
    position = np.arange(len(ids)) - np.repeat(first, np.diff(np.r_[first, len(ids)]))
    steps = data["trajectories"].column("steps").to_numpy()
    if not (np.array_equal(curves.column("checkpoint").to_numpy(), position)
            and np.array_equal(curves.column("step").to_numpy()[last], steps)):
        return f"{shard.paths(shard_dir)['curves'].name} does not run from checkpoint 0 to every final state"
    return None


# the columns the shard check reads
_SHARD_COLUMNS = {"trajectories": ("cell", "trajectory", "steps"), "final": ("cell", "trajectory"),
                  "curves": ("cell", "trajectory", "checkpoint", "step")}


def _id_range(ids: np.ndarray) -> str:
    return f"{ids.min()}..{ids.max()} ({len(ids)} distinct)" if len(ids) else "(none)"


_SHARD_CHECKS = (
    ("reluflow.source_hash", "other code"), ("reluflow.schema_version", "another table schema"),
    ("reluflow.version", "another reluflow version"), ("reluflow.params", "other parameters"),
    ("reluflow.seed", "another seed"), ("reluflow.trajectory_range", "another trajectory range"),
)


def _short(value: str | None) -> str:
    if value is None:
        return "(none recorded)"
    return value if len(value) <= 24 else f"{value[:12]}..."


def run_shard(cell: Cell, start: int, stop: int, theta0: np.ndarray) -> dict[str, pa.Table]:
    """The dask task: integrate trajectories ``[start, stop)`` of one cell from ``theta0`` ``(stop-start, P)``.

    Returns the shard's table of each of ``SHARD_TABLES``, with the ``cell`` column in front, and under
    ``"worker"`` the identity of the code that computed them (``worker_identity``: reluflow's version and source
    hash) with the worker's address, which the driver checks before it writes anything (a worker may join an
    elastic pool long after the start-up check). Runs on a worker; pure: the same arguments give the same tables,
    whatever the worker or retry.
    """
    from threadpoolctl import threadpool_limits

    from .._simulate import simulate
    from ._cluster import worker_identity

    with threadpool_limits(limits=1):  # one BLAS thread per worker, whatever the worker's environment
        sim = simulate(cell.problem_object, method=cell.method, init=cell.init, n_trajectories=cell.n_trajectories,
                       seed=cell.seed, trajectory_ids=np.arange(start, stop, dtype=np.int64), theta0=theta0)
    return {"trajectories": _with_cell(sim.trajectories, cell), "curves": _with_cell(sim.curves, cell),
            "final": final_table(cell, sim.states), "worker": {**worker_identity(), "address": _worker_address()}}


def _worker_address() -> str | None:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not in a dask worker (called directly)
        return None


def check_shard_identity(identity: Mapping[str, Any] | None, mine: Mapping[str, Any], what: str) -> None:
    """Refuse a shard computed by other code than this job's (``run_shard``'s ``"worker"`` entry against
    ``worker_identity()`` here): one sentence naming the worker; nothing of it is written."""
    identity = identity or {}
    for key in ("version", "source"):
        if identity.get(key) != mine.get(key) and mine.get(key) is not None:
            name = "version" if key == "version" else "source hash (the code differs within a version)"
            raise StageError(
                f"{what} was computed by dask worker {identity.get('address') or '(unknown)'} running reluflow "
                f"{name} {identity.get(key)!r}, this job {mine.get(key)!r} (a worker started from another "
                "environment, perhaps one that joined after the start): it is not written; install the same "
                "reluflow where the workers start, then rerun")


def _write_shard(cell: Cell, shard: Shard, shard_dir: Path, tables: Mapping[str, pa.Table]) -> None:
    paths = shard.paths(shard_dir)
    for name in SHARD_TABLES:  # in this order: the trajectories file marks the shard finished
        write_table(tables[name], paths[name], _shard_meta(cell, shard, name))


def _with_cell(df: pd.DataFrame, cell: Cell) -> pa.Table:
    df = df.copy()
    df.insert(0, "cell", pd.Categorical.from_codes(np.zeros(len(df), dtype=np.int8), categories=[cell.id]))
    return _arrow_types(table_from_frame(df))


def final_table(cell: Cell, states: pd.DataFrame) -> pa.Table:
    """``final/{cell}.parquet`` rows from ``simulate``'s ``states``: final and refined parameters."""
    n = len(states)
    p = cell.problem_object.n_params if n == 0 else len(states["theta_final"].iloc[0])
    final = np.stack(states["theta_final"].to_numpy()) if n else np.zeros((0, p))
    has_refined = states["theta_refined"].map(lambda v: v is not None).to_numpy(dtype=bool)
    refined = np.full((n, p), np.nan)
    if has_refined.any():
        refined[has_refined] = np.stack(states["theta_refined"].to_numpy()[has_refined])
    return pa.table({
        "cell": cell_array([cell.id] * n),
        "trajectory": pa.array(states["trajectory"].to_numpy(), pa.int64()),
        "theta_final": theta_column(final),
        "theta_refined": theta_column(refined, has_refined),
    })


# ---------------------------------------------------------------------------------------------- integrate
_DONE_CHECKS = tuple((k, w) for k, w in _SHARD_CHECKS if k != "reluflow.trajectory_range") + (
    ("reluflow.n_trajectories", "another number of trajectories"),)


@dataclass(frozen=True)
class CellFiles:
    """Where the integrate stage keeps one cell's files under ``study_dir``: its tables, its finished shards
    (``.shards/{cell}/``) and a second name of each finished table (``.done/``), which survives Snakemake's
    removal of the outputs of a job it reruns, so that an unchanged cell is not computed again."""

    cell: Cell
    study_dir: Path

    def output(self, table: str) -> Path:
        return self.study_dir / table / f"{self.cell.id}.parquet"

    @property
    def shard_dir(self) -> Path:
        return self.study_dir / ".shards" / self.cell.id

    @property
    def stem(self) -> str:  # what the tables are a function of, besides the code: parameters, seed, size
        return f"k{self.cell.key:016x}-s{self.cell.seed}-n{self.cell.n_trajectories}"

    def done(self, table: str) -> Path:
        return self.study_dir / ".done" / f"{self.stem}.{table}.parquet"


def write_integrate(
    cells: Sequence[Cell],
    study_dir: str | Path,
    execution: Execution | None = None,
    *,
    cores: int | None = None,
) -> dict[str, int]:
    """Integrate ``cells`` (all of a study's: the ``.done`` names of other cells in ``study_dir`` are removed) into
    ``study_dir``: each cell's ``CELL_TABLES`` (init, curves, final, trajectories), all shards of all cells on one
    dask cluster that this call starts (or joins) and stops.
    Returns counts: ``cells_reused`` (finished tables kept from an earlier run), ``shards_reused`` and
    ``shards_computed``.

    A cell whose finished tables are on disk (``CellFiles.done``, made by the same code for the same parameters,
    seed and size) is not computed again; the others get their init table, then their unfinished shards run.
    Every shard is verified before it is merged (``_shard_is_finished``: its metadata, every page against its
    checksum, its rows and trajectory ids): a shard on disk that fails is recomputed with a warning, a freshly
    written one that fails stops the job. A cell's tables are written as soon as its last shard is in. Initial
    parameters are read shard by shard, and at most a few shards per worker are in flight, so the driver's
    memory stays at a few shards whatever the study's size.

    ``execution`` (default: the schema's defaults) chooses the cluster (``dask_client``), the shard size, retries
    and progress interval; ``cores``: what the job was given, the local cluster's workers unless
    ``execution.workers`` says otherwise. None of them changes a result."""
    from ._cluster import dask_client

    ex = execution if execution is not None else Execution.from_mapping()
    keep_shards, workers = ex.keep_shards, ex.n_workers(cores)
    study_dir = Path(study_dir)
    files = [CellFiles(c, study_dir) for c in cells]
    try:  # the memory check of reluflow.config, again: the execution settings may have changed since
        sizes = {f.cell.id: shard_size_for(f.cell, ex) for f in files}
    except ConfigError as exc:
        raise StageError(str(exc)) from None
    pending = [f for f in files if not _restore_done(f)]
    cells_reused = len(files) - len(pending)
    plans: dict[str, list[Shard]] = {}
    todo: dict[str, list[Shard]] = {}
    for f in pending:
        size = sizes[f.cell.id]
        if size < ex.shard_size:
            log.info("cell %s: shards of %d trajectories (about %d MB each by reluflow.simulate_memory), not "
                     "execution.shard_size = %d, to fit execution.worker_memory_mb = %d", f.cell.id, size,
                     -(-f.cell.memory.bytes(size) // (1 << 20)), ex.shard_size, ex.worker_memory_mb)
        write_init(f.cell, f.output("init"), chunk=size)
        f.shard_dir.mkdir(parents=True, exist_ok=True)
        plans[f.cell.id] = plan_shards(f.cell, size)
        todo[f.cell.id] = [s for s in plans[f.cell.id] if not _shard_is_finished(f.cell, s, f.shard_dir)]
    n_shards = sum(len(p) for p in plans.values())
    n_todo = sum(len(t) for t in todo.values())
    log.info("integrate: %d cell(s); %d with finished tables (reused); %d shard(s) of <= %d trajectories, %d "
             "already finished (reused), %d to compute", len(files), cells_reused, n_shards,
             max(sizes.values(), default=ex.shard_size), n_shards - n_todo, n_todo)

    def finish(f: CellFiles) -> None:
        _finish_cell(f, plans[f.cell.id], todo[f.cell.id], shard_size=sizes[f.cell.id], keep_shards=keep_shards)

    for f in pending:
        if not todo[f.cell.id]:
            finish(f)
    running = [f for f in pending if todo[f.cell.id]]
    if running:
        with dask_client(ex.scheduler, workers=workers, address=ex.address, jobqueue=ex.jobqueue,
                         scheduler_file=ex.scheduler_file, minimum_jobs=ex.minimum_jobs,
                         worker_wait=ex.worker_wait) as client:
            # a jobqueue pool counts at its largest (jobs x processes), so that adapt sees enough queued work
            _run_shards(client, running, todo, retries=ex.retries,
                        window=shards_in_flight(ex.worker_processes(cores)), n_shards=n_shards,
                        progress_interval=ex.progress_interval, on_cell_done=finish)
    _prune_done(study_dir, {f.stem for f in files})
    return {"cells_reused": cells_reused, "shards_reused": n_shards - n_todo, "shards_computed": n_todo}


def _restore_done(f: CellFiles) -> bool:
    """Put a cell's finished tables back in place from ``.done`` (a hard link, else a copy), if every one is there
    and was made by this code for this cell; True if it did."""
    paths = {t: f.done(t) for t in CELL_TABLES}
    if not all(p.is_file() for p in paths.values()):
        return False
    for table, path in paths.items():
        problem = _metadata_problem(path, lambda kind: _cell_meta(f.cell, kind), _DONE_CHECKS)
        if problem is None and table != "curves":
            try:
                rows = pq.read_metadata(path).num_rows
            except (OSError, pa.ArrowException) as exc:
                problem = f"{path.name} is damaged ({type(exc).__name__}: {exc})"
            else:
                if rows != f.cell.n_trajectories:
                    problem = f"{path.name} holds {rows} rows, not {f.cell.n_trajectories}"
        if problem is not None:
            log.warning("cell %s: finished tables not reused: %s; computing the cell", f.cell.id, problem)
            for p in paths.values():
                p.unlink(missing_ok=True)
            return False
    for table, path in paths.items():
        _link(path, f.output(table))
    log.info("cell %s: finished tables of an earlier run reused", f.cell.id)
    return True


def _link(src: Path, dst: Path) -> None:
    """Give ``src`` the second name ``dst``, atomically: a hard link (no copy of the data), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links here (another file system, or not supported)
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def _prune_done(study_dir: Path, keep: set[str]) -> None:
    """Remove the ``.done`` names of tables no cell of the study has any more (a changed parameter, seed, size)."""
    done_dir = study_dir / ".done"
    if done_dir.is_dir():
        for path in done_dir.glob("*.parquet"):
            if path.name.split(".", 1)[0] not in keep:
                path.unlink(missing_ok=True)


def _finish_cell(f: CellFiles, shards: list[Shard], fresh: list[Shard], *, shard_size: int,
                 keep_shards: bool) -> None:
    """Merge a cell whose shards are all in: verify the fresh ones again, stream every shard into the cell's
    tables, give them their ``.done`` names, remove the shards (unless ``keep_shards``)."""
    bad = [s for s in fresh if not _shard_is_finished(f.cell, s, f.shard_dir)]
    if bad:
        raise StageError(f"{len(bad)} shard(s) of {f.cell.id} failed verification right after they were written "
                           f"(first: {bad[0].stem} in {f.shard_dir}): the disk may be failing or full; nothing of "
                           "this cell was merged, rerun to recompute them")
    for table in SHARD_TABLES:
        paths = [s.paths(f.shard_dir)[table] for s in shards]
        schema = pa.unify_schemas([pq.read_schema(p).remove_metadata() for p in paths],
                                  promote_options="permissive")
        pandas_meta = pq.read_schema(paths[0]).metadata or {}
        schema = schema.with_metadata({k: v for k, v in pandas_meta.items() if k == b"pandas"})
        n = write_tables_streaming((_read_checked(p) for p in paths), f.output(table),
                                   _cell_meta(f.cell, table, shard_size=str(shard_size)), schema=schema)
        log.info("wrote %s: %d rows -> %s", table, n, f.output(table))
    for table in CELL_TABLES:
        _link(f.output(table), f.done(table))
    if not keep_shards:
        shutil.rmtree(f.shard_dir, ignore_errors=True)


def _read_checked(path: Path) -> pa.Table:
    """A table file read whole, every page checked against its checksum; a damaged file raises naming it."""
    try:
        return pq.read_table(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise StageError(f"{path} is damaged ({type(exc).__name__}: {exc}): delete it and rerun") from exc


def _init_slices(init_path: str | Path, cell: Cell, shards: list[Shard]) -> Iterator[tuple[Shard, np.ndarray]]:
    """``(shard, theta0 (n, P))`` for ``shards`` (in trajectory order), read from the init table one record batch
    at a time: memory stays at about one shard, whatever the cell's size."""
    f = pq.ParquetFile(init_path)
    if f.metadata.num_rows != cell.n_trajectories:
        raise StageError(f"{init_path} holds {f.metadata.num_rows} trajectories, not the cell's "
                           f"{cell.n_trajectories}: delete it and rerun")
    n_params = int((f.schema_arrow.metadata or {}).get(b"reluflow.n_params", b"0")) or None
    batches = f.iter_batches(batch_size=max(s.n for s in shards), columns=["trajectory", "theta"])
    buf_ids: list[np.ndarray] = []
    buf_theta: list[np.ndarray] = []
    start = 0  # trajectory id of the first buffered row
    for shard in shards:
        while start + sum(len(i) for i in buf_ids) < shard.stop:
            batch = next(batches)
            buf_ids.append(batch.column("trajectory").to_numpy())
            buf_theta.append(theta_matrix(batch.column("theta"), n_params))
        ids, theta = np.concatenate(buf_ids), np.concatenate(buf_theta)
        lo, hi = shard.start - start, shard.stop - start
        if not np.array_equal(ids[lo:hi], np.arange(shard.start, shard.stop)):
            raise StageError(f"{init_path} does not hold trajectories {shard.start}..{shard.stop - 1} in order: "
                               "delete it and rerun")
        yield shard, np.ascontiguousarray(theta[lo:hi])
        buf_ids, buf_theta, start = [ids[hi:]], [theta[hi:]], shard.stop


def _log_worker_event(event: tuple[float, Any]) -> None:
    """A dask scheduler event about a worker, in the integrate log: a worker that left unexpectedly (killed, out of
    memory; the shards it was running are run again elsewhere, up to the retries) and one that joined (a restart,
    or a jobqueue job that started)."""
    _, msg = event
    if not isinstance(msg, dict):
        return
    if msg.get("action") == "remove-worker" and not msg.get("expected"):
        shards = [str(k).removeprefix("reluflow-shard-") for k in msg.get("processing-tasks") or ()]
        log.warning("dask worker %s died or was lost while running %d shard(s)%s: they are run again (a shard whose "
                    "workers keep dying ends the job)", msg.get("worker"), len(shards),
                    f" ({', '.join(sorted(shards))})" if shards else "")
    elif msg.get("action") == "add-worker":
        log.info("dask worker %s joined", msg.get("worker"))


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception for a one-line error: its type and the first line of its message, at most ``limit``
    characters of that."""
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run_shards(client: Any, cells: list[CellFiles], todo: Mapping[str, list[Shard]], *, retries: int,
                window: int, n_shards: int, progress_interval: float, on_cell_done: Any) -> None:
    """Run the ``todo`` shards of ``cells`` on ``client``, cell after cell, at most ``window`` in flight; write
    each shard as it completes, and call ``on_cell_done(cell_files)`` once a cell's last shard is in. A lost
    cluster, a shard whose workers keep dying or a shard whose task raises on each of its ``1 + retries`` tries
    ends the job with one sentence; finished shards stay for a rerun.
    """

    def inputs() -> Iterator[tuple[CellFiles, Shard, np.ndarray]]:
        for f in cells:
            for shard, theta0 in _init_slices(f.output("init"), f.cell, todo[f.cell.id]):
                yield f, shard, theta0

    client.subscribe_topic("all", _log_worker_event)  # worker deaths and restarts, in this job's log
    try:
        _run_subscribed(client, cells, todo, inputs(), retries=retries, window=window, n_shards=n_shards,
                        progress_interval=progress_interval, on_cell_done=on_cell_done)
    finally:
        # before the client closes: else the scheduler logs a CRITICAL traceback publishing the client's own
        # removal to it
        with contextlib.suppress(Exception):  # a cluster that went away has nothing to unsubscribe
            client.unsubscribe_topic("all")


def _run_subscribed(client: Any, cells: list[CellFiles], todo: Mapping[str, list[Shard]], source: Any, *,
                    retries: int, window: int, n_shards: int, progress_interval: float, on_cell_done: Any) -> None:
    from distributed import KilledWorker, as_completed

    from ._cluster import worker_identity

    left = {f.cell.id: len(todo[f.cell.id]) for f in cells}
    mine = worker_identity()
    by_key: dict[str, tuple[CellFiles, Shard]] = {}
    running = as_completed()

    def submit_next() -> None:
        nxt = next(source, None)
        if nxt is not None:
            f, shard, theta0 = nxt
            # an explicit, distinct key per shard: submit is pure by default and would merge equal-looking tasks
            future = client.submit(run_shard, f.cell, shard.start, shard.stop, theta0,
                                   key=f"reluflow-shard-{shard.stem}", retries=retries, pure=False)
            by_key[future.key] = (f, shard)
            running.add(future)

    for _ in range(window):
        submit_next()
    n_todo = sum(left.values())
    total_traj = sum(s.n for f in cells for s in todo[f.cell.id])
    t0 = last = time.monotonic()
    done = done_traj = 0
    for future in running:
        f, shard = by_key.pop(future.key)
        try:
            tables = future.result()
        except KilledWorker as exc:
            raise StageError(
                f"shard {shard.stem} of {f.cell.id}: dask workers died running it {retries + 1} or more times "
                f"(out of memory, or killed): lower execution.shard_size or give workers more memory, then rerun "
                f"({n_shards - n_todo + done} finished shard(s) are kept and reused) [{exc}]") from None
        except CancelledError:
            raise StageError(
                f"the dask cluster went away while shard {shard.stem} of {f.cell.id} was running (its scheduler "
                f"stopped or was killed): rerun to resume ({n_shards - n_todo + done} finished shard(s) are kept)"
            ) from None
        except Exception as exc:  # the task raised on every try: dask re-raises the worker's exception here
            # chained, not hidden: the task's own traceback (a bug in simulate, say) comes first, this sentence last
            raise StageError(
                f"shard {shard.stem} of {f.cell.id} failed {retries + 1} time(s) (1 + execution.retries), last "
                f"with {_one_line(exc)}; rerun to resume "
                f"({n_shards - n_todo + done} finished shard(s) are kept and reused)") from exc
        check_shard_identity(tables.get("worker"), mine, f"shard {shard.stem} of {f.cell.id}")
        n_rows = tables["trajectories"].num_rows
        if n_rows != shard.n:
            raise StageError(f"shard {shard.stem}: simulate returned {n_rows} rows, not {shard.n}")
        _write_shard(f.cell, shard, f.shard_dir, tables)
        future.release()
        submit_next()
        done += 1
        done_traj += shard.n
        left[f.cell.id] -= 1
        if left[f.cell.id] == 0:
            on_cell_done(f)
            log.info("cell %s: done", f.cell.id, extra={"console": True})
        now = time.monotonic()
        if now - last >= progress_interval or done == n_todo:
            rate = done_traj / max(now - t0, 1e-9)
            eta = round((total_traj - done_traj) / rate)  # seconds, at the rate so far
            finished = n_shards - n_todo + done
            log.info("progress: %d/%d shards (%d %%), %.1f trajectories/s, ETA %d:%02d:%02d", finished, n_shards,
                     100 * finished // n_shards, rate, eta // 3600, eta // 60 % 60, eta % 60,
                     extra={"console": True})  # console: the CLI's --console-fd, if given
            last = now


# ---------------------------------------------------------------------------------------------- aggregate
def write_aggregate(study: Study, trajectories: Mapping[str, str | Path], output: str | Path,
                    best_of_k_output: str | Path | None = None) -> None:
    """``summary.parquet``: one row per cell, its parameters as columns followed by ``summarize_cell``'s; and,
    when ``best_of_k_output`` is given, ``best_of_k.parquet``: ``best_of_k_table`` of every cell, long format."""
    from ..analysis import (
        BEST_OF_K_COLUMNS,
        BOOTSTRAP_RESAMPLES,
        CONFIDENCE,
        MIN_GROUPS,
        best_of_k_successes,
        best_of_k_table,
        binomial_interval,
        summarize_cell,
    )

    cells = list(study.cells.values())
    missing = [c.id for c in cells if c.id not in trajectories]
    if missing:
        raise ValueError(f"aggregate: no trajectories table for cells {missing}")
    rows, bok = [], []
    for cell in cells:
        df = pd.read_parquet(trajectories[cell.id])
        # successes are excess risks over the stated optimum (None: over 0), as the classes are
        optimal_risk = cell.problem.get("optimal_risk")
        rows.append(summarize_cell(df, eps_list=study.eps_list, k_list=study.k_list, optimal_risk=optimal_risk,
                                   seed=cell.key))
        if best_of_k_output is not None:
            successes = best_of_k_successes(df["risk_final"], study.eps_list, optimal_risk=optimal_risk)
            bok.append(best_of_k_table(successes, len(df), study.eps_list, study.k_list).assign(cell=cell.id))
    stats = pd.DataFrame.from_records(rows)
    # summarize_cell adds a status's columns only where that status occurs: elsewhere the count is zero, and the
    # fraction and its interval are those of zero successes (NaN for a cell of no trajectories).
    for col in [c for c in stats.columns if c.startswith("n_status_")]:
        count = stats[col].fillna(0).astype("int64")
        stats[col] = count
        name = "frac_" + col.removeprefix("n_")
        low, high = binomial_interval(count.to_numpy(), stats["n"].to_numpy(dtype=np.int64))
        stats[name] = stats[name].fillna(pd.Series(np.where(stats["n"] > 0, 0.0, np.nan), index=stats.index))
        stats[f"{name}_low"] = stats[f"{name}_low"].fillna(pd.Series(low, index=stats.index))
        stats[f"{name}_high"] = stats[f"{name}_high"].fillna(pd.Series(high, index=stats.index))
    table = pa.table(cell_columns(cells))
    stats_table = _arrow_types(table_from_frame(stats))
    for name in stats_table.column_names:
        if name in table.column_names:
            raise ValueError(f"summarize_cell returned a column {name!r} that clashes with a parameter column")
        table = table.append_column(name, stats_table.column(name))
    intervals = json.dumps({"confidence": CONFIDENCE, "binomial": "wilson", "bootstrap": "percentile",
                            "n_resamples": BOOTSTRAP_RESAMPLES, "min_groups": MIN_GROUPS})
    meta = _study_meta(study, "summary")
    meta["reluflow.analysis"] = json.dumps({"eps": study.eps_list, "k": study.k_list})
    meta["reluflow.intervals"] = intervals
    write_table(table, output, meta)
    if best_of_k_output is not None:
        columns = ["cell", *BEST_OF_K_COLUMNS]
        frame = pd.concat(bok, ignore_index=True)[columns] if bok else pd.DataFrame(columns=columns)
        schema = pa.schema([("eps", pa.float64()), ("k", pa.int64()),
                            ("successes", pa.int64()), ("n", pa.int64()), ("estimate", pa.float64()),
                            ("low", pa.float64()), ("high", pa.float64()), ("supported", pa.bool_())])
        meta = _study_meta(study, "best_of_k")
        meta["reluflow.analysis"] = json.dumps({"eps": study.eps_list, "k": study.k_list})
        meta["reluflow.intervals"] = intervals
        body = pa.Table.from_pandas(frame[columns[1:]], schema=schema, preserve_index=False)
        ids = [c.id for c in cells]
        bok_table = body.add_column(0, "cell", cell_array(frame["cell"].astype(str).tolist(), categories=ids))
        write_table(bok_table, best_of_k_output, meta)
        log.info("aggregate: best-of-K table, %d rows -> %s", len(frame), best_of_k_output)
    log.info("aggregate: %d cells of study %r -> %s", len(cells), study.name, output)
