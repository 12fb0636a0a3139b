"""Certified critical points of the ``gaussian`` risk (SCIENCE.md §7-§8): the closed-form G and H of a bias-free
shallow ReLU student with a fixed output layer against a ReLU teacher, ``x ~ N(0, sigma^2 I)``, in float64 (for
choices: preconditioners, eigenvectors, Newton steps) and in ball arithmetic over boxes (for conclusions).

Notation (docs/analysis.md, "Certified critical points: the gaussian backend"). Student rows ``w_i`` (``n``),
teacher rows ``r_j`` (``m``), ``q = sigma^2 / (2 pi)``, ``K(u, v) = q |u| |v| kappa(phi)``, ``kappa(phi) = sin phi
+ (pi - phi) cos phi``, ``phi = angle(u, v)``. With the output weights fixed at ``a`` (every output, ``k``
outputs) and the teacher's ``A*`` ``(k, m)``::

    L = c_ss sum_{i,i'} K(w_i, w_i') - 2 sum_{i,j} c_j K(w_i, r_j) + L*,   c_ss = k a^2,  c_j = a sum_o A*_oj

and, writing ``uh = u/|u|``, ``p = vh - cos(phi) uh``, ``p' = uh - cos(phi) vh`` (``|p| = |p'| = sin phi``)::

    g(u, v)    = grad_u K        = q [(pi - phi) v + |v| sin(phi) uh]
    H_uu(u, v) = d^2 K / du^2    = q |v| / |u| [sin(phi) (I - uh uh^T) + p p^T / sin(phi)]
    H_uv(u, v) = d^2 K / du dv   = q [(pi - phi) I + sin(phi) uh vh^T + p p'^T / sin(phi)]

    G_i      = 2 c_ss sum_{i'} g(w_i, w_i') - 2 sum_j c_j g(w_i, r_j)          (g(w, w) = q pi w)
    H_{ii}   = 2 c_ss [q pi I + sum_{i' != i} H_uu(w_i, w_i')] - 2 sum_j c_j H_uu(w_i, r_j)
    H_{ii'}  = 2 c_ss H_uv(w_i, w_i')                                            (i != i')

``p p^T / sin(phi)`` has entries of modulus at most ``|p_a| |p_b| / |p| <= sin(phi)``: it tends to 0 as ``phi``
tends to 0 or ``pi``, so H is continuous there (the risk is C^2 wherever every ``w_i != 0``; its third derivatives
blow up like ``1 / sin(phi)``). Over a box where ``sin(phi)`` is not bounded away from 0 the ball evaluation uses
that bound, ``[-S, S]`` entrywise with ``S`` an upper bound of ``sin(phi)``, instead of the quotient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._certify_common import radius_ladder
from ._certify_common import refuse as _refuse

__all__: list[str] = []


def why_unsupported(problem: Any) -> str | None:
    """Why the gaussian certificate does not apply to ``problem`` (``None`` when it does)."""
    arch = problem.architecture
    if not arch.is_shallow or arch.activation != "relu":
        return "certification needs a shallow ReLU network"
    if arch.fixed_output is None:
        # (w_i, a_i) -> (l w_i, a_i / l) is a continuous symmetry; its slice is not implemented for this backend
        return ("the gaussian certificate needs a fixed output layer (network.fixed_output): with trained output "
                "weights the rescaling symmetry makes every critical point non-isolated, and its slice is not "
                "implemented for this backend")
    return None


def _stable_angles(uh: np.ndarray, vh: np.ndarray) -> np.ndarray:
    """``angle(uh_i, vh_l)`` ``(..., n, m)`` of unit rows, by ``2 atan2(|u - v|, |u + v|)`` (accurate near 0, pi)."""
    diff = np.linalg.norm(uh[..., :, None, :] - vh[..., None, :, :], axis=-1)
    summ = np.linalg.norm(uh[..., :, None, :] + vh[..., None, :, :], axis=-1)
    return 2.0 * np.arctan2(diff, summ)


class GaussianModel:
    """Closed-form L, G, H of the gaussian risk with a fixed output layer: float64 and ball versions."""

    def __init__(self, problem: Any) -> None:
        arch = problem.architecture
        self.n, self.d, self.k = arch.widths[0], arch.input_dim, arch.output_dim
        self.a = float(arch.fixed_output)
        self.wslice = arch.layers[0].weight
        w_star = np.asarray(problem.target.first_layer()[0], dtype=float)
        a_star = np.atleast_2d(np.asarray(problem.target.output_layer()[0], dtype=float))  # (k, m)
        keep = np.any(w_star != 0, axis=1)  # a zero teacher row adds nothing to the teacher's function
        self.teacher = w_star[keep]
        self.a_star = a_star[:, keep]
        self.m = self.teacher.shape[0]
        self.sigma = float(problem.measure.sigma)
        self.q = self.sigma**2 / (2 * math.pi)
        self.c_ss = self.k * self.a * self.a
        self.c_st = self.a * self.a_star.sum(axis=0)  # (m,)
        self.P = problem.n_params
        self._balls = None

    # ------------------------------------------------------------------ layout
    def rows(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float)[..., self.wslice].reshape(*np.shape(theta)[:-1], self.n, self.d)

    def flat_index(self, i: int) -> slice:
        """theta indices of the row ``w_i``."""
        start = self.wslice.start + i * self.d
        return slice(start, start + self.d)

    # ------------------------------------------------------------------ float64 (choices only)
    def float_all(self, theta: np.ndarray, need_hess: bool = True) -> tuple[float, np.ndarray, np.ndarray | None]:
        """``(L, G (P,), H (P, P))`` at one point, float64; ``H`` uses ``p p^T / sin(phi) -> 0`` at collinear pairs."""
        w = self.rows(theta)
        n, d, q = self.n, self.d, self.q
        nu = np.linalg.norm(w, axis=1)
        if np.any(nu == 0):
            raise ValueError("a student row is zero: the risk is not differentiable there")
        uh = w / nu[:, None]
        r = np.concatenate([w, self.teacher])  # (n + m, d)
        rho = np.concatenate([nu, np.linalg.norm(self.teacher, axis=1)])
        rh = r / rho[:, None]
        coef = np.concatenate([np.full(n, self.c_ss), -self.c_st])  # (n + m,)
        phi = _stable_angles(uh, rh)  # (n, n + m)
        s, co = np.sin(phi), np.cos(phi)
        kappa = s + (np.pi - phi) * co
        t_phi = _stable_angles(self.teacher / rho[n:, None], rh[n:])
        teach = q * np.einsum("oj,ol,j,l,jl->", self.a_star, self.a_star, rho[n:], rho[n:],
                              np.sin(t_phi) + (np.pi - t_phi) * np.cos(t_phi))
        # L = c_ss sum K(w_i, w_i') - 2 sum c_j K(w_i, r_j) + L*: coef already carries the sign, the 2 on teachers
        weight = coef * np.concatenate([np.ones(n), 2 * np.ones(self.m)])
        risk = q * float(np.einsum("i,l,il,l->", nu, rho, kappa, weight)) + teach
        # G_i = 2 sum_l coef_l q [(pi - phi_il) r_l + rho_l s_il uh_i]
        g = 2 * q * (((np.pi - phi) * coef) @ r + ((s * coef) @ rho)[:, None] * uh)
        G = np.zeros(self.P)
        G[self.wslice] = g.reshape(-1)
        if not need_hess:
            return risk, G, None
        eye = np.eye(d)
        p = rh[None, :, :] - co[:, :, None] * uh[:, None, :]  # (n, n + m, d): vh - cos uh
        pp = uh[:, None, :] - co[:, :, None] * rh[None, :, :]  # uh - cos vh
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_s = np.where(s > 0, 1.0 / s, 0.0)  # the quotient's limit at collinear pairs is 0
        Hm = np.zeros((n, d, n, d))
        proj = eye[None] - uh[:, :, None] * uh[:, None, :]  # (n, d, d)
        for i in range(n):
            others = [l_ for l_ in range(n + self.m) if l_ != i]
            lo = np.array(others)
            fac = coef[lo] * rho[lo] / nu[i]  # (L,)
            blk = (fac * s[i, lo]).sum() * proj[i]
            blk += np.einsum("l,la,lb->ab", fac * inv_s[i, lo], p[i, lo], p[i, lo])
            Hm[i, :, i, :] = 2 * q * (blk + self.c_ss * np.pi * eye)
            for j in range(n):
                if j == i:
                    continue
                Hm[i, :, j, :] = 2 * q * self.c_ss * ((np.pi - phi[i, j]) * eye + s[i, j] * np.outer(uh[i], uh[j])
                                                      + inv_s[i, j] * np.outer(p[i, j], pp[i, j]))
        H = np.zeros((self.P, self.P))
        ws = self.wslice
        H[ws, ws] = Hm.reshape(n * d, n * d)
        return risk, G, H

    # ------------------------------------------------------------------ balls
    def balls(self, arb: Any, arb_mat: Any) -> None:
        """Exact/ball constants at the current working precision (rebuilt per call of the certifier)."""
        pi = arb.pi()
        q = arb(self.sigma) * arb(self.sigma) / (2 * pi)
        c_ss = arb(self.a) * arb(self.a) * self.k
        c_st = [sum((arb(self.a) * arb(float(x)) for x in self.a_star[:, j]), arb(0)) for j in range(self.m)]
        teach = []
        for row in self.teacher:
            v = arb_mat([[arb(float(x))] for x in row])
            rho = (v.transpose() * v)[0, 0].sqrt()
            teach.append((v, rho, v * (1 / rho)))
        eye = arb_mat([[arb(1 if a == b else 0) for b in range(self.d)] for a in range(self.d)])
        # L* = q sum_{j,l} <A*_j, A*_l> K(r_j, r_l) in balls
        lstar = arb(0)
        for j, (_, rj, hj) in enumerate(teach):
            for l_, (_, rl, hl) in enumerate(teach):
                ajl = sum((arb(float(self.a_star[o, j])) * arb(float(self.a_star[o, l_])) for o in range(self.k)),
                          arb(0))
                if j == l_:
                    kap = pi
                else:
                    phi, s, co = self._angle(hj, hl, arb)
                    kap = s + (pi - phi) * co
                lstar = lstar + ajl * rj * rl * kap
        self._balls = {"arb": arb, "arb_mat": arb_mat, "pi": pi, "q": q, "c_ss": c_ss, "c_st": c_st,
                       "teach": teach, "eye": eye, "lstar": q * lstar}

    @staticmethod
    def _norm(x: Any) -> Any:
        return (x.transpose() * x)[0, 0].nonnegative_part().sqrt()

    def _angle(self, uh: Any, vh: Any, arb: Any) -> tuple[Any, Any, Any]:
        """``phi = 2 atan2(|uh - vh|, |uh + vh|)`` as a ball (its two arguments never both contain 0: their squares
        sum to 4), and ``sin phi``, ``cos phi``."""
        phi = 2 * arb.atan2(self._norm(uh - vh), self._norm(uh + vh))
        s, co = phi.sin_cos()
        return phi, s, co

    def _quotient(self, p: Any, pp: Any, s: Any) -> Any:
        """An enclosure of ``p pp^T / sin(phi)`` where ``|p| = |pp| = sin(phi)`` for the exact values: the quotient
        where ``s`` is well separated from 0, else the bound ``|entry| <= sin(phi) <= upper(s)``."""
        B = self._balls
        arb, arb_mat = B["arb"], B["arb_mat"]
        if s.lower() > 0 and s.rad() < 0.125 * s.mid():
            return (p * pp.transpose()) * (1 / s)
        S = arb(0, _up(abs(s)))
        return arb_mat([[S] * self.d for _ in range(self.d)])

    def _students(self, theta: list) -> list[tuple[Any, Any, Any]] | None:
        """``(w, |w|, w / |w|)`` per student row as balls; ``None`` when some ``|w_i|`` is not bounded away from
        0 over the balls (the risk is not differentiable at ``w_i = 0``)."""
        B = self._balls
        arb_mat = B["arb_mat"]
        out = []
        for i in range(self.n):
            sl = self.flat_index(i)
            w = arb_mat([[x] for x in theta[sl.start:sl.stop]])
            nu = self._norm(w)
            if not nu.lower() > 0:
                return None
            out.append((w, nu, w * (1 / nu)))
        return out

    def ball_all(self, theta: list, *, need_hess: bool = True, need_risk: bool = False
                 ) -> tuple[Any, list | None, Any] | None:
        """Enclosures ``(L or None, G (list of P balls), H (arb_mat P x P) or None)`` over the balls ``theta``;
        ``None`` when some student row can be 0 there."""
        B = self._balls
        arb, arb_mat, pi, q, c_ss, c_st, eye = (B[key] for key in ("arb", "arb_mat", "pi", "q", "c_ss", "c_st",
                                                                  "eye"))
        st = self._students(theta)
        if st is None:
            return None
        n, d = self.n, self.d
        # every ordered pair (i, l): angles once per unordered student pair
        ang = {}
        for i in range(n):
            for j in range(i + 1, n):
                ang[i, j] = self._angle(st[i][2], st[j][2], arb)
        tang = [[self._angle(st[i][2], hj, arb) for (_, _, hj) in B["teach"]] for i in range(n)]
        # per i, every other row l: (coefficient in G and H, v, |v|, vh, phi, sin, cos, coefficient in L)
        others: list[list[tuple[Any, ...]]] = []
        for i in range(n):
            row = []
            for j in range(n):
                if j != i:
                    phi, s, co = ang[(i, j) if i < j else (j, i)]
                    row.append((c_ss, st[j][0], st[j][1], st[j][2], phi, s, co, c_ss))
            for jt, (v, rho, vh) in enumerate(B["teach"]):
                phi, s, co = tang[i][jt]
                # teacher terms enter G and H with -c_j, the risk with -2 c_j
                row.append((-c_st[jt], v, rho, vh, phi, s, co, -2 * c_st[jt]))
            others.append(row)
        G = [arb(0)] * self.P
        risk = None
        if need_risk:
            risk = B["lstar"]
        for i in range(n):
            w, nu, uh = st[i]
            vec = w * (c_ss * pi)
            sc = arb(0)
            for coef, v, rho, _, phi, s, _, _ in others[i]:
                vec = vec + v * (coef * (pi - phi))
                sc = sc + coef * rho * s
            gi = (vec + uh * sc) * (2 * q)
            sl = self.flat_index(i)
            for a in range(d):
                G[sl.start + a] = gi[a, 0]
            if need_risk:
                acc = c_ss * pi * nu  # the self term: kappa(0) = pi
                for _, _, rho, _, phi, s, co, mult in others[i]:
                    acc = acc + mult * rho * (s + (pi - phi) * co)
                risk = risk + q * nu * acc
        if not need_hess:
            return risk, G, None
        blocks: dict[tuple[int, int], Any] = {}
        for i in range(n):
            w, nu, uh = st[i]
            proj = eye - uh * uh.transpose()
            sc = arb(0)
            quot = None
            for coef, _, rho, vh, _, s, co, _ in others[i]:
                f = coef * rho / nu
                sc = sc + f * s
                term = self._quotient(vh - uh * co, vh - uh * co, s) * f
                quot = term if quot is None else quot + term
            blk = proj * sc + eye * (c_ss * pi)
            if quot is not None:
                blk = blk + quot
            blocks[i, i] = blk * (2 * q)
            for j in range(i + 1, n):
                phi, s, co = ang[i, j]
                uj = st[j][2]
                p = uj - uh * co
                pp = uh - uj * co
                off = (eye * (pi - phi) + (uh * uj.transpose()) * s + self._quotient(p, pp, s)) * (2 * q * c_ss)
                blocks[i, j] = off
                blocks[j, i] = off.transpose()
        H = [[arb(0)] * self.P for _ in range(self.P)]
        for (i, j), blk in blocks.items():
            si, sj = self.flat_index(i), self.flat_index(j)
            vals = blk.tolist()
            for a in range(d):
                row = H[si.start + a]
                row[sj.start:sj.stop] = vals[a]
        return risk, G, arb_mat(H)


def _up(x: Any) -> float:
    """A float >= every point of the ball ``x``."""
    u = x.upper()
    f = float(u)
    return float(np.nextafter(f, np.inf)) if type(u)(f) < u else f


def _down(x: Any) -> float:
    """A float <= every point of the ball ``x``."""
    lo = x.lower()
    f = float(lo)
    return float(np.nextafter(f, -np.inf)) if type(lo)(f) > lo else f


# ---------------------------------------------------------------------------------------------- linear algebra
def eig_bounds(HX: Any, h_mid: np.ndarray, arb: Any, arb_mat: Any) -> tuple[float, float, float]:
    """``(low, high_min, high)`` for every symmetric matrix in the ball matrix ``HX``: ``low <= lambda_min``,
    ``lambda_min <= high_min`` and ``lambda_max <= high``.

    ``V`` are float eigenvectors of ``h_mid`` (a choice); ``B = V^T HX V`` and ``E = V^T V - I`` in ball
    arithmetic; Gershgorin's discs and Weyl's inequality (midpoint diagonal plus the Frobenius norm of the rest),
    whichever is better, bound the spectrum of ``B``; Ostrowski's theorem (``lambda_k(V^T A V) = t_k lambda_k(A)``,
    ``|t_k - 1| <= |E|_F``) carries the bounds back to ``A``. ``high_min`` is the Rayleigh quotient of ``V``'s
    first column."""
    n = h_mid.shape[0]
    _, vec = np.linalg.eigh(0.5 * (h_mid + h_mid.T))
    V = arb_mat([[arb(float(x)) for x in row] for row in vec])
    Vt = V.transpose()
    B = (Vt * HX) * V
    E = Vt * V
    eps = arb(0)
    for a, row in enumerate(E.tolist()):
        for b, x in enumerate(row):
            e = x - 1 if a == b else x
            eps = eps + e * e
    eps = _up(eps.sqrt())
    if not eps < 0.5:
        return -math.inf, math.inf, math.inf
    g_low, g_high = math.inf, -math.inf
    off2 = arb(0)
    mids = []
    rows = B.tolist()
    for a in range(n):
        row = rows[a]
        rad = arb(0)
        for b in range(n):
            if b != a:
                x = row[b]
                rad = rad + abs(x)
                off2 = off2 + x * x
        g_low = min(g_low, _down(row[a] - rad))
        g_high = max(g_high, _up(row[a] + rad))
        mid = arb(float(row[a].mid()))
        dev = row[a] - mid
        off2 = off2 + dev * dev
        mids.append(float(mid))
    f = off2.sqrt()
    w_low = _down(arb(min(mids)) - f)
    w_high = _up(arb(max(mids)) + f)
    lo = arb(max(g_low, w_low))
    hi = arb(min(g_high, w_high))
    one = arb(1)
    low = lo / (one + eps) if lo > 0 else lo / (one - eps)
    high = hi / (one - eps) if hi > 0 else hi / (one + eps)
    q = arb_mat([[arb(float(x))] for x in vec[:, 0]])
    num = (q.transpose() * HX * q)[0, 0]
    den = (q.transpose() * q)[0, 0]
    return _down(low), _up(num / den), _up(high)


def perron_bound(rad: np.ndarray) -> float:
    """An upper bound of ``|Delta|_2`` for every matrix ``Delta`` with ``|Delta_ab| <= rad_ab`` (``rad`` ``(P, P)``,
    nonnegative): with ``S = max(rad, rad^T)`` (entrywise), ``|Delta|_2 <= || |Delta| ||_2 <= |S|_2 = rho(S)``
    (monotonicity of the spectral norm on nonnegative matrices; ``S`` is symmetric).

    Collatz–Wielandt: ``rho(S) <= max_a (S v)_a / v_a`` for any ``v > 0``; ``v`` is a float approximation of the
    Perron vector (a choice: power iteration), and the quotient is rounded up with the standard bound for sums of
    nonnegative floats (``|fl(sum) - sum| <= gamma_n sum``, ``gamma_n = n u / (1 - n u)``), with room for the
    division and the final product. The row-sum bound ``max_a sum_b S_ab`` (``v = 1``) is the fallback; the result
    is never above it."""
    S = np.asarray(rad, dtype=float)
    S = np.maximum(S, S.T)
    P = S.shape[0]
    if P == 0:
        return 0.0
    u = 2.0**-53
    grow = 1 + (P + 5) * u / (1 - (P + 5) * u)
    row_sum = float(np.max(S.sum(axis=1))) * grow
    v = np.ones(P)
    for _ in range(60):
        w = S @ v + 1e-300
        v = w / np.max(w)
    v = np.maximum(v, 1e-12)  # strictly positive: any positive vector gives a valid bound
    cw = float(np.max((S @ v) / v)) * grow
    return float(np.nextafter(min(row_sum, cw), np.inf))


def eig_bounds_box(HX: Any, h_mid: np.ndarray, arb: Any, arb_mat: Any) -> tuple[float, float, float]:
    """Like ``eig_bounds``, but for a wide ball matrix: split ``HX = Hc + Delta`` with ``Hc`` the (exact) midpoint
    matrix and ``|Delta_ab| <= rad_ab``; bound ``Hc``'s spectrum with ``eig_bounds`` (a thin matrix: no
    widening in ``V^T Hc V``) and move it by ``|Delta|_2 <= rho(rad)`` (Weyl; ``perron_bound``, about half the
    row-sum bound on the SS2018 minima). Gershgorin on ``V^T HX V`` instead loses a factor of about ``P`` on wide
    boxes."""
    rows = HX.tolist()
    Hc = arb_mat([[x.mid() for x in row] for row in rows])
    spread = perron_bound(np.array([[_up(x.rad()) for x in row] for row in rows]))
    low, _, high = eig_bounds(Hc, h_mid, arb, arb_mat)
    q_low = _down(arb(low) - arb(spread))
    q_high = _up(arb(high) + arb(spread))
    _, vec = np.linalg.eigh(0.5 * (h_mid + h_mid.T))
    q = arb_mat([[arb(float(x))] for x in vec[:, 0]])
    num = (q.transpose() * HX * q)[0, 0]
    den = (q.transpose() * q)[0, 0]
    return q_low, _up(num / den), q_high


def krawczyk(center: np.ndarray, g_center: list, HX: Any, C: np.ndarray, box_radius: float, arb: Any,
             arb_mat: Any) -> list | None:
    """Krawczyk's test on the box ``center + [-box_radius, box_radius]^P``: ``K(X) - center`` (a list of balls)
    when ``K(X) = center - C G(center) + (I - C H(X))(X - center)`` lies in the interior of ``X`` (then ``G`` has
    exactly one zero in ``X``, and it lies in ``K(X)``), else ``None``. ``g_center`` encloses ``G(center)``,
    ``HX`` the Hessian over ``X``; ``C`` is any float matrix (a choice, ``~ H(center)^-1``)."""
    P = len(center)
    Ca = arb_mat([[arb(float(x)) for x in row] for row in C])
    ident = arb_mat([[arb(1 if a == b else 0) for b in range(P)] for a in range(P)])
    dX = arb_mat([[arb(0, box_radius)] for _ in range(P)])
    kx = (ident - Ca * HX) * dX - Ca * arb_mat([[x] for x in g_center])
    out = [kx[a, 0] for a in range(P)]
    if all(dX[a, 0].contains_interior(out[a]) for a in range(P)):
        return out
    return None


# ------------------------------------------------------------------------------------------------- one row
def certify_row(model: GaussianModel, th: np.ndarray, radius: float | None, max_radius: float, arb: Any,
                arb_mat: Any, *, classify: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The certificate of one row (the columns of ``certify_critical_points``) and, when a critical point was
    proven, its by-products: ``offset`` (balls enclosing ``theta* - th``), ``box`` (the box radius), ``HX``.
    ``classify=False`` stops after Krawczyk (class ``none``, reason ``eigen_gap``, no eigenvalue bounds): for a
    caller that bounds the Hessian over a larger set anyway (``gd_limit_row``)."""
    if not np.all(np.isfinite(th)):
        return _refuse("nonfinite", "the row has non-finite parameters"), None
    P = len(th)
    w = model.rows(th)
    if np.any(np.all(w == 0, axis=1)):
        return _refuse("nonsmooth", f"student rows {np.flatnonzero(np.all(w == 0, axis=1)).tolist()} are 0: the "
                                    "risk is not differentiable there"), None
    _, gf, hf = model.float_all(th)
    lam0 = np.linalg.eigvalsh(hf)
    amax = float(np.max(np.abs(lam0)))
    if not np.isfinite(amax) or amax == 0 or float(np.min(np.abs(lam0))) <= 1e-12 * amax:
        return _refuse("singular", f"the Hessian has eigenvalues {lam0[:3]} (smallest |lambda| / max |lambda| = "
                                   f"{float(np.min(np.abs(lam0))) / max(amax, 1e-300):.2g}): the critical point "
                                   "is not isolated", certified_n_free=float(P)), None
    Cf = np.linalg.inv(hf)
    step = float(np.max(np.abs(Cf @ gf)))
    scale = max(1.0, float(np.max(np.abs(th))))
    radii = radius_ladder(step, scale, max_radius, radius)
    if not radii:
        return _refuse("not_critical", f"the Newton correction {step:.3g} exceeds max_radius * max(1, |theta|) "
                                       f"= {max_radius * scale:.3g}", certified_n_free=float(P)), None
    point = [arb(float(x)) for x in th]
    got = model.ball_all(point, need_hess=False)
    if got is None:
        return _refuse("nonsmooth", "a student row is 0"), None
    g0 = got[1]
    for r in radii:
        box = [arb(float(x), r) for x in th]
        got = model.ball_all(box)
        if got is None:
            return _refuse("nonsmooth", f"a student row can be 0 within {r:.3g} of theta: the risk is not "
                                        "differentiable there", certified_n_free=float(P)), None
        HX = got[2]
        off = krawczyk(th, g0, HX, Cf, r, arb, arb_mat)
        if off is None:
            continue
        rad = max(_up(abs(x)) for x in off)
        if not classify:
            return _refuse("eigen_gap", f"critical point within {rad:.3g} (Krawczyk, box {r:.3g}); type not "
                                        "checked here", certified_radius=rad, certified_n_free=float(P)), \
                {"offset": off, "box": r, "HX": HX, "h_float": hf}
        low, high, top = eig_bounds(HX, hf, arb, arb_mat)
        res = {"certified_radius": rad, "certified_eig_low": low, "certified_eig_high": high,
               "certified_n_free": float(P), "certified_reason": ""}
        extra = {"offset": off, "box": r, "HX": HX, "eig_top": top, "h_float": hf}
        if low > 0:
            return {**res, "certified_class": "min",
                    "certified_detail": f"unique critical point within {rad:.3g} (Krawczyk, box {r:.3g}); Hessian "
                                        f">= {low:.3g} on the box (no continuous symmetry: no slice)"}, extra
        if high < 0:
            return {**res, "certified_class": "saddle",
                    "certified_detail": f"unique critical point within {rad:.3g} (Krawczyk, box {r:.3g}); negative "
                                        f"curvature <= {high:.3g} on the box"}, extra
        return {**res, "certified_class": "none", "certified_reason": "eigen_gap",
                "certified_detail": f"critical point within {rad:.3g}, but the smallest Hessian eigenvalue is only "
                                    f"known to lie in [{low:.3g}, {high:.3g}]"}, extra
    detail = (f"the Krawczyk test failed at box radii {radii[0]:.3g} .. {radii[-1]:.3g} (Newton correction "
              f"{step:.3g})")
    box = [arb(float(x), radii[-1]) for x in th]
    got = model.ball_all(box, need_hess=False)
    if got is not None and any(not x.contains(0) for x in got[1]):
        detail += f"; excluded: G != 0 on the whole box of radius {radii[-1]:.3g} about theta"
    return _refuse("not_critical", detail, certified_n_free=float(P)), None


