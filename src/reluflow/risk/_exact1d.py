"""The ``exact1d`` backend: closed-form risk and generalized gradient for shallow ReLU nets on an interval.

Setting (SCIENCE.md §6): input dimension 1, one hidden ReLU layer of width ``H``, ``k`` outputs,

    N(x) = c + sum_j v_j relu(w_j x + b_j),

an input measure ``mu`` with a piecewise polynomial density on ``[alpha, beta]`` and a piecewise polynomial target
``f``. Then ``L = int |N - f|^2 dmu`` and ``G`` (SCIENCE.md §3, ``relu'(0) := 0``) are finite sums of polynomial
integrals, evaluated here in closed form: no quadrature error, only floating-point rounding.

Algorithm, per trajectory, vectorized over the batch:

1. Every unit has a *position* and a *side*. A unit with ``w_j > 0`` is active on ``x > t_j = -b_j / w_j`` (it
   switches on at its slot: a "suffix" unit), one with ``w_j < 0`` on ``x < t_j`` (it switches off: a "prefix"
   unit). A unit with ``w_j = 0`` sits at ``-inf``: a suffix unit (active everywhere) when ``b_j > 0``, a prefix
   unit (active nowhere) otherwise, as ``relu'(b_j) = 1[b_j > 0]`` says.
2. The positions and the static knots (both interval ends, interior density knots and target breakpoints) are
   sorted together. Sorted positions clipped to ``[alpha, beta]`` bound the pieces; positions outside the
   interval or tied ones only bound pieces of length exactly zero, whose integrals are exactly zero. The sort is
   the fast default one; a row with tied positions is sorted again stably (tied units in index order, then
   static knots), so that the order of every sum below depends on that row alone.
3. On each piece ``N`` is affine. Its slope and intercept are prefix sums over the sorted slots: a forward sum of
   the suffix units plus a reverse sum of the prefix units. Two one-sided sums (rather than adding a prefix unit at
   the start and subtracting it at its kink) mean a unit only ever enters the sums of pieces where it is active,
   so inactive units with large weights cause no cancellation. Intercepts are taken about the interval midpoint
   ``x0`` (a unit contributes ``v_j (w_j x0 + b_j)``), which keeps them small on intervals far from the origin.
4. Each piece is integrated in local coordinates ``u = x - m`` about its midpoint ``m``. The target and density
   polynomials are stored about the centres of the static pieces (converted exactly, in rational arithmetic,
   once) and Taylor-shifted to ``m`` per piece; ``int_{-h/2}^{h/2} u^s du`` is ``0`` for odd ``s`` and
   ``h^{s+1} / (2^s (s+1))`` for even ``s``. No high powers of absolute ``x`` appear, so nothing cancels there.
   Per piece this gives ``int |r|^2 p``, ``int r p`` and ``int (x - x0) r p`` (``r = N - f``, ``p`` the density).
5. A unit's gradient integrals run over a prefix (prefix unit) or a suffix (suffix unit) of the sorted pieces:
   forward and reverse prefix sums of the per-piece moments, read at the unit's slot. Each is accumulated only
   over the unit's own active pieces, so it is accurate relative to its own size.

Layout and cost. Inside a chunk of trajectories the arrays are *slot-major*: ``(channels, slots, T)`` with the
trajectory axis last and contiguous, so every step is a few whole-array numpy operations (gathers, elementwise
arithmetic, a blocked prefix sum along the slot axis) with long inner loops. Per trajectory that is one
argsort of ``H + S + 1`` positions plus ``O((H + S) k)`` work; there is no Python loop over trajectories or
units, only over polynomial degrees, outputs and the fixed block structure of the prefix sums.

Kernels (``Exact1DRisk.kernel``): ``numba``, the default where numba is installed, the same algorithm compiled
into one loop per trajectory (``_exact1d_numba.py``; the optional extra ``reluflow[fast]``; if it cannot be set up,
the first evaluation warns and switches to numpy), and ``numpy``, the whole-array version below. They give the
same bits, so a table does not depend on which one ran; the compiled one is about three times faster
(bench/README.md).

Batch invariance. Every reduction (prefix sums, sums over pieces and outputs) is written as elementwise
operations in a fixed order that depends on ``H`` and the knots only, never numpy's or BLAS's choice of
reduction order for a given shape; so row ``i``'s result is bitwise the same in any batch and any chunking.

Precision. The computation always runs in float64; with ``dtype = float32`` the parameters are rounded to float32
on input (as ``_check`` does for every backend) and the float64 results are rounded to float32 on output. Against
adaptive quadrature the relative error of ``L`` is ~1e-15 and that of each ``G`` component ~1e-14 (at worst
~1e-12) of ``int |integrand| dmu``.

Memory. A chunk's temporaries come from a per-thread scratch arena (``Scratch``) that is reused across chunks and
calls, because freshly allocated arrays of this size get page-faulted in on every chunk, which cost more than the
arithmetic. It holds about ``50 * CHUNK_ELEMENTS * 8`` bytes per output channel group (~12 MiB for ``k = 1``).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from ._base import Memory, RiskBackend, import_compiled, numba_installed
from ._polynomials import shift_exact
from ._scan import BLOCK, Scratch, prefix_sum, scratch, sum_outputs, sum_rows

# A chunk holds about this many (slot, trajectory) pairs: small enough that its working set stays in cache, large
# enough that the inner loops (over trajectories) amortize numpy's per-call overhead (measured: 2^13..2^16 are
# within ~20% of each other at widths 8..512).
CHUNK_ELEMENTS = 1 << 15
CALL_BYTES = 16 << 10  # small arrays and Python objects of one call (``memory``)


class Exact1DRisk(RiskBackend):
    """Closed-form ``L`` and ``G`` for a shallow 1D ReLU net, piecewise polynomial density and target."""

    name = "exact1d"
    has_hessian = True

    def __init__(self, arch, measure, target, *, dtype=np.float64, n_points=1024, rng=None) -> None:
        super().__init__(arch, measure, target, dtype=dtype, n_points=n_points, rng=rng)
        (hidden, output) = arch.layers
        self._H = hidden.n_out
        self._k = output.n_out
        self._w_sl, self._b_sl = hidden.weight, hidden.bias
        self._v_sl, self._c_sl = output.weight, output.bias
        self._fixed = None if arch.fixed_output is None else float(arch.fixed_output)
        self._hessian_parts = None  # (density, target) in the Hessian's centred form, see hessian()

        dknots, dcoefs = measure.density_pieces()
        dknots = np.asarray(dknots, dtype=float)
        dcoefs = _trim(np.asarray(dcoefs, dtype=float)[:, None, :])[:, 0, :]  # (Kd, nd+1)
        pp = target.piecewise_polynomial()
        breaks = np.asarray(pp.breakpoints, dtype=float)
        tcoefs = _trim(np.asarray(pp.coefficients, dtype=float))  # (Kt, k, nf+1)
        if tcoefs.shape[-1] < 2:  # the residual is at least affine, so keep a slope slot
            tcoefs = np.concatenate([tcoefs, np.zeros_like(tcoefs)], axis=-1)

        alpha, beta = float(dknots[0]), float(dknots[-1])
        self.alpha, self.beta = alpha, beta
        self.x0 = 0.5 * (alpha + beta)
        inner = breaks[(breaks > alpha) & (breaks < beta)]
        static = np.unique(np.concatenate([dknots, inner]))  # (S+1,) sorted, includes both ends
        centers = 0.5 * (static[:-1] + static[1:])
        self._static = static
        self._S = len(static) - 1
        # Static slots, padded to make the piece count a multiple of BLOCK. The pads lie right of the interval
        # (only zero-length pieces) and are distinct, so that they create no ties (see _chunk).
        pad = -(self._H + self._S) % BLOCK
        self._slots_static = np.concatenate([static, beta + (beta - alpha) * np.arange(1, pad + 1)])
        self._centers = centers
        # the target and density piece that covers each static piece, expanded about its center
        tpiece = np.searchsorted(breaks, centers, side="right")
        dpiece = np.searchsorted(dknots[1:-1], centers, side="right")
        tc = shift_exact(tcoefs[tpiece], centers)  # (S, k, nf+1)
        dc = shift_exact(dcoefs[dpiece][:, None, :], centers)[:, 0, :]  # (S, nd+1)
        # per degree q: (k, S), so that a gather by static index gives (k, pieces, T)
        self._tc = [np.ascontiguousarray(tc[:, :, q].T) for q in range(tc.shape[-1])]
        self._dc = [np.ascontiguousarray(dc[:, q]) for q in range(dc.shape[-1])]
        self._nf = tc.shape[-1] - 1
        self._nd = dc.shape[-1] - 1
        # a density that is one constant everywhere (the uniform measure) needs no per-piece gather
        self._dconst = float(dc[0, 0]) if self._nd == 0 and np.all(dc[:, 0] == dc[0, 0]) else None
        # the smallest interval carrying all of mu's mass: a unit active only outside it is dead
        massive = np.flatnonzero(np.any(dcoefs != 0, axis=1))
        self._support = (float(dknots[massive[0]]), float(dknots[massive[-1] + 1]))
        # Kernels, the first one the default: both give the same bits (module docstring of _exact1d_numba); the
        # other stays available (bench/ compares them). numba itself is imported on the first compiled evaluation,
        # not here: it costs ~0.3 s and ~65 MB, which processes that only build problems need not pay.
        self.kernels = ["numpy"]
        if numba_installed():
            self.kernels.insert(0, "numba")
            start = [-1 if sl is None else sl.start for sl in (self._w_sl, self._b_sl, self._v_sl, self._c_sl)]
            self._compiled_args = (
                self._H, self._k, *start, np.nan if self._fixed is None else self._fixed,
                np.ascontiguousarray(self._slots_static, dtype=float), np.ascontiguousarray(centers, dtype=float),
                np.ascontiguousarray(static[1:-1], dtype=float), np.ascontiguousarray(tc.transpose(2, 1, 0)),
                np.ascontiguousarray(dc.T), 0.0 if self._dconst is None else self._dconst, self._dconst is not None,
                self.x0, alpha, beta,
            )
        self.kernel = self.kernels[0]

    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if arch.input_dim != 1:
            return f"it needs network.input_dim = 1 (got {arch.input_dim})"
        if not arch.is_shallow:
            return f"it needs one hidden layer (got widths {list(arch.widths)})"
        if arch.activation != "relu":
            return f"it needs activation 'relu' (got {arch.activation!r})"
        if measure.dim != 1 or measure.density_pieces() is None:
            return (f"it needs a uniform or piecewise polynomial measure on an interval (got a {measure.dim}D "
                    f"{measure.kind!r} measure)")
        pp = target.piecewise_polynomial()
        if pp is None:
            return "it needs a piecewise polynomial 1D target (constant, affine, piecewise affine, polynomial, " \
                "piecewise polynomial, abs, or a 1D shallow ReLU teacher)"
        if pp.output_dim != arch.output_dim:
            return f"the target has {pp.output_dim} output(s) but network.output_dim = {arch.output_dim}"
        return None

    # ------------------------------------------------------------------ the contract
    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        """``(T,)`` int64: units with ``w x + b <= 0`` on the whole support of ``mu`` (a ``mu``-null active set).

        The active set ``{x : w x + b > 0}`` meets the support ``[a, b]`` of ``mu`` in a set of positive measure
        iff the affine pre-activation is positive at ``a`` or at ``b`` (a nonzero polynomial density on a piece
        has positive mass on every subinterval).
        """
        theta = self._check(theta).astype(np.float64, copy=False)
        w = theta[:, self._w_sl]
        b = theta[:, self._b_sl] if self._b_sl is not None else 0.0
        lo, hi = self._support
        dead = ((w * lo + b) <= 0) & ((w * hi + b) <= 0)
        return dead.sum(axis=1, dtype=np.int64)

    def memory(self) -> Memory:
        """The results (float64, plus the float32 copies of ``theta`` and of the results where ``dtype`` is
        float32); the ``numpy`` kernel adds its arena per row of a chunk (``_arena_row_bytes``), the compiled one
        only ``O(H)`` scratch per call."""
        P, H = self.arch.n_params, self._H
        io = 8 * (P + 1) + (4 * P + 8 * P + 4 * (P + 1) if self.dtype != np.float64 else 0)
        if self.kernel == "numba":  # its per-call scratch: some 30 arrays of E slots
            return Memory(CALL_BYTES + 8 * 32 * (H + len(self._slots_static)), io)
        return Memory(CALL_BYTES, io, ((self._arena_row_bytes(), self._chunk_rows()),))

    def dead_memory(self) -> Memory:
        """``theta`` in float64 (copies where ``dtype`` is float32) and three ``(H,)`` temporaries per row."""
        P, H = self.arch.n_params, self._H
        return Memory(CALL_BYTES, 8 * 3 * H + 8 + (12 * P if self.dtype != np.float64 else 0))

    def kept_memory(self) -> Memory:
        """The ``numpy`` kernel's arena (``_scan.scratch``, per thread), at the size of the largest chunk seen;
        the compiled kernel keeps nothing."""
        return Memory() if self.kernel == "numba" else self.hessian_kept_memory()

    def hessian_kept_memory(self) -> Memory:
        """The ``numpy`` kernel's arena, which the Hessian's residual moments use whatever ``kernel`` says."""
        return Memory(0.0, 0.0, ((self._arena_row_bytes(), self._chunk_rows()),))

    def hessian_memory(self) -> Memory:
        """``_hessian1d.exact1d_hessian_memory``."""
        from ._hessian1d import exact1d_hessian_memory

        return exact1d_hessian_memory(self)

    def _chunk_rows(self) -> int:
        return max(1, CHUNK_ELEMENTS // (self._H + len(self._slots_static)))

    def _arena_row_bytes(self) -> int:
        """Bytes per trajectory of the numpy kernel's arena (``_chunk``): about ``16 + 14 k`` slot arrays of
        ``E + H`` entries (slots ``E``, units ``H``) for a constant density and an affine target, more for the
        Taylor coefficients of higher degrees (``nf`` of the target, ``nd`` of the density); measured
        ``28..47`` per ``E + H`` for ``k = 1, 2``, ``nf <= 3``, ``nd <= 2``."""
        k, nf, nd = self._k, self._nf, self._nd
        return 8 * (16 + 14 * k + 3 * nd + 2 * nf + nf * nd) * (self._H + len(self._slots_static) + self._H)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "compute_dtype": "float64", "kernel": self.kernel}

    # ------------------------------------------------------------------ kernel
    def _evaluate(self, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kernel not in self.kernels:
            raise ValueError(f"Exact1DRisk.kernel = {self.kernel!r} is not allowed: expected one of {self.kernels}")
        compiled = _compiled_module() if self.kernel == "numba" else None
        if compiled is None and self.kernel == "numba":  # installed but does not import: the numpy kernel's bits
            self.kernel = "numpy"
            self.kernels = ["numpy"]  # replaced, not edited: another thread may be reading it
        if compiled is not None:
            kernel = compiled.compiled_kernel(self._k, self._nf)
            risk, grad = compiled.exact1d_rows(kernel, self._compiled_args,
                                               self._check(theta).astype(np.float64, copy=False), need_grad)
        else:
            risk, grad, _ = self._evaluate_f64(theta, need_grad, need_moments=False)
        # Each piece's int r^2 p is summed as sum_{a,b} r_a r_b nu_{a+b}: with a non-constant density or a target
        # of degree > 1 the cross terms can be negative, so a residual near 0 could round to a risk a few ulps
        # below 0 (not observed; with a constant density and an affine residual every term is non-negative). A
        # risk is an integral of a square: clamp at 0, after either kernel so that both still give the same bits;
        # the gradient is left as computed.
        np.maximum(risk, 0.0, out=risk)
        if self.dtype != np.float64:
            risk = risk.astype(self.dtype)
            grad = None if grad is None else grad.astype(self.dtype)
        return risk, grad

    def _evaluate_f64(
        self, theta: np.ndarray, need_grad: bool, need_moments: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(risk (T,), G (T, P) or None, moments (T, 2, kv, H) or None)``, all float64.

        ``moments[:, 0, o, j] = int_{A_j} r_o p`` and ``moments[:, 1, o, j] = int_{A_j} (x - x0) r_o p`` over
        unit ``j``'s active set ``A_j`` (``r_o = N_o - f_o``; with a fixed output layer and ``k > 1``, ``kv = 1``
        and ``r_0`` stands for the sum over outputs): the residual moments a closed-form Hessian needs.
        """
        theta = self._check(theta).astype(np.float64, copy=False)
        n = theta.shape[0]
        risk = np.empty(n, dtype=np.float64)
        need_grad = need_grad or need_moments
        grad = np.empty((n, self.arch.n_params), dtype=np.float64) if need_grad else None
        kv = 1 if self._fixed is not None else self._k
        moments = np.empty((n, 2, kv, self._H), dtype=np.float64) if need_moments else None
        rows = max(1, CHUNK_ELEMENTS // (self._H + len(self._slots_static)))
        ws = scratch()
        # "invalid" arises only in rows with non-finite parameters, which come out NaN (other rows are unaffected)
        with np.errstate(invalid="ignore"):
            for start in range(0, n, rows):
                sl = slice(start, min(n, start + rows))
                ws.reset()
                risk[sl] = self._chunk(theta[sl], None if grad is None else grad[sl], ws,
                                       None if moments is None else moments[sl])
        return risk, grad, moments

    def hessian(self, theta: np.ndarray) -> np.ndarray:
        """Closed-form Hessian of ``L`` ``(T, P, P)`` float64 at ``theta`` ``(T, P)`` (``_hessian1d``)."""
        from ._hessian1d import exact1d_hessian, hessian_parts

        if self._hessian_parts is None:  # built on first use: most backends never take a Hessian
            self._hessian_parts = hessian_parts(self)
        return exact1d_hessian(self, theta, *self._hessian_parts)

    def _chunk(self, th: np.ndarray, grad: np.ndarray | None, ws: Scratch,
               moments: np.ndarray | None = None) -> np.ndarray:
        """Risk ``(T,)`` of a chunk ``th`` ``(T, P)`` float64; writes ``G`` into ``grad`` ``(T, P)`` if given.

        Internal arrays are slot-major, ``(channels, slots or pieces, T)``, and live in the scratch arena ``ws``;
        the returned risk is a view into it, valid until ``ws.reset()``.
        """
        T, H, k = th.shape[0], self._H, self._k
        E = H + len(self._slots_static)  # slots; E - 1 pieces, a multiple of BLOCK
        P1 = E - 1
        x0, alpha, beta = self.x0, self.alpha, self.beta
        fixed = self._fixed
        kv = 1 if fixed is not None else k  # distinct channels of N (a fixed output layer gives k equal ones)
        intp = np.intp
        cols = np.arange(T)

        # ---- sort, row-major (T, E) for numpy's per-row argsort
        w_rows = th[:, self._w_sl]
        pos = ws((T, E))
        pos[:, H:] = self._slots_static
        kink = pos[:, :H]
        if self._b_sl is None:
            kink.fill(0.0)
            np.copyto(kink, -np.inf, where=w_rows == 0)
        else:
            kink.fill(np.inf)
            with np.errstate(over="ignore"):  # |w| tiny: the kink is at +-inf, which is what it means
                np.divide(th[:, self._b_sl], w_rows, out=kink, where=w_rows != 0)
            np.negative(kink, out=kink)
        order = ws((E, T), intp)  # slot -> unit (< H) or static knot
        order[...] = np.argsort(pos, axis=1).T
        gather = ws((E, T), intp)  # flat index of (slot, trajectory): first into pos, then into (E, T) arrays
        np.add(order, (cols * E)[None, :], out=gather)
        q = ws((E, T))
        np.take(pos, gather, out=q)  # sorted positions
        # Distinct positions have one sorting permutation, whatever the algorithm; rows with ties (or NaN) are
        # sorted again stably so that their order, hence every bit of the result, is fixed by the row alone.
        rising = ws((P1, T), np.bool_)
        np.greater(q[1:], q[:-1], out=rising)
        tied = np.flatnonzero(~np.logical_and.reduce(rising, axis=0))
        if len(tied):
            order[:, tied] = np.argsort(pos[tied], axis=1, kind="stable").T
            q[:, tied] = np.take(pos, order[:, tied] + tied * E)
        # clipped by IEEE comparisons (a position strictly beyond an end becomes that end; -0.0 at an end of +0.0
        # stays), not np.clip, whose treatment of signed zeros differs between its loops and numpy versions and
        # which the compiled kernel could not then match bit for bit
        np.copyto(q, alpha, where=q < alpha)
        np.copyto(q, beta, where=q > beta)
        np.multiply(order, T, out=gather)  # now into (E, T) slot-major arrays
        gather += cols

        # ---- per-unit quantities, unit-major (H, T)
        thT = ws((self.arch.n_params, T))
        thT[...] = th.T
        w = thT[self._w_sl]
        suffix = ws((H, T), np.bool_)  # active on [position, beta); otherwise on (alpha, position]
        np.greater(w, 0.0, out=suffix)
        z0 = ws((H, T))  # pre-activation at x0
        np.multiply(w, x0, out=z0)
        if self._b_sl is not None:
            b = thT[self._b_sl]
            z0 += b
            flat_on = ws((H, T), np.bool_)
            np.greater(b, 0.0, out=flat_on)
            flat_on &= w == 0
            suffix |= flat_on

        # contributions to slope and intercept, and the suffix flag, gathered into slot order and then split by
        # side: Us = [prefix slope, prefix intercept, suffix slope, suffix intercept] (kv channels each). Static
        # slots contribute nothing.
        U = ws((2 * kv, E, T))
        U[:, H:] = 0.0
        for kk in range(kv):
            vk = thT[self._v_sl][kk * H : (kk + 1) * H] if fixed is None else fixed
            np.multiply(vk, w, out=U[kk, :H])
            np.multiply(vk, z0, out=U[kv + kk, :H])
        flag = ws((E, T))
        flag[H:] = 0.0
        np.copyto(flag[:H], suffix)
        on = ws((E, T))
        np.take(flag, gather, out=on)
        Us = ws((4 * kv, E, T))
        np.take(U.reshape(2 * kv, E * T), gather, axis=1, out=Us[: 2 * kv])
        np.multiply(Us[: 2 * kv], on, out=Us[2 * kv :])
        Us[: 2 * kv] -= Us[2 * kv :]
        # piece p lies between slots p and p+1: suffix units at slots <= p, prefix units at slots >= p+1
        prefix_sum(Us[2 * kv :, :-1], ws)
        prefix_sum(Us[: 2 * kv, 1:], ws, reverse=True)
        coef = Us[2 * kv :, :-1]
        coef += Us[: 2 * kv, 1:]
        slope, icpt = coef[:kv], coef[kv:]  # (kv, E-1, T)

        # ---- pieces, (E-1, T)
        h = ws((P1, T))
        np.subtract(q[1:], q[:-1], out=h)  # exactly 0 for tied or outside positions
        mid = ws((P1, T))
        np.add(q[1:], q[:-1], out=mid)
        mid *= 0.5
        xm = ws((P1, T))
        np.subtract(mid, x0, out=xm)
        n0 = ws((kv, P1, T))  # N at the midpoints
        np.multiply(slope, xm, out=n0)
        n0 += icpt
        if self._c_sl is not None:
            n0 += thT[self._c_sl][:, None, :]
        delta = ws((P1, T))  # midpoint minus the centre of its static piece
        fq = [ws((k, P1, T)) for _ in self._tc]  # target Taylor coefficients
        if self._S == 1:
            sidx = None
            np.subtract(mid, self._centers[0], out=delta)
            for c, f in zip(self._tc, fq, strict=True):
                f[...] = c[:, :, None]
        else:  # the static piece of each piece (a zero-length piece on a knot may take either side)
            inner = self._static[1:-1]
            sidx = ws((P1, T), intp)
            if len(inner) <= 8:  # a few whole-array comparisons beat a binary search per element
                above = ws((P1, T), np.bool_)
                np.greater_equal(mid, inner[0], out=above)
                np.copyto(sidx, above)
                for knot in inner[1:]:
                    np.greater_equal(mid, knot, out=above)
                    sidx += above
            else:
                sidx[...] = np.searchsorted(inner, mid, side="right")
            np.take(self._centers, sidx, out=delta)
            np.subtract(mid, delta, out=delta)
            for c, f in zip(self._tc, fq, strict=True):
                np.take(c, sidx, axis=1, out=f)
        tmp = ws((k, P1, T))
        _taylor_shift(fq, delta, tmp)
        # residual Taylor coefficients about the midpoints, (k, E-1, T)
        r = [ws((k, P1, T)), ws((k, P1, T))] + fq[2:]
        np.subtract(n0, fq[0], out=r[0])
        np.subtract(slope, fq[1], out=r[1])
        for f in fq[2:]:
            np.negative(f, out=f)
        nr = len(r) - 1

        # density-weighted moments nu_t = int u^t p(mid + u) du over [-h/2, h/2], t = 0..2 nr; (E-1, T). The
        # even moments of u are mu_s = h^{s+1} / (2^s (s+1)) = mu_{s-2} h^2 (s-1) / (4 (s+1)); odd ones vanish.
        n_mu = 2 * nr + self._nd
        hh = ws((P1, T))
        np.multiply(h, h, out=hh)
        nu: list[np.ndarray | None] = [None] * (2 * nr + 1)
        if self._dconst is not None:
            nu[0] = ws((P1, T))
            np.multiply(h, self._dconst, out=nu[0])
            for t in range(2, 2 * nr + 1, 2):
                nu[t] = ws((P1, T))
                np.multiply(nu[t - 2], hh, out=nu[t])
                nu[t] *= (t - 1) / (4.0 * (t + 1))
        else:
            mu: list[np.ndarray | None] = [None] * (n_mu + 1)
            mu[0] = h
            for t in range(2, n_mu + 1, 2):
                mu[t] = ws((P1, T))
                np.multiply(mu[t - 2], hh, out=mu[t])
                mu[t] *= (t - 1) / (4.0 * (t + 1))
            dq = [ws((P1, T)) for _ in self._dc]
            for c, d in zip(self._dc, dq, strict=True):
                if sidx is None:
                    d.fill(c[0])
                else:
                    np.take(c, sidx, out=d)
            _taylor_shift(dq, delta, ws((P1, T)))
            prod = ws((P1, T))
            for t in range(2 * nr + 1):
                for cdeg, d in enumerate(dq):
                    if mu[t + cdeg] is None:
                        continue
                    if nu[t] is None:
                        nu[t] = ws((P1, T))
                        np.multiply(d, mu[t + cdeg], out=nu[t])
                    else:
                        np.multiply(d, mu[t + cdeg], out=prod)
                        nu[t] += prod
        # J_a = int u^a r p over each piece, (k, E-1, T); e = int |r|^2 p = sum_a r_a J_a
        J: list[np.ndarray] = []
        for a in range(nr + 1):
            acc = None
            for bdeg in range(nr + 1):
                if nu[a + bdeg] is None:
                    continue
                if acc is None:
                    acc = ws((k, P1, T))
                    np.multiply(r[bdeg], nu[a + bdeg], out=acc)
                else:
                    np.multiply(r[bdeg], nu[a + bdeg], out=tmp)
                    acc += tmp
            J.append(acc)
        e = ws((k, P1, T))
        np.multiply(r[0], J[0], out=e)
        for a in range(1, nr + 1):
            np.multiply(r[a], J[a], out=tmp)
            e += tmp
        risk = sum_rows(sum_outputs(e), ws)
        if grad is None:
            return risk

        # ---- gradient: per-piece moments int r p and int (x - x0) r p (summed over outputs for a fixed layer)
        m0 = J[0]
        m1 = ws((k, P1, T))
        np.multiply(J[0], xm, out=m1)
        m1 += J[1]
        if fixed is not None and k > 1:
            m0, m1 = sum_outputs(m0)[None], sum_outputs(m1)[None]
        # Z[:, s] = sum over pieces p < s and Z[:, E + s] = sum over pieces p >= s, for every slot s
        Z = ws((2 * kv, 2 * E, T))
        Z[:, 0] = 0.0
        Z[:, 2 * E - 1] = 0.0
        for lo, hi in ((1, E), (E, 2 * E - 1)):
            Z[:kv, lo:hi] = m0
            Z[kv:, lo:hi] = m1
        prefix_sum(Z[:, 1:E], ws)
        prefix_sum(Z[:, E : 2 * E - 1], ws, reverse=True)
        rank = ws((E * T,), intp)
        rank[gather] = np.arange(0, E * T, T)[:, None]  # slot * T, per unit
        idx = rank.reshape(E, T)[:H]
        idx += cols
        side = ws((H, T), intp)
        np.multiply(suffix, E * T, out=side)  # suffix units read the reverse sums
        idx += side
        sel = ws((2 * kv, H, T))
        np.take(Z.reshape(2 * kv, 2 * E * T), idx, axis=1, out=sel)
        s0, s1 = sel[:kv], sel[kv:]
        if moments is not None:
            moments[...] = sel.reshape(2, kv, H, T).transpose(3, 0, 1, 2)

        gT = ws((self.arch.n_params, T))  # parameter-major, transposed into grad at the end
        vs0, vs1, prod = ws((H, T)), ws((H, T)), ws((H, T))
        if fixed is None:
            v = thT[self._v_sl].reshape(k, H, T)
            np.multiply(v[0], s0[0], out=vs0)
            np.multiply(v[0], s1[0], out=vs1)
            for kk in range(1, k):
                np.multiply(v[kk], s0[kk], out=prod)
                vs0 += prod
                np.multiply(v[kk], s1[kk], out=prod)
                vs1 += prod
        else:
            np.multiply(s0[0], fixed, out=vs0)
            np.multiply(s1[0], fixed, out=vs1)
        gw = gT[self._w_sl]
        np.multiply(vs0, x0, out=gw)
        gw += vs1
        gw *= 2.0
        if self._b_sl is not None:
            np.multiply(vs0, 2.0, out=gT[self._b_sl])
        if self._v_sl is not None:
            gv = gT[self._v_sl].reshape(k, H, T)
            np.multiply(w, s1, out=gv)
            for kk in range(k):
                np.multiply(z0, s0[kk], out=prod)
                gv[kk] += prod
            gv *= 2.0
        if self._c_sl is not None:
            np.multiply(Z[:k, E - 1], 2.0, out=gT[self._c_sl])
        grad[...] = gT.T
        return risk


@functools.cache
def _compiled_module() -> ModuleType | None:
    """``_exact1d_numba``, imported on first use; ``None`` (with a warning, once) if it cannot be set up."""
    return import_compiled("_exact1d_numba", "exact1d's compiled kernel",
                           "exact1d uses its numpy kernel, which gives the same results")


def _trim(coefs: np.ndarray) -> np.ndarray:
    """Drop trailing degrees that are zero on every piece and output; ``coefs`` ``(K, k, n+1)``."""
    nonzero = np.flatnonzero(np.any(coefs != 0, axis=(0, 1)))
    top = int(nonzero[-1]) + 1 if len(nonzero) else 1
    return coefs[..., :top]


def _taylor_shift(coefs: list[np.ndarray], delta: np.ndarray, tmp: np.ndarray) -> None:
    """In place: coefficients of ``g(y + delta)`` in powers of ``y`` from those of ``g(y)`` (ascending degree).

    Repeated synthetic division, O(n^2) elementwise operations; ``tmp`` is scratch of the coefficients' shape.
    """
    n = len(coefs) - 1
    for i in range(n):
        for j in range(n - 1, i - 1, -1):
            np.multiply(coefs[j + 1], delta, out=tmp)
            coefs[j] += tmp
