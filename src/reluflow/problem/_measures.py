"""Input measures ``mu`` and their quadrature rules.

Every measure has ``dim`` and ``quadrature(n_points, rng)`` returning points ``(M, d)`` and positive weights
``(M,)`` summing to one (the rule integrates against ``mu``). One-dimensional measures on an interval also expose
``interval`` and ``density_pieces()`` for the exact backend.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.polynomial import polynomial as npoly

from .._limits import LIMITS
from .._numbers import is_real, real_array

# scipy is imported where a rule is built: importing scipy.stats costs ~1 s, which every pipeline job and dask
# worker would pay on start-up.

__all__ = [
    "Measure",
    "Uniform",
    "PiecewisePolynomialDensity",
    "Gaussian",
    "Empirical",
    "file_sha256",
    "measure_from_dict",
    "MEASURES",
]

# Above this dimension tensor-product rules get too coarse per axis; scrambled Sobol points take over.
TENSOR_RULE_MAX_DIM = 3
# Gauss–Legendre nodes per panel of the composite 1D rule. Low order on many panels, because ReLU kinks make
# the integrand only piecewise smooth.
NODES_PER_PANEL = 4


def _err(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"measure.{field_name} = {value!r} is not allowed: expected {allowed}")


def _check_dim(dim: Any) -> None:
    if not isinstance(dim, int | np.integer) or isinstance(dim, bool) or dim < 1:
        raise _err("dim", dim, "an integer >= 1")


def _number(args: dict[str, Any], key: str, default: float) -> float:
    """``args[key]`` as a float: a number, not text or true/false (``float("0.5")`` would take text)."""
    value = args.get(key, default)
    if not is_real(value):
        raise _err(key, value, "a finite number")
    return float(value)


def composite_gauss_legendre(a: float, b: float, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss–Legendre rule on ``[a, b]``: ``n_points`` nodes ``(M,)`` and weights summing to ``b - a``."""
    from scipy import special

    order = min(NODES_PER_PANEL, n_points)
    n_panels = max(1, n_points // order)
    nodes, wts = special.roots_legendre(order)
    edges = np.linspace(a, b, n_panels + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    x = (mid[:, None] + half[:, None] * nodes[None, :]).ravel()
    w = (half[:, None] * wts[None, :]).ravel()
    return x, w


def _tensor(points_1d: np.ndarray, weights_1d: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*([points_1d] * dim), indexing="ij")
    wgrids = np.meshgrid(*([weights_1d] * dim), indexing="ij")
    x = np.stack([g.ravel() for g in grids], axis=1)
    w = np.prod(np.stack([g.ravel() for g in wgrids], axis=1), axis=1)
    return x, w


# the dimensions scipy's Sobol sequence (Joe & Kuo direction numbers) covers
SOBOL_MAX_DIM = 21201


def _sobol(dim: int, n_points: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.stats import qmc

    if dim > SOBOL_MAX_DIM:
        raise _err("dim", dim, f"at most {SOBOL_MAX_DIM} (network.input_dim) for quadrature points: the dimensions "
                   "scipy's Sobol sequence covers")
    sampler = qmc.Sobol(d=dim, scramble=True, seed=rng)
    m = int(np.ceil(np.log2(max(n_points, 2))))
    # Sobol balance properties hold for powers of two; truncate after drawing 2^m.
    return sampler.random_base2(m)[:n_points]


class Measure:
    """Base class: a probability measure on ``R^d``."""

    dim: int
    kind: str

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def interval(self) -> tuple[float, float] | None:
        """The support ``[alpha, beta]`` of a 1D measure with a piecewise polynomial density, else ``None``."""
        return None

    def density_pieces(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(knots (K+1,), coefficients (K, n+1))``: the density on each piece, ascending powers of ``x``."""
        return None

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Uniform(Measure):
    """Uniform on ``[low, high]^dim`` (``dim = 1``: an interval)."""

    low: float = 0.0
    high: float = 1.0
    dim: int = 1
    kind: str = field(default="uniform", init=False)

    def __post_init__(self) -> None:
        for key, value in (("low", self.low), ("high", self.high)):
            if not is_real(value) or not np.isfinite(value):
                raise _err(key, value, "a finite number")
        if not self.low < self.high:
            raise _err("low", self.low, f"low < high (high = {self.high})")
        _check_dim(self.dim)
        width = float(self.high) - float(self.low)  # the density is 1 / width^dim: finite and > 0 in float64
        if not (np.isfinite(width) and abs(self.dim * math.log(width)) < 700):
            raise _err("low/high", (self.low, self.high), f"an interval whose length {width:.3g} gives a density "
                       f"1 / length^{self.dim} that float64 can hold")

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        volume = (self.high - self.low) ** self.dim
        if self.dim <= TENSOR_RULE_MAX_DIM:
            per_axis = max(1, int(round(n_points ** (1.0 / self.dim))))
            x1, w1 = composite_gauss_legendre(self.low, self.high, per_axis)
            x, w = _tensor(x1, w1, self.dim)
            return x, w / volume
        u = _sobol(self.dim, n_points, _require_rng(rng, "uniform"))
        return self.low + (self.high - self.low) * u, np.full(len(u), 1.0 / len(u))

    @property
    def interval(self) -> tuple[float, float] | None:
        return (float(self.low), float(self.high)) if self.dim == 1 else None

    def density_pieces(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.dim != 1:
            return None
        return np.array([self.low, self.high], float), np.array([[1.0 / (self.high - self.low)]])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "uniform", "low": self.low, "high": self.high, "dim": self.dim}


@dataclass(frozen=True, eq=False)
class PiecewisePolynomialDensity(Measure):
    """A density on ``[knots[0], knots[-1]]``, polynomial on each piece (coefficients in ascending powers of x)."""

    knots: np.ndarray
    coefficients: np.ndarray
    normalize: bool = False
    dim: int = field(default=1, init=False)
    kind: str = field(default="piecewise_polynomial", init=False)

    def __post_init__(self) -> None:
        knots = real_array(self.knots)
        if knots is None or knots.ndim != 1 or len(knots) < 2 or not np.all(np.isfinite(knots)):
            raise _err("knots", self.knots, "a list of at least 2 finite numbers")
        if not np.all(np.diff(knots) > 0):
            raise _err("knots", knots.tolist(), "strictly increasing knots (a < b on every piece)")
        coefs = self.coefficients
        if not isinstance(coefs, list | tuple | np.ndarray) or len(coefs) != len(knots) - 1:
            raise _err("coefficients", coefs, f"one coefficient list per piece ({len(knots) - 1} pieces between "
                       f"the {len(knots)} knots)")
        rows = [real_array(c) for c in coefs]
        for i, c in enumerate(rows):
            if c is None or c.size == 0 or not np.all(np.isfinite(c)):
                raise _err(f"coefficients[{i}]", coefs[i], "a non-empty list of finite numbers")
            if c.size > LIMITS["degree"] + 1:
                raise _err(f"coefficients[{i}]", f"a list of {c.size} numbers", f"at most {LIMITS['degree'] + 1} "
                           f"coefficients (degree <= {LIMITS['degree']}, LIMITS['degree'], docs/running.md)")
        degree = max(c.size for c in rows)
        arr = np.zeros((len(coefs), max(degree, 1)))
        for i, c in enumerate(rows):
            c = c.ravel()
            if len(c) == 0 or not np.all(np.isfinite(c)):
                raise _err(f"coefficients[{i}]", coefs[i], "a non-empty list of finite numbers")
            arr[i, : len(c)] = c
        for i in range(len(arr)):
            lo = _poly_min(arr[i], knots[i], knots[i + 1])
            if lo < -1e-12:
                raise _err(
                    f"coefficients[{i}]",
                    arr[i].tolist(),
                    f"a density that is non-negative on [{knots[i]}, {knots[i + 1]}] (its minimum there is {lo:.3g})",
                )
        with np.errstate(over="ignore", invalid="ignore"):  # an infinite mass is refused just below
            mass = sum(_poly_integral(arr[i], knots[i], knots[i + 1]) for i in range(len(arr)))
        if not (mass > 0 and np.isfinite(mass)):
            raise _err("coefficients", arr.tolist(), "a density with positive total mass (and finite in float64)")
        if abs(mass - 1.0) > 1e-10:
            with np.errstate(over="ignore"):
                normalized = arr / mass
            if not np.all(np.isfinite(normalized)):
                raise _err("coefficients", coefs, f"a density whose total mass ({mass:.3g}) can be normalized in "
                           "float64")
            if not self.normalize:
                warnings.warn(
                    f"measure: the piecewise polynomial density has total mass {mass:.12g}; it was divided by "
                    "that to make a probability measure (set normalize: true to silence this note)",
                    stacklevel=3,
                )
            arr = normalized
        object.__setattr__(self, "knots", knots)
        object.__setattr__(self, "coefficients", arr)

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        n_pieces = len(self.knots) - 1
        lengths = np.diff(self.knots)
        # share the points between pieces by length, at least one panel each
        per_piece = np.maximum(NODES_PER_PANEL, np.round(n_points * lengths / lengths.sum()).astype(int))
        xs, ws = [], []
        for i in range(n_pieces):
            x, w = composite_gauss_legendre(self.knots[i], self.knots[i + 1], int(per_piece[i]))
            xs.append(x)
            ws.append(w * npoly.polyval(x, self.coefficients[i]))
        return np.concatenate(xs)[:, None], np.concatenate(ws)

    @property
    def interval(self) -> tuple[float, float]:
        return float(self.knots[0]), float(self.knots[-1])

    def density_pieces(self) -> tuple[np.ndarray, np.ndarray]:
        return self.knots, self.coefficients

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "piecewise_polynomial",
            "knots": self.knots.tolist(),
            "coefficients": self.coefficients.tolist(),
        }


def _poly_integral(c: np.ndarray, a: float, b: float) -> float:
    antider = npoly.polyint(c)
    return float(npoly.polyval(b, antider) - npoly.polyval(a, antider))


def _poly_min(c: np.ndarray, a: float, b: float) -> float:
    candidates = [a, b]
    deriv = npoly.polyder(c)
    if np.any(deriv != 0) and len(deriv) > 1:
        roots = npoly.polyroots(deriv)
        candidates += [r.real for r in roots if abs(r.imag) < 1e-12 and a <= r.real <= b]
    return float(np.min(npoly.polyval(np.array(candidates), c)))


@dataclass(frozen=True)
class Gaussian(Measure):
    """``N(0, sigma^2 I_dim)``."""

    dim: int = 1
    sigma: float = 1.0
    kind: str = field(default="gaussian", init=False)

    def __post_init__(self) -> None:
        _check_dim(self.dim)
        if not (is_real(self.sigma) and 1e-150 <= self.sigma <= 1e150):  # sigma^2 and 1 / sigma^2 are finite
            raise _err("sigma", self.sigma, "a number > 0 from 1e-150 to 1e150 (sigma^2 and 1 / sigma^2 finite)")

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        from scipy import special

        if self.dim <= TENSOR_RULE_MAX_DIM:
            per_axis = max(1, int(round(n_points ** (1.0 / self.dim))))
            x1, w1 = special.roots_hermitenorm(per_axis)
            x, w = _tensor(x1, w1 / np.sqrt(2 * np.pi), self.dim)
            return self.sigma * x, w / w.sum()
        u = _sobol(self.dim, n_points, _require_rng(rng, "gaussian"))
        # keep u away from {0, 1} so the inverse CDF stays finite
        u = np.clip(u, 1e-12, 1 - 1e-12)
        return self.sigma * special.ndtri(u), np.full(len(u), 1.0 / len(u))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gaussian", "dim": self.dim, "sigma": self.sigma}


@dataclass(frozen=True, eq=False)
class Empirical(Measure):
    """``sum_m omega_m delta_{x_m}``: a finite data set (uniform weights unless given)."""

    points: np.ndarray
    weights: np.ndarray | None = None
    source: dict[str, Any] = field(default_factory=dict)
    kind: str = field(default="empirical", init=False)

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=float)
        if pts.ndim == 1:
            pts = pts[:, None]
        if pts.ndim != 2 or len(pts) == 0:
            raise _err("points", getattr(self.points, "shape", None), "a non-empty array of shape (M, d)")
        if not np.all(np.isfinite(pts)):
            raise _err("points", "array with non-finite entries", "finite coordinates")
        if self.weights is None:
            w = np.full(len(pts), 1.0 / len(pts))
        else:
            w = np.asarray(self.weights, dtype=float)
            if w.shape != (len(pts),) or np.any(w < 0) or not w.sum() > 0:
                raise _err("weights", w, f"{len(pts)} non-negative weights with a positive sum")
            w = w / w.sum()
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "weights", w)

    @property
    def dim(self) -> int:  # type: ignore[override]
        return self.points.shape[1]

    def quadrature(self, n_points: int, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.points, self.weights

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "empirical", **self.source}


def _require_rng(rng: np.random.Generator | None, kind: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"measure {kind!r}: QMC points need a generator; pass the problem's quadrature seed")
    return rng


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's content, in hex: what pins an empirical data set (``measure.sha256``)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _load_points(path: str, columns: list[str] | None, sha256: str | None = None) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise _err("path", path, "an existing .npy or .parquet file")
    if sha256 is not None and file_sha256(p) != sha256:
        raise ValueError(f"measure.path = {path!r}: the file's sha256 is {file_sha256(p)}, not measure.sha256 = "
                         f"{sha256!r}: the data changed since the config was validated (validate again, e.g. "
                         "rerun snakemake, to use the new data)")
    if p.suffix == ".npy":
        return np.load(p)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p, columns=columns)
        return np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns)]).astype(float)
    raise _err("path", path, "a file ending in .npy or .parquet")


def _sample(spec: dict[str, Any]) -> np.ndarray:
    allowed = {"distribution", "n_points", "seed", "dim", "low", "high", "sigma"}
    unknown = sorted(set(spec) - allowed, key=str)
    if unknown:
        raise ValueError(f"measure.sample has unknown key(s) {unknown}: allowed keys are {sorted(allowed)}")
    n = spec.get("n_points")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise _err("sample.n_points", n, "an integer >= 1")
    seed = spec.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _err("sample.seed", seed, "a non-negative integer (the data set's own named seed)")
    dim = spec.get("dim", 1)
    try:
        _check_dim(dim)
    except ValueError:
        raise _err("sample.dim", dim, "an integer >= 1") from None
    if n * dim > LIMITS["n_points"]:  # before drawing them
        raise _err("sample.n_points", n, f"n_points x dim = {n} x {dim} <= {LIMITS['n_points']} coordinates "
                   "(LIMITS['n_points'], docs/running.md)")
    rng = np.random.default_rng([seed, 0x5A4D])  # a key of its own, independent of trajectory keys
    dist = spec.get("distribution", "uniform")
    if dist == "uniform":
        base = Uniform(spec.get("low", 0.0), spec.get("high", 1.0), dim)
        return base.low + (base.high - base.low) * rng.random((n, dim))
    if dist == "gaussian":
        base = Gaussian(dim, spec.get("sigma", 1.0))
        return base.sigma * rng.standard_normal((n, dim))
    raise _err("sample.distribution", dist, "'uniform' or 'gaussian'")


def measure_from_dict(spec: dict[str, Any]) -> Measure:
    """Build a measure from its config shape, e.g. ``{"kind": "uniform", "low": 0, "high": 1}``."""
    if not isinstance(spec, dict):
        raise ValueError(f"measure = {spec!r} is not allowed: expected a mapping with a 'kind'")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in MEASURES:
        raise _err("kind", kind, f"one of {sorted(MEASURES)}")
    allowed = MEASURE_KEYS[kind] | {"kind"}
    unknown = sorted(set(spec) - allowed, key=str)
    if unknown:
        raise ValueError(f"measure has unknown key(s) {unknown} for kind {kind!r}: allowed keys are {sorted(allowed)}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return MEASURES[kind](args)
    except KeyError as exc:
        raise ValueError(f"measure.{exc.args[0]} is missing: kind {kind!r} needs it") from None
    except TypeError as exc:
        raise ValueError(f"measure (kind {kind!r}): {exc}") from None


def _uniform(args: dict[str, Any]) -> Measure:
    return Uniform(_number(args, "low", 0.0), _number(args, "high", 1.0), args.get("dim", 1))


def _flag(args: dict[str, Any], key: str) -> bool:
    value = args.get(key, False)
    if not isinstance(value, bool):
        raise _err(key, value, "true or false")
    return value


def _empirical(args: dict[str, Any]) -> Measure:
    if ("path" in args) == ("sample" in args):
        raise ValueError("measure (kind 'empirical'): give exactly one of 'path' (a .npy/.parquet file) or 'sample'")
    if "path" in args:
        if not isinstance(args["path"], str):
            raise _err("path", args["path"], "the path of a .npy or .parquet file, as text")
        columns = args.get("columns")
        if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
            raise _err("columns", columns, "a list of column names (text), or null for all columns")
        sha256 = args.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and len(sha256) == 64
                                       and all(c in "0123456789abcdef" for c in sha256)):
            raise _err("sha256", sha256, "the file's sha256 as 64 lowercase hex digits")
        pts = _load_points(args["path"], args.get("columns"), sha256)
        source = {"path": args["path"], "columns": args.get("columns")}
        return Empirical(pts, source=source if sha256 is None else {**source, "sha256": sha256})
    if not isinstance(args["sample"], dict):
        raise _err("sample", args["sample"], "a mapping (distribution, n_points, seed, ...)")
    return Empirical(_sample(args["sample"]), source={"sample": dict(args["sample"])})


MEASURES = {
    "uniform": _uniform,
    "box": _uniform,
    "piecewise_polynomial": lambda a: PiecewisePolynomialDensity(a["knots"], a["coefficients"], _flag(a, "normalize")),
    "gaussian": lambda a: Gaussian(a.get("dim", 1), _number(a, "sigma", 1.0)),
    "empirical": _empirical,
}
MEASURE_KEYS = {
    "uniform": {"low", "high", "dim"},
    "box": {"low", "high", "dim"},
    "piecewise_polynomial": {"knots", "coefficients", "normalize"},
    "gaussian": {"dim", "sigma"},
    "empirical": {"path", "columns", "sample", "sha256"},
}
