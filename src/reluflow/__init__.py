"""reluflow: test convergence theorems for gradient flow and gradient descent in ReLU networks, at scale."""

from ._load import load
from ._simulate import simulate, simulate_memory
from ._version import __version__
from .network import ACTIVATIONS, DERIVATIVES, Architecture
from .problem import Problem
from .risk import BACKENDS

__all__ = ["ACTIVATIONS", "BACKENDS", "DERIVATIVES", "Architecture", "Problem", "__version__", "load", "simulate",
           "simulate_memory"]