def certify_row_polished(model: GaussianModel, th: np.ndarray, radius: float | None, max_radius: float, arb: Any,
                         arb_mat: Any, *, newton_iters: int = 4) -> dict[str, Any]:
    """``certify_row`` about the float Newton limit ``c`` of ``th`` rather than ``th`` itself, its radius measured
    from ``th`` (``max |theta* - th| <= |c - th| + r``, rounded up).

    An endpoint that GD left at ``|G| ~ 1e-10`` lies ~``1e-7`` from its critical point, and a Krawczyk box that
    wide widens the Hessian's enclosure by ~``P`` times its entries' spread: ``~1e-3`` at P = 200, more than some
    minima's smallest eigenvalue. About ``c`` the box is ~``1e-12`` wide and the enclosure ~``1e-9``. ``c`` is a
    choice (the certificate checks it); where it is not usable (a fixed ``radius``, Newton failing or moving
    farther than the step bound ``max_radius * max(1, |theta|)`` allows) or its certificate fails, this is
    ``certify_row`` about ``th``, as before."""
    if radius is None and np.all(np.isfinite(th)):
        got = newton_refine(model, th, newton_iters)
        if got is not None:
            c = got[0]
            scale = max(1.0, float(np.max(np.abs(th))))
            shift = max((_up(abs(arb(float(a)) - arb(float(b)))) for a, b in zip(c, th, strict=True)), default=0.0)
            if np.all(np.isfinite(c)) and shift <= max_radius * scale:
                res, extra = certify_row(model, c, None, max_radius, arb, arb_mat)
                if extra is not None:
                    total = _up(arb(shift) + arb(res["certified_radius"]))
                    detail = res["certified_detail"].replace(
                        f"within {res['certified_radius']:.3g}",
                        f"within {total:.3g} of the endpoint ({res['certified_radius']:.3g} of its Newton limit, "
                        f"itself {shift:.3g} away)", 1)
                    return {**res, "certified_radius": total, "certified_detail": detail}
    return certify_row(model, th, radius, max_radius, arb, arb_mat)[0]


