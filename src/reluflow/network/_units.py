"""Per-unit monitors of hidden units: pure functions ``(arch, theta (T, P)) -> (T, n_units)``.

- ``unit_norms``: ``|w_j| + |b_j|`` for the units of the first hidden layer (SCIENCE.md C8), with ``|w_j|`` the
  Euclidean norm of unit ``j``'s incoming weight row and ``b_j = 0`` when the layer has no bias.
- ``unit_balance``: ``B_j = |v_j|^2 - |w_j|^2 - b_j^2`` for every hidden unit of every hidden layer (SCIENCE.md
  C10), ``v_j`` being column ``j`` of the next layer's weight matrix (the unit's outgoing weights) and ``w_j``,
  ``b_j`` its incoming weights and bias. For positively homogeneous activations (relu, leaky_relu) ``B_j`` is
  conserved along gradient flow; for the others it is still computed but nothing is conserved. A unit whose
  outgoing layer is not trained (``fixed_output``) has no conservation law either, since its ``v_j`` cannot move
  to compensate: its column is NaN.

Each row is computed from that row alone (reductions run over unit-local axes only), so results do not depend on
the batch a row is evaluated in.
"""

from __future__ import annotations

import numpy as np

from ._architecture import Architecture

__all__ = ["balance_defined", "unit_balance", "unit_norms"]


def unit_norms(arch: Architecture, theta: np.ndarray) -> np.ndarray:
    """``|w_j|_2 + |b_j|`` of the first hidden layer's units, shape ``(T, h_1)``."""
    # the first layer's views alone: unflatten would build every layer's (a fixed output layer broadcast), which
    # cost more than the norms at every step of a run with few live rows
    layer = arch.layers[0]
    theta = np.asarray(theta)
    if layer.weight is None:  # no hidden layer and a fixed output: the constant broadcast, as unflatten gives it
        w = arch.unflatten(theta)[0][0]
        return np.broadcast_to(np.sqrt(np.sum(w * w, axis=2)), (theta.shape[0], layer.n_out))
    w = theta[:, layer.weight].reshape(theta.shape[0], layer.n_out, layer.n_in)  # (T, h_1, d)
    norms = np.sqrt(np.sum(w * w, axis=2))
    if layer.bias is not None:
        norms = norms + np.abs(theta[:, layer.bias])
    return norms


def balance_defined(arch: Architecture) -> np.ndarray:
    """Boolean mask ``(sum(widths),)``: the hidden units whose outgoing weights are trained (``B_j`` is
    meaningful). The units are ordered layer by layer, as in ``unit_balance``."""
    out = []
    for layer, width in enumerate(arch.widths):
        trained = arch.layers[layer + 1].weight is not None
        out.append(np.full(width, trained))
    return np.concatenate(out)


def unit_balance(arch: Architecture, theta: np.ndarray) -> np.ndarray:
    """Balance ``B_j = |v_j|^2 - |w_j|^2 - b_j^2`` of every hidden unit, shape ``(T, sum(widths))``.

    Columns are the units of hidden layer 1, then layer 2, ...; NaN where the outgoing layer is fixed.
    """
    theta = np.asarray(theta)
    views = arch.unflatten(theta)
    n = theta.shape[0]
    cols = []
    for layer in range(arch.n_hidden_layers):
        w, b = views[layer]  # (T, h, n_in), (T, h)
        incoming = np.sum(w * w, axis=2)
        if b is not None:
            incoming = incoming + b * b
        if arch.layers[layer + 1].weight is None:
            cols.append(np.full((n, w.shape[1]), np.nan, dtype=theta.dtype))
            continue
        v = views[layer + 1][0]  # (T, n_next, h): column j = outgoing weights of unit j
        outgoing = np.sum(v * v, axis=1)
        cols.append(outgoing - incoming)
    return np.concatenate(cols, axis=1)
