"""Closed-form Hessian of the risk for the ``exact1d`` setting (shallow ReLU net, 1D, piecewise polynomials).

With ``N_o(x) = c_o + sum_j v_oj relu(w_j x + b_j)``, residual ``r_o = N_o - f_o``, density ``p`` and unit
``j``'s active set ``A_j = {x in [alpha, beta] : w_j x + b_j > 0}`` (an interval), ``L = sum_o int r_o^2 p`` and

    d^2 L / d theta_a d theta_b = 2 sum_o int dN_o/da dN_o/db p                     (Gauss-Newton part)
                                + 2 sum_o int r_o d^2 N_o/da db p                     (residual part)

where the second derivatives of ``N`` are ``x 1_{A_j}`` for ``(w_j, v_oj)``, ``1_{A_j}`` for ``(b_j, v_oj)``, and,
because ``1_{A_j}`` moves with ``(w_j, b_j)``, a point mass at the kink ``t_j = -b_j / w_j``:
``d 1[w x + b > 0] / dw = x delta(w x + b)`` and ``int g delta(w x + b) dx = g(t) / |w|``. So:

- Gauss-Newton blocks are integrals of polynomials of degree <= 2 over ``A_i cap A_j``, an interval whose ends
  are ends of ``A_i`` or ``A_j``: with the cumulative moments ``C_m(x) = int_alpha^x (y - x0)^m p(y) dy``
  (``m = 0, 1, 2``) evaluated once per unit end, every pair costs a few selections and products;
- the ``(w_j, v_oj)`` and ``(b_j, v_oj)`` residual entries are the per-unit moments ``int_{A_j} r_o p`` and
  ``int_{A_j} (x - x0) r_o p`` that the ``exact1d`` gradient already computes (``_evaluate_f64``);
- the kink term adds ``2 sum_o r_o(t_j) v_oj p(t_j) / |w_j| * [[t^2, t], [t, 1]]`` to unit ``j``'s ``(w, b)``
  block when ``t_j`` lies inside ``(alpha, beta)``.

It is the derivative of ``G`` wherever ``G`` is differentiable: no kink on a knot of the target or density, no
unit with ``w_j = 0`` and ``b_j = 0``. At a kink on a density knot the density on the unit's active side is used
(so a unit active only where ``p = 0`` keeps exactly zero rows, as every dead unit does); at a zero-risk point
with kinks on target knots (``G`` is ``C^1`` there) the residual part vanishes and the result is the derivative
of ``G``. Moments and the target are taken in coordinates centred at the interval midpoint ``x0``.

Accuracy. Each pair's moments are differences ``C_m(hi) - C_m(lo)`` of cumulative moments, and the ``v``-blocks
combine them with the units' slopes and intercepts, so an entry's error is about ``eps`` times the scale of the
whole interval's moments (``~eps |w|^2 (beta - alpha)^3``), not relative to the entry itself: entries of units
active on a short stretch lose relative accuracy, the matrix as a whole does not (spectra are relative to the
spectral radius). Central differences of ``G`` err by ``~eps^(2/3)`` relative, far more.

Cost per trajectory ``O(H^2 k)`` elementwise work on ``(T, H, H)`` arrays, plus one ``exact1d`` gradient
evaluation, against ``2P`` gradient evaluations for a central-difference Hessian. Rows never interact (no
reduction crosses rows; sums run over the last axis of a row's own data), so a row's bits do not depend on the
batch it is in.
"""

from __future__ import annotations

import numpy as np

from ._base import Memory, RiskBackend
from ._polynomials import shift_exact

__all__ = ["exact1d_hessian", "exact1d_hessian_memory", "hessian_parts"]

# Upper bound on the elements of one (T, H, H) temporary: bounds a chunk's memory (~25 such arrays live at once).
PAIR_CHUNK_ELEMENTS = 1 << 18


