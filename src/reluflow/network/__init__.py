"""Fully connected architectures, the flat parameter layout and the activation registries."""

from ._activations import ACTIVATIONS, DERIVATIVES, PIECEWISE_LINEAR
from ._architecture import Architecture, LayerSlice, forward, forward_backward

__all__ = ["ACTIVATIONS", "DERIVATIVES", "PIECEWISE_LINEAR", "Architecture", "LayerSlice", "forward",
           "forward_backward"]
