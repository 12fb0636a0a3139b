"""Fully connected architectures, the flat parameter layout and the activation registries."""

from ._activations import ACTIVATIONS, DERIVATIVES, PIECEWISE_LINEAR
from ._architecture import Architecture, LayerSlice, forward, forward_backward
from ._units import balance_defined, unit_balance, unit_norms

__all__ = ["ACTIVATIONS", "DERIVATIVES", "PIECEWISE_LINEAR", "Architecture", "LayerSlice", "balance_defined",
           "forward", "forward_backward", "unit_balance", "unit_norms"]
