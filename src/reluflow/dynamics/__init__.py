"""Dynamics: initializations, GD and GF solvers behind one ``step`` contract, and the ``integrate`` loop.

See ``docs/methods.md`` for the ``method`` and ``init`` dicts and the tables ``reluflow.simulate`` returns.
"""

from ._events import STATUSES, Stop, check_events
from ._init import DEFAULT_INIT, INIT_KEYS, global_min_center, init_from_dict, initialize
from ._integrate import CertifiedStop, Record, Solution, checkpoint_grid, integrate, integrate_memory
from ._method import METHOD_KEYS, Method, method_from_dict
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
from ._solvers import (
    RK4,
    SOLVERS,
    AbstractSolver,
    Dopri5,
    Euler,
    GradientDescent,
    Rodas3,
    Rodas4,
    Rosenbrock,
    StepResult,
)

__all__ = [
    "CertifiedStop", "DEFAULT_INIT", "INIT_KEYS", "METHOD_KEYS", "RK4", "SOLVERS", "STATUSES", "AbstractSolver",
    "ConstantSchedule",
    "ConstantStepSize", "Dopri5", "Euler", "GradientDescent", "Method", "PIDController", "PiecewiseSchedule",
    "PowerSchedule", "Record", "Rodas3", "Rodas4", "Rosenbrock", "Schedule", "ScheduledStepSize", "Solution",
    "StepResult", "StepSizeController", "Stop", "check_events", "checkpoint_grid", "global_min_center",
    "init_from_dict", "initialize", "integrate", "integrate_memory", "method_from_dict"
]
