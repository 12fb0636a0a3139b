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

from ._numba_rows import kernel_rows, nan_row_if_not_finite
from ._points1d import SortedPoints1D
from ._scan import BLOCK

__all__ = ["CompiledPoints1D", "SCRATCH_ROWS", "points1d_rows"]

# Rows of ``n_slots`` in the per-call scratch, per output: forward and reverse bins of (slope, intercept) (2 + 2;
# the residual pass leaves the risk's terms in the slope bins), the weighted residual, and the risk's terms in
# slot order
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
def _doubling(Tb, row, m, reverse, tmp):
    """In place over ``Tb[row, :m]``: inclusive prefix (suffix if ``reverse``) sums by ``_scan._doubling_scan``'s
    recursive doubling, each round from the previous one (never in place), the rounds alternating between
    ``row`` and ``tmp``."""
    src, dst = row, tmp
    step = 1
    while step < m:
        if not reverse:
            for i in range(step):
                Tb[dst, i] = Tb[src, i]
            for i in range(step, m):
                Tb[dst, i] = Tb[src, i] + Tb[src, i - step]
        else:
            for i in range(m - step):
                Tb[dst, i] = Tb[src, i] + Tb[src, i + step]
            for i in range(m - step, m):
                Tb[dst, i] = Tb[src, i]
        src, dst = dst, src
        step *= 2
    if src != row:
        for i in range(m):
            Tb[row, i] = Tb[src, i]


@numba.njit(inline="always")
def _moment(S, WRk, i, xc2, two, first):
    """The moment at block-transposed index ``i``: ``delta (x - x0)`` (``first``) or ``delta``, as ``_chunk``
    forms it (``wr * (2 xc)``, ``wr * 2``)."""
    return S[WRk, i] * xc2[i] if first else S[WRk, i] * two


@numba.njit(inline="always")
def _run_sum(S, Tb, WRk, off_row, xc2, two, first, slot, nb, reverse):
    """``_scan.prefix_sum``'s value at natural slot ``slot`` (suffix sums if ``reverse``) of the moments of one
    output, from its partial sum within the slot's block (the same sequential additions) and the block offsets
    ``Tb[off_row]`` (the doubling scan of the block totals)."""
    jj, bb = slot % BLOCK, slot // BLOCK
    if not reverse:
        p = _moment(S, WRk, bb, xc2, two, first)
        for j in range(1, jj + 1):
            p = _moment(S, WRk, j * nb + bb, xc2, two, first) + p
        if bb >= 1:
            p = p + Tb[off_row, bb - 1]
    else:
        p = _moment(S, WRk, (BLOCK - 1) * nb + bb, xc2, two, first)
        for j in range(BLOCK - 2, jj - 1, -1):
            p = _moment(S, WRk, j * nb + bb, xc2, two, first) + p
        if bb < nb - 1:
            p = p + Tb[off_row, bb]
    return p


