"""The figures a study draws: four that every study draws, and the ones a study asks for by name in its ``figures:``
(``EXTRA_FIGURES``), each with the tables it is drawn from and what its study must state for it.

A registry, not drawing code (that is ``reluflow.pipeline``'s, with matplotlib): the config is validated against it
and the workflow declares each study's figure files and their inputs from it before any job runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["EXTRA_FIGURES", "FIGURES", "FIGURE_TABLES", "FIGURE_VERDICT", "check_figures", "figure_tables",
           "study_figures"]

#: The tables each figure is drawn from, besides cells.parquet (docs/tables.md)
FIGURE_TABLES: dict[str, tuple[str, ...]] = {
    "risk_curves": ("curves",),
    "final_risk_hist": ("trajectories",),
    "status_fractions": ("summary",),
    "best_of_k": ("summary",),
    "norm_growth": ("curves",),
    "rate_comparison": ("curves",),
    "published_vs_regenerated": ("trajectories",),
}
#: the figures every study draws
FIGURES: tuple[str, ...] = ("risk_curves", "final_risk_hist", "status_fractions", "best_of_k")
#: the figures a study draws when its ``figures:`` names them (they show one claim's picture, not every study's)
EXTRA_FIGURES: tuple[str, ...] = tuple(name for name in FIGURE_TABLES if name not in FIGURES)
#: figures drawn from the study's verdict (its parameters: the published rates), by the verdict rule they need
FIGURE_VERDICT: dict[str, str] = {"published_vs_regenerated": "rates_agree_with_published"}


def check_figures(spec: Mapping[str, Any]) -> list[str]:
    """A study spec's ``figures`` (default none), checked: each an extra figure's name, and the study states what
    the figure is drawn from. Returns the names; raises ``ValueError`` naming the key, the value and what is
    allowed."""
    names = spec.get("figures") or []
    if not isinstance(names, list | tuple):
        raise ValueError(f"figures = {names!r} is not allowed: expected a list of figure names, from "
                         f"{list(EXTRA_FIGURES)}")
    for i, name in enumerate(names):
        if name in FIGURES:
            raise ValueError(f"figures[{i}] = {name!r} is not allowed: every study draws {list(FIGURES)} already; "
                             f"figures: names the others, from {list(EXTRA_FIGURES)}")
        if name not in EXTRA_FIGURES:
            raise ValueError(f"figures[{i}] = {name!r} is not allowed: expected one of {list(EXTRA_FIGURES)}")
        rule = FIGURE_VERDICT.get(name)
        given = (spec.get("verdict") or {}).get("rule") if isinstance(spec.get("verdict"), Mapping) else None
        if rule is not None and given != rule:
            has = f"this study's is {given!r}" if given else "this study has no verdict"
            raise ValueError(f"figures[{i}] = {name!r} is drawn from the study's verdict: it needs verdict.rule = "
                             f"{rule!r} ({has})")
    if len(set(names)) != len(names):
        raise ValueError(f"figures = {list(names)!r} is not allowed: a figure is named once")
    return list(names)


def study_figures(spec: Mapping[str, Any]) -> list[str]:
    """The figures a study (its spec) draws: ``FIGURES``, then its ``figures:`` in their order."""
    return [*FIGURES, *(spec.get("figures") or [])]


def figure_tables(names: Sequence[str]) -> list[str]:
    """The tables (besides cells.parquet) that the figures ``names`` are drawn from, sorted: what ``write_figures``
    reads for them, and what the workflow's figure rules take as inputs."""
    return sorted({table for name in names for table in FIGURE_TABLES[name]})
