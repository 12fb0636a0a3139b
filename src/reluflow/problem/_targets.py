"""Target functions ``f: R^d -> R^k``.

Every target evaluates ``f(x)`` for points ``(M, d)`` as ``(M, k)``. One-dimensional targets that are piecewise
polynomial (constant, affine, piecewise affine, polynomial, piecewise polynomial, ``abs``, a 1D shallow ReLU
teacher) also return that exact representation from ``piecewise_polynomial()``, which the ``exact1d`` backend uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._limits import LIMITS
from .._numbers import is_real, real_array
from ..network._architecture import Architecture, forward

__all__ = [
    "PiecewisePolynomial",
    "Target",
    "Constant",
    "Affine",
    "PiecewisePolynomialTarget",
    "NamedFunction",
    "Teacher",
    "FUNCTIONS",
    "target_from_dict",
]


def _err(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"target.{field_name} = {value!r} is not allowed: expected {allowed}")


@dataclass(frozen=True, eq=False)
class PiecewisePolynomial:
    """A 1D function ``R -> R^k``, polynomial on each piece.

    ``breakpoints`` ``(K-1,)`` sorted interior breakpoints; ``coefficients`` ``(K, k, n+1)`` in ascending powers
    of ``x`` (absolute, not shifted). Piece ``i`` covers ``[breakpoints[i-1], breakpoints[i]]``, the first and
    last pieces extend to ``-inf`` and ``+inf``.
    """

    breakpoints: np.ndarray
    coefficients: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float).reshape(-1)
        piece = np.searchsorted(self.breakpoints, x, side="right")
        c = self.coefficients[piece]  # (M, k, n+1)
        powers = x[:, None] ** np.arange(c.shape[-1])[None, :]
        return np.einsum("mkn,mn->mk", c, powers)

    @property
    def output_dim(self) -> int:
        return self.coefficients.shape[1]


class Target:
    """Base class for targets. ``input_dim`` is ``None`` when the target accepts any dimension."""

    output_dim: int = 1
    input_dim: int | None = None
    #: the network of a teacher target, ``None`` for every other target (the ``gaussian`` backend reads it)
    arch: Architecture | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def piecewise_polynomial(self) -> PiecewisePolynomial | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


def _floats(value: Any, name: str, allowed: str) -> np.ndarray:
    """``value`` as a float array; text, true/false or null anywhere in it is refused (not read as a number)."""
    arr = real_array(value)
    if arr is None:
        raise _err(name, value, allowed)
    return arr


def _check_degree(name: str, n_coefficients: int) -> None:
    if n_coefficients > LIMITS["degree"] + 1:
        raise _err(name, f"a list of {n_coefficients} numbers", f"at most {LIMITS['degree'] + 1} coefficients "
                   f"(degree <= {LIMITS['degree']}, LIMITS['degree'], docs/running.md)")


def _as_vector(value: Any, name: str) -> np.ndarray:
    allowed = "a finite number or a list of finite numbers (one per output)"
    arr = np.atleast_1d(_floats(value, name, allowed))
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise _err(name, value, "a finite number or a list of finite numbers (one per output)")
    return arr


class Constant(Target):
    def __init__(self, value: Any) -> None:
        self.value = _as_vector(value, "value")
        self.output_dim = len(self.value)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.value, (len(x), self.output_dim)).copy()

    def piecewise_polynomial(self) -> PiecewisePolynomial:
        return PiecewisePolynomial(np.empty(0), self.value[None, :, None].copy())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "constant", "value": self.value.tolist()}


class Affine(Target):
    """``f(x) = A x + c`` with ``A`` ``(k, d)`` (a scalar or a list is read as one output row)."""

    def __init__(self, slope: Any, intercept: Any = 0.0) -> None:
        a = _floats(slope, "slope", "a number, a list (one output) or a k x d matrix of finite numbers")
        if a.ndim == 0:
            a = a.reshape(1, 1)
        elif a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or not np.all(np.isfinite(a)):
            raise _err("slope", slope, "a number, a list (one output) or a k x d matrix of finite numbers")
        c = _as_vector(intercept, "intercept")
        if len(c) == 1 and a.shape[0] > 1:
            c = np.repeat(c, a.shape[0])
        if len(c) != a.shape[0]:
            raise _err("intercept", intercept, f"{a.shape[0]} values, one per row of slope")
        self.slope, self.intercept = a, c
        self.output_dim, self.input_dim = a.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.slope.T + self.intercept

    def piecewise_polynomial(self) -> PiecewisePolynomial | None:
        if self.input_dim != 1:
            return None
        coefs = np.stack([self.intercept, self.slope[:, 0]], axis=-1)[None]  # (1, k, 2)
        return PiecewisePolynomial(np.empty(0), coefs)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "affine", "slope": self.slope.tolist(), "intercept": self.intercept.tolist()}


class PiecewisePolynomialTarget(Target):
    """A 1D piecewise polynomial target (``piecewise_affine`` and ``polynomial`` are special cases)."""

    input_dim = 1

    def __init__(self, pp: PiecewisePolynomial, spec: dict[str, Any]) -> None:
        self.pp = pp
        self.output_dim = pp.output_dim
        self._spec = spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.pp(np.asarray(x)[:, 0])

    def piecewise_polynomial(self) -> PiecewisePolynomial:
        return self.pp

    def to_dict(self) -> dict[str, Any]:
        return dict(self._spec)

    @classmethod
    def piecewise_affine(cls, knots: Any, values: Any) -> PiecewisePolynomialTarget:
        """Continuous, affine between ``knots``, linearly extrapolated beyond the end knots."""
        t = _floats(knots, "knots", "at least 2 strictly increasing finite numbers")
        if t.ndim != 1 or len(t) < 2 or not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
            raise _err("knots", knots, "at least 2 strictly increasing finite numbers")
        allowed = f"{len(t)} finite values (or rows of k values), one per knot (knots has {len(t)})"
        y = _floats(values, "values", allowed)
        if y.ndim == 1:
            y = y[:, None]
        if y.ndim != 2 or len(y) != len(t) or not np.all(np.isfinite(y)):
            raise _err("values", values, allowed)
        slopes = np.diff(y, axis=0) / np.diff(t)[:, None]  # (K, k)
        intercepts = y[:-1] - slopes * t[:-1, None]
        coefs = np.stack([intercepts, slopes], axis=-1)  # (K, k, 2)
        pp = PiecewisePolynomial(t[1:-1].copy(), coefs)
        return cls(pp, {"kind": "piecewise_affine", "knots": t.tolist(), "values": np.squeeze(y, -1).tolist()
                        if y.shape[1] == 1 else y.tolist()})

    @classmethod
    def polynomial(cls, coefficients: Any) -> PiecewisePolynomialTarget:
        allowed = "a list of finite numbers (ascending powers), or one per output"
        c = _floats(coefficients, "coefficients", allowed)
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2 or c.shape[1] == 0 or not np.all(np.isfinite(c)):
            raise _err("coefficients", coefficients, allowed)
        _check_degree("coefficients", c.shape[1])
        return cls(PiecewisePolynomial(np.empty(0), c[None]), {"kind": "polynomial", "coefficients": c.tolist()})

    @classmethod
    def piecewise(cls, knots: Any, coefficients: Any) -> PiecewisePolynomialTarget:
        """Polynomial on ``[knots[i], knots[i+1]]``; the end pieces extend beyond the end knots."""
        t = _floats(knots, "knots", "at least 2 strictly increasing finite numbers")
        if t.ndim != 1 or len(t) < 2 or not np.all(np.isfinite(t)) or not np.all(np.diff(t) > 0):
            raise _err("knots", knots, "at least 2 strictly increasing finite numbers")
        if not isinstance(coefficients, list | tuple | np.ndarray) or len(coefficients) != len(t) - 1:
            raise _err("coefficients", coefficients, f"{len(t) - 1} coefficient lists, one per piece between the "
                       f"{len(t)} knots")
        pieces = []
        for i, c in enumerate(coefficients):
            c = _floats(c, f"coefficients[{i}]", "a list of finite numbers (ascending powers)")
            if c.ndim == 1:
                c = c[None, :]
            if c.ndim != 2 or c.shape[1] == 0 or not np.all(np.isfinite(c)):
                raise _err(f"coefficients[{i}]", coefficients[i], "a list of finite numbers (ascending powers)")
            _check_degree(f"coefficients[{i}]", c.shape[1])
            pieces.append(c)
        k = pieces[0].shape[0]
        if any(p.shape[0] != k for p in pieces):
            raise _err("coefficients", coefficients, "the same number of outputs on every piece")
        degree = max(p.shape[1] for p in pieces)
        coefs = np.zeros((len(pieces), k, degree))
        for i, p in enumerate(pieces):
            coefs[i, :, : p.shape[1]] = p
        spec = {"kind": "piecewise_polynomial", "knots": t.tolist(), "coefficients": coefs.tolist()}
        return cls(PiecewisePolynomial(t[1:-1].copy(), coefs), spec)


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "abs": np.abs,
    "sin": np.sin,
    "cos": np.cos,
    "exp": np.exp,
    "tanh": np.tanh,
}


class NamedFunction(Target):
    """``f(x) = fn(scale * (u . x) + shift)`` for a registered ``fn``; ``u`` defaults to ``e_1``."""

    def __init__(self, name: str, scale: float = 1.0, shift: float = 0.0, direction: Any = None) -> None:
        if not isinstance(name, str) or name not in FUNCTIONS:
            raise _err("name", name, f"one of {sorted(FUNCTIONS)}")
        for key, value in (("scale", scale), ("shift", shift)):
            if not is_real(value) or not np.isfinite(value):
                raise _err(key, value, "a finite number")
        self.name, self.scale, self.shift = name, float(scale), float(shift)
        self.direction = None if direction is None else _as_vector(direction, "direction")
        if self.direction is not None:
            self.input_dim = len(self.direction)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        u = x[:, 0] if self.direction is None else x @ self.direction
        return FUNCTIONS[self.name](self.scale * u + self.shift)[:, None]

    def piecewise_polynomial(self) -> PiecewisePolynomial | None:
        if self.name != "abs" or (self.direction is not None and len(self.direction) != 1):
            return None
        s = self.scale * (1.0 if self.direction is None else self.direction[0])
        if s == 0:
            return PiecewisePolynomial(np.empty(0), np.array([[[abs(self.shift)]]]))
        # |s x + c| = -(s x + c) left of the kink -c/s when s > 0, and the reverse when s < 0
        sign = np.sign(s)
        left = -sign * np.array([self.shift, s])
        return PiecewisePolynomial(np.array([-self.shift / s]), np.stack([left, -left])[:, None, :])

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": "function", "name": self.name, "scale": self.scale, "shift": self.shift}
        if self.direction is not None:
            d["direction"] = self.direction.tolist()
        return d


class Teacher(Target):
    """A fixed network ``f = N_{theta*}`` (explicit parameters, or random from its own seed)."""

    def __init__(self, arch: Architecture, theta: np.ndarray, spec: dict[str, Any]) -> None:
        self.arch = arch
        self.theta = np.asarray(theta, dtype=float).reshape(1, arch.n_params)
        self.output_dim, self.input_dim = arch.output_dim, arch.input_dim
        self._spec = spec

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return forward(self.arch, self.theta, np.asarray(x, dtype=float))[0]

    def piecewise_polynomial(self) -> PiecewisePolynomial | None:
        arch = self.arch
        if arch.input_dim != 1 or not arch.is_shallow or arch.activation != "relu":
            return None
        (w, b), (v, c) = arch.unflatten(self.theta)
        w, v = w[0, :, 0], v[0]  # (H,), (k, H)
        b = np.zeros_like(w) if b is None else b[0]
        c = np.zeros(arch.output_dim) if c is None else c[0]
        moving = w != 0
        kinks = np.unique(-b[moving] / w[moving])
        # evaluate the slope/intercept on each piece at an interior probe point
        probes = np.concatenate([kinks - 1.0, kinks[-1:] + 1.0]) if len(kinks) else np.array([0.0])
        if len(kinks) > 1:
            probes[1:-1] = 0.5 * (kinks[:-1] + kinks[1:])
        active = (w[None, :] * probes[:, None] + b[None, :]) > 0  # (K, H)
        slope = (active * w[None, :]) @ v.T  # (K, k)
        intercept = (active * b[None, :]) @ v.T + c[None, :]
        return PiecewisePolynomial(kinks, np.stack([intercept, slope], axis=-1))

    def first_layer(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(W* (n, d), b* (n,) or None)`` of a shallow teacher."""
        w, b = self.arch.unflatten(self.theta)[0]
        return w[0], None if b is None else b[0]

    def output_layer(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(a* (k, n), c* (k,) or None)`` of a shallow teacher (a fixed output layer is materialized)."""
        w, b = self.arch.unflatten(self.theta)[-1]
        return np.array(w[0]), None if b is None else b[0]

    def to_dict(self) -> dict[str, Any]:
        return dict(self._spec)


TEACHER_KEYS = {"kind", "widths", "width", "activation", "bias", "output_dim", "fixed_output", "negative_slope",
                "seed", "first_layer", "parameters"}
FIRST_LAYER = ("normal", "unit_vectors", "orthonormal")


def _teacher(spec: dict[str, Any], input_dim: int) -> Teacher:
    unknown = sorted(set(spec) - TEACHER_KEYS, key=str)
    if unknown:
        raise ValueError(f"target has unknown key(s) {unknown} for kind 'teacher': allowed keys are "
                         f"{sorted(TEACHER_KEYS)}")
    net = {k: spec[k] for k in ("widths", "width", "activation", "bias", "output_dim", "fixed_output",
                                "negative_slope") if k in spec}
    try:
        arch = Architecture.from_dict({"input_dim": input_dim, **net})
    except ValueError as exc:
        raise ValueError(f"target (teacher): {str(exc).replace('network.', 'target.')}") from None
    if arch.input_dim == 1 and arch.is_shallow and arch.activation == "relu" \
            and arch.widths[0] > LIMITS["teacher_width_1d"]:
        raise _err("widths", list(arch.widths), f"at most {LIMITS['teacher_width_1d']} units for a 1D shallow ReLU "
                   "teacher (LIMITS['teacher_width_1d'], docs/running.md: its exact pieces take a kinks x units "
                   "table)")
    if "parameters" in spec:
        allowed = (f"{arch.n_params} finite values in the flat layout of a {input_dim}-input teacher with widths "
                   f"{list(arch.widths)}")
        theta = real_array(spec["parameters"])
        if theta is None:
            raise _err("parameters", "a list with entries that are not numbers", allowed)
        theta = theta.ravel()
        if theta.shape != (arch.n_params,) or not np.all(np.isfinite(theta)):
            raise _err("parameters", f"{theta.size} values", allowed)
        return Teacher(arch, theta, dict(spec))
    seed = spec.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _err("seed", seed, "a non-negative integer (or give 'parameters')")
    rng = np.random.default_rng([seed, 0x7EAC])  # the teacher's own key, never shared with trajectories
    theta = rng.standard_normal((1, arch.n_params))
    first = spec.get("first_layer", "normal")
    if not isinstance(first, str) or first not in FIRST_LAYER:
        raise _err("first_layer", first, f"one of {list(FIRST_LAYER)}")
    if first != "normal":
        n = arch.widths[0]
        if n > input_dim:
            raise _err("first_layer", first,
                       f"at most input_dim = {input_dim} first-layer units (target.widths gives {n})")
        if first == "unit_vectors":
            rows = np.eye(input_dim)[:n]
        else:
            q, r = np.linalg.qr(rng.standard_normal((input_dim, n)))
            rows = (q * np.sign(np.diag(r))).T
        w = arch.unflatten(theta)[0][0]
        w[0] = rows
    return Teacher(arch, theta[0], dict(spec))


TARGET_KEYS = {
    "constant": {"value"},
    "affine": {"slope", "intercept"},
    "piecewise_affine": {"knots", "values"},
    "polynomial": {"coefficients"},
    "piecewise_polynomial": {"knots", "coefficients"},
    "function": {"name", "scale", "shift", "direction"},
    "teacher": TEACHER_KEYS - {"kind"},
}


def target_from_dict(spec: dict[str, Any], input_dim: int) -> Target:
    """Build a target from its config shape, e.g. ``{"kind": "piecewise_affine", "knots": [...], ...}``."""
    if not isinstance(spec, dict):
        raise ValueError(f"target = {spec!r} is not allowed: expected a mapping with a 'kind'")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in TARGET_KEYS:
        raise _err("kind", kind, f"one of {sorted(TARGET_KEYS)}")
    unknown = sorted(set(spec) - TARGET_KEYS[kind] - {"kind"}, key=str)
    if unknown:
        raise ValueError(
            f"target has unknown key(s) {unknown} for kind {kind!r}: allowed keys are {sorted(TARGET_KEYS[kind])}"
        )
    required = {"piecewise_affine": ("knots", "values"), "polynomial": ("coefficients",),
                "piecewise_polynomial": ("knots", "coefficients"), "function": ("name",),
                "constant": ("value",), "affine": ("slope",)}
    for key in required.get(kind, ()):
        if key not in spec:
            raise ValueError(f"target.{key} is missing: kind {kind!r} needs {list(required[kind])}")
    # finite data can still give pieces that are not (a slope between two knots overflows, a kink at -shift / scale
    # with a tiny scale): the exact backend would compute with inf and NaN. Refused below, so no warnings here.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        target = _build(kind, spec, input_dim)
        pp = target.piecewise_polynomial()
    if pp is not None and not (np.all(np.isfinite(pp.breakpoints)) and np.all(np.isfinite(pp.coefficients))):
        keys = "/".join(sorted(TARGET_KEYS[kind] & set(spec))) or "kind"
        raise ValueError(f"target.{keys} is not allowed: these numbers give the {kind} target pieces with infinite "
                         "breakpoints, slopes or coefficients in float64: expected smaller values (or larger "
                         "distances between knots, a larger scale)")
    return target


def _build(kind: str, spec: dict[str, Any], input_dim: int) -> Target:
    if kind == "constant":
        return Constant(spec["value"])
    if kind == "affine":
        return Affine(spec["slope"], spec.get("intercept", 0.0))
    if kind == "piecewise_affine":
        return PiecewisePolynomialTarget.piecewise_affine(spec["knots"], spec["values"])
    if kind == "polynomial":
        return PiecewisePolynomialTarget.polynomial(spec["coefficients"])
    if kind == "piecewise_polynomial":
        return PiecewisePolynomialTarget.piecewise(spec["knots"], spec["coefficients"])
    if kind == "function":
        return NamedFunction(spec["name"], spec.get("scale", 1.0), spec.get("shift", 0.0), spec.get("direction"))
    return _teacher(spec, input_dim)
