"""The risk-backend contract shared by every backend.

A backend evaluates, for a batch of parameter vectors ``theta`` ``(T, P)``:

- ``risk_and_grad(theta) -> (risk (T,), grad (T, P))``: ``L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)`` and the
  generalized gradient ``G`` of SCIENCE.md §3 (backpropagation with ``relu'(0) := 0``);
- ``risk(theta) -> (T,)``;
- ``dead_neurons(theta) -> (T,)`` int64: hidden units whose active region has input-measure zero;
- optionally ``hessian(theta) -> (T, P, P)``: a closed-form Hessian of ``L`` (``has_hessian``);
- ``memory() -> Memory``: an upper estimate of the bytes one ``risk_and_grad`` or ``risk`` call holds at its peak,
  as a function of the batch size (``Memory``); ``dead_memory()`` and ``hessian_memory()`` likewise for
  ``dead_neurons`` and ``hessian``, ``kept_memory()`` (``hessian_kept_memory()``) for the buffers a backend keeps
  between calls.

Rows never interact: row ``i`` of every output depends only on row ``i`` of ``theta`` and is bitwise the same
whatever batch it is evaluated in. Kernels are pure numpy (exact1d's optional compiled kernel aside, which gives
the numpy kernel's bits): no files, no global random state.
"""

from __future__ import annotations

import functools
import importlib
import math
import sys
import warnings
from importlib.util import find_spec
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..network import Architecture

DTYPES = {"float64": np.float64, "float32": np.float32}


class Memory(NamedTuple):
    """An upper estimate of the bytes a computation holds at its peak, as a function of its batch size ``n``
    (trajectories, or rows of ``theta``)::

        bytes(n) = fixed + per_trajectory * n + sum(per_row * min(n, rows) for per_row, rows in chunked)
                   + max(phase.bytes(n) for phase in phases)

    ``fixed`` does not depend on the batch (point sets, buffers of a set size); ``per_trajectory`` grows with
    every trajectory (parameters, gradients, solver stages, Hessians, table rows); each ``(per_row, rows)`` of
    ``chunked`` is the working memory of a loop over chunks of at most ``rows`` trajectories, which grows with the
    batch only up to one chunk. These are held throughout; ``phases`` are held one after the other, so only the
    largest counts. Counted: the arrays and Python objects the computation allocates, its results included (what
    ``tracemalloc`` sees); not counted: the interpreter, imported modules and compiled code, the caller's inputs.
    """

    fixed: float = 0.0
    per_trajectory: float = 0.0
    chunked: tuple[tuple[float, float], ...] = ()
    phases: tuple[Memory, ...] = ()

    def bytes(self, n: int) -> int:
        """The estimate for a batch of ``n`` trajectories."""
        return math.ceil(self._value(n))

    def _value(self, n: float) -> float:
        own = self.fixed + self.per_trajectory * n + sum(b * min(n, r) for b, r in self.chunked)
        return own + max((p._value(n) for p in self.phases), default=0.0)

    def growth(self) -> float:
        """Bytes per trajectory once every chunk is full: the slope of ``bytes`` for large batches."""
        return self.per_trajectory + max((p.growth() for p in self.phases), default=0.0)

    def _rows(self) -> float:
        """The largest finite chunk: beyond it the estimate grows by ``growth()`` per trajectory."""
        finite = [r for _, r in self.chunked if math.isfinite(r)]
        return max([*finite, *(p._rows() for p in self.phases)], default=0.0)

    def max_trajectories(self, budget: float) -> int:
        """The largest batch whose estimate fits in ``budget`` bytes: 0 if not even one trajectory fits,
        ``sys.maxsize`` if the estimate stops growing below the budget."""
        if self.bytes(1) > budget:
            return 0
        if self.growth() <= 0 and self.bytes(math.ceil(self._rows()) + 1) <= budget:
            return sys.maxsize
        lo, hi = 1, 2
        while self.bytes(hi) <= budget:
            lo, hi = hi, 2 * hi
        while hi - lo > 1:  # bytes(lo) <= budget < bytes(hi); the estimate grows with n
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.bytes(mid) <= budget else (lo, mid)
        return lo

    def plus(self, *others: Memory) -> Memory:
        """Held at the same time: the sum (phases combine pairwise: the largest of a sum of maxima)."""
        out = self
        for o in others:
            if out.phases and o.phases:
                phases = tuple(a.plus(b) for a in out.phases for b in o.phases)
            else:
                phases = out.phases or o.phases
            out = Memory(out.fixed + o.fixed, out.per_trajectory + o.per_trajectory, out.chunked + o.chunked,
                         phases)
        return out._merged()

    def max(self, *others: Memory) -> Memory:
        """Held one after the other: the larger at every batch size."""
        phases: list[Memory] = []
        for m in (self, *others):
            if m.phases and not (m.fixed or m.per_trajectory or m.chunked):
                phases.extend(m.phases)
            else:
                phases.append(m)
        return Memory(phases=tuple(phases))

    def batched(self, rows: float, max_trajectories: float = math.inf) -> Memory:
        """The memory of this computation run on ``rows`` rows per trajectory of a batch that is cut into
        chunks of at most ``max_trajectories`` trajectories (a Hessian evaluates ``G`` at ``2 P`` points per
        trajectory, in chunks of a set size)."""
        cap = max_trajectories
        chunked = tuple((b * rows, min(r / rows, cap)) for b, r in self.chunked)
        phases = tuple(p.batched(rows, cap) for p in self.phases)
        if math.isinf(cap):
            return Memory(self.fixed, self.per_trajectory * rows, chunked, phases)
        return Memory(self.fixed, 0.0, ((self.per_trajectory * rows, cap), *chunked), phases)._merged()

    def _merged(self) -> Memory:
        chunks: dict[float, float] = {}
        for b, r in self.chunked:
            if b > 0:
                chunks[r] = chunks.get(r, 0.0) + b
        return self._replace(chunked=tuple((b, r) for r, b in chunks.items()))


