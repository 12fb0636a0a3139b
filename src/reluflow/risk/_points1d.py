"""Risk and generalized gradient of a shallow 1D ReLU net on a weighted point set, with no ``H x M`` work.

The ``quadrature`` backend's kernel for input dimension 1 (a 1D quadrature rule or an empirical sample). With
the points sorted once, ``x_1 <= ... <= x_M``, each unit's active set ``{m : w_j x_m + b_j > 0}`` is a run of
consecutive points: a suffix ``m >= s_j`` when ``w_j > 0`` (``x_m > t_j = -b_j / w_j``), a prefix ``m < e_j``
when ``w_j < 0`` (``x_m < t_j``), all points or none when ``w_j = 0`` (``relu'(b_j) = 1[b_j > 0]``). Then

    N(x_m)       = c + (x_m - x0) A(m) + B(m),      A, B: sums of v_j w_j and v_j (w_j x0 + b_j) over units active at m
    G_{w_j}      = sum_k v_kj (S1_jk + x0 S0_jk),   S_jk: sums of delta_mk (x_m - x0) and delta_mk over j's run
    G_{b_j}      = sum_k v_kj S0_jk,                G_{v_kj} = w_j S1_jk + (w_j x0 + b_j) S0_jk,
    G_{c_k}      = sum_m delta_mk,                  delta = 2 omega (N - f),

so a step costs one ``searchsorted`` of the ``H`` thresholds and ``O(M k)`` prefix sums per trajectory, against
the ``O(M H)`` of the mask kernel (``network/_shallow.py``). As in ``_exact1d``, suffix units enter forward sums
and prefix units reverse sums (a unit is only ever added where it is active: no cancellation from large inactive
units), the run sums ``S`` are read from forward or reverse prefix sums each over the unit's own run, and
``x0`` (the middle of the points' range) keeps intercepts small for points far from the origin.

Floating point. The active set is decided by ``x_m > t_j`` (``x_m < t_j``) with ``t_j = fl(-b_j / w_j)``; the mask
kernel decides ``fl(w_j x_m) > -b_j``. The two agree except for a point within rounding of a kink, where either
choice is a valid ``relu'`` convention's neighbour; elsewhere results agree to rounding (tests: relative 1e-12
for the risk, 1e-11 for G).

Layout: slot-major ``(channels, slots, T)``, trajectories last and contiguous (``_scan``), so every operation is a
whole-array numpy call over a chunk of trajectories, and every sum runs in an order fixed by ``M`` alone: a
trajectory's bits are the same in any batch.
"""

from __future__ import annotations

import numpy as np

from ..network._architecture import Architecture
from ._base import Memory
from ._scan import BLOCK, Scratch, prefix_sum, scratch, sum_rows

__all__ = ["CHUNK_ELEMENTS", "SortedPoints1D", "applies", "points1d_kept_memory", "points1d_memory",
           "points1d_risk_and_grad"]

# (slot, trajectory) pairs per chunk (W1, M = 1024: 2^15 gave 2.2e4, 2^16 2.5e4, 2^17 2.7e4, 2^18 2.6e4 evaluations/s):
# long enough inner loops over trajectories, still near the cache.
CHUNK_ELEMENTS = 1 << 17


def applies(arch: Architecture) -> bool:
    return arch.is_shallow and arch.activation == "relu" and arch.input_dim == 1


