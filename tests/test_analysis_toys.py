"""Toy problems and constructed network points shared by the analysis tests (this module holds no tests)."""

from __future__ import annotations

import numpy as np
import pytest

import reluflow


class Quadratic:
    """``L(theta) = 1/2 theta^T A theta - g^T theta`` with ``G = A theta - g``: the Hessian is ``A`` exactly.

    The products are elementwise sums (no BLAS) so that each row's result is bitwise independent of the batch.
    """

    def __init__(self, a: np.ndarray, g: np.ndarray | None = None) -> None:
        self.a = np.asarray(a, dtype=float)
        self.g = np.zeros(len(self.a)) if g is None else np.asarray(g, dtype=float)
        self.n_params = len(self.a)
        self.calls = 0

    def risk_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        theta = np.asarray(theta, dtype=float)
        grad = (theta[:, None, :] * self.a[None]).sum(axis=-1) - self.g
        risk = 0.5 * (theta * (grad - self.g)).sum(axis=-1)
        return risk, grad


class Saddle2D:
    """``L(x, y) = x^2 - y^2``: a saddle at the origin, Hessian ``diag(2, -2)``."""

    n_params = 2

    def risk_and_grad(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        theta = np.asarray(theta, dtype=float)
        return theta[:, 0] ** 2 - theta[:, 1] ** 2, np.stack([2 * theta[:, 0], -2 * theta[:, 1]], axis=1)


def shallow_problem(width: int, target: dict, backend: str = "quadrature") -> reluflow.Problem:
    """A shallow ReLU net on ``U[0, 1]``; skips the test if ``backend`` is not implemented yet."""
    problem = reluflow.Problem.from_dict({
        "network": {"input_dim": 1, "widths": [width]},
        "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
        "target": target,
        "risk": {"backend": backend, "n_points": 2048},
    })
    try:
        problem.risk_and_grad(np.zeros((1, problem.n_params)))
    except NotImplementedError:
        pytest.skip(f"risk backend {backend!r} is not implemented yet")
    return problem


def theta_of(w, b, v, c) -> np.ndarray:
    """One flat parameter row ``(1, P)`` of a shallow 1D net: ``theta = (w, b, v, c)``."""
    return np.concatenate([np.ravel(w), np.ravel(b), np.ravel(v), np.ravel(c)]).astype(float)[None, :]


# A relu-representable piecewise affine target: f(x) = 0.3 + relu(x - 1/4) - relu(2x - 1). Its kinks 1/4 and
# 1/2 are panel edges of the 2048-point composite Gauss-Legendre rule, so the quadrature risk is exact there
# and the finite-difference steps never move a kink across a node.
PL_TARGET = {"kind": "piecewise_affine", "knots": [0.0, 0.25, 0.5, 1.0], "values": [0.3, 0.3, 0.55, 0.05]}
# two active units reproducing PL_TARGET and one unit dead on [0, 1] (kink at -1/2, off to the left)
PL_GLOBAL_MIN = theta_of(w=[1.0, 2.0, -1.0], b=[-0.25, -1.0, -0.5], v=[1.0, -1.0, 0.7], c=[0.3])
