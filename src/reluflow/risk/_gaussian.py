"""The ``gaussian`` backend: closed-form risk of a bias-free shallow ReLU student and teacher, Gaussian input.

Setting (SCIENCE.md §7). Student ``N(x) = sum_i a_i relu(w_i . x)``, ``w`` ``(H, d)``, output weights ``a``
``(k, H)`` (column ``a_i`` belongs to unit ``i``; trainable, or the constant ``fixed_output``); teacher
``f(x) = sum_j a*_j relu(w*_j . x)``, ``W*`` ``(n, d)``, ``A*`` ``(k, n)``; input ``x ~ N(0, sigma^2 I_d)``.
With the arc-cosine kernel

    K(u, v) = E[relu(u.x) relu(v.x)] = q |u| |v| kappa(phi),   kappa(phi) = sin phi + (pi - phi) cos phi,
    q = sigma^2 / (2 pi),   phi = angle(u, v) in [0, pi],

the risk is ``L = sum_{i,i'} <a_i, a_i'> K(w_i, w_i') - 2 sum_{i,j} <a_i, a*_j> K(w_i, w*_j) + L*``.

**Gradient.** For ``u != 0``, ``grad_u K(u, v) = q [(pi - phi) v + |v| sin(phi) u/|u|]``: differentiate
``|u||v| sin phi + (pi - phi) u.v``; the two ``grad phi`` terms cancel since ``|u||v| cos phi = u.v``. It
equals ``E[x 1[u.x > 0] relu(v.x)]``, the integral in the generalized gradient of SCIENCE.md §3, also at
``phi = 0`` (``sigma^2 v / 2``) and ``phi = pi`` (0: disjoint half-spaces); so ``K`` is C^1 in ``u != 0`` and
``L`` is C^1 wherever every ``w_i != 0``. At ``w_i = 0`` the indicator ``1[w_i.x > 0]`` vanishes, so
``G_{w_i} = 0`` and ``G_{a_i} = 0`` (``relu(0.x) = 0``): below, the second comes out of a factor ``|w_i|``,
the first is imposed by a mask (the formula has no limit there). ``L`` uses ``u . grad_u K = K``
(1-homogeneity).

**Evaluation.** Stack the student rows and then the teacher rows into ``r_l``, ``l = 1..H+n``, with norms
``rho_l``, unit vectors ``rhat_l``, signed output weights ``At = [a, -A*]`` ``(k, H+n)``, and write
``psi_il = pi - phi_il``, ``s_il = sin phi_il``. With ``Y_c = (At_cl r_l)_l`` ``(H+n, d)`` and
``z_c = (At_cl rho_l)_l`` ``(H+n,)``::

    P1_ic = (psi @ Y_c)_i  (d,)      P2_ic = (s @ z_c)_i
    G_{w_i}  = 2 q 1[w_i != 0] sum_c a_ci (P1_ic + P2_ic uhat_i)
    G_{a_ci} = 2 q (|w_i| P2_ic + w_i . P1_ic)
    L        = q sum_{i,c} a_ci (|w_i| P2w_ic + w_i . P1w_ic) + L*

where ``P1w``, ``P2w`` count the teacher columns twice (the ``-2 <a_i, a*_j>`` of ``L``). A batch needs one
Gram matmul ``uhat @ rhat^T`` ``(T, H, H+n)``, five elementwise passes over it (clip, arccos,
``s = sqrt(1 - c^2)``) and two small matmuls; everything else is ``O(T H k d)``.

**Angles.** ``phi`` comes from the Gram cosine ``c``, whose rounding error near ``phi in {0, pi}`` becomes an
angle error of order ``sqrt(eps)``. It does not reach ``L`` or ``G``: ``s`` and ``psi`` are taken from the
*same* ``c``, so the evaluation is exact at a slightly different angle, and both
``d kappa / d phi = -(pi - phi) sin phi`` and ``d/d phi [(pi - phi) v + |v| sin(phi) uhat] =
|v| (cos(phi) uhat - vhat)`` (norm ``|v| sin phi``) vanish at ``phi = 0`` and ``phi = pi``: an angle error
``delta`` there costs ``O(phi delta) = O(eps)``. The self terms ``i = i'`` get ``c = 1`` exactly. The one-off
teacher term ``L*`` uses the ``2 atan2`` angle.

**Batch invariance.** Every matmul is a stacked ``np.matmul`` over per-row matrices of fixed shape (never one
GEMM over the batch axis), every other operation is elementwise or reduces within one row, and batches are cut
into chunks of fixed row count, so row ``t``'s results are bitwise the same in any batch.

**Kernels** (``GaussianRisk.kernel``): ``numba``, the default where numba is installed, the same evaluation fused
into one loop per trajectory (``_gaussian_numba.py``; the optional extra ``reluflow[fast]``; float32 rows are
computed in float64 and rounded; if it cannot be set up, the first evaluation warns and switches to numpy), and
``numpy``, ``_chunk`` below. They agree to rounding, not bit for bit (tests/test_gaussian_numba.py).
"""