class SortedPoints1D:
    """A 1D weighted point set, sorted and padded once for ``points1d_risk_and_grad``.

    ``points`` ``(M,)`` or ``(M, 1)``, ``weights`` ``(M,)``, ``target_values`` ``(M, k)``; the order of the points
    does not matter. Padding points (weight 0, at the right end) make the slot count a multiple of ``BLOCK``.
    """

    def __init__(self, points: np.ndarray, weights: np.ndarray, target_values: np.ndarray) -> None:
        x = np.asarray(points, dtype=np.float64).reshape(-1)
        order = np.argsort(x, kind="stable")
        x = x[order]
        f = np.asarray(target_values, dtype=np.float64).reshape(len(x), -1)[order]
        om = np.asarray(weights, dtype=np.float64).reshape(-1)[order]
        self.n_real = len(x)
        # one extra block beyond the points: a suffix unit that is active nowhere starts there, and the reverse
        # sums read there are zero
        n = len(x) + (-len(x) % BLOCK) + BLOCK
        pad = n - len(x)
        right = x[-1] if len(x) else 0.0
        self.x = np.concatenate([x, np.full(pad, right)])
        self.x0 = 0.5 * (x[0] + x[-1]) if len(x) else 0.0
        self.xc = self.x - self.x0  # (n,)
        self.weights = np.concatenate([om, np.zeros(pad)])  # (n,)
        self.targets = np.ascontiguousarray(np.concatenate([f, np.zeros((pad, f.shape[1]))]).T)  # (k, n)
        self.n_slots = n

    def chunk_rows(self) -> int:
        return max(1, CHUNK_ELEMENTS // self.n_slots)


def points1d_memory(arch: Architecture, pts: SortedPoints1D) -> Memory:
    """Upper estimate of the bytes of ``points1d_risk_and_grad`` on a batch (``Memory``): the results and the
    finiteness mask per row; per row of a chunk the two ``bincount`` sums ``(2k, slots)``, the arena's slot arrays
    (residual, weighted residual, pairwise sums, the two moment scans and the doubling scans) and the per-unit
    arrays ``(2k, H)``: about ``18 k`` per slot and ``20 k + 4`` per unit (measured ``14..16`` and ``17`` with
    the arena in use, more per row for small batches). The arena (``_scan.Scratch``) stays allocated after the
    call, at the size of the largest chunk seen (``points1d_kept_memory``)."""
    H, k, P = arch.widths[0], arch.output_dim, arch.n_params
    n = pts.n_slots
    per_row = 8 * (18 * k * n + 20 * k * H + 4 * H)
    return Memory(32 << 10, 8 * (P + 1) + P, ((per_row, pts.chunk_rows()),))


def points1d_kept_memory(arch: Architecture, pts: SortedPoints1D) -> Memory:
    """The part of ``points1d_memory`` that stays allocated after a call: the arena (``_scan.scratch``, per
    thread), about ``13 k`` arrays of the slots per row of a chunk."""
    return Memory(0.0, 0.0, ((8 * 13 * arch.output_dim * pts.n_slots, pts.chunk_rows()),))


def points1d_risk_and_grad(
    arch: Architecture, theta: np.ndarray, pts: SortedPoints1D, need_grad: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Risk ``(T,)`` and ``G`` ``(T, P)`` (float64) of a shallow 1D ReLU net on ``pts``, for ``theta``
    ``(T, P)`` float64. Rows with a non-finite parameter give NaN. Row ``t`` depends only on ``theta[t]``."""
    n = theta.shape[0]
    risk = np.empty(n)
    grad = np.empty((n, arch.n_params)) if need_grad else None
    rows = pts.chunk_rows()
    ws = scratch()
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for start in range(0, n, rows):
            sl = slice(start, min(n, start + rows))
            ws.reset()
            risk[sl] = _chunk(arch, theta[sl], pts, None if grad is None else grad[sl], ws)
    bad = ~np.isfinite(theta).all(axis=1)
    if bad.any():
        risk[bad] = np.nan
        if grad is not None:
            grad[bad] = np.nan
    return risk, grad


def _chunk(arch: Architecture, th: np.ndarray, pts: SortedPoints1D, grad: np.ndarray | None,
           ws: Scratch) -> np.ndarray:
    T = th.shape[0]
    (w3, b), (v, c) = arch.unflatten(th)
    w = w3[:, :, 0]  # (T, H)
    H, k = w.shape[1], v.shape[1]
    b = np.zeros_like(w) if b is None else b
    v = np.broadcast_to(v, (T, k, H))
    n, m_real, x0 = pts.n_slots, pts.n_real, pts.x0
    cols = np.arange(T)

    # ---- each unit's run of active points: [s_j, n) for a suffix unit, [0, e_j) for a prefix unit
    t = -b / w
    suffix = (w > 0) | ((w == 0) & (b > 0))
    prefix = w < 0
    x = pts.x[:m_real]
    start = np.where(w > 0, np.searchsorted(x, t, side="right"), np.where(suffix, 0, n - BLOCK))
    end = np.where(prefix, np.searchsorted(x, t, side="left"), 0)
    bshift = w * x0 + b  # the intercept about x0

    # ---- N at every point: forward sums of suffix units' (slope, intercept) placed at their start, plus reverse
    # sums of prefix units' placed at their last active point
    C = 2 * k
    size = C * n * T
    vw, vb = v * w[:, None, :], v * bshift[:, None, :]  # (T, k, H)
    vals = np.stack([vw, vb], axis=1).reshape(T, C, H)  # channel = (slope | intercept, output)
    chan = (np.arange(C) * n * T)[None, :, None]
    fwd_idx = chan + (start * T + cols[:, None])[:, None, :]
    fwd = np.bincount(fwd_idx.reshape(-1), np.where(suffix[:, None, :], vals, 0.0).reshape(-1), size)
    last = np.maximum(end - 1, 0)
    rev_idx = chan + (last * T + cols[:, None])[:, None, :]
    rev = np.bincount(rev_idx.reshape(-1), np.where((end > 0)[:, None, :], vals, 0.0).reshape(-1), size)
    fwd, rev = fwd.reshape(C, n, T), rev.reshape(C, n, T)
    prefix_sum(fwd, ws)
    prefix_sum(rev, ws, reverse=True)
    fwd += rev  # (slope, intercept) of N at every slot
    slope, icpt = fwd[:k], fwd[k:]
    out = ws((k, n, T))
    np.multiply(slope, pts.xc[None, :, None], out=out)
    out += icpt
    if c is not None:
        out += c.T[:, None, :]
    out -= pts.targets[:, :, None]  # residual r
    wr = ws((k, n, T))
    np.multiply(out, pts.weights[None, :, None], out=wr)
    out *= wr  # omega r^2
    risk = sum_rows(out.reshape(k * n, T), ws).copy()
    if grad is None:
        return risk

    # ---- G: each unit's sums of delta (x - x0) and delta over its run, from forward or reverse prefix sums
    mom = ws((C, n, T))
    np.multiply(wr, 2.0 * pts.xc[None, :, None], out=mom[:k])
    np.multiply(wr, 2.0, out=mom[k:])
    rmom = ws((C, n, T))
    rmom[...] = mom
    prefix_sum(mom, ws)
    prefix_sum(rmom, ws, reverse=True)
    mom_flat, rmom_flat = mom.reshape(C, n * T), rmom.reshape(C, n * T)
    s_suffix = np.take(rmom_flat, start * T + cols[:, None], axis=1)  # (C, T, H)
    s_prefix = np.take(mom_flat, last * T + cols[:, None], axis=1)
    run = np.where(suffix[None], s_suffix, np.where((end > 0)[None], s_prefix, 0.0))
    s1, s0 = run[:k].transpose(1, 0, 2), run[k:].transpose(1, 0, 2)  # (T, k, H)
    hidden, output = arch.layers
    g_b, g_w = v[:, 0] * s0[:, 0], v[:, 0] * s1[:, 0]  # sums over outputs in a fixed order
    for kk in range(1, k):
        g_b += v[:, kk] * s0[:, kk]
        g_w += v[:, kk] * s1[:, kk]
    grad[:, hidden.weight] = g_w + x0 * g_b
    if hidden.bias is not None:
        grad[:, hidden.bias] = g_b
    if output.weight is not None:
        grad[:, output.weight] = (w[:, None, :] * s1 + bshift[:, None, :] * s0).reshape(T, k * H)
        if output.bias is not None:
            grad[:, output.bias] = rmom[k:, 0, :].T
    return risk
