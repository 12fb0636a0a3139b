"""The ``quadrature`` backend: any architecture, activation, measure and target, on a fixed point set.

The measure's rule gives points ``x`` ``(M, d)`` and weights ``(M,)`` (composite Gauss–Legendre, tensor rules,
scrambled Sobol, Gauss–Hermite, or an empirical sample itself); the risk is the weighted sum of squared residuals
and ``G`` its backpropagation gradient.

Kernels (``QuadratureRisk.kernel``, the first that applies, chosen at construction; all give the same numbers to
rounding): shallow ReLU nets with input dimension 1 take the sorted-points kernel of ``_points1d.py`` (no
``H x M`` work; float64 only); other shallow ReLU nets the mask-GEMM kernel of ``network/_shallow.py``;
everything else the generic backpropagation of ``network/_architecture.py``. Trajectories are processed in chunks
so that the ``(T, M, h)`` intermediates stay near ``CHUNK_ELEMENTS`` elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..network._activations import DERIVATIVES, PIECEWISE_LINEAR
from ..network._architecture import forward_backward
from ..network._shallow import applies as shallow_fast_path_applies
from ..network._shallow import shallow_relu_risk_and_grad
from ._base import RiskBackend
from ._points1d import SortedPoints1D, points1d_risk_and_grad
from ._points1d import applies as points1d_applies

CHUNK_ELEMENTS = 1 << 21  # ~16 MB of float64 per (chunk, M, h) array
# The shallow ReLU kernel keeps one (chunk, H, M) mask; ~4 MB keeps it near the last-level cache (bench/README.md).
SHALLOW_CHUNK_ELEMENTS = 1 << 19


class QuadratureRisk(RiskBackend):
    name = "quadrature"

    def __init__(self, arch, measure, target, *, dtype=np.float64, n_points=1024, rng=None) -> None:
        super().__init__(arch, measure, target, dtype=dtype, n_points=n_points, rng=rng)
        x, w = measure.quadrature(n_points, rng)
        x = np.asarray(x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[1] != arch.input_dim:
            raise ValueError(
                f"measure has dimension {x.shape[1]} but network.input_dim = {arch.input_dim}: they must agree"
            )
        fx = np.asarray(target(x), dtype=float)
        keep = w > 0
        self.points = np.ascontiguousarray(x[keep], dtype=self.dtype)
        self.weights = np.ascontiguousarray(w[keep], dtype=self.dtype)
        self.target_values = np.ascontiguousarray(fx[keep], dtype=self.dtype)
        widest = max((*arch.widths, arch.output_dim, arch.input_dim))
        self.chunk = max(1, CHUNK_ELEMENTS // (len(self.points) * widest))
        self.kernels = ["backprop"]
        if shallow_fast_path_applies(arch):
            self.kernels.insert(0, "mask_gemm")
            self.x_tilde = np.ascontiguousarray(
                np.concatenate([self.points, np.ones((len(self.points), 1), dtype=self.dtype)], axis=1)
            )
            self.mask_chunk = max(1, SHALLOW_CHUNK_ELEMENTS // (len(self.points) * arch.widths[0]))
            if points1d_applies(arch) and self.dtype == np.float64:
                self.kernels.insert(0, "points1d")
                self.sorted_points = SortedPoints1D(self.points, self.weights, self.target_values)
        # the fastest that applies; the others stay available (bench/ compares them)
        self.kernel = self.kernels[0]

    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if measure.dim != arch.input_dim:
            return f"measure.dim = {measure.dim} (the measure's dimension) but network.input_dim = {arch.input_dim}"
        return None

    def _evaluate(self, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        theta = self._check(theta)
        if self.kernel not in self.kernels:
            raise ValueError(f"QuadratureRisk.kernel = {self.kernel!r} is not allowed: expected one of {self.kernels}")
        if self.kernel == "points1d":
            return points1d_risk_and_grad(self.arch, theta, self.sorted_points, need_grad)
        n = theta.shape[0]
        risk = np.empty(n, dtype=self.dtype)
        grad = np.empty_like(theta) if need_grad else None
        fast = self.kernel == "mask_gemm"
        chunk = self.mask_chunk if fast else self.chunk
        buffer = np.empty(chunk * len(self.points) * self.arch.widths[0], self.dtype) if fast else None
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            if fast:
                r, g = shallow_relu_risk_and_grad(
                    self.arch, theta[sl], self.x_tilde, self.weights, self.target_values, need_grad, buffer
                )
            else:
                r, g = forward_backward(self.arch, theta[sl], self.points, self.weights, self.target_values, need_grad)
            risk[sl] = r
            if need_grad:
                grad[sl] = g
        return risk, grad

    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        """Hidden units (all layers) whose activation derivative vanishes at every quadrature point."""
        theta = self._check(theta)
        n = theta.shape[0]
        if self.arch.activation not in PIECEWISE_LINEAR:
            return np.zeros(n, dtype=np.int64)
        dact = DERIVATIVES[self.arch.activation]
        out = np.zeros(n, dtype=np.int64)
        for start in range(0, n, self.chunk):
            sl = slice(start, min(n, start + self.chunk))
            for z in _hidden_preactivations(self.arch, theta[sl], self.points):
                out[sl] += np.all(dact(z, self.arch.negative_slope) == 0, axis=1).sum(axis=1)
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_points": int(len(self.points)), "kernel": self.kernel}


def _hidden_preactivations(arch, theta: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
    from ..network._activations import ACTIVATIONS

    act = ACTIVATIONS[arch.activation]
    a = np.broadcast_to(x, (theta.shape[0], *x.shape))
    out = []
    for w, b in arch.unflatten(theta)[:-1]:
        z = np.matmul(a, np.swapaxes(w, 1, 2))
        if b is not None:
            z = z + b[:, None, :]
        out.append(z)
        a = act(z, arch.negative_slope)
    return out
