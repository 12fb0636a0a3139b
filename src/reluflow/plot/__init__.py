"""``reluflow.plot``: the figures a paper prints, drawn from a study's tables (``reluflow.load``).

Every figure function takes ``reluflow.load(study_dir)`` (a ``StudyTables``) or the one DataFrame it draws from,
and ``ax=`` (an existing matplotlib Axes; a new figure when None), and returns the Axes it drew on, so a notebook
composes them freely::

    import matplotlib.pyplot as plt
    import reluflow
    import reluflow.plot

    t = reluflow.load("results/quickstart")
    with reluflow.plot.publication():
        fig, ax = plt.subplots(layout="constrained")
        reluflow.plot.risk_curves(t, ax=ax)
        reluflow.plot.save(fig, ["risk.pdf", "risk.png"])

Cells are told apart by the grid keys that vary (``series_styles``: colour, then line style, then marker);
``caption`` gives one line of what they share. docs/plotting.md shows each figure.
"""

from ._encode import caption, format_value, group_cells, series_styles, short_name, varying_keys
from ._endpoints import best_of_k, best_of_k_long, final_risk, published_vs_regenerated, status_fractions
from ._style import DPI, PUBLICATION_RC, figure, publication, save
from ._trajectories import gd_vs_gf, norm_growth, rate_comparison, risk_curves, time_label

__all__ = [
    "DPI",
    "PUBLICATION_RC",
    "best_of_k",
    "best_of_k_long",
    "caption",
    "figure",
    "final_risk",
    "format_value",
    "gd_vs_gf",
    "group_cells",
    "norm_growth",
    "publication",
    "published_vs_regenerated",
    "rate_comparison",
    "risk_curves",
    "save",
    "series_styles",
    "short_name",
    "status_fractions",
    "time_label",
    "varying_keys",
]