# ------------------------------------------------------------------------------------ certified GD/GF limits
def newton_refine(model: GaussianModel, th: np.ndarray, iters: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Float Newton on ``G = 0`` from ``th`` (a choice: the certificate checks the result), with the Hessian
    eigenvalues at ``th``; ``None`` when some student row is 0 or ``H`` is singular."""
    x = np.array(th, dtype=float)
    try:
        _, g, h = model.float_all(x)
    except ValueError:
        return None
    lam = np.linalg.eigvalsh(h)
    for _ in range(iters):
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            return None
        x = x - step
        if float(np.max(np.abs(step))) <= 1e-15 * max(1.0, float(np.max(np.abs(x)))):
            break
        try:
            _, g, h = model.float_all(x)
        except ValueError:
            return None
    return x, lam


def gd_limit_row(model: GaussianModel, th: np.ndarray, step_size: float | None, *, max_radius: float,
                 newton_iters: int, arb: Any, arb_mat: Any, grow: bool = False) -> dict[str, Any]:
    """One row of ``certified_gd_limit`` (docs/analysis.md, "Certified early stopping"). ``grow``: once
    certified, try once to certify a larger ball about the limit (radius predicted from the decay of the bound;
    kept only if it certifies), for a cache that reuses the ball (``CertifiedBasins``); ``limit_r2`` is then
    the 2-norm radius ``r`` of the theorem."""
    res: dict[str, Any] = {"limit_certified": False, "limit_reason": "", "limit_class": "none",
                           "limit_risk_low": math.nan, "limit_risk_high": math.nan, "limit_distance": math.nan,
                           "limit_mu": math.nan, "limit_lambda": math.nan, "limit_rate": math.nan,
                           "limit_ball": math.nan, "limit_mu_float": math.nan,
                           "limit_detail": "", "limit_theta": np.full(len(th), np.nan)}
    if not np.all(np.isfinite(th)):
        return {**res, "limit_reason": "nonfinite", "limit_detail": "the row has non-finite parameters"}
    got = newton_refine(model, th, newton_iters)
    if got is None:
        return {**res, "limit_reason": "nonsmooth", "limit_detail": "a student row is 0, or H is singular"}
    hat, lam = got
    if lam[0] <= 0:
        # a choice, to save the ball computation: a non-convex point cannot be in a certified convex ball
        return {**res, "limit_reason": "not_convex",
                "limit_detail": f"the Hessian at the point has eigenvalue {lam[0]:.3g} <= 0 (float)"}
    res["limit_mu_float"] = float(lam[0])  # at the point, not the Newton limit; a choice for the caller's schedule
    # Krawczyk only: the type follows from the eigenvalue bound over the ball below, which contains the box
    cert, extra = certify_row(model, hat, None, max_radius, arb, arb_mat, classify=False)
    if extra is None:
        return {**res, "limit_reason": cert["certified_reason"],
                "limit_detail": "no critical point certified near the Newton limit of the point: "
                                + cert["certified_detail"]}
    off = extra["offset"]  # balls enclosing theta* - hat
    # |theta* - hat|_2 <= r2 and |theta_n - hat|_2 <= dist, rounded up (floats are exact balls here)
    r2 = sum((arb(_up(abs(x))) ** 2 for x in off), arb(0)).sqrt()
    diff = [arb(float(a)) - arb(float(b)) for a, b in zip(th, hat, strict=True)]
    dist = sum((x * x for x in diff), arb(0)).sqrt()
    # theta* lies in the ball, so H >= mu > 0 there also makes it a strict local minimum (the theorem)
    R = _up(dist + 2 * r2) or 2.0**-60
    box = [arb(float(x), R) for x in hat]
    got = model.ball_all(box)
    if got is None:
        return {**res, "limit_reason": "nonsmooth", "limit_detail": f"a student row can be 0 within {R:.3g}"}
    mu, _, lam_max = eig_bounds_box(got[2], extra["h_float"], arb, arb_mat)
    res.update({"limit_mu": mu, "limit_lambda": lam_max, "limit_distance": _up(dist + r2), "limit_ball": R})
    if not mu > 0:
        return {**res, "limit_reason": "not_convex",
                "limit_detail": f"the Hessian's smallest eigenvalue over the ball of radius {R:.3g} about the "
                                f"certified minimum is only bounded below by {mu:.3g}"}
    if step_size is None:  # gradient flow: |theta(t) - theta*| <= e^{-mu t} |theta_0 - theta*|
        rate = math.nan
    else:
        g = arb(float(step_size))
        if not g * arb(lam_max) < 2:
            return {**res, "limit_reason": "step_too_large",
                    "limit_detail": f"step {step_size:g} * Lambda {lam_max:.4g} >= 2 on the ball of radius {R:.3g}"}
        rate = _up((1 - g * arb(mu)).max(g * arb(lam_max) - 1))
    if grow:
        # mu_low(R) ~ mu_float - c R: aim at 60 % of the radius where it would vanish (a choice)
        mu0 = float(np.linalg.eigvalsh(extra["h_float"])[0])
        slope = (mu0 - mu) / R
        target = 0.6 * mu0 / slope if slope > 0 else 4 * R
        if target > 1.5 * R:
            box2 = [arb(float(x), target) for x in hat]
            got2 = model.ball_all(box2)
            if got2 is not None:
                mu2, _, lam2 = eig_bounds_box(got2[2], extra["h_float"], arb, arb_mat)
                if mu2 > 0 and (step_size is None or arb(float(step_size)) * arb(lam2) < 2):
                    R, mu, lam_max = target, mu2, lam2
                    if step_size is not None:
                        g = arb(float(step_size))
                        rate = _up((1 - g * arb(mu)).max(g * arb(lam_max) - 1))
                    res.update({"limit_mu": mu, "limit_lambda": lam_max, "limit_ball": R})
    res["limit_r2"] = _up(r2)
    # L(theta*) in L(hat) + G(hat).D + 1/2 D^T H(X) D, D = theta* - hat in the Krawczyk box X (Taylor, integral form)
    rk, gk, _ = model.ball_all([arb(float(x)) for x in hat], need_hess=False, need_risk=True)
    D = arb_mat([[x] for x in off])
    lin = sum((a * b for a, b in zip(gk, off, strict=True)), arb(0))
    quad = (D.transpose() * extra["HX"] * D)[0, 0]
    risk = rk + lin + quad / 2
    risk = risk.max(arb(0)) if risk.upper() >= 0 else risk  # a risk is >= 0 (an integral of a square)
    return {**res, "limit_certified": True, "limit_class": "min", "limit_risk_low": _down(risk),
            "limit_risk_high": _up(risk), "limit_rate": rate, "limit_theta": hat,
            "limit_detail": f"minimum within {cert['certified_radius']:.3g} (max norm) of the returned point; "
                            f"Hessian in [{mu:.4g}, {lam_max:.4g}] on the ball of radius {R:.3g}"
                            + ("" if step_size is None else f"; contraction {rate:.6f} per step")}


# ----------------------------------------------------------------------------- certified basins, reused by symmetry
# a row whose aligned distance to a cached ball is below this many times the distance it must reach is taken to
# be heading there (a scheduling choice: it waits instead of paying for a full check)
REUSE_RATIO = 100.0

class CertifiedBasins:
    """Certified balls about minima, found once and reused for every run that enters one of them or one of its
    images under the risk's symmetries (docs/analysis.md, "Reusing a certificate by symmetry").

    For a certified entry (``hat``, ``r``, ``R``, ``mu``, ``Lambda``, risk enclosure), the theorem's conditions 1-2
    hold for ``(hat, r, R)``. A map ``g: W -> P_pi W P_sigma^T`` (students permuted by ``pi``, input coordinates by
    ``sigma``) is an isometry of parameter space, and ``L(g W) = L(W)`` when ``sigma`` maps the teacher's rows
    (with their output weights) onto themselves: the student's output weights are all equal and the Gaussian is
    invariant under coordinate permutations. Then ``G(g y) = g G(y)``, ``H(g y) = g H(y) g^T``, and the conditions
    hold for ``(g hat, r, R)`` with the same ``mu``, ``Lambda``: a point ``theta`` with ``|theta - g hat|_2 + 2r <= R``
    (computed in ball arithmetic) is certified with limit ``g theta*``. ``g`` is found by two assignment problems
    (a choice: a poor ``g`` only fails the test); ``sigma`` is checked exactly against the teacher.
    """

    def __init__(self, problem: Any, step_size: float | None, *, max_radius: float = 1e-4, newton_iters: int = 30,
                 prec: int = 192) -> None:
        self.model = GaussianModel(problem)
        self.step = step_size
        self.max_radius, self.newton_iters, self.prec = max_radius, newton_iters, int(prec)
        self.entries: list[dict[str, Any]] = []
        t = self.model.teacher
        key = [(tuple(t[j]), tuple(self.model.a_star[:, j])) for j in range(self.model.m)]
        self._teacher = sorted(key)
        self.n_full, self.n_reused, self.n_skipped = 0, 0, 0

    def _teacher_invariant(self, sigma: np.ndarray) -> bool:
        t = self.model.teacher[:, sigma]
        key = sorted((tuple(t[j]), tuple(self.model.a_star[:, j])) for j in range(self.model.m))
        return key == self._teacher

    def _align(self, w: np.ndarray, hat: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(pi, sigma)`` with ``w ~ hat[pi][:, sigma]`` (rows, columns), or ``None``."""
        from scipy.optimize import linear_sum_assignment

        sw, sh = np.sort(w, axis=1), np.sort(hat, axis=1)  # row signatures, invariant under sigma
        cost = ((sw[:, None, :] - sh[None, :, :]) ** 2).sum(-1)
        rows, pi = linear_sum_assignment(cost)
        hp = hat[pi]  # row i of hp is matched to row i of w
        cost = ((w.T[:, None, :] - hp.T[None, :, :]) ** 2).sum(-1)  # columns of w against columns of hp
        _, sigma = linear_sum_assignment(cost)
        if not self._teacher_invariant(sigma):
            return None
        return pi, sigma

    def check(self, theta: np.ndarray, grad_norm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The loop's check (``dynamics.CertifiedStop``): ``(ok, theta_limit, next_below)`` per row."""
        from flint import arb, arb_mat, ctx

        n = theta.shape[0]
        ok = np.zeros(n, dtype=bool)
        lim = np.full(theta.shape, np.nan)
        nxt = np.asarray(grad_norm, dtype=float) * 0.5
        model = self.model
        old = ctx.prec
        ctx.prec = self.prec
        try:
            if model._balls is None:
                model.balls(arb, arb_mat)
            for i in range(n):
                th = theta[i]
                w = model.rows(th)
                ratio = math.inf  # float distance to the nearest cached ball, in units of what it must become
                for e in self.entries:
                    got = self._align(w, e["hat_rows"])
                    if got is None:
                        continue
                    pi, sigma = got
                    cand = th.copy()
                    cand[model.wslice] = e["hat_rows"][pi][:, sigma].reshape(-1)  # g hat: an exact permutation
                    room = e["R"] - 2 * e["r2"]
                    if room <= 0:
                        continue
                    ratio = min(ratio, float(np.linalg.norm(th - cand)) / room)
                    diff = [arb(float(a)) - arb(float(b)) for a, b in zip(th, cand, strict=True)]
                    dist = sum((x * x for x in diff), arb(0)).sqrt()
                    if dist + 2 * arb(e["r2"]) <= arb(e["R"]):
                        ok[i], lim[i] = True, cand
                        self.n_reused += 1
                        break
                if ok[i]:
                    continue
                if ratio < REUSE_RATIO:
                    # heading for a cached minimum (a choice): wait until |G| has fallen as much as the distance
                    # must, instead of paying for a full check that would only find the same minimum
                    self.n_skipped += 1
                    nxt[i] = grad_norm[i] * 0.9 / ratio
                    continue
                self.n_full += 1
                res = gd_limit_row(model, th, self.step, max_radius=self.max_radius,
                                   newton_iters=self.newton_iters, arb=arb, arb_mat=arb_mat, grow=True)
                if res["limit_certified"]:
                    ok[i], lim[i] = True, res["limit_theta"]
                    self.entries.append({"hat_rows": model.rows(res["limit_theta"]).copy(), "r2": res["limit_r2"],
                                         "R": res["limit_ball"], "mu": res["limit_mu"],
                                         "lambda": res["limit_lambda"]})
                    continue
                # when to try again: the bound falls roughly linearly in the ball's radius R ~ |G| / mu (a
                # schedule: rigour is in the check); aim at half the radius where it would vanish
                mu0, mu, ball = res["limit_mu_float"], res["limit_mu"], res["limit_ball"]
                if np.isfinite(mu0) and np.isfinite(mu) and np.isfinite(ball) and mu0 > 0 and mu0 > mu:
                    nxt[i] = grad_norm[i] * float(np.clip(0.5 * mu0 / (mu0 - mu), 1e-3, 0.5))
        finally:
            ctx.prec = old
        return ok, lim, nxt
