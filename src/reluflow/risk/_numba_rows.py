"""What the compiled per-trajectory kernels share: how they are compiled, how a row's parameters reach them, what
a row with a non-finite parameter gives, and what the integrate loop reads from a state (``row_stats``: norms with
numpy's pairwise order of additions, ``sum_of_squares``), for a compiled GD block to return beside its states.

This module imports numba; like the kernels, it is imported on the first compiled evaluation only.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["bits_as_float64", "float64_bits", "kernel_rows", "nan_row_if_not_finite", "njit_kernel", "row_stats"]


def njit_kernel(fn):
    """``fn`` compiled as a kernel: cached on disk, releasing the GIL, ``error_model="numpy"`` (a division by zero
    gives inf or NaN as in numpy instead of raising). fastmath only lets LLVM contract ``a * b + c`` and reassociate
    (vectorize) reductions; ``nnan``/``ninf`` are left out, so NaN and inf behave as IEEE says."""
    return numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract", "reassoc"})(fn)


@intrinsic
def bits_as_float64(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits``."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def float64_bits(typingctx, x):
    """The bit pattern of the float64 ``x``, as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@numba.njit(inline="always")
def nan_row_if_not_finite(theta, t, risk, grad, need_grad):
    """Whether row ``t`` of ``theta`` ``(T, P)`` has a non-finite parameter; if so, its ``risk[t]`` and (if
    ``need_grad``) ``grad[t]`` are set to NaN, the row's whole result: no kernel evaluates such a row."""
    P = theta.shape[1]
    for p in range(P):
        if not np.isfinite(theta[t, p]):
            risk[t] = np.nan
            if need_grad:
                for q in range(P):
                    grad[t, q] = np.nan
            return True
    return False


# numpy's pairwise summation (``pairwise_sum`` in its loops): a block of up to PW_BLOCK values is summed with eight
# running sums, a longer range is halved (the first half a multiple of 8 long) and the halves' sums added
PW_BLOCK = 128
# frames of the explicit stack that replaces numpy's recursion (numba's cache cannot hold a recursive function: it
# crashes on loading one, numba issue #6061); each level at least halves the range, so 64 cover any length
PW_FRAMES = 64


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sum_of_squares_block(x, t, lo, n):
    """``sum(x[t, lo:lo + n] ** 2)`` for ``n <= PW_BLOCK``, in numpy's order."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += x[t, i] * x[t, i]
        return res
    r0, r1, r2, r3 = x[t, lo] ** 2, x[t, lo + 1] ** 2, x[t, lo + 2] ** 2, x[t, lo + 3] ** 2
    r4, r5, r6, r7 = x[t, lo + 4] ** 2, x[t, lo + 5] ** 2, x[t, lo + 6] ** 2, x[t, lo + 7] ** 2
    end = lo + n - n % 8
    b = lo + 8
    while b < end:
        r0 += x[t, b] ** 2
        r1 += x[t, b + 1] ** 2
        r2 += x[t, b + 2] ** 2
        r3 += x[t, b + 3] ** 2
        r4 += x[t, b + 4] ** 2
        r5 += x[t, b + 5] ** 2
        r6 += x[t, b + 6] ** 2
        r7 += x[t, b + 7] ** 2
        b += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, lo + n):
        res += x[t, i] ** 2
    return res


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sum_of_squares(x, t, lo, n, frames, left):
    """``np.sum(x[t, lo:lo + n] ** 2)`` bit for bit: the squares rounded, then numpy's pairwise summation (``0.0 +``
    it, as numpy's reduction starts from its identity). ``frames`` ``(PW_FRAMES, 3)`` int64 and ``left``
    ``(PW_FRAMES,)`` float64 are scratch for the stack of halved ranges (each frame: start, length, stage)."""
    if n <= PW_BLOCK:
        return 0.0 + _sum_of_squares_block(x, t, lo, n)
    top = 0
    frames[0, 0], frames[0, 1], frames[0, 2] = lo, n, 0
    ret = 0.0
    while top >= 0:
        start, length, stage = frames[top, 0], frames[top, 1], frames[top, 2]
        half = length // 2
        half -= half % 8
        if length <= PW_BLOCK:
            ret = _sum_of_squares_block(x, t, start, length)
            top -= 1
        elif stage == 0:  # the first half's sum first
            frames[top, 2] = 1
            top += 1
            frames[top, 0], frames[top, 1], frames[top, 2] = start, half, 0
        elif stage == 1:  # the first half's sum is ret: keep it, then the second half's
            left[top] = ret
            frames[top, 2] = 2
            top += 1
            frames[top, 0], frames[top, 1], frames[top, 2] = start + half, length - half, 0
        else:
            ret = left[top] + ret
            top -= 1
    return 0.0 + ret


@numba.njit(cache=True, nogil=True, error_model="numpy")
def row_stats(theta, grad, risk, w0, H, d, param_norm, grad_norm, finite, unit_min, frames, left):
    """For each row ``t`` of ``theta``, ``grad`` ``(T, P)`` and ``risk`` ``(T,)``, what the integrate loop computes
    from a state, bit for bit: ``param_norm[t]``, ``grad_norm[t]`` (Euclidean norms), ``finite[t]`` (every entry and
    the risk finite) and ``unit_min[t]``, the smallest ``|w_i|`` over the ``H`` units of ``d`` weights each from
    ``w0`` (``network.unit_norms`` of a bias-free first layer; NaN if any is). ``frames``, ``left``: the scratch
    of ``sum_of_squares``."""
    T, P = theta.shape
    for t in range(T):
        ok = np.isfinite(risk[t])
        for p in range(P):  # x - x is 0 for a finite x, NaN for inf and NaN: no branch per entry
            ok &= (theta[t, p] - theta[t, p] == 0.0) & (grad[t, p] - grad[t, p] == 0.0)
        finite[t] = ok
        param_norm[t] = math.sqrt(sum_of_squares(theta, t, 0, P, frames, left))
        grad_norm[t] = math.sqrt(sum_of_squares(grad, t, 0, P, frames, left))
        low, nan = np.inf, False
        for i in range(H):
            if d <= PW_BLOCK:  # the usual case, without the call
                sq = 0.0 + _sum_of_squares_block(theta, t, w0 + i * d, d)
            else:
                sq = sum_of_squares(theta, t, w0 + i * d, d, frames, left)
            norm = math.sqrt(sq)
            nan |= norm != norm
            low = min(low, norm)
        unit_min[t] = np.nan if nan else low


def kernel_rows(theta: np.ndarray, dtype) -> np.ndarray:
    """``theta`` ``(T, P)`` as a kernel takes it: C-contiguous, of ``dtype``, writeable (a read-only array, e.g. one
    deserialized by dask, would compile a second signature)."""
    theta = np.ascontiguousarray(theta, dtype=dtype)
    return theta if theta.flags.writeable else theta.copy()
