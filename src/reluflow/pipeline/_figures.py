"""Per-study figures (PNG and PDF), drawn from the study's tables.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global state, Agg rendering): safe in a batch job with
no display. Every figure is written atomically, like the tables. Each figure reads only the tables named in
``FIGURE_TABLES``: the workflow draws those of the per-cell tables while ``aggregate`` writes the summary, and the
summary's once it is there. ``write_figures(processes=...)`` draws several figures in parallel processes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .._load import StudyTables, load
from ..config import FIGURES, Cell, Study, figure_tables

# pandas and the table writers are imported where figures are drawn, like matplotlib: the Snakefile imports
# this module for FIGURE_TABLES, and Snakemake starts no job until it has read the Snakefile

__all__ = ["write_figures"]

log = logging.getLogger("reluflow.pipeline")

RISK_FLOOR = 1e-300  # zero risks are drawn at this floor on log axes


def _width_label(cell: Cell) -> str:
    net = cell.problem.get("network", {})
    widths = net.get("widths", net.get("width", "?"))
    return "x".join(str(w) for w in widths) if isinstance(widths, list) else str(widths)


def _style(study: Study) -> dict[str, tuple[tuple[float, ...], str]]:
    """A colour per width and a line style per method kind, for every cell."""
    from matplotlib import colormaps

    widths = sorted({_width_label(c) for c in study.cells.values()},
                    key=lambda w: (len(w.split("x")), [int(x) if x.isdigit() else 0 for x in w.split("x")]))
    cmap = colormaps["viridis"]
    colors = {w: cmap(0.85 * i / max(len(widths) - 1, 1)) for i, w in enumerate(widths)}
    dashes = {"gd": "-", "gf": "--"}
    return {cid: (colors[_width_label(c)], dashes.get(c.method.get("kind"), ":")) for cid, c in study.cells.items()}


def _grid(n: int) -> tuple[int, int]:
    ncols = min(n, 3)
    return math.ceil(n / ncols), ncols


def _figure(n_panels: int = 1, panel: tuple[float, float] = (4.2, 3.2)):
    from matplotlib.figure import Figure

    rows, cols = _grid(n_panels)
    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _risk_curves(study: Study, t: StudyTables):
    import pandas as pd
    from matplotlib.ticker import LogLocator

    cells = list(study.cells.values())
    fig, axes = _figure(len(cells))
    style = _style(study)
    curves = t.curves if t.curves is not None else pd.DataFrame()
    for ax, cell in zip(axes, cells, strict=True):
        c = curves[curves["cell"] == cell.id] if len(curves) else curves
        ax.set_title(cell.id, fontsize=9)
        ax.set_yscale("log")
        # minor ticks at 2 and 5 only: matplotlib's default 8 per decade were ~40 % of this figure's drawing time
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.set_xlabel("t (GF time; GD: sum of step sizes)")
        ax.set_ylabel("risk")
        if c.empty:
            continue
        # A trajectory that stopped early keeps its last risk at later checkpoints (it no longer moves).
        risk = c.pivot_table(index="checkpoint", columns="trajectory", values="risk", aggfunc="last").ffill()
        x = c.groupby("checkpoint")["t"].median().reindex(risk.index).to_numpy()
        positive = x[x > 0]
        if positive.size:  # checkpoints are spread over orders of magnitude of t; t = 0 stays visible
            ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=1.0)
        r = np.clip(risk.to_numpy(dtype=float), RISK_FLOOR, None)
        q = np.nanquantile(r, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1)
        color, dash = style[cell.id]
        ax.fill_between(x, q[0], q[4], color=color, alpha=0.15, lw=0, label="5-95%")
        ax.fill_between(x, q[1], q[3], color=color, alpha=0.35, lw=0, label="25-75%")
        ax.plot(x, q[2], color=color, ls=dash, lw=1.5, label="median")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{study.name}: risk along the trajectories ({study.n_trajectories} per cell)")
    return fig


def _final_risk_hist(study: Study, t: StudyTables):
    import pandas as pd

    fig, (ax,) = _figure(1, (7.5, 4.2))
    style = _style(study)
    traj = t.trajectories
    if traj is None or "risk_final" not in traj.columns:  # not read, or no cell's table written yet: empty axes
        traj = pd.DataFrame({"cell": pd.Series([], dtype=str), "risk_final": pd.Series([], dtype=float)})
    risk_all = pd.to_numeric(traj["risk_final"], errors="coerce")
    finite = risk_all[np.isfinite(risk_all)]
    lo = max(float(np.clip(finite, RISK_FLOOR, None).min()) if len(finite) else 1e-12, 1e-30)
    hi = max(float(finite.max()) if len(finite) else 1.0, lo * 10)
    bins = np.logspace(math.floor(math.log10(lo)), math.ceil(math.log10(hi * 1.001)), 41)
    for cid in study.cells:
        r = pd.to_numeric(traj.loc[traj["cell"] == cid, "risk_final"], errors="coerce")
        r = np.clip(r[np.isfinite(r)].to_numpy(dtype=float), bins[0], bins[-1])
        color, dash = style[cid]
        ax.hist(r, bins=bins, histtype="step", color=color, ls=dash, lw=1.3, label=cid)
    ax.set_xscale("log")
    ax.set_xlabel(f"final risk (values below {bins[0]:.0e} drawn at it)")
    ax.set_ylabel("trajectories")
    ax.legend(fontsize=7, ncols=2)
    ax.set_title(f"{study.name}: final risk per cell")
    return fig


def _status_fractions(study: Study, t: StudyTables):
    """Stacked bars per cell: the fractions of each stopping status and of each endpoint class."""
    import pandas as pd
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 0.45 * len(study.cells) + 1.9), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    s = t.summary.set_index("cell").reindex(list(study.cells)) if t.summary is not None else pd.DataFrame()
    cmap = colormaps["tab10"]
    for ax, prefix, title in ((axes[0], "frac_status_", "status"), (axes[1], "frac_class_", "class")):
        left = np.zeros(len(s))
        # the fractions, not their interval columns (<fraction>_low, _high)
        for i, col in enumerate(c for c in s.columns if c.startswith(prefix) and not c.endswith(("_low", "_high"))):
            v = s[col].fillna(0.0).to_numpy(dtype=float)
            if v.any():
                ax.barh(np.arange(len(s)), v, left=left, color=cmap(i % 10), label=col.removeprefix(prefix))
                left += v
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of trajectories")
        ax.set_title(f"by {title}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), title=title, title_fontsize=7)
    axes[0].set_yticks(np.arange(len(s)), list(s.index), fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"{study.name}: how the trajectories ended")
    return fig


def _best_of_k(study: Study, t: StudyTables):
    import pandas as pd

    from ..analysis import best_of_k_column

    eps_list = study.eps_list
    fig, axes = _figure(len(eps_list))
    style = _style(study)
    s = t.summary.set_index("cell") if t.summary is not None else pd.DataFrame()
    ks = study.k_list
    for ax, eps in zip(axes, eps_list, strict=True):
        for cid, cell in study.cells.items():
            if cid not in s.index:
                continue
            p = [s.at[cid, best_of_k_column(k, eps)] if best_of_k_column(k, eps) in s.columns else np.nan
                 for k in ks]
            color, dash = style[cid]
            ax.plot(ks, p, marker="o", ms=3, color=color, ls=dash,
                    label=f"width {_width_label(cell)}, {cell.method.get('kind', '?')} ({cid})")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("K (restarts)")
        ax.set_ylabel(f"P(best of K: risk <= {eps:g})")
        ax.set_title(f"eps = {eps:g}", fontsize=9)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{study.name}: best-of-K success probability")
    return fig


DRAW: dict[str, Callable] = {
    "risk_curves": _risk_curves,
    "final_risk_hist": _final_risk_hist,
    "status_fractions": _status_fractions,
    "best_of_k": _best_of_k,
}


def _save(name: str, fig, paths: Sequence[Path]) -> None:
    from ._tables import atomic_path

    for path in paths:
        fmt = path.suffix.lstrip(".")
        with atomic_path(path) as tmp:
            # No creation date in the PDF: the same tables give the same file.
            fig.savefig(tmp, format=fmt, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else None)
        # The layout is solved once, on the first save; it was half of the drawing time.
        fig.set_layout_engine("none")
    log.info("figure %s -> %s", name, ", ".join(map(str, paths)))


def _draw_in_child(study_json: str, study_dir: str, name: str, paths: list[str]) -> None:
    """One figure in a spawned process (it reads the tables itself: nothing large crosses processes)."""
    study = Study.from_json(study_json)
    _save(name, DRAW[name](study, _load_for(study_dir, [name])), [Path(p) for p in paths])


def _load_for(study_dir: str | Path, names: Sequence[str]) -> StudyTables:
    """The study's tables that the figures ``names`` are drawn from (no others: the summary may not exist yet)."""
    needed = figure_tables(names)
    return load(study_dir, params="none", trajectories="trajectories" in needed, curves="curves" in needed,
                summary="summary" in needed, best_of_k=False)


