"""The compiled kernel of the quadrature backend for shallow ReLU nets (any input dimension): the mask-GEMM
kernel's algebra (``network/_shallow.py``) fused into one loop per trajectory.

The numpy kernel builds a ``(T, H, M)`` mask and reads it with two GEMMs whose inner dimension is ``d + 1``: at
W2's sizes every product is bound by writing and reading that mask, about a fifth of the machine's matmul peak
(bench/README.md). Here each trajectory walks its points in blocks of ``MB``; a block's pre-activations
``(H, MB)`` stay in cache (the second level at W2's sizes) between the forward and the backward sweep, and both
sweeps run along the points, the contiguous axis, so LLVM vectorizes them:

    z_jm      = b_j + sum_i w_ji x_mi                                  (forward, per unit over a block's points)
    N_mk      = c_k + sum_j v_kj relu(z_jm)
    delta_mk  = 2 omega_m (N_mk - f_mk)
    F_j,(i,k) = sum_m 1[z_jm > 0] x~_mi delta_mk                       (backward, per unit over the same points)
    G_{w_ji}  = sum_k v_kj F_j,(i,k),   G_{b_j} = sum_k v_kj F_j,(d,k),   G_{v_kj} = sum_i u_ji F_j,(i,k),
    G_{c_k}   = sum_m delta_mk,

with ``x~ = (x, 1)`` and ``u_j = (w_j, b_j)`` as in the numpy kernel, and ``relu'(0) = 0`` (the strict ``>``).

Register blocking. A sweep over a block does one multiply-add per point for each (unit, input) pair and, done one
unit at a time, loads a point coordinate for each: the loads, not the arithmetic, bound it. Both sweeps therefore
take the units four at a time and the inputs four at a time: each vector of points loads four coordinates (and, in
the backward sweep, delta and the four units' pre-activations, from which the masked delta is formed in registers)
and feeds 16 multiply-adds into 16 independent sums; the bias rides along with the first four inputs. The last
``H mod 4`` units and ``d mod 4`` inputs take narrower loops. ``MB = 256`` rather than a first-level-cache-sized
64: every backward sum ends in a horizontal reduction per block, and longer sweeps spread that (and each loop's
setup) over more points, while ``H x MB`` pre-activations (128 KB at H = 64) still stream from the second level.

Floating point. The same sums as the numpy kernel in another order (and with fused multiply-adds where the CPU
has them: ``fastmath`` allows contraction and reassociation, never ``nnan``/``ninf``), so results agree to
rounding, not bit for bit; a unit is active where ``fl(b_j + w_j . x_m) > 0``, the numpy kernel's
``fl(w_j . x_m) > -b_j``: the two differ only for points within rounding of a kink. Every sum runs in an order
fixed by the problem's sizes alone, so a trajectory's bits do not depend on the batch it is in. A row with a
non-finite parameter gives NaN risk and gradient (the numpy kernel gives NaN or inf there).

numba is optional (``reluflow[fast]``): ``_quadrature`` imports this module on the first compiled evaluation and
keeps the numpy kernels where numba is missing or this module cannot be set up; compiled code is cached on disk.
"""

from __future__ import annotations

import numpy as np

from ._numba_rows import kernel_rows, nan_row_if_not_finite, njit_kernel

__all__ = ["POINT_BLOCK", "ShallowPoints", "shallow_rows"]

# Points per block: the block's pre-activations (H x MB) stay in cache between the forward and backward sweeps
# (W2, H = 64: 128 KB in float64, the second level), and each sweep is long enough to pay for its loop setup and
# the horizontal reductions of the backward sums (module docstring)
POINT_BLOCK = 256


