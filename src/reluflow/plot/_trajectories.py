"""Figures of the curves table: risk along the trajectories (median and quantile bands), individual trajectories'
parameter norm and risk (C4), and GF against GD at several step sizes on one time axis (C7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._load import StudyTables
from ._encode import NULL_COLOR, _cell_ids, _inputs, _method_kinds, _styles
from ._style import _axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["gd_vs_gf", "norm_growth", "rate_comparison", "risk_curves"]

RISK_LABEL = r"risk $L(\theta_t)$ (target units²)"
NORM_LABEL = r"parameter norm $\|\theta_t\|$"
DECADES_FOR_LOG = 2.0  # values spanning at least this many decades get a log axis


def time_label(kinds: set[str], x: str = "t") -> str:
    """The x label of the curves' ``t`` (docs/tables.md: GF time; for GD the sum of the step sizes taken, so GD and
    GF share the axis) or ``step``."""
    if x == "step":
        return "steps n (GD updates; GF: accepted solver steps)" if "gf" in kinds and "gd" in kinds else \
            "GD steps n" if kinds == {"gd"} else "accepted solver steps" if kinds == {"gf"} else "steps"
    if kinds == {"gd"}:
        return r"time $t = \gamma_1 + \dots + \gamma_n$ (GD step sizes summed)"
    if "gd" in kinds:
        return r"time $t$ (GD: $t = \gamma_1 + \dots + \gamma_n$)"
    return r"time $t$"


#: a cell's curves are resampled on at most this many times (its own recorded times where they are fewer)
GRID_POINTS = 200


def _matrix(c: pd.DataFrame, value: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(grid, trajectory ids, values (grid × trajectories))`` of one cell's curves on a common grid of ``x``.

    A curve's ``checkpoint`` is the row's position within its trajectory, not a time shared by all: an adaptive
    GF step can pass several checkpoints and records once, and a trajectory that stops early records its final
    state. So each trajectory is read at the grid's times: ``log`` of the value interpolated linearly in ``x``
    between its recorded states, its last value held after it stopped (it no longer moves). The grid is the
    recorded times themselves where the cell has at most ``GRID_POINTS`` distinct ones (GD, fixed-step GF: the
    same times in every trajectory, no interpolation), else 0 and ``GRID_POINTS − 1`` log-spaced times.
    """
    c = c.sort_values(["trajectory", "checkpoint"])
    xs = c[x].to_numpy(dtype=float)
    vs = c[value].to_numpy(dtype=float)
    traj = c["trajectory"].to_numpy()
    finite_x = xs[np.isfinite(xs)]
    grid = np.unique(finite_x)
    if grid.size > GRID_POINTS:
        positive = grid[grid > 0]
        grid = np.geomspace(positive.min(), positive.max(), GRID_POINTS - int(grid[0] <= 0))
        grid = np.concatenate([[0.0], grid]) if finite_x.min() <= 0 else grid
    ids, starts = np.unique(traj, return_index=True)
    bounds = [*starts[1:], len(traj)]
    with np.errstate(divide="ignore", invalid="ignore"):
        logv = np.log(vs)
    out = np.full((grid.size, ids.size), np.nan)
    for j, (a, b) in enumerate(zip(starts, bounds, strict=True)):
        tx, ty = xs[a:b], logv[a:b]
        ok = np.isfinite(tx) & ~np.isnan(ty)
        if not ok.any():
            continue
        tx, ty = tx[ok], ty[ok]
        with np.errstate(invalid="ignore"):  # -inf (exact zero) or +inf between two records stays infinite
            out[:, j] = np.interp(grid, tx, ty, left=np.nan, right=ty[-1])
    return grid, ids, np.exp(out)


