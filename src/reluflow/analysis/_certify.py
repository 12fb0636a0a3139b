"""Certified critical points: a computer-assisted proof, per trajectory, that a true critical point of the risk lies
within a stated radius of a (refined) endpoint, and rigorous bounds on the Hessian's smallest eigenvalue there.

Everything that enters a conclusion is computed in ball arithmetic (``python-flint``'s ``arb``: every operation
returns a ball that contains the exact result), so floating-point rounding is bounded, not estimated. Floats are
used only for *choices* that need no rigour (the preconditioner ``C``, the box radius, the approximate eigenvectors
``V``); a bad choice can only make a certificate fail, never make a false one.

Supported setting (``docs/analysis.md``, "Certified critical points", has the mathematics): the ``exact1d`` risk
(SCIENCE.md §6) -- one hidden ReLU layer, input dimension 1, any output dimension, a uniform or piecewise
polynomial input measure on ``[alpha, beta]``, a piecewise polynomial target, with or without biases, trained or
fixed output layer. ``G`` and its derivative ``H`` are evaluated in closed form over boxes of parameters. The
``gaussian`` risk with a fixed output layer (SCIENCE.md §7-§8) has its own closed form and row routine in
``_certify_gaussian`` (no continuous symmetry there, so no slice); ``certify_critical_points`` dispatches on the
backend. The steps below are exact1d's.

Per row:

1. Every hidden unit is classified over the box: *dead* (``w x + b < 0`` on all of ``[alpha, beta]``), *full*
   (``w x + b > 0`` there: the unit is affine on the support) or *kinked* (``w`` bounded away from 0 and the kink
   ``-b/w`` strictly inside ``(alpha, beta)``). A unit that is none of these (its kink may touch an end of the
   interval, or ``w = b = 0``) makes the row ``nonsmooth``.
2. Known symmetries are removed by holding coordinates fixed (a *slice*): a kinked unit's ``w`` (the positive
   rescaling, when the output is trained), everything of a dead unit (flat), the ``(w, b)`` of full units and the
   output weights of all but one of them (full units and ``c`` only span affine functions). Every nearby point
   has the same risk as a nearby point of the slice, so the slice decides local minimality; and a zero of the
   free components of ``G`` is a zero of all of ``G`` (Euler's identity of the rescaling, and the affine span).
3. Krawczyk's operator ``K(X) = x - C G(x) + (I - C H(X))(X - x)`` on the free coordinates: ``K(X)`` inside the
   interior of the box ``X`` proves a unique zero of ``G`` (on the slice) in ``X``, and in ``K(X)``.
4. ``H(X)`` enclosed over ``X``; with float eigenvectors ``V`` of its midpoint, Gershgorin/Weyl on ``V^T H(X) V``
   (ball arithmetic) and Ostrowski's theorem for the non-orthogonality of ``V`` give a lower bound of the smallest
   eigenvalue over the whole box; a Rayleigh quotient ``q^T H(X) q / q^T q`` an upper bound. Positive lower bound:
   ``min``; negative upper bound: ``saddle``; else ``none`` with reason ``eigen_gap``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._certify_common import radius_ladder
from ._certify_common import refuse as _refuse

__all__ = [
    "CERTIFIED_CLASSES",
    "CERTIFY_COLUMNS",
    "CERTIFY_REASONS",
    "certify_available",
    "certify_critical_points",
]

CERTIFIED_CLASSES = ("min", "saddle", "none")
CERTIFY_COLUMNS = ("certified_class", "certified_reason", "certified_radius", "certified_eig_low",
                   "certified_eig_high", "certified_n_free", "certified_detail")
#: why a row was not certified (``certified_reason``); ``""`` on certified rows
CERTIFY_REASONS = {
    "not_critical": "no critical point was found near the point: the Newton correction is larger than max_radius, "
                    "or the Krawczyk test failed at every radius tried (the detail says which; 'excluded' means G "
                    "was proven nonzero on the whole box)",
    "singular": "the Hessian on the slice is (numerically) singular at the point: the critical point is not "
                "isolated on the slice (a symmetry not removed, redundant units, a unit with zero output weight)",
    "nonsmooth": "a unit's kink can reach an end of the input interval (or w = b = 0): G is not differentiable "
                 "there and the Hessian enclosure would not hold",
    "symmetry": "a continuous symmetry this module does not quotient out (e.g. a unit active on the whole "
                "interval with w = 0)",
    "eigen_gap": "a critical point is certified, but the eigenvalue enclosure over the box contains 0",
    "unsupported_backend": "the problem is neither one of exact1d's (1D shallow ReLU, piecewise polynomial data) nor "
                           "one of gaussian's with a fixed output layer (SS2018's student-teacher setting)",
    "nonfinite": "the row has non-finite parameters",
    "unavailable": "python-flint (ball arithmetic) is not installed: pip install 'reluflow[certify]'",
    "internal": "a consistency check failed (a G component held fixed by the slice does not contain 0): a bug",
}


def certify_available() -> bool:
    """Whether ``python-flint`` (ball arithmetic) can be imported."""
    try:
        import flint  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- helpers
def _poly_eval(coefs, x):
    """Horner, ascending coefficients (arbs), at the ball ``x``."""
    acc = coefs[-1] * 1
    for a in reversed(coefs[:-1]):
        acc = acc * x + a
    return acc


def _poly_mul(p, q, arb):
    out = [arb(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] = out[i + j] + a * b
    return out


def _poly_int(p, arb):
    """Antiderivative vanishing at 0 (exact: divisions by small integers of exact numbers are balls)."""
    return [arb(0)] + [a / (i + 1) for i, a in enumerate(p)]


class _Exact1D:
    """``G`` and ``H`` of the exact1d risk in ball arithmetic, for parameters given as balls."""

    def __init__(self, problem: Any, arb: Any) -> None:
        self.arb = arb
        arch = problem.architecture
        hidden, output = arch.layers
        self.H, self.k = hidden.n_out, output.n_out
        self.sl = (hidden.weight, hidden.bias, output.weight, output.bias)
        self.fixed = None if arch.fixed_output is None else float(arch.fixed_output)
        measure = problem.measure
        dknots, dcoefs = measure.density_pieces()
        dknots = np.asarray(dknots, float)
        dcoefs = np.atleast_2d(np.asarray(dcoefs, float))
        pp = problem.target.piecewise_polynomial()
        breaks = np.asarray(pp.breakpoints, float)
        tcoefs = np.asarray(pp.coefficients, float)  # (Kt, k, n+1)
        alpha, beta = float(dknots[0]), float(dknots[-1])
        inner = breaks[(breaks > alpha) & (breaks < beta)]
        static = np.unique(np.concatenate([dknots, inner]))
        self.alpha, self.beta = arb(alpha), arb(beta)
        self.knots = [arb(float(s)) for s in static]
        centers = 0.5 * (static[:-1] + static[1:])
        tpiece = np.searchsorted(breaks, centers, side="right")
        dpiece = np.searchsorted(dknots[1:-1], centers, side="right")
        uniform = getattr(measure, "kind", None) == "uniform"
        self.dens, self.targ, self.anti = [], [], []
        for m in range(len(static) - 1):
            if uniform:  # the exact density 1 / (high - low), not its float rounding
                dens = [arb(1) / (arb(float(measure.high)) - arb(float(measure.low)))]
            else:
                dens = [arb(float(a)) for a in dcoefs[dpiece[m]]]
            targ = [[arb(float(a)) for a in tcoefs[tpiece[m], o]] for o in range(self.k)]
            self.dens.append(dens)
            self.targ.append(targ)
            # antiderivatives of x^q p (q = 0, 1, 2) and x^q f_o p (q = 0, 1)
            xq = [[arb(1)], [arb(0), arb(1)], [arb(0), arb(0), arb(1)]]
            polys = [_poly_mul(xq[q], dens, arb) for q in range(3)]
            for o in range(self.k):
                fp = _poly_mul(targ[o], dens, arb)
                polys += [fp, _poly_mul(xq[1], fp, arb)]
            self.anti.append([_poly_int(p, arb) for p in polys])
        self.n_mom = 3 + 2 * self.k

    # ------------------------------------------------------------------ moments over intervals with ball ends
    def moments(self, lo, hi):
        """``[int_lo^hi x^q p (q=0,1,2), then int_lo^hi x^q f_o p (q=0,1) per output]`` for balls ``lo``,
        ``hi`` inside ``[alpha, beta]`` (the caller ensures ``hi >= lo`` for every realization)."""
        out = [self.arb(0)] * self.n_mom
        knots = self.knots
        for m in range(len(knots) - 1):
            a, b = knots[m], knots[m + 1]
            if hi.upper() <= a or lo.lower() >= b:  # every realization of [lo, hi] misses the piece's interior
                continue
            lo_m = lo.max(a).min(b)
            hi_m = hi.max(a).min(b)
            for n, anti in enumerate(self.anti[m]):
                out[n] = out[n] + (_poly_eval(anti, hi_m) - _poly_eval(anti, lo_m))
        return out

    def point_values(self, t):
        """Enclosures of the density and the targets at the ball ``t``: the hull over every piece that ``t``
        meets (both one-sided values at a knot)."""
        arb, knots = self.arb, self.knots
        dens = None
        targ = [None] * self.k
        for m in range(len(knots) - 1):
            a, b = knots[m], knots[m + 1]
            if t.upper() < a or t.lower() > b:
                continue
            tm = t.max(a).min(b)
            d = _poly_eval(self.dens[m], tm)
            dens = d if dens is None else arb.union(dens, d)
            for o in range(self.k):
                f = _poly_eval(self.targ[m][o], tm)
                targ[o] = f if targ[o] is None else arb.union(targ[o], f)
        return dens, targ

    # ------------------------------------------------------------------ parameters
    def unpack(self, theta):
        """``(w, b, v, c)`` as lists of balls from a flat list of balls (untrained parts filled in)."""
        arb, H, k = self.arb, self.H, self.k
        ws, bs, vs, cs = self.sl
        w = theta[ws.start:ws.stop]
        b = theta[bs.start:bs.stop] if bs is not None else [arb(0)] * H
        if vs is not None:
            flat = theta[vs.start:vs.stop]
            v = [[flat[o * H + j] for j in range(H)] for o in range(k)]
        else:
            v = [[arb(self.fixed)] * H for _ in range(k)]
        c = theta[cs.start:cs.stop] if cs is not None else [arb(0)] * k
        return w, b, v, c

    def index(self):
        """Full-layout indices ``(iw, ib, iv, ic)`` into theta (``None`` where not trained)."""
        H, k = self.H, self.k
        ws, bs, vs, cs = self.sl
        iw = list(range(ws.start, ws.stop))
        ib = list(range(bs.start, bs.stop)) if bs is not None else [None] * H
        iv = [[vs.start + o * H + j for j in range(H)] for o in range(k)] if vs is not None else [[None] * H] * k
        ic = list(range(cs.start, cs.stop)) if cs is not None else [None] * k
        return iw, ib, iv, ic

    def classify_units(self, w, b):
        """Per unit ``'dead'``, ``'full'``, ``'kink'`` (valid for every realization of the balls) or
        ``'nonsmooth'``; and the kink balls."""
        kinds, kinks = [], []
        for wj, bj in zip(w, b, strict=True):
            ea, eb = wj * self.alpha + bj, wj * self.beta + bj
            t = None
            if ea.upper() < 0 and eb.upper() < 0:
                kind = "dead"
            elif ea.lower() > 0 and eb.lower() > 0:
                kind = "full"
            elif wj.lower() > 0 or wj.upper() < 0:
                t = -bj / wj
                kind = "kink" if (t.lower() > self.alpha.upper() and t.upper() < self.beta.lower()) else "nonsmooth"
            else:
                kind = "nonsmooth"
            kinds.append(kind)
            kinks.append(t)
        return kinds, kinks

    # ------------------------------------------------------------------ G and H
    def grad_hess(self, theta, kinds, kinks, *, need_hess=True):
        """Enclosures of ``G`` (list) and ``H`` (list of lists, symmetric) in the full theta layout, for balls
        ``theta`` over which the unit kinds ``kinds`` hold."""
        arb, H, k = self.arb, self.H, self.k
        w, b, v, c = self.unpack(theta)
        alpha, beta = self.alpha, self.beta
        live = [j for j in range(H) if kinds[j] != "dead"]
        region = {}
        for j in live:
            if kinds[j] == "full":
                region[j] = (alpha, beta)
            elif w[j].lower() > 0:
                region[j] = (kinks[j], beta)
            else:
                region[j] = (alpha, kinks[j])
        mom = {}  # (i, j), i <= j: moments over A_i cap A_j
        for ii, i in enumerate(live):
            for j in live[ii:]:
                lo = region[i][0].max(region[j][0])
                hi = lo.max(region[i][1].min(region[j][1]))
                mom[i, j] = self.moments(lo, hi)

        def mm(i, j):
            return mom[(i, j) if i <= j else (j, i)]

        total = self.moments(alpha, beta)
        # R_{o,q}(A_j) = int_{A_j} x^q r_o p, q = 0, 1; and over the whole interval
        R = {}
        for j in live:
            for o in range(k):
                own = mm(j, j)
                acc = [c[o] * own[q] - own[3 + 2 * o + q] for q in (0, 1)]
                for i in live:
                    m = mm(i, j)
                    for q in (0, 1):
                        acc[q] = acc[q] + v[o][i] * (w[i] * m[q + 1] + b[i] * m[q])
                R[o, j] = acc
        Rall = []
        for o in range(k):
            acc = c[o] * total[0] - total[3 + 2 * o]
            for i in live:
                m = mm(i, i)
                acc = acc + v[o][i] * (w[i] * m[1] + b[i] * m[0])
            Rall.append(acc)

        zero = arb(0)
        # full layout: w (H), b (H), v (k, H), c (k); mapped to theta's indices afterwards
        nfull = 3 * H + H * (k - 1) + k
        fw = list(range(H))
        fb = list(range(H, 2 * H))
        fv = [[2 * H + o * H + j for j in range(H)] for o in range(k)]
        fc = [2 * H + k * H + o for o in range(k)]
        g = [zero] * nfull
        for j in live:
            g[fw[j]] = 2 * sum((v[o][j] * R[o, j][1] for o in range(k)), zero)
            g[fb[j]] = 2 * sum((v[o][j] * R[o, j][0] for o in range(k)), zero)
            for o in range(k):
                g[fv[o][j]] = 2 * (w[j] * R[o, j][1] + b[j] * R[o, j][0])
        for o in range(k):
            g[fc[o]] = 2 * Rall[o]
        if not need_hess:
            return self._to_theta(g, None, fw, fb, fv, fc)

        h = [[zero] * nfull for _ in range(nfull)]

        def put(a, bb, val):
            h[a][bb] = val
            h[bb][a] = val

        for j in live:  # kink terms
            if kinds[j] != "kink":
                continue
            t = kinks[j]
            dens, targ = self.point_values(t)
            s = zero
            for o in range(k):
                r = c[o] - targ[o]
                for i in live:
                    if i != j:
                        r = r + v[o][i] * (w[i] * t + b[i]).nonnegative_part()
                s = s + v[o][j] * r
            kt = 2 * s * dens / abs(w[j])
            h[fw[j]][fw[j]] = h[fw[j]][fw[j]] + kt * t * t
            h[fb[j]][fb[j]] = h[fb[j]][fb[j]] + kt
            h[fw[j]][fb[j]] = h[fw[j]][fb[j]] + kt * t
            h[fb[j]][fw[j]] = h[fw[j]][fb[j]]
        for ii, i in enumerate(live):
            for j in live[ii:]:
                m = mm(i, j)
                vv = sum((v[o][i] * v[o][j] for o in range(k)), zero)
                put(fw[i], fw[j], h[fw[i]][fw[j]] + 2 * vv * m[2])
                put(fb[i], fb[j], h[fb[i]][fb[j]] + 2 * vv * m[0])
                put(fw[i], fb[j], h[fw[i]][fb[j]] + 2 * vv * m[1])
                if i != j:
                    put(fb[i], fw[j], h[fb[i]][fw[j]] + 2 * vv * m[1])
                gram = 2 * (w[i] * w[j] * m[2] + (w[i] * b[j] + b[i] * w[j]) * m[1] + b[i] * b[j] * m[0])
                for o in range(k):
                    put(fv[o][i], fv[o][j], gram)
                    for a, bq in ([(i, j)] if i == j else [(i, j), (j, i)]):  # d2L/dw_a dv_ob, d2L/db_a dv_ob
                        put(fw[a], fv[o][bq], 2 * v[o][a] * (w[bq] * m[2] + b[bq] * m[1])
                            + (2 * R[o, a][1] if a == bq else zero))
                        put(fb[a], fv[o][bq], 2 * v[o][a] * (w[bq] * m[1] + b[bq] * m[0])
                            + (2 * R[o, a][0] if a == bq else zero))
        for i in live:
            m = mm(i, i)
            for o in range(k):
                put(fw[i], fc[o], 2 * v[o][i] * m[1])
                put(fb[i], fc[o], 2 * v[o][i] * m[0])
                put(fv[o][i], fc[o], 2 * (w[i] * m[1] + b[i] * m[0]))
        for o in range(k):
            put(fc[o], fc[o], 2 * total[0])
        return self._to_theta(g, h, fw, fb, fv, fc)

    def _to_theta(self, g, h, fw, fb, fv, fc):
        """Select the trained coordinates, in theta's order."""
        iw, ib, iv, ic = self.index()
        pairs = list(zip(iw, fw, strict=True)) + list(zip(ib, fb, strict=True))
        for o in range(self.k):
            pairs += list(zip(iv[o], fv[o], strict=True))
        pairs += list(zip(ic, fc, strict=True))
        pairs = sorted((t, f) for t, f in pairs if t is not None)
        sel = [f for _, f in pairs]
        gt = [g[f] for f in sel]
        ht = None if h is None else [[h[a][bb] for bb in sel] for a in sel]
        return gt, ht


