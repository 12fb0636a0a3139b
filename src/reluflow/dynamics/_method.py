"""The ``method`` dict of a study: validation, defaults, and the solver/controller/stop it stands for.

A flat mapping (documented in ``docs/methods.md``)::

    kind: gd | gf
    # gd
    step_size, schedule: constant | power | piecewise, decay, boundaries, values, n_steps
    # gf
    solver: euler | rk4 | dopri5 | rodas3 | rodas4, t_end, dt, rtol, atol, max_steps
    # both
    risk_tol, grad_tol, norm_bound, n_checkpoints, refine: auto | true | false
    certified_stop: true | false, certify_every, certify_below     (gd with a constant step, or gf)

Keys that do not apply to the chosen kind, schedule or solver are errors rather than silently ignored, so that a
typo or a misplaced grid parameter never runs a different experiment than the one written down.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._limits import LIMITS
from ._events import Stop
from ._integrate import Record, checkpoint_grid
from ._schedules import (
    ConstantSchedule,
    ConstantStepSize,
    PIDController,
    PiecewiseSchedule,
    PowerSchedule,
    Schedule,
    ScheduledStepSize,
    StepSizeController,
)
from ._solvers import SOLVERS, AbstractSolver

__all__ = ["METHOD_KEYS", "Method", "method_from_dict"]

COMMON_KEYS = {"kind", "risk_tol", "grad_tol", "norm_bound", "n_checkpoints", "refine", "certified_stop",
               "certify_every", "certify_below"}
CERTIFY_KEYS = ("certify_every", "certify_below")
GD_KEYS = {"step_size", "schedule", "decay", "boundaries", "values", "n_steps"}
GF_KEYS = {"solver", "t_end", "dt", "rtol", "atol", "max_steps"}
METHOD_KEYS = COMMON_KEYS | GD_KEYS | GF_KEYS
SCHEDULES = ("constant", "power", "piecewise")
GF_SOLVERS = ("euler", "rk4", "dopri5", "rodas3", "rodas4")
# solvers with an embedded error estimate: they run under the adaptive controller (rtol, atol)
ADAPTIVE_SOLVERS = ("dopri5", "rodas3", "rodas4")

DEFAULTS: dict[str, Any] = {
    "risk_tol": 1e-12, "grad_tol": 1e-10, "norm_bound": 1e8, "n_checkpoints": 50, "refine": "auto",
    # gd
    "step_size": 0.01, "schedule": "constant", "n_steps": 1000, "decay": 0.5,
    # gf
    "solver": "dopri5", "t_end": 100.0, "dt": 0.01, "rtol": 1e-6, "atol": 1e-9, "max_steps": 100_000,
    # certified early stopping (docs/methods.md): check every certify_every steps, rows with |G| <= certify_below
    "certified_stop": False, "certify_every": 1000, "certify_below": 1e-4,
}
# P at or below which ``refine: auto`` refines endpoints (the Hessian costs O(P) gradient evaluations)
REFINE_AUTO_MAX_P = 500


def _err(key: str, value: Any, allowed: str) -> ValueError:
    if isinstance(value, str):  # a quoted number: say why it is not one
        allowed += " (a number is written unquoted: this is text)"
    return ValueError(f"method.{key} = {value!r} is not allowed: expected {allowed}")


def _number(d: dict, key: str, *, positive: bool = True, allow_inf: bool = False, nonneg: bool = False) -> float:
    value = d.get(key, DEFAULTS.get(key))
    what = "a number > 0" if positive and not nonneg else "a number >= 0"
    if allow_inf:
        what += " (or .inf)"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _err(key, value, what)
    try:
        v = float(value)
    except OverflowError:  # an integer beyond any float
        raise _err(key, value, what) from None
    if math.isnan(v) or (math.isinf(v) and not allow_inf) or (v < 0 if nonneg else v <= 0):
        raise _err(key, value, what)
    return v


def _integer(d: dict, key: str, minimum: int, limit: str | None = None) -> int:
    """``d[key]``, an integer >= ``minimum`` and at most ``LIMITS[limit]``."""
    value = d.get(key, DEFAULTS.get(key))
    maximum = None if limit is None else LIMITS[limit]
    what = f"an integer >= {minimum}" if limit is None else \
        f"an integer >= {minimum} and <= {maximum} (LIMITS[{limit!r}], docs/running.md)"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating) \
            or (not isinstance(value, int | np.integer) and not float(value).is_integer()) or value < minimum \
            or (maximum is not None and value > maximum):
        raise _err(key, value, what)
    return int(value)


@dataclass(frozen=True)
class Method:
    """A validated method with its defaults filled in (``method_from_dict``); keys that do not apply are None."""

    kind: str
    risk_tol: float
    grad_tol: float
    norm_bound: float
    n_checkpoints: int
    refine: bool | str
    certified_stop: bool | None = None  # None when off, so that existing methods normalize as before
    certify_every: int | None = None
    certify_below: float | None = None
    step_size: float | None = None
    schedule: str | None = None
    decay: float | None = None
    boundaries: tuple[int, ...] | None = None
    values: tuple[float, ...] | None = None
    n_steps: int | None = None
    solver: str | None = None
    t_end: float | None = None
    dt: float | None = None
    rtol: float | None = None
    atol: float | None = None
    max_steps: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The normalized flat dict (only the keys that apply)."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        for k in ("boundaries", "values"):
            if k in d:
                d[k] = list(d[k])
        return d

    # ---------------------------------------------------------------- what the method stands for
    def refine_enabled(self, n_params: int) -> bool:
        """Whether endpoints are refined for a problem with ``n_params`` parameters."""
        return n_params <= REFINE_AUTO_MAX_P if self.refine == "auto" else bool(self.refine)

    def schedule_fn(self) -> Schedule:
        if self.schedule == "power":
            return PowerSchedule(self.step_size, self.decay)
        if self.schedule == "piecewise":
            return PiecewiseSchedule(self.boundaries, self.values)
        return ConstantSchedule(self.step_size)

    def make_solver(self) -> AbstractSolver:
        return SOLVERS["gd" if self.kind == "gd" else self.solver]()

    def make_controller(self) -> StepSizeController:
        if self.kind == "gd":
            return ScheduledStepSize(self.schedule_fn())
        if self.solver in ADAPTIVE_SOLVERS:
            return PIDController(rtol=self.rtol, atol=self.atol, dt0=self.dt)
        return ConstantStepSize(self.dt)

    def certified_step(self) -> float | None:
        """The step size the certified-stopping theorem is applied with: GD's constant step; ``None`` (gradient
        flow) for GF, whose exact flow is what a certificate speaks of."""
        return self.step_size if self.kind == "gd" else None

    def make_stop(self) -> Stop:
        common = {"risk_tol": self.risk_tol, "grad_tol": self.grad_tol, "norm_bound": self.norm_bound}
        if self.kind == "gd":
            return Stop(**common, n_steps=self.n_steps)
        return Stop(**common, t_end=self.t_end, max_steps=self.max_steps)

    def make_record(self) -> Record:
        if self.kind == "gd":
            grid = checkpoint_grid(self.n_checkpoints, float(self.n_steps), 1.0, integer=True)
            return Record(grid, on="step")
        return Record(checkpoint_grid(self.n_checkpoints, self.t_end, self.dt), on="t")


def method_from_dict(d: dict[str, Any]) -> Method:
    """Validate a method dict and fill in its defaults; every bad key or value raises ``ValueError`` naming it."""
    if not isinstance(d, dict):
        raise ValueError(f"method = {d!r} is not allowed: expected a mapping with 'kind: gd' or 'kind: gf'")
    unknown = sorted(set(d) - METHOD_KEYS, key=str)
    if unknown:
        raise ValueError(f"method has unknown key(s) {unknown}: allowed keys are {sorted(METHOD_KEYS)}")
    kind = d.get("kind")
    if kind not in ("gd", "gf"):
        raise _err("kind", kind, "'gd' (gradient descent) or 'gf' (gradient flow)")
    other = GF_KEYS if kind == "gd" else GD_KEYS
    misplaced = sorted(set(d) & other)
    if misplaced:
        raise _err(misplaced[0], d[misplaced[0]], f"no {misplaced[0]!r} with kind {kind!r}: keys for kind "
                   f"{kind!r} are {sorted(COMMON_KEYS | (GD_KEYS if kind == 'gd' else GF_KEYS))}")
    refine = d.get("refine", DEFAULTS["refine"])
    if refine not in ("auto", True, False) or (not isinstance(refine, bool) and refine != "auto"):
        raise _err("refine", refine, "'auto', true or false")
    certified = d.get("certified_stop", DEFAULTS["certified_stop"])
    if not isinstance(certified, bool):
        raise _err("certified_stop", certified, "true or false")
    for key in CERTIFY_KEYS:
        if key in d and not certified:
            raise _err(key, d[key], f"no {key!r} without 'certified_stop: true'")
    if certified and kind == "gd" and d.get("schedule", DEFAULTS["schedule"]) != "constant":
        raise _err("certified_stop", certified, "false with a non-constant schedule: the certificate proves where GD "
                   "with one fixed step goes (docs/analysis.md, 'Certified early stopping')")
    common = {
        "kind": kind,
        "risk_tol": _number(d, "risk_tol", nonneg=True),
        "grad_tol": _number(d, "grad_tol", nonneg=True),
        "norm_bound": _number(d, "norm_bound", allow_inf=True),
        "n_checkpoints": _integer(d, "n_checkpoints", 2, "n_checkpoints"),
        "refine": refine,
        "certified_stop": True if certified else None,
    }
    if certified:
        common["certify_every"] = _integer(d, "certify_every", 1, "n_steps")
        common["certify_below"] = _number(d, "certify_below")
    if kind == "gd":
        return Method(**common, **_gd(d))
    return Method(**common, **_gf(d))


def _gd(d: dict[str, Any]) -> dict[str, Any]:
    schedule = d.get("schedule", DEFAULTS["schedule"])
    if schedule not in SCHEDULES:
        raise _err("schedule", schedule, f"one of {list(SCHEDULES)}")
    out: dict[str, Any] = {"schedule": schedule, "n_steps": _integer(d, "n_steps", 1, "n_steps")}
    wrong = {"constant": ("decay", "boundaries", "values"), "power": ("boundaries", "values"),
             "piecewise": ("step_size", "decay")}[schedule]
    for key in wrong:
        if key in d:
            raise _err(key, d[key], f"no {key!r} with schedule {schedule!r} (see docs/methods.md)")
    if schedule in ("constant", "power"):
        out["step_size"] = _number(d, "step_size")
    if schedule == "power":
        out["decay"] = _number(d, "decay", nonneg=True)
    if schedule == "piecewise":
        for key in ("boundaries", "values"):
            if key not in d:
                raise ValueError(f"method.{key} is missing: schedule 'piecewise' needs boundaries and values")
        b, v = d["boundaries"], d["values"]
        if not isinstance(b, list | tuple) or not all(
            isinstance(x, int | float) and not isinstance(x, bool) and float(x).is_integer() and x >= 1 for x in b
        ) or any(b2 <= b1 for b1, b2 in zip(b[:-1], b[1:], strict=True)):
            raise _err("boundaries", b, "a list of strictly increasing step indices >= 1")
        if not isinstance(v, list | tuple) or len(v) != len(b) + 1:
            raise _err("values", v, f"a list of len(boundaries) + 1 = {len(b) + 1} step sizes > 0")
        for i, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x <= 0:
                raise _err(f"values[{i}]", x, "a finite step size > 0")
        out["boundaries"] = tuple(int(x) for x in b)
        out["values"] = tuple(float(x) for x in v)
    return out


def _gf(d: dict[str, Any]) -> dict[str, Any]:
    solver = d.get("solver", DEFAULTS["solver"])
    if solver not in GF_SOLVERS:
        raise _err("solver", solver, f"one of {list(GF_SOLVERS)}")
    out: dict[str, Any] = {"solver": solver, "t_end": _number(d, "t_end"), "dt": _number(d, "dt")}
    if solver in ADAPTIVE_SOLVERS:
        out["rtol"] = _number(d, "rtol")
        out["atol"] = _number(d, "atol", nonneg=True)
        out["max_steps"] = _integer(d, "max_steps", 1, "n_steps")
    else:
        for key in ("rtol", "atol"):
            if key in d:
                raise _err(key, d[key], f"no {key!r} with the fixed-step solver {solver!r} (only the adaptive solvers "
                           f"{list(ADAPTIVE_SOLVERS)} take tolerances)")
        # fixed step: no cap beyond the steps t_end / dt needs, unless one is given
        out["max_steps"] = _integer(d, "max_steps", 1, "n_steps") if "max_steps" in d else None
        if out["max_steps"] is None and out["t_end"] / out["dt"] > LIMITS["n_steps"]:
            raise _err("dt", d.get("dt", DEFAULTS["dt"]),
                       f"dt >= t_end / {LIMITS['n_steps']} = {out['t_end'] / LIMITS['n_steps']:.3g}: t_end / dt = "
                       f"{out['t_end'] / out['dt']:.3g} steps is over the limit of {LIMITS['n_steps']} steps "
                       "(LIMITS['n_steps'], docs/running.md; or cap them with max_steps)")
    return out
