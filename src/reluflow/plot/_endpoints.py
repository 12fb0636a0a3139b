"""Figures of where the trajectories ended: final risk per cell, status and class fractions with their intervals,
best-of-K success probability against K with intervals, and published against regenerated rates."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .._load import StudyTables
from ._encode import _cell_ids, _cells_from, _inputs, _styles, format_value, series_styles
from ._style import _axes
from ._trajectories import _by_cell, _legend, spans_decades

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["best_of_k", "best_of_k_long", "final_risk", "published_vs_regenerated", "status_fractions"]

FINAL_RISK_LABEL = r"final risk $L(\theta_T)$ (target units²)"
_BEST_OF_K = re.compile(r"p_best_of_(\d+)_eps_(.+)")


def _few_decades_ticks(ax: Axes) -> None:
    """On a log x axis spanning fewer than two decades matplotlib labels minor ticks (``2×10⁻³``, ``3×10⁻³``, ...)
    or falls back to linear ticks, and the labels run into each other on a panel a few inches wide. There, labels
    at the powers of ten in view (one decade or more: at least one), or at two or three round numbers (less than a
    decade: at least 0.3 decades apart, e.g. 4, 5 and 6×10⁻³ or 2 and 4×10⁻³); the ticks in between unlabelled."""
    from matplotlib.ticker import FixedLocator, LogFormatterSciNotation, MaxNLocator, NullFormatter

    ax.autoscale_view()
    lo, hi = ax.get_xlim()
    if not 0 < lo < hi or math.log10(hi / lo) >= 2:
        return
    if math.log10(hi / lo) >= 1:
        ticks = [10.0**e for e in range(math.ceil(math.log10(lo)), math.floor(math.log10(hi)) + 1)]
    else:
        ticks = [float(t) for t in MaxNLocator(nbins=2, steps=[1, 2, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    # thresholds beyond any span: every major tick labelled, 5×10⁻³ as well as 10⁻²
    ax.xaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(np.inf, np.inf)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def final_risk(tables: StudyTables | pd.DataFrame, *, ax: Axes | None = None, cells: Sequence[str] | None = None,
               styles: Mapping[str, Mapping[str, Any]] | None = None, kind: str = "ecdf",
               eps: Sequence[float] = (), bins: int = 40, legend: bool = True) -> Axes:
    """The final risk per cell on a log axis: ``kind="ecdf"`` (default) the fraction of the cell's trajectories
    whose final risk is at most x (a curve that ends below 1 has runs with no finite final risk: diverged or
    non-finite), ``kind="hist"`` step histograms on shared log bins. Exact zeros are drawn at the smallest
    positive final risk (said in the x label). ``eps``: success thresholds drawn as vertical lines (where an
    ECDF crosses one is the cell's success probability for K = 1). Returns ``ax``."""
    import pandas as pd

    if kind not in ("ecdf", "hist"):
        raise ValueError(f"kind = {kind!r} is not allowed: expected 'ecdf' or 'hist'")
    traj, cells_df = _inputs(tables, "trajectories")
    ax = _axes(ax)
    ids = _cell_ids(cells_df, cells)
    st = _styles(cells_df, styles)
    per_cell = {}
    if traj is not None and "risk_final" in traj.columns:
        rows = _by_cell(traj, ids)
        for cid in ids:
            if cid in rows:
                per_cell[cid] = pd.to_numeric(rows[cid]["risk_final"], errors="coerce").to_numpy(dtype=float,
                                                                                                  na_value=np.nan)
    finite = [r[np.isfinite(r)] for r in per_cell.values()]
    positive = np.concatenate([f[f > 0] for f in finite]) if finite else np.empty(0)
    floor = float(positive.min()) if positive.size else 1e-300
    has_zero = any(np.any(f <= 0) for f in finite)
    if per_cell and kind == "hist":
        hi = max(float(positive.max()) if positive.size else 1.0, floor * 10)
        edges = np.logspace(math.floor(math.log10(floor)), math.ceil(math.log10(hi * 1.001)), bins + 1)
    for cid, r in per_cell.items():
        f = np.clip(r[np.isfinite(r)], floor, None)
        style = st[cid]
        kw = {k: v for k, v in style.items() if k in ("color", "linestyle", "label")}
        if kind == "ecdf":
            xs = np.sort(f)
            ys = np.arange(1, xs.size + 1) / r.size
            ax.step(np.concatenate([[xs[0] if xs.size else floor], xs]), np.concatenate([[0.0], ys]),
                    where="post", **kw)
        else:
            ax.hist(f, bins=edges, histtype="step", lw=1.2, **kw)
    ax.set_xscale("log")
    if per_cell:
        for e in eps:
            ax.axvline(float(e), color="0.55", lw=0.6, ls=":", zorder=0)
            ax.annotate(f"ε={float(e):g}", (float(e), 1.0), xycoords=("data", "axes fraction"), rotation=90,
                        xytext=(-1.5, -1.5), textcoords="offset points", ha="right", va="top", fontsize=6,
                        color="0.4", bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    ax.set_xlabel(FINAL_RISK_LABEL + (f"; zeros at {floor:.0e}" if has_zero else ""))
    _few_decades_ticks(ax)
    if kind == "ecdf":
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("fraction of trajectories\nwith final risk ≤ x")
    else:
        ax.set_ylabel("trajectories")
    if legend:
        _legend(ax)
    return ax


def status_fractions(tables: StudyTables | pd.DataFrame, *, ax: Axes | None = None,
                     cells: Sequence[str] | None = None, styles: Mapping[str, Mapping[str, Any]] | None = None,
                     what: str = "status", show_empty: bool = False, legend: bool = True) -> Axes:
    """Per stopping status (``what="status"``) or endpoint class (``what="class"``): the fraction of each cell's
    trajectories, a marker per cell with its 95 % Wilson interval (the summary's ``frac_<what>_<name>_low`` and
    ``_high``). Statuses or classes that no cell reached are left out unless ``show_empty``. Markers and colours
    come from the grid (default ``series_styles(cells, channels=("color", "marker", "linestyle"))``: a dot plot
    has no line styles). ``tables``: ``reluflow.load(...)`` or its ``summary``. Returns ``ax``."""
    if what not in ("status", "class"):
        raise ValueError(f"what = {what!r} is not allowed: expected 'status' or 'class'")
    summary, cells_df = _inputs(tables, "summary")
    ax = _axes(ax, (4.6, 3.0))
    ids = _cell_ids(cells_df, cells)
    st = {k: dict(v) for k, v in styles.items()} if styles is not None else \
        series_styles(cells_df, channels=("color", "marker", "linestyle"))
    prefix = f"frac_{what}_"
    names: list[str] = []
    s = None
    if summary is not None and len(summary):
        s = summary.assign(cell=summary["cell"].astype(str)).set_index("cell")
        names = [c.removeprefix(prefix) for c in s.columns
                 if c.startswith(prefix) and not c.endswith(("_low", "_high"))]
        shown = s.reindex([c for c in ids if c in s.index])
        if not show_empty:
            names = [n for n in names if (shown[prefix + n].fillna(0) > 0).any()]
    n_cells = max(len(ids), 1)
    width = min(0.8, 0.16 * n_cells)
    offsets = (np.arange(n_cells) - (n_cells - 1) / 2) * (width / n_cells)
    for j, cid in enumerate(ids):
        if s is None or cid not in s.index or not names:
            continue
        row = s.loc[cid]
        frac = np.array([row[prefix + n] for n in names], dtype=float)
        low = np.array([row.get(f"{prefix}{n}_low", np.nan) for n in names], dtype=float)
        high = np.array([row.get(f"{prefix}{n}_high", np.nan) for n in names], dtype=float)
        err = np.vstack([np.clip(frac - low, 0, None), np.clip(high - frac, 0, None)])
        style = st[cid]
        bars = ax.errorbar(np.arange(len(names)) + offsets[j], frac, yerr=np.nan_to_num(err), fmt=style.get("marker")
                           or "o", color=style["color"], label=style["label"], ms=4, lw=0.9, capsize=1.5)
        ls = style.get("linestyle", "-")
        if ls != "-":
            for line in bars.lines[2]:
                line.set_linestyle(ls)
    ax.set_xticks(np.arange(len(names)), [n.replace("_", " ") for n in names])
    if len(names):
        ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("stopping status" if what == "status" else "endpoint class")
    ax.set_ylabel("fraction of trajectories\n(95 % Wilson interval)")
    if legend:
        _legend(ax)
    return ax


def _successes(estimate: float, n: int, k: int) -> int:
    """The success count ``s`` whose best-of-``k`` estimate (``analysis.best_of_k(s, n, k)``) is ``estimate``."""
    from ..analysis import best_of_k as estimator

    if k == 1:
        return int(round(estimate * n))
    lo, hi = 0, n  # the estimate is non-decreasing in s: the smallest s that reaches it
    while lo < hi:
        mid = (lo + hi) // 2
        if estimator(mid, n, k) < estimate - 1e-12:
            lo = mid + 1
        else:
            hi = mid
    return lo


def best_of_k_long(summary: pd.DataFrame) -> pd.DataFrame:
    """``best_of_k.parquet``'s rows (``analysis.best_of_k_table`` per cell: estimate, 95 % interval, supported)
    rebuilt from the summary's ``p_best_of_<K>_eps_<eps>`` columns and ``n``: the success count of each cell and
    eps is read back from the estimate at the smallest K (K = 1: ``s = n · p``), then the table computed again.
    The same numbers as the study's ``best_of_k`` table, for figures drawn from the summary alone."""
    import pandas as pd

    from ..analysis import BEST_OF_K_COLUMNS, best_of_k_table

    found = [(c, int(m.group(1)), float(m.group(2))) for c in summary.columns if (m := _BEST_OF_K.fullmatch(c))]
    eps_list = list(dict.fromkeys(e for _, _, e in found))
    k_list = sorted({k for _, k, _ in found})
    frames = []
    for _, row in summary.iterrows():
        n = int(row["n"])
        successes = []
        for eps in eps_list:
            cols = sorted((k, c) for c, k, e in found if e == eps and k <= n and np.isfinite(row[c]))
            successes.append(_successes(float(row[cols[0][1]]), n, cols[0][0]) if cols else 0)
        frames.append(best_of_k_table(np.array(successes, dtype=np.int64), n, eps_list, k_list)
                      .assign(cell=str(row["cell"])))
    if not frames:
        return pd.DataFrame(columns=["cell", *BEST_OF_K_COLUMNS])
    out = pd.concat(frames, ignore_index=True)
    return out[["cell", *BEST_OF_K_COLUMNS]]


def _best_of_k_input(tables: StudyTables | pd.DataFrame) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    if isinstance(tables, StudyTables):
        if tables.best_of_k is not None:
            return tables.best_of_k, tables.cells
        return (best_of_k_long(tables.summary) if tables.summary is not None else None), tables.cells
    if "estimate" in tables.columns and "k" in tables.columns:
        return tables, _cells_from(tables)
    return best_of_k_long(tables), _cells_from(tables)


def best_of_k(tables: StudyTables | pd.DataFrame, *, ax: Axes | None = None, eps: float | None = None,
              cells: Sequence[str] | None = None, styles: Mapping[str, Mapping[str, Any]] | None = None,
              band: bool = True, legend: bool = True) -> Axes:
    """Best-of-K success probability against K (log₂ axis), one series per cell, at one success threshold
    ``eps`` (default: the study's first): the estimate (a line in the cell's style) and its 95 % interval (a
    band). Markers are filled where the sample supports K (``n ≥ 10 K``) and open where it does not (read the
    interval there, not the estimate).

    ``tables``: ``reluflow.load(...)`` (its ``best_of_k`` table, or the summary where that was not read), its
    ``best_of_k`` table, or its ``summary`` (``best_of_k_long`` rebuilds the intervals). Returns ``ax``.
    """
    from matplotlib.lines import Line2D

    bok, cells_df = _best_of_k_input(tables)
    ax = _axes(ax)
    ids = _cell_ids(cells_df, cells)
    st = _styles(cells_df, styles)
    if bok is not None and len(bok):
        eps_values = list(dict.fromkeys(float(e) for e in bok["eps"]))
        chosen = eps_values[0] if eps is None else next((e for e in eps_values if math.isclose(e, float(eps))), None)
        if chosen is None:
            raise ValueError(f"eps = {eps!r} is not among the table's {eps_values}")
        table = bok[np.isclose(bok["eps"].to_numpy(dtype=float), chosen)]
        table = table.assign(cell=table["cell"].astype(str))
    else:
        chosen, table = (float(eps) if eps is not None else None), None
    open_markers = False
    for cid in ids:
        if table is None:
            break
        t = table[table["cell"] == cid].sort_values("k")
        t = t[np.isfinite(t["estimate"].to_numpy(dtype=float))]
        if t.empty:
            continue
        style = st[cid]
        k = t["k"].to_numpy(dtype=float)
        est = t["estimate"].to_numpy(dtype=float)
        supported = t["supported"].to_numpy(dtype=bool) if "supported" in t.columns else np.ones(len(t), bool)
        if band:
            ax.fill_between(k, t["low"].to_numpy(dtype=float), t["high"].to_numpy(dtype=float),
                            color=style["color"], alpha=0.12, lw=0)
        marker = style.get("marker") or "o"
        ax.plot(k, est, color=style["color"], linestyle=style["linestyle"], marker=marker, markevery=list(supported),
                ms=3.5, label=style["label"])
        if not supported.all():
            open_markers = True
            ax.plot(k[~supported], est[~supported], linestyle="none", marker=marker, ms=3.5, color=style["color"],
                    markerfacecolor="white")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("restarts K")
    ax.set_ylabel("success probability\n" + r"$P(\min_{i \leq K} L_i - L^* \leq \varepsilon)$")
    if chosen is not None:
        ax.set_title(f"ε = {chosen:g}")
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            if open_markers:
                handles.append(Line2D([], [], color="0.4", marker="o", markerfacecolor="white", linestyle="none",
                                      ms=3.5))
                labels.append("n < 10 K (open)")
            _legend(ax, "estimate; band: 95 % interval" if band else None, handles, labels)
    return ax


def published_vs_regenerated(df: pd.DataFrame, *, ax: Axes | None = None, x: str = "k",
                             published: str = "published", estimate: str = "estimate", low: str = "low",
                             high: str = "high", n: str | None = "n", quantity: str = "rate",
                             xlabel: str | None = None, agrees: str | None = "agrees",
                             disagree_label: str = "published, disagrees", legend: bool = True) -> Axes:
    """Published values against regenerated estimates with their intervals, one point per row of ``df`` (e.g.
    the Safran–Shamir spurious-minimum rate by ``k``): the estimate with its interval (``low``, ``high``) as an
    error bar, the published value as a cross, red where they disagree: where the boolean column ``agrees`` (a
    verdict's judgement, e.g. ``rates_agree_with_published``'s two standard errors of the difference) is False,
    else, without that column, where the published value falls outside the interval. ``x``: a numeric column
    (its values are the positions), or one of text (e.g. the cell ids: one position per row, in order). With an
    ``n`` column the x tick labels give each row's sample size. A log y axis where the values span decades
    (symlog, linear below the smallest positive value, where a zero estimate is among them: a rate of 0 stays
    on the axis). Returns ``ax``."""
    import pandas as pd

    ax = _axes(ax, (4.0, 3.0))
    numeric = pd.api.types.is_numeric_dtype(df[x])
    xs = df[x].to_numpy(dtype=float) if numeric else np.arange(len(df), dtype=float)
    est = df[estimate].to_numpy(dtype=float)
    lo = df[low].to_numpy(dtype=float) if low in df.columns else np.full(len(df), np.nan)
    hi = df[high].to_numpy(dtype=float) if high in df.columns else np.full(len(df), np.nan)
    pub = df[published].to_numpy(dtype=float)
    err = np.nan_to_num(np.vstack([np.clip(est - lo, 0, None), np.clip(hi - est, 0, None)]))
    ax.errorbar(xs, est, yerr=err, fmt="o", color="C0", ms=4, lw=1.0, label="regenerated (95 % interval)")
    if agrees and agrees in df.columns:
        # the verdict's rule, not the interval: the two can differ (the rule also counts the published rate's
        # own sampling error), and the figure must flag exactly the cells the verdict flags
        outside = np.isfinite(pub) & (df[agrees].to_numpy() == False)  # noqa: E712 (NaN/None rows: no judgement)
    else:
        disagree_label = "published, outside the interval"
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(pub) & ((pub < lo) | (pub > hi))
    inside = np.isfinite(pub) & ~outside
    ax.plot(xs[inside], pub[inside], linestyle="none", marker="x", color="black", ms=5, mew=1.2, label="published")
    if outside.any():
        # larger and above the estimates: on a log axis a disagreement of a few points near a rate of 0.7 or 0.9
        # puts the cross on the estimate's marker
        ax.plot(xs[outside], pub[outside], linestyle="none", marker="x", color="C3", ms=9, mew=2.0, zorder=4,
                label=disagree_label)
    values = np.concatenate([est, pub, lo, hi])
    if spans_decades(values):
        finite = values[np.isfinite(values)]
        if np.any(finite <= 0):
            linthresh = float(finite[finite > 0].min())
            ax.set_yscale("symlog", linthresh=linthresh, linscale=0.5)
            ax.set_ylim(-0.2 * linthresh, None)  # a marker at 0 drawn whole, not cut by the axis
        else:
            ax.set_yscale("log")
    else:
        top = np.nanmax(values[np.isfinite(values)]) if np.isfinite(values).any() else 1.0
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
    ticks = [format_value(v) for v in df[x]]
    label = xlabel or x
    if n and n in df.columns:
        sizes = [format_value(m) for m in df[n]]
        if len(set(sizes)) == 1:  # one sample size: said once
            label += f" (n = {sizes[0]} each)"
        else:
            ticks = [f"{t}\n{m}" for t, m in zip(ticks, sizes, strict=True)]
            label += " (n below)"
    long = sum(max(len(line) for line in t.split("\n")) for t in ticks) > 40  # would overlap side by side
    ax.set_xticks(xs, ticks, rotation=90 if long else 0)
    ax.set_xlabel(label)
    ax.set_ylabel(quantity)
    if legend:
        _legend(ax)
    return ax

