"""Cost curves: microseconds per trajectory and risk-and-gradient evaluation of each quadrature kernel as one of
``T`` (batch), ``H`` (width), ``M`` (points) and ``d`` (input dimension) grows from a base problem, the others held,
so that a study's cost can be predicted (bench/README.md has the tables and the fitted growth); and the gaussian
backend's two kernels side by side on the SS2018 study's problems (``gaussian_kernels``)."""

from __future__ import annotations

import time

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
    return {"rows": rows, "gaussian": gaussian_kernels(repeats=5 if quick else 15, quick=quick)}


# SS2018 cells (bench/certstop_validate.py): k = d = teacher units, n = student units
GAUSSIAN_CELLS = ("k6_n6", "k10_n10", "k10_n11", "k20_n20")


def gaussian_kernels(repeats: int = 15, quick: bool = False, batches: tuple[int, ...] = (1, 128)) -> dict:
    """The gaussian backend's ``numba`` and ``numpy`` kernels on the SS2018 problems, T = 1 and 128 trajectories at
    the study's initialization scale: microseconds per trajectory and risk-and-gradient evaluation, interleaved
    (each repeat times both kernels in turn, so a change in the machine's load hits both), medians with [min, max]
    over the repeats, and the numpy / numba ratio per repeat (median [min, max])."""
    from .certstop_validate import cell

    rows = []
    for label in GAUSSIAN_CELLS:
        p = reluflow.Problem.from_dict(cell(label))
        be = p.backend
        if "numba" not in be.kernels:
            print(f"gaussian kernels: numba is not installed, nothing to compare ({label})")
            return {"rows": rows}
        k = p.architecture.input_dim
        for T in batches:
            theta = np.random.default_rng([T, k]).standard_normal((T, p.n_params)) / np.sqrt(k)
            calls = max(1, (400 if T == 1 else 12) // (4 if quick else 1))  # ~5-40 ms per timing
            us = {kernel: [] for kernel in ("numba", "numpy")}
            for kernel in us:  # warm-up (and compilation)
                be.kernel = kernel
                p.risk_and_grad(theta)
            for _ in range(repeats):
                for kernel in us:
                    be.kernel = kernel
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        p.risk_and_grad(theta)
                    us[kernel].append((time.perf_counter() - t0) / calls / T * 1e6)
            be.kernel = be.kernels[0]
            fast, slow = np.array(us["numba"]), np.array(us["numpy"])
            ratio = slow / fast
            rows.append({"cell": label, "H": p.architecture.widths[0], "n": k, "d": k, "T": T,
                         "numba_us": float(np.median(fast)), "numba_min": float(fast.min()),
                         "numba_max": float(fast.max()), "numpy_us": float(np.median(slow)),
                         "numpy_min": float(slow.min()), "numpy_max": float(slow.max()),
                         "ratio": float(np.median(ratio)), "ratio_min": float(ratio.min()),
                         "ratio_max": float(ratio.max())})
    print(f"\ngaussian kernels on the SS2018 problems (float64, one core; microseconds per trajectory and "
          f"risk-and-gradient evaluation, median [min, max] of {repeats} interleaved repeats; ratio numpy / numba):")
    print_table(rows, ["cell", "H", "d", "T", "numba_us", "numba_min", "numba_max", "numpy_us", "numpy_min",
                       "numpy_max", "ratio", "ratio_min", "ratio_max"])
    return {"rows": rows}
