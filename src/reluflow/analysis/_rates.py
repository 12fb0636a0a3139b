"""Convergence-rate fits of risk curves: exponential (C7) and polynomial (C6, C11) tails.

Models for the tail of a risk curve ``L(t)``, with ``x = t`` (exponential) or ``x = log(1 + t)`` (polynomial):

    exponential:  L(t) - L_inf = C exp(-rate_exp * t)         log(L - L_inf) = a - rate_exp  * t
    polynomial:   L(t) - L_inf = C (1 + t)^(-rate_poly)       log(L - L_inf) = a - rate_poly * log(1 + t)

The polynomial model is written in ``1 + t`` (time origin at ``t = -1``, as in C11's ``(1 + t)^{-1}`` bound),
so that it is defined from ``t = 0`` on; for ``t >> 1`` it is the same as ``t^{-p}``.

Tail. Per trajectory, the points with ``valid`` and finite ``t``, ``L`` are ordered by ``t``; the tail is the
last ``ceil(tail_fraction * n)`` of them, at least ``MIN_POINTS = 3``. Points that have reached the
floating-point floor (``L <= L_min (1 + 4 eps)``, with ``L_min`` the tail minimum) carry no rate information:
only the first of them is kept. A curve that has been flat at round-off for a long time should be cut off by
the caller (``valid``) before the floor anyway.

Limit ``L_inf``. Unbounded runs: ``L_inf = 0`` (C4: the risk may still go to zero). Bounded runs: a
three-parameter fit per model ``(L_inf, a, rate)`` in log space: ``L_inf`` is the value in ``[0, L_min)`` that
makes ``log(L - L_inf)`` most nearly linear in ``x``, i.e. maximizes the ``R^2`` of the linear fit. This is a
profile over one parameter, ``L_inf = L_min (1 - s)`` with ``s`` in ``[1e-13, 1]`` (``s = 1``: ``L_inf = 0``),
searched on a grid in ``log s`` (4 points per decade) and refined by golden section. ``R^2`` (not the residual
sum of squares) is the criterion because it is scale-free: as ``L_inf -> -inf`` the log-curve flattens and its
residuals shrink without the fit getting any better. Log-space residuals weigh every decade of ``L - L_inf``
alike, which is what a rate is about. Fallback, when the tail has only 3 points: Aitken's ``Delta^2``
extrapolation ``L_3 - (L_3 - L_2)^2 / ((L_3 - L_2) - (L_2 - L_1))`` (exact for an exponential sampled at equal
steps), kept if it lies in ``[0, L_min)``, else ``L_inf = 0``. If ``L_min <= 0`` the curve has reached zero
and ``L_inf = 0``; if fewer than 3 points remain above the floating-point floor, the curve has converged to
round-off and ``L_inf = L_min`` (with no rate).

Each model gets its own ``L_inf``; both then have three parameters on the same points, and ``rate_best`` is
the model with the larger ``R^2`` among those with a positive rate ("none" if neither has one, or if fewer
than 3 points have ``L > L_inf``). ``risk_inf`` is the ``L_inf`` of the best model (of the exponential model
when "none"). On short windows an exponential and a polynomial tail can mimic each other once ``L_inf`` is
free: read ``rate_best`` together with the two ``R^2`` values, and prefer long tails (several decades of
``L - L_inf``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..risk import Memory

__all__ = ["rate_fits", "rate_fits_memory", "RATE_MODELS"]

RATE_MODELS = ("exponential", "polynomial")
MIN_POINTS = 3
LOG_S_MIN = -13.0  # smallest relative gap (L_min - L_inf) / L_min searched: ~100 eps
GRID_PER_DECADE = 4
GOLDEN_ITERATIONS = 48  # shrinks the bracket (half a decade) to ~5e-11 decades
STAGNATION_RTOL = 4 * np.finfo(np.float64).eps
CHUNK_ELEMENTS = 1 << 22


def _linear_fit(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked least-squares line ``y = a + slope x`` along the last axis: ``(slope, r2, n)``.

    ``r2`` is NaN where ``x`` or ``y`` has no spread (or fewer than 2 points).
    """
    n = mask.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(mask, x, 0.0).sum(axis=-1) / n
        ym = np.where(mask, y, 0.0).sum(axis=-1) / n
        dx = np.where(mask, x - xm[..., None], 0.0)
        dy = np.where(mask, y - ym[..., None], 0.0)
        sxx = np.einsum("...c,...c->...", dx, dx)
        sxy = np.einsum("...c,...c->...", dx, dy)
        syy = np.einsum("...c,...c->...", dy, dy)
        slope = np.where(sxx > 0, sxy / sxx, np.nan)
        r2 = np.where((sxx > 0) & (syy > 0), sxy * sxy / (sxx * syy), np.nan)
    return slope, np.minimum(r2, 1.0), n


