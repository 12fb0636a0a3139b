"""The compiled kernel of the quadrature backend for shallow 1D ReLU nets: ``_points1d``'s algorithm in one loop
per trajectory (kernel ``points1d_numba``).

``_points1d._chunk`` already does ``O(M k + H log M)`` work per trajectory instead of the mask kernels' ``O(M H)``,
but as some forty whole-array numpy passes over a chunk's ``(channels, slots, T)`` arrays, each a trip through
memory. Here one compiled function walks a trajectory's slots a few times, its per-trajectory arrays (a few
``(2k, slots)`` rows) staying in cache.

Bit for bit the numpy kernel in float64. Every floating-point operation of ``_chunk`` is done in the same order
with the same operands: each unit's values added to its slot in unit order (``np.bincount``'s order; the skipped
units' ``+ 0.0`` cannot change a sum, which is never ``-0.0`` in round-to-nearest), the blocked prefix sums of
``_scan.prefix_sum``, the pairwise halving of ``_scan.sum_rows`` for the risk, the same padding slots. The
threshold ``t_j = fl(-b_j / w_j)`` and the binary searches give ``np.searchsorted``'s indices for finite points.
Numba compiles without ``fastmath``, so LLVM neither reassociates nor contracts ``a * b + c`` (it still vectorizes
elementwise loops, which changes no result). A d = 1 quadrature table is therefore the same whether or not numba
is installed (``tests/test_points1d_numba.py`` holds the two kernels to equal bytes).

Layout. The prefix sums are sequential within blocks of ``BLOCK`` slots, so along the slot axis they do not
vectorize, and numpy's answer (trajectories on the contiguous axis) does not carry over: in small groups of
trajectories LLVM unrolls the lane loops and cannot prove the rows apart, and the code stays scalar. Instead the
per-slot arrays are stored block-transposed (slot ``BLOCK b + j`` at ``j nb + b``, ``nb`` blocks): each step of
a blocked scan is then one contiguous loop over the blocks, which LLVM vectorizes. The sorted points themselves
stay in slot order for the binary searches, and the risk's terms are put back in slot order for the halving.

float32 (which the numpy kernel does not do): the same algorithm in float32 arithmetic on the point set rounded
to float32 (thresholds, sums and per-point products all in float32), held to the float32 mask kernels and the
float64 backpropagation to float32 rounding. A point within float32 rounding of a kink may count as active here
and not in the mask kernels (``x_m > t_j`` against ``w_j x_m + b_j > 0``).

A row with a non-finite parameter gives NaN risk and gradient, as in the numpy kernel. numba is optional
(``reluflow[fast]``): ``_quadrature`` imports this module on the first compiled evaluation and keeps the numpy
kernels where numba is missing or this module cannot be set up. Compiled code is cached on disk.
"""

from __future__ import annotations

import numba
import numpy as np

from ._points1d import SortedPoints1D
from ._scan import BLOCK

__all__ = ["CompiledPoints1D", "SCRATCH_ROWS", "points1d_rows"]

# Rows of ``n_slots`` in the per-call scratch, per output: forward and reverse bins of (slope, intercept), later
# the forward and reverse moment scans (2 + 2), the weighted residual, and the risk's terms
SCRATCH_ROWS = 6


def _njit(fn):
    # error_model="numpy": a division by zero gives inf/nan like numpy instead of raising; no fastmath (above)
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn)


