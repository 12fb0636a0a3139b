"""The compiled kernel of the ``gaussian`` backend (kernel ``numba``): ``GaussianRisk._chunk``'s closed form fused
into one loop per trajectory.

The numpy kernel makes some thirty whole-array passes per chunk (the Gram matmul, clip, arccos, ``1 - c^2``,
sqrt, the right-hand sides, two matmuls, einsums, the gradient's products), each a trip through memory and, for a
few trajectories, each a numpy call of a few microseconds. Here each trajectory does, with every array a few KB
and in cache (``H`` student rows, ``n`` teacher rows, ``m = H + n``, ``k`` outputs; ``_gaussian``'s docstring has
the mathematics)::

    rho_i, uhat_i                    norms and unit vectors of the student rows (the teacher's are constant)
    c_il  = -uhat_i . rhat_l         (H, m): minus the Gram cosines, -1 exactly on the self terms, clipped to [-1, 1]
    psi_il = arccos(c_il), s_il = sqrt(1 - c_il^2)
    P1_ic = sum_l psi_il At_cl r_l,  P2_ic = sum_l s_il At_cl rho_l   over the teacher rows first, then the students
    A_ic  = w_i . P1_ic + rho_i P2_ic (all rows), and the same over the teacher rows alone (the risk's weight 2)
    L     = max(0, q sum_{i,c} a_ci (A_ic + A^teacher_ic) + L*)
    G_w_i = 2 q 1[w_i != 0] sum_c a_ci (P1_ic + P2_ic uhat_i),   G_a_ci = 2 q A_ic

The teacher's sums come free: they are the partial sums after the teacher rows. The same edge cases as the numpy
kernel: rows with ``|w_i|^2`` outside the normal range (``w_i = 0``, tiny or huge rows) get their norm and unit
vector from the rescaled row (``_gaussian._unit_rows``), ``w_i = 0`` gives the unit vector 0 and ``G_w_i = 0``
(``G_a_i = 0`` comes out of ``|w_i| = 0`` and ``w_i = 0``), the self terms get ``c = -1`` exactly, ``s`` and ``psi``
come from the same clipped ``c`` (the gradient-accuracy argument of ``_gaussian``'s docstring), the risk is clamped
at 0, and a row with a non-finite parameter gives NaN risk and gradient.

**A one-hot teacher.** Where every teacher unit vector has one nonzero entry (SS2018's ``e_j``, in any order, scale
or sign: ``GaussianRisk._teacher_axes``), a teacher column of the Gram products is one product, ``c_{i,l} =
uhat_{i,p_l} rhat_{l,p_l}``, and a teacher row of the right-hand side ``At_cl r_l`` is zero but in column ``p_l``,
so ``P1``'s teacher part is one product per row and output. The products with the teacher's zeros that this skips
are ``x * (+-0)`` with ``x`` finite (a unit vector's entry, an angle: rows with a non-finite parameter never reach
the products), so each adds ``+-0``: to a sum that is still ``+0`` before its one nonzero term (``+0 + -0 = +0``)
or to a nonzero one afterwards, and neither changes a bit, a zero's sign included. The same risk and gradient as
the full products (``tests/test_gaussian_numba.py``), with half the Gram and ``P1`` work at ``n = d = H``.

**arccos.** numba calls libm's ``acos`` one element at a time; ``H m`` of them per evaluation would cost more than
the rest of the kernel (numpy's ``arccos`` is SIMD). ``_acos`` below is fdlibm's ``e_acos.c`` (the rational
approximation of ``asin`` on ``[0, 1/4]`` and the three argument ranges) evaluated branch-free, every range computed
and the result selected, so that the loop over a trajectory's ``H m`` cosines vectorizes; it is within a few units
in the last place of ``np.arccos``, exact at ``-1, 0, 1``, NaN outside ``[-1, 1]`` and for NaN.

Floating point. float64 throughout; a float32 ``theta`` is read as float64 (exactly), computed in float64 with the
teacher's float64 constants, and the results rounded to float32, so a float32 row's results are the float64 results
of the same (float32) parameters, rounded. Sums run in another order than the numpy kernel's matmuls and einsums
(with fused multiply-adds), so the two kernels agree to rounding, not bit for bit.

Determinism. Unlike the other compiled kernels (``_numba_rows.njit_kernel``), these functions allow contraction
only, not reassociation. LLVM guards a vectorized loop that stores to one array and loads from another with a
run-time check that the two do not overlap (or lie too close), and runs the scalar loop where the check fails;
which path runs depends on where the allocator put the arrays. With reassociation a vectorized sum (a norm, a dot
product) adds in another order than its scalar loop, so a few evaluations in an SS2018 run (3141 of 72111 at
k20_n20, 64 trajectories) gave other bits for the same row, and two runs of one cell differed in the last digits
of three trajectories. Without it every loop gives the same bits on either path (the axpy loops that carry the
work vectorize without it); every loop runs over sizes fixed by the problem and reads only the row's own
parameters and per-call scratch, so a trajectory's bits depend neither on the batch it is in nor on the heap.

numba is optional (``reluflow[fast]``): ``_gaussian`` imports this module on the first compiled evaluation and
keeps the numpy kernel where numba is missing or this module cannot be set up; compiled code is cached on disk.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._base import StepStats
from ._numba_rows import PW_FRAMES, bits_as_float64, float64_bits, kernel_rows, nan_row_if_not_finite, row_stats

__all__ = ["acos", "gaussian_gd_steps", "gaussian_rows"]

# fdlibm e_acos.c: pi and pi/2 (high part and the rest), and the rational approximation
# asin(x) = x + x^3 R(x^2), R(z) = p(z) / q(z), on |x| <= 1/2 (so z = x^2 or (1 - |x|)/2 is in [0, 1/4])
_PI = 3.14159265358979311600e00
_PIO2_HI = 1.57079632679489655800e00
_PIO2_LO = 6.12323399573676603587e-17
_PS0 = 1.66666666666666657415e-01
_PS1 = -3.25565818622400915405e-01
_PS2 = 2.01212532134862925881e-01
_PS3 = -4.00555345006794114027e-02
_PS4 = 7.91534994289814532176e-04
_PS5 = 3.47933107596021167570e-05
_QS1 = -2.40339491173441421878e00
_QS2 = 2.02094576023350569471e00
_QS3 = -6.88283971605453293030e-01
_QS4 = 7.70381505559019352791e-02
_HIGH_WORD = np.int64(-(1 << 32))  # 0xFFFFFFFF00000000: clears a float64's low 32 bits (fdlibm's SET_LOW_WORD)
# below this |w_i|^2 (float64's smallest normal) or at inf, a row's norm comes from the rescaled row
_TINY = float(np.finfo(np.float64).tiny)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def acos(x):
    """``arccos(x)`` in float64: fdlibm's ``__ieee754_acos`` without branches (all three ranges computed, the
    result selected), so that loops over it vectorize, and with one division instead of fdlibm's two. No
    reassociation here: the order of fdlibm's sums and the split ``pi/2 = _PIO2_HI + _PIO2_LO`` is what keeps it
    within an ulp.

    - ``|x| < 1/2``: ``pi/2 - (x + x r)``, ``r = x^2 R(x^2)``;
    - ``x <= -1/2``: ``pi - 2 asin(sqrt(z))``, ``z = (1 + x) / 2``, ``asin(s) = s + s r``, ``r = z R(z)``;
    - ``x >= 1/2``: ``2 asin(sqrt(z))``, ``z = (1 - x) / 2``, with ``s = sqrt(z)`` split into a high part ``df``
      (low 32 bits cleared, so ``df^2`` is exact) and the rest ``(z - df^2) / (s + df)``. fdlibm adds that rest
      to ``s r = s p / q``; here the two fractions are one, ``(s p (s + df) + (z - df^2) q) / (q (s + df))``: its
      rounding errors are relative to a term below ``s / 20``, not to the result.
    """
    ax = abs(x)
    small = ax < 0.5
    positive = not small and x > 0.0  # NaN: the negative range, whose z, s and result are NaN
    z = x * x if small else (1.0 - ax) * 0.5  # |x| > 1 gives z < 0, then s = NaN, as acos
    p = z * (_PS0 + z * (_PS1 + z * (_PS2 + z * (_PS3 + z * (_PS4 + z * _PS5)))))
    q = 1.0 + z * (_QS1 + z * (_QS2 + z * (_QS3 + z * _QS4)))
    s = math.sqrt(z)
    df = bits_as_float64(float64_bits(s) & _HIGH_WORD)
    den = s + df
    den = den if den > 0.0 else 1.0  # x = 1: z = s = df = 0, where fdlibm returns acos(1) = 0 as a special case
    num = s * p * den + (z - df * df) * q if positive else p
    r = num / (q * den if positive else q)
    near_zero = _PIO2_HI - (x - (_PIO2_LO - x * r))
    negative = _PI - 2.0 * (s + (r * s - _PIO2_LO))
    big = 2.0 * (df + r) if positive else negative
    return near_zero if small else big


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _add_product(A, a0, B, b0, out, K, N):
    """``out[i, e] += sum_{p < K} A[i, a0 + p] B[b0 + p, e]`` for every row ``i`` of ``out`` and its first ``N``
    columns.

    Four rows at a time: each loaded row of ``B`` feeds four multiply-adds (one row at a time, the loops over the
    short rows are bound by loads and loop overhead). Each ``out[i, e]`` sums over ``p`` in increasing order."""
    M = out.shape[0]
    i = 0
    while i + 4 <= M:
        for p in range(K):
            x0, x1, x2, x3 = A[i, a0 + p], A[i + 1, a0 + p], A[i + 2, a0 + p], A[i + 3, a0 + p]
            for e in range(N):
                b = B[b0 + p, e]
                out[i, e] += x0 * b
                out[i + 1, e] += x1 * b
                out[i + 2, e] += x2 * b
                out[i + 3, e] += x3 * b
        i += 4
    while i < M:
        for p in range(K):
            x0 = A[i, a0 + p]
            for e in range(N):
                out[i, e] += x0 * B[b0 + p, e]
        i += 1


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _workspace(H, n, d, k, a0, fixed, t_unit, t_y, t_z):
    """The per-call scratch of ``_rows_in``, with the teacher's constant parts (its columns of ``RT``, its rows of
    ``Y`` and ``Z``) and a fixed output layer filled in: reused by every row and, in ``_gd_steps``, every step."""
    m = H + n
    kd = k * d
    W = np.empty((H, d))
    U = np.empty((H, d))  # the student's unit vectors
    A = np.empty((k, H))
    norm = np.empty(H)
    RT = np.empty((d, m))  # unit vectors, transposed: students, then the teacher
    C = np.empty((H, m))  # the cosines (Gram products), then psi = pi - phi
    S = np.empty((H, m))  # s = sin phi
    Y = np.empty((m, kd))  # At_cl r_l
    Z = np.empty((m, k))  # At_cl rho_l
    P1 = np.empty((H, kd))
    P2 = np.empty((H, k))
    At = np.empty((H, k))  # A over the teacher rows
    Aall = np.empty(k)
    gw = np.empty(d)
    for j in range(d):
        for l in range(n):
            RT[j, H + l] = t_unit[l, j]
    for l in range(n):
        for e in range(kd):
            Y[H + l, e] = t_y[l, e]
        for c in range(k):
            Z[H + l, c] = t_z[l, c]
    if a0 < 0:
        for c in range(k):
            for i in range(H):
                A[c, i] = fixed
    return W, U, A, norm, RT, C, S, Y, Z, P1, P2, At, Aall, gw


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _rows(theta, risk, grad, need_grad, H, n, d, k, w0, a0, fixed, t_unit, t_y, t_z, t_axis, q, q2, teacher_risk):
    """``risk`` ``(T,)`` and, if ``need_grad``, ``grad`` ``(T, P)`` for each row of ``theta`` ``(T, P)``.

    ``w0``, ``a0``: offsets of ``w`` ``(H, d)`` and of the output weights ``(k, H)`` in a row (``a0 = -1``: the
    output layer is fixed to ``fixed``). The teacher, in float64: unit vectors ``t_unit`` ``(n, d)``, its rows of
    the right-hand sides ``t_y = -A*_cj w*_j`` ``(n, k d)`` and ``t_z = -A*_cj |w*_j|`` ``(n, k)``, and
    ``t_axis`` (``GaussianRisk._teacher_axes``: the column of each one-hot teacher row, or empty). ``q``,
    ``q2 = 2 q`` and ``teacher_risk`` (``L*``) as in ``GaussianRisk``."""
    ws = _workspace(H, n, d, k, a0, fixed, t_unit, t_y, t_z)
    _rows_in(theta, risk, grad, need_grad, ws, H, n, d, k, w0, a0, t_axis, q, q2, teacher_risk)


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _rows_in(theta, risk, grad, need_grad, ws, H, n, d, k, w0, a0, t_axis, q, q2, teacher_risk):
    """``_rows`` in the scratch ``ws`` of ``_workspace``."""
    W, U, A, norm, RT, C, S, Y, Z, P1, P2, At, Aall, gw = ws
    T = theta.shape[0]
    m = H + n
    kd = k * d
    for t in range(T):
        if nan_row_if_not_finite(theta, t, risk, grad, need_grad):
            continue
        if a0 >= 0:
            for c in range(k):
                for i in range(H):
                    A[c, i] = np.float64(theta[t, a0 + c * H + i])
        # norms and unit vectors; the plain formula unless |w_i|^2 leaves the normal range (or is 0)
        for i in range(H):
            nsq = 0.0
            for j in range(d):
                v = np.float64(theta[t, w0 + i * d + j])
                W[i, j] = v
                nsq += v * v
            if nsq >= _TINY and nsq < np.inf:
                rho = math.sqrt(nsq)
                for j in range(d):
                    U[i, j] = W[i, j] / rho
            else:  # _gaussian._unit_rows: the row scaled by its largest entry, which neither over- nor underflows
                scale = 0.0
                for j in range(d):
                    scale = max(scale, abs(W[i, j]))
                if scale == 0.0:
                    rho = 0.0
                    for j in range(d):
                        U[i, j] = 0.0
                else:
                    rsq = 0.0
                    for j in range(d):
                        v = W[i, j] / scale
                        U[i, j] = v
                        rsq += v * v
                    rel = math.sqrt(rsq)
                    rho = scale * rel
                    for j in range(d):
                        U[i, j] = U[i, j] / rel
            norm[i] = rho
            for j in range(d):
                RT[j, i] = U[i, j]
        # the Gram products; c = minus them, -1 exactly on the self terms, clipped; psi and s from the same c. A
        # one-hot teacher's column is one product: the others add +-0 to it, which changes no bit (module docstring)
        for i in range(H):
            for l in range(m):
                C[i, l] = 0.0
        if t_axis.shape[0] == n:
            _add_product(U, 0, RT, 0, C, d, H)
            for l in range(n):
                p = t_axis[l]
                v = RT[p, H + l]
                for i in range(H):
                    C[i, H + l] += RT[p, i] * v  # RT[p, i] = U[i, p]
        else:
            _add_product(U, 0, RT, 0, C, d, m)
        for i in range(H):
            C[i, i] = 1.0
        for i in range(H):
            for l in range(m):
                c = -C[i, l]
                c = -1.0 if c < -1.0 else c
                c = 1.0 if c > 1.0 else c
                S[i, l] = math.sqrt(1.0 - c * c)
                C[i, l] = acos(c)
        # the student rows of the right-hand sides
        for i in range(H):
            for c in range(k):
                aci = A[c, i]
                for j in range(d):
                    Y[i, c * d + j] = aci * W[i, j]
                Z[i, c] = aci * norm[i]
        # P1 and P2 over the teacher rows: their A is the risk's extra teacher sum; then over the student rows
        for i in range(H):
            for e in range(kd):
                P1[i, e] = 0.0
            for c in range(k):
                P2[i, c] = 0.0
        if t_axis.shape[0] == n:  # a one-hot teacher row's right-hand side is zero but in its own column
            for l in range(n):
                for c in range(k):
                    e = c * d + t_axis[l]
                    y = Y[H + l, e]
                    for i in range(H):
                        P1[i, e] += C[i, H + l] * y
        else:
            _add_product(C, H, Y, H, P1, n, kd)
        _add_product(S, H, Z, H, P2, n, k)
        for i in range(H):
            for c in range(k):
                dot = 0.0
                for j in range(d):
                    dot += W[i, j] * P1[i, c * d + j]
                At[i, c] = dot + norm[i] * P2[i, c]
        _add_product(C, 0, Y, 0, P1, H, kd)
        _add_product(S, 0, Z, 0, P2, H, k)
        acc = 0.0
        for i in range(H):
            for c in range(k):
                dot = 0.0
                for j in range(d):
                    dot += W[i, j] * P1[i, c * d + j]
                Aall[c] = dot + norm[i] * P2[i, c]
                acc += A[c, i] * (Aall[c] + At[i, c])
            if not need_grad:
                continue
            for j in range(d):
                gw[j] = 0.0
            for c in range(k):
                aci = A[c, i]
                p2 = P2[i, c]
                for j in range(d):
                    gw[j] += aci * (P1[i, c * d + j] + p2 * U[i, j])
            alive = norm[i] != 0.0  # w_i = 0: 1[w_i.x > 0] = 0 everywhere, so G_{w_i} = 0 (SCIENCE.md §3)
            for j in range(d):
                grad[t, w0 + i * d + j] = q2 * gw[j] if alive else 0.0
            if a0 >= 0:
                for c in range(k):
                    grad[t, a0 + c * H + i] = q2 * Aall[c]
        # a risk is an integral of a square: clamped at 0 as in the numpy kernel (the gradient is left as computed)
        risk[t] = max(q * acc + teacher_risk, 0.0)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gd_update(theta, grad, h, out):
    """``out[t] = theta[t] - h[t] grad[t]``, the product and the difference each rounded (no fast-math flags: no
    fused multiply-add), as numpy computes ``theta - h[:, None] * grad``."""
    T, P = theta.shape
    for t in range(T):
        ht = h[t]
        for p in range(P):
            out[t, p] = theta[t, p] - ht * grad[t, p]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gd_steps(theta, grad, h, th_s, gr_s, rk_s, pn_s, gn_s, fin_s, um_s, H, n, d, k, w0, a0, fixed, t_unit, t_y,
              t_z, t_axis, q, q2, teacher_risk):
    """``m`` GD updates of every row, each followed by its risk and gradient: ``th_s[j] = th_s[j-1] - h[j]
    gr_s[j-1]`` (with ``theta``, ``grad`` before the first), then ``_rows`` on ``th_s[j]``, then the state's
    ``row_stats`` into ``pn_s[j]``, ``gn_s[j]``, ``fin_s[j]``, ``um_s[j]`` while it is in cache."""
    ws = _workspace(H, n, d, k, a0, fixed, t_unit, t_y, t_z)
    frames, left = np.empty((PW_FRAMES, 3), dtype=np.int64), np.empty(PW_FRAMES)
    for j in range(h.shape[0]):
        if j == 0:
            _gd_update(theta, grad, h[0], th_s[0])
        else:
            _gd_update(th_s[j - 1], gr_s[j - 1], h[j], th_s[j])
        _rows_in(th_s[j], rk_s[j], gr_s[j], True, ws, H, n, d, k, w0, a0, t_axis, q, q2, teacher_risk)
        row_stats(th_s[j], gr_s[j], rk_s[j], w0, H, d, pn_s[j], gn_s[j], fin_s[j], um_s[j], frames, left)


def _kernel_args(backend) -> tuple:
    """The problem's constants as ``_rows`` takes them (after its ``theta``, ``risk``, ``grad``, ``need_grad``)."""
    a0 = -1 if backend._a_slice is None else backend._a_slice.start
    fixed = 0.0 if backend.arch.fixed_output is None else float(backend.arch.fixed_output)
    q = backend.sigma**2 / (2 * np.pi)
    return (backend.H, backend.n, backend.d, backend.k, backend._w_slice.start, a0, fixed, *backend._teacher64,
            backend._teacher_axes, q, 2 * q, backend.teacher_risk)


