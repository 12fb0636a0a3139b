"""Stopping events of the integrate loop, checked row by row at every accepted state (the start included).

In order of precedence (the first that holds names the status):

``nonfinite``  a NaN or inf in ``L``, ``G`` or ``theta``;
``diverged``   ``|theta| >= norm_bound``;
``zero_risk``  ``L <= risk_tol``;
``critical``   ``|G| <= grad_tol``;
``budget``     ``t >= t_end`` (GF), ``n_steps`` updates done (GD), or ``max_steps`` step attempts (accepted plus
               rejected) used.

``certified``  (set by the loop, not here, and only with ``integrate(..., certify=...)``): a certified-stopping
               check proved that the dynamics from the current point converges to a certified minimum
               (docs/analysis.md, "Certified early stopping"); the final state is then that limit.

``running`` marks a trajectory that has not stopped (never in a finished table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["STATUSES", "Stop", "check_events"]

STATUSES = ("running", "nonfinite", "diverged", "zero_risk", "critical", "budget", "certified")
RUNNING, NONFINITE, DIVERGED, ZERO_RISK, CRITICAL, BUDGET, CERTIFIED = range(len(STATUSES))


@dataclass(frozen=True)
class Stop:
    """When a trajectory stops. ``t_end`` bounds the clock, ``n_steps`` the accepted steps, ``max_steps`` the step
    attempts; ``None`` means no bound of that kind (at least one must be given)."""

    risk_tol: float = 1e-12
    grad_tol: float = 1e-10
    norm_bound: float = 1e8
    t_end: float | None = None
    n_steps: int | None = None
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.t_end is None and self.n_steps is None and self.max_steps is None:
            raise ValueError("Stop needs a budget: give t_end, n_steps or max_steps")


def check_events(
    stop: Stop,
    finite: np.ndarray,
    risk: np.ndarray,
    grad_norm: np.ndarray,
    param_norm: np.ndarray,
    t: np.ndarray,
    n: np.ndarray,
    attempts: np.ndarray,
) -> np.ndarray:
    """Status codes ``(A,)`` int8 (``RUNNING`` = 0 where no event holds).

    ``finite`` ``(A,)`` bool: every entry of the row of ``theta``, ``L`` and ``G`` is finite; ``risk``,
    ``grad_norm``, ``param_norm``, ``t`` ``(A,)``; ``n`` accepted steps and ``attempts`` (accepted + rejected)
    ``(A,)``.
    """
    status = np.zeros(len(risk), dtype=np.int8)
    budget = np.zeros(len(risk), dtype=bool)
    if stop.t_end is not None:
        budget |= t >= stop.t_end
    if stop.n_steps is not None:
        budget |= n >= stop.n_steps
    if stop.max_steps is not None:
        budget |= attempts >= stop.max_steps
    # assign from the lowest precedence up, so the highest one wins
    status[budget] = BUDGET
    with np.errstate(invalid="ignore"):
        status[grad_norm <= stop.grad_tol] = CRITICAL
        status[risk <= stop.risk_tol] = ZERO_RISK
        status[param_norm >= stop.norm_bound] = DIVERGED
    status[~finite] = NONFINITE
    return status