def _log_gap(L: np.ndarray, l_inf: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log(L - L_inf)`` (0 outside the returned mask) and the mask of points where the gap is positive."""
    gap = L - l_inf
    with np.errstate(invalid="ignore"):
        ok = mask & (gap > 0)
    y = np.zeros(np.broadcast_shapes(gap.shape, ok.shape))
    np.log(gap, out=y, where=ok)
    return y, ok


@dataclass(frozen=True)
class _Design:
    """The ``x`` side of masked line fits, once per model: weights, counts, centred ``x``, ``S_xx``."""

    w: np.ndarray
    n: np.ndarray
    dx: np.ndarray
    sxx: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, mask: np.ndarray) -> _Design:
        w = mask.astype(np.float64)
        n = w.sum(axis=1)
        x0 = np.where(mask, x, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            xm = x0.sum(axis=1) / n
        dx = w * (x0 - xm[:, None])
        return cls(w, n, dx, np.einsum("nc,nc->n", dx, dx))

    def take(self, rows: slice) -> _Design:
        return _Design(self.w[rows], self.n[rows], self.dx[rows], self.sxx[rows])

    def r2(self, y: np.ndarray) -> np.ndarray:
        """``R^2`` of masked fits of ``y`` ``(n, C)`` or ``(n, S, C)`` (finite), ``-inf`` where undefined."""
        w, dx = (self.w, self.dx) if y.ndim == 2 else (self.w[:, None, :], self.dx[:, None, :])
        n = self.n if y.ndim == 2 else self.n[:, None]
        sxx = self.sxx if y.ndim == 2 else self.sxx[:, None]
        sxy = np.einsum("...c,...c->...", dx, y)  # dx vanishes off the mask, so y needs no centring here
        with np.errstate(invalid="ignore", divide="ignore"):
            ym = np.einsum("...c,...c->...", w, y) / n
            dy = w * (y - ym[..., None])
            syy = np.einsum("...c,...c->...", dy, dy)
            r2 = np.minimum(sxy * sxy / (sxx * syy), 1.0)
        return np.where((sxx > 0) & (syy > 0) & np.isfinite(r2), r2, -np.inf)


def _fit_l_inf(xs: dict[str, np.ndarray], L: np.ndarray, mask: np.ndarray, l_min: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Profile-``R^2`` estimates of ``L_inf`` in ``[0, L_min)`` for each row and model (module docstring).

    On the fitted points ``L >= L_min > L_inf``, so the mask of the fits does not depend on ``L_inf``.
    """
    n, c = L.shape
    designs = {m: _Design.of(x, mask) for m, x in xs.items()}
    n_grid = int(round(-LOG_S_MIN * GRID_PER_DECADE)) + 1
    grid = np.linspace(LOG_S_MIN, 0.0, n_grid)
    best_r2 = {m: np.empty(n) for m in xs}
    best_i = {m: np.empty(n, dtype=np.int64) for m in xs}
    rows = max(1, CHUNK_ELEMENTS // max(1, n_grid * c))
    for start in range(0, n, rows):
        sl = slice(start, min(n, start + rows))
        l_inf = l_min[sl, None] * (1.0 - 10.0**grid)[None, :]  # (m, S): the same grid for every model
        y, _ = _log_gap(L[sl, None, :], l_inf[..., None], mask[sl, None, :])
        for m, design in designs.items():
            r2 = design.take(sl).r2(y)
            best_i[m][sl] = np.argmax(r2, axis=1)
            best_r2[m][sl] = np.take_along_axis(r2, best_i[m][sl, None], axis=1)[:, 0]

    out = {}
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    for m, design in designs.items():

        def f(log_s: np.ndarray, design: _Design = design) -> np.ndarray:
            return design.r2(_log_gap(L, (l_min * (1.0 - 10.0**log_s))[:, None], mask)[0])

        # golden-section search for the maximum between the grid neighbours of the best grid point
        a = grid[np.maximum(best_i[m] - 1, 0)]
        b = grid[np.minimum(best_i[m] + 1, n_grid - 1)]
        p1, p2 = b - ratio * (b - a), a + ratio * (b - a)
        f1, f2 = f(p1), f(p2)
        for _ in range(GOLDEN_ITERATIONS):
            left = f1 >= f2  # the maximum lies in [a, p2]
            a = np.where(left, a, p1)
            b = np.where(left, p2, b)
            new = np.where(left, b - ratio * (b - a), a + ratio * (b - a))
            f_new = f(new)
            p1, p2, f1, f2 = (np.where(left, new, p2), np.where(left, p1, new),
                              np.where(left, f_new, f2), np.where(left, f1, f_new))
        refined = np.where(f1 >= f2, p1, p2)
        log_s = np.where(np.maximum(f1, f2) > best_r2[m], refined, grid[best_i[m]])
        out[m] = l_min * (1.0 - 10.0**log_s)
    return out


def _aitken(L: np.ndarray, mask: np.ndarray, l_min: np.ndarray) -> np.ndarray:
    """Aitken ``Delta^2`` limit of the three masked points of each row (in order), or 0 if unusable."""
    idx = np.argsort(~mask, axis=1, kind="stable")[:, :3]  # the masked columns, in order
    l1, l2, l3 = (np.take_along_axis(L, idx[:, k : k + 1], axis=1)[:, 0] for k in range(3))
    d1, d2 = l2 - l1, l3 - l2
    with np.errstate(invalid="ignore", divide="ignore"):
        est = l3 - d2 * d2 / (d2 - d1)
    good = np.isfinite(est) & (est >= 0) & (est < l_min)
    return np.where(good, est, 0.0)


def rate_fits_memory(n_checkpoints: int) -> Memory:
    """Upper estimate of the bytes ``rate_fits`` holds at its peak (``risk.Memory``) for curves of
    ``n_checkpoints`` columns, as a function of the batch: some forty ``(C,)`` vectors per trajectory (sorted
    copies, masks, ranks, the two models' designs, the golden-section search's gaps and fits), and per row of a
    profile chunk (``CHUNK_ELEMENTS // (S C)`` rows, ``S`` grid points) the log gaps, their centred values and a
    temporary ``(S, C)``, with masks (measured 27 bytes per point of the grid). Every row is counted as profiled
    (the most it can do), where the tails are long enough for that."""
    c = max(1, n_checkpoints)
    vectors = Memory(32 << 10, 8 * 40 * c + 256)
    if max(MIN_POINTS, math.ceil(0.5 * c)) < MIN_POINTS + 1:  # tails too short to profile (at tail_fraction 0.5)
        return vectors
    n_grid = int(round(-LOG_S_MIN * GRID_PER_DECADE)) + 1
    rows = max(1, CHUNK_ELEMENTS // (n_grid * c))
    return vectors.plus(Memory(0.0, 0.0, ((n_grid * c * 30, rows),)))


def rate_fits(
    t: np.ndarray,
    risk: np.ndarray,
    valid: np.ndarray,
    *,
    bounded: np.ndarray,
    tail_fraction: float = 0.5,
) -> dict[str, np.ndarray]:
    """Fit exponential and polynomial tails to risk curves (module docstring).

    ``t``, ``risk``, ``valid`` ``(T, C)``: checkpoint times, risks, and which checkpoints exist (curves of
    different lengths are padded); ``bounded`` ``(T,)`` bool: whether the run stayed bounded (then ``L_inf``
    is fitted, else it is 0). Returns a dict of ``(T,)`` arrays: ``risk_inf``, ``rate_exp``
    (``-d log(L - L_inf) / dt``), ``r2_exp``, ``rate_poly`` (``-d log(L - L_inf) / d log(1 + t)``),
    ``r2_poly`` (float, NaN where not fitted) and ``rate_best`` (object: ``exponential``, ``polynomial`` or
    ``none``).
    """
    t = np.asarray(t, dtype=np.float64)
    L = np.asarray(risk, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    bounded = np.asarray(bounded, dtype=bool)
    if t.ndim != 2 or t.shape != L.shape or t.shape != valid.shape:
        raise ValueError(
            f"t {t.shape}, risk {L.shape} and valid {valid.shape} must have the same shape (T, C)")
    n_traj = t.shape[0]
    if bounded.shape != (n_traj,):
        raise ValueError(f"bounded has shape {bounded.shape}: expected ({n_traj},)")
    if not 0.0 < tail_fraction <= 1.0:
        raise ValueError(f"tail_fraction = {tail_fraction!r} is not allowed: expected a number in (0, 1]")

    usable = valid & np.isfinite(t) & np.isfinite(L) & (t > -1.0)
    order = np.argsort(np.where(usable, t, np.inf), axis=1, kind="stable")
    t = np.take_along_axis(t, order, axis=1)
    L = np.take_along_axis(L, order, axis=1)
    usable = np.take_along_axis(usable, order, axis=1)
    n_use = usable.sum(axis=1)
    n_tail = np.minimum(n_use, np.maximum(MIN_POINTS, np.ceil(tail_fraction * n_use).astype(np.int64)))
    rank = np.cumsum(usable, axis=1)
    tail = usable & (rank > (n_use - n_tail)[:, None])
    has_tail = n_use >= MIN_POINTS
    tail &= has_tail[:, None]

    l_min = np.where(tail, L, np.inf).min(axis=1, initial=np.inf)
    # keep only the first point at the floating-point floor
    at_floor = tail & (L <= (l_min * (1.0 + STAGNATION_RTOL))[:, None]) & (l_min > 0)[:, None]
    first_floor = np.cumsum(at_floor, axis=1) == 1
    fit = tail & ~(at_floor & ~first_floor)
    n_fit = fit.sum(axis=1)

    x_models = {"exponential": t, "polynomial": np.log1p(np.where(usable, t, 0.0))}
    l_inf = {m: np.where(has_tail, 0.0, np.nan) for m in RATE_MODELS}
    profile = has_tail & bounded & (l_min > 0) & (n_fit >= MIN_POINTS + 1)
    fallback = has_tail & bounded & (l_min > 0) & (n_fit == MIN_POINTS)
    if fallback.any():
        est = _aitken(L[fallback], fit[fallback], l_min[fallback])
        for m in RATE_MODELS:
            l_inf[m][fallback] = est
    if profile.any():
        fitted = _fit_l_inf({m: x_models[m][profile] for m in RATE_MODELS}, L[profile], fit[profile],
                            l_min[profile])
        for m in RATE_MODELS:
            l_inf[m][profile] = fitted[m]
    # a bounded tail that sits at the floating-point floor has converged: its limit is its minimum
    floor = has_tail & bounded & (l_min > 0) & (n_fit < MIN_POINTS)
    for m in RATE_MODELS:
        l_inf[m][floor] = l_min[floor]

    out: dict[str, np.ndarray] = {}
    for m, key in (("exponential", "exp"), ("polynomial", "poly")):
        y, ok = _log_gap(L, l_inf[m][:, None], fit)
        slope, r2, n_ok = _linear_fit(x_models[m], y, ok)
        enough = has_tail & (n_ok >= MIN_POINTS)
        out[f"rate_{key}"] = np.where(enough, -slope, np.nan)
        out[f"r2_{key}"] = np.where(enough, r2, np.nan)

    def score(key: str) -> np.ndarray:
        r2, rate = out[f"r2_{key}"], out[f"rate_{key}"]
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(r2) & (rate > 0), r2, -np.inf)

    s_exp, s_poly = score("exp"), score("poly")
    best = np.full(n_traj, "none", dtype=object)
    exp_wins = np.isfinite(s_exp) & (s_exp >= s_poly)
    poly_wins = np.isfinite(s_poly) & (s_poly > s_exp)
    best[exp_wins] = "exponential"
    best[poly_wins] = "polynomial"
    out["risk_inf"] = np.where(poly_wins, l_inf["polynomial"], l_inf["exponential"])
    out["rate_best"] = best
    return {k: out[k] for k in ("risk_inf", "rate_exp", "r2_exp", "rate_poly", "r2_poly", "rate_best")}
