"""Risk + gradient evaluations per second: exact1d (its compiled and numpy kernels) vs quadrature (M = 1024, 4096;
the sorted-points and the mask-GEMM kernel) at widths 8, 64, 512, T = 4096."""

from __future__ import annotations

import numpy as np

from ._timing import median_seconds, print_table
from .workloads import build, w1_problem


def run(T: int = 4096, widths: tuple[int, ...] = (8, 64, 512), repeats: int = 5) -> list[dict]:
    rows = []
    for width in widths:
        theta = np.random.default_rng(width).standard_normal((T, 2 + 3 * width - 1))
        rates = {}
        exact_kernels = build(w1_problem("exact1d", width)).backend.kernels  # the default first
        cases = (*(("exact1d", None, kernel) for kernel in exact_kernels), ("quadrature", 1024, "points1d"),
                 ("quadrature", 1024, "mask_gemm"), ("quadrature", 4096, "points1d"), ("quadrature", 4096, "mask_gemm"))
        for backend, m, kernel in cases:
            problem = build(w1_problem(backend, width, m or 1024), kernel)
            assert theta.shape[1] == problem.n_params
            seconds = median_seconds(lambda p=problem, th=theta: p.risk_and_grad(th), repeats=repeats)
            label = f"{backend}-{kernel}" if m is None else f"{backend}-M{m}-{kernel}"
            rates[label] = T / seconds
            rows.append({"width": width, "backend": label, "T": T, "evals_per_s": T / seconds})
        for row in rows[-len(cases):]:
            row["exact1d_over_this"] = rates[f"exact1d-{exact_kernels[0]}"] / row["evals_per_s"]
    print("risk_and_grad evaluations per second (W1 problem, float64, one core):")
    print_table(rows, ["width", "backend", "T", "evals_per_s", "exact1d_over_this"])
    return rows
