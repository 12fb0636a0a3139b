"""Risk backends behind one ``risk_and_grad`` contract (see ``_base.RiskBackend``)."""

from ._base import DTYPES, Memory, RiskBackend, StepStats
from ._exact1d import Exact1DRisk
from ._gaussian import GaussianRisk
from ._quadrature import QuadratureRisk

BACKENDS: dict[str, type[RiskBackend]] = {
    "exact1d": Exact1DRisk,
    "gaussian": GaussianRisk,
    "quadrature": QuadratureRisk,
}

__all__ = ["BACKENDS", "DTYPES", "Exact1DRisk", "GaussianRisk", "Memory", "QuadratureRisk", "RiskBackend",
           "StepStats", "choose_backend"]


def choose_backend(name: str, arch, measure, target) -> type[RiskBackend]:
    """The backend class for ``name``; ``auto`` picks an exact backend where one applies, else quadrature."""
    if name == "auto":
        for exact in (Exact1DRisk, GaussianRisk):
            if exact.why_not(arch, measure, target) is None:
                return exact
        return QuadratureRisk
    if name not in BACKENDS:
        raise ValueError(f"risk.backend = {name!r} is not allowed: expected 'auto' or one of {sorted(BACKENDS)}")
    cls = BACKENDS[name]
    reason = cls.why_not(arch, measure, target)
    if reason is not None:
        raise ValueError(f"risk.backend = {name!r} does not apply to this problem: {reason}")
    return cls
