"""Polynomial helpers shared by the ``exact1d`` kernel (``_exact1d``) and its closed-form Hessian (``_hessian1d``)."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np

__all__ = ["shift_exact"]


def shift_exact(coefs: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Re-expand ``coefs`` ``(S, k, n+1)`` (powers of ``x``) in powers of ``x - centers[s]``, ``(S, k, n+1)``.

    Exact rational arithmetic, rounded once at the end: the given polynomials are the data, and this keeps the
    centered form as accurate as float64 allows however far the piece is from the origin. One-off, small.
    """
    out = np.empty(coefs.shape, dtype=float)
    n = coefs.shape[-1] - 1
    for s in range(coefs.shape[0]):
        c = Fraction(float(centers[s]))
        powers = [c**i for i in range(n + 1)]
        for kk in range(coefs.shape[1]):
            g = [Fraction(float(x)) for x in coefs[s, kk]]
            for qd in range(n + 1):
                out[s, kk, qd] = float(sum(g[m] * comb(m, qd) * powers[m - qd] for m in range(qd, n + 1)))
    return out
