"""Per-trajectory analysis (critical points, Hessian spectra, classes, rate fits) and per-cell aggregates.

Pure numpy/pandas functions: a batch of trajectories along axis 0 in, arrays with the same leading axis out;
confidence intervals for the per-cell fractions, medians and best-of-K probabilities.
"""

from ._aggregate import (
    BEST_OF_K_COLUMNS,
    MIN_GROUPS,
    QUANTILES,
    STATUSES,
    best_of_k,
    best_of_k_column,
    best_of_k_successes,
    best_of_k_table,
    summarize_cell,
)
from ._classify import CLASSES, DIVERGED_STATUSES, classify
from ._critical import refine_critical_points
from ._hessian import hessian, hessian_spectrum, spectrum_from_hessian
from ._intervals import BINOMIAL_METHODS, BOOTSTRAP_RESAMPLES, CONFIDENCE, binomial_interval, bootstrap_median_interval
from ._rates import RATE_MODELS, rate_fits

__all__ = [
    "BEST_OF_K_COLUMNS",
    "BINOMIAL_METHODS",
    "BOOTSTRAP_RESAMPLES",
    "CLASSES",
    "CONFIDENCE",
    "DIVERGED_STATUSES",
    "MIN_GROUPS",
    "QUANTILES",
    "RATE_MODELS",
    "STATUSES",
    "best_of_k",
    "best_of_k_column",
    "best_of_k_successes",
    "best_of_k_table",
    "binomial_interval",
    "bootstrap_median_interval",
    "classify",
    "hessian",
    "hessian_spectrum",
    "rate_fits",
    "refine_critical_points",
    "spectrum_from_hessian",
    "summarize_cell",
]