def _why_unsupported(problem: Any) -> str | None:
    backend = getattr(problem, "backend_name", None)
    if backend == "gaussian":
        from ._certify_gaussian import why_unsupported

        return why_unsupported(problem)
    if backend != "exact1d":
        return (f"certification needs the exact1d or gaussian risk backend (the risk is then in closed form); this "
                f"problem uses {getattr(problem, 'backend_name', type(problem).__name__)!r}")
    arch = problem.architecture
    if arch.activation != "relu" or not arch.is_shallow or arch.input_dim != 1:
        return "certification needs a shallow 1D ReLU network"
    return None


def _empty(n: int) -> dict[str, np.ndarray]:
    out = {
        "certified_class": np.full(n, "none", dtype=object),
        "certified_reason": np.full(n, "", dtype=object),
        "certified_radius": np.full(n, np.nan),
        "certified_eig_low": np.full(n, np.nan),
        "certified_eig_high": np.full(n, np.nan),
        "certified_n_free": np.full(n, np.nan),
        "certified_detail": np.full(n, "", dtype=object),
    }
    return out


def certify_critical_points(
    problem: Any,
    theta: np.ndarray,
    *,
    radius: float | None = None,
    max_radius: float = 1e-4,
    prec: int = 192,
) -> dict[str, np.ndarray]:
    """Computer-assisted proofs, per row of ``theta`` ``(T, P)``, that a critical point of the risk lies near it,
    and of its type. Backends: ``exact1d`` (with a slice for its symmetries) and ``gaussian`` with a fixed output
    layer (``_certify_gaussian``: every coordinate free, ``certified_n_free = P``).

    Returns a dict of ``(T,)`` columns (``CERTIFY_COLUMNS``; docs/analysis.md, "Certified critical points"):

    - ``certified_class``: ``min`` (a local minimum of the risk, strict on the slice), ``saddle`` (a critical point
      with a direction of negative curvature: not a local minimum) or ``none``;
    - ``certified_reason``: ``""`` when certified, else a key of ``CERTIFY_REASONS``; ``certified_detail`` a
      sentence with the numbers;
    - ``certified_radius``: the critical point ``theta*`` satisfies ``max_i |theta*_i - theta_i| <= radius``
      (coordinates held fixed by the slice are equal); ``0`` when ``theta`` is itself exactly critical;
    - ``certified_eig_low`` / ``certified_eig_high``: a lower / upper bound of the smallest eigenvalue of the Hessian
      on the slice, valid at every point of the certified box (for ``gaussian``, a box about the row's float Newton
      limit, which contains the critical point: ``certify_row_polished``);
    - ``certified_n_free``: the number of free coordinates (the dimension of the slice).

    ``radius`` fixes the box's half-width (default: chosen from the Newton correction, at most ``max_radius`` times
    ``max(1, max|theta|)``); ``prec`` is the working precision of the ball arithmetic in bits.
    """
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 2 or theta.shape[1] != problem.n_params:
        raise ValueError(f"theta has shape {theta.shape}: expected (T, {problem.n_params})")
    if radius is not None and not (np.isfinite(radius) and radius > 0):
        raise ValueError(f"radius = {radius!r}: expected a positive number or None")
    if not (np.isfinite(max_radius) and max_radius > 0):
        raise ValueError(f"max_radius = {max_radius!r}: expected a positive number")
    n = theta.shape[0]
    out = _empty(n)
    why = _why_unsupported(problem)
    if why is not None:
        out["certified_reason"][:] = "unsupported_backend"
        out["certified_detail"][:] = why
        return out
    if not certify_available():
        out["certified_reason"][:] = "unavailable"
        out["certified_detail"][:] = CERTIFY_REASONS["unavailable"]
        return out
    from flint import arb, arb_mat, ctx

    old = ctx.prec
    ctx.prec = int(prec)
    try:
        if problem.backend_name == "gaussian":
            from ._certify_gaussian import GaussianModel, certify_row_polished

            gmodel = GaussianModel(problem)
            gmodel.balls(arb, arb_mat)
            for i in range(n):
                res = certify_row_polished(gmodel, theta[i], radius, max_radius, arb, arb_mat)
                for key, value in res.items():
                    out[key][i] = value
            return out
        model = _Exact1D(problem, arb)
        for i in range(n):
            res = _certify_row(model, theta[i], radius, max_radius, arb, arb_mat)
            for key, value in res.items():
                out[key][i] = value
    finally:
        ctx.prec = old
    return out


