"""Certified early stopping: where gradient descent (or gradient flow) provably goes from a point.

``certified_gd_limit(problem, theta, step_size)`` decides, per row of ``theta``, whether GD with that step (GF when
``step_size`` is ``None``) started *exactly* at that row converges to a certified local minimum ``theta*``, and
returns the limit's risk (an enclosure) and class. The theorem and the quantities it needs are in
docs/analysis.md, "Certified early stopping". Implemented for the ``gaussian`` backend with a fixed output layer
(SS2018's setting); other problems are refused with reason ``unsupported_backend``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._certify import certify_available

__all__ = ["GD_LIMIT_COLUMNS", "GD_LIMIT_REASONS", "certified_gd_limit"]

GD_LIMIT_COLUMNS = ("limit_certified", "limit_reason", "limit_class", "limit_risk_low", "limit_risk_high",
                    "limit_distance", "limit_r2", "limit_ball", "limit_mu", "limit_lambda", "limit_mu_float",
                    "limit_rate",
                    "limit_detail", "limit_theta")
GD_LIMIT_REASONS = {
    "not_convex": "the (float) Hessian at the point is not positive definite, or the eigenvalue lower bound over "
                  "the ball that holds the point and the minimum is not positive: the point may be too far out",
    "step_too_large": "step_size times the upper bound of the largest Hessian eigenvalue on the ball is >= 2",
    "unsupported_backend": "certified limits are implemented for the gaussian backend with a fixed output layer",
    "unavailable": "python-flint (ball arithmetic) is not installed",
}


def why_not(problem: Any) -> str | None:
    """Why ``certified_gd_limit`` does not apply to ``problem`` (``None`` when it does)."""
    if getattr(problem, "backend_name", None) != "gaussian":
        return (f"certified limits need the gaussian backend; this problem uses "
                f"{getattr(problem, 'backend_name', type(problem).__name__)!r}")
    from ._certify_gaussian import why_unsupported

    return why_unsupported(problem)


def certified_gd_limit(
    problem: Any,
    theta: np.ndarray,
    step_size: float | None,
    *,
    max_radius: float = 1e-4,
    newton_iters: int = 30,
    prec: int = 192,
) -> dict[str, np.ndarray]:
    """Per row of ``theta`` ``(T, P)``: does GD with ``step_size`` (GF if ``None``) from that point converge to a
    certified minimum, and what is the limit?

    Returns ``(T,)`` columns (``limit_theta`` is ``(T, P)``):

    - ``limit_certified`` (bool); ``limit_reason`` ``""`` when certified, else a key of ``GD_LIMIT_REASONS`` or of
      ``CERTIFY_REASONS`` (why the Newton limit was not certified); ``limit_detail`` a sentence with the numbers;
    - ``limit_class``: ``"min"`` when certified (the limit is a certified strict local minimum), else ``"none"``;
    - ``limit_risk_low`` / ``limit_risk_high``: an enclosure of ``L(theta*)``;
    - ``limit_theta``: a float point within ``max_radius`` (the certificate's radius, far smaller in practice) of
      ``theta*`` (``limit_r2`` bounds ``|theta* - limit_theta|_2``); ``limit_distance`` an upper bound of
      ``|theta - theta*|_2``;
    - ``limit_mu`` / ``limit_lambda``: bounds ``mu <= lambda_min``, ``lambda_max <= Lambda`` of the Hessian over
      the ball of the theorem (radius ``limit_ball`` about ``limit_theta``), also where that ``mu`` is not
      positive; ``limit_mu_float`` the float smallest eigenvalue at the point (a hint, not a bound);
      ``limit_rate`` the certified contraction factor per GD step
      ``max(|1 - step mu|, |1 - step Lambda|)`` (NaN for GF, whose rate is ``exp(-mu t)``).

    What is certified is the exact dynamics from the float point ``theta``; floating-point GD differs from it by
    rounding (docs/analysis.md says what that means).
    """
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != problem.n_params:
        raise ValueError(f"theta has shape {theta.shape}: expected (T, {problem.n_params})")
    if step_size is not None and not (np.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size = {step_size!r}: expected a positive number or None (gradient flow)")
    n = theta.shape[0]
    out: dict[str, np.ndarray] = {
        "limit_certified": np.zeros(n, dtype=bool),
        "limit_reason": np.full(n, "", dtype=object),
        "limit_class": np.full(n, "none", dtype=object),
        "limit_detail": np.full(n, "", dtype=object),
        "limit_theta": np.full(theta.shape, np.nan),
    }
    for key in ("limit_risk_low", "limit_risk_high", "limit_distance", "limit_r2", "limit_ball", "limit_mu",
                "limit_lambda", "limit_mu_float", "limit_rate"):
        out[key] = np.full(n, np.nan)
    why = why_not(problem)
    if why is not None:
        out["limit_reason"][:] = "unsupported_backend"
        out["limit_detail"][:] = why
        return out
    if not certify_available():
        out["limit_reason"][:] = "unavailable"
        out["limit_detail"][:] = GD_LIMIT_REASONS["unavailable"]
        return out
    from flint import arb, arb_mat, ctx

    from ._certify_gaussian import GaussianModel, gd_limit_row

    old = ctx.prec
    ctx.prec = int(prec)
    try:
        model = GaussianModel(problem)
        model.balls(arb, arb_mat)
        for i in range(n):
            res = gd_limit_row(model, theta[i], step_size, max_radius=max_radius, newton_iters=newton_iters,
                               arb=arb, arb_mat=arb_mat)
            for key, value in res.items():
                out[key][i] = value
    finally:
        ctx.prec = old
    return out