@numba.njit(inline="always")
def _first_above(x, m, t):
    """``np.searchsorted(x[:m], t, side="right")``: the first index with ``x[i] > t`` (``m`` if none)."""
    lo, hi = 0, m
    while lo < hi:
        mid = (lo + hi) >> 1
        if x[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(inline="always")
def _first_not_below(x, m, t):
    """``np.searchsorted(x[:m], t, side="left")``: the first index with ``x[i] >= t`` (``m`` if none)."""
    lo, hi = 0, m
    while lo < hi:
        mid = (lo + hi) >> 1
        if x[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(inline="always")
def _prefix_sum(X, row, nb, reverse, A, B):
    """In place over ``X[row]``, slots in block-transposed order (slot ``BLOCK b + j`` at ``j nb + b``):
    ``_scan.prefix_sum``'s operations in its order (sequential within blocks, a doubling scan over the block
    totals in ``A`` with ``B`` for the next round, one offset pass). In this order each step is one contiguous
    loop over the blocks, which LLVM vectorizes."""
    if not reverse:
        for j in range(1, BLOCK):
            for b in range(nb):
                X[row, j * nb + b] += X[row, (j - 1) * nb + b]
        if nb > 1:
            m = nb - 1
            for i in range(m):
                A[i] = X[row, (BLOCK - 1) * nb + i]
            step = 1
            while step < m:  # numpy's doubling: the new totals from the old ones, never in place
                for i in range(step):
                    B[i] = A[i]
                for i in range(step, m):
                    B[i] = A[i] + A[i - step]
                A, B = B, A
                step *= 2
            for j in range(BLOCK):
                for b in range(1, nb):
                    X[row, j * nb + b] += A[b - 1]
    else:
        for j in range(BLOCK - 2, -1, -1):
            for b in range(nb):
                X[row, j * nb + b] += X[row, (j + 1) * nb + b]
        if nb > 1:
            m = nb - 1
            for i in range(m):
                A[i] = X[row, i + 1]
            step = 1
            while step < m:
                for i in range(m - step):
                    B[i] = A[i] + A[i + step]
                for i in range(m - step, m):
                    B[i] = A[i]
                A, B = B, A
                step *= 2
            for j in range(BLOCK):
                for b in range(nb - 1):
                    X[row, j * nb + b] += A[b]


@_njit
def _rows(theta, risk, grad, need_grad, H, k, w0, b0, v0, c0, fixed, x, xc, xc2, wts, ft, x0, m_real, S, R):
    """``_points1d._chunk`` for each row of ``theta`` ``(T, P)``: ``risk`` ``(T,)`` and, if ``need_grad``,
    ``grad`` ``(T, P)`` filled in. ``x`` ``(n,)`` are the sorted padded slots of ``SortedPoints1D``; ``xc, xc2 =
    2 xc, wts`` ``(n,)`` and ``ft`` ``(k, n)`` the same in block-transposed order, as is the scratch ``S``
    ``(5 k, n)``: row ``c`` of a block of ``S`` is channel ``c`` of the numpy kernel's slot arrays for one
    trajectory. ``R`` ``(k n,)`` holds the risk's terms in the numpy kernel's (output-major, slot) order."""
    T, P = theta.shape
    n = x.shape[0]
    nb = n // BLOCK
    C = 2 * k
    FWD, REV, WR = 0, C, 2 * C  # after the residual, FWD and REV hold the forward and reverse moment scans
    dt = theta.dtype
    zero = np.zeros(1, dt)[0]
    two = zero + 2.0
    nan = zero + np.nan
    A = np.empty(max(1, nb), dt)  # the doubling scans' block totals
    B = np.empty(max(1, nb), dt)
    w = np.empty(H, dt)
    bsh = np.empty(H, dt)
    vals = np.empty((C, H), dt)
    V = np.empty((k, H), dt)
    start = np.empty(H, np.int64)  # slots in block-transposed order
    last = np.empty(H, np.int64)
    suffix = np.empty(H, np.bool_)
    prefix_run = np.empty(H, np.bool_)  # end > 0: a prefix unit with at least one active point
    for t in range(T):
        finite = True
        for p in range(P):
            if not np.isfinite(theta[t, p]):
                finite = False
        if not finite:
            risk[t] = nan
            if need_grad:
                for p in range(P):
                    grad[t, p] = nan
            continue
        # ---- each unit's run of active points (as in _chunk: t = -b / w, suffix/prefix, start/last slots)
        for kk in range(k):
            for j in range(H):
                V[kk, j] = theta[t, v0 + kk * H + j] if v0 >= 0 else fixed
        for j in range(H):
            wj = theta[t, w0 + j]
            bj = theta[t, b0 + j] if b0 >= 0 else zero
            w[j] = wj
            suffix[j] = wj > zero or (wj == zero and bj > zero)
            if wj > zero:
                s0 = _first_above(x, m_real, -bj / wj)
            elif suffix[j]:
                s0 = 0
            else:
                s0 = n - BLOCK
            end = _first_not_below(x, m_real, -bj / wj) if wj < zero else 0
            s1 = max(end - 1, 0)
            start[j] = (s0 % BLOCK) * nb + s0 // BLOCK
            last[j] = (s1 % BLOCK) * nb + s1 // BLOCK
            prefix_run[j] = end > 0
            bsh[j] = wj * x0 + bj
            for kk in range(k):
                vals[kk, j] = V[kk, j] * wj
                vals[k + kk, j] = V[kk, j] * bsh[j]
        # ---- N at every slot: bins of (slope, intercept), forward sums for suffix units, reverse for prefix ones
        for c in range(2 * C):
            for i in range(n):
                S[FWD + c, i] = zero
        for j in range(H):
            if suffix[j]:
                for c in range(C):
                    S[FWD + c, start[j]] += vals[c, j]
            if prefix_run[j]:
                for c in range(C):
                    S[REV + c, last[j]] += vals[c, j]
        for c in range(C):
            _prefix_sum(S, FWD + c, nb, False, A, B)
            _prefix_sum(S, REV + c, nb, True, A, B)
        for kk in range(k):
            ck = theta[t, c0 + kk] if c0 >= 0 else zero
            for i in range(n):
                r = (S[FWD + kk, i] + S[REV + kk, i]) * xc[i]
                r += S[FWD + k + kk, i] + S[REV + k + kk, i]
                if c0 >= 0:
                    r += ck
                r -= ft[kk, i]
                wr = r * wts[i]
                S[WR + kk, i] = wr
                S[FWD + kk, i] = r * wr  # omega r^2, put in slot order below
            for j in range(BLOCK):
                for b in range(nb):
                    R[kk * n + b * BLOCK + j] = S[FWD + kk, j * nb + b]
        # the risk: _scan.sum_rows's pairwise halving over the k n terms (output-major, slots in order), in place
        L = k * n
        while L > 1:
            half = L // 2
            for i in range(half):
                R[i] = R[i] + R[half + i]
            if L % 2:
                R[0] += R[2 * half]
            L = half
        risk[t] = R[0]
        if not need_grad:
            continue
        # ---- G: each unit's sums of delta (x - x0) and delta over its run, from forward or reverse prefix sums
        for kk in range(k):
            for i in range(n):
                wr = S[WR + kk, i]
                m1 = wr * xc2[i]
                m0 = wr * two
                S[FWD + kk, i] = m1
                S[FWD + k + kk, i] = m0
                S[REV + kk, i] = m1
                S[REV + k + kk, i] = m0
        for c in range(C):
            _prefix_sum(S, FWD + c, nb, False, A, B)
            _prefix_sum(S, REV + c, nb, True, A, B)
        for j in range(H):
            # the run sums: channel kk of delta (x - x0), channel k + kk of delta, over the unit's run
            if suffix[j]:
                sel, slot = REV, start[j]
            elif prefix_run[j]:
                sel, slot = FWD, last[j]
            else:
                sel, slot = -1, 0
            s1 = S[sel, slot] if sel >= 0 else zero
            s0 = S[sel + k, slot] if sel >= 0 else zero
            g_b = V[0, j] * s0
            g_w = V[0, j] * s1
            for kk in range(1, k):
                s1 = S[sel + kk, slot] if sel >= 0 else zero
                s0 = S[sel + k + kk, slot] if sel >= 0 else zero
                g_b += V[kk, j] * s0
                g_w += V[kk, j] * s1
            grad[t, w0 + j] = g_w + x0 * g_b
            if b0 >= 0:
                grad[t, b0 + j] = g_b
            if v0 >= 0:
                for kk in range(k):
                    s1 = S[sel + kk, slot] if sel >= 0 else zero
                    s0 = S[sel + k + kk, slot] if sel >= 0 else zero
                    gv = w[j] * s1
                    grad[t, v0 + kk * H + j] = gv + bsh[j] * s0
        if c0 >= 0:
            for kk in range(k):
                grad[t, c0 + kk] = S[REV + k + kk, 0]  # slot 0 is index 0 in either order


class CompiledPoints1D:
    """``SortedPoints1D``'s padded slots in ``dtype`` for ``points1d_rows`` (float64: the same values; float32: each
    rounded once from float64, the thresholds then compared with the rounded points): the sorted points in slot
    order for the binary searches, the per-slot data in block-transposed order (``_prefix_sum``)."""

    def __init__(self, pts: SortedPoints1D, dtype) -> None:
        dtype = np.dtype(dtype)
        self.dtype = dtype
        self.x = np.ascontiguousarray(pts.x, dtype=dtype)
        self.xc = _block_transposed(pts.xc, dtype)
        self.xc2 = _block_transposed(2.0 * pts.xc, dtype)  # _chunk's 2.0 * pts.xc (exact: a doubling)
        self.weights = _block_transposed(pts.weights, dtype)
        self.targets = _block_transposed(pts.targets, dtype)
        self.x0 = dtype.type(pts.x0)
        self.n_real = pts.n_real
        self.n_slots = pts.n_slots


def _block_transposed(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` ``(..., n)`` with slot ``BLOCK b + j`` moved to ``j (n / BLOCK) + b``."""
    a = np.asarray(a, dtype=dtype)
    n = a.shape[-1]
    return np.ascontiguousarray(np.swapaxes(a.reshape(*a.shape[:-1], n // BLOCK, BLOCK), -1, -2)).reshape(a.shape)


def points1d_rows(arch, theta: np.ndarray, pts: CompiledPoints1D,
                  need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(risk (T,), G (T, P) or None)`` in ``pts.dtype`` for a shallow 1D ReLU net ``arch``."""
    dtype = pts.dtype
    theta = np.ascontiguousarray(theta, dtype=dtype)
    if not theta.flags.writeable:  # e.g. deserialized by dask: a read-only array would compile a second signature
        theta = theta.copy()
    T, P = theta.shape
    k, n = arch.output_dim, pts.n_slots
    risk = np.empty(T, dtype)
    grad = np.empty((T, P), dtype) if need_grad else np.empty((0, P), dtype)
    # the scratch is allocated here rather than inside the compiled code, so that tracemalloc (and the memory
    # model's test) sees it
    S = np.empty(((SCRATCH_ROWS - 1) * k, n), dtype)
    R = np.empty(k * n, dtype)
    hidden, output = arch.layers
    offsets = [-1 if sl is None else sl.start for sl in (hidden.weight, hidden.bias, output.weight, output.bias)]
    fixed = dtype.type(0.0 if arch.fixed_output is None else arch.fixed_output)
    _rows(theta, risk, grad, need_grad, arch.widths[0], k, *offsets, fixed, pts.x, pts.xc, pts.xc2, pts.weights,
          pts.targets, pts.x0, pts.n_real, S, R)
    return risk, (grad if need_grad else None)
