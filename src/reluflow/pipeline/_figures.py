"""Per-study figures (PNG and PDF), drawn from the study's tables with ``reluflow.plot``.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global state, Agg rendering): safe in a batch job with
no display; drawn and saved under ``reluflow.plot.publication()`` (TrueType fonts in the PDF, PNG at
``reluflow.plot.DPI``). Every figure is written atomically, like the tables. Each figure reads only the tables
named in ``FIGURE_TABLES``: the workflow draws those of the per-cell tables while ``aggregate`` writes the
summary, and the summary's once it is there; a figure a study names in its ``figures:`` (``EXTRA_FIGURES``) in a
job of its own. ``write_figures(processes=...)`` draws several figures in parallel processes.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .._load import StudyTables, load
from ..config import Study, figure_tables

# reluflow.plot (matplotlib, pandas) is imported where figures are drawn: importing the pipeline (every stage, every
# dask worker) stays free of matplotlib

__all__ = ["write_figures"]

log = logging.getLogger("reluflow.pipeline")

#: up to this many cells share one panel; more are split into panels by the second varying grid key
MAX_CELLS_PER_PANEL = 4
#: ... except in figures of lines alone (no bands), which stay readable with more
MAX_LINES_PER_PANEL = 8
#: inches added on the right of a figure for its shared legend
LEGEND_WIDTH = 1.6
#: characters of a figure's title per inch (publication style, wide characters such as `_` counted), to wrap it within
#: the panels
TITLE_CHARS_PER_INCH = 11


def _panels(t: StudyTables, most: int) -> list[tuple[str, list[str]]]:
    """``(title, cell ids)`` per panel: every cell in one panel, or, past ``most`` cells, one panel per value of
    the second varying grid key (the one drawn as line style)."""
    from .. import plot

    ids = [str(c) for c in t.cells["cell"]]
    return [("", ids)] if len(ids) <= most else plot.group_cells(t.cells)


def _figure(t: StudyTables, n_panels: int, panel: tuple[float, float], title: str, *, sharex: bool = False,
            sharey: bool = False, legend_right: bool = True):
    from .. import plot

    fig, axes = plot.figure(n_panels, panel=panel, sharex=sharex, sharey=sharey)
    panels_width = fig.get_figwidth()
    width = panels_width + (LEGEND_WIDTH if legend_right else 0.0)  # room for a shared legend on the right
    fig.set_figwidth(width)
    # centred over the panels, wrapped to their width: centred over the whole figure, a title longer than the
    # panels ran into the legend's column
    fig.suptitle(textwrap.fill(title, width=int(TITLE_CHARS_PER_INCH * panels_width)), x=0.5 * panels_width / width)
    # the caption line of the fixed parameters, wrapped to the figure's width (about 19 characters per inch)
    fig.supxlabel(textwrap.fill(plot.caption(t), width=int(19 * width)), fontsize=6, color="0.3", x=0.01,
                  ha="left", multialignment="left")
    return fig, axes


def _shared_legend(fig, styles: dict, ids: Sequence[str], title: str | None, *, line: bool = True) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=styles[c]["color"], linestyle=styles[c]["linestyle"] if line else "none",
                      marker=styles[c].get("marker") or (None if line else "o"), markersize=4) for c in ids]
    if handles:
        fig.legend(handles, [styles[c]["label"] for c in ids], loc="outside right upper", title=title,
                   alignment="left")


def _risk_curves(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells)
    panels = _panels(t, MAX_CELLS_PER_PANEL)
    fig, axes = _figure(t, len(panels), (3.4, 2.7), f"{study.name}: risk along the trajectories",
                        sharey=True)
    for ax, (title, ids) in zip(axes, panels, strict=True):
        plot.risk_curves(t, ax=ax, cells=ids, styles=styles, legend=False)
        if title:
            ax.set_title(title)
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]], "median; band 25–75 %")
    return fig


def _final_risk_hist(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells)
    panels = _panels(t, MAX_LINES_PER_PANEL)
    fig, axes = _figure(t, len(panels), (3.6, 2.7), f"{study.name}: final risk (cumulative distribution)",
                        sharey=True)
    for ax, (title, ids) in zip(axes, panels, strict=True):
        plot.final_risk(t, ax=ax, cells=ids, styles=styles, eps=study.eps_list, legend=False)
        if title:
            ax.set_title(title)
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]], None)
    return fig


def _status_fractions(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells, channels=("color", "marker", "linestyle"))
    n = len(t.cells)
    fig, axes = _figure(t, 2, (max(3.0, 1.2 + 0.3 * n), 2.7), f"{study.name}: how the trajectories ended")
    for ax, what in zip(axes, ("status", "class"), strict=True):
        plot.status_fractions(t, ax=ax, styles=styles, what=what, legend=False)
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]], "95 % Wilson intervals", line=False)
    return fig


def _best_of_k(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells)
    eps_list = study.eps_list
    fig, axes = _figure(t, len(eps_list), (3.4, 2.7), f"{study.name}: best-of-K success probability")
    # from the summary alone (FIGURE_TABLES): best_of_k_long rebuilds best_of_k.parquet's intervals from it
    source = t.summary if t.summary is not None else t.cells.iloc[:0]
    for ax, eps in zip(axes, eps_list, strict=True):
        if t.summary is None:
            ax.set_title(f"ε = {eps:g}")
            ax.set_xlabel("restarts K")
            continue
        plot.best_of_k(source, ax=ax, eps=eps, styles=styles, legend=False)
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]],
                   "estimate; band 95 % interval;\nopen markers: n < 10 K")
    return fig


#: runs drawn per cell in norm_growth (those whose norm grew most): enough to see a spread, few enough to follow one
NORM_GROWTH_RUNS = 6


def _norm_growth(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells)
    fig, axes = _figure(t, 2, (3.4, 2.7), f"{study.name}: parameter norm and risk of single runs", sharex=True)
    plot.norm_growth(t, ax=axes, styles=styles, trajectories=NORM_GROWTH_RUNS, legend=False)
    axes[0].set_title("the norm keeps growing ...")
    axes[1].set_title("... while the risk decays")
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]],
                   f"{NORM_GROWTH_RUNS} runs per cell:\nthose whose norm grew most")
    return fig


def _rate_comparison(study: Study, t: StudyTables):
    from .. import plot

    styles = plot.series_styles(t.cells)
    fig, axes = _figure(t, 2, (3.4, 2.7), f"{study.name}: GF and GD from the same starts", sharey=True)
    # medians alone: five overlapping quantile bands hid the lines they belong to
    plot.rate_comparison(t, ax=axes[0], styles=styles, legend=False)
    # one start, followed by every cell: the pairing made visible (trajectory 0 exists in every cell)
    plot.rate_comparison(t, ax=axes[1], styles=styles, trajectory=0, legend=False)
    n = t.cells["n_trajectories"].min() if "n_trajectories" in t.cells else None
    axes[0].set_title(f"median of {n} paired starts" if n else "median of the paired starts")
    axes[1].set_title("trajectory 0 (one start, every cell)")
    axes[1].tick_params(labelleft=True)
    _shared_legend(fig, styles, [str(c) for c in t.cells["cell"]], None)
    return fig


def _published_vs_regenerated(study: Study, t: StudyTables):
    """Per cell, the regenerated rate of the study's ``rates_agree_with_published`` verdict with its 95 % interval
    and the published rate: computed by the verdict rule itself, so the figure shows the numbers it judges."""
    import pandas as pd

    from .. import plot
    from ..analysis import evaluate_verdict

    verdict = evaluate_verdict(study.spec["verdict"], t)
    # a cell without a published rate keeps its row (published NaN): its estimate is drawn alone
    rows = pd.DataFrame(verdict.evidence.get("cells") or [],
                        columns=["cell", "n", "published", "estimate", "low", "high", "agrees"])
    threshold = study.spec["verdict"]["threshold"]
    n_se = verdict.evidence.get("n_se", 2.0)
    fig, (ax,) = _figure(t, 1, (max(4.4, 1.4 + 0.3 * len(rows)), 2.9),
                         f"{study.name}: published and regenerated rates", legend_right=False)
    plot.published_vs_regenerated(rows, ax=ax, x="cell", xlabel="cell",
                                  quantity=f"fraction of runs with\nfinal risk ≥ {threshold:g}",
                                  disagree_label=f"published, more than {n_se:g} SE away (verdict)")
    return fig


def _published(draw: Callable) -> Callable:
    """``draw`` under ``reluflow.plot.publication()``: a figure's fonts and sizes are those of a printed figure
    however it is called."""

    @functools.wraps(draw)
    def drawn(study: Study, t: StudyTables):
        from .. import plot

        with plot.publication():
            return draw(study, t)

    return drawn


DRAW: dict[str, Callable] = {
    "risk_curves": _published(_risk_curves),
    "final_risk_hist": _published(_final_risk_hist),
    "status_fractions": _published(_status_fractions),
    "best_of_k": _published(_best_of_k),
    "norm_growth": _published(_norm_growth),
    "rate_comparison": _published(_rate_comparison),
    "published_vs_regenerated": _published(_published_vs_regenerated),
}

def _save(name: str, fig, paths: Sequence[Path]) -> None:
    """Write ``fig`` to ``paths`` (``reluflow.plot.save``: no creation date in the PDF, so the same tables give the
    same file), each atomically."""
    from .. import plot
    from ._tables import atomic_path

    paths = [Path(p) for p in paths]
    with contextlib.ExitStack() as stack, plot.publication():
        tmps = [stack.enter_context(atomic_path(p)) for p in paths]
        plot.save(fig, tmps, format=[p.suffix.lstrip(".") for p in paths])
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
    """Draw the figures named by ``outputs``' stems in the formats of their suffixes: any of ``study.figures``
    (those of every study and those its ``figures:`` names; another name raises ``ValueError``).

    ``processes > 1`` draws them in parallel: this process draws the first figure while up to ``processes - 1``
    spawned ones draw the others (each pays ~1.5 s to import matplotlib and read the tables, so this pays off
    only with a core to spare). The files are the same whatever ``processes``.
    """
    by_name: dict[str, list[Path]] = {}
    for out in map(Path, outputs):
        if out.stem not in DRAW:
            raise ValueError(f"unknown figure {out.name!r}: figures are {list(DRAW)} (.png or .pdf)")
        if out.stem not in study.figures:  # an extra figure needs what its study states (check_figures)
            raise ValueError(f"figure {out.name!r} is not one of study {study.name!r}'s figures {study.figures}: "
                             "a study draws an extra figure when its `figures:` names it")
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
