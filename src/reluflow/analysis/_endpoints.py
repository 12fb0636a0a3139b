"""What each trajectory's endpoint is: refinement to the nearest critical point, its spectrum, and the class.

``analyse_endpoints`` is the one place that decides which endpoints are refined and analysed (docs/analysis.md,
"Endpoint classes"). For an endpoint ``theta_e`` (risk ``L_e``, gradient ``G_e``):

1. ``critical`` and ``budget`` endpoints are refined by damped Newton on ``G = 0``
   (``refine_critical_points``) to a nearby critical point ``theta_c`` (risk ``L_c``, Hessian ``H_c``) where it
   converges. Its kind (``nearest_class``: ``global_min`` at the optimum, else ``saddle`` / ``local_min`` by the
   sign of ``H_c``'s eigenvalues) and risk are reported whatever happens next.
2. The refinement is **local** when the local quadratic model at ``theta_c`` describes the endpoint and the
   refinement did not climb:

   - *trust region*: ``|G_e - H_c (theta_e - theta_c)| <= TRUST_RTOL |G_e| + grad_tol``: the model's gradient at
     the endpoint agrees with the true one to ``TRUST_RTOL`` (25 %); beyond that region the endpoint is not in
     the quadratic neighbourhood of ``theta_c`` (a refinement that travelled across the landscape fails it);
   - *not uphill*: ``L_c <= L_e + max(risk_tol, 16 eps) * max(1, L_e)``: in the model's region, a minimum or a
     saddle approached along its positive directions lies below the endpoint; an endpoint below its critical
     point is escaping it.
3. The class is then judged (``classify``) on the endpoint itself: ``global_min`` only if ``L_e`` is at the
   optimum; ``local_min`` / ``saddle`` if a critical point describes it (a local refinement, or the endpoint is
   critical itself, ``|G_e| <= grad_tol``, with its Hessian taken there); ``unconverged`` otherwise.

The spectrum columns describe the point the class was judged on (``hessian_at``: ``refined`` or ``endpoint``),
else the nearest critical point found by a non-local refinement (``refined``), else nothing (``none``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..risk import Memory
from ._classify import DIVERGED_STATUSES, classify, critical_class
from ._critical import refine_critical_points, refine_memory
from ._hessian import gradients, hessian, hessian_kept_memory, hessian_memory, spectrum_from_hessian, spectrum_memory

__all__ = ["HESSIAN_AT", "HESSIAN_COLUMNS", "REFINE_STATUSES", "TRUST_RTOL", "analyse_endpoints",
           "endpoints_memory"]

# endpoints that refinement (a root-finder on G) is meant for; zero_risk endpoints are minima already
REFINE_STATUSES = ("critical", "budget")
HESSIAN_COLUMNS = ("n_negative", "n_zero", "lambda_min", "lambda_min_positive", "hessian_rank")
HESSIAN_AT = ("refined", "endpoint", "none")
# relative disagreement between the quadratic model's gradient at the endpoint and the true one, beyond which the
# endpoint lies outside the model's trust region
TRUST_RTOL = 0.25
UPHILL_EPS = 16 * np.finfo(np.float64).eps  # round-off floor of the uphill test


def _norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", a, a))


def endpoints_memory(problem: Any, *, second_order: bool = True) -> Memory:
    """Upper estimate of the bytes ``analyse_endpoints`` holds at its peak (``risk.Memory``), as a function of the
    batch, counting every endpoint as refined and analysed (the most it can do).

    Per trajectory the output columns (``theta_refined`` ``(P,)`` and some twenty values), the status as text, the
    refined rows' parameters; then the largest of the refinement (``refine_memory``), the refined points'
    Hessians and spectra with the gradients at the endpoints, and the endpoints' own Hessians and spectra
    (``hessian_memory``, ``spectrum_memory``).
    """
    p = problem.n_params
    base = Memory(0.0, 8 * (2 * p + 24) + 64)
    if not second_order:
        return base
    # a Hessian, held while its spectrum is taken and G evaluated beside it, with what the backend kept from it
    square = Memory(0.0, 8 * p * p).plus(hessian_kept_memory(problem))
    spectrum = square.plus(spectrum_memory(p))
    evaluations = square.plus(Memory(0.0, 8 * 8 * p), problem.memory())
    return base.plus(refine_memory(problem).max(hessian_memory(problem), spectrum, evaluations))


def analyse_endpoints(
    problem: Any,
    theta: np.ndarray,
    status: np.ndarray,
    risk: np.ndarray,
    grad_norm: np.ndarray,
    *,
    risk_tol: float,
    grad_tol: float,
    optimal_risk: float | None = None,
    second_order: bool = True,
) -> dict[str, np.ndarray]:
    """Refine, take spectra and classify the endpoints ``theta`` ``(T, P)`` (module docstring).

    ``status``, ``risk``, ``grad_norm`` ``(T,)``: the solver's status and the endpoint's ``L`` and ``|G|``;
    ``risk_tol`` the tolerance of the optimum, ``grad_tol`` the criticality tolerance (the method's);
    ``optimal_risk`` the known optimal risk (``Problem.optimal_risk``; None: unknown, judged against 0).
    ``second_order=False`` skips refinement and Hessians (their cost is ``O(P)`` gradients per endpoint): then only
    ``global_min``, ``unconverged`` and ``diverged`` are given.

    Returns ``(T,)`` arrays: ``refined``, ``refine_converged``, ``refine_local`` (bool); ``refine_moved``
    (``|theta_c - theta_e|``), ``refine_grad_norm``, ``refine_model_error`` (``|G_e - H_c delta| / |G_e|``),
    ``nearest_risk`` (float, NaN where not found); ``nearest_class`` (object, ``CRITICAL_CLASSES``); the
    ``HESSIAN_COLUMNS`` (float, NaN = not computed) and ``hessian_at`` (object, ``HESSIAN_AT``); ``class``
    (object, ``CLASSES``); and ``theta_refined`` ``(T, P)``, NaN rows where no refinement ran.
    """
    theta = np.asarray(theta, dtype=np.float64)
    n, p = theta.shape
    status = np.asarray(status).astype(str)
    risk = np.asarray(risk, dtype=np.float64)
    grad_norm = np.asarray(grad_norm, dtype=np.float64)
    finite = np.all(np.isfinite(theta), axis=1) & np.isfinite(risk)
    out: dict[str, np.ndarray] = {
        "refined": np.zeros(n, dtype=bool), "refine_converged": np.zeros(n, dtype=bool),
        "refine_local": np.zeros(n, dtype=bool),
        **{name: np.full(n, np.nan) for name in ("refine_moved", "refine_grad_norm", "refine_model_error",
                                                  "nearest_risk", *HESSIAN_COLUMNS)},
        "nearest_class": np.full(n, "none", dtype=object), "hessian_at": np.full(n, "none", dtype=object),
        "theta_refined": np.full((n, p), np.nan),
    }
    endpoint_critical = finite & (grad_norm <= grad_tol) & ~np.isin(status, list(DIVERGED_STATUSES))
    if second_order:
        ref = np.flatnonzero(finite & np.isin(status, REFINE_STATUSES))
        if len(ref):
            _refine(problem, theta, risk, ref, out, risk_tol=risk_tol, grad_tol=grad_tol, optimal_risk=optimal_risk)
        # the endpoint's own Hessian where the class is judged there: critical endpoints without a local
        # refinement, and zero-risk endpoints (their rank at a global minimum: claim C9)
        own = np.flatnonzero((endpoint_critical & ~out["refine_local"]) | (finite & (status == "zero_risk")))
        if len(own):
            spec = spectrum_from_hessian(hessian(problem, np.ascontiguousarray(theta[own])))
            for name in HESSIAN_COLUMNS:
                out[name][own] = spec[name]
            out["hessian_at"][own] = "endpoint"
    judged_here = out["hessian_at"] == "endpoint"
    out["class"] = classify(
        status, risk, out["refine_local"] | (endpoint_critical & judged_here), out["n_negative"],
        risk_tol=risk_tol, optimal_risk=optimal_risk,
        critical_risk=np.where(out["refine_local"], out["nearest_risk"], risk))
    return out


def _refine(problem: Any, theta: np.ndarray, risk: np.ndarray, ref: np.ndarray, out: dict[str, np.ndarray], *,
            risk_tol: float, grad_tol: float, optimal_risk: float | None) -> None:
    """Refine rows ``ref``, describe the critical points found and test locality, filling ``out`` in place."""
    theta_e = np.ascontiguousarray(theta[ref])
    r = refine_critical_points(problem, theta_e)
    out["refined"][ref] = True
    out["refine_moved"][ref] = r["moved"]
    out["refine_grad_norm"][ref] = r["grad_norm"]
    out["theta_refined"][ref] = r["theta"]
    conv = np.asarray(r["converged"], dtype=bool)
    out["refine_converged"][ref] = conv
    if not conv.any():
        return
    rows = ref[conv]
    theta_c = np.ascontiguousarray(r["theta"][conv])
    hess = hessian(problem, theta_c)  # (m, P, P)
    spec = spectrum_from_hessian(hess)
    with np.errstate(all="ignore"):
        risk_c = np.asarray(problem.risk(theta_c), dtype=np.float64)
        g_e = gradients(problem, theta_e[conv])  # (m, P)
        model_gap = _norm(g_e - np.einsum("mij,mj->mi", hess, theta_e[conv] - theta_c))
        g_e_norm = _norm(g_e)
        model_error = model_gap / g_e_norm
        in_trust_region = model_gap <= TRUST_RTOL * g_e_norm + grad_tol
        risk_e = risk[rows]
        not_uphill = risk_c <= risk_e + max(risk_tol, UPHILL_EPS) * np.maximum(1.0, risk_e)
    for name in HESSIAN_COLUMNS:
        out[name][rows] = spec[name]
    out["hessian_at"][rows] = "refined"
    out["nearest_risk"][rows] = risk_c
    out["refine_model_error"][rows] = model_error
    out["nearest_class"][rows] = critical_class(risk_c, spec["n_negative"], risk_tol=risk_tol,
                                                optimal_risk=optimal_risk)
    out["refine_local"][rows] = in_trust_region & not_uphill & np.isfinite(spec["n_negative"])