# ------------------------------------------------------------------------------------------------ one row
def _slice(model: _Exact1D, th: np.ndarray, kinds: list[str]) -> tuple[list[int] | None, str]:
    """The free coordinates (theta indices) of the slice that removes the known symmetries, or ``None`` with the
    reason it cannot be built."""
    iw, ib, iv, ic = model.index()
    H, k = model.H, model.k
    trained_out = iv[0][0] is not None
    has_c = ic[0] is not None
    has_b = ib[0] is not None
    free: list[int] = []
    for j in range(H):
        if kinds[j] == "kink":
            if trained_out:  # rescaling (w, b, v) -> (l w, l b, v / l): hold w_j
                free += ([ib[j]] if has_b else []) + [iv[o][j] for o in range(k)]
            else:
                free += [iw[j]] + ([ib[j]] if has_b else [])
    full = [j for j in range(H) if kinds[j] == "full"]
    if full:
        j1 = max(full, key=lambda j: abs(th[iw[j]]))
        if trained_out:
            if th[iw[j1]] == 0:
                return None, (f"the units {full} are active on the whole interval with w = 0: the affine span and "
                              "the rescaling degenerate there")
            if has_c:
                free += [iv[o][j1] for o in range(k)]
            elif k == 1 and has_b and th[iv[0][j1]] != 0:
                free += [ib[j1], iv[0][j1]]
            elif not has_b:
                free += [iv[o][j1] for o in range(k)]
            else:
                return None, "units active on the whole interval without an output bias: not quotiented here"
        else:
            j1 = full[0]
            free += [iw[j1]] + ([ib[j1]] if has_b else [])
    if has_c:
        free += list(ic)
    return sorted(free), ""


