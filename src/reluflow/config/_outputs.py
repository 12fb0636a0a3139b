"""The outputs a study declares besides its per-cell tables: its figures, and the tables each is drawn from.

The workflow declares the figure files and their inputs from these before any job runs (so they live with the
config, not with the plotting code, which imports matplotlib).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FIGURES", "FIGURE_TABLES", "figure_tables"]

# The tables each figure is drawn from, besides cells.parquet (docs/tables.md)
FIGURE_TABLES: dict[str, tuple[str, ...]] = {
    "risk_curves": ("curves",),
    "final_risk_hist": ("trajectories",),
    "status_fractions": ("summary",),
    "best_of_k": ("summary",),
}
FIGURES = tuple(FIGURE_TABLES)


def figure_tables(names: Sequence[str]) -> list[str]:
    """The tables (besides cells.parquet) that the figures ``names`` are drawn from, sorted: what ``write_figures``
    reads for them, and what the workflow's figure rules take as inputs."""
    return sorted({table for name in names for table in FIGURE_TABLES[name]})