@njit_kernel
def _rows(theta, xt, wts, ft, risk, grad, need_grad, H, d, k, w0, b0, v0, c0, fixed):
    """``risk`` ``(T,)`` and, if ``need_grad``, ``grad`` ``(T, P)`` for each row of ``theta`` ``(T, P)``.

    ``xt`` ``(d, M)`` points transposed, ``wts`` ``(M,)``, ``ft`` ``(k, M)`` target values transposed, all in
    ``theta``'s dtype. ``w0, b0, v0, c0`` are the offsets of the hidden weights and biases and the output
    weights and biases in a row (``-1`` where a part is not trained: no hidden or output bias, or a fixed output
    layer of value ``fixed``)."""
    T = theta.shape[0]
    M = xt.shape[1]
    MB = POINT_BLOCK
    dt = theta.dtype
    zero = np.zeros(1, dt)[0]
    U = np.empty((H, d + 1), dt)
    V = np.empty((k, H), dt)
    C = np.empty(k, dt)
    Z = np.empty((H, MB), dt)
    out = np.empty((k, MB), dt)
    g = np.empty(MB, dt)
    Fa = np.empty((H, d + 1, k), dt)
    gc = np.empty(k, dt)
    for t in range(T):
        if nan_row_if_not_finite(theta, t, risk, grad, need_grad):
            continue
        for j in range(H):
            for i in range(d):
                U[j, i] = theta[t, w0 + j * d + i]
            U[j, d] = theta[t, b0 + j] if b0 >= 0 else zero
        for kk in range(k):
            for j in range(H):
                V[kk, j] = theta[t, v0 + kk * H + j] if v0 >= 0 else fixed
            C[kk] = theta[t, c0 + kk] if c0 >= 0 else zero
            gc[kk] = zero
        Fa[:] = zero
        acc = zero
        for blk in range((M + MB - 1) // MB):
            # a block index times a constant: LLVM sees that point indices are non-negative, so it drops numba's
            # negative-index wraparound and reads the points as contiguous vectors instead of gathers
            m0 = blk * MB
            nb = min(MB, M - m0)
            for kk in range(k):
                for q in range(nb):
                    out[kk, q] = C[kk]
            # forward, four units at a time: each point coordinate loaded feeds four units' multiply-adds. Per
            # unit the sum is b_j + w_j0 x_0 + w_j1 x_1 + ..., in this order, as for a single unit below
            j = 0
            while j + 4 <= H:
                c0_, c1_, c2_, c3_ = U[j, d], U[j + 1, d], U[j + 2, d], U[j + 3, d]
                i = 0
                if d >= 4:  # the bias and the first four inputs in one sweep: Z is written once, not read
                    a00, a01, a02, a03 = U[j, 0], U[j, 1], U[j, 2], U[j, 3]
                    a10, a11, a12, a13 = U[j + 1, 0], U[j + 1, 1], U[j + 1, 2], U[j + 1, 3]
                    a20, a21, a22, a23 = U[j + 2, 0], U[j + 2, 1], U[j + 2, 2], U[j + 2, 3]
                    a30, a31, a32, a33 = U[j + 3, 0], U[j + 3, 1], U[j + 3, 2], U[j + 3, 3]
                    for q in range(nb):
                        x0, x1, x2, x3 = xt[0, m0 + q], xt[1, m0 + q], xt[2, m0 + q], xt[3, m0 + q]
                        Z[j, q] = c0_ + a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                        Z[j + 1, q] = c1_ + a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                        Z[j + 2, q] = c2_ + a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                        Z[j + 3, q] = c3_ + a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
                    i = 4
                else:
                    for q in range(nb):
                        Z[j, q] = c0_
                        Z[j + 1, q] = c1_
                        Z[j + 2, q] = c2_
                        Z[j + 3, q] = c3_
                while i + 4 <= d:
                    a00, a01, a02, a03 = U[j, i], U[j, i + 1], U[j, i + 2], U[j, i + 3]
                    a10, a11, a12, a13 = U[j + 1, i], U[j + 1, i + 1], U[j + 1, i + 2], U[j + 1, i + 3]
                    a20, a21, a22, a23 = U[j + 2, i], U[j + 2, i + 1], U[j + 2, i + 2], U[j + 2, i + 3]
                    a30, a31, a32, a33 = U[j + 3, i], U[j + 3, i + 1], U[j + 3, i + 2], U[j + 3, i + 3]
                    for q in range(nb):
                        x0, x1, x2, x3 = xt[i, m0 + q], xt[i + 1, m0 + q], xt[i + 2, m0 + q], xt[i + 3, m0 + q]
                        Z[j, q] = Z[j, q] + a00 * x0 + a01 * x1 + a02 * x2 + a03 * x3
                        Z[j + 1, q] = Z[j + 1, q] + a10 * x0 + a11 * x1 + a12 * x2 + a13 * x3
                        Z[j + 2, q] = Z[j + 2, q] + a20 * x0 + a21 * x1 + a22 * x2 + a23 * x3
                        Z[j + 3, q] = Z[j + 3, q] + a30 * x0 + a31 * x1 + a32 * x2 + a33 * x3
                    i += 4
                while i < d:
                    a00, a10, a20, a30 = U[j, i], U[j + 1, i], U[j + 2, i], U[j + 3, i]
                    for q in range(nb):
                        x0 = xt[i, m0 + q]
                        Z[j, q] = Z[j, q] + a00 * x0
                        Z[j + 1, q] = Z[j + 1, q] + a10 * x0
                        Z[j + 2, q] = Z[j + 2, q] + a20 * x0
                        Z[j + 3, q] = Z[j + 3, q] + a30 * x0
                    i += 1
                for kk in range(k):
                    v0_, v1_, v2_, v3_ = V[kk, j], V[kk, j + 1], V[kk, j + 2], V[kk, j + 3]
                    for q in range(nb):
                        z0, z1, z2, z3 = Z[j, q], Z[j + 1, q], Z[j + 2, q], Z[j + 3, q]
                        out[kk, q] = out[kk, q] + v0_ * (z0 if z0 > zero else zero) \
                            + v1_ * (z1 if z1 > zero else zero) + v2_ * (z2 if z2 > zero else zero) \
                            + v3_ * (z3 if z3 > zero else zero)
                j += 4
            while j < H:  # the last H mod 4 units, one at a time
                bj = U[j, d]
                for q in range(nb):
                    Z[j, q] = bj
                i = 0
                while i + 4 <= d:
                    u0, u1, u2, u3 = U[j, i], U[j, i + 1], U[j, i + 2], U[j, i + 3]
                    for q in range(nb):
                        Z[j, q] = Z[j, q] + u0 * xt[i, m0 + q] + u1 * xt[i + 1, m0 + q] + u2 * xt[i + 2, m0 + q] \
                            + u3 * xt[i + 3, m0 + q]
                    i += 4
                while i < d:
                    u0 = U[j, i]
                    for q in range(nb):
                        Z[j, q] = Z[j, q] + u0 * xt[i, m0 + q]
                    i += 1
                for kk in range(k):
                    vj = V[kk, j]
                    for q in range(nb):
                        zq = Z[j, q]
                        out[kk, q] += vj * (zq if zq > zero else zero)
                j += 1
            # residuals: out becomes delta = 2 omega (N - f)
            for kk in range(k):
                for q in range(nb):
                    r = out[kk, q] - ft[kk, m0 + q]
                    wr = wts[m0 + q] * r
                    acc += wr * r
                    out[kk, q] = wr + wr
            if not need_grad:
                continue
            for kk in range(k):
                s = zero
                for q in range(nb):
                    s += out[kk, q]
                gc[kk] += s
            # backward, four units by four inputs at a time: 16 sums, each point's delta, masks and coordinates
            # loaded once for all of them; a unit's masked delta g_jm is recomputed in each sweep (a compare
            # and a select) rather than stored and reloaded
            j = 0
            while j + 4 <= H:
                for kk in range(k):
                    t0 = t1 = t2 = t3 = zero
                    i = 0
                    while i + 4 <= d:
                        s00 = s01 = s02 = s03 = zero
                        s10 = s11 = s12 = s13 = zero
                        s20 = s21 = s22 = s23 = zero
                        s30 = s31 = s32 = s33 = zero
                        if i == 0:  # the bias sums ride along with the first four inputs
                            for q in range(nb):
                                dq = out[kk, q]
                                g0 = dq if Z[j, q] > zero else zero
                                g1 = dq if Z[j + 1, q] > zero else zero
                                g2 = dq if Z[j + 2, q] > zero else zero
                                g3 = dq if Z[j + 3, q] > zero else zero
                                x0, x1, x2, x3 = xt[0, m0 + q], xt[1, m0 + q], xt[2, m0 + q], xt[3, m0 + q]
                                t0, t1, t2, t3 = t0 + g0, t1 + g1, t2 + g2, t3 + g3
                                s00, s01, s02, s03 = s00 + g0 * x0, s01 + g0 * x1, s02 + g0 * x2, s03 + g0 * x3
                                s10, s11, s12, s13 = s10 + g1 * x0, s11 + g1 * x1, s12 + g1 * x2, s13 + g1 * x3
                                s20, s21, s22, s23 = s20 + g2 * x0, s21 + g2 * x1, s22 + g2 * x2, s23 + g2 * x3
                                s30, s31, s32, s33 = s30 + g3 * x0, s31 + g3 * x1, s32 + g3 * x2, s33 + g3 * x3
                        else:
                            for q in range(nb):
                                dq = out[kk, q]
                                g0 = dq if Z[j, q] > zero else zero
                                g1 = dq if Z[j + 1, q] > zero else zero
                                g2 = dq if Z[j + 2, q] > zero else zero
                                g3 = dq if Z[j + 3, q] > zero else zero
                                x0, x1, x2, x3 = xt[i, m0 + q], xt[i + 1, m0 + q], xt[i + 2, m0 + q], xt[i + 3, m0 + q]
                                s00, s01, s02, s03 = s00 + g0 * x0, s01 + g0 * x1, s02 + g0 * x2, s03 + g0 * x3
                                s10, s11, s12, s13 = s10 + g1 * x0, s11 + g1 * x1, s12 + g1 * x2, s13 + g1 * x3
                                s20, s21, s22, s23 = s20 + g2 * x0, s21 + g2 * x1, s22 + g2 * x2, s23 + g2 * x3
                                s30, s31, s32, s33 = s30 + g3 * x0, s31 + g3 * x1, s32 + g3 * x2, s33 + g3 * x3
                        Fa[j, i, kk] += s00
                        Fa[j, i + 1, kk] += s01
                        Fa[j, i + 2, kk] += s02
                        Fa[j, i + 3, kk] += s03
                        Fa[j + 1, i, kk] += s10
                        Fa[j + 1, i + 1, kk] += s11
                        Fa[j + 1, i + 2, kk] += s12
                        Fa[j + 1, i + 3, kk] += s13
                        Fa[j + 2, i, kk] += s20
                        Fa[j + 2, i + 1, kk] += s21
                        Fa[j + 2, i + 2, kk] += s22
                        Fa[j + 2, i + 3, kk] += s23
                        Fa[j + 3, i, kk] += s30
                        Fa[j + 3, i + 1, kk] += s31
                        Fa[j + 3, i + 2, kk] += s32
                        Fa[j + 3, i + 3, kk] += s33
                        i += 4
                    if d < 4:  # no four-input sweep carried the bias sums
                        for q in range(nb):
                            dq = out[kk, q]
                            t0 += dq if Z[j, q] > zero else zero
                            t1 += dq if Z[j + 1, q] > zero else zero
                            t2 += dq if Z[j + 2, q] > zero else zero
                            t3 += dq if Z[j + 3, q] > zero else zero
                    Fa[j, d, kk] += t0
                    Fa[j + 1, d, kk] += t1
                    Fa[j + 2, d, kk] += t2
                    Fa[j + 3, d, kk] += t3
                    while i < d:
                        s00 = s10 = s20 = s30 = zero
                        for q in range(nb):
                            dq = out[kk, q]
                            x0 = xt[i, m0 + q]
                            s00 += (dq if Z[j, q] > zero else zero) * x0
                            s10 += (dq if Z[j + 1, q] > zero else zero) * x0
                            s20 += (dq if Z[j + 2, q] > zero else zero) * x0
                            s30 += (dq if Z[j + 3, q] > zero else zero) * x0
                        Fa[j, i, kk] += s00
                        Fa[j + 1, i, kk] += s10
                        Fa[j + 2, i, kk] += s20
                        Fa[j + 3, i, kk] += s30
                        i += 1
                j += 4
            while j < H:  # the last H mod 4 units, one at a time, with the masked delta stored once
                for kk in range(k):
                    sb = zero
                    for q in range(nb):
                        gq = out[kk, q] if Z[j, q] > zero else zero
                        g[q] = gq
                        sb += gq
                    Fa[j, d, kk] += sb
                    i = 0
                    while i + 4 <= d:
                        s0 = zero
                        s1 = zero
                        s2 = zero
                        s3 = zero
                        for q in range(nb):
                            gq = g[q]
                            s0 += gq * xt[i, m0 + q]
                            s1 += gq * xt[i + 1, m0 + q]
                            s2 += gq * xt[i + 2, m0 + q]
                            s3 += gq * xt[i + 3, m0 + q]
                        Fa[j, i, kk] += s0
                        Fa[j, i + 1, kk] += s1
                        Fa[j, i + 2, kk] += s2
                        Fa[j, i + 3, kk] += s3
                        i += 4
                    while i < d:
                        s0 = zero
                        for q in range(nb):
                            s0 += g[q] * xt[i, m0 + q]
                        Fa[j, i, kk] += s0
                        i += 1
                j += 1
        risk[t] = acc
        if not need_grad:
            continue
        for j in range(H):
            for i in range(d + 1):
                s = V[0, j] * Fa[j, i, 0]
                for kk in range(1, k):
                    s += V[kk, j] * Fa[j, i, kk]
                if i < d:
                    grad[t, w0 + j * d + i] = s
                elif b0 >= 0:
                    grad[t, b0 + j] = s
            if v0 >= 0:
                for kk in range(k):
                    s = U[j, 0] * Fa[j, 0, kk]
                    for i in range(1, d + 1):
                        s += U[j, i] * Fa[j, i, kk]
                    grad[t, v0 + kk * H + j] = s
        if c0 >= 0:
            for kk in range(k):
                grad[t, c0 + kk] = gc[kk]


class ShallowPoints:
    """A point set laid out for ``shallow_rows``: points ``(d, M)``, weights ``(M,)`` and target values
    ``(k, M)``, transposed so that the kernel's sweeps run along the contiguous point axis."""

    def __init__(self, points: np.ndarray, weights: np.ndarray, target_values: np.ndarray, dtype) -> None:
        self.xt = np.ascontiguousarray(np.asarray(points, dtype=dtype).reshape(len(weights), -1).T)
        self.weights = np.ascontiguousarray(weights, dtype=dtype)
        self.ft = np.ascontiguousarray(np.asarray(target_values, dtype=dtype).reshape(len(weights), -1).T)


def shallow_rows(arch, theta: np.ndarray, pts: ShallowPoints, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(risk (T,), G (T, P) or None)`` in ``theta``'s dtype for a shallow ReLU net ``arch``."""
    n = theta.shape[0]
    dtype = pts.weights.dtype
    theta = kernel_rows(theta, dtype)
    risk = np.empty(n, dtype)
    grad = np.empty((n, theta.shape[1]), dtype) if need_grad else np.empty((0, theta.shape[1]), dtype)
    hidden, output = arch.layers
    start = [-1 if sl is None else sl.start for sl in (hidden.weight, hidden.bias, output.weight, output.bias)]
    fixed = dtype.type(0.0 if arch.fixed_output is None else arch.fixed_output)
    _rows(theta, pts.xt, pts.weights, pts.ft, risk, grad, need_grad, arch.widths[0], arch.input_dim,
          arch.output_dim, *start, fixed)
    return risk, (grad if need_grad else None)
