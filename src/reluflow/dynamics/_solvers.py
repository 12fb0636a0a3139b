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
``integrate_memory`` adds them to the loop's. A solver that holds ``(A, P, P)`` matrices (Rosenbrock) states them
in ``memory_matrices`` and the memory of its Jacobian in ``jacobian_memory(problem)``.

Problem. ``for_problem(problem) -> solver`` is the solver that runs on ``problem``; the loop calls it once before
the first step. Explicit solvers return themselves; a Rosenbrock solver, which also needs ``dG/dtheta`` (the
Jacobian of ``-G`` is ``-H``), takes the problem's closed-form Hessian there where it has one (``has_hessian``)
and otherwise central differences of ``fn``, so the step contract itself stays ``fn`` only.

Arithmetic is elementwise in the trajectory axis: a row's result never depends on the other rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..risk import Memory

__all__ = ["RODAS3", "RODAS4", "SOLVERS", "AbstractSolver", "Dopri5", "Euler", "GradientDescent", "RK4", "Rodas3",
           "Rodas4", "Rosenbrock", "StepResult", "fd_hessian"]

RiskAndGrad = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
Hessian = Callable[[np.ndarray], np.ndarray]


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
    # (A, P, P) arrays held at the step's peak (a Rosenbrock step's Hessian and its iteration matrix)
    memory_matrices: int = 0
    # gradients only: the loop may run a row a few steps past its stopping event and discard them (blocks of
    # steps, ``_integrate``); a linear solve on a stopped row's state (non-finite, a singular matrix) could raise
    explicit: bool = True
    # the step is ``theta - h G(theta)`` alone: the loop may take a block of them in one ``problem.gd_steps`` call
    gd_update: bool = False

    def for_problem(self, problem: Any) -> AbstractSolver:
        """The solver to run on ``problem`` (module docstring, "Problem"): explicit solvers need nothing more."""
        return self

    def jacobian_memory(self, problem: Any) -> Memory:
        """Upper estimate of the bytes one Jacobian evaluation holds, as a function of the batch (none here)."""
        return Memory()

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
    gd_update = True

    def step(self, fn, t, theta, h, grad, state):
        return StepResult(theta - h[:, None] * grad, None, None, None, state)


class Euler(AbstractSolver):
    """Explicit Euler for ``theta' = -G(theta)`` (the same arithmetic as a GD update of size ``h``)."""

    name = "euler"
    gd_update = True

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


# ----------------------------------------------------------------------------------------------- Rosenbrock
# Rosenbrock methods in the form of Hairer & Wanner (1996, §IV.7, eq. 7.4'): with W = I / (h gamma) - J, f = -G and
# J = df/dtheta = -H (the Hessian of L) at the step's start,
#     W K_i = f(theta + sum_{j<i} a_ij K_j) + sum_{j<i} (c_ij / h) K_j,
#     theta_new = theta + sum_i m_i K_i,      error = sum_i e_i K_i.
# A stage whose a_ij all vanish sits at theta and reuses f(theta) = -G, which the loop hands over.


class _RosenbrockTableau(NamedTuple):
    gamma: float
    a: tuple[tuple[float, ...], ...]  # strictly lower triangular, row i has i entries
    c: tuple[tuple[float, ...], ...]
    m: tuple[float, ...]
    e: tuple[float, ...]


# Rodas3: Sandu, Verwer, Blom, Spee, Carmichael & Potra (1997), "Benchmarking stiff ODE solvers for atmospheric
# chemistry problems II: Rosenbrock solvers", Atmos. Environ. 31(20), 3459-3472. 4 stages (2 new gradients),
# order 3, embedded order 2, L-stable, stiffly accurate (theta_new is the last stage point plus K_4, error K_4).
RODAS3 = _RosenbrockTableau(
    gamma=0.5,
    a=((), (0.0,), (2.0, 0.0), (2.0, 0.0, 1.0)),
    c=((), (4.0,), (1.0, -1.0), (1.0, -1.0, -8.0 / 3.0)),
    m=(2.0, 0.0, 1.0, 1.0),
    e=(0.0, 0.0, 0.0, 1.0),
)

