"""``reluflow.load``: a finished (or partly finished) study's tables as pandas DataFrames."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

# pandas is imported where tables are read, not with the package: the Snakefile imports reluflow to read the
# config, and Snakemake starts no job until it has (pandas was 0.4 s of that start, one core busy, the others idle)
if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PARAM_PREFIXES", "StudyTables", "load"]

PARAM_PREFIXES = ("problem.", "init.", "method.")


@dataclass
class StudyTables:
    """The tables of ``results/{study}`` (see docs/tables.md).

    ``cells`` and ``summary`` have every cell parameter as a column; ``trajectories`` and ``curves`` have the
    ``cell`` id plus the parameter columns chosen by ``load(params=...)``. ``best_of_k`` is long format (one row
    per cell, eps and K, with intervals). ``final`` (read only when asked for: ``load(final=True)``) has ``cell``,
    ``trajectory`` and the final and refined parameters ``theta_final``, ``theta_refined`` (numpy arrays; None
    where no refinement ran). A table not asked for is None, and so are ``summary`` and ``best_of_k`` while they
    are not written.
    In every table ``cell`` is an ordered categorical whose categories are the study's cell ids in grid order
    (``cell_dtype``), and list-valued parameters are tuples.
    """

    study_dir: Path
    cells: pd.DataFrame
    trajectories: pd.DataFrame | None
    curves: pd.DataFrame | None
    summary: pd.DataFrame | None
    metadata: dict[str, str] = field(default_factory=dict)
    final: pd.DataFrame | None = None
    best_of_k: pd.DataFrame | None = None

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.cells.columns if c.startswith(PARAM_PREFIXES)]

    @property
    def cell_dtype(self) -> pd.CategoricalDtype:
        """The ``cell`` dtype: ordered, the study's cell ids in grid order. ``df["cell"].astype(cell_dtype)``
        restores grid order on a table read with ``pd.read_parquet(directory)``."""
        return self.cells["cell"].dtype


def _hashable(v: object) -> str:
    try:
        return json.dumps(v.tolist() if hasattr(v, "tolist") else v, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(v)


def _varying(cells: pd.DataFrame, columns: list[str]) -> list[str]:
    return [c for c in columns if cells[c].map(_hashable).nunique(dropna=False) > 1]


def _as_tuple(v: object) -> object:
    """A list value (numpy array from parquet, or list) as a tuple, nested lists included: hashable, so a
    parameter such as ``problem.network.widths`` works with groupby, drop_duplicates, set and dict keys."""
    if hasattr(v, "tolist") and not isinstance(v, str):
        v = v.tolist()
    return tuple(_as_tuple(x) for x in v) if isinstance(v, list | tuple) else v


def _with_tuples(df: pd.DataFrame) -> pd.DataFrame:
    for col in df.columns:
        if col.startswith(PARAM_PREFIXES) and df[col].dtype == object:
            df[col] = df[col].map(_as_tuple)
    return df


def _with_cell_dtype(df: pd.DataFrame, dtype: pd.CategoricalDtype) -> pd.DataFrame:
    """``df["cell"]`` as ``dtype``; ids that are not categories (a table from a former grid) are added after them
    rather than lost."""
    import pandas as pd

    known = set(dtype.categories)
    extra = [c for c in df["cell"].dropna().unique() if c not in known]  # unique: per category, not per row
    if extra:
        dtype = pd.CategoricalDtype([*dtype.categories, *extra], ordered=True)
    df["cell"] = df["cell"].astype(dtype)  # a categorical is recoded, not converted row by row
    return df


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate per-cell tables; a categorical whose categories differ between files (tables written by
    different package versions) gets the union of them, in order of appearance, instead of turning into text."""
    import pandas as pd

    for col in frames[0].columns:
        dtypes = [f[col].dtype for f in frames if col in f]
        if all(isinstance(d, pd.CategoricalDtype) for d in dtypes) and \
                len({(tuple(d.categories), d.ordered) for d in dtypes}) > 1:
            union = pd.CategoricalDtype(list(dict.fromkeys(c for d in dtypes for c in d.categories)),
                                        ordered=dtypes[0].ordered)
            for f in frames:
                if col in f:
                    f[col] = f[col].astype(union)
    return pd.concat(frames, ignore_index=True)


