"""What the compiled per-trajectory kernels share: how they are compiled, how a row's parameters reach them, and
what a row with a non-finite parameter gives.

This module imports numba; like the kernels, it is imported on the first compiled evaluation only.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

__all__ = ["bits_as_float64", "float64_bits", "kernel_rows", "nan_row_if_not_finite", "njit_kernel"]


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


def kernel_rows(theta: np.ndarray, dtype) -> np.ndarray:
    """``theta`` ``(T, P)`` as a kernel takes it: C-contiguous, of ``dtype``, writeable (a read-only array, e.g. one
    deserialized by dask, would compile a second signature)."""
    theta = np.ascontiguousarray(theta, dtype=dtype)
    return theta if theta.flags.writeable else theta.copy()