def _certify_row(model: _Exact1D, th: np.ndarray, radius, max_radius, arb, arb_mat) -> dict[str, Any]:
    if not np.all(np.isfinite(th)):
        return _refuse("nonfinite", "the row has non-finite parameters")
    P = len(th)
    point = [arb(float(x)) for x in th]
    w, b, _, _ = model.unpack(point)
    kinds, kinks = model.classify_units(w, b)
    scale = max(1.0, float(np.max(np.abs(th))))
    if "nonsmooth" in kinds:
        bad = [j for j, kd in enumerate(kinds) if kd == "nonsmooth"]
        return _refuse("nonsmooth", f"units {bad} have their kink at an end of the interval (or w = b = 0): G is not "
                                    "differentiable there")
    g0, _ = model.grad_hess(point, kinds, kinks, need_hess=False)

    # 1. theta itself exactly critical (constructed points): a saddle needs no slice
    exact = all(gi.is_zero() for gi in g0)
    if exact:
        tiny = 2.0**-60 * scale
        box = [arb(float(x), tiny) for x in th]
        bw, bb, _, _ = model.unpack(box)
        bkinds, bkinks = model.classify_units(bw, bb)
        if bkinds == kinds:
            _, hb = model.grad_hess(box, bkinds, bkinks)
            hm = np.array([[float(e.mid()) for e in row] for row in hb])
            lam, vec = np.linalg.eigh(0.5 * (hm + hm.T))
            q = [arb(float(x)) for x in vec[:, 0]]
            high = _rayleigh_upper(hb, q, arb)
            if high < 0:
                return {"certified_class": "saddle", "certified_reason": "", "certified_radius": 0.0,
                        "certified_eig_low": _eig_lower(hb, arb, arb_mat), "certified_eig_high": high,
                        "certified_n_free": float(P),
                        "certified_detail": "theta is exactly critical (G = 0 in ball arithmetic); the Hessian has "
                                            f"negative curvature {high:.3g} along a direction"}

    # 2. the slice
    free, why = _slice(model, th, kinds)
    if free is None:
        return _refuse("symmetry", why)
    nf = len(free)
    if nf == 0:
        return _refuse("singular", "every parameter is held fixed by the slice: nothing to certify")
    gF = [g0[a] for a in free]
    _, h0 = model.grad_hess(point, kinds, kinks)
    hF0 = np.array([[float(h0[a][bq].mid()) for bq in free] for a in free])
    hF0 = 0.5 * (hF0 + hF0.T)
    lam0 = np.linalg.eigvalsh(hF0)
    amax = float(np.max(np.abs(lam0))) if nf else 0.0
    if not np.isfinite(amax) or amax == 0 or float(np.min(np.abs(lam0))) <= 1e-12 * amax:
        return _refuse("singular", f"the Hessian on the {nf}-dimensional slice has eigenvalues {lam0[:3]} (smallest "
                                   f"|lambda| / max |lambda| = {float(np.min(np.abs(lam0))) / max(amax, 1e-300):.2g})",
                       certified_n_free=float(nf))
    Cf = np.linalg.inv(hF0)
    gmid = np.array([float(x.mid()) for x in gF])
    step = float(np.max(np.abs(Cf @ gmid)))
    radii = radius_ladder(step, scale, max_radius, radius)
    if not radii:
        return _refuse("not_critical", f"the Newton correction {step:.3g} exceeds max_radius * max(1, |theta|) = "
                                       f"{max_radius * scale:.3g}", certified_n_free=float(nf))
    C = arb_mat([[arb(float(x)) for x in row] for row in Cf])
    gvec = arb_mat(nf, 1, gF)
    ident = arb_mat([[arb(1 if a == bq else 0) for bq in range(nf)] for a in range(nf)])
    for r in radii:
        box = list(point)
        for a in free:
            box[a] = arb(float(th[a]), r)
        bw, bb, _, _ = model.unpack(box)
        bkinds, bkinks = model.classify_units(bw, bb)
        if bkinds != kinds:
            return _refuse("nonsmooth", f"a unit changes kind (dead / active everywhere / kinked) within {r:.3g} of "
                                        "theta", certified_n_free=float(nf))
        gb, hb = model.grad_hess(box, bkinds, bkinks)
        hX = arb_mat([[hb[a][bq] for bq in free] for a in free])
        dX = arb_mat(nf, 1, [box[a] - point[a] for a in free])
        kx = (-(C * gvec)) + (ident - C * hX) * dX  # K(X) - theta
        inside = all(dX[a, 0].contains_interior(kx[a, 0]) for a in range(nf))
        if not inside:
            continue
        # a unique zero of G_free in X; every G component held fixed must contain 0 over X as well
        for a in range(P):
            if a not in free and not gb[a].contains(0):
                return _refuse("internal", f"G[{a}] (held fixed by the slice) is not 0 over the box: {gb[a]}")
        rad = max(_up(abs(kx[a, 0])) for a in range(nf))
        hlist = [[hb[a][bq] for bq in free] for a in free]
        low = _eig_lower(hlist, arb, arb_mat)
        hm = np.array([[float(e.mid()) for e in row] for row in hlist])
        lam, vec = np.linalg.eigh(0.5 * (hm + hm.T))
        high = _rayleigh_upper(hlist, [arb(float(x)) for x in vec[:, 0]], arb)
        res = {"certified_radius": rad, "certified_eig_low": low, "certified_eig_high": high,
               "certified_n_free": float(nf), "certified_reason": ""}
        if low > 0:
            return {**res, "certified_class": "min",
                    "certified_detail": f"unique critical point within {rad:.3g} (Krawczyk, box {r:.3g}); Hessian on "
                                        f"the slice >= {low:.3g} on the box"}
        if high < 0:
            return {**res, "certified_class": "saddle",
                    "certified_detail": f"unique critical point within {rad:.3g} (Krawczyk, box {r:.3g}); negative "
                                        f"curvature <= {high:.3g} on the box"}
        return {**res, "certified_class": "none", "certified_reason": "eigen_gap",
                "certified_detail": f"critical point within {rad:.3g}, but the smallest Hessian eigenvalue is only "
                                    f"known to lie in [{low:.3g}, {high:.3g}]"}
    # no certificate: try to prove that there is no critical point near theta at all
    detail = (f"the Krawczyk test failed at box radii {radii[0]:.3g} .. {radii[-1]:.3g} (Newton correction "
              f"{step:.3g})")
    r = radii[-1]
    box = [arb(float(x), r) for x in th]
    bw, bb, _, _ = model.unpack(box)
    bkinds, bkinks = model.classify_units(bw, bb)
    if "nonsmooth" not in bkinds:
        gb, _ = model.grad_hess(box, bkinds, bkinks, need_hess=False)
        if any(not x.contains(0) for x in gb):
            detail += f"; excluded: G != 0 on the whole box of radius {r:.3g} about theta"
    return _refuse("not_critical", detail, certified_n_free=float(nf))


