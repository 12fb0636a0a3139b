"""The compiled kernel of the quadrature backend for any architecture: ``network/_architecture.py``'s
backpropagation (``forward_backward``, kernel ``backprop``) in one loop per trajectory (kernel ``backprop_numba``).

The numpy kernel runs each layer as a handful of whole-array passes over a chunk's ``(chunk, M, h)`` arrays
(product, bias, activation, derivative, residual, the backward products), each pass a trip through the cache.
Here each trajectory walks its points in blocks of ``POINT_BLOCK``; a block's pre-activations, activations and
activation derivatives ``(MB, h)`` of every hidden layer stay in the cache between the forward and the backward
sweep, and everything elementwise (bias, activation, derivative, residual, the derivative's product with the
incoming delta) is fused into the loops that produce it:

    a_0 = x (block),  a_l = act(a_{l-1} W_l^T + b_l),  D_l = act'(z_l),  N = a_L W_{L+1}^T + b_{L+1}
    delta = 2 omega (N - f),  G_{W_l} += delta^T a_{l-1},  G_{b_l} += sum_m delta,  delta <- (delta W_l) * D_{l-1}

The layer products where every dimension is at least ``BLAS_MIN`` (a [32, 32] net's middle layer and its
gradient) go to BLAS (``np.dot``, which numba sends to scipy's BLAS); the thin ones (the input layer with a few
coordinates, a few outputs) are loops that LLVM vectorizes.

Activations as in ``network/_activations.py``: ``relu'(0) = 0`` (the strict ``>``), leaky ReLU's
``negative_slope`` on ``z <= 0``, sigmoid in its tanh form, softplus as numpy's ``logaddexp(0, z)``, tanh' and
sigmoid' from the activation's output. ``tanh`` is ``_tanh`` below, an ``expm1``-based evaluation that LLVM
vectorizes (libm's ``tanh``, which numba calls one element at a time, is about twelve times slower than numpy's
SIMD one on AVX-512 and would cost more than the whole numpy kernel); it is within a few units in the last place
of numpy's. float32 computes it in float64 and rounds.

Floating point. The numpy kernel's sums in another order (and with fused multiply-adds where the CPU has them:
``fastmath`` allows contraction and reassociation, never ``nnan``/``ninf``), so results agree to rounding, not bit
for bit; a ReLU unit is active where ``fl(z) > 0`` in either, and the two ``z`` differ by rounding, so only
points within rounding of a kink may differ. Every sum runs in an order fixed by the problem's sizes alone, so a
trajectory's bits do not depend on the batch it is in. A row with a non-finite parameter gives NaN risk and
gradient (the numpy kernel gives NaN or inf there).

numba is optional (``reluflow[fast]``): ``_quadrature`` imports this module on the first compiled evaluation and
keeps the numpy kernel where numba is missing or this module cannot be set up; compiled code is cached on disk.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ._numba_rows import bits_as_float64, kernel_rows, nan_row_if_not_finite, njit_kernel

__all__ = ["ACTIVATION_CODES", "BLAS_MIN", "POINT_BLOCK", "BackpropPoints", "applies", "backprop_rows",
           "scratch_elements"]

# Points per block: every hidden layer's activations and derivatives of a block, (MB, h) each, stay in the
# first- or second-level cache between the forward and the backward sweep (the deep workload, [32, 32]: 64 KB)
POINT_BLOCK = 128
# A layer product goes to BLAS where all its dimensions are at least this; thinner ones are compiled loops
BLAS_MIN = 8
ACTIVATION_CODES = {"relu": 0, "leaky_relu": 1, "tanh": 2, "sigmoid": 3, "softplus": 4}

# ln 2 split so that n * _LN2_HI is exact for |n| < 2^11 (fdlibm's constants)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00


def applies(arch) -> bool:
    """Any architecture ``Architecture`` builds, with an activation this kernel knows."""
    return arch.activation in ACTIVATION_CODES


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def _tanh(z):
    """``tanh(z)`` in float64 as ``-expm1(-2|z|) / (2 + expm1(-2|z|))`` with the sign of ``z``: branch-free, so
    that loops over it vectorize. ``expm1(y) = 2^n (1 + p(r)) - 1`` with ``y = n ln 2 + r``, ``|r| <= ln(2) / 2``
    and ``p`` expm1's Taylor polynomial to ``r^13`` (truncation below 2^-56 relative). No reassociation here:
    Horner's order is what keeps the polynomial accurate."""
    y = -2.0 * abs(z)
    if y < -46.0:  # tanh rounds to 1 beyond |z| = 19.1; NaN passes (NaN < -46 is false)
        y = -46.0
    n = np.floor(y * _INV_LN2 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0  # 1 / 13!, then Horner's rule down to r (1 / 1!)
    p = 1.0 / 479001600.0 + r * p
    p = 1.0 / 39916800.0 + r * p
    p = 1.0 / 3628800.0 + r * p
    p = 1.0 / 362880.0 + r * p
    p = 1.0 / 40320.0 + r * p
    p = 1.0 / 5040.0 + r * p
    p = 1.0 / 720.0 + r * p
    p = 1.0 / 120.0 + r * p
    p = 1.0 / 24.0 + r * p
    p = 1.0 / 6.0 + r * p
    p = 0.5 + r * p
    p = 1.0 + r * p
    p = r * p
    # n in [-67, 0]; as an integer only where finite (a NaN row stays NaN through p)
    s = bits_as_float64((np.int64(n if n == n else 0.0) + 1023) << 52)
    m = s * p + (s - 1.0)
    return math.copysign(abs(m) / (2.0 + m), z)  # tanh(-0.0) = -0.0


@njit_kernel
def _activate(a, dv, n, act, slope, one, half):
    """``a[:n]`` (pre-activations) becomes the activations in place, ``dv[:n]`` the activation's derivative."""
    zero = one - one
    if act == 0:
        for e in range(n):
            z = a[e]
            pos = z > zero
            a[e] = z if pos else zero
            dv[e] = one if pos else zero
    elif act == 1:
        for e in range(n):
            z = a[e]
            pos = z > zero
            a[e] = z if pos else slope * z
            dv[e] = one if pos else slope
    elif act == 2:
        for e in range(n):
            a[e] = _tanh(np.float64(a[e]))  # rounded to the dtype on the way in
            t = a[e]
            dv[e] = one - t * t
    elif act == 3:
        for e in range(n):
            dv[e] = _tanh(np.float64(half * a[e]))
            s = half * (one + dv[e])
            a[e] = s
            dv[e] = s * (one - s)
    else:
        for e in range(n):
            z = a[e]
            # numpy's logaddexp(0, z): log(2) at 0, else max(z, 0) + log1p(exp(-|z|)); the derivative sigmoid(z)
            zz = np.float64(z)
            sp = np.log(2.0) if zz == 0.0 else max(zz, 0.0) + np.log1p(np.exp(-abs(zz)))
            dv[e] = _tanh(np.float64(half * z))
            dv[e] = half * (one + dv[e])
            a[e] = sp


@njit_kernel
def _forward(w, prev, b, out, blas):
    """``out = w @ prev + b``: ``w`` ``(n_out, n_in)``, ``prev`` ``(n_in, nb)``, ``out`` ``(n_out, nb)``."""
    n_out, n_in = w.shape
    nb = prev.shape[1]
    if blas:
        np.dot(w, prev, out)
        for j in range(n_out):
            bj = b[j]
            for q in range(nb):
                out[j, q] += bj
        return
    for j in range(n_out):
        bj = b[j]
        for q in range(nb):
            out[j, q] = bj
        i = 0
        while i + 4 <= n_in:
            w0, w1, w2, w3 = w[j, i], w[j, i + 1], w[j, i + 2], w[j, i + 3]
            for q in range(nb):
                out[j, q] = out[j, q] + w0 * prev[i, q] + w1 * prev[i + 1, q] + w2 * prev[i + 2, q] \
                    + w3 * prev[i + 3, q]
            i += 4
        while i < n_in:
            w0 = w[j, i]
            for q in range(nb):
                out[j, q] += w0 * prev[i, q]
            i += 1


@njit_kernel
def _grad_weights(delta, prev, g, tmp, blas):
    """``g += delta @ prev.T``: ``delta`` ``(n_out, nb)``, ``prev`` ``(n_in, nb)``, ``g`` ``(n_out, n_in)``;
    ``tmp`` has room for ``n_out n_in`` entries."""
    n_out, nb = delta.shape
    n_in = prev.shape[0]
    if blas:
        prod = tmp[: n_out * n_in].reshape((n_out, n_in))
        np.dot(delta, prev.T, prod)
        for j in range(n_out):
            for i in range(n_in):
                g[j, i] += prod[j, i]
        return
    zero = g[0, 0] - g[0, 0]
    for j in range(n_out):
        for i in range(n_in):
            s = zero
            for q in range(nb):
                s += delta[j, q] * prev[i, q]
            g[j, i] += s


@njit_kernel
def _backward(w, delta, dv, new, blas):
    """``new = (w.T @ delta) * dv``: ``w`` ``(n_out, n_in)``, ``delta`` ``(n_out, nb)``, ``dv`` and ``new``
    ``(n_in, nb)``."""
    n_out, n_in = w.shape
    nb = delta.shape[1]
    if blas:
        np.dot(w.T, delta, new)
    else:
        zero = w[0, 0] - w[0, 0]
        for i in range(n_in):
            for q in range(nb):
                new[i, q] = zero
            j = 0
            while j + 4 <= n_out:
                w0, w1, w2, w3 = w[j, i], w[j + 1, i], w[j + 2, i], w[j + 3, i]
                for q in range(nb):
                    new[i, q] = new[i, q] + w0 * delta[j, q] + w1 * delta[j + 1, q] + w2 * delta[j + 2, q] \
                        + w3 * delta[j + 3, q]
                j += 4
            while j < n_out:
                w0 = w[j, i]
                for q in range(nb):
                    new[i, q] += w0 * delta[j, q]
                j += 1
    for i in range(n_in):
        for q in range(nb):
            new[i, q] *= dv[i, q]


@njit_kernel
def _rows(theta, x, wts, f, risk, grad, need_grad, sizes, woff, boff, fixed_w, act, slope, scratch, MB, blas_min):
    """``risk`` ``(T,)`` and, if ``need_grad``, ``grad`` ``(T, P)`` for each row of ``theta`` ``(T, P)``.

    ``x`` ``(M d,)``, ``wts`` ``(M,)``, ``f`` ``(M k,)``: the points, weights and target values in ``theta``'s
    dtype, the points and target values block by block, each block of ``MB`` points (fewer in the last)
    transposed, ``(d, nb)`` and ``(k, nb)``. ``sizes`` ``(d, h_1, ..., h_L, k)``; ``woff``, ``boff`` the offsets
    of each layer's weights and biases in a row (``-1`` where not trained: no bias, or the fixed output layer,
    whose weights ``(k, h_L)`` are ``fixed_w``). ``scratch`` has ``scratch_elements`` entries. Layer products
    with every dimension (the block's points included) at least ``blas_min`` go to BLAS."""
    T, P = theta.shape
    nl = sizes.shape[0] - 1
    d = sizes[0]
    k = sizes[nl]
    M = wts.shape[0]
    dt = theta.dtype
    one = np.ones(1, dt)[0]
    zero = one - one
    half = one / (one + one)
    # the scratch: the biases (zero where a layer has none); per hidden layer a block's activations and
    # derivatives (h, MB); two deltas of a block; one layer's weight gradient
    bpos = np.zeros(nl + 1, np.int64)
    hpos = np.zeros(nl, np.int64)
    widest = 0
    largest = 0
    for layer in range(nl):
        bpos[layer + 1] = bpos[layer] + sizes[layer + 1]
        widest = max(widest, sizes[layer], sizes[layer + 1])
        largest = max(largest, sizes[layer] * sizes[layer + 1])
    for layer in range(nl - 1):
        hpos[layer + 1] = hpos[layer] + MB * sizes[layer + 1]
    nbias, nh = bpos[nl], hpos[nl - 1]
    B = scratch[:nbias]
    o = nbias
    A = scratch[o : o + nh]
    o += nh
    Dv = scratch[o : o + nh]
    o += nh
    d1 = scratch[o : o + MB * widest]
    o += MB * widest
    d2 = scratch[o : o + MB * widest]
    o += MB * widest
    tmp = scratch[o : o + largest]
    for layer in range(nl):
        if boff[layer] < 0:
            for j in range(sizes[layer + 1]):
                B[bpos[layer] + j] = zero
    for t in range(T):
        if nan_row_if_not_finite(theta, t, risk, grad, need_grad):
            continue
        for layer in range(nl):
            if boff[layer] >= 0:
                for j in range(sizes[layer + 1]):
                    B[bpos[layer] + j] = theta[t, boff[layer] + j]
        if need_grad:
            for p in range(P):
                grad[t, p] = zero
        acc = zero
        for blk in range((M + MB - 1) // MB):
            m0 = blk * MB
            nb = min(MB, M - m0)
            # forward: each hidden layer's activations and derivatives of the block
            prev = x[m0 * d : (m0 + nb) * d].reshape((d, nb))
            for layer in range(nl - 1):
                n_in, n_out = sizes[layer], sizes[layer + 1]
                w = theta[t, woff[layer] : woff[layer] + n_out * n_in].reshape((n_out, n_in))
                a = A[hpos[layer] : hpos[layer] + n_out * nb].reshape((n_out, nb))
                _forward(w, prev, B[bpos[layer] : bpos[layer + 1]], a,
                         n_in >= blas_min and n_out >= blas_min and nb >= blas_min)
                _activate(A[hpos[layer] :], Dv[hpos[layer] :], n_out * nb, act, slope, one, half)
                prev = a
            n_in = sizes[nl - 1]
            if woff[nl - 1] >= 0:
                w = theta[t, woff[nl - 1] : woff[nl - 1] + k * n_in].reshape((k, n_in))
            else:
                w = fixed_w
            out = d1[: k * nb].reshape((k, nb))
            _forward(w, prev, B[bpos[nl - 1] : bpos[nl]], out, n_in >= blas_min and k >= blas_min
                     and nb >= blas_min)
            # residuals: out becomes delta = 2 omega (N - f)
            for kk in range(k):
                for q in range(nb):
                    r = out[kk, q] - f[m0 * k + kk * nb + q]
                    wr = wts[m0 + q] * r
                    acc += wr * r
                    out[kk, q] = wr + wr
            if not need_grad:
                continue
            delta = out
            in_d1 = True  # which buffer delta is in
            for layer in range(nl - 1, -1, -1):
                n_in, n_out = sizes[layer], sizes[layer + 1]
                if layer == 0:
                    prev = x[m0 * d : (m0 + nb) * d].reshape((d, nb))
                else:
                    prev = A[hpos[layer - 1] : hpos[layer - 1] + n_in * nb].reshape((n_in, nb))
                w0 = woff[layer]
                blas = n_in >= blas_min and n_out >= blas_min and nb >= blas_min
                if w0 >= 0:
                    _grad_weights(delta, prev, grad[t, w0 : w0 + n_out * n_in].reshape((n_out, n_in)), tmp, blas)
                    if boff[layer] >= 0:
                        b0 = boff[layer]
                        for j in range(n_out):
                            s = zero
                            for q in range(nb):
                                s += delta[j, q]
                            grad[t, b0 + j] += s
                if layer == 0:
                    break
                if w0 >= 0:
                    w = theta[t, w0 : w0 + n_out * n_in].reshape((n_out, n_in))
                else:
                    w = fixed_w
                new = (d2 if in_d1 else d1)[: n_in * nb].reshape((n_in, nb))
                dv = Dv[hpos[layer - 1] : hpos[layer - 1] + n_in * nb].reshape((n_in, nb))
                _backward(w, delta, dv, new, blas)
                in_d1 = not in_d1
                delta = new
        risk[t] = acc


def scratch_elements(arch, block: int = POINT_BLOCK) -> int:
    """Entries of ``_rows``'s scratch (in the kernel's dtype): the biases, per hidden layer a block's activations
    and derivatives, two deltas of a block and one layer's weight gradient."""
    sizes = (arch.input_dim, *arch.widths, arch.output_dim)
    return (sum(sizes[1:]) + 2 * block * sum(arch.widths) + 2 * block * max(sizes)
            + max(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))


class BackpropPoints:
    """A point set laid out for ``backprop_rows``: points ``(M d,)``, weights ``(M,)`` and target values
    ``(M k,)`` in the kernel's dtype, the points and target values in blocks of ``block`` points, each block
    transposed (``(d, nb)`` and ``(k, nb)``), so that the kernel's loops run along the contiguous point axis."""

    def __init__(self, points: np.ndarray, weights: np.ndarray, target_values: np.ndarray, dtype,
                 block: int = POINT_BLOCK) -> None:
        self.dtype = np.dtype(dtype)
        self.block = int(block)
        M = len(weights)
        x = np.asarray(points, dtype=dtype).reshape(M, -1)
        f = np.asarray(target_values, dtype=dtype).reshape(M, -1)
        self.x = np.empty(x.size, self.dtype)
        self.f = np.empty(f.size, self.dtype)
        for m0 in range(0, M, self.block):
            m1 = min(M, m0 + self.block)
            self.x[m0 * x.shape[1] : m1 * x.shape[1]] = x[m0:m1].T.reshape(-1)
            self.f[m0 * f.shape[1] : m1 * f.shape[1]] = f[m0:m1].T.reshape(-1)
        self.weights = np.ascontiguousarray(weights, dtype=dtype)


def backprop_rows(arch, theta: np.ndarray, pts: BackpropPoints, need_grad: bool,
                  blas_min: int = BLAS_MIN) -> tuple[np.ndarray, np.ndarray | None]:
    """``(risk (T,), G (T, P) or None)`` in ``pts.dtype`` for any architecture ``arch`` (``applies``)."""
    dtype = pts.dtype
    theta = kernel_rows(theta, dtype)
    T, P = theta.shape
    risk = np.empty(T, dtype)
    grad = np.empty((T, P), dtype) if need_grad else np.empty((0, P), dtype)
    sizes = np.array([arch.input_dim, *arch.widths, arch.output_dim], dtype=np.int64)
    woff = np.array([-1 if ls.weight is None else ls.weight.start for ls in arch.layers], dtype=np.int64)
    boff = np.array([-1 if ls.bias is None else ls.bias.start for ls in arch.layers], dtype=np.int64)
    fixed = 0.0 if arch.fixed_output is None else arch.fixed_output
    fixed_w = np.full((arch.output_dim, arch.widths[-1]), fixed, dtype=dtype)
    # allocated here rather than inside the compiled code, so that tracemalloc (and the memory model's test) sees it
    scratch = np.empty(scratch_elements(arch, pts.block), dtype)
    _rows(theta, pts.x, pts.weights, pts.f, risk, grad, need_grad, sizes, woff, boff, fixed_w,
          ACTIVATION_CODES[arch.activation], dtype.type(arch.negative_slope), scratch, pts.block, int(blas_min))
    return risk, (grad if need_grad else None)
