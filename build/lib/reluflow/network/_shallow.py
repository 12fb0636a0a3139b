"""Fast risk and generalized gradient of a shallow ReLU net on a weighted point set.

For ``N(x) = c + sum_j v_j relu(u_j . x~)`` with ``x~ = (x, 1)`` and ``u_j = (w_j, b_j)``, write the activation
mask ``S_mj = 1[u_j . x~_m > 0]``. Then ``relu(u_j . x~_m) = S_mj (u_j . x~_m)`` and everything the risk and ``G``
need is linear in ``S``:

    N(x_m)_k            = c_k + sum_i x~_mi (S @ R)_m,(k,i)          R_j,(k,i) = v_kj u_ji
    F_j,(i,k)           = (S^T @ E)_j,(i,k)                          E_m,(i,k) = x~_mi delta_mk
    G_{u_ji}            = sum_k v_kj F_j,(i,k)
    G_{v_kj}            = sum_i u_ji F_j,(i,k)
    G_{c_k}             = sum_m delta_mk,                            delta = 2 omega (N - f)

so the only ``(T, M, H)`` array is the mask, read by two GEMMs, instead of the several full passes of the
textbook forward/backward (pre-activation, activation, derivative mask, two products). ``relu'(0) = 0`` is the
strict ``> 0`` of the mask, as in SCIENCE.md §3.
"""

from __future__ import annotations

import numpy as np

from ._architecture import Architecture

__all__ = ["applies", "shallow_relu_risk_and_grad"]


def applies(arch: Architecture) -> bool:
    return arch.is_shallow and arch.activation == "relu"


def shallow_relu_risk_and_grad(
    arch: Architecture,
    theta: np.ndarray,
    x_tilde: np.ndarray,
    weights: np.ndarray,
    target_values: np.ndarray,
    need_grad: bool = True,
    mask_buffer: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Risk ``(T,)`` and ``G`` ``(T, P)`` of a shallow ReLU net.

    ``x_tilde`` ``(M, d + 1)`` points with a trailing column of ones, ``weights`` ``(M,)``, ``target_values``
    ``(M, k)``. ``mask_buffer``, if given, is a float array with at least ``T * M * H`` elements reused for the
    mask. Row ``t`` of the result depends only on row ``t`` of ``theta``.
    """
    n_traj = theta.shape[0]
    (w, b), (v, c) = arch.unflatten(theta)
    h, d = arch.widths[0], arch.input_dim
    k = arch.output_dim
    m = x_tilde.shape[0]
    dtype = theta.dtype
    u = np.empty((n_traj, h, d + 1), dtype=dtype)
    u[:, :, :d] = w
    u[:, :, d] = 0.0 if b is None else b

    # layout (T, H, M): the long axis M is contiguous, so building the mask streams through memory
    if mask_buffer is not None and mask_buffer.size >= n_traj * m * h:
        mask = mask_buffer.reshape(-1)[: n_traj * m * h].reshape(n_traj, h, m)
    else:
        mask = np.empty((n_traj, h, m), dtype=dtype)
    if d == 1:
        np.multiply(u[:, :, 0, None], x_tilde[:, 0], out=mask)
    else:
        np.matmul(u[:, :, :d], x_tilde[:, :d].T, out=mask)
    # w.x > -b is the same predicate as w.x + b > 0 in floating point (rounding keeps the sign of a sum)
    np.greater(mask, -u[:, :, d, None], out=mask)  # in place: bool written as 0.0 / 1.0

    vv = np.broadcast_to(v, (n_traj, k, h))
    r_mat = (vv[:, :, :, None] * u[:, None, :, :]).transpose(0, 2, 1, 3).reshape(n_traj, h, k * (d + 1))
    q = np.matmul(np.swapaxes(mask, 1, 2), r_mat).reshape(n_traj, m, k, d + 1)
    out = np.einsum("tmki,mi->tmk", q, x_tilde)
    if c is not None:
        out += c[:, None, :]
    residual = out - target_values
    weighted = residual * weights[:, None]
    risk = np.einsum("tmk,tmk->t", weighted, residual)
    if not need_grad:
        return risk, None

    delta = 2.0 * weighted  # (T, M, k)
    e = (x_tilde[None, :, :, None] * delta[:, :, None, :]).reshape(n_traj, m, (d + 1) * k)
    f = np.matmul(mask, e).reshape(n_traj, h, d + 1, k)
    grad = np.empty((n_traj, arch.n_params), dtype=dtype)
    hidden, output = arch.layers
    g_u = np.einsum("tkj,tjik->tji", vv, f)
    grad[:, hidden.weight] = g_u[:, :, :d].reshape(n_traj, h * d)
    if hidden.bias is not None:
        grad[:, hidden.bias] = g_u[:, :, d]
    if output.weight is not None:
        grad[:, output.weight] = np.einsum("tji,tjik->tkj", u, f).reshape(n_traj, k * h)
        if output.bias is not None:
            grad[:, output.bias] = delta.sum(axis=1)
    return risk, grad
