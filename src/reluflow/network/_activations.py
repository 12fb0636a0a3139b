"""Hidden-layer activations and their (generalized) derivatives.

Registries map a config string to a kernel, in the style of scikit-learn's ``neural_network/_base.py``.
Every derivative is a function of the pre-activation ``z``. For ReLU and leaky ReLU the derivative at the kink is
taken from the right-open side, ``relu'(0) := 0``: this is the generalized gradient of Jentzen & Riekert
(SCIENCE.md §3), the limit of gradients of smooth approximations ``R_r`` with ``R_r' -> 1_{(0, inf)}``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Kernel = Callable[..., np.ndarray]


def relu(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    return np.maximum(z, 0.0)


def relu_derivative(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    return (z > 0).astype(z.dtype)


def leaky_relu(z: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return np.where(z > 0, z, negative_slope * z)


def leaky_relu_derivative(z: np.ndarray, negative_slope: float = 0.01) -> np.ndarray:
    return np.where(z > 0, 1.0, negative_slope).astype(z.dtype)


def softplus(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    # log(1 + e^z) without overflow for large z
    return np.logaddexp(0.0, z).astype(z.dtype, copy=False)


def softplus_derivative(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    return sigmoid(z)


def sigmoid(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    # tanh form is overflow-free for any finite z
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(z.dtype, copy=False)


def sigmoid_derivative(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    s = sigmoid(z)
    return s * (1.0 - s)


def tanh(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    return np.tanh(z)


def tanh_derivative(z: np.ndarray, negative_slope: float = 0.0) -> np.ndarray:
    t = np.tanh(z)
    return 1.0 - t * t


ACTIVATIONS: dict[str, Kernel] = {
    "relu": relu,
    "leaky_relu": leaky_relu,
    "softplus": softplus,
    "sigmoid": sigmoid,
    "tanh": tanh,
}

DERIVATIVES: dict[str, Kernel] = {
    "relu": relu_derivative,
    "leaky_relu": leaky_relu_derivative,
    "softplus": softplus_derivative,
    "sigmoid": sigmoid_derivative,
    "tanh": tanh_derivative,
}

# Derivatives that are functions of the activation's output ``a = ACTIVATIONS[name](z)``, for backpropagation, which
# has ``a`` at hand: the same numbers as ``DERIVATIVES[name](z)`` (which computes ``a`` again from ``z`` first)
# without a second tanh per element.
DERIVATIVES_OF_OUTPUT: dict[str, Kernel] = {
    "sigmoid": lambda a, negative_slope=0.0: a * (1.0 - a),
    "tanh": lambda a, negative_slope=0.0: 1.0 - a * a,
}

# Activations whose derivative vanishes on a half-line, so that a unit can be "dead".
PIECEWISE_LINEAR = frozenset({"relu", "leaky_relu"})
