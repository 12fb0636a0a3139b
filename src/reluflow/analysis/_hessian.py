"""Hessians of the risk, and their spectra: closed form where the backend has one, else central differences of ``G``.

``exact1d`` has a closed-form Hessian (``risk/_hessian1d.py``: exact up to rounding, ``O(P^2)`` work per
trajectory), which ``hessian`` uses by default. The other backends return ``G`` but no second derivatives, so
there the Hessian is built column by column from central differences of ``G``:

    H[:, :, j] = (G(theta + h_j e_j) - G(theta - h_j e_j)) / (2 h_j),      then  H <- (H + H^T) / 2.

All ``2P`` perturbed points of every trajectory are stacked into one ``(n * 2P, P)`` batch and sent to
``problem.risk_and_grad`` in chunks, so a Hessian costs ``2P`` gradient evaluations per trajectory, vectorized
(``4P`` with the default Richardson step, see ``hessian``).

Step size. The default is ``h_j = cbrt(eps) * max(1, |theta_j|)`` per coordinate, with ``eps`` the machine
epsilon of the dtype the problem computes in: the truncation error of central differences is ``O(h^2)`` and
the round-off error ``O(eps / h)``, balanced at ``h ~ eps^(1/3)``, which leaves a relative error of about
``eps^(2/3) ~ 4e-11`` in float64. Each step is rounded so that ``theta + h`` and ``theta - h`` are
representable and the divisor is the difference actually taken.

ReLU networks. ``G`` is only piecewise smooth: it is not differentiable where a kink ``-b_j / w_j`` meets a
knot of the target or the density or an end of the interval (exact backends), and it *jumps* where a kink
crosses a quadrature node (``quadrature`` backend). Central differences are right as long as no such event
lies within ``±h`` of ``theta``; otherwise the affected column is wrong by ``O(jump / h)`` and the symmetrized
Hessian and its spectrum are contaminated. Prefer the exact backends for Hessian statistics, and treat spectra
at points with a kink sitting on a node (or a unit with ``w_j = b_j = 0``, where ``G`` is not even continuous)
with care.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..risk import Memory

__all__ = ["default_fd_steps", "hessian", "hessian_kept_memory", "hessian_memory", "hessian_spectrum",
           "spectrum_from_hessian", "spectrum_memory"]

# Upper bound on the number of float64 elements of one stacked batch of perturbed points (~32 MB).
CHUNK_ELEMENTS = 1 << 22


def _as_theta(theta: Any, n_params: int | None = None) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2:
        raise ValueError(f"theta has shape {theta.shape}: expected (T, P)")
    if n_params is not None and theta.shape[1] != n_params:
        raise ValueError(f"theta has shape {theta.shape}: expected (T, {n_params}) for this problem")
    return theta


def gradients(problem: Any, theta: np.ndarray) -> np.ndarray:
    """``G(theta)`` ``(n, P)`` float64, evaluated in chunks of at most ``CHUNK_ELEMENTS`` elements."""
    n, p = theta.shape
    out = np.empty((n, p), dtype=np.float64)
    rows = max(1, CHUNK_ELEMENTS // max(p, 1))
    for start in range(0, n, rows):
        sl = slice(start, min(n, start + rows))
        out[sl] = problem.risk_and_grad(theta[sl])[1]
    return out


def _working_eps(problem: Any, theta: np.ndarray) -> float:
    """Machine epsilon of the dtype ``problem`` computes ``G`` in, probed on one row (float64 if none)."""
    if theta.shape[0] == 0:
        return float(np.finfo(np.float64).eps)
    g = np.asarray(problem.risk_and_grad(theta[:1])[1])
    dtype = g.dtype if np.issubdtype(g.dtype, np.floating) else np.dtype(np.float64)
    return float(np.finfo(dtype).eps)


def default_fd_steps(theta: np.ndarray, rel_step: float) -> np.ndarray:
    """Per-coordinate steps ``rel_step * max(1, |theta|)`` ``(T, P)``, rounded to representable ones."""
    h = rel_step * np.maximum(1.0, np.abs(theta))
    # (theta + h) - theta is exactly the step the perturbed point carries
    return (theta + h) - theta


def _central_differences(problem: Any, base: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Unsymmetrized central differences ``raw[t, i, j] = dG_i / dtheta_j`` ``(m, P, P)``; steps (m, P)."""
    m, p = base.shape
    eye = np.eye(p, dtype=bool)
    # plus[t, j, :] = theta_t + h_tj e_j (likewise minus): one perturbed point per (trajectory, column)
    plus = np.where(eye[None], base[:, None, :] + step[:, None, :], base[:, None, :])
    minus = np.where(eye[None], base[:, None, :] - step[:, None, :], base[:, None, :])
    divisor = (base + step) - (base - step)  # (m, P): the difference actually taken
    stack = np.concatenate([plus.reshape(m * p, p), minus.reshape(m * p, p)])
    g = gradients(problem, stack).reshape(2, m, p, p)  # g[s, t, j, :] = G(theta_t +- h_tj e_j)
    return np.swapaxes(g[0] - g[1], 1, 2) / divisor[:, None, :]


