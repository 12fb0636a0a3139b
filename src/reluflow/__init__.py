"""reluflow: test convergence theorems for gradient flow and gradient descent in ReLU networks, at scale."""

from ._load import load
from ._simulate import simulate
from .network import ACTIVATIONS, DERIVATIVES, Architecture
from .problem import Problem
from .risk import BACKENDS

__version__ = "0.1.0"

__all__ = ["ACTIVATIONS", "BACKENDS", "DERIVATIVES", "Architecture", "Problem", "__version__", "load", "simulate"]