class _Density:
    """The density ``p`` on ``[alpha, beta]`` and its cumulative centred moments ``C_m``, ``m = 0, 1, 2``."""

    def __init__(self, knots: np.ndarray, coefs: np.ndarray, x0: float) -> None:
        self.knots = np.asarray(knots, dtype=float)  # (K+1,)
        self.x0 = x0
        n_pieces = len(self.knots) - 1
        # each piece's polynomial in powers of u = x - x0 (exact conversion, rounded once)
        self.coefs_u = shift_exact(np.asarray(coefs, dtype=float)[:, None, :], np.full(n_pieces, x0))[:, 0, :]
        self.start = np.zeros((3, n_pieces))  # C_m at each piece's left knot
        for m in range(3):
            acc = 0.0
            for a in range(n_pieces):
                self.start[m, a] = acc
                acc += self._antiderivative(m, a, self.knots[a + 1] - x0) - \
                    self._antiderivative(m, a, self.knots[a] - x0)

    def _antiderivative(self, m: int, piece, u):
        """``int^u y^m p_piece(y) dy`` (centred coordinates), ``piece`` an index or index array like ``u``."""
        c = self.coefs_u[piece]  # (..., n+1)
        out = np.zeros_like(np.asarray(u, dtype=float))
        for q in range(self.coefs_u.shape[1] - 1, -1, -1):  # highest power first
            e = m + q + 1
            out = out + c[..., q] * u**e / e
        return out

    def piece(self, x: np.ndarray) -> np.ndarray:
        """Index of the piece holding ``x`` (the right one at a knot; ends clipped to the first/last piece)."""
        return np.clip(np.searchsorted(self.knots, x, side="right") - 1, 0, len(self.knots) - 2)

    def cumulative(self, m: int, x: np.ndarray) -> np.ndarray:
        """``C_m(x)`` for ``x`` in ``[alpha, beta]``, any shape."""
        a = self.piece(x)
        return self.start[m, a] + (self._antiderivative(m, a, x - self.x0)
                                   - self._antiderivative(m, a, self.knots[a] - self.x0))

    def __call__(self, x: np.ndarray, left: np.ndarray | bool = False) -> np.ndarray:
        """``p(x)`` for ``x`` in ``[alpha, beta]``; on a knot, the piece to its left where ``left``, else to its
        right."""
        right_piece = self.piece(x)
        left_piece = np.clip(np.searchsorted(self.knots, x, side="left") - 1, 0, len(self.knots) - 2)
        a = np.where(left, left_piece, right_piece)
        return _horner(self.coefs_u[a], x - self.x0)


class _Target:
    """The target's pieces expanded about ``x0`` (exact conversion, rounded once), evaluated in ``u = x - x0``: no
    powers of absolute ``x``, as in the ``exact1d`` kernel, so that intervals far from the origin lose nothing."""

    def __init__(self, breakpoints: np.ndarray, coefs: np.ndarray, x0: float) -> None:
        self.breakpoints = np.asarray(breakpoints, dtype=float)
        self.x0 = x0
        self.coefs_u = shift_exact(np.asarray(coefs, dtype=float), np.full(len(coefs), x0))  # (K, k, n+1)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``f(x)`` ``(..., k)`` for ``x`` of any shape."""
        piece = np.searchsorted(self.breakpoints, x, side="right")
        return _horner(self.coefs_u[piece], (x - self.x0)[..., None])


