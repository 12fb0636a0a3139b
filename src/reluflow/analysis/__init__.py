"""Per-trajectory analysis (critical points, Hessian spectra, classes, rate fits) and per-cell aggregates.

Certified critical points (``certify_critical_points``) and certified GD/GF limits (``certified_gd_limit``) use
ball arithmetic (python-flint). Pure numpy/pandas
functions: a batch of trajectories along axis 0 in, arrays with the same leading axis out;
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
from ._certify import (
    CERTIFIED_CLASSES,
    CERTIFY_COLUMNS,
    CERTIFY_REASONS,
    certify_available,
    certify_critical_points,
)
from ._certstop import GD_LIMIT_COLUMNS, GD_LIMIT_REASONS, certified_gd_limit
from ._classify import CLASSES, CRITICAL_CLASSES, DIVERGED_STATUSES, at_optimum, classify, critical_class
from ._critical import refine_critical_points, refine_memory
from ._endpoints import HESSIAN_AT, HESSIAN_COLUMNS, REFINE_STATUSES, TRUST_RTOL, analyse_endpoints, endpoints_memory
from ._hessian import (
    hessian,
    hessian_kept_memory,
    hessian_memory,
    hessian_spectrum,
    spectrum_from_hessian,
    spectrum_memory,
)
from ._intervals import BINOMIAL_METHODS, BOOTSTRAP_RESAMPLES, CONFIDENCE, binomial_interval, bootstrap_median_interval
from ._rates import RATE_MODELS, rate_fits, rate_fits_memory
from ._verdicts import VERDICT_STATUSES, VERDICTS, Verdict, VerdictRule, check_verdict_spec, evaluate_verdict

__all__ = [
    "VERDICTS",
    "VERDICT_STATUSES",
    "Verdict",
    "VerdictRule",
    "check_verdict_spec",
    "evaluate_verdict",
    "BEST_OF_K_COLUMNS",
    "BINOMIAL_METHODS",
    "CERTIFIED_CLASSES",
    "CERTIFY_COLUMNS",
    "CERTIFY_REASONS",
    "BOOTSTRAP_RESAMPLES",
    "CLASSES",
    "CONFIDENCE",
    "CRITICAL_CLASSES",
    "DIVERGED_STATUSES",
    "HESSIAN_AT",
    "HESSIAN_COLUMNS",
    "MIN_GROUPS",
    "QUANTILES",
    "RATE_MODELS",
    "REFINE_STATUSES",
    "STATUSES",
    "TRUST_RTOL",
    "analyse_endpoints",
    "at_optimum",
    "best_of_k",
    "best_of_k_column",
    "best_of_k_successes",
    "best_of_k_table",
    "binomial_interval",
    "certify_available",
    "certify_critical_points",
    "certified_gd_limit",
    "GD_LIMIT_COLUMNS",
    "GD_LIMIT_REASONS",
    "bootstrap_median_interval",
    "classify",
    "critical_class",
    "endpoints_memory",
    "hessian",
    "hessian_kept_memory",
    "hessian_memory",
    "hessian_spectrum",
    "rate_fits",
    "rate_fits_memory",
    "refine_critical_points",
    "refine_memory",
    "spectrum_from_hessian",
    "spectrum_memory",
    "summarize_cell",
]
