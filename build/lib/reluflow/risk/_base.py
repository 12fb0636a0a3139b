"""The risk-backend contract shared by every backend.

A backend evaluates, for a batch of parameter vectors ``theta`` ``(T, P)``:

- ``risk_and_grad(theta) -> (risk (T,), grad (T, P))``: ``L(theta) = int |N_theta(x) - f(x)|^2 mu(dx)`` and the
  generalized gradient ``G`` of SCIENCE.md §3 (backpropagation with ``relu'(0) := 0``);
- ``risk(theta) -> (T,)``;
- ``dead_neurons(theta) -> (T,)`` int64: hidden units whose active region has input-measure zero;
- optionally ``hessian(theta) -> (T, P, P)``: a closed-form Hessian of ``L`` (``has_hessian``).

Rows never interact: row ``i`` of every output depends only on row ``i`` of ``theta`` and is bitwise the same
whatever batch it is evaluated in. Kernels are pure numpy (exact1d's optional compiled kernel aside, which gives
the numpy kernel's bits): no files, no global random state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from ..network import Architecture

DTYPES = {"float64": np.float64, "float32": np.float32}


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

    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    #: whether ``hessian`` is implemented (a closed form; otherwise callers take finite differences of ``G``)
    has_hessian: ClassVar[bool] = False

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """Hessian of ``L`` ``(T, P, P)`` float64 at ``theta`` ``(T, P)``, where ``has_hessian``."""
        raise NotImplementedError(f"the {self.name!r} backend has no closed-form Hessian")

    def describe(self) -> dict[str, Any]:
        """What the backend is, for provenance metadata."""
        return {"backend": self.name, "dtype": self.dtype.name}
