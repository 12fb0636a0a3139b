"""Reference peers for the kernel suite: hand-written implementations of the same risk and gradient that a user
could write without reluflow, timed in the same run as reluflow's kernels so that every ratio is side by side.

- ``fused_numba``: the obvious compiled loop for a shallow ReLU net on a weighted point set: for each trajectory,
  unit and point (points transposed, so that the point loops are contiguous and vectorize), the pre-activations
  and the output, the residual, then each unit's gradient sums over its active points
  (``numba.njit(fastmath=True)``: the peer may reassociate and vectorize as it likes).
- ``numpy_mask_gemm``: the textbook batched numpy formulation: pre-activations ``(T, M, H)`` by a stacked
  matmul, ReLU, output, residual, and the backward pass as two more stacked matmuls with the mask.
- ``torch_deep``: forward and backward of a deep net (any activation torch has) with torch autograd, float64,
  one thread; ``None`` where torch is not installed.

Each peer returns ``(risk (T,), G (T, P))`` in reluflow's parameter layout, so that the suite can check it
against reluflow before timing it (a peer that computes something else would make any ratio meaningless).
"""

from __future__ import annotations

import numpy as np

__all__ = ["fused_numba_shallow", "numpy_mask_gemm_shallow", "torch_deep_peer"]


def _fused_kernel():
    import numba

    @numba.njit(cache=True, fastmath=True, nogil=True)
    def fused(theta, xt, wts, f, H, d, risk, grad):
        T, M = theta.shape[0], xt.shape[1]
        ow, ob, ov, oc = 0, H * d, H * d + H, H * d + 2 * H
        Z = np.empty((H, M))
        out = np.empty(M)
        delta = np.empty(M)
        for t in range(T):
            out[:] = theta[t, oc]
            for j in range(H):
                Z[j, :] = theta[t, ob + j]
                for i in range(d):
                    wji = theta[t, ow + j * d + i]
                    for m in range(M):
                        Z[j, m] += wji * xt[i, m]
                vj = theta[t, ov + j]
                for m in range(M):
                    if Z[j, m] > 0.0:
                        out[m] += vj * Z[j, m]
            acc, gc = 0.0, 0.0
            for m in range(M):
                r = out[m] - f[m]
                acc += wts[m] * r * r
                delta[m] = 2.0 * wts[m] * r
                gc += delta[m]
            risk[t] = acc
            grad[t, oc] = gc
            for j in range(H):
                vj = theta[t, ov + j]
                gb, gv = 0.0, 0.0
                for m in range(M):
                    if Z[j, m] > 0.0:
                        gb += delta[m]
                        gv += delta[m] * Z[j, m]
                grad[t, ob + j] = vj * gb
                grad[t, ov + j] = gv
                for i in range(d):
                    s = 0.0
                    for m in range(M):
                        if Z[j, m] > 0.0:
                            s += delta[m] * xt[i, m]
                    grad[t, ow + j * d + i] = vj * s

    return fused


_FUSED = None


def fused_numba_shallow(theta: np.ndarray, x: np.ndarray, weights: np.ndarray, targets: np.ndarray, H: int):
    """The fused loop for a shallow ReLU net with biases and one trained output (``theta = (w, b, v, c)``)."""
    global _FUSED
    if _FUSED is None:
        _FUSED = _fused_kernel()
    n, d = theta.shape[0], x.shape[1]
    risk, grad = np.empty(n), np.empty_like(theta)
    _FUSED(theta, np.ascontiguousarray(x.T), weights, targets.reshape(-1), H, d, risk, grad)
    return risk, grad


def numpy_mask_gemm_shallow(theta: np.ndarray, x: np.ndarray, weights: np.ndarray, targets: np.ndarray, H: int,
                            chunk_elements: int = 1 << 21):
    """The textbook batched numpy forward and backward pass, in chunks of trajectories of ``chunk_elements``
    pre-activations."""
    n, (M, d) = theta.shape[0], x.shape
    f = targets.reshape(-1)
    risk, grad = np.empty(n), np.empty_like(theta)
    rows = max(1, chunk_elements // (M * H))
    for s in range(0, n, rows):
        th = theta[s : s + rows]
        T = th.shape[0]
        w = th[:, : H * d].reshape(T, H, d)
        b = th[:, H * d : H * d + H]
        v = th[:, H * d + H : H * d + 2 * H]
        c = th[:, -1]
        z = np.matmul(x, w.transpose(0, 2, 1)) + b[:, None, :]  # (T, M, H)
        a = np.maximum(z, 0.0)
        out = np.matmul(a, v[:, :, None])[:, :, 0] + c[:, None]
        r = out - f
        risk[s : s + T] = np.einsum("tm,m,tm->t", r, weights, r)
        delta = 2.0 * weights * r  # (T, M)
        grad[s : s + T, H * d + H : H * d + 2 * H] = np.matmul(delta[:, None, :], a)[:, 0]
        back = (z > 0) * delta[:, :, None] * v[:, None, :]  # (T, M, H)
        grad[s : s + T, : H * d] = np.matmul(back.transpose(0, 2, 1), x).reshape(T, H * d)
        grad[s : s + T, H * d : H * d + H] = back.sum(axis=1)
        grad[s : s + T, -1] = delta.sum(axis=1)
    return risk, grad


def torch_deep_peer(arch, x: np.ndarray, weights: np.ndarray, targets: np.ndarray):
    """A function ``theta -> (risk, G)`` for the deep net ``arch`` (biases everywhere, trained output) with torch
    autograd, float64, on one thread; ``None`` if torch is not installed. The trajectories are one batch
    (``torch.bmm`` over stacked weights): what a torch user would write to train many nets at once."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "softplus": torch.nn.functional.softplus}[arch.activation]
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    W = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float64))
    F = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float64).reshape(len(x), -1))
    layers = arch.layers

    def risk_and_grad(theta: np.ndarray):
        th = torch.from_numpy(np.ascontiguousarray(theta)).requires_grad_(True)
        T = th.shape[0]
        a = X.expand(T, *X.shape)
        for li, ls in enumerate(layers):
            w = th[:, ls.weight].reshape(T, ls.n_out, ls.n_in)
            a = torch.baddbmm(th[:, ls.bias][:, None, :], a, w.transpose(1, 2))
            if li < len(layers) - 1:
                a = act(a)
        r = a - F
        risk = torch.einsum("tmk,m,tmk->t", r, W, r)
        (g,) = torch.autograd.grad(risk.sum(), th)
        return risk.detach().numpy(), g.numpy()

    return risk_and_grad