def _read_cells(study_dir: Path, what: str, cell_dtype: pd.CategoricalDtype) -> pd.DataFrame:
    import pandas as pd

    from ._tableschema import check_table

    frames = []
    missing = []
    for cell in cell_dtype.categories:
        path = study_dir / what / f"{cell}.parquet"
        if path.is_file():
            check_table(path, what)
            frames.append(_with_cell_dtype(pd.read_parquet(path), cell_dtype))
        else:
            missing.append(cell)
    if missing:
        warnings.warn(f"{study_dir}: no {what} table yet for cells {missing}", stacklevel=3)
    if not frames:
        return pd.DataFrame({"cell": pd.Series([], dtype=cell_dtype)})
    return _concat(frames)


def load(study_dir: str | Path, *, trajectories: bool = True, curves: bool = True, summary: bool = True,
         params: Literal["varying", "all", "none"] = "varying", best_of_k: bool = True,
         final: bool = False) -> StudyTables:
    """Read ``results/{study}``: cells, trajectories (unless ``trajectories=False``), curves (unless
    ``curves=False``), summary (unless ``summary=False``; None while it is not written), the best-of-K table
    (unless ``best_of_k=False``; None while it is not written) and the final states (with ``final=True``: ``P``
    numbers per trajectory, twice, so not read by default). A table not asked for is not read, and is None.

    ``params`` picks the cell-parameter columns joined onto trajectories and curves: those that differ between
    the study's cells (``"varying"``, the default: the grid), ``"all"``, or ``"none"`` (just ``cell``).
    Cells whose tables are not written yet are left out with a warning. A table written by a reluflow with
    another table schema version, or without a column readers rely on, raises ``ValueError`` (rerun the study).

    Unlike ``pd.read_parquet`` of a file or directory, every table has ``cell`` as an ordered categorical in
    grid order (``StudyTables.cell_dtype``) and list-valued parameters as tuples (hashable: ``groupby`` works).
    """
    import pandas as pd
    import pyarrow.parquet as pq

    from ._tableschema import check_table

    study_dir = Path(study_dir)
    cells_path = study_dir / "cells.parquet"
    if not cells_path.is_file():
        raise FileNotFoundError(f"{cells_path} does not exist: is {study_dir} a study's results directory?")
    check_table(cells_path, "cells")
    cells = pd.read_parquet(cells_path)
    # grid order is the row order of cells.parquet (files of earlier versions hold cell as plain text)
    cell_dtype = pd.CategoricalDtype(list(cells["cell"].astype(object)), ordered=True)
    cells = _with_tuples(_with_cell_dtype(cells, cell_dtype))
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(cells_path).metadata or {}).items()
            if k != b"pandas"}
    all_params = [c for c in cells.columns if c.startswith(PARAM_PREFIXES)]
    chosen = {"varying": _varying(cells, all_params), "all": all_params, "none": []}[params]
    join = cells[["cell", *chosen]]

    def with_params(df: pd.DataFrame) -> pd.DataFrame:
        if not chosen or df.empty:
            return df
        rest = [c for c in df.columns if c != "cell"]
        return df.merge(join, on="cell", how="left", sort=False)[["cell", *chosen, *rest]]

    traj_df = with_params(_read_cells(study_dir, "trajectories", cell_dtype)) if trajectories else None
    curve_df = with_params(_read_cells(study_dir, "curves", cell_dtype)) if curves else None
    summary_path = study_dir / "summary.parquet"
    summary_df = None
    if summary and summary_path.is_file():
        check_table(summary_path, "summary")
        summary_df = _with_tuples(_with_cell_dtype(pd.read_parquet(summary_path), cell_dtype))
    bok_path = study_dir / "best_of_k.parquet"
    bok_df = None
    if best_of_k and bok_path.is_file():
        check_table(bok_path, "best_of_k")
        bok_df = _with_cell_dtype(pd.read_parquet(bok_path), cell_dtype)
    final_df = _read_cells(study_dir, "final", cell_dtype) if final else None
    return StudyTables(study_dir, cells, traj_df, curve_df, summary_df, meta, final=final_df, best_of_k=bok_df)