def gaussian_gd_steps(backend, theta: np.ndarray, grad: np.ndarray,
                      h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepStats]:
    """``m`` GD steps of every row in one compiled call: ``(theta (m, T, P), grad (m, T, P), risk (m, T), stats)``
    after each step, for ``theta``, its gradient ``grad`` ``(T, P)`` and the step sizes ``h`` ``(m, T)``; float64
    (``backend.dtype`` must be float64). Bitwise what ``m`` numpy updates ``theta - h[j][:, None] * grad``, each
    followed by ``gaussian_rows``, give; ``stats`` (``StepStats``, ``(m, T)`` each) bitwise what the integrate loop
    computes from those states."""
    theta, grad = kernel_rows(theta, np.float64), kernel_rows(grad, np.float64)
    h = kernel_rows(h, np.float64)
    m, (T, P) = h.shape[0], theta.shape
    th_s, gr_s, rk_s = np.empty((m, T, P)), np.empty((m, T, P)), np.empty((m, T))
    stats = StepStats(np.empty((m, T)), np.empty((m, T)), np.empty((m, T), dtype=np.bool_), np.empty((m, T)))
    _gd_steps(theta, grad, h, th_s, gr_s, rk_s, *stats, *_kernel_args(backend))
    return th_s, gr_s, rk_s, stats


def gaussian_rows(backend, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(risk (T,), G (T, P) or None)`` in ``backend.dtype`` for ``theta`` ``(T, P)``; ``backend`` a
    ``GaussianRisk`` (its teacher in float64: ``backend._teacher64``)."""
    dtype = backend.dtype
    theta = kernel_rows(theta, dtype)
    T, P = theta.shape
    risk = np.empty(T, dtype)
    grad = np.empty((T, P), dtype) if need_grad else np.empty((0, P), dtype)
    _rows(theta, risk, grad, need_grad, *_kernel_args(backend))
    return risk, (grad if need_grad else None)
