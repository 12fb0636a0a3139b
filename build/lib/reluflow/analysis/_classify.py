"""Classification of trajectory endpoints: global minimum, local minimum, saddle, unconverged, diverged.

The class says what the *endpoint* is (docs/analysis.md, "Endpoint classes"): ``global_min`` only where the
endpoint's own risk is within the tolerance of the optimum, ``local_min`` / ``saddle`` only where a critical point
describes the endpoint (the endpoint is critical itself, or refinement found one within the trust region of the
local quadratic model, not uphill: ``reluflow.analysis.analyse_endpoints``), ``unconverged`` otherwise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "CRITICAL_CLASSES", "DIVERGED_STATUSES", "at_optimum", "classify", "critical_class"]

CLASSES = ("global_min", "local_min", "saddle", "unconverged", "diverged")
# the kinds of critical point refinement can find (``nearest_class``); "none": no critical point was found
CRITICAL_CLASSES = ("global_min", "local_min", "saddle", "none")
# solver statuses that mean the trajectory left every bounded set or produced non-finite numbers
DIVERGED_STATUSES = frozenset({"diverged", "nonfinite"})


def _shape(name: str, arr: np.ndarray, n: int) -> np.ndarray:
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}: expected ({n},) like status")
    return arr


def at_optimum(risk: np.ndarray, *, risk_tol: float, optimal_risk: float | None = None) -> np.ndarray:
    """``(T,)`` bool: ``risk <= L* + risk_tol * max(1, L*)`` with ``L*`` the optimal risk (0 when unknown: the
    risk is non-negative, so a risk within ``risk_tol`` of 0 is a global minimum up to ``risk_tol``)."""
    opt = 0.0 if optimal_risk is None else float(optimal_risk)
    with np.errstate(invalid="ignore"):
        return np.asarray(risk, dtype=np.float64) <= opt + risk_tol * max(1.0, abs(opt))


def critical_class(risk: np.ndarray, n_negative: np.ndarray, *, risk_tol: float,
                   optimal_risk: float | None = None) -> np.ndarray:
    """Kind of a critical point ``(T,)`` object, from ``CRITICAL_CLASSES``: ``global_min`` at the optimum
    (``at_optimum``: whatever its curvature, no point has a lower risk), else ``saddle`` with a negative Hessian
    eigenvalue, ``local_min`` without one; ``none`` where the risk is not finite or the curvature is unknown
    (``n_negative`` NaN)."""
    risk = np.asarray(risk, dtype=np.float64)
    n_negative = _shape("n_negative", np.asarray(n_negative, dtype=np.float64), risk.shape[0])
    out = np.full(risk.shape[0], "none", dtype=object)
    with np.errstate(invalid="ignore"):
        out[np.isfinite(risk) & (n_negative == 0)] = "local_min"
        out[np.isfinite(risk) & (n_negative > 0)] = "saddle"
    out[at_optimum(risk, risk_tol=risk_tol, optimal_risk=optimal_risk)] = "global_min"
    return out


def classify(
    status: np.ndarray,
    risk: np.ndarray,
    critical: np.ndarray,
    n_negative: np.ndarray,
    *,
    risk_tol: float,
    optimal_risk: float | None = None,
    critical_risk: np.ndarray | None = None,
) -> np.ndarray:
    """Class of each endpoint, ``(T,)`` object array of strings from ``CLASSES``.

    Inputs, all ``(T,)``: solver ``status`` strings; the endpoint's ``risk``; ``critical`` (bool): a critical point
    describes the endpoint (the endpoint itself has ``|G| <= grad_tol``, or refinement stayed local); that critical
    point's ``n_negative`` Hessian eigenvalues (float, NaN = unknown) and its risk ``critical_risk`` (default: the
    endpoint's). Rules, in order (the first that applies wins):

    1. ``diverged``: status ``diverged`` or ``nonfinite``, or a non-finite risk;
    2. ``global_min``: the *endpoint's* risk is at the optimum, ``risk <= L* + risk_tol * max(1, L*)``
       (``at_optimum``; ``L*`` = ``optimal_risk``, 0 when unknown);
    3. ``critical`` and the critical point is at the optimum while the endpoint is not: ``unconverged`` (the
       endpoint is on its way to a global minimum, not yet within the tolerance);
    4. ``critical`` and ``n_negative > 0``: ``saddle``; ``n_negative == 0``: ``local_min`` (a minimum above the
       optimum; with ``optimal_risk`` unknown it may still be a global one of a non-realizable problem);
    5. ``unconverged``: everything else, including critical points whose curvature is unknown.

    ``local_min`` is the second-order *necessary* condition: at a degenerate point (zero eigenvalues) higher
    order terms, or the non-smoothness of ReLU at a kink, can still hide a descent direction.
    """
    status = np.asarray(status).astype(str)
    n = status.shape[0]
    risk = _shape("risk", np.asarray(risk, dtype=np.float64), n)
    critical = _shape("critical", np.asarray(critical, dtype=bool), n)
    n_negative = _shape("n_negative", np.asarray(n_negative, dtype=np.float64), n)
    crit_risk = risk if critical_risk is None else _shape("critical_risk", np.asarray(critical_risk, np.float64), n)

    diverged = np.isin(status, list(DIVERGED_STATUSES)) | ~np.isfinite(risk)
    kind = critical_class(crit_risk, n_negative, risk_tol=risk_tol, optimal_risk=optimal_risk)
    out = np.full(n, "unconverged", dtype=object)
    described = critical & np.isin(kind, ("local_min", "saddle"))
    out[described] = kind[described]
    out[at_optimum(risk, risk_tol=risk_tol, optimal_risk=optimal_risk)] = "global_min"
    out[diverged] = "diverged"
    return out
