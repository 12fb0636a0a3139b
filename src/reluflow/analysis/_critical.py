"""Refinement of approximate critical points: batched damped Newton (Levenberg–Marquardt) on ``G = 0``.

A run that stops at a ``critical`` or ``budget`` endpoint sits *near* a critical point, with ``|G|`` at the
solver's tolerance. To classify that point (Hessian spectrum, risk) it is pinned down first: solve ``G = 0``
from the endpoint with Newton steps whose Jacobian is the Hessian ``H`` (``_hessian``: closed form for ``exact1d``,
central differences of ``G`` otherwise).

Step. With ``H = Q diag(lambda) Q^T`` (symmetric), the step is the Levenberg–Marquardt / Tikhonov-filtered
Newton step

    delta = -Q diag(phi) Q^T G,     phi_i = lambda_i / (lambda_i^2 + mu)
                                    (phi_i = 0 where |lambda_i| <= RCOND * max|lambda|)

i.e. the minimizer of ``|G + H delta|^2 + mu |delta|^2``. It is well defined when ``H`` is singular, as it is
at the non-isolated critical points of networks (rescaling symmetries, dead units): components along the null
space are not moved, so the refined point is close to the nearest point of the critical set. The sign of
``lambda`` is kept, so saddles are found as well as minima. ``mu = nu * max|lambda| * |G|`` goes to zero with
``|G|`` (Fan–Yuan / Yamashita–Fukushima damping), which keeps the local convergence fast even at non-isolated
solutions.

Damping is adapted per trajectory: a trial step is accepted only if ``|G|`` decreases (then ``nu /= 10``),
otherwise ``nu *= 10`` and the step is retried (at most ``MAX_TRIALS`` times per iteration; as ``mu`` grows
the step turns into a short step along ``-H G``, a descent direction of ``|G|^2``). A trajectory whose trials
all fail has stalled (usually at the round-off floor of ``G``) and stops. A row that meets the tolerance gets
one more Newton iteration (a polish to the round-off floor) and then stops. One Newton iteration costs one
Hessian (``2P`` gradient evaluations) plus one evaluation per trial.

Rows never interact: the Hessians, eigendecompositions, damping parameters and acceptance tests are per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..risk import Memory
from ._hessian import _as_theta, gradients, hessian, hessian_kept_memory, hessian_memory

__all__ = ["eigh_deflated", "refine_critical_points", "refine_memory"]

NU_START = 1e-3  # initial damping factor
NU_MIN, NU_MAX = 1e-12, 1e12
NU_DOWN, NU_UP = 10.0, 10.0
MAX_TRIALS = 10  # damped trials per Newton iteration before a row counts as stalled
RCOND = 1e-10  # eigenvalues below RCOND * max|lambda| are treated as zero (finite-difference noise)


def _norm(g: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", g, g))


def eigh_deflated(hess: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.linalg.eigh`` of symmetric ``hess`` ``(n, P, P)``, with exactly-zero rows split off first.

    A coordinate whose Hessian row is exactly zero (every parameter of a dead unit: its active set has measure
    zero, so neither ``G`` nor ``H`` depends on it) is an eigenvector with eigenvalue 0, and the rest of the
    spectrum is that of the matrix without it. The eigendecomposition, the costly part of a Newton iteration
    (``O(P^3)``), then runs on the live block only; rows with the same number of live coordinates are stacked.
    Returns ``(lam (n, P), q (n, P, P))`` with ``hess[i] = q[i] diag(lam[i]) q[i]^T``; unlike ``np.linalg.eigh``
    the eigenvalues are not sorted. ``hess`` must be exactly symmetric (only rows are tested for zeros), as the
    closed-form and the symmetrized difference Hessians are.
    """
    n, p, _ = hess.shape
    live = np.any(hess != 0, axis=2)  # (n, P)
    n_live = live.sum(axis=1)
    if np.all(n_live == p):
        return np.linalg.eigh(hess)
    lam = np.zeros((n, p))
    q = np.zeros((n, p, p))
    # per row: live coordinates first (in index order), then the dead ones
    order = np.argsort(~live, axis=1, kind="stable")
    for m in np.unique(n_live):
        rows = np.flatnonzero(n_live == m)
        idx = order[rows]  # (r, P)
        alive = idx[:, :m]
        if m:
            sub = hess[rows[:, None, None], alive[:, :, None], alive[:, None, :]]  # (r, m, m)
            lam_sub, q_sub = np.linalg.eigh(sub)
            lam[rows, :m] = lam_sub
        # row by row: copying whole eigenvector rows is ~2x faster than one scatter of r * m * m elements
        dead_cols = np.arange(m, p)
        for k, row in enumerate(rows):
            if m:
                q[row, :, :m][alive[k]] = q_sub[k]
            q[row, idx[k, m:], dead_cols] = 1.0  # unit vectors, eigenvalue 0
    return lam, q


def refine_memory(problem: Any) -> Memory:
    """Upper estimate of the bytes ``refine_critical_points`` holds at its peak (``risk.Memory``), as a function
    of the batch.

    Per trajectory about ten ``(P,)`` vectors (the iterate, ``G``, trial points and steps) and the larger of: the
    previous iteration's Hessian, eigenvectors and selected eigenvectors (``(P, P)`` each) while the next Hessian
    is taken (``hessian_memory`` without Richardson); ``eigh_deflated`` with the previous eigenvectors still
    alive (Hessian, old and selected eigenvectors, the new ones, the live block and its eigenvectors: six ``(P,
    P)``); and the trial steps (Hessian, eigenvectors and two selections of them) with ``G`` at one point per
    row (``problem.memory()``); the last two beside what the backend kept from the Hessian
    (``hessian_kept_memory``). ``fixed``: LAPACK's work arrays for one matrix.
    """
    p = problem.n_params
    square = 8 * p * p
    kept = hessian_kept_memory(problem)
    previous = Memory(0.0, 3 * square).plus(hessian_memory(problem, richardson=False))
    eigh = Memory(0.0, 6 * square).plus(kept)
    trials = Memory(0.0, 4 * square).plus(problem.memory(), kept)
    return Memory(3 * square, 8 * 10 * p).plus(previous.max(eigh, trials))


