"""Cost curves: microseconds per trajectory and risk-and-gradient evaluation of each quadrature kernel as one of
``T`` (batch), ``H`` (width), ``M`` (points) and ``d`` (input dimension) grows from a base problem, the others held,
so that a study's cost can be predicted (bench/README.md has the tables and the fitted growth)."""

from __future__ import annotations

import numpy as np

import reluflow

from ._timing import median_seconds, print_table

# W2's sizes for the mask kernels, W1's for the sorted-points kernels (1D only), the deep workload's (two tanh
# layers of width H) for the backpropagation kernels
BASES = {"mask_numba": {"T": 512, "H": 64, "M": 2048, "d": 8}, "mask_gemm": {"T": 512, "H": 64, "M": 2048, "d": 8},
         "points1d_numba": {"T": 4096, "H": 32, "M": 1024, "d": 1}, "points1d": {"T": 4096, "H": 32, "M": 1024, "d": 1},
         "backprop_numba": {"T": 256, "H": 32, "M": 1024, "d": 2}, "backprop": {"T": 256, "H": 32, "M": 1024, "d": 2}}
DEEP = ("backprop_numba", "backprop")
GRID = {"T": (64, 512, 4096), "H": (16, 64, 256), "M": (512, 2048, 8192), "d": (2, 8, 32)}


def _problem(H: int, M: int, d: int, deep: bool = False) -> reluflow.Problem:
    measure = {"kind": "uniform", "low": 0.0, "high": 1.0} if d == 1 else \
        {"kind": "empirical", "sample": {"distribution": "gaussian", "n_points": M, "seed": 0, "dim": d}}
    network = {"input_dim": d, "widths": [H, H], "activation": "tanh"} if deep else {"input_dim": d, "widths": [H]}
    return reluflow.Problem.from_dict({
        "network": network, "measure": measure,
        "target": {"kind": "function", "name": "abs", "shift": -0.5} if d == 1 else
        {"kind": "teacher", "widths": [8], "seed": 0},
        "risk": {"backend": "quadrature", "n_points": M}})


def run(repeats: int = 3, quick: bool = False) -> dict:
    rows = []
    for kernel, base in BASES.items():
        for axis, values in GRID.items():
            if kernel.startswith("points1d") and axis == "d":
                continue
            for value in values[:2] if quick else values:
                size = {**base, axis: value}
                p = _problem(size["H"], size["M"], size["d"], deep=kernel in DEEP)
                if kernel not in p.backend.kernels:
                    continue
                p.backend.kernel = kernel
                T = max(1, size["T"] // (8 if quick else 1))
                # the numpy mask kernel at the largest sizes: fewer trajectories (its cost per trajectory is flat in T
                # beyond one chunk)
                if kernel == "mask_gemm" and axis != "T":
                    T = min(T, 64)
                # the deep kernels at H = 256 or M = 8192: O(M H^2) per trajectory, ~30x the base
                if kernel in DEEP and axis != "T":
                    T = min(T, 32)
                theta = np.random.default_rng(0).standard_normal((T, p.n_params))
                sec = median_seconds(lambda p=p, th=theta: p.risk_and_grad(th), repeats=repeats)
                rows.append({"kernel": kernel, "axis": axis, **size, "T": T, "us_per_traj_eval": sec / T * 1e6})
    print("Cost curves (float64, one core; microseconds per trajectory and risk-and-gradient evaluation, median "
          f"of {repeats}):")
    print_table(rows, ["kernel", "axis", "T", "H", "M", "d", "us_per_traj_eval"])
    return {"rows": rows}