from __future__ import annotations

import functools
import threading
from types import ModuleType
from typing import Any

import numpy as np

from .._limits import LIMITS
from ._base import Memory, RiskBackend, StepStats, import_compiled, numba_installed

__all__ = ["GaussianRisk", "arccos_kernel"]

# Elements of the largest per-chunk scratch array (16 MB of float64): bounds the workspace whatever the batch
# size. Rows per chunk follow from it (about 5000 for H = n = d = 10); chunking never changes a row's result.
CHUNK_ELEMENTS = 1 << 21
CALL_BYTES = 16 << 10  # small arrays and Python objects of one call (``memory``)


def _unit_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Norms ``(m,)`` and unit vectors ``(m, d)`` of the rows of ``w`` ``(m, d)``, without over/underflow.

    Zero rows give norm 0 and a zero vector.
    """
    scale = np.max(np.abs(w), axis=-1, keepdims=True)
    safe = np.where(scale > 0, scale, 1.0)
    ws = w / safe  # entries in [-1, 1]: squaring neither overflows nor underflows to zero
    rel = np.sqrt(np.einsum("...d,...d->...", ws, ws))[..., None]
    unit = np.where(scale > 0, ws / np.where(rel > 0, rel, 1.0), 0.0)
    return (scale * rel)[..., 0], unit


def _one_hot_axes(t_unit: np.ndarray, t_y: np.ndarray, k: int) -> np.ndarray:
    """For a teacher whose every unit vector ``t_unit`` ``(n, d)`` has one nonzero entry (SS2018's ``e_j``, in any
    order, scale or sign), the column of each: ``(n,)`` int64; its right-hand sides ``t_y`` ``(n, k d)`` are then
    zero outside those columns too. An empty array for any other teacher. The compiled kernel multiplies only by
    the nonzero entries of such a teacher: the products with its zeros change no sum (at most a zero's sign)."""
    n, d = t_unit.shape
    nonzero = t_unit != 0.0
    axis = np.argmax(nonzero, axis=1)
    one_hot = np.zeros((n, d), dtype=bool)
    one_hot[np.arange(n), axis] = True
    if n == 0 or not np.array_equal(nonzero, one_hot):
        return np.zeros(0, dtype=np.int64)
    if np.any(t_y.reshape(n, k, d)[~np.broadcast_to(one_hot[:, None, :], (n, k, d))] != 0.0):
        return np.zeros(0, dtype=np.int64)
    return axis.astype(np.int64)


# float64 values of one chunk of arccos_kernel's pairwise differences (8 MB)
_PAIR_CHUNK = 1 << 20


def arccos_kernel(u: np.ndarray, v: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``E[relu(u_i.x) relu(v_j.x)]`` ``(m, n)``, ``x ~ N(0, sigma^2 I)``.

    Rows ``u`` ``(m, d)``, ``v`` ``(n, d)``. A direct, unbatched float64 evaluation with the stable angle
    ``2 atan2(|uhat - vhat|, |uhat + vhat|)``; used for the teacher term.
    """
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    nu, uh = _unit_rows(u)
    nv, vh = _unit_rows(v)
    phi = np.empty((len(uh), len(vh)))
    # rows of u in chunks: the pairwise differences and sums hold (rows, n, d) values
    rows = max(1, _PAIR_CHUNK // max(1, vh.size))
    for a in range(0, len(uh), rows):
        pair_u = uh[a:a + rows, None, :]
        diff = np.linalg.norm(pair_u - vh[None, :, :], axis=-1)
        summ = np.linalg.norm(pair_u + vh[None, :, :], axis=-1)
        phi[a:a + rows] = 2.0 * np.arctan2(diff, summ)
    kappa = np.sin(phi) + (np.pi - phi) * np.cos(phi)
    return sigma**2 / (2 * np.pi) * nu[:, None] * nv[None, :] * kappa


def compiled_scratch_elements(H: int, n: int, d: int, k: int) -> int:
    """float64 entries of the compiled kernel's per-call arrays (``_gaussian_numba._rows``): a row's ``w`` and
    unit vectors ``(H, d)``, output weights ``(k, H)``, norms ``(H,)``; every unit vector transposed ``(d, m)``;
    the Gram products, then ``psi``, and ``s`` ``(H, m)``; the right-hand sides ``(m, k d)`` and ``(m, k)``; the
    sums ``P1`` ``(H, k d)``, ``P2`` and the teacher's ``A`` ``(H, k)``; one unit's ``A`` and gradient
    (``k + d``). ``m = H + n``."""
    m = H + n
    return 2 * H * d + k * H + H + d * m + 2 * H * m + m * k * d + m * k + H * k * d + 2 * H * k + k + d


class _Workspace:
    """Per-thread scratch arrays for up to ``rows`` trajectories; the teacher's blocks are filled once."""

    def __init__(self, owner: GaussianRisk, rows: int) -> None:
        dt, H, n, d, k = owner.dtype, owner.H, owner.n, owner.d, owner.k
        m, kd = H + n, k * d
        self.rows = rows
        self.uhat = np.empty((rows, H, d), dt)
        # minus the unit vectors, students then teacher: the Gram matmul then yields -cos(phi) directly
        self.rneg = np.empty((rows, m, d), dt)
        self.rneg[:, H:] = -owner._t_unit
        self.negcos = np.empty((rows, H, m), dt)
        self.trig = np.empty((rows, 2, H, m), dt)  # [psi = pi - phi, s = sin phi]
        # right-hand sides [Y | Y restricted to the teacher rows], [z | z restricted to the teacher rows]:
        # one matmul gives both the plain sums (gradient) and the extra teacher sums (risk weights 1 and 2)
        self.y = np.zeros((rows, m, 2 * kd), dt)
        self.y[:, H:, :kd] = owner._t_y
        self.y[:, H:, kd:] = owner._t_y
        self.z = np.zeros((rows, m, 2 * k), dt)
        self.z[:, H:, :k] = owner._t_z
        self.z[:, H:, k:] = owner._t_z
        self.p1 = np.empty((rows, H, 2 * kd), dt)
        self.p2 = np.empty((rows, H, 2 * k), dt)
        self.gw = np.empty((rows, H, d), dt)
        self.tmp = np.empty((rows, H, d), dt)


class GaussianRisk(RiskBackend):
    """Closed-form ``L`` and ``G``: bias-free shallow ReLU student and teacher under ``N(0, sigma^2 I)``."""

    name = "gaussian"

    def __init__(self, arch, measure, target, *, dtype=np.float64, n_points=1024, rng=None) -> None:
        super().__init__(arch, measure, target, dtype=dtype, n_points=n_points, rng=rng)
        dt = self.dtype
        self.H, self.d, self.k = arch.widths[0], arch.input_dim, arch.output_dim
        w_star = np.asarray(target.first_layer()[0], dtype=float)  # (n, d)
        a_star = np.asarray(target.output_layer()[0], dtype=float)  # (k, n)
        self.n = w_star.shape[0]
        self.sigma = float(measure.sigma)
        q = self.sigma**2 / (2 * np.pi)
        self._q = dt.type(q)
        self._2q = dt.type(2 * q)
        # teacher-teacher term, once, in float64 with the stable angle
        gram = arccos_kernel(w_star, w_star, self.sigma)
        self.teacher_risk = float(np.einsum("cj,cl,jl->", a_star, a_star, gram))
        self._teacher_risk = dt.type(self.teacher_risk)
        t_norm, t_unit = _unit_rows(w_star)
        self._t_unit = t_unit.astype(dt)  # (n, d)
        # teacher rows of Y_c = (At_cl r_l) and z_c = (At_cl rho_l), At = [a, -A*]: (n, k d) and (n, k)
        t_y = (-a_star.T[:, :, None] * w_star[:, None, :]).reshape(self.n, -1)
        t_z = -a_star.T * t_norm[:, None]
        self._t_y, self._t_z = t_y.astype(dt), t_z.astype(dt)
        # float64 whatever dtype, C-contiguous: the compiled kernel computes in float64
        self._teacher64 = tuple(np.ascontiguousarray(x, dtype=np.float64) for x in (t_unit, t_y, t_z))
        self._teacher_axes = _one_hot_axes(*self._teacher64[:2], self.k)
        self._w_slice = arch.layers[0].weight
        self._a_slice = arch.layers[1].weight  # None when the output layer is fixed
        if self._a_slice is None:
            self._a_fixed = np.full((1, self.k, self.H), arch.fixed_output, dtype=dt)
        self._local = threading.local()
        # Kernels, the first one the default: the compiled one (_gaussian_numba, where numba is installed) and the
        # numpy one below; they agree to rounding. numba itself is imported on the first compiled evaluation.
        self.kernels = ["numba", "numpy"] if numba_installed() else ["numpy"]
        self.kernel = self.kernels[0]

    # ------------------------------------------------------------------ applicability
    @classmethod
    def why_not(cls, arch, measure, target) -> str | None:
        if measure.kind != "gaussian":
            return f"it needs a gaussian measure (got {measure.kind!r})"
        if measure.dim != arch.input_dim:
            return f"measure.dim = {measure.dim} (the measure's dimension) but network.input_dim = {arch.input_dim}"
        if not arch.is_shallow:
            return f"it needs a shallow student with one hidden layer (got widths {list(arch.widths)})"
        if arch.activation != "relu":
            return f"it needs activation 'relu' (got {arch.activation!r})"
        if any(arch.bias):
            return "it needs a bias-free student (network.bias: false)"
        t = getattr(target, "arch", None)  # a teacher's network (risk/ does not import reluflow.problem)
        if t is None:
            return f"it needs a teacher target (got {type(target).__name__})"
        if not t.is_shallow:
            return f"it needs a shallow teacher with one hidden layer (got widths {list(t.widths)})"
        if t.activation != "relu":
            return f"it needs a ReLU teacher (got activation {t.activation!r})"
        if any(t.bias):
            return "it needs a bias-free teacher (target.bias: false)"
        if t.input_dim != arch.input_dim or t.output_dim != arch.output_dim:
            return "the teacher's input/output dimensions must match the student's"
        if t.widths[0] > LIMITS["teacher_width_gaussian"]:
            return (f"target.widths = {list(t.widths)}: at most {LIMITS['teacher_width_gaussian']} teacher units "
                    "(LIMITS['teacher_width_gaussian'], docs/running.md: the teacher-teacher term takes units x units "
                    "tables)")
        return None

    # ------------------------------------------------------------------ workspace (per thread, reused)
    def _workspace(self, rows: int) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.rows < rows:
            ws = self._local.ws = _Workspace(self, rows)
        return ws

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_local", None)  # thread-local scratch is neither picklable nor worth shipping to workers
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    # ------------------------------------------------------------------ kernel
    def _chunk(self, theta: np.ndarray, risk: np.ndarray, grad: np.ndarray | None) -> None:
        """Fill ``risk`` ``(T,)`` and, unless ``None``, ``grad`` ``(T, P)`` for ``theta`` ``(T, P)``."""
        T, H, n, d, k = theta.shape[0], self.H, self.n, self.d, self.k
        m = H + n
        ws = self._workspace(T)
        w = theta[:, self._w_slice].reshape(T, H, d)
        a = self._a_fixed if self._a_slice is None else theta[:, self._a_slice].reshape(T, k, H)

        # norms and unit vectors; the plain formula unless some |w_i|^2 leaves the normal range (or is 0)
        nsq = np.einsum("tid,tid->ti", w, w)
        norm = np.sqrt(nsq)
        uhat = ws.uhat[:T]
        with np.errstate(divide="ignore", invalid="ignore"):  # w_i = 0 rows are redone below
            np.divide(w, norm[:, :, None], out=uhat)
        fine = (nsq >= np.finfo(self.dtype).tiny) & (nsq < np.inf)
        all_fine = bool(fine.all())
        if not all_fine:
            bad = ~fine
            norm[bad], uhat[bad] = _unit_rows(w[bad])
        rneg = ws.rneg[:T]
        np.negative(uhat, out=rneg[:, :H])

        # -cos(phi) for every (student, student-or-teacher) pair; exactly -1 on the self terms
        negcos = ws.negcos[:T]
        np.matmul(uhat, rneg.transpose(0, 2, 1), out=negcos)
        negcos.reshape(T, H * m)[:, :: m + 1] = -1.0
        np.clip(negcos, -1.0, 1.0, out=negcos)  # |c| <= 1 makes 1 - c^2 >= 0 exactly
        trig = ws.trig[:T]
        psi, s = trig[:, 0], trig[:, 1]
        np.arccos(negcos, out=psi)  # pi - phi
        np.multiply(negcos, negcos, out=s)
        np.subtract(1.0, s, out=s)
        np.sqrt(s, out=s)

        # student rows of Y_c = a_ci w_i and z_c = a_ci |w_i| (the teacher rows are constant)
        y, z = ws.y[:T], ws.z[:T]
        for c in range(k):
            np.multiply(a[:, c, :, None], w, out=y[:, :H, c * d : (c + 1) * d])
            np.multiply(a[:, c, :], norm, out=z[:, :H, c])
        p1 = np.matmul(psi, y, out=ws.p1[:T]).reshape(T, H, 2 * k, d)
        p2 = np.matmul(s, z, out=ws.p2[:T])
        # A_ic = |w_i| P2_ic + w_i . P1_ic, for all columns (gradient) and for the teacher columns alone
        a_all = np.einsum("tid,ticd->tic", w, p1[:, :, :k]) + norm[:, :, None] * p2[:, :, :k]
        a_teach = np.einsum("tid,ticd->tic", w, p1[:, :, k:]) + norm[:, :, None] * p2[:, :, k:]
        a_all_t = np.swapaxes(np.broadcast_to(a, (T, k, H)), 1, 2)  # (T, H, k)
        risk[:] = self._q * np.einsum("tic,tic->t", a_all_t, a_all + a_teach) + self._teacher_risk
        # L = E[N^2] - 2 E[N f] + E[f^2] is a difference of O(|a|^2 |w|^2) terms: where they cancel (at and near a
        # global minimum) rounding leaves a few ulps of either sign, e.g. -1.1e-16 at the teacher's own
        # parameters. A risk is an integral of a square: clamp at 0 (the gradient is left as computed).
        np.maximum(risk, 0.0, out=risk)
        if grad is None:
            return

        gw, tmp = ws.gw[:T], ws.tmp[:T]
        for c in range(k):
            np.multiply(uhat, p2[:, :, c, None], out=tmp)
            tmp += p1[:, :, c]
            tmp *= a_all_t[:, :, c, None]
            if c == 0:
                gw[...] = tmp
            else:
                gw += tmp
        gw *= self._2q
        if not all_fine:
            gw[norm == 0] = 0.0  # w_i = 0: 1[w_i.x > 0] = 0 everywhere, so G_{w_i} = 0 (SCIENCE.md §3)
        grad[:, self._w_slice] = gw.reshape(T, H * d)
        if self._a_slice is not None:
            grad[:, self._a_slice] = (self._2q * a_all).transpose(0, 2, 1).reshape(T, k * H)

    def _evaluate(self, theta: np.ndarray, need_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.kernel not in self.kernels:
            raise ValueError(f"GaussianRisk.kernel = {self.kernel!r} is not allowed: expected one of {self.kernels}")
        theta = self._check(theta)
        if self.kernel == "numba":
            compiled = _compiled_module()
            if compiled is not None:
                return compiled.gaussian_rows(self, theta, need_grad)
            # installed but does not import: the numpy kernel (the same numbers to rounding)
            self.kernel = "numpy"
            self.kernels = ["numpy"]  # replaced, not edited: another thread may be reading it
        T = theta.shape[0]
        risk = np.empty(T, dtype=self.dtype)
        grad = np.empty_like(theta) if need_grad else None
        m, kd = self.H + self.n, self.k * self.d
        rows = max(1, CHUNK_ELEMENTS // (2 * m * max(self.H, kd)))  # trig (2, H, m) and y (m, 2 k d) per row
        for start in range(0, T, rows):
            sl = slice(start, min(T, start + rows))
            self._chunk(theta[sl], risk[sl], None if grad is None else grad[sl])
        return risk, grad

    def gd_steps(self, theta: np.ndarray, grad: np.ndarray,
                 h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, StepStats | None] | None:
        """``RiskBackend.gd_steps`` in one compiled call (kernel ``numba``, float64); ``None`` otherwise."""
        if self.kernel != "numba" or self.dtype != np.float64:
            return None
        compiled = _compiled_module()
        if compiled is None:
            return None
        return compiled.gaussian_gd_steps(self, theta, grad, h)

    # ------------------------------------------------------------------ the contract
    def dead_neurons(self, theta: np.ndarray) -> np.ndarray:
        """Dead units per trajectory, ``(T,)`` int64: those with ``w_i = 0``.

        A bias-free unit with ``w_i != 0`` is active on a half-space, which has positive Gaussian measure.
        """
        theta = self._check(theta)
        w = theta[:, self._w_slice].reshape(theta.shape[0], self.H, self.d)
        return np.all(w == 0, axis=2).sum(axis=1).astype(np.int64)

    def memory(self) -> Memory:
        """The results and the teacher's arrays (in ``dtype``, and in float64 for the compiled kernel), and per
        kernel:

        - ``numba``: its per-call scratch (``_gaussian_numba.scratch_elements``, float64: a row's unit vectors, the
          Gram cosines and their two trigonometric functions ``(H, H + n)`` each, the right-hand sides and sums),
          allocated by numba, which tracemalloc does not see: counted all the same; nothing per row beyond the
          results;
        - ``numpy``: per row of a chunk the workspace (``_Workspace``: unit vectors, the Gram cosines and their two
          trigonometric functions, the right-hand sides and products; it stays allocated on the backend, per
          thread, at the largest chunk seen) and the per-unit temporaries of ``_chunk``."""
        it = self.dtype.itemsize
        H, n, d, k, P = self.H, self.n, self.d, self.k, self.arch.n_params
        kd = k * d
        io = (P + 1) * it + (P * it if it != 8 else 0)  # the results, and theta in the backend's dtype
        teacher = (it + 8) * n * (d + kd + k)
        if self.kernel == "numba":
            return Memory(CALL_BYTES + teacher + 8 * compiled_scratch_elements(H, n, d, k), io)
        rows = self._chunk_rows()
        workspace = self._workspace_row_bytes()
        temps = it * (11 * H + 8 * H * k + 2 * H * d * (k + 1))  # einsum's contiguous copies of w and p1 included
        return Memory(CALL_BYTES + teacher, io, ((workspace + temps, rows),))

    def dead_memory(self) -> Memory:
        """``theta`` in ``dtype`` (a copy where it is float32) and a mask of ``w`` per row."""
        P, it = self.arch.n_params, self.dtype.itemsize
        return Memory(CALL_BYTES, 8 + 2 * P + (P * it if it != 8 else 0))

    def kept_memory(self) -> Memory:
        """The ``numpy`` kernel's workspace (``_Workspace``), kept on the backend per thread at the largest chunk
        seen; the compiled kernel keeps nothing."""
        if self.kernel == "numba":
            return Memory()
        return Memory(0.0, 0.0, ((self._workspace_row_bytes(), self._chunk_rows()),))

    def _chunk_rows(self) -> int:
        return max(1, CHUNK_ELEMENTS // (2 * (self.H + self.n) * max(self.H, self.k * self.d)))

    def _workspace_row_bytes(self) -> int:
        H, n, d, k = self.H, self.n, self.d, self.k
        m, kd = H + n, k * d
        return self.dtype.itemsize * (3 * H * d + m * d + 3 * H * m + 2 * m * kd + 2 * m * k + 2 * H * kd + 2 * H * k)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sigma": self.sigma, "kernel": self.kernel}


@functools.cache
def _compiled_module() -> ModuleType | None:
    """``_gaussian_numba``, imported on first use; ``None`` (with a warning, once) if it cannot be set up."""
    return import_compiled("_gaussian_numba", "gaussian's compiled kernel",
                           "gaussian uses its numpy kernel, which gives the same results to rounding")
