"""Encodings taken from the grid: which cell parameters vary, and a colour, line style and marker per cell; legend
labels and the caption line of the fixed parameters. Also how the plotting functions read their inputs (a
``StudyTables`` or one of its DataFrames)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._load import PARAM_PREFIXES, StudyTables, _hashable, _varying

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["caption", "format_value", "group_cells", "series_styles", "short_name", "varying_keys"]

#: short names of parameters in labels and captions (the last part of the dotted path otherwise)
SHORT = {
    "widths": "width", "width": "width", "step_size": "step", "n_steps": "steps", "n_checkpoints": "checkpoints",
    "input_dim": "d", "t_end": "T", "n_trajectories": "n", "epsilon": "ε", "sigma": "σ", "risk_tol": "risk_tol",
    "grad_tol": "grad_tol", "norm_bound": "norm_bound", "optimal_risk": "L*",
}
#: parameters preferred as encodings when several carry the same split of the cells (step size over step count)
PREFERRED = ("widths", "width", "step_size", "sigma", "scale", "epsilon", "dt", "n_steps", "t_end", "solver",
             "activation", "input_dim")
#: channels ``series_styles`` assigns, in order, to the varying keys
CHANNELS = ("color", "linestyle", "marker")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)), (0, (1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">")
NULL_COLOR = "0.15"  # the colour of cells where a numeric colour key is unset (GF among GD step sizes)


# ---------------------------------------------------------------------------------------------------- inputs
def _cells_from(df: pd.DataFrame) -> pd.DataFrame:
    """The cells of a table that has a ``cell`` column and (some) parameter columns: one row per cell."""
    import pandas as pd

    if "cell" not in df.columns:
        raise ValueError(f"a table with a 'cell' column is expected, got columns {list(df.columns)[:8]}")
    keep = ["cell", *(c for c in df.columns if c.startswith(PARAM_PREFIXES)),
            *(c for c in ("study", "seed", "n_trajectories") if c in df.columns)]
    cells = df[keep].drop_duplicates("cell")
    if isinstance(cells["cell"].dtype, pd.CategoricalDtype):
        cells = cells.sort_values("cell")
    return cells.reset_index(drop=True)


def _inputs(tables: StudyTables | pd.DataFrame | None, table: str) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """``(the table named `table`, or None where not read or not written; the study's cells)`` from a
    ``StudyTables`` or from that table itself (its cells then are its own ``cell`` and parameter columns)."""
    import pandas as pd

    if isinstance(tables, StudyTables):
        return getattr(tables, table), tables.cells
    if isinstance(tables, pd.DataFrame):
        return tables, _cells_from(tables)
    raise TypeError(f"expected reluflow.load(...)'s StudyTables or its {table} DataFrame, got {type(tables).__name__}")


def _cell_ids(cells: pd.DataFrame, chosen: Sequence[str] | None) -> list[str]:
    ids = [str(c) for c in cells["cell"]]
    if chosen is None:
        return ids
    chosen = [str(c) for c in ([chosen] if isinstance(chosen, str) else chosen)]
    unknown = [c for c in chosen if c not in ids]
    if unknown:
        raise ValueError(f"cells {unknown} are not among the study's cells {ids}")
    return chosen


def _cell_values(cells: pd.DataFrame, column: str) -> dict[str, Any]:
    if column not in cells.columns:
        return {}
    return {str(c): v for c, v in zip(cells["cell"], cells[column], strict=True)}


def _method_kinds(cells: pd.DataFrame, ids: Sequence[str]) -> set[str]:
    kinds = _cell_values(cells, "method.kind")
    return {str(kinds[c]) for c in ids if c in kinds and not _is_null(kinds[c])}


# ---------------------------------------------------------------------------------------------------- values
def _is_null(v: Any) -> bool:
    import pandas as pd

    if v is None or v is pd.NA or v is pd.NaT:
        return True
    return isinstance(v, float) and math.isnan(v)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


def _numeric(v: Any) -> bool:
    """A number, or a tuple of numbers (widths ``(16,)``, ``(8, 8)``)."""
    if isinstance(v, tuple):
        return len(v) > 0 and all(_is_number(x) for x in v)
    return _is_number(v)


def _sort_key(v: Any) -> tuple:
    if _is_null(v):
        return (2,)
    if isinstance(v, tuple) and all(_is_number(x) for x in v):
        return (0, len(v), tuple(float(x) for x in v))
    if _is_number(v):
        return (0, 1, (float(v),))
    return (1, str(v))


def format_value(v: Any, column: str = "") -> str:
    """A parameter value in short form: widths ``(16,)`` as ``16`` and ``(8, 8)`` as ``8x8``, other lists as
    ``[0, 0.5, 1]``, numbers as ``0.02`` (integers without ``.0``), text as it is (``gd``)."""
    if _is_null(v):
        return "none"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, tuple | list):
        if column.split(".")[-1] in ("widths", "width") and all(_is_number(x) for x in v):
            return "x".join(format_value(x) for x in v)
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if _is_number(v):
        f = float(v)
        return str(int(f)) if f.is_integer() and abs(f) < 1e16 else f"{f:g}"
    return str(v)


def short_name(column: str) -> str:
    """``problem.network.widths`` → ``width``, ``method.step_size`` → ``step``, ``init.kind`` → ``init``."""
    parts = column.split(".")
    if parts[-1] == "kind" and len(parts) > 1:
        return parts[-2] if len(parts) > 2 or parts[0] != "problem" else "problem"
    return SHORT.get(parts[-1], parts[-1])


def _label_part(column: str, value: Any) -> str | None:
    if _is_null(value):
        return None
    if column == "method.kind":  # gd, gf: the value says it
        return format_value(value, column)
    # the teacher's width is not the student's
    name = f"target {short_name(column)}" if column.startswith("problem.target.") and not column.endswith(".kind") \
        else short_name(column)
    return f"{name}={format_value(value, column)}"


# ---------------------------------------------------------------------------------------------------- encodings
def varying_keys(cells: pd.DataFrame | StudyTables) -> list[str]:
    """The parameter columns of ``cells`` that tell its cells apart, in the order ``series_styles`` encodes them.

    From the columns whose values differ (``reluflow.load``'s ``"varying"``), one per independent split of the
    cells: a column is kept only if it separates cells that the columns kept before it do not (GF and GD differ
    in ``method.kind`` and in every method parameter that only one of them has: ``method.kind`` speaks for them).
    Tried in this order: the ``kind`` columns, then ``PREFERRED`` names (step size before step count), columns
    set in every cell before those set in some, then column order. The kept columns come back numeric first
    (they get the sequential colours), then the others, each group in column order.
    """
    if isinstance(cells, StudyTables):
        cells = cells.cells
    columns = [c for c in cells.columns if c.startswith(PARAM_PREFIXES)]
    varying = _varying(cells, columns)
    if not varying:
        return []
    order = {c: i for i, c in enumerate(columns)}

    def preference(col: str) -> tuple:
        last = col.split(".")[-1]
        has_null = bool(cells[col].map(_is_null).any())
        return (last != "kind", PREFERRED.index(last) if last in PREFERRED else len(PREFERRED), has_null, order[col])

    kept: list[str] = []
    groups = cells[[]].assign(_g="").loc[:, "_g"]
    n_groups = 1
    for col in sorted(varying, key=preference):
        refined = groups + "\x1f" + cells[col].map(_hashable)
        if refined.nunique() > n_groups:
            kept.append(col)
            groups, n_groups = refined, refined.nunique()
    numeric = [c for c in kept if all(_numeric(v) for v in cells[c] if not _is_null(v))]
    return sorted(numeric, key=order.get) + sorted((c for c in kept if c not in numeric), key=order.get)


def _label_keys(cells: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """``keys``, then the problem's parameters that take two or more values across ``cells``, are set in every
    cell, and do not repeat, cell for cell, the values of a column already named: parameters of the problem that
    vary together with the encoded ones (Safran & Shamir's cells vary the width and the input dimension at once;
    a label naming the width alone hides the dimension). Method and init parameters that differ with the method's
    kind (GF's checkpoints against GD's) are bookkeeping the kind already names, and stay out."""
    columns = [c for c in cells.columns if c.startswith("problem.")]
    named = list(keys)
    ids = [str(c) for c in cells["cell"]]

    def text(col: str) -> tuple[str, ...]:
        values = _cell_values(cells, col)
        return tuple(format_value(values[c], col) for c in ids)

    shown = {text(k) for k in named}
    sections = ("network", "measure", "target")  # the student's own parameters first: d before the teacher's width

    def rank(col: str) -> tuple:
        parts = col.split(".")
        return (sections.index(parts[1]) if parts[1] in sections else len(sections),
                PREFERRED.index(parts[-1]) if parts[-1] in PREFERRED else len(PREFERRED), columns.index(col))

    for col in sorted(_varying(cells, columns), key=rank):
        if col in named or cells[col].map(_is_null).any():
            continue
        values = text(col)
        if len(set(values)) > 1 and values not in shown:
            named.append(col)
            shown.add(values)
    return named


def series_styles(cells: pd.DataFrame | StudyTables, *, keys: Sequence[str] | None = None,
                  channels: Sequence[str] = CHANNELS, cmap: str = "viridis") -> dict[str, dict[str, Any]]:
    """A style per cell, from the grid keys that vary: ``{cell: {"color", "linestyle", "marker", "label"}}``.

    ``cells``: ``reluflow.load(...).cells`` (or a ``StudyTables``, or any table with ``cell`` and parameter
    columns). ``keys`` (default ``varying_keys(cells)``) are encoded in order by ``channels``: the first by
    colour (a sequential colormap, ``cmap``, over numbers in sorted order; ``tab10`` for other values; cells
    where a numeric key is unset, such as GF among GD step sizes, dark grey), the second by line style, the third
    by marker; keys beyond the channels appear in the labels only. Labels read ``width=16, step=0.02, gd``
    (``method.kind`` as its value alone; unset values left out), followed by the parameters that vary together
    with the encoded ones (``width=9, d=8``). ``ax.plot(x, y, **styles[cell])`` draws a
    cell's series.
    """
    from matplotlib import colormaps

    if isinstance(cells, StudyTables):
        cells = cells.cells
    keys = list(varying_keys(cells) if keys is None else keys)
    ids = [str(c) for c in cells["cell"]]
    styles: dict[str, dict[str, Any]] = {c: {"color": "C0", "linestyle": "-", "marker": None} for c in ids}
    for key, channel in zip(keys, channels, strict=False):
        values = _cell_values(cells, key)
        distinct = sorted({_hashable(v): v for v in values.values()}.values(), key=_sort_key)
        index = {_hashable(v): i for i, v in enumerate(distinct)}
        if channel == "color":
            present = [v for v in distinct if not _is_null(v)]
            numeric = all(_numeric(v) for v in present)
            n = max(len(present) - 1, 1)
            for c in ids:
                v = values[c]
                if _is_null(v):
                    styles[c]["color"] = NULL_COLOR
                elif numeric:
                    styles[c]["color"] = _rgba(colormaps[cmap](0.88 * index[_hashable(v)] / n))
                else:
                    styles[c]["color"] = _rgba(colormaps["tab10"](index[_hashable(v)] % 10))
        elif channel == "linestyle":
            for c in ids:
                styles[c]["linestyle"] = LINESTYLES[index[_hashable(values[c])] % len(LINESTYLES)]
        elif channel == "marker":
            for c in ids:
                styles[c]["marker"] = MARKERS[index[_hashable(values[c])] % len(MARKERS)]
        else:
            raise ValueError(f"channel {channel!r} is not allowed: expected one of {CHANNELS}")
    label_keys = _label_keys(cells, keys)
    for c in ids:
        parts = [p for p in (_label_part(k, _cell_values(cells, k)[c]) for k in label_keys) if p]
        styles[c]["label"] = ", ".join(parts) or c
    return styles


def group_cells(cells: pd.DataFrame | StudyTables, by: str | None = None) -> list[tuple[str, list[str]]]:
    """The cells grouped by the values of one parameter, ``by`` (default the second of ``varying_keys``, which
    ``series_styles`` draws as line style; one group of every cell when fewer keys vary): ``[(label, cell ids)]``
    with labels such as ``step=0.01`` or ``gd``, values in sorted order, cells in grid order. One panel per group
    keeps the colours of the first key side by side."""
    if isinstance(cells, StudyTables):
        cells = cells.cells
    ids = [str(c) for c in cells["cell"]]
    if by is None:
        keys = varying_keys(cells)
        if len(keys) < 2:
            return [("", ids)]
        by = keys[1]
    values = _cell_values(cells, by)
    distinct = sorted({_hashable(v): v for v in values.values()}.values(), key=_sort_key)
    return [(_label_part(by, v) or f"{short_name(by)} unset", [c for c in ids if _hashable(values[c]) == _hashable(v)])
            for v in distinct]


def _rgba(color: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(x), 6) for x in color)


def _styles(cells: pd.DataFrame, styles: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {k: dict(v) for k, v in (series_styles(cells) if styles is None else styles).items()}


# ---------------------------------------------------------------------------------------------------- caption
#: fixed parameters left out of the caption (bookkeeping, not the experiment)
CAPTION_SKIP = ("method.n_checkpoints", "method.progress")


def caption(tables: StudyTables | pd.DataFrame, *, study: str | None = None, extra: str | None = None,
            max_values: int = 6) -> str:
    """One line of what the cells share: the study, its fixed problem, init and method parameters (those that do
    not vary between cells, short form; lists of more than ``max_values`` values by their length), trajectories
    per cell and seed; ``extra`` appended. E.g. ``quickstart: network d=1; measure uniform (low=0, high=1);
    target piecewise_affine (knots=[0, 0.5, 1], values=[0, 1, 0]); init normal; method refine=false; 256
    trajectories per cell; seed 20240601``. ``tables``: a ``StudyTables``, its ``cells`` or any table with
    ``cell`` and parameter columns."""
    cells = tables.cells if isinstance(tables, StudyTables) else _cells_from(tables)
    columns = [c for c in cells.columns if c.startswith(PARAM_PREFIXES)]
    varying = set(_varying(cells, columns)) if len(cells) else set()
    first = cells.iloc[0] if len(cells) else None
    groups: dict[str, tuple[list[str], list[str]]] = {}  # "measure": (kind values, other parts)
    for col in columns:
        if col in varying or col in CAPTION_SKIP or first is None or _is_null(first[col]):
            continue
        v = first[col]
        parts = col.split(".")
        group = parts[1] if parts[0] == "problem" and len(parts) > 2 else "" if parts[0] == "problem" else parts[0]
        kinds, others = groups.setdefault(group, ([], []))
        if parts[-1] == "kind" and len(parts) <= 3:
            kinds.append(format_value(v, col))
            continue
        text = f"<{len(v)} values>" if isinstance(v, tuple) and len(v) > max_values else format_value(v, col)
        others.append(f"{short_name(col)}={text}")
    pieces = []
    for group, (kinds, others) in groups.items():
        others.sort(key=lambda part: {"low": 0, "high": 1}.get(part.split("=")[0], 2))  # an interval reads low, high
        head = " ".join(x for x in [group, *kinds] if x)
        pieces.append(f"{head} ({', '.join(others)})" if kinds and others else
                      f"{head} {', '.join(others)}".strip() if others else head)
    n = sorted({int(x) for x in cells["n_trajectories"]}) if "n_trajectories" in cells.columns else []
    seed = sorted({int(x) for x in cells["seed"]}) if "seed" in cells.columns else []
    if n:
        pieces.append(f"{'/'.join(map(str, n))} trajectories per cell")
    if seed:
        pieces.append(f"seed {'/'.join(map(str, seed))}")
    if extra:
        pieces.append(extra)
    name = study or (str(first["study"]) if first is not None and "study" in cells.columns else None)
    line = "; ".join(pieces)
    return f"{name}: {line}" if name else line
