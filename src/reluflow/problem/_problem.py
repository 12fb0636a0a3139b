"""``Problem``: a network, an input measure, a target and a risk backend, built from plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .._limits import LIMITS
from ..network import Architecture
from ..risk import DTYPES, Memory, RiskBackend, StepStats, choose_backend
from ._measures import Measure, measure_from_dict
from ._targets import Target, target_from_dict

__all__ = ["Problem", "PROBLEM_KEYS", "RISK_KEYS"]

PROBLEM_KEYS = {"network", "measure", "target", "risk", "optimal_risk"}
RISK_KEYS = {"backend", "n_points", "dtype", "seed"}


class Problem:
    """A risk-minimization problem ``L(theta) = int |N_theta - f|^2 d mu``.

    Build it with ``Problem.from_dict({"network": ..., "measure": ..., "target": ..., "risk": ...})``; the
    dict has exactly the shape a study's ``problem`` takes in ``config.yaml``. ``risk.seed`` keys any random
    quadrature points (scrambled Sobol), independently of the trajectories' keys.

    ``optimal_risk`` is the known infimum of the risk over the parameters (``0`` for a realizable target, such as
    a teacher no wider than the student), or ``None`` when it is not known. Endpoint classes are judged against
    it (``reluflow.analysis.classify_endpoints``): without it only ``risk <= risk_tol`` proves a global minimum.
    """

    def __init__(
        self,
        architecture: Architecture,
        measure: Measure,
        target: Target,
        *,
        backend: str = "auto",
        n_points: int = 1024,
        dtype: str = "float64",
        seed: int = 0,
        optimal_risk: float | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        if measure.dim != architecture.input_dim:
            raise ValueError(
                f"measure.dim = {measure.dim} (the measure's dimension) but network.input_dim = "
                f"{architecture.input_dim}: they must agree"
            )
        if target.input_dim is not None and target.input_dim != architecture.input_dim:
            raise ValueError(
                f"target has input dimension {target.input_dim} but network.input_dim = "
                f"{architecture.input_dim}: they must agree"
            )
        if target.output_dim != architecture.output_dim:
            raise ValueError(
                f"target has {target.output_dim} output(s) but network.output_dim = {architecture.output_dim}: "
                "they must agree"
            )
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"risk.dtype = {dtype!r} is not allowed: expected one of {sorted(DTYPES)}")
        if not isinstance(n_points, int | np.integer) or isinstance(n_points, bool) or n_points < 1 \
                or n_points > LIMITS["n_points"]:
            raise ValueError(f"risk.n_points = {n_points!r} is not allowed: expected an integer >= 1 and <= "
                             f"{LIMITS['n_points']} (LIMITS['n_points'], docs/running.md)")
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"risk.seed = {seed!r} is not allowed: expected a non-negative integer")
        if optimal_risk is not None and (isinstance(optimal_risk, bool)
                                         or not isinstance(optimal_risk, int | float | np.integer | np.floating)
                                         or not np.isfinite(optimal_risk) or optimal_risk < 0):
            raise ValueError(f"problem.optimal_risk = {optimal_risk!r} is not allowed: expected a finite number >= 0 "
                             "(the infimum of the risk; 0 for a realizable target) or null (unknown)")
        self.optimal_risk = None if optimal_risk is None else float(optimal_risk)
        self.architecture, self.measure, self.target = architecture, measure, target
        if not isinstance(backend, str):
            raise ValueError(f"risk.backend = {backend!r} is not allowed: expected 'auto' or a backend's name")
        backend_cls = choose_backend(backend, architecture, measure, target)
        if backend_cls.name == "quadrature" and n_points * measure.dim > LIMITS["n_points"]:  # before building it
            raise ValueError(
                f"risk.n_points = {n_points} is not allowed here: a quadrature rule of {n_points} points in dimension "
                f"{measure.dim} (network.input_dim) holds {n_points * measure.dim} coordinates, over the limit of "
                f"{LIMITS['n_points']} (LIMITS['n_points'], docs/running.md): lower risk.n_points")
        rng = np.random.default_rng([int(seed), 0x0ADA])  # the quadrature's own named key
        try:
            self.backend: RiskBackend = backend_cls(
                architecture, measure, target, dtype=DTYPES[dtype], n_points=int(n_points), rng=rng
            )
        except (ArithmeticError, ValueError) as exc:
            if str(exc).startswith(("risk.", "measure", "target", "network")):  # a message of the validators
                raise
            # finite numbers so large or small that the backend's set-up leaves float64 (an overflow, a NaN)
            raise ValueError(
                f"the measure {measure.to_dict()} and the target {target.to_dict()} are out of float64's range for "
                f"risk.backend {backend_cls.name!r} ({type(exc).__name__}: {exc}): expected smaller numbers"
            ) from None
        self.risk_settings = {"backend": backend, "n_points": int(n_points), "dtype": dtype, "seed": int(seed)}
        self.spec = spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Problem:
        if not isinstance(spec, dict):
            raise ValueError(f"problem = {spec!r} is not allowed: expected a mapping with network, measure, target")
        unknown = sorted(set(spec) - PROBLEM_KEYS, key=str)
        if unknown:
            raise ValueError(f"problem has unknown key(s) {unknown}: allowed keys are {sorted(PROBLEM_KEYS)}")
        for key in ("network", "measure", "target"):
            if key not in spec:
                raise ValueError(f"problem.{key} is missing: a problem needs network, measure and target")
        arch = Architecture.from_dict(spec["network"])
        measure_spec = dict(spec["measure"]) if isinstance(spec["measure"], dict) else spec["measure"]
        if isinstance(measure_spec, dict) and measure_spec.get("kind") in ("uniform", "box", "gaussian"):
            measure_spec.setdefault("dim", arch.input_dim)
        measure = measure_from_dict(measure_spec)
        target = target_from_dict(spec["target"], arch.input_dim)
        risk = spec.get("risk", {}) or {}
        if not isinstance(risk, dict):
            raise ValueError(f"problem.risk = {risk!r} is not allowed: expected a mapping")
        unknown = sorted(set(risk) - RISK_KEYS, key=str)
        if unknown:
            raise ValueError(f"risk has unknown key(s) {unknown}: allowed keys are {sorted(RISK_KEYS)}")
        return cls(
            arch,
            measure,
            target,
            backend=risk.get("backend", "auto"),
            n_points=risk.get("n_points", 1024),
            dtype=risk.get("dtype", "float64"),
            seed=risk.get("seed", 0),
            optimal_risk=spec.get("optimal_risk"),
            spec=copy.deepcopy(spec),
        )

    # ---------------------------------------------------------------- the contract, delegated
    @property
    def n_params(self) -> int:
        return self.architecture.n_params

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def risk_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(risk (T,), G (T, P))`` for ``theta`` ``(T, P)``."""
        return self.backend.risk_and_grad(theta)

    def risk(self, theta: np.ndarray) -> np.ndarray:
        """``risk (T,)`` for ``theta`` ``(T, P)``."""
        return self.backend.risk(theta)

    def gd_steps(self, theta: np.ndarray, grad: np.ndarray,
                 h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepStats | None] | None:
        """Several GD updates in one call, or ``None`` where the backend has none (``RiskBackend.gd_steps``)."""
        return self.backend.gd_steps(theta, grad, h)

    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        """Number of hidden units with a measure-zero active region, ``(T,)`` int64."""
        return self.backend.dead_neurons(theta)

    @property
    def has_hessian(self) -> bool:
        """Whether the backend has a closed-form Hessian (``reluflow.analysis.hessian`` then uses it)."""
        return self.backend.has_hessian

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """Closed-form Hessian of the risk ``(T, P, P)`` float64 for ``theta`` ``(T, P)``, where ``has_hessian``."""
        return self.backend.hessian(theta)

    def memory(self) -> Memory:
        """Upper estimate of the bytes one ``risk_and_grad`` or ``risk`` call holds, as a function of the batch
        size, with the backend's own data (``RiskBackend.memory``)."""
        return self.backend.memory()

    def dead_memory(self) -> Memory:
        """Like ``memory``, for ``dead_neurons``."""
        return self.backend.dead_memory()

    def kept_memory(self) -> Memory:
        """The part of ``memory`` that stays allocated after a call (``RiskBackend.kept_memory``)."""
        return self.backend.kept_memory()

    def hessian_memory(self) -> Memory:
        """Like ``memory``, for ``hessian`` (where ``has_hessian``)."""
        return self.backend.hessian_memory()

    def hessian_kept_memory(self) -> Memory:
        """Like ``kept_memory``, after ``hessian`` (where ``has_hessian``)."""
        return self.backend.hessian_kept_memory()

    def unflatten(self, theta: np.ndarray) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Zero-copy per-layer views ``[(W (T, out, in), b (T, out) or None), ...]``."""
        return self.architecture.unflatten(theta)

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict of this problem (defaults filled in), for hashing and provenance."""
        out = {
            "network": self.architecture.to_dict(),
            "measure": self.measure.to_dict(),
            "target": self.target.to_dict(),
            "risk": dict(self.risk_settings),
        }
        if self.optimal_risk is not None:
            out["optimal_risk"] = self.optimal_risk
        return out

    def __repr__(self) -> str:
        a = self.architecture
        return (f"Problem(d={a.input_dim}, widths={list(a.widths)}, k={a.output_dim}, activation={a.activation!r}, "
                f"measure={self.measure.kind!r}, backend={self.backend.name!r}, P={self.n_params})")
