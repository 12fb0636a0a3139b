"""Initializations: the ``init`` dict and the initial parameters of a batch of trajectories.

Trajectory ``i`` of a study with seed ``seed`` draws from ``trajectory_rng(i, init_key(init, layout), seed)``
(``reluflow._keys``) and from nothing else: any trajectory can be recomputed alone, and cells that differ only in
their method (GD and GF, step sizes, stopping rules, monitors, analysis settings) or in anything else that leaves
the init and the parameter layout alone start from the same points (paired comparisons). Kinds (documented in
``docs/methods.md``)::

    {kind: normal, sigma: 1.0}                       iid N(0, sigma^2) for every parameter (the seeds' choice)
    {kind: scaled_normal, sigma: s | [s_1, ...] | fan_in, bias_sigma: same | s}
                                                     layer l's weights ~ N(0, s_l^2); fan_in: s_l = 1/sqrt(n_in)
    {kind: uniform, low: -1.0, high: 1.0}            iid U(low, high)
    {kind: perturbed, epsilon, center: [P numbers] | global_min}
                                                     center + epsilon N(0, I)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._keys import init_key, trajectory_rng

__all__ = ["DEFAULT_INIT", "INIT_KEYS", "global_min_center", "init_from_dict", "initialize"]

INIT_KEYS = {
    "normal": {"sigma"},
    "scaled_normal": {"sigma", "bias_sigma"},
    "uniform": {"low", "high"},
    "perturbed": {"epsilon", "center"},
}

#: the init of a study or ``simulate`` call that gives none (the seeds' choice)
DEFAULT_INIT: dict[str, Any] = {"kind": "normal"}


def _err(key: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"init.{key} = {value!r} is not allowed: expected {allowed}")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _positive(d: dict, key: str, default: float) -> float:
    value = d.get(key, default)
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise _err(key, value, "a finite number > 0")
    return float(value)


def init_from_dict(d: dict[str, Any] | None) -> dict[str, Any]:
    """Validate an ``init`` dict and return it normalized (defaults filled in; ``None`` means normal).

    Every bad key or value raises ``ValueError`` naming it. Whether a ``center`` list has length ``P`` and whether
    ``global_min`` applies is checked against the problem in ``initialize``.
    """
    if d is None:
        d = dict(DEFAULT_INIT)
    if not isinstance(d, dict):
        raise ValueError(f"init = {d!r} is not allowed: expected a mapping with a 'kind'")
    kind = d.get("kind")
    if not isinstance(kind, str) or kind not in INIT_KEYS:
        raise _err("kind", kind, f"one of {sorted(INIT_KEYS)}")
    unknown = sorted(set(d) - INIT_KEYS[kind] - {"kind"}, key=str)
    if unknown:
        raise ValueError(f"init has unknown key(s) {unknown} for kind {kind!r}: allowed keys are "
                         f"{sorted(INIT_KEYS[kind] | {'kind'})}")
    if kind == "normal":
        return {"kind": kind, "sigma": _positive(d, "sigma", 1.0)}
    if kind == "scaled_normal":
        sigma = d.get("sigma", "fan_in")
        if isinstance(sigma, list | tuple):
            if len(sigma) == 0 or not all(_is_number(s) and math.isfinite(s) and s > 0 for s in sigma):
                raise _err("sigma", sigma, "'fan_in', a number > 0, or a list of numbers > 0 (one per layer)")
            sigma = [float(s) for s in sigma]
        elif sigma != "fan_in":
            sigma = _positive(d, "sigma", 1.0)
        bias_sigma = d.get("bias_sigma", "same")
        if bias_sigma != "same":
            if not _is_number(bias_sigma) or not math.isfinite(bias_sigma) or bias_sigma < 0:
                raise _err("bias_sigma", bias_sigma, "'same' (the layer's weight std) or a number >= 0")
            bias_sigma = float(bias_sigma)
        return {"kind": kind, "sigma": sigma, "bias_sigma": bias_sigma}
    if kind == "uniform":
        low, high = d.get("low", -1.0), d.get("high", 1.0)
        for key, v in (("low", low), ("high", high)):
            if not _is_number(v) or not math.isfinite(v):
                raise _err(key, v, "a finite number")
        if not low < high:
            raise _err("low", low, f"low < high (high = {high})")
        return {"kind": kind, "low": float(low), "high": float(high)}
    # perturbed
    if "epsilon" not in d:
        raise ValueError("init.epsilon is missing: kind 'perturbed' needs epsilon (>= 0) and center")
    eps = d["epsilon"]
    if not _is_number(eps) or not math.isfinite(eps) or eps < 0:
        raise _err("epsilon", eps, "a finite number >= 0")
    center = d.get("center", "global_min")
    if isinstance(center, list | tuple | np.ndarray):
        arr = np.asarray(center, dtype=float) if all(_is_number(c) for c in np.ravel(center)) else None
        if arr is None or arr.ndim != 1 or len(arr) == 0 or not np.all(np.isfinite(arr)):
            raise _err("center", center, "'global_min' or a flat list of P finite numbers")
        center = arr.tolist()
    elif center != "global_min":
        raise _err("center", center, "'global_min' or a flat list of P finite numbers")
    return {"kind": kind, "epsilon": float(eps), "center": center}


def _layer_stds(arch: Any, init: dict[str, Any]) -> np.ndarray:
    """Per-parameter standard deviations ``(P,)`` of a ``scaled_normal`` init."""
    trainable = [ls for ls in arch.layers if ls.weight is not None]
    sigma = init["sigma"]
    if isinstance(sigma, list) and len(sigma) != len(trainable):
        raise _err("sigma", sigma, f"{len(trainable)} values, one per trained layer of this network")
    std = np.empty(arch.n_params)
    for i, ls in enumerate(trainable):
        s = 1.0 / math.sqrt(ls.n_in) if sigma == "fan_in" else (sigma[i] if isinstance(sigma, list) else sigma)
        std[ls.weight] = s
        if ls.bias is not None:
            std[ls.bias] = s if init["bias_sigma"] == "same" else init["bias_sigma"]
    return std


def initialize(problem: Any, init: dict[str, Any] | None, trajectory_ids: np.ndarray, seed: int) -> np.ndarray:
    """Initial parameters ``(T, P)`` of trajectories ``trajectory_ids`` ``(T,)``.

    Row ``i`` depends only on ``trajectory_ids[i]``, ``seed``, the (normalized) init and the network's parameter
    layout, never on the other rows, the method or the rest of the problem (except through a perturbed init's
    ``global_min`` center, a function of the target).
    """
    init = init_from_dict(init)
    arch = problem.architecture
    key = init_key(init, arch.layout())
    n_par = arch.n_params
    ids = np.asarray(trajectory_ids, dtype=np.int64).reshape(-1)
    kind = init["kind"]
    if kind == "perturbed":
        if init["center"] == "global_min":
            center = global_min_center(problem)
        else:
            center = np.asarray(init["center"], dtype=float)
            if center.shape != (n_par,):
                raise _err("center", f"a list of {len(center)} numbers",
                           f"{n_par} numbers, the flat parameter layout of this network")
    elif kind == "scaled_normal":
        std = _layer_stds(arch, init)
    theta = np.empty((len(ids), n_par))
    for row, i in enumerate(ids):
        rng = trajectory_rng(int(i), key, seed)
        if kind == "normal":
            theta[row] = init["sigma"] * rng.standard_normal(n_par)
        elif kind == "scaled_normal":
            theta[row] = std * rng.standard_normal(n_par)
        elif kind == "uniform":
            theta[row] = rng.uniform(init["low"], init["high"], n_par)
        else:
            theta[row] = center + init["epsilon"] * rng.standard_normal(n_par)
    return theta


def _interval(measure: Any) -> tuple[float, float] | None:
    iv = measure.interval
    if iv is not None:
        return iv
    points = getattr(measure, "points", None)  # an empirical measure on the line: the hull of its points
    if points is not None and np.ndim(points) == 2 and np.shape(points)[1] == 1:
        return float(np.min(points)), float(np.max(points))
    return None


def global_min_center(problem: Any) -> np.ndarray:
    """A zero-risk parameter vector ``(P,)`` for a continuous piecewise affine 1D target, shallow ReLU net.

    On the measure's interval ``[alpha, beta]`` write ``f(x) = f(alpha) + s_0 (x - alpha) + sum_k Δs_k (x - kappa_k)_+``
    over the kinks ``kappa_k`` in ``(alpha, beta)`` where the slope jumps by ``Δs_k``. Unit 0 carries the first
    segment with its kink at ``alpha - (beta - alpha)``, left of the interval, so that it stays active on the
    whole interval under a small perturbation; unit ``k`` has its kink at ``kappa_k``; the output bias absorbs
    the constant. Each unit carrying a slope is rescaled to balance, ``|v_j| = |(w_j, b_j)|``
    (``B_j = 0``; ReLU is positively homogeneous, so the function does not change). Units beyond ``K + 1`` copy
    unit 0's first layer with ``v_j = 0``: they are alive but contribute nothing.
    """
    arch = problem.architecture
    if not (arch.input_dim == 1 and arch.is_shallow and arch.activation == "relu"):
        raise ValueError(
            "init.center = 'global_min' is not allowed for this network: it needs a shallow relu network with "
            f"input_dim 1 (got input_dim {arch.input_dim}, widths {list(arch.widths)}, activation "
            f"{arch.activation!r})")
    if not all(arch.bias) or arch.fixed_output is not None:
        raise ValueError(
            "init.center = 'global_min' is not allowed for this network: it needs trained hidden and output "
            f"biases and a trained output layer (got bias {list(arch.bias)}, fixed_output {arch.fixed_output!r})")
    interval = _interval(problem.measure)
    if interval is None:
        raise ValueError("init.center = 'global_min' is not allowed for this measure: it needs a 1D measure on "
                         f"an interval (got {problem.measure.kind!r})")
    alpha, beta = interval
    pp = problem.target.piecewise_polynomial()
    if pp is None:
        raise ValueError("init.center = 'global_min' is not allowed for this target: it needs a continuous "
                         f"piecewise affine 1D target (got {problem.target.to_dict().get('kind')!r})")
    bps = np.asarray(pp.breakpoints, dtype=float)
    coefs = np.asarray(pp.coefficients, dtype=float)  # (K, k, n+1)
    # the pieces that meet (alpha, beta)
    lo = int(np.searchsorted(bps, alpha, side="right"))
    hi = int(np.searchsorted(bps, beta, side="left"))
    pieces = range(lo, hi + 1)
    scale = max(1.0, float(np.max(np.abs(coefs[list(pieces)]))))
    if coefs.shape[2] > 2 and np.any(np.abs(coefs[list(pieces), :, 2:]) > 1e-12 * scale):
        raise ValueError("init.center = 'global_min' is not allowed for this target: it is not piecewise affine "
                         f"on [{alpha}, {beta}] (it has pieces of degree > 1)")
    intercept = coefs[:, :, 0]
    slope = coefs[:, :, 1] if coefs.shape[2] > 1 else np.zeros_like(intercept)
    kinks, jumps = [], []
    for p in range(lo, hi):
        x = bps[p]
        left, right = intercept[p] + slope[p] * x, intercept[p + 1] + slope[p + 1] * x
        if np.any(np.abs(left - right) > 1e-10 * max(scale, abs(x) * scale)):
            raise ValueError(f"init.center = 'global_min' is not allowed for this target: it jumps at x = {x} "
                             "(it must be continuous)")
        d = slope[p + 1] - slope[p]
        if np.any(np.abs(d) > 1e-13 * scale):  # a knot where the slope does not change is no kink
            kinks.append(x)
            jumps.append(d)
    width = arch.widths[0]
    need = len(kinks) + 1
    if width < need:
        raise ValueError(
            f"init.center = 'global_min' is not allowed for network.widths = {list(arch.widths)}: this target has "
            f"{len(kinks)} kink(s) in ({alpha}, {beta}), so an exact fit needs at least {need} hidden units")
    k_out = arch.output_dim
    s0 = slope[lo]
    kappa0 = alpha - (beta - alpha)
    w = np.ones(width)
    b = np.full(width, -kappa0)
    v = np.zeros((k_out, width))
    v[:, 0] = s0
    for j, (x, d) in enumerate(zip(kinks, jumps, strict=True), start=1):
        b[j] = -x
        v[:, j] = d
    c = intercept[lo] + slope[lo] * kappa0  # f(kappa0) along the first piece's line
    # balance each unit that carries a slope: (w, b, v) -> (lam w, lam b, v / lam), lam^4 = |v|^2 / (w^2 + b^2)
    vn = np.sqrt(np.sum(v * v, axis=0))
    wn = np.sqrt(w * w + b * b)
    lam = np.where(vn > 0, np.sqrt(np.where(vn > 0, vn, 1.0) / wn), 1.0)
    w, b, v = w * lam, b * lam, v / lam[None, :]
    theta = np.empty((1, arch.n_params))
    (wv, bv), (vv, cv) = arch.unflatten(theta)
    wv[0, :, 0], bv[0], vv[0], cv[0] = w, b, v, c
    return theta[0]