def _by_cell(table: pd.DataFrame | None, ids: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The rows of each of the cells ``ids`` that has any (one pass over the table)."""
    if table is None or table.empty or "cell" not in table.columns:
        return {}
    wanted = set(ids)
    return {str(cid): rows for cid, rows in table.groupby("cell", observed=True, sort=False)
            if str(cid) in wanted and len(rows)}


def _floor(values: Sequence[np.ndarray]) -> float:
    """The smallest positive finite value: where zeros (exact zero risks) are drawn on a log axis."""
    lows = [float(np.min(v[(v > 0) & np.isfinite(v)])) for v in values if np.any((v > 0) & np.isfinite(v))]
    return min(lows) if lows else 1e-300


def spans_decades(values: np.ndarray, decades: float = DECADES_FOR_LOG) -> bool:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return v.size > 1 and np.log10(v.max() / v.min()) >= decades


def _time_scale(ax: Axes, xs: Sequence[np.ndarray]) -> None:
    """A log time axis where the checkpoints span decades; symlog (linear below the first positive time) so that
    t = 0 stays on it."""
    allx = np.concatenate([np.asarray(v, dtype=float) for v in xs]) if xs else np.empty(0)
    if spans_decades(allx):
        positive = allx[np.isfinite(allx) & (allx > 0)]
        if np.any(allx[np.isfinite(allx)] <= 0):
            # linear on [0, the power of ten at or below the first positive time], as wide as a decade: t = 0 and the
            # first decade's label are a decade apart (at the first positive time itself, 0.05, the label 10^-2 fell
            # inside the linear part, next to 0)
            linthresh = 10.0 ** math.floor(math.log10(float(positive.min())))
            ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
            ax.set_xlim(0.0, float(positive.max()) * 1.15)
        else:
            ax.set_xscale("log")


def _line_kw(style: Mapping[str, Any], n_points: int) -> dict[str, Any]:
    kw = {k: v for k, v in style.items() if k in ("color", "linestyle", "marker", "label")}
    if kw.get("color") == NULL_COLOR:  # the reference (GF among GD step sizes) on top: GD at small steps meets it
        kw["zorder"] = 2.5
    if kw.get("marker"):
        kw["markevery"] = max(n_points // 8, 1)
        kw["markersize"] = 3.5
    return kw


#: legends of more entries than this go outside the axes, on the right, where they hide no data
LEGEND_INSIDE_MAX = 3


def _legend(ax: Axes, title: str | None = None, handles: list | None = None, labels: list | None = None) -> None:
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) > LEGEND_INSIDE_MAX:
        ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  alignment="left")
    else:
        ax.legend(handles, labels, title=title, alignment="left")


def _risk_matrices(tables: StudyTables | pd.DataFrame, ax: Axes | None, cells: Sequence[str] | None,
                   styles: Mapping[str, Mapping[str, Any]] | None, x: str):
    """What the risk figures start from: ``(ax, cells table, cell ids to draw, their styles, drawn)``, ``drawn``
    holding ``(cell, grid, trajectory ids, risks (grid × trajectories))`` (``_matrix``) for each cell with curves,
    in the order of ``ids``."""
    curves, cells_df = _inputs(tables, "curves")
    ax = _axes(ax)
    ids = _cell_ids(cells_df, cells)
    st = _styles(cells_df, styles)
    rows = _by_cell(curves, ids)
    drawn = [(cid, *_matrix(rows[cid], "risk", x)) for cid in ids if cid in rows]
    return ax, cells_df, ids, st, drawn


def risk_curves(tables: StudyTables | pd.DataFrame, *, ax: Axes | None = None, cells: Sequence[str] | None = None,
                styles: Mapping[str, Mapping[str, Any]] | None = None, x: str = "t",
                bands: Sequence[tuple[float, float]] = ((0.25, 0.75),), individual: int = 0,
                legend: bool = True) -> Axes:
    """The risk along the trajectories, per cell: the median over trajectories at each checkpoint (a line in the
    cell's ``series_styles`` style) and quantile bands (``bands``, default the 25–75 % band), on a log risk axis
    (exact zeros drawn at the smallest positive risk) against ``t`` (``x="t"``: GF time, GD sum of step sizes;
    a log time axis where the checkpoints span decades) or ``x="step"``. ``individual > 0`` also draws that many
    trajectories of each cell (the first ids) as thin lines. A trajectory that stopped keeps its last risk.

    ``tables``: ``reluflow.load(...)`` (or its ``curves``); ``cells``: the cells to draw (default all);
    ``styles``: ``series_styles`` of the whole study, to keep a cell's style across panels. Returns ``ax``.
    """
    ax, cells_df, ids, st, drawn = _risk_matrices(tables, ax, cells, styles, x)
    floor = _floor([m for *_, m in drawn])
    risks = [(cid, xs, np.where(m <= 0, floor, m)) for cid, xs, _, m in drawn]
    for cid, xs, r in risks:  # every band below every line: a later cell's band hides no median
        for i, (lo, hi) in enumerate(bands):
            q = np.nanquantile(r, [lo, hi], axis=1)
            ax.fill_between(xs, q[0], q[1], color=st[cid]["color"], alpha=0.22 / (1 + i), lw=0)
    for cid, xs, r in risks:
        for j in range(min(individual, r.shape[1])):
            ax.plot(xs, r[:, j], color=st[cid]["color"], lw=0.5, alpha=0.45)
    for cid, xs, r in risks:
        ax.plot(xs, np.nanmedian(r, axis=1), **_line_kw(st[cid], len(xs)))
    ax.set_yscale("log")
    _time_scale(ax, [xs for _, xs, _, _ in drawn])
    ax.set_xlabel(time_label(_method_kinds(cells_df, ids), x))
    ax.set_ylabel(RISK_LABEL)
    if legend:
        band_text = ", ".join(f"{round(lo * 100)}–{round(hi * 100)} %" for lo, hi in bands)
        _legend(ax, f"median; band {band_text}" if bands else "median")
    return ax


def _trajectory_ids(c: pd.DataFrame, which: int | Sequence[int]) -> list[int]:
    """``which`` trajectories of one cell's curves: an int picks those whose norm grew most (‖θ_end‖ / ‖θ_0‖)."""
    if not isinstance(which, int | np.integer):
        return [int(t) for t in which]
    c = c.sort_values(["trajectory", "checkpoint"])
    g = c.groupby("trajectory", observed=True)["param_norm"]
    growth = (g.last() / g.first()).replace([np.inf, -np.inf], np.nan).fillna(-np.inf)
    ranked = sorted(growth.index, key=lambda t: (-growth[t], t))
    return [int(t) for t in ranked[: int(which)]]


def norm_growth(tables: StudyTables | pd.DataFrame, *, ax: Axes | Sequence[Axes] | None = None,
                cells: Sequence[str] | None = None, styles: Mapping[str, Mapping[str, Any]] | None = None,
                trajectories: int | Sequence[int] = 6, x: str = "t", legend: bool = True) -> tuple[Axes, Axes]:
    """Individual trajectories' parameter norm ``‖θ_t‖`` (curves' ``param_norm``) and risk against ``t``: the
    picture of claim C4, a norm that keeps growing while the risk decays.

    ``trajectories``: per cell, the ids to draw, or how many (default 6: those whose norm grew most, ``‖θ‖`` at
    the last checkpoint over ``‖θ_0‖``). ``ax``: two axes ``(norm, risk)``, or one axes (the risk goes on a twin
    y axis, dotted), or None (a new figure, norm above risk). The norm axis is logarithmic where the norms span
    decades, the risk axis always. Returns ``(norm axes, risk axes)``.
    """
    curves, cells_df = _inputs(tables, "curves")
    if ax is None:
        import matplotlib.pyplot as plt

        _, (ax_norm, ax_risk) = plt.subplots(2, 1, figsize=(4.0, 4.6), sharex=True, layout="constrained")
        twin = False
    elif hasattr(ax, "twinx"):  # one Axes
        ax_norm, ax_risk, twin = ax, ax.twinx(), True
    else:  # two: a list, a tuple, a numpy array of Axes
        ax_norm, ax_risk = ax
        twin = False
    ids = _cell_ids(cells_df, cells)
    st = _styles(cells_df, styles)
    rows = _by_cell(curves, ids)
    runs = []  # (cell, is first of its cell, t, norm, risk)
    for cid in ids:
        c = rows.get(cid)
        if c is None:
            continue
        for k, tid in enumerate(_trajectory_ids(c, trajectories)):
            one = c[c["trajectory"] == tid].sort_values("checkpoint")
            if len(one):
                runs.append((cid, k == 0, one[x].to_numpy(dtype=float), one["param_norm"].to_numpy(dtype=float),
                             one["risk"].to_numpy(dtype=float)))
    floor = _floor([r[4] for r in runs])  # exact zeros at the smallest positive risk, as in risk_curves
    for cid, first, xs, norm, risk in runs:
        style = st[cid]
        kw = {"color": style["color"], "lw": 0.9, "alpha": 0.85}
        ax_norm.plot(xs, norm, linestyle=style["linestyle"], label=style["label"] if first else None, **kw)
        ax_risk.plot(xs, np.where(risk <= 0, floor, risk), linestyle=":" if twin else style["linestyle"], **kw)
    xs_all = [r[2] for r in runs]
    norms = [r[3] for r in runs]
    ax_risk.set_yscale("log")
    if norms and spans_decades(np.concatenate(norms)):
        ax_norm.set_yscale("log")
    for a in {ax_norm, ax_risk}:
        _time_scale(a, xs_all)
    kinds = _method_kinds(cells_df, ids)
    ax_norm.set_ylabel(NORM_LABEL)
    ax_risk.set_ylabel(RISK_LABEL + (" (dotted)" if twin else ""))
    ax_norm.set_xlabel(time_label(kinds, x))  # a twin's own x axis is hidden: the label goes on the norm's
    if not twin:
        ax_risk.set_xlabel(time_label(kinds, x))
        ax_norm.tick_params(labelbottom=True)
    if twin:
        ax_risk.spines["right"].set_visible(True)
    if legend:  # above the axes: the curves fill them
        handles, labels = ax_norm.get_legend_handles_labels()
        if handles:
            ax_norm.legend(handles, labels, loc="lower left", bbox_to_anchor=(0.0, 1.02), borderaxespad=0.0,
                           ncols=min(len(handles), 3), alignment="left",
                           title="trajectories whose norm grew most" if isinstance(trajectories, int) else None)
    return ax_norm, ax_risk


def rate_comparison(tables: StudyTables | pd.DataFrame, *, ax: Axes | None = None,
                    cells: Sequence[str] | None = None, styles: Mapping[str, Mapping[str, Any]] | None = None,
                    band: tuple[float, float] | None = None, trajectory: int | None = None,
                    legend: bool = True) -> Axes:
    """Log-risk against time (linear ``t``: exponential convergence is a straight line) for GF and for GD at
    several step sizes on one axis (claim C7): per cell the median risk over the trajectories that every drawn
    cell has (cells that share ``init`` and network start from the same points, so these are paired
    initializations: GD at step γ against GF from the same starts), with the ``band`` quantiles if given;
    ``trajectory=i`` draws trajectory ``i`` of each cell instead of the medians. The cells' styles come from the
    grid (``series_styles``: by default the step size in colour, GF dark grey, GD and GF in line style).
    Returns ``ax``.
    """
    ax, cells_df, ids, st, drawn = _risk_matrices(tables, ax, cells, styles, "t")
    common = set.intersection(*(set(t.tolist()) for _, _, t, _ in drawn)) if drawn else set()
    if trajectory is not None:
        common = common & {int(trajectory)}
        if not common and drawn:
            raise ValueError(f"trajectory {trajectory} is not in every drawn cell")
    floor = _floor([m for *_, m in drawn])
    paired = []
    for cid, xs, traj, m in drawn:
        keep = np.isin(traj, sorted(common))
        if keep.any():
            paired.append((cid, xs, np.where(m[:, keep] <= 0, floor, m[:, keep])))
    if band is not None and trajectory is None:
        for cid, xs, r in paired:  # bands first, below every line
            q = np.nanquantile(r, band, axis=1)
            ax.fill_between(xs, q[0], q[1], color=st[cid]["color"], alpha=0.15, lw=0)
    for cid, xs, r in paired:
        ax.plot(xs, np.nanmedian(r, axis=1), **_line_kw(st[cid], len(xs)))
    ax.set_yscale("log")
    ax.set_xlabel(time_label(_method_kinds(cells_df, ids), "t"))
    ax.set_ylabel(RISK_LABEL)
    if legend:
        what = f"trajectory {trajectory}" if trajectory is not None else \
            f"median of {len(common)} paired starts" if drawn else None
        _legend(ax, what)
    return ax


#: the same figure under the name of what it compares
gd_vs_gf = rate_comparison