def _horner(coefs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``sum_q coefs[..., q] u^q`` (ascending powers on the last axis of ``coefs``)."""
    out = np.zeros(np.broadcast_shapes(coefs.shape[:-1], np.shape(u)))
    for q in range(coefs.shape[-1] - 1, -1, -1):
        out = out * u + coefs[..., q]
    return out


def hessian_parts(backend: RiskBackend) -> tuple[_Density, _Target]:
    """The density and target of ``backend``'s problem in the centred form the Hessian evaluates (built once)."""
    knots, coefs = backend.measure.density_pieces()
    pp = backend.target.piecewise_polynomial()
    return _Density(knots, coefs, backend.x0), _Target(pp.breakpoints, pp.coefficients, backend.x0)


def exact1d_hessian(backend: RiskBackend, theta: np.ndarray, dens: _Density, target: _Target) -> np.ndarray:
    """Hessian ``(T, P, P)`` float64 of the risk at ``theta`` ``(T, P)`` (module docstring); ``dens`` and
    ``target`` from ``hessian_parts(backend)``.

    ``backend`` is an ``Exact1DRisk``, whose layout (slices, ``x0``, ``_evaluate_f64``) this reads; it is typed as
    the base class because ``_exact1d`` imports this module (``Exact1DRisk.hessian``), not the other way round.

    Non-finite rows come back non-finite (NaN); other rows are unaffected.
    """
    theta = backend._check(theta).astype(np.float64, copy=False)
    n, p = theta.shape
    out = np.zeros((n, p, p), dtype=np.float64)
    if n == 0:
        return out
    H = backend._H
    rows = max(1, PAIR_CHUNK_ELEMENTS // (H * H))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        _, _, moments = backend._evaluate_f64(theta, need_grad=True, need_moments=True)
        for start in range(0, n, rows):
            sl = slice(start, min(n, start + rows))
            _chunk(backend, theta[sl], moments[sl], out[sl], dens, target)
    bad = ~np.all(np.isfinite(theta), axis=1)
    out[bad] = np.nan
    return out


def exact1d_hessian_memory(backend: RiskBackend) -> Memory:
    """Upper estimate of the bytes of ``exact1d_hessian`` on a batch (``Memory``): the result ``(P, P)``, the
    gradient kernel's results and moments ``(2, kv, H)`` (its ``numpy`` kernel, with its arena, whatever
    ``backend.kernel`` says) per trajectory, and per row of a pair chunk about 30 ``(H, H)`` arrays (``_chunk``
    holds some 25 at once, ``_kink_weight`` three more)."""
    H, k, P = backend._H, backend._k, backend.arch.n_params
    kv = 1 if backend._fixed is not None else k
    per_trajectory = 8 * (P * P + 2 * P + 1 + 2 * kv * H)
    pairs = max(1, PAIR_CHUNK_ELEMENTS // (H * H))
    # fixed: the density and target in the Hessian's form, built on first use and kept on the backend
    return Memory(64 << 10, per_trajectory, ((8 * 30 * H * H, pairs),
                                        (backend._arena_row_bytes(), backend._chunk_rows())))._merged()


def _chunk(backend: RiskBackend, th: np.ndarray, moments: np.ndarray, out: np.ndarray, dens: _Density,
           target: _Target) -> None:
    """Fill ``out`` ``(T, P, P)`` (zeros on entry) with the Hessians of the rows ``th`` ``(T, P)``."""
    T = th.shape[0]
    H, k = backend._H, backend._k
    fixed = backend._fixed
    x0, alpha, beta = backend.x0, backend.alpha, backend.beta
    w_sl, b_sl, v_sl, c_sl = backend._w_sl, backend._b_sl, backend._v_sl, backend._c_sl

    w = th[:, w_sl]  # (T, H)
    b = th[:, b_sl] if b_sl is not None else np.zeros_like(w)
    if fixed is None:
        v = th[:, v_sl].reshape(T, k, H)
    else:
        v = np.full((T, k, H), fixed)
    z0 = w * x0 + b  # pre-activation at x0

    # each unit's active interval [lo, hi] within [alpha, beta] (lo == hi: empty)
    t = -b / w  # +-inf or NaN where w == 0, masked below
    tc = np.clip(t, alpha, beta)
    pos, neg = w > 0, w < 0
    always = (w == 0) & (b > 0)
    lo = np.where(pos, tc, alpha)
    hi = np.where(neg, tc, np.where(pos | always, beta, alpha))
    F_lo = [dens.cumulative(m, lo) for m in range(3)]
    F_hi = [dens.cumulative(m, hi) for m in range(3)]

    # pairwise moments M_m[i, j] = int over A_i cap A_j of (x - x0)^m p, (T, H, H)
    lo_i, lo_j = lo[:, :, None], lo[:, None, :]
    hi_i, hi_j = hi[:, :, None], hi[:, None, :]
    take_lo_i = lo_i >= lo_j
    take_hi_i = hi_i <= hi_j
    nonempty = np.minimum(hi_i, hi_j) > np.maximum(lo_i, lo_j)
    M = []
    for m in range(3):
        f_hi = np.where(take_hi_i, F_hi[m][:, :, None], F_hi[m][:, None, :])
        f_lo = np.where(take_lo_i, F_lo[m][:, :, None], F_lo[m][:, None, :])
        M.append(np.where(nonempty, f_hi - f_lo, 0.0))
    M0, M1, M2 = M
    X1 = M1 + x0 * M0  # int x
    X2 = M2 + 2.0 * x0 * M1 + x0 * x0 * M0  # int x^2

    # Gauss-Newton: (w, b) blocks, weighted by V_ij = sum_o v_oi v_oj
    V = v[:, 0, :, None] * v[:, 0, None, :]
    for o in range(1, k):
        V = V + v[:, o, :, None] * v[:, o, None, :]
    hww = 2.0 * V * X2
    hwb = 2.0 * V * X1
    hbb = 2.0 * V * M0

    # residual moments (from the gradient kernel) and the kink term
    s0, s1 = moments[:, 0], moments[:, 1]  # (T, kv, H)
    inside = (t > alpha) & (t < beta) & (w != 0)
    kink = _kink_weight(backend, th, w, z0, v, t, inside, dens, target)  # (T, H): 2 sum_o r_o(t) v_o p(t) / |w|
    diag = np.arange(H)
    tk = np.where(inside, t, 0.0)
    hww[:, diag, diag] += kink * tk * tk
    hwb[:, diag, diag] += kink * tk
    hbb[:, diag, diag] += kink

    out[:, w_sl, w_sl] = hww
    if b_sl is not None:
        out[:, w_sl, b_sl] = hwb
        out[:, b_sl, w_sl] = np.swapaxes(hwb, 1, 2)
        out[:, b_sl, b_sl] = hbb

    if fixed is None:
        # (w_i, v_oj): 2 v_oi int x 1_i relu_j; (b_i, v_oj): 2 v_oi int 1_i relu_j; (v_oi, v_oj): 2 int relu_i relu_j
        w_j, z_j = w[:, None, :], z0[:, None, :]
        xr = w_j * (M2 + x0 * M1) + z_j * X1  # [i, j] = int over A_i cap A_j of x relu_j
        r1 = w_j * M1 + z_j * M0  # [i, j] = int over A_i cap A_j of relu_j
        rr = (w[:, :, None] * w_j) * M2 + (w[:, :, None] * z_j + z0[:, :, None] * w_j) * M1 \
            + (z0[:, :, None] * z_j) * M0
        for o in range(k):
            vo = slice(v_sl.start + o * H, v_sl.start + (o + 1) * H)
            hwv = 2.0 * v[:, o, :, None] * xr
            hwv[:, diag, diag] += 2.0 * (s1[:, o] + x0 * s0[:, o])
            out[:, w_sl, vo] = hwv
            out[:, vo, w_sl] = np.swapaxes(hwv, 1, 2)
            if b_sl is not None:
                hbv = 2.0 * v[:, o, :, None] * r1
                hbv[:, diag, diag] += 2.0 * s0[:, o]
                out[:, b_sl, vo] = hbv
                out[:, vo, b_sl] = np.swapaxes(hbv, 1, 2)
            out[:, vo, vo] = 2.0 * rr
        if c_sl is not None:
            mass = dens.cumulative(0, np.asarray(beta)) - dens.cumulative(0, np.asarray(alpha))
            s_x1 = X1[:, diag, diag]  # int over A_j of x
            s_m0 = M0[:, diag, diag]
            s_r = r1[:, diag, diag]  # int over A_j of relu_j
            for o in range(k):
                co = c_sl.start + o
                vo = slice(v_sl.start + o * H, v_sl.start + (o + 1) * H)
                out[:, co, co] = 2.0 * mass
                for col, val in ((w_sl, 2.0 * v[:, o] * s_x1), (vo, 2.0 * s_r)):
                    out[:, co, col] = val
                    out[:, col, co] = val
                if b_sl is not None:
                    out[:, co, b_sl] = 2.0 * v[:, o] * s_m0
                    out[:, b_sl, co] = 2.0 * v[:, o] * s_m0


def _kink_weight(backend: RiskBackend, th: np.ndarray, w: np.ndarray, z0: np.ndarray, v: np.ndarray,
                 t: np.ndarray, inside: np.ndarray, dens: _Density, target: _Target) -> np.ndarray:
    """``2 sum_o r_o(t_j) v_oj p(t_j) / |w_j|`` ``(T, H)`` for units whose kink is inside ``(alpha, beta)``."""
    T, H = w.shape
    k, x0 = backend._k, backend.x0
    tt = np.where(inside, t, x0)
    # N_o(t_j) = c_o + sum_i v_oi relu(w_i (t_j - x0) + z0_i), summed over the last axis of each row
    pre = w[:, None, :] * (tt - x0)[:, :, None] + z0[:, None, :]  # [j, i]
    act = np.maximum(pre, 0.0)
    f = target(tt)  # (T, H, k)
    acc = np.zeros((T, H))
    for o in range(k):
        n_o = (act * v[:, o, None, :]).sum(axis=-1)
        if backend._c_sl is not None:
            n_o = n_o + th[:, backend._c_sl][:, o, None]
        acc = acc + (n_o - f[:, :, o]) * v[:, o]
    # on a density knot, the density on the unit's active side: a unit active only where p = 0 stays dead
    return np.where(inside, 2.0 * acc * dens(tt, left=w < 0) / np.abs(w), 0.0)
