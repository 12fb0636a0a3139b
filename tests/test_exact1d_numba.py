"""The compiled ``exact1d`` kernel (``risk/_exact1d_numba.py``) gives the numpy kernel's bytes.

The numpy kernel is checked against adaptive quadrature, central differences and the quadrature backend in
``test_exact1d.py`` (whose tests run on the default kernel, the compiled one where numba is installed, and on the
numpy kernel where batching matters). Here every test problem, both dtypes, and rows built to reach every branch
of the compiled kernel (tied kinks between units and with knots, ``w = 0`` units, kinks outside the interval or
at infinity, ``-0.0``, NaN and inf parameters, widths that are not multiples of the prefix sums' block, more
than eight interior knots) must give identical risk and gradient bytes in both kernels: a table must not depend
on whether numba was installed.
"""

from __future__ import annotations

import sys
import zlib

import numpy as np
import pytest

import conftest
import reluflow.risk
from reluflow import Problem
from reluflow.risk import _exact1d as exact1d_module
from test_exact1d import PROBLEMS, make_problem, pack, random_rows, special_rows, static_knots

pytest.importorskip("numba")
from reluflow.risk import _exact1d_numba as exact1d_numba_module  # noqa: E402  (it imports numba)


def by_kernel(problem: Problem, theta: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    """``{kernel: (L, G, risk-only L)}`` for both kernels."""
    return conftest.by_kernel(problem, theta, ("numpy", "numba"))


def assert_same_bytes(problem: Problem, theta: np.ndarray) -> None:
    out = by_kernel(problem, theta)
    for part, name in enumerate(("risk", "gradient", "risk without gradient")):
        a, b = out["numpy"][part], out["numba"][part]
        assert a.dtype == b.dtype and a.shape == b.shape
        # NaN payloads are not part of the contract: compare NaN positions, then every other byte
        nan = np.isnan(a)
        np.testing.assert_array_equal(nan, np.isnan(b), err_msg=f"{name}: NaN in different places")
        a, b = np.where(nan, 0, a), np.where(nan, 0, b)
        unequal = (a != b) | (np.signbit(a) != np.signbit(b))  # a signed zero counts as a difference
        differ = np.flatnonzero(np.any(unequal.reshape(len(theta), -1), axis=1))
        assert a.tobytes() == b.tobytes(), f"{name} differs in rows {differ[:10].tolist()} of {len(theta)}"


def edge_rows(problem: Problem, rng: np.random.Generator) -> np.ndarray:
    """Rows with exact ties between units, -0.0 kinks, infinite kinks, and non-finite parameters."""
    arch = problem.architecture
    H, k = arch.widths[0], arch.output_dim
    hidden = arch.layers[0]
    knots = static_knots(problem)
    base = random_rows(problem, rng, 12)
    rows = [row.copy() for row in base]
    w_sl, b_sl = hidden.weight, hidden.bias
    if H >= 2:
        # unit 1 a copy of unit 0 (same kink, same side), and one with the same kink on the other side
        rows[0][w_sl][1] = rows[0][w_sl][0]
        if b_sl is not None:
            rows[0][b_sl][1] = rows[0][b_sl][0]
            rows[1][w_sl][1] = -2.0 * rows[1][w_sl][0]
            rows[1][b_sl][1] = -2.0 * rows[1][b_sl][0]
    if b_sl is not None:
        # every unit's kink on the same interior knot (ties with a static slot), and -0.0 / +0.0 kinks
        t = knots[len(knots) // 2]
        w = np.where(np.arange(H) % 2 == 0, 1.0, -0.5)
        rows[2] = pack(problem, w, -w * t, rng.standard_normal((k, H)), rng.standard_normal(k))
        rows[3][b_sl] = np.where(np.arange(H) % 2 == 0, 0.0, -0.0)
        rows[3][w_sl] = np.where(np.arange(H) % 3 == 0, 1.0, -1.0)
        # kinks at +-inf (tiny weights) and at -inf (w = 0, either sign of b)
        rows[4][w_sl][0] = 1e-310
        rows[4][b_sl][0] = -1.0
        rows[4][w_sl][-1] = 0.0
    rows[5][w_sl][0] = np.nan  # a NaN kink: the sorting path for non-finite positions
    rows[6][w_sl][-1] = np.inf
    rows[7][-1] = np.nan  # a NaN in the last parameter (c, v or b)
    if b_sl is not None:
        rows[8][b_sl][0] = np.inf
        rows[9][b_sl][0] = np.nan
        if H >= 3:  # NaN and a tie in one row
            rows[9][w_sl][1] = rows[9][w_sl][2]
            rows[9][b_sl][1] = rows[9][b_sl][2]
    rows[10][:] = 0.0  # the zero network: every kink at -inf (or at 0 without hidden bias)
    rows[11] *= 1e150  # overflow to inf inside the sums
    return np.concatenate([np.array(rows), special_rows(problem, rng)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_compiled_kernel_gives_the_numpy_kernels_bytes(name, dtype):
    problem = make_problem(name, dtype=dtype)
    assert problem.backend.kernels == ["numba", "numpy"] and problem.backend.kernel == "numba"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    theta = np.concatenate([edge_rows(problem, rng), random_rows(problem, rng, 300)])
    with np.errstate(all="ignore"):
        assert_same_bytes(problem, theta)


# widths that are and are not multiples of the prefix sums' block, around the static knots' padding, and beyond
# RANK_BY_COUNTING_MAX, where the units are ranked by a merge sort instead of by counting
WIDTHS = [1, 2, 7, 8, 9, 31, 64, 97, 1030]


def test_widths_reach_both_ranking_paths():
    assert min(WIDTHS) <= exact1d_numba_module.RANK_BY_COUNTING_MAX < max(WIDTHS)


@pytest.mark.parametrize("width", WIDTHS)
def test_widths(width):
    problem = Problem.from_dict({"network": {"input_dim": 1, "widths": [width]},
                                 "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
                                 "target": {"kind": "function", "name": "abs", "shift": -0.5},
                                 "risk": {"backend": "exact1d"}})
    rng = np.random.default_rng(width)
    theta = np.concatenate([edge_rows(problem, rng), random_rows(problem, rng, 200)])
    with np.errstate(all="ignore"):
        assert_same_bytes(problem, theta)


@pytest.mark.parametrize("output_dim", [1, 2])
def test_more_than_eight_interior_knots(output_dim):
    """The numpy kernel finds a piece's static piece by comparisons up to eight interior knots and by a binary
    search beyond; the compiled kernel mirrors both (a NaN midpoint lands on a different piece in each)."""
    knots = np.linspace(-1.0, 2.0, 13)
    values = np.sin(3 * knots)
    if output_dim == 2:
        values = np.stack([values, np.cos(2 * knots)], axis=1)
    problem = Problem.from_dict({"network": {"input_dim": 1, "widths": [9], "output_dim": output_dim},
                                 "measure": {"kind": "uniform", "low": -1.0, "high": 2.0},
                                 "target": {"kind": "piecewise_affine", "knots": knots.tolist(),
                                            "values": values.tolist()},
                                 "risk": {"backend": "exact1d"}})
    rng = np.random.default_rng(13)
    theta = np.concatenate([edge_rows(problem, rng), random_rows(problem, rng, 300)])
    with np.errstate(all="ignore"):
        assert_same_bytes(problem, theta)


def test_numpy_kernel_without_numba(monkeypatch):
    monkeypatch.setattr(exact1d_module, "numba_installed", lambda: False)
    problem = make_problem("vector_k2")
    assert problem.backend.kernels == ["numpy"] and problem.backend.kernel == "numpy"
    assert problem.backend.describe()["kernel"] == "numpy"
    theta = random_rows(problem, np.random.default_rng(0), 20)
    monkeypatch.undo()
    compiled = make_problem("vector_k2")
    assert compiled.backend.describe()["kernel"] == "numba"
    L, G = problem.risk_and_grad(theta)
    Lc, Gc = compiled.risk_and_grad(theta)
    assert L.tobytes() == Lc.tobytes() and G.tobytes() == Gc.tobytes()


class _NumbaWithoutCache:
    """Stands in for numba where no cache directory is writable: ``njit(cache=True)`` raises at decoration."""

    @staticmethod
    def njit(*args, **kwargs):
        raise RuntimeError("cannot cache function '_less': no locator available for file '_exact1d_numba.py'")


@pytest.mark.parametrize(("numba_module", "error"),
                         [(None, "ModuleNotFoundError"), (_NumbaWithoutCache, "RuntimeError")])
def test_compiled_kernel_that_cannot_be_set_up_falls_back_to_numpy(monkeypatch, numba_module, error):
    problem = make_problem("vector_k2")
    theta = random_rows(problem, np.random.default_rng(1), 20)
    L, G = problem.risk_and_grad(theta)
    # a fresh import of the compiled module, with numba failing to import (None: e.g. a numpy newer than numba
    # supports) or failing to set up its disk cache (a read-only installation and HOME)
    monkeypatch.delattr(reluflow.risk, "_exact1d_numba")
    monkeypatch.delitem(sys.modules, "reluflow.risk._exact1d_numba")
    monkeypatch.setitem(sys.modules, "numba", numba_module)
    exact1d_module._compiled_module.cache_clear()
    try:
        fresh = make_problem("vector_k2")
        assert fresh.backend.kernel == "numba"  # installed; whether it works is found out on first use
        with pytest.warns(RuntimeWarning, match=f"compiled kernel cannot be set up \\({error}"):
            Lf, Gf = fresh.risk_and_grad(theta)
        assert fresh.backend.kernel == "numpy" and fresh.backend.kernels == ["numpy"]
        assert Lf.tobytes() == L.tobytes() and Gf.tobytes() == G.tobytes()
    finally:
        exact1d_module._compiled_module.cache_clear()


def test_read_only_parameters_use_the_compiled_signature_already_there():
    problem = make_problem("uniform_pw_affine")
    theta = random_rows(problem, np.random.default_rng(2), 5)
    problem.risk_and_grad(theta)
    kernel = exact1d_numba_module.compiled_kernel(1, 1)
    signatures = len(kernel.signatures)
    theta.flags.writeable = False
    problem.risk_and_grad(theta)
    assert len(kernel.signatures) == signatures


def test_unknown_kernel_is_an_error():
    problem = make_problem("uniform_pw_affine")
    problem.backend.kernel = "cuda"
    with pytest.raises(ValueError, match=r"Exact1DRisk.kernel = 'cuda' is not allowed: expected one of"):
        problem.risk(np.zeros((1, problem.n_params)))