def _up(x) -> float:
    """A float >= every point of the ball ``x`` (float conversion rounds to nearest: step up when it fell short)."""
    u = x.upper()
    f = float(u)
    return float(np.nextafter(f, np.inf)) if type(u)(f) < u else f


def _down(x) -> float:
    """A float <= every point of the ball ``x``."""
    lo = x.lower()
    f = float(lo)
    return float(np.nextafter(f, -np.inf)) if type(lo)(f) > lo else f


def _rayleigh_upper(h, q, arb) -> float:
    """Upper bound of ``q^T H q / q^T q`` over the ball matrix ``h`` (an upper bound of the smallest eigenvalue of
    every symmetric matrix in it)."""
    n = len(q)
    num = arb(0)
    for a in range(n):
        row = arb(0)
        for bq in range(n):
            row = row + h[a][bq] * q[bq]
        num = num + q[a] * row
    den = sum((x * x for x in q), arb(0))
    return _up(num / den)


def _eig_lower(h, arb, arb_mat) -> float:
    """Lower bound of the smallest eigenvalue of every symmetric matrix in the ball matrix ``h``.

    ``V`` are float eigenvectors of the midpoint; ``B = V^T H V`` is enclosed in ball arithmetic and its smallest
    eigenvalue bounded below by Gershgorin's discs and by Weyl's inequality (diagonal of midpoints plus a
    Frobenius-norm perturbation), whichever is larger; Ostrowski's theorem (``lambda_k(V^T A V) = t_k
    lambda_k(A)`` with ``t_k`` between the extreme eigenvalues of ``V^T V``, within ``eps = ||V^T V - I||_F`` of
    1) carries the bound back to ``H``."""
    n = len(h)
    hm = np.array([[float(e.mid()) for e in row] for row in h])
    _, vec = np.linalg.eigh(0.5 * (hm + hm.T))
    V = arb_mat([[arb(float(x)) for x in row] for row in vec])
    HX = arb_mat([list(row) for row in h])
    B = V.transpose() * HX * V
    E = V.transpose() * V
    eps = arb(0)
    for a in range(n):
        for bq in range(n):
            e = E[a, bq] - (1 if a == bq else 0)
            eps = eps + e * e
    eps = _up(eps.sqrt())
    if not eps < 0.5:
        return -math.inf
    gersh = math.inf
    off2 = arb(0)
    mids = []
    for a in range(n):
        radius = arb(0)
        for bq in range(n):
            if bq != a:
                radius = radius + abs(B[a, bq])
                off2 = off2 + B[a, bq] * B[a, bq]
        gersh = min(gersh, _down(B[a, a] - radius))
        mid = arb(float(B[a, a].mid()))
        d = B[a, a] - mid
        off2 = off2 + d * d
        mids.append(mid)
    weyl = _down(min(mids, key=float) - off2.sqrt()) if mids else math.inf
    g = arb(max(gersh, weyl))
    bound = g / (1 + arb(eps)) if g > 0 else g / (1 - arb(eps))
    return _down(bound)
