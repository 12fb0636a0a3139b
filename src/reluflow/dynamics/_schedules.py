"""Step sizes: GD schedules and the step-size controllers of the integrate loop.

A controller tells the loop how long the next step of each live trajectory is (diffrax's
``stepsize_controller``):

- ``ScheduledStepSize(schedule)``: step ``n`` has length ``schedule(n)`` (GD: ``gamma_n``); the clock ``t`` is the
  sum of the step sizes taken.
- ``ConstantStepSize(dt)``: fixed-step gradient flow; ``t_n = n dt`` and the last step is shortened to end on
  ``t_end`` exactly.
- ``PIDController(rtol, atol, dt0)``: per-trajectory adaptive step from an embedded error estimate (an
  I-controller, Hairer–Nørsett–Wanner I, §II.4): each trajectory has its own ``h``, accepts or rejects its own
  step, and steps never run past ``t_end``.

Every controller works row by row on ``(A,)`` arrays, so a trajectory's step sequence never depends on the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ConstantSchedule",
    "ConstantStepSize",
    "PIDController",
    "PiecewiseSchedule",
    "PowerSchedule",
    "Schedule",
    "ScheduledStepSize",
]


# ---------------------------------------------------------------------------------------------- GD schedules
class Schedule:
    """A step-size schedule ``n -> gamma_n`` for the ``n``-th GD update (``n = 0, 1, ...``)."""

    def __call__(self, n: int) -> float:
        raise NotImplementedError

    def at(self, n: np.ndarray) -> np.ndarray:
        """``gamma_n`` for every entry of ``n`` ``(A,)``: the schedule once per distinct ``n`` (all live rows of a
        GD run share ``n``: they started together)."""
        uniq, inverse = np.unique(n, return_inverse=True)
        return np.array([self(int(k)) for k in uniq], dtype=float)[inverse]


@dataclass(frozen=True)
class ConstantSchedule(Schedule):
    """``gamma_n = step_size``."""

    step_size: float

    def __call__(self, n: int) -> float:
        return float(self.step_size)

    def at(self, n: np.ndarray) -> np.ndarray:
        # no np.unique per step: with few live rows it cost more than their gradients (SS2018's long runs)
        return np.full(np.shape(n), float(self.step_size))


@dataclass(frozen=True)
class PowerSchedule(Schedule):
    """``gamma_n = step_size * (n + 1) ** (-decay)``."""

    step_size: float
    decay: float

    def __call__(self, n: int) -> float:
        return float(self.step_size * (n + 1.0) ** (-self.decay))


@dataclass(frozen=True)
class PiecewiseSchedule(Schedule):
    """``gamma_n = values[i]`` for ``boundaries[i-1] <= n < boundaries[i]`` (``len(values) = len(boundaries)+1``)."""

    boundaries: tuple[int, ...]
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(
                f"piecewise schedule: {len(self.values)} values for {len(self.boundaries)} boundaries: expected "
                "len(values) = len(boundaries) + 1"
            )

    def __call__(self, n: int) -> float:
        i = int(np.searchsorted(np.asarray(self.boundaries), n, side="right"))
        return float(self.values[i])


# ---------------------------------------------------------------------------------------------- controllers
class StepSizeController:
    """Base class. ``adaptive`` controllers accept/reject steps from an error estimate; the others accept all.

    ``initial(n_rows) -> h (A,)`` is the per-row step-size state the loop keeps (only adaptive controllers use
    it); ``propose(h, n, t, t_end) -> (h_step (A,), t_next (A,))`` gives the next step of rows with step-size
    state ``h``, accepted-step counts ``n`` and times ``t``.
    """

    adaptive: bool = False

    def initial(self, n_rows: int) -> np.ndarray:
        return np.zeros(n_rows)

    def propose(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def propose_block(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float,
                      m: int) -> tuple[np.ndarray, np.ndarray]:
        """``m`` successive ``propose`` of a non-adaptive controller (every step accepted): ``(h_step (m, A), t_next
        (m, A))``, the same numbers as ``m`` calls."""
        h_s, t_s = np.empty((m, len(n))), np.empty((m, len(n)))
        for j in range(m):
            h_s[j], t_s[j] = self.propose(h, n + j, t, t_end)
            t = t_s[j]
        return h_s, t_s


@dataclass(frozen=True)
class ScheduledStepSize(StepSizeController):
    """GD: step ``n`` has length ``schedule(n)``; ``t`` accumulates the step sizes."""

    schedule: Schedule

    def propose(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        h = self.schedule.at(n)
        return h, t + h

    def propose_block(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float,
                      m: int) -> tuple[np.ndarray, np.ndarray]:
        h_s = self.schedule.at((n[None, :] + np.arange(m)[:, None]).ravel()).reshape(m, len(n))
        # add.accumulate adds in order along the steps: t_next[j] = t_next[j - 1] + h[j], as step by step
        return h_s, np.add.accumulate(np.concatenate([t[None], h_s]), axis=0)[1:]


@dataclass(frozen=True)
class ConstantStepSize(StepSizeController):
    """Fixed step ``dt``: ``t_n = min(n dt, t_end)``, so the grid never accumulates round-off."""

    dt: float

    def propose(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        t_next = np.minimum((n + 1) * self.dt, t_end)
        # land exactly on t_end when the remaining interval is (up to round-off) one step
        t_next = np.where(t_end - t_next <= 1e-9 * self.dt, t_end, t_next)
        return t_next - t, t_next

    def n_steps(self, t_end: float) -> int:
        """Steps needed to reach ``t_end``."""
        return max(1, int(np.ceil(t_end / self.dt - 1e-9)))


@dataclass(frozen=True)
class PIDController(StepSizeController):
    """Per-trajectory I-controller.

    The error of a step is the RMS norm ``sqrt(mean_i (e_i / (atol + rtol max(|y_i|, |y_new_i|)))^2)``; a step
    is accepted when it is ``<= 1``. The next step is ``h * clip(safety * err^(-1/(q+1)), min_factor,
    max_factor)`` with ``q`` the order of the error estimate, and at most ``h`` after a rejection. A non-finite
    error counts as a rejection with the smallest factor.
    """

    rtol: float
    atol: float
    dt0: float
    safety: float = 0.9
    min_factor: float = 0.2
    max_factor: float = 10.0
    adaptive: bool = True

    def initial(self, n_rows: int) -> np.ndarray:
        return np.full(n_rows, float(self.dt0))

    def propose(self, h: np.ndarray, n: np.ndarray, t: np.ndarray, t_end: float) -> tuple[np.ndarray, np.ndarray]:
        remaining = t_end - t
        last = h >= remaining
        h = np.where(last, remaining, h)
        return h, np.where(last, t_end, t + h)

    def error_norm(self, error: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> np.ndarray:
        """Scaled RMS norm ``(A,)`` of ``error`` ``(A, P)``."""
        with np.errstate(all="ignore"):
            scale = self.atol + self.rtol * np.maximum(np.abs(y0), np.abs(y1))
            r = error / scale
            return np.sqrt(np.mean(r * r, axis=1))

    def adapt(self, h: np.ndarray, err: np.ndarray, error_order: int) -> tuple[np.ndarray, np.ndarray]:
        """``(accept (A,) bool, h_next (A,))`` from the step sizes tried and their error norms."""
        finite = np.isfinite(err)
        accept = finite & (err <= 1.0)
        with np.errstate(all="ignore"):
            factor = self.safety * err ** (-1.0 / (error_order + 1))
        factor = np.where(err == 0, self.max_factor, factor)
        factor = np.where(finite, factor, self.min_factor)
        factor = np.clip(factor, self.min_factor, self.max_factor)
        factor = np.where(accept, factor, np.minimum(factor, 1.0))
        return accept, h * factor
