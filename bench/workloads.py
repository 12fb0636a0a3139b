"""The canonical workloads, defined once and used by every benchmark (bench/README.md describes them)."""

from __future__ import annotations

from typing import Any

import reluflow

W1_TARGET = {"kind": "function", "name": "abs", "shift": -0.5}  # |x - 0.5|
UNIT_INTERVAL = {"kind": "uniform", "low": 0.0, "high": 1.0}


def w1_problem(backend: str = "quadrature", width: int = 32, n_points: int = 1024, dtype: str = "float64") -> dict:
    """W1: 1D, uniform on [0, 1], target |x - 0.5|, shallow ReLU of the given width."""
    return {
        "network": {"input_dim": 1, "widths": [width]},
        "measure": dict(UNIT_INTERVAL),
        "target": dict(W1_TARGET),
        "risk": {"backend": backend, "n_points": n_points, "dtype": dtype},
    }


def w2_problem() -> dict:
    """W2: d = 8, a 2048-point standard Gaussian sample, teacher with 8 units, student width 64."""
    return {
        "network": {"input_dim": 8, "widths": [64]},
        "measure": {"kind": "empirical", "sample": {"distribution": "gaussian", "n_points": 2048, "seed": 0, "dim": 8}},
        "target": {"kind": "teacher", "widths": [8], "seed": 0},
        "risk": {"backend": "quadrature"},
    }


def deep_problem(activation: str) -> dict:
    """The deep-net workload of issue #20: d = 2, widths [32, 32], a 1024-point standard Gaussian sample (empirical
    measure, so M = 1024 exactly), a teacher with 8 units; quadrature's backpropagation (the compiled kernel,
    ``backprop_numba``, where numba is installed, else ``backprop``)."""
    return {
        "network": {"input_dim": 2, "widths": [32, 32], "activation": activation},
        "measure": {"kind": "empirical", "sample": {"distribution": "gaussian", "n_points": 1024, "seed": 0, "dim": 2}},
        "target": {"kind": "teacher", "widths": [8], "seed": 0},
        "risk": {"backend": "quadrature"},
    }


def w3_problem() -> dict:
    """W3: closed-form Gaussian student–teacher, bias-free, output fixed to one, d = k = n = 10, rows e_1..e_10."""
    return {
        "network": {"input_dim": 10, "widths": [10], "bias": False, "fixed_output": 1.0},
        "measure": {"kind": "gaussian", "dim": 10},
        "target": {"kind": "teacher", "widths": [10], "bias": False, "fixed_output": 1.0,
                   "first_layer": "unit_vectors", "seed": 0},
        "risk": {"backend": "gaussian"},
    }


def build(problem: dict, kernel: str | None = None) -> reluflow.Problem:
    """The problem, with its backend's kernel forced to ``kernel`` (default: the one it picks): ``points1d_numba``,
    ``points1d``, ``mask_numba``, ``mask_gemm``, ``backprop_numba`` or ``backprop`` for quadrature, ``numba`` or
    ``numpy`` for exact1d."""
    prob = reluflow.Problem.from_dict(problem)
    if kernel is not None:
        if kernel not in getattr(prob.backend, "kernels", ()):
            raise ValueError(f"kernel {kernel!r} does not apply to this problem's {prob.backend_name} backend")
        prob.backend.kernel = kernel
    return prob


# W1-quadrature runs the kernel the backend picks in 1D (sorted points: "points1d_numba" where numba is installed,
# else "points1d"); W1-quadrature-points1d forces the numpy sorted-points kernel; W1-quadrature-mask forces the
# mask-GEMM kernel that does the H x M work the figures (and any d > 1) are about. W1-exact1d runs the
# kernel exact1d picks (the compiled one where numba is installed); W1-exact1d-numpy forces the numpy kernel.
# W2 runs the kernel quadrature picks for d > 1 (the compiled mask kernel where numba is installed), W2-numpy the
# numpy mask-GEMM kernel; W1-quadrature-numba forces the compiled mask kernel on W1.
WORKLOADS: dict[str, dict[str, Any]] = {
    "W1-quadrature": {"problem": w1_problem("quadrature"), "T": 4096, "method": {"kind": "gd", "step_size": 0.01,
                                                                               "n_steps": 200}},
    "W1-quadrature-points1d": {"problem": w1_problem("quadrature"), "kernel": "points1d", "T": 4096,
                               "method": {"kind": "gd", "step_size": 0.01, "n_steps": 200}},
    "W1-quadrature-mask": {"problem": w1_problem("quadrature"), "kernel": "mask_gemm", "T": 4096,
                           "method": {"kind": "gd", "step_size": 0.01, "n_steps": 200}},
    "W1-exact1d": {"problem": w1_problem("exact1d"), "T": 4096, "method": {"kind": "gd", "step_size": 0.01,
                                                                         "n_steps": 200}},
    "W1-exact1d-numpy": {"problem": w1_problem("exact1d"), "kernel": "numpy", "T": 4096,
                         "method": {"kind": "gd", "step_size": 0.01, "n_steps": 200}},
    "W1-quadrature-numba": {"problem": w1_problem("quadrature"), "kernel": "mask_numba", "T": 4096,
                            "method": {"kind": "gd", "step_size": 0.01, "n_steps": 200}},
    "W2": {"problem": w2_problem(), "T": 512, "method": {"kind": "gd", "step_size": 0.01, "n_steps": 100}},
    "W2-numpy": {"problem": w2_problem(), "kernel": "mask_gemm", "T": 512,
                 "method": {"kind": "gd", "step_size": 0.01, "n_steps": 100}},
    "deep-tanh": {"problem": deep_problem("tanh"), "T": 256, "method": {"kind": "gd", "step_size": 0.01,
                                                                       "n_steps": 100}},
    "deep-relu": {"problem": deep_problem("relu"), "T": 256, "method": {"kind": "gd", "step_size": 0.01,
                                                                       "n_steps": 100}},
    "W3": {"problem": w3_problem(), "T": 1000, "method": {"kind": "gd", "step_size": 0.01, "n_steps": 1000}},
    "W4": {"problem": w1_problem("exact1d"), "T": 4096,
           "method": {"kind": "gf", "solver": "dopri5", "t_end": 100.0, "rtol": 1e-8}},
}