def write_figures(study: Study, study_dir: str | Path, outputs: Sequence[str | Path], *, processes: int = 1) -> None:
    """Draw the figures named by ``outputs``' stems (``FIGURES``) in the formats of their suffixes.

    ``processes > 1`` draws them in parallel: this process draws the first figure while up to ``processes - 1``
    spawned ones draw the others (each pays ~1.5 s to import matplotlib and read the tables, so this pays off
    only with a core to spare). The files are the same whatever ``processes``.
    """
    by_name: dict[str, list[Path]] = {}
    for out in map(Path, outputs):
        if out.stem not in DRAW:
            raise ValueError(f"unknown figure {out.name!r}: figures are {list(FIGURES)} (.png or .pdf)")
        by_name.setdefault(out.stem, []).append(out)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes = {processes!r} is not allowed: expected an integer >= 1")
    names = list(by_name)
    n_children = min(processes - 1, len(names) - 1)
    pool = ProcessPoolExecutor(n_children, mp_context=multiprocessing.get_context("spawn")) if n_children > 0 \
        else None
    with pool or contextlib.nullcontext():
        children = [pool.submit(_draw_in_child, study.to_json(), str(study_dir), name, [str(p) for p in by_name[name]])
                    for name in names[1:]] if pool else []
        tables = _load_for(study_dir, names if pool is None else names[:1])
        for name in names if pool is None else names[:1]:
            _save(name, DRAW[name](study, tables), by_name[name])
        for child in children:
            child.result()  # a child's exception is raised here, with its traceback