@_njit
def _rows(theta, risk, grad, need_grad, H, k, w0, b0, v0, c0, fixed, x, xc, xc2, wts, ft, x0, m_real, S, Tb, R):
    """``_points1d._chunk`` for each row of ``theta`` ``(T, P)``: ``risk`` ``(T,)`` and, if ``need_grad``,
    ``grad`` ``(T, P)`` filled in. ``x`` ``(n,)`` are the sorted padded slots of ``SortedPoints1D``; ``xc, xc2 =
    2 xc, wts`` ``(n,)`` and ``ft`` ``(k, n)`` the same in block-transposed order, as is the scratch ``S``
    ``(5 k, n)``; ``Tb`` ``(6 k + 3, nb)`` holds per-block sums, ``R`` ``(k n,)`` the risk's terms in the numpy
    kernel's (output-major, slot) order.

    Where the numpy kernel scans a whole array and reads it at a few slots (the moments, read at each unit's
    first or last active point), this kernel forms only the block totals, their doubling scan, and at each
    slot read the partial sum within its block: the same additions in the same order, so the same values."""
    T, P = theta.shape
    n = x.shape[0]
    nb = n // BLOCK
    m = nb - 1  # block totals that the doubling scans combine
    C = 2 * k
    FWD, REV, WR = 0, C, 2 * C
    OFF_F, OFF_MF, OFF_MR, TMP = 0, C, 2 * C, 3 * C  # rows of Tb: block offsets of the forward N bins and of the
    # forward and reverse moment scans; TMP, TMP + 1, TMP + 2 scratch
    dt = theta.dtype
    zero = np.zeros(1, dt)[0]
    mzero = -zero  # x + (-0.0) is x, bit for bit: partial sums start from it instead of branching
    two = zero + 2.0
    w = np.empty(H, dt)
    bsh = np.empty(H, dt)
    vals = np.empty((C, H), dt)
    V = np.empty((k, H), dt)
    start = np.empty(H, np.int64)  # natural slots
    last = np.empty(H, np.int64)
    suffix = np.empty(H, np.bool_)
    prefix_run = np.empty(H, np.bool_)  # end > 0: a prefix unit with at least one active point
    for t in range(T):
        if nan_row_if_not_finite(theta, t, risk, grad, need_grad):
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
                start[j] = _first_above(x, m_real, -bj / wj)
            elif suffix[j]:
                start[j] = 0
            else:
                start[j] = n - BLOCK
            end = _first_not_below(x, m_real, -bj / wj) if wj < zero else 0
            last[j] = max(end - 1, 0)
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
                s0 = start[j]
                for c in range(C):
                    S[FWD + c, (s0 % BLOCK) * nb + s0 // BLOCK] += vals[c, j]
            if prefix_run[j]:
                s1 = last[j]
                for c in range(C):
                    S[REV + c, (s1 % BLOCK) * nb + s1 // BLOCK] += vals[c, j]
        for c in range(C):
            # forward bins: block totals (the within-block scan's last values) and their doubling scan; the scan
            # itself is formed in the residual pass below
            for b in range(nb):
                Tb[TMP + 2, b] = S[FWD + c, b]
            for j in range(1, BLOCK):
                for b in range(nb):
                    Tb[TMP + 2, b] = S[FWD + c, j * nb + b] + Tb[TMP + 2, b]
            _doubling(Tb, TMP + 2, m, False, TMP)
            Tb[OFF_F + c, 0] = mzero  # block b adds the scan of blocks before it; block 0 adds -0.0, i.e. nothing
            for b in range(1, nb):
                Tb[OFF_F + c, b] = Tb[TMP + 2, b - 1]
            # reverse bins: block totals, their doubling scan, then the scan in place
            for b in range(nb):
                Tb[TMP + 2, b] = S[REV + c, (BLOCK - 1) * nb + b]
            for j in range(BLOCK - 2, -1, -1):
                for b in range(nb):
                    Tb[TMP + 2, b] = S[REV + c, j * nb + b] + Tb[TMP + 2, b]
            for i in range(m):
                Tb[TMP + 2, i] = Tb[TMP + 2, i + 1]
            _doubling(Tb, TMP + 2, m, True, TMP)
            Tb[TMP + 2, m] = mzero  # the last block has no blocks after it
            for b in range(nb):
                Tb[TMP + 1, b] = mzero
            for j in range(BLOCK - 1, -1, -1):
                for b in range(nb):
                    p = S[REV + c, j * nb + b] + Tb[TMP + 1, b]
                    Tb[TMP + 1, b] = p
                    S[REV + c, j * nb + b] = p + Tb[TMP + 2, b]
        # ---- residuals, with the forward scans of the bins (slope: TMP, intercept: TMP + 1) and the forward
        # moment totals (OFF_MF) accumulated block by block
        for kk in range(k):
            ck = theta[t, c0 + kk] if c0 >= 0 else mzero
            fs, fi, rs, ri = FWD + kk, FWD + k + kk, REV + kk, REV + k + kk
            for b in range(nb):
                Tb[TMP, b] = mzero
                Tb[TMP + 1, b] = mzero
                Tb[OFF_MF + kk, b] = mzero
                Tb[OFF_MF + k + kk, b] = mzero
            for j in range(BLOCK):
                o = j * nb
                for b in range(nb):
                    ps = S[fs, o + b] + Tb[TMP, b]
                    pi = S[fi, o + b] + Tb[TMP + 1, b]
                    Tb[TMP, b] = ps
                    Tb[TMP + 1, b] = pi
                    r = (ps + Tb[OFF_F + kk, b] + S[rs, o + b]) * xc[o + b]
                    r += pi + Tb[OFF_F + k + kk, b] + S[ri, o + b]
                    r += ck
                    r -= ft[kk, o + b]
                    wr = r * wts[o + b]
                    S[WR + kk, o + b] = wr
                    S[fs, o + b] = r * wr  # the slope bin at this slot is consumed: its place holds omega r^2
                    Tb[OFF_MF + kk, b] = wr * xc2[o + b] + Tb[OFF_MF + kk, b]
                    Tb[OFF_MF + k + kk, b] = wr * two + Tb[OFF_MF + k + kk, b]
            for j in range(BLOCK):
                for b in range(nb):
                    R[kk * n + b * BLOCK + j] = S[fs, j * nb + b]
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
        # ---- G: the moment scans' block offsets, forward (totals from the residual pass) and reverse
        for kk in range(k):
            for c in (kk, k + kk):
                first = c < k
                _doubling(Tb, OFF_MF + c, m, False, TMP)
                for j in range(BLOCK - 1, -1, -1):
                    o = j * nb
                    for b in range(nb):
                        mo = S[WR + kk, o + b] * xc2[o + b] if first else S[WR + kk, o + b] * two
                        if j == BLOCK - 1:
                            Tb[TMP + 2, b] = mo
                        else:
                            Tb[TMP + 2, b] = mo + Tb[TMP + 2, b]
                for i in range(m):
                    Tb[OFF_MR + c, i] = Tb[TMP + 2, i + 1]
                _doubling(Tb, OFF_MR + c, m, True, TMP)
        # each unit's sums of delta (x - x0) and delta over its run: reverse scans at a suffix unit's first
        # point, forward scans at a prefix unit's last point
        for j in range(H):
            g_b = zero
            g_w = zero
            for kk in range(k):
                if suffix[j]:
                    s1 = _run_sum(S, Tb, WR + kk, OFF_MR + kk, xc2, two, True, start[j], nb, True)
                    s0 = _run_sum(S, Tb, WR + kk, OFF_MR + k + kk, xc2, two, False, start[j], nb, True)
                elif prefix_run[j]:
                    s1 = _run_sum(S, Tb, WR + kk, OFF_MF + kk, xc2, two, True, last[j], nb, False)
                    s0 = _run_sum(S, Tb, WR + kk, OFF_MF + k + kk, xc2, two, False, last[j], nb, False)
                else:
                    s1 = zero
                    s0 = zero
                if kk == 0:
                    g_b = V[0, j] * s0
                    g_w = V[0, j] * s1
                else:
                    g_b += V[kk, j] * s0
                    g_w += V[kk, j] * s1
                if v0 >= 0:
                    gv = w[j] * s1
                    grad[t, v0 + kk * H + j] = gv + bsh[j] * s0
            grad[t, w0 + j] = g_w + x0 * g_b
            if b0 >= 0:
                grad[t, b0 + j] = g_b
        if c0 >= 0:
            for kk in range(k):
                grad[t, c0 + kk] = _run_sum(S, Tb, WR + kk, OFF_MR + k + kk, xc2, two, False, 0, nb, True)


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
    theta = kernel_rows(theta, dtype)
    T, P = theta.shape
    k, n = arch.output_dim, pts.n_slots
    risk = np.empty(T, dtype)
    grad = np.empty((T, P), dtype) if need_grad else np.empty((0, P), dtype)
    # the scratch is allocated here rather than inside the compiled code, so that tracemalloc (and the memory
    # model's test) sees it
    S = np.empty(((SCRATCH_ROWS - 1) * k, n), dtype)
    Tb = np.empty((6 * k + 3, n // BLOCK), dtype)
    R = np.empty(k * n, dtype)
    hidden, output = arch.layers
    offsets = [-1 if sl is None else sl.start for sl in (hidden.weight, hidden.bias, output.weight, output.bias)]
    fixed = dtype.type(0.0 if arch.fixed_output is None else arch.fixed_output)
    _rows(theta, risk, grad, need_grad, arch.widths[0], k, *offsets, fixed, pts.x, pts.xc, pts.xc2, pts.weights,
          pts.targets, pts.x0, pts.n_real, S, Tb, R)
    return risk, (grad if need_grad else None)
