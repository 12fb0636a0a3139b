"""Classification of trajectory endpoints: global minimum, local minimum, saddle, unconverged, diverged."""

from __future__ import annotations

import numpy as np

__all__ = ["CLASSES", "DIVERGED_STATUSES", "classify"]

CLASSES = ("global_min", "local_min", "saddle", "unconverged", "diverged")
# solver statuses that mean the trajectory left every bounded set or produced non-finite numbers
DIVERGED_STATUSES = frozenset({"diverged", "nonfinite"})


def classify(
    status: np.ndarray,
    risk: np.ndarray,
    grad_norm: np.ndarray,
    n_negative: np.ndarray,
    *,
    risk_tol: float,
    grad_tol: float,
    optimal_risk: float | None = None,
    refined: np.ndarray | None = None,
) -> np.ndarray:
    """Class of each endpoint, ``(T,)`` object array of strings from ``CLASSES``.

    Inputs, all ``(T,)``: solver ``status`` strings, final ``risk``, final ``grad_norm`` ``|G|`` (pass the
    refined ``|G|`` where refinement ran), ``n_negative`` Hessian eigenvalues (float, NaN = unknown). Rules,
    in order (the first that applies wins):

    1. ``diverged``: status ``diverged`` or ``nonfinite``, or a non-finite risk;
    2. ``global_min``: ``risk <= risk_tol`` (the risk is non-negative, so this is a global minimum up to
       ``risk_tol``), or, when ``optimal_risk`` is given, ``|risk - optimal_risk| <=
       risk_tol * max(1, |optimal|)``;
    3. the point is *critical* if ``grad_norm <= grad_tol`` or ``refined`` (optional ``(T,)`` bool: refinement
       converged to ``G = 0``). A critical point with ``n_negative > 0`` is a ``saddle`` (second-order test:
       a direction of negative curvature exists); with ``n_negative == 0`` it is a ``local_min``;
    4. ``unconverged``: everything else, including critical points whose ``n_negative`` is unknown (NaN).

    ``local_min`` is the second-order *necessary* condition: at a degenerate point (zero eigenvalues) higher
    order terms, or the non-smoothness of ReLU at a kink, can still hide a descent direction.
    """
    status = np.asarray(status).astype(str)
    risk = np.asarray(risk, dtype=np.float64)
    grad_norm = np.asarray(grad_norm, dtype=np.float64)
    n_negative = np.asarray(n_negative, dtype=np.float64)
    n = status.shape[0]
    for name, arr in (("risk", risk), ("grad_norm", grad_norm), ("n_negative", n_negative)):
        if arr.shape != (n,):
            raise ValueError(f"{name} has shape {arr.shape}: expected ({n},) like status")
    refined_mask = np.zeros(n, dtype=bool) if refined is None else np.asarray(refined, dtype=bool)
    if refined_mask.shape != (n,):
        raise ValueError(f"refined has shape {refined_mask.shape}: expected ({n},) like status")

    diverged = np.isin(status, list(DIVERGED_STATUSES)) | ~np.isfinite(risk)
    with np.errstate(invalid="ignore"):
        global_min = risk <= risk_tol
        if optimal_risk is not None:
            opt = float(optimal_risk)
            global_min |= np.abs(risk - opt) <= risk_tol * max(1.0, abs(opt))
        critical = (grad_norm <= grad_tol) | refined_mask
        saddle = critical & (n_negative > 0)
        local_min = critical & (n_negative == 0)

    out = np.full(n, "unconverged", dtype=object)
    # assign in reverse priority so that earlier rules overwrite later ones
    out[local_min] = "local_min"
    out[saddle] = "saddle"
    out[global_min] = "global_min"
    out[diverged] = "diverged"
    return out