def refine_critical_points(
    problem: Any, theta: np.ndarray, *, max_iter: int = 50, tol: float = 1e-13
) -> dict[str, np.ndarray]:
    """Refine approximate critical points ``theta`` ``(T, P)`` to ``G = 0`` (module docstring).

    Returns a dict with

    - ``theta`` ``(T, P)``: the refined points (rows that could not be refined keep their input);
    - ``moved`` ``(T,)``: ``|theta_refined - theta|`` (Euclidean; NaN for non-finite input rows);
    - ``grad_norm`` ``(T,)``: ``|G(theta_refined)|`` (NaN/inf where ``G`` is not finite);
    - ``converged`` ``(T,)`` bool: ``|G| <= tol * max(1, scale)`` with ``scale = max|lambda(H)| *
      max_j |theta_j|``, the size of the terms of the linear model ``H theta`` of ``G`` (so the round-off
      floor of ``G`` scales with it); ``tol = 1e-13`` is near machine precision in float64 (use ~1e-5 for
      float32 problems).

    ``max_iter`` bounds the number of Newton iterations (Hessian evaluations) per row. Rows with a non-finite
    ``theta`` or ``G`` stay put with ``converged = False`` and never affect other rows.
    """
    theta0 = _as_theta(theta, getattr(problem, "n_params", None))
    n_traj, _ = theta0.shape
    x = theta0.copy()
    g = np.full_like(x, np.nan)
    finite = np.all(np.isfinite(x), axis=1)
    if finite.any():
        g[finite] = gradients(problem, x[finite])
    gnorm = _norm(g)
    scale = np.ones(n_traj)
    nu = np.full(n_traj, NU_START)
    active = finite & np.isfinite(gnorm)
    # a point whose gradient is already below the absolute floor needs no Hessian
    active &= ~(gnorm <= tol)

    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        # where the Hessian is taken by finite differences, plain central ones suffice for a Newton Jacobian
        # (Richardson matters for spectra only)
        hess = hessian(problem, x[idx], richardson=False)
        good = np.all(np.isfinite(hess.reshape(len(idx), -1)), axis=1)
        if not good.all():  # (n, P, P) copies cost ~10 ms each at P ~ 200: only when some rows drop out
            active[idx[~good]] = False
            idx, hess = idx[good], hess[good]
        if idx.size == 0:
            break
        lam, q = eigh_deflated(hess)  # (n, P), (n, P, P)
        lam_max = np.max(np.abs(lam), axis=1)
        scale[idx] = lam_max * np.max(np.abs(x[idx]), axis=1)
        keep = lam_max > 0  # an all-zero Hessian gives no Newton direction
        if not keep.all():
            active[idx[~keep]] = False
            idx, lam, q, lam_max = idx[keep], lam[keep], q[keep], lam_max[keep]
        reached_before = gnorm[idx] <= tol * np.maximum(1.0, scale[idx])
        if idx.size == 0:
            continue
        gq = np.einsum("npi,np->ni", q, g[idx])  # G in the eigenbasis
        cut = np.abs(lam) > RCOND * lam_max[:, None]
        pending = np.ones(len(idx), dtype=bool)
        for _trial in range(MAX_TRIALS):
            sel = np.flatnonzero(pending)
            if sel.size == 0:
                break
            rows = idx[sel]
            mu = (nu[rows] * lam_max[sel] * gnorm[rows])[:, None]
            lam_s = lam[sel]
            phi = np.where(cut[sel], lam_s / np.where(cut[sel], lam_s * lam_s + mu, 1.0), 0.0)
            q_sel = q if sel.size == len(idx) else q[sel]
            step = -np.einsum("npi,ni->np", q_sel, phi * gq[sel])
            trial = x[rows] + step
            ok = np.all(np.isfinite(trial), axis=1)
            g_trial = np.full_like(trial, np.nan)
            if ok.any():
                g_trial[ok] = gradients(problem, trial[ok])
            n_trial = _norm(g_trial)
            better = np.isfinite(n_trial) & (n_trial < gnorm[rows])
            acc = rows[better]
            x[acc], g[acc], gnorm[acc] = trial[better], g_trial[better], n_trial[better]
            nu[acc] = np.maximum(nu[acc] / NU_DOWN, NU_MIN)
            rej = rows[~better]
            nu[rej] = nu[rej] * NU_UP
            pending[sel[better]] = False
            # past NU_MAX the step is below round-off: no further trial can help
            pending[sel[~better][nu[rej] > NU_MAX]] = False
        stalled = idx[pending | (nu[idx] > NU_MAX)]
        active[stalled] = False
        # a row that met the tolerance before this iteration has now had one more Newton step, which takes a
        # quadratically convergent iteration to the round-off floor of G: it is done
        reached = gnorm[idx] <= tol * np.maximum(1.0, scale[idx])
        active[idx[reached & reached_before]] = False

    converged = finite & np.isfinite(gnorm) & (gnorm <= tol * np.maximum(1.0, scale))
    moved = np.full(n_traj, np.nan)
    moved[finite] = _norm(x[finite] - theta0[finite])
    return {"theta": x, "moved": moved, "grad_norm": gnorm, "converged": converged}
