"""Batch-invariant scans for slot-major arrays ``(channels, slots, T)`` (trajectory axis last and contiguous).

Shared by the kernels that work on sorted 1D structure (``_exact1d``, ``_points1d``): prefix sums and reductions
written as whole-array elementwise operations in an order fixed by the slot count alone, never numpy's or BLAS's
choice of reduction order, so a trajectory's bits do not depend on the batch it is in; and a per-thread scratch
arena for a chunk's temporaries.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["BLOCK", "Scratch", "prefix_sum", "scratch", "sum_outputs", "sum_rows"]

# Slot axes handed to prefix_sum are padded to a multiple of this, the block length of the prefix sums:
# sequential within a block, then a doubling scan over block totals.
BLOCK = 8


class Scratch:
    """A bump allocator over one reusable buffer, for a chunk's temporaries.

    Fresh numpy temporaries of a few hundred kB are mmapped and page-faulted in (or trimmed from the heap) again
    on every chunk, which cost more than the arithmetic. Here each chunk takes its arrays from the same buffer,
    which grows (at ``reset``) to what the largest chunk needed. Arrays are views, valid until the next ``reset``.
    """

    ALIGN = 64

    def __init__(self) -> None:
        self._buf = np.empty(0, dtype=np.uint8)
        self._used = 0

    def reset(self) -> None:
        if self._used > self._buf.size:
            self._buf = np.empty(self._used, dtype=np.uint8)
        self._used = 0

    def __call__(self, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        start = self._used
        self._used += -(-nbytes // self.ALIGN) * self.ALIGN
        if self._used > self._buf.size:  # the first chunk of a new size: plain arrays, the buffer grows later
            return np.empty(shape, dtype=dtype)
        return self._buf[start : start + nbytes].view(dtype).reshape(shape)


_ITEMSIZE = {np.float64: 8, np.intp: np.dtype(np.intp).itemsize, np.bool_: 1}
_THREAD = threading.local()


def scratch() -> Scratch:
    """This thread's scratch arena (one per thread: backends may be shared between threads)."""
    ws = getattr(_THREAD, "scratch", None)
    if ws is None:
        ws = _THREAD.scratch = Scratch()
    return ws


def prefix_sum(x: np.ndarray, ws: Scratch, reverse: bool = False) -> None:
    """In place: inclusive prefix sums (suffix sums if ``reverse``) of ``x`` ``(C, n, T)`` along axis 1.

    ``n`` must be a multiple of ``BLOCK``. Sequential within blocks of ``BLOCK`` slots, then a doubling scan over
    the block totals, then one offset pass: whole-array operations along the contiguous trajectory axis, about
    three times faster than ``np.cumsum`` along the slot axis, in an order fixed by ``n`` alone.
    """
    C, n, T = x.shape
    nb = n // BLOCK
    v = x.reshape(C, nb, BLOCK, T)
    if not reverse:
        for j in range(1, BLOCK):
            v[:, :, j] += v[:, :, j - 1]
        if nb > 1:
            v[:, 1:] += _doubling_scan(v[:, :-1, BLOCK - 1], ws, reverse)[:, :, None]
    else:
        for j in range(BLOCK - 2, -1, -1):
            v[:, :, j] += v[:, :, j + 1]
        if nb > 1:
            v[:, :-1] += _doubling_scan(v[:, 1:, 0], ws, reverse)[:, :, None]


def _doubling_scan(x: np.ndarray, ws: Scratch, reverse: bool) -> np.ndarray:
    """Inclusive prefix (or suffix) sums of ``x`` ``(C, n, T)`` along axis 1 by recursive doubling (new array)."""
    n = x.shape[1]
    a, b = ws(x.shape), ws(x.shape)
    a[...] = x
    step = 1
    while step < n:
        b[...] = a
        if reverse:
            b[:, : n - step] += a[:, step:]
        else:
            b[:, step:] += a[:, : n - step]
        a, b, step = b, a, 2 * step
    return a


def sum_rows(x: np.ndarray, ws: Scratch) -> np.ndarray:
    """``x`` ``(n, T)`` summed over axis 0 by pairwise halving: ``(T,)``, in an order fixed by ``n`` alone."""
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        y = ws((half, x.shape[1]))
        np.add(x[:half], x[half : 2 * half], out=y)
        if x.shape[0] % 2:
            y[0] += x[2 * half]
        x = y
    return x[0]


def sum_outputs(x: np.ndarray) -> np.ndarray:
    """``x`` ``(k, ...)`` summed over outputs (axis 0) in a fixed order, in place into ``x[0]``."""
    for kk in range(1, x.shape[0]):
        x[0] += x[kk]
    return x[0]
