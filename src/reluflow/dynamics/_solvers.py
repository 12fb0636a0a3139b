"""Solvers behind one ``step`` contract (in the style of diffrax's ``AbstractSolver``).

The dynamics is ``theta' = -G(theta)`` (gradient flow) or ``theta <- theta - gamma_n G(theta)`` (GD). A solver
is a small stateless object with

``order``
    order of the solution it returns (GD and Euler 1, RK4 4, Dormand–Prince 5);
``error_order``
    order of its embedded error estimate (Dormand–Prince 4), or ``None`` when it has none; adaptive step-size
    controllers need one;
``init(fn, theta, risk, grad) -> state``
    per-trajectory solver state: ``None`` or a dict of arrays whose leading axis is the trajectory (the loop
    compacts it row by row together with ``theta``);
``step(fn, t, theta, h, grad, state) -> StepResult``
    one step of length ``h`` ``(A,)`` from ``theta`` ``(A, P)`` at times ``t`` ``(A,)``, where ``grad`` ``(A, P)``
    is ``G(theta)``, which the loop already has (it needs it for events and recording): first-stage evaluations
    are free. ``fn(theta (A, P)) -> (risk (A,), grad (A, P))`` is the problem's ``risk_and_grad``.

``StepResult`` holds the proposed ``theta``, the error estimate ``(A, P)`` (or ``None``), and the risk and
gradient at the proposed point when the solver evaluated them anyway (first same as last, Dormand–Prince's 7th
stage), else ``None`` and the loop evaluates them. The loop (``integrate``) owns events, checkpoints, step-size
control and compaction: adding a solver never touches it.

Memory. Each solver states how many ``(A, P)`` float64 arrays it holds (``memory_step``: at its peak, its result
included; ``memory_stages``: while one of its own gradient evaluations runs, whose memory the backend states;
``memory_result``: in the ``StepResult`` the loop keeps until the next step), counted from its code below;
``integrate_memory`` adds them to the loop's.

Arithmetic is elementwise in the trajectory axis: a row's result never depends on the other rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["SOLVERS", "AbstractSolver", "Dopri5", "Euler", "GradientDescent", "RK4", "StepResult"]

RiskAndGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class StepResult(NamedTuple):
    theta: np.ndarray
    error: np.ndarray | None
    risk: np.ndarray | None
    grad: np.ndarray | None
    state: dict[str, np.ndarray] | None


class AbstractSolver:
    """Base class of the solvers (see the module docstring for the contract)."""

    name: str = ""
    order: int = 1
    error_order: int | None = None
    # (A, P) arrays held (module docstring, "Memory"): theta - h G is a temporary and the result
    memory_step: int = 2
    memory_stages: int = 0
    memory_result: int = 1

    def init(self, fn: RiskAndGrad, theta: np.ndarray, risk: np.ndarray, grad: np.ndarray) -> Any:
        return None

    def step(self, fn: RiskAndGrad, t: np.ndarray, theta: np.ndarray, h: np.ndarray, grad: np.ndarray,
             state: Any) -> StepResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GradientDescent(AbstractSolver):
    """One GD update ``theta - h G(theta)`` with ``h = gamma_n`` from the schedule."""

    name = "gd"

    def step(self, fn, t, theta, h, grad, state):
        return StepResult(theta - h[:, None] * grad, None, None, None, state)


class Euler(AbstractSolver):
    """Explicit Euler for ``theta' = -G(theta)`` (the same arithmetic as a GD update of size ``h``)."""

    name = "euler"

    def step(self, fn, t, theta, h, grad, state):
        return StepResult(theta - h[:, None] * grad, None, None, None, state)


class RK4(AbstractSolver):
    """The classical 4-stage Runge–Kutta method."""

    name = "rk4"
    order = 4
    # k2..k4, the stage point and, for the update, 2 k2, the running sum and the scaled sum
    memory_step = 7
    memory_stages = 3

    def step(self, fn, t, theta, h, grad, state):
        hh = h[:, None]
        k1 = grad  # stages hold G = -f
        k2 = fn(theta - (0.5 * hh) * k1)[1]
        k3 = fn(theta - (0.5 * hh) * k2)[1]
        k4 = fn(theta - hh * k3)[1]
        new = theta - (hh / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return StepResult(new, None, None, None, state)


# Dormand & Prince (1980), RK5(4)7M: the 5th-order solution is propagated, the 4th-order one gives the error.
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# b5 - b4 (the 7th stage is the gradient at the new point: first same as last)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


class Dopri5(AbstractSolver):
    """Dormand–Prince 5(4) with an embedded error estimate; its last stage is ``G`` at the new point (FSAL),
    returned to the loop so that an accepted step costs 6 evaluations."""

    name = "dopri5"
    order = 5
    error_order = 4
    # k1..k6, the stage point and its increment; the error sum adds its running sum, a scaled stage and the new
    # sum: 11 at the peak; during the 7th evaluation k1..k5, the point and its increment
    memory_step = 11
    memory_stages = 7
    memory_result = 3

    def step(self, fn, t, theta, h, grad, state):
        hh = h[:, None]
        k = [grad]
        for i in range(1, 7):
            incr = _A[i][0] * k[0]
            for j in range(1, i):
                if _A[i][j] != 0.0:
                    incr = incr + _A[i][j] * k[j]
            y = theta - hh * incr
            risk, g = fn(y)
            k.append(g)
        # stage 7 was evaluated at y = the 5th-order solution
        err = _E[0] * k[0]
        for j in range(2, 7):
            err = err + _E[j] * k[j]
        return StepResult(y, -hh * err, risk, g, state)


SOLVERS: dict[str, type[AbstractSolver]] = {
    "gd": GradientDescent,
    "euler": Euler,
    "rk4": RK4,
    "dopri5": Dopri5,
}
