"""Where a certified-limit check first succeeds along a GD run, with the Weyl shift of ``eig_bounds_box`` bounded
by ``perron_bound`` (the default) and by the radii's row sums: ``python -m bench.certify_reach`` (~1 min).

SS2018's setting (``n = k``, teacher of unit vectors, seed 0), GD with step 0.05 from three standard-normal starts
(scaled by ``1/sqrt(k)``), ``certified_gd_limit`` every 250 steps with each bound until both have succeeded.
Printed per run: its risk there, and for each bound the first step, ``|G|`` and the ball's radius. Needs
python-flint.
"""

from __future__ import annotations

import json

import numpy as np

from reluflow.analysis import _certify_gaussian as certify_gaussian
from reluflow.analysis import certified_gd_limit

from .certify_gaussian import ss_problem

RUNS = ((8, 8, 3), (8, 8, 11), (10, 10, 5))  # (k, seed, row): the test's spurious run, a global one, a k = 10 one


def row_sums(rad: np.ndarray) -> float:
    """The former bound: ``max_a sum_b S_ab``, rounded up as ``perron_bound`` rounds."""
    S = np.maximum(rad, rad.T)
    P, u = S.shape[0], 2.0**-53
    return float(np.nextafter(float(np.max(S.sum(axis=1))) * (1 + (P + 5) * u / (1 - (P + 5) * u)), np.inf))


def main() -> None:
    bounds = {"perron": certify_gaussian.perron_bound, "row_sums": row_sums}
    for k, seed, row in RUNS:
        p = ss_problem(k, k)
        theta = np.random.default_rng(seed).standard_normal((100, k * k))[row:row + 1] / np.sqrt(k)
        first: dict[str, dict[str, float]] = {}
        for step in range(40001):
            risk, grad = p.risk_and_grad(theta)
            if step % 250 == 0:
                for name, bound in bounds.items():
                    if name in first:
                        continue
                    certify_gaussian.perron_bound = bound
                    try:
                        out = certified_gd_limit(p, theta, 0.05)
                    finally:
                        certify_gaussian.perron_bound = bounds["perron"]
                    if out["limit_certified"][0]:
                        first[name] = {"step": step, "grad_norm": float(np.linalg.norm(grad)),
                                       "ball": float(out["limit_ball"][0])}
                if len(first) == len(bounds) or np.linalg.norm(grad) < 1e-11:
                    break
            theta = theta - 0.05 * grad
        print(json.dumps({"k": k, "seed": seed, "row": row, "risk": round(float(risk[0]), 4), "first": first}),
              flush=True)


if __name__ == "__main__":
    main()