HESSIAN_METHODS = ("auto", "fd")


def hessian(
    problem: Any, theta: np.ndarray, *, fd_step: float | None = None, richardson: bool = True,
    method: str = "auto",
) -> np.ndarray:
    """Hessian ``(T, P, P)`` of the risk at ``theta`` ``(T, P)``: closed form or symmetrized central differences.

    ``method="auto"`` (default) takes the problem's closed-form Hessian where its backend has one
    (``problem.has_hessian``: ``exact1d``, ``risk/_hessian1d.py``; ``fd_step`` and ``richardson`` are then
    unused) and central differences of ``G`` otherwise; ``method="fd"`` always takes central differences.

    ``fd_step`` is the relative step: ``h_j = fd_step * max(1, |theta_j|)``; ``None`` takes ``cbrt(eps)`` of
    the problem's dtype (module docstring). With ``richardson`` (default) the result is ``2 D(h/2) - D(h)``
    from the central differences ``D`` at steps ``h`` and ``h/2`` (``4P`` gradients per row instead of
    ``2P``): this removes an error *linear* in ``h`` that plain central differences make where ``G`` is
    ``C^1`` but not ``C^2`` — exactly the situation at a zero-risk point of the exact backends, where every
    active kink sits on a knot of the target, ``L`` has ``|delta|^3`` terms and ``G`` has ``delta |delta|``
    terms. For smooth ``G`` it costs nothing in accuracy (the ``O(h^2)`` error remains, round-off grows by a
    small factor).

    Rows with a non-finite entry in ``theta`` (or whose perturbed gradients are not finite) come back as NaN;
    the other rows are unaffected, each row depends only on its own ``theta``.
    """
    if method not in HESSIAN_METHODS:
        raise ValueError(f"method = {method!r} is not allowed: expected one of {list(HESSIAN_METHODS)}")
    theta = _as_theta(theta, getattr(problem, "n_params", None))
    n_traj, p = theta.shape
    out = np.full((n_traj, p, p), np.nan)
    finite = np.flatnonzero(np.all(np.isfinite(theta), axis=1))
    if finite.size == 0 or p == 0:
        return out
    th = theta[finite]
    if method == "auto" and getattr(problem, "has_hessian", False):
        out[finite] = problem.hessian(th)
        return out
    rel = np.cbrt(_working_eps(problem, th)) if fd_step is None else float(fd_step)
    if not (np.isfinite(rel) and rel > 0):
        raise ValueError(f"fd_step = {fd_step!r} is not allowed: expected a positive finite relative step")
    h = default_fd_steps(th, rel)  # (n, P)
    h_half = default_fd_steps(th, 0.5 * rel) if richardson else None
    rows = max(1, CHUNK_ELEMENTS // (2 * p * p))
    for start in range(0, len(th), rows):
        sl = slice(start, min(len(th), start + rows))
        raw = _central_differences(problem, th[sl], h[sl])
        if h_half is not None:
            raw = 2.0 * _central_differences(problem, th[sl], h_half[sl]) - raw
        out[finite[sl]] = 0.5 * (raw + np.swapaxes(raw, 1, 2))
    return out


def hessian_memory(problem: Any, *, richardson: bool = True, method: str = "auto") -> Memory:
    """Upper estimate of the bytes ``hessian`` holds at its peak (``risk.Memory``), as a function of the batch.

    Per trajectory the result ``(P, P)`` and a few ``(P,)`` vectors (the finite rows, two step sizes and their
    temporaries). A closed form adds ``problem.hessian_memory()``; central differences add, per row of a chunk
    (``CHUNK_ELEMENTS // (2 P^2)`` rows), the perturbed points ``plus`` and ``minus``, their stack ``(2P, P)``,
    its gradients ``(2P, P)``, their difference and quotient (8 ``(P, P)``; 9 with Richardson, which keeps the
    first central difference while it takes the second) and the backend's evaluation of ``2P`` points per row,
    in chunks of ``CHUNK_ELEMENTS // P`` points (``gradients``).
    """
    p = problem.n_params
    base = Memory(0.0, 8 * (p * p + 6 * p + 1))
    if method == "auto" and getattr(problem, "has_hessian", False):
        return base.plus(problem.hessian_memory())
    rows = max(1, CHUNK_ELEMENTS // (2 * p * p))
    points = max(1, CHUNK_ELEMENTS // max(p, 1))
    differences = Memory(0.0, 0.0, ((8 * p * p * (9 if richardson else 8), rows),))
    evaluations = problem.memory().batched(2 * p, min(rows, points / (2 * p)))
    return base.plus(differences, evaluations)


def hessian_kept_memory(problem: Any, *, method: str = "auto") -> Memory:
    """The buffers the backend keeps after ``hessian`` (``kept_memory``: an arena, a workspace), as a function of
    the batch: central differences evaluate ``G`` at ``2 P`` points per trajectory."""
    if method == "auto" and getattr(problem, "has_hessian", False):
        return problem.hessian_kept_memory()
    return problem.kept_memory().batched(2 * problem.n_params)


def spectrum_memory(n_params: int) -> Memory:
    """Upper estimate of the bytes ``spectrum_from_hessian`` adds to its input (``risk.Memory``): two copies of
    the finite rows, their sum and the symmetrized matrix (three ``(P, P)`` at once) and the eigenvalues with their
    masks; ``fixed``: LAPACK's work arrays for one matrix (a copy, the eigenvectors' workspace), which numpy
    allocates outside Python's allocator."""
    p = n_params
    return Memory(8 * 3 * p * p, 8 * (3 * p * p + 4 * p + 8))


def spectrum_from_hessian(hess: np.ndarray, *, zero_rtol: float = 1e-8) -> dict[str, np.ndarray]:
    """Eigenvalue statistics of symmetric matrices ``hess`` ``(T, P, P)``; see ``hessian_spectrum``."""
    hess = np.asarray(hess, dtype=np.float64)
    n_traj, p = hess.shape[0], hess.shape[-1]
    keys = ("n_negative", "n_zero", "lambda_min", "lambda_min_positive", "hessian_rank")
    out = {k: np.full(n_traj, np.nan) for k in keys}
    ok = np.flatnonzero(np.all(np.isfinite(hess.reshape(n_traj, p * p)), axis=1))
    if ok.size == 0 or p == 0:
        return out
    sym = 0.5 * (hess[ok] + np.swapaxes(hess[ok], 1, 2))
    lam = np.linalg.eigvalsh(sym)  # (n, P), ascending
    tol = zero_rtol * np.max(np.abs(lam), axis=1, keepdims=True)  # (n, 1): relative to the spectral radius
    zero = np.abs(lam) <= tol
    positive = lam > tol
    out["n_negative"][ok] = np.sum(lam < -tol, axis=1)
    out["n_zero"][ok] = np.sum(zero, axis=1)
    out["lambda_min"][ok] = lam[:, 0]
    # smallest eigenvalue above the zero band; ascending order makes it the first positive one
    first_pos = np.argmax(positive, axis=1)
    smallest_positive = lam[np.arange(len(ok)), first_pos]
    out["lambda_min_positive"][ok] = np.where(positive.any(axis=1), smallest_positive, np.nan)
    out["hessian_rank"][ok] = p - out["n_zero"][ok]
    return out


def hessian_spectrum(
    problem: Any, theta: np.ndarray, *, fd_step: float | None = None, zero_rtol: float = 1e-8,
    method: str = "auto",
) -> dict[str, np.ndarray]:
    """Spectrum statistics of the Hessian (``hessian``: closed form where the backend has one) at ``theta``.

    Returns a dict of ``(T,)`` float arrays (NaN where the Hessian could not be formed):

    - ``n_zero``: eigenvalues with ``|lambda| <= zero_rtol * max|lambda|`` (a tolerance relative to the
      spectral radius, so it is scale-free; it must sit above the finite-difference error ``~eps^(2/3)``);
    - ``n_negative``: eigenvalues below ``-zero_rtol * max|lambda|``;
    - ``lambda_min``: the smallest eigenvalue;
    - ``lambda_min_positive``: the smallest eigenvalue above the zero band (NaN if none);
    - ``hessian_rank``: ``P - n_zero``.
    """
    return spectrum_from_hessian(hessian(problem, theta, fd_step=fd_step, method=method), zero_rtol=zero_rtol)
