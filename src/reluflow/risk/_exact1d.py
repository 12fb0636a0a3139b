"""The ``exact1d`` backend (being written): closed-form risk for shallow ReLU nets on an interval."""

from __future__ import annotations

from ._base import RiskBackend


class Exact1DRisk(RiskBackend):
    name = "exact1d"

    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if arch.input_dim != 1:
            return f"it needs network.input_dim = 1 (got {arch.input_dim})"
        if not arch.is_shallow:
            return f"it needs one hidden layer (got widths {list(arch.widths)})"
        if arch.activation != "relu":
            return f"it needs activation 'relu' (got {arch.activation!r})"
        if measure.density_pieces() is None:
            return f"it needs a uniform or piecewise polynomial measure on an interval (got {measure.kind!r})"
        if target.piecewise_polynomial() is None:
            return "it needs a piecewise polynomial 1D target (constant, affine, piecewise affine, polynomial, " \
                "piecewise polynomial, abs, or a 1D shallow ReLU teacher)"
        return None
