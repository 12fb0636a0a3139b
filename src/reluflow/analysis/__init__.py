"""Per-trajectory analysis (critical points, Hessian spectra, classes, rate fits) and per-cell aggregates.

Pure numpy/pandas functions: a batch of trajectories along axis 0 in, arrays with the same leading axis out.
"""

from ._aggregate import QUANTILES, STATUSES, best_of_k, best_of_k_column, summarize_cell
from ._classify import CLASSES, DIVERGED_STATUSES, classify
from ._critical import refine_critical_points
from ._hessian import hessian, hessian_spectrum, spectrum_from_hessian
from ._rates import RATE_MODELS, rate_fits

__all__ = [
    "CLASSES",
    "DIVERGED_STATUSES",
    "QUANTILES",
    "RATE_MODELS",
    "STATUSES",
    "best_of_k",
    "best_of_k_column",
    "classify",
    "hessian",
    "hessian_spectrum",
    "rate_fits",
    "refine_critical_points",
    "spectrum_from_hessian",
    "summarize_cell",
]
