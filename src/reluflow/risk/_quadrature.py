"""The ``quadrature`` backend: any architecture, activation, measure and target, on a fixed point set.

The measure's rule gives points ``x`` ``(M, d)`` and weights ``(M,)`` (composite Gauss–Legendre, tensor rules,
scrambled Sobol, Gauss–Hermite, or an empirical sample itself); the risk is the weighted sum of squared residuals
and ``G`` its backpropagation gradient.

Kernels (``QuadratureRisk.kernel``, the first that applies, chosen at construction; all give the same numbers to
rounding): shallow ReLU nets with input dimension 1 take the compiled sorted-points kernel of
``_points1d_numba.py`` (``points1d_numba``, where numba is installed; float64 and float32; in float64 the same bits
as the numpy one) or else the sorted-points kernel of ``_points1d.py`` (no ``H x M`` work; float64 only); other
shallow ReLU nets the compiled kernel of ``_shallow_numba.py``
(``mask_numba``, where numba is installed: the mask-GEMM algebra fused into one loop per trajectory) or else the
mask-GEMM kernel of ``network/_shallow.py``; everything else (any depth and activation) the compiled
backpropagation of ``_backprop_numba.py`` (``backprop_numba``, where numba is installed: per trajectory, the
points in cache-sized blocks, forward and backward fused) or else the generic backpropagation of
``network/_architecture.py`` (``backprop``). The numpy kernels stay as the fallback where numba is missing or a
compiled module cannot be set up. ``backprop`` processes trajectories in chunks
so that the ``(T, M, h)`` intermediates stay near ``CHUNK_ELEMENTS`` elements.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from ..network._activations import DERIVATIVES, PIECEWISE_LINEAR
from ..network._architecture import forward_backward
from ..network._shallow import applies as shallow_fast_path_applies
from ..network._shallow import shallow_relu_risk_and_grad
from ._base import Memory, RiskBackend, import_compiled, numba_installed
from ._points1d import SortedPoints1D, points1d_kept_memory, points1d_memory, points1d_risk_and_grad
from ._points1d import applies as points1d_applies

# rows of the slots in points1d_numba's per-call scratch, per output (_points1d_numba.SCRATCH_ROWS: that module
# imports numba, so the number is repeated here and checked by tests/test_points1d_numba.py)
POINTS1D_SCRATCH_ROWS = 6
# points per block of mask_numba (_shallow_numba.POINT_BLOCK, repeated for the memory model and checked by
# tests/test_shallow_numba.py)
SHALLOW_POINT_BLOCK = 256
# points per block of backprop_numba (_backprop_numba.POINT_BLOCK, repeated for the memory model and checked by
# tests/test_backprop_numba.py)
BACKPROP_POINT_BLOCK = 128
# the activations backprop_numba knows (_backprop_numba.ACTIVATION_CODES: that module imports numba, so the names
# are repeated here and checked by tests/test_backprop_numba.py)
BACKPROP_NUMBA_ACTIVATIONS = frozenset({"relu", "leaky_relu", "tanh", "sigmoid", "softplus"})
# ~512 KB of float64 per (chunk, M, h) array: backpropagation streams through several such arrays per layer, and
# they stay in a core's L2 cache only at about this size (bench/README.md, "deep nets")
CHUNK_ELEMENTS = 1 << 16
# The shallow ReLU kernel keeps one (chunk, H, M) mask; ~4 MB keeps it near the last-level cache (bench/README.md).
SHALLOW_CHUNK_ELEMENTS = 1 << 19
# Memory estimates (``memory``): arrays of the size of one activation that an activation's derivative holds at its
# peak (relu: the result; leaky relu: np.where's result and its copy; sigmoid, softplus, tanh: three), and the
# small arrays and Python objects of one call
DERIVATIVE_TEMPORARIES = {"relu": 1, "leaky_relu": 2}
CALL_BYTES = 16 << 10


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
        if numba_installed() and arch.activation in BACKPROP_NUMBA_ACTIVATIONS:
            self.kernels.insert(0, "backprop_numba")
        if shallow_fast_path_applies(arch):
            self.kernels.insert(0, "mask_gemm")
            self.x_tilde = np.ascontiguousarray(
                np.concatenate([self.points, np.ones((len(self.points), 1), dtype=self.dtype)], axis=1)
            )
            self.mask_chunk = max(1, SHALLOW_CHUNK_ELEMENTS // (len(self.points) * arch.widths[0]))
            if numba_installed():
                # numba itself is imported on the first compiled evaluation (as for exact1d's compiled kernel)
                self.kernels.insert(0, "mask_numba")
            if points1d_applies(arch):
                if self.dtype == np.float64:
                    self.kernels.insert(0, "points1d")
                if numba_installed():
                    self.kernels.insert(0, "points1d_numba")
                if self.kernels[0].startswith("points1d"):
                    self.sorted_points = SortedPoints1D(self.points, self.weights, self.target_values)
        # the fastest that applies; the others stay available (bench/ compares them)
        self.kernel = self.kernels[0]
        self._compiled_points = None  # the point set in the compiled kernels' layouts, built on first use
        self._compiled_sorted = None
        self._compiled_backprop = None

    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if measure.dim != arch.input_dim:
            return f"measure.dim = {measure.dim} (the measure's dimension) but network.input_dim = {arch.input_dim}"
        return None

    def _evaluate(self, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        theta = self._check(theta)
        if self.kernel not in self.kernels:
            raise ValueError(f"QuadratureRisk.kernel = {self.kernel!r} is not allowed: expected one of {self.kernels}")
        if self.kernel == "points1d_numba":
            compiled = _compiled_points1d_module()
            if compiled is not None:
                if self._compiled_sorted is None:
                    self._compiled_sorted = compiled.CompiledPoints1D(self.sorted_points, self.dtype)
                return compiled.points1d_rows(self.arch, theta, self._compiled_sorted, need_grad)
            # installed but does not import: the next kernel (points1d in float64: the same bits)
            self.kernels = [k for k in self.kernels if k != "points1d_numba"]  # replaced: another thread may read it
            self.kernel = self.kernels[0]
        if self.kernel == "points1d":
            return points1d_risk_and_grad(self.arch, theta, self.sorted_points, need_grad)
        if self.kernel == "mask_numba":
            compiled = _compiled_module()
            if compiled is not None:
                if self._compiled_points is None:
                    self._compiled_points = compiled.ShallowPoints(self.points, self.weights, self.target_values,
                                                                   self.dtype)
                return compiled.shallow_rows(self.arch, theta, self._compiled_points, need_grad)
            # installed but does not import: the numpy mask kernel (the same numbers to rounding)
            self.kernels = [k for k in self.kernels if k != "mask_numba"]  # replaced: another thread may read it
            self.kernel = "mask_gemm"
        if self.kernel == "backprop_numba":
            compiled = _compiled_backprop_module()
            if compiled is not None:
                if self._compiled_backprop is None:
                    self._compiled_backprop = compiled.BackpropPoints(self.points, self.weights, self.target_values,
                                                                      self.dtype)
                return compiled.backprop_rows(self.arch, theta, self._compiled_backprop, need_grad)
            # installed but does not import: the numpy backpropagation (the same numbers to rounding)
            self.kernels = [k for k in self.kernels if k != "backprop_numba"]  # replaced: another thread may read it
            self.kernel = "backprop"
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

    def memory(self) -> Memory:
        """The point set (``fixed``: points, weights, target values and each kernel's copy, twice over while
        they are built), the results, and per kernel (all in ``dtype``):

        - ``points1d_numba``: its per-call scratch, ``_points1d_numba.SCRATCH_ROWS`` arrays of the slots per output,
          ``6 k + 3`` of the blocks and a few of the units; nothing per row beyond the results;
        - ``points1d``: ``_points1d.points1d_memory``;
        - ``mask_gemm``: the mask buffer ``(chunk, H, M)`` (``fixed``: allocated whole for any batch) and per row
          of a chunk ``q`` and ``e`` ``(M, k (d + 1))``, four ``(M, k)`` arrays, the ``(H, d + 1)`` products
          and the chunk's ``G``;
        - ``backprop_numba``: its per-call scratch (``_backprop_numba.scratch_elements``: the biases, a block of
          points' activations and derivatives of every hidden layer, two deltas of a block, one layer's weight
          gradient) and the fixed output layer's weights; nothing per row beyond the results;
        - ``backprop``: per row of a chunk each hidden layer's pre-activation and activation ``(M, h)``, the
          backward pass's temporaries (``_evaluate_memory``), four ``(M, k)`` output arrays and the chunk's ``G``.
        """
        return self._data_memory().plus(self._evaluate_memory())

    def dead_memory(self) -> Memory:
        """The point set, and ``dead_neurons`` in the ``backprop`` chunks whatever the kernel: the pre-activations of
        every hidden layer ``(M, h)`` (kept), the activation being built (with the previous one and a
        temporary), then the derivative and two masks; activations that are not piecewise linear have no dead
        units (nothing is evaluated)."""
        return self._data_memory().plus(self._dead_memory())

    def _data_memory(self) -> Memory:
        it = self.dtype.itemsize
        M, d, k = len(self.points), self.arch.input_dim, self.arch.output_dim
        data = M * (d + 1 + k) * it
        if "mask_gemm" in self.kernels:
            data += M * (d + 1) * it
        if "mask_numba" in self.kernels:  # its transposed copy of the points, weights and target values
            data += M * (d + 1 + k) * it
        if any(kernel.startswith("points1d") for kernel in self.kernels):
            data += self.sorted_points.n_slots * (3 + k) * 8
        if "backprop_numba" in self.kernels:  # its blocked copy of the points and target values, and the weights
            data += M * (d + 1 + k) * it
        if "points1d_numba" in self.kernels:  # its copy: points, centred points and their double, weights, targets
            data += self.sorted_points.n_slots * (4 + k) * it
        return Memory(2.0 * data)

    def kept_memory(self) -> Memory:
        """The ``points1d`` kernel's arena (``_points1d.points1d_kept_memory``); the other kernels keep nothing."""
        if self.kernel == "points1d":
            return points1d_kept_memory(self.arch, self.sorted_points)
        return Memory()

    def _evaluate_memory(self) -> Memory:
        it = self.dtype.itemsize
        arch = self.arch
        M, d, k, P = len(self.points), arch.input_dim, arch.output_dim, arch.n_params
        widths = arch.widths
        io = (P + 1) * it + (P * it if it != 8 else 0)  # the results, and theta in the backend's dtype
        if self.kernel == "points1d":
            return points1d_memory(arch, self.sorted_points)
        if self.kernel == "points1d_numba":
            H, n = widths[0], self.sorted_points.n_slots
            # scratch of the slots and (6 k + 3) rows of per-block sums (allocated in Python), and the units'
            # arrays (allocated by numba, which tracemalloc does not see: counted all the same)
            small = it * ((6 * k + 3) * (n // 8) + H * (3 * k + 2)) + 8 * 2 * H + 2 * H
            return Memory(CALL_BYTES + it * POINTS1D_SCRATCH_ROWS * k * n + small, io)
        if self.kernel == "mask_numba":
            # per call the scratch of _shallow_numba._rows (the units' parameters and sums, one point block's
            # pre-activations and outputs, _shallow_numba.POINT_BLOCK points); nothing per row beyond the results
            H, block = widths[0], SHALLOW_POINT_BLOCK
            return Memory(CALL_BYTES + it * (H * (d + 1) * (k + 1) + block * (H + k + 1) + k * (H + 2)), io)
        if self.kernel == "backprop_numba":
            sizes = (d, *widths, k)
            block = BACKPROP_POINT_BLOCK
            scratch = (sum(sizes[1:]) + 2 * block * sum(widths) + 2 * block * max(sizes)
                       + max(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))
            # and three index arrays and the fixed output weights (allocated in Python)
            return Memory(CALL_BYTES + it * (scratch + k * widths[-1]) + 3 * 8 * (len(sizes) + 8), io)
        if self.kernel == "mask_gemm":
            H = widths[0]
            work = it * (M * (3 * k * (d + 1) + 5 * k) + H * (d + 1) * (3 * k + 2) + P)
            return Memory(CALL_BYTES + self.mask_chunk * M * H * it, io, ((work, self.mask_chunk),))
        # forward_backward keeps every layer's pre-activation and activation; the backward pass adds, per layer,
        # the incoming delta, its product with the weights, the activation's derivative (with its temporaries)
        # and their product; the output layer's values, residual, weighted residual and delta stay alive
        extra = DERIVATIVE_TEMPORARIES.get(arch.activation, 3)
        outgoing = (*widths[1:], k)
        backward = max(o + h * (1 + max(extra, 2)) for h, o in zip(widths, outgoing, strict=True))
        layer = max(a * b for a, b in zip((d, *widths), (*widths, k), strict=True))  # one layer's weight gradient
        work = it * (M * (2 * sum(widths) + backward + 4 * k) + P + layer)
        return Memory(CALL_BYTES, io, ((work, self.chunk),))

    def _dead_memory(self) -> Memory:
        it = self.dtype.itemsize
        arch = self.arch
        M, P, widths = len(self.points), arch.n_params, arch.widths
        io = 8 + (P * it if it != 8 else 0)
        if arch.activation not in PIECEWISE_LINEAR:
            return Memory(CALL_BYTES, io)
        extra = 1 if arch.activation == "relu" else 2  # leaky relu: np.where's product and mask
        forward = max(sum(widths[: i + 1]) + (widths[i - 1] if i else 0) + widths[i] * extra
                      for i in range(len(widths)))
        derivative = sum(widths) + max(widths) * extra
        # the loop variable keeps the previous chunk's last pre-activation while the next chunk is built
        per_row = M * (it * (max(forward, derivative) + widths[-1]) + 2 * max(widths))
        return Memory(CALL_BYTES, io, ((per_row, self.chunk),))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_points": int(len(self.points)), "kernel": self.kernel}


@functools.cache
def _compiled_points1d_module() -> ModuleType | None:
    """``_points1d_numba``, imported on first use; ``None`` (with a warning, once) if it cannot be set up."""
    return import_compiled("_points1d_numba", "quadrature's compiled 1D kernel",
                           "quadrature uses its numpy kernels, which give the same results")


@functools.cache
def _compiled_backprop_module() -> ModuleType | None:
    """``_backprop_numba``, imported on first use; ``None`` (with a warning, once) if it cannot be set up."""
    return import_compiled("_backprop_numba", "quadrature's compiled backpropagation",
                           "quadrature uses its numpy kernels, which give the same results to rounding")


@functools.cache
def _compiled_module() -> ModuleType | None:
    """``_shallow_numba``, imported on first use; ``None`` (with a warning, once) if it cannot be set up."""
    return import_compiled("_shallow_numba", "quadrature's compiled kernel",
                           "quadrature uses its numpy kernels, which give the same results to rounding")


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