class StepStats(NamedTuple):
    """What the integrate loop reads from each state of a ``RiskBackend.gd_steps`` block, ``(m, T)`` each, where
    the backend's compiled call computes it beside the steps (bit for bit what the loop would compute from the
    states: ``dynamics._integrate``'s ``_row_norm``, ``np.isfinite`` and ``network.unit_norms``)."""

    param_norm: np.ndarray  # |theta|
    grad_norm: np.ndarray  # |G|
    finite: np.ndarray  # bool: every parameter, the risk and every gradient entry finite
    unit_min: np.ndarray  # min over the first hidden layer of network.unit_norms (|w_j| + |b_j|; NaN if any is)


class MeasureLike(Protocol):
    """What the backends read of an input measure (``reluflow.problem``'s measures have it).

    ``reluflow.problem`` builds problems and chooses their backend, so the backends do not import it: they read
    measures and targets by these attributes alone (and ``sigma`` of a measure of kind ``"gaussian"``).
    """

    dim: int
    kind: str

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Points ``(n, dim)`` and weights ``(n,)``."""

    def density_pieces(self) -> tuple[np.ndarray, np.ndarray] | None:
        """A 1D piecewise polynomial density's knots and coefficients, else ``None``."""


class TargetLike(Protocol):
    """What the backends read of a target (``reluflow.problem``'s targets have it)."""

    input_dim: int | None
    output_dim: int
    #: a teacher's network (``first_layer()`` and ``output_layer()`` give its parameters), else ``None``
    arch: Architecture | None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``f(x)`` ``(n, output_dim)`` for ``x`` ``(n, input_dim)``."""

    def piecewise_polynomial(self) -> Any:
        """The target as 1D pieces (``breakpoints``, ``coefficients``), else ``None``."""


class RiskBackend:
    """Base class; subclasses implement ``_evaluate`` and ``dead_neurons``."""

    name: ClassVar[str] = ""

    def __init__(
        self,
        arch: Architecture,
        measure: MeasureLike,
        target: TargetLike,
        *,
        dtype: Any = np.float64,
        n_points: int = 1024,
        rng: np.random.Generator | None = None,
    ) -> None:
        reason = self.why_not(arch, measure, target)
        if reason is not None:
            raise ValueError(f"risk.backend = {self.name!r} does not apply to this problem: {reason}")
        self.arch, self.measure, self.target = arch, measure, target
        self.dtype = np.dtype(dtype)
        self.n_points = n_points

    @classmethod
    def why_not(cls, arch: Architecture, measure: MeasureLike, target: TargetLike) -> str | None:
        """``None`` if the backend can evaluate this problem, else the reason it cannot (for error messages)."""
        return None

    def _check(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta)
        if theta.ndim == 1:
            theta = theta[None, :]
        if theta.ndim != 2 or theta.shape[1] != self.arch.n_params:
            raise ValueError(f"theta has shape {theta.shape}: expected (T, {self.arch.n_params}) for this network")
        return np.ascontiguousarray(theta, dtype=self.dtype)

    def _evaluate(self, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``(risk (T,), G (T, P) or None)``: what every backend implements; ``need_grad=False`` may skip work
        but must give bitwise the same risk."""
        raise NotImplementedError

    def risk_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(risk (T,), G (T, P))`` in ``self.dtype`` for ``theta`` ``(T, P)`` (or ``(P,)``)."""
        return self._evaluate(theta, True)

    def risk(self, theta: np.ndarray) -> np.ndarray:
        """``risk (T,)``, bitwise equal to ``risk_and_grad(theta)[0]``."""
        return self._evaluate(theta, False)[0]

    def gd_steps(self, theta: np.ndarray, grad: np.ndarray,
                 h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepStats | None] | None:
        """``m`` GD updates of every row in one call, where a backend has a compiled kernel that saves the per-step
        Python of the integrate loop; ``None`` (the default) where it has not, and the loop steps itself.

        For ``theta`` and its gradient ``grad`` ``(T, P)`` and step sizes ``h`` ``(m, T)``: ``(theta_s, grad_s,
        risk_s, stats)`` ``(m, T, P)``, ``(m, T, P)``, ``(m, T)`` with ``theta_s[j] = theta_s[j-1] - h[j][:, None] *
        grad_s[j-1]`` and ``risk_s[j], grad_s[j] = risk_and_grad(theta_s[j])`` (a row with a non-finite
        parameter: NaN risk and gradient), bit for bit, in float64; ``stats`` the states' ``StepStats``, or
        ``None`` (the loop then computes them)."""
        return None

    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def memory(self) -> Memory:
        """Upper estimate of the bytes one ``risk_and_grad`` or ``risk`` call on a batch of ``n`` rows holds at its
        peak (its results and any buffer it keeps for later calls included), plus the backend's own data
        (``fixed``): each backend states its own from the arrays its kernels allocate."""
        raise NotImplementedError

    def dead_memory(self) -> Memory:
        """Like ``memory``, for one ``dead_neurons`` call."""
        raise NotImplementedError

    def kept_memory(self) -> Memory:
        """The part of ``memory`` that stays allocated after a call, as a function of the call's batch size: a
        scratch arena or workspace reused by later calls, at the size of the largest chunk seen (none here)."""
        return Memory()

    def hessian_memory(self) -> Memory:
        """Like ``memory``, for one ``hessian`` call, where ``has_hessian``."""
        raise NotImplementedError(f"the {self.name!r} backend has no closed-form Hessian")

    def hessian_kept_memory(self) -> Memory:
        """Like ``kept_memory``, after a ``hessian`` call, where ``has_hessian``."""
        raise NotImplementedError(f"the {self.name!r} backend has no closed-form Hessian")

    #: whether ``hessian`` is implemented (a closed form; otherwise callers take finite differences of ``G``)
    has_hessian: ClassVar[bool] = False

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """Hessian of ``L`` ``(T, P, P)`` float64 at ``theta`` ``(T, P)``, where ``has_hessian``."""
        raise NotImplementedError(f"the {self.name!r} backend has no closed-form Hessian")

    def describe(self) -> dict[str, Any]:
        """What the backend is, for provenance metadata."""
        return {"backend": self.name, "dtype": self.dtype.name}


@functools.cache
def numba_installed() -> bool:
    """Whether numba is installed (without importing it), so that a compiled kernel is the default."""
    return find_spec("numba") is not None


def import_compiled(module: str, what: str, instead: str) -> ModuleType | None:
    """``reluflow.risk.<module>`` (a compiled kernel's module, which imports numba), imported on first use;
    ``None``, with a warning, if it cannot be set up: ``what`` cannot be set up, the backend uses ``instead``.
    Each backend caches its call (``functools.cache``), so the warning comes once."""
    try:
        return importlib.import_module(f"{__package__}.{module}")
    # ImportError: e.g. a numpy newer than the installed numba supports; RuntimeError: numba finds no writable
    # cache directory (a read-only installation and HOME)
    except Exception as exc:
        warnings.warn(f"numba is installed but {what} cannot be set up ({type(exc).__name__}: {exc}); {instead}, "
                      "more slowly", RuntimeWarning, stacklevel=4)
        return None
