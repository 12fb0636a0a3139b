"""Per-trajectory analysis (critical points, Hessian spectra, classes, rate fits) and per-cell aggregates.

Pure numpy/pandas functions: a batch of trajectories along axis 0 in, arrays with the same leading axis out.
"""

from ._aggregate import QUANTILES, STATUSES, best_of_k, best_of_k_column, summarize_cell
from ._classify import CLASSES, CRITICAL_CLASSES, DIVERGED_STATUSES, at_optimum, classify, critical_class
from ._critical import refine_critical_points
from ._endpoints import HESSIAN_AT, HESSIAN_COLUMNS, REFINE_STATUSES, TRUST_RTOL, analyse_endpoints
from ._hessian import hessian, hessian_spectrum, spectrum_from_hessian
from ._rates import RATE_MODELS, rate_fits

__all__ = [
    "CLASSES",
    "CRITICAL_CLASSES",
    "DIVERGED_STATUSES",
    "HESSIAN_AT",
    "HESSIAN_COLUMNS",
    "QUANTILES",
    "RATE_MODELS",
    "REFINE_STATUSES",
    "STATUSES",
    "TRUST_RTOL",
    "analyse_endpoints",
    "at_optimum",
    "best_of_k",
    "best_of_k_column",
    "classify",
    "critical_class",
    "hessian",
    "hessian_spectrum",
    "rate_fits",
    "refine_critical_points",
    "spectrum_from_hessian",
    "summarize_cell",
]