# Rodas4: Hairer & Wanner (1996), §VI.4, Table 4.1 in the transformed variables of their code RODAS (coefficients
# to 16 digits as printed there). 6 stages (5 new gradients), order 4, embedded order 3, L-stable, stiffly
# accurate (theta_new = the 6th stage point plus K_6, error K_6).
_R4_A = (
    (),
    (1.544,),
    (0.9466785280815826, 0.2557011698983284),
    (3.314825187068521, 2.896124015972201, 0.9986419139977817),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950, 1.0),
)
RODAS4 = _RosenbrockTableau(
    gamma=0.25,
    a=_R4_A,
    c=(
        (),
        (-5.6688,),
        (-2.430093356833875, -0.2063599157091915),
        (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
        (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
        (8.083246795921522, -7.981132988064893, -31.52159432874371, 16.31930543123136, -6.058818238834054),
    ),
    m=(*_R4_A[5], 1.0),
    e=(0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
)


def _solve(w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``w^-1 b`` row by row: ``w`` ``(A, P, P)``, ``b`` ``(A, P)``; a singular row gives NaN (the controller
    rejects the step) instead of failing the whole batch."""
    try:
        return np.linalg.solve(w, b[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # LAPACK stops the whole stack at a singular row: solve row by row
        out = np.full(b.shape, np.nan)
        for i in range(len(b)):
            try:
                out[i] = np.linalg.solve(w[i], b[i])
            except np.linalg.LinAlgError:
                pass
        return out


def _safe_hessian(hessian: Hessian) -> Hessian:
    """``hessian`` that never sees a non-finite row (NaN there), like the loop's ``fn``."""

    def hess(theta: np.ndarray) -> np.ndarray:
        ok = np.isfinite(theta).all(axis=1)
        if ok.all():
            return np.asarray(hessian(theta), dtype=float)
        out = np.full((theta.shape[0], theta.shape[1], theta.shape[1]), np.nan)
        if ok.any():
            out[ok] = hessian(np.ascontiguousarray(theta[ok]))
        return out

    return hess


def fd_hessian(fn: RiskAndGrad, theta: np.ndarray) -> np.ndarray:
    """Symmetrized central differences of ``G`` ``(A, P, P)`` at ``theta`` ``(A, P)``: all ``2P`` perturbed
    points of every row in one ``(2 A P, P)`` batch; step ``cbrt(eps) max(1, |theta_j|)``, rounded so that the
    perturbed points carry exactly the step divided by (error ``~eps^(2/3)`` relative where ``G`` is smooth)."""
    n, p = theta.shape
    h = np.cbrt(np.finfo(np.float64).eps) * np.maximum(1.0, np.abs(theta))
    h = (theta + h) - theta  # (A, P)
    eye = np.eye(p)
    plus = theta[:, None, :] + h[:, :, None] * eye  # (A, P, P): row j is theta + h_j e_j
    minus = theta[:, None, :] - h[:, :, None] * eye
    g = fn(np.concatenate([plus, minus], axis=1).reshape(n * 2 * p, p))[1].reshape(n, 2, p, p)
    d = (g[:, 0] - g[:, 1]) / (2.0 * h[:, :, None])  # d[a, j, i] = dG_i / dtheta_j
    return 0.5 * (d + np.swapaxes(d, 1, 2))


class Rosenbrock(AbstractSolver):
    """A Rosenbrock method (linearly implicit, L-stable) given by its tableau, for stiff flows and long horizons.

    Each step solves ``(I + h gamma H(theta)) K_i = h gamma (...)`` for every row, one ``np.linalg.solve`` on the
    ``(A, P, P)`` stack per stage (``O(P^3)`` per trajectory and stage), with ``H`` the Hessian at the step's start:
    ``hessian`` ``(A, P) -> (A, P, P)`` if given, else the problem's closed form (``for_problem``), else central
    differences of ``G`` (``fd_hessian``: ``2P`` gradient evaluations per step). The exact Jacobian is part of the
    method: with an approximate one the order may drop (these are not W-methods), though the error estimate
    still controls the step.
    """

    tableau: _RosenbrockTableau
    # K_1..K_s, the stage point, f there and the right-hand side being built, the result and the error; the
    # matrices H and I + h gamma H, and solve's copy of one
    memory_result = 1
    memory_matrices = 3
    explicit = False

    def __init__(self, hessian: Hessian | None = None) -> None:
        self.hessian = hessian

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hessian={'given' if self.hessian is not None else 'central differences'})"

    def for_problem(self, problem: Any) -> Rosenbrock:
        if self.hessian is None and getattr(problem, "has_hessian", False):
            return type(self)(hessian=_safe_hessian(problem.hessian))
        return self

    def jacobian_memory(self, problem: Any) -> Memory:
        """The closed form's ``hessian_memory``, or the central differences' points, gradients and quotients
        (eight ``(P, P)`` per row) with the backend's evaluation of ``2P`` points per row."""
        if getattr(problem, "has_hessian", False):
            return problem.hessian_memory()
        if self.hessian is not None:
            return Memory()
        p = problem.n_params
        return Memory(0.0, 8 * 8 * p * p).plus(problem.memory().batched(2 * p))

    def step(self, fn, t, theta, h, grad, state):
        tab = self.tableau
        hess = self.hessian(theta) if self.hessian is not None else fd_hessian(fn, theta)
        hg = (h * tab.gamma)[:, None]
        # h gamma W = I + h gamma H: well conditioned where H >= 0, however long the step
        w = hess * hg[:, :, None]
        del hess
        diag = np.arange(theta.shape[1])
        w[:, diag, diag] += 1.0
        hh = h[:, None]
        k: list[np.ndarray] = []
        f = -grad
        for i in range(len(tab.m)):
            if any(tab.a[i]):
                y = theta
                for j, a in enumerate(tab.a[i]):
                    if a != 0.0:
                        y = y + a * k[j]
                f = -fn(y)[1]
            rhs = f
            for j, c in enumerate(tab.c[i]):
                if c != 0.0:
                    rhs = rhs + (c / hh) * k[j]
            k.append(_solve(w, hg * rhs))
        new, err = theta, None
        for m, e, ki in zip(tab.m, tab.e, k, strict=True):
            if m != 0.0:
                new = new + m * ki
            if e != 0.0:
                err = e * ki if err is None else err + e * ki
        return StepResult(new, err, None, None, state)


class Rodas3(Rosenbrock):
    """Rodas3 (``RODAS3``): 4 stages, 2 new gradients and one Hessian per step, order 3(2)."""

    name = "rodas3"
    tableau = RODAS3
    order = 3
    error_order = 2
    memory_step = 4 + 5
    memory_stages = 4


class Rodas4(Rosenbrock):
    """Rodas4 (``RODAS4``): 6 stages, 5 new gradients and one Hessian per step, order 4(3)."""

    name = "rodas4"
    tableau = RODAS4
    order = 4
    error_order = 3
    memory_step = 6 + 5
    memory_stages = 6


SOLVERS: dict[str, type[AbstractSolver]] = {
    "gd": GradientDescent,
    "euler": Euler,
    "rk4": RK4,
    "dopri5": Dopri5,
    "rodas3": Rodas3,
    "rodas4": Rodas4,
}
