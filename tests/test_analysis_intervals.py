"""Confidence intervals: binomial (Wilson, Clopper-Pearson) against scipy and by coverage, best-of-K intervals and
the supported-K rule, the bootstrap interval of the median."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reluflow.analysis import (
    BEST_OF_K_COLUMNS,
    MIN_GROUPS,
    best_of_k,
    best_of_k_successes,
    best_of_k_table,
    binomial_interval,
    bootstrap_median_interval,
)

CASES = [(0, 1), (1, 1), (0, 5), (2, 5), (5, 5), (0, 50), (1, 50), (15, 50), (49, 50), (50, 50), (0, 1000),
         (3, 1000), (500, 1000), (1000, 1000)]


def exact_coverage(p: float, n: int, method: str = "wilson", confidence: float = 0.95) -> float:
    """P(low <= p <= high) under s ~ Binomial(n, p), summed over every s."""
    s = np.arange(n + 1)
    low, high = binomial_interval(s, n, confidence=confidence, method=method)
    return float(stats.binom.pmf(s, n, p)[(low <= p) & (p <= high)].sum())


# ------------------------------------------------------------------------------------------ binomial
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(("method", "scipy_method"), [("wilson", "wilson"), ("clopper-pearson", "exact")])
def test_binomial_interval_matches_scipy(confidence, method, scipy_method):
    for s, n in CASES:
        ref = stats.binomtest(s, n).proportion_ci(confidence_level=confidence, method=scipy_method)
        low, high = binomial_interval(s, n, confidence=confidence, method=method)
        assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12), (s, n)
        assert low <= s / n <= high
        if s == 0:
            assert low == 0.0
        if s == n:
            assert high == 1.0


def test_binomial_interval_is_vectorised_and_nan_for_no_trials():
    s = np.array([[0], [1], [2]])
    n = np.array([2, 4, 8, 16])
    low, high = binomial_interval(s, n)
    assert low.shape == high.shape == (3, 4)
    for i in range(3):
        for j in range(4):
            assert (low[i, j], high[i, j]) == binomial_interval(int(s[i, 0]), int(n[j]))
    low, high = binomial_interval(0, 0)
    assert low.shape == () and np.isnan(low) and np.isnan(high)
    low, high = binomial_interval([0, 3], [0, 4])
    assert np.isnan(low[0]) and 0 < low[1] < 0.75 < high[1] < 1
    # wider at higher confidence
    assert binomial_interval(3, 10, confidence=0.99)[0] < binomial_interval(3, 10, confidence=0.9)[0]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"successes": 1, "n": 5, "confidence": 1.0}, "confidence"),
    ({"successes": 1, "n": 5, "confidence": 0}, "confidence"),
    ({"successes": 1, "n": 5, "confidence": True}, "confidence"),
    ({"successes": 1, "n": 5, "method": "agresti"}, "method"),
    ({"successes": 6, "n": 5}, "successes"),
    ({"successes": -1, "n": 5}, "successes"),
    ({"successes": 1.5, "n": 5}, "successes"),
])
def test_binomial_interval_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        binomial_interval(**kwargs)


def test_wilson_coverage_by_monte_carlo():
    # 2000 binomial draws at p = 0.3, n = 50: the number of intervals that cover p is Binomial(2000, c), c the exact
    # coverage (0.9567 here). The empirical coverage must lie within 3 standard errors of c, and c near 0.95.
    p, n, draws = 0.3, 50, 2000
    c = exact_coverage(p, n)
    assert abs(c - 0.95) < 0.01
    s = np.random.default_rng(2024).binomial(n, p, size=draws)
    low, high = binomial_interval(s, n)
    empirical = float(np.mean((low <= p) & (p <= high)))
    assert abs(empirical - c) <= 3 * math.sqrt(c * (1 - c) / draws)


def test_exact_coverage_wilson_near_nominal_clopper_pearson_conservative():
    # Wilson's coverage oscillates around the nominal level (it dips below it for some p); over p in [0.05, 0.95]
    # at n = 50 it stays within [0.93, 0.98] (measured 0.935-0.970) and averages 0.95 to 0.01. Clopper-Pearson
    # never covers less than 0.95.
    ps = np.linspace(0.05, 0.95, 19)
    wilson = np.array([exact_coverage(p, 50) for p in ps])
    assert np.all((wilson > 0.93) & (wilson < 0.98)) and abs(wilson.mean() - 0.95) < 0.01
    cp = np.array([exact_coverage(p, 50, "clopper-pearson") for p in np.linspace(0.01, 0.99, 99)])
    assert np.all(cp >= 0.95 - 1e-12)


# ------------------------------------------------------------------------------------------ best of K
def test_best_of_k_table_columns_order_and_estimates():
    eps, ks = [1e-2, 1e-4], [1, 2, 4, 8, 40, 41]
    t = best_of_k_table(np.array([7, 0]), 40, eps, ks)
    assert list(t.columns) == list(BEST_OF_K_COLUMNS)
    assert t.dtypes.to_dict() == {"eps": np.float64, "k": np.int64, "successes": np.int64, "n": np.int64,
                                  "estimate": np.float64, "low": np.float64, "high": np.float64,
                                  "supported": np.bool_}
    assert t["eps"].tolist() == [1e-2] * 6 + [1e-4] * 6 and t["k"].tolist() == ks * 2
    assert t["successes"].tolist() == [7] * 6 + [0] * 6 and (t["n"] == 40).all()
    for r in t.itertuples():
        np.testing.assert_equal(r.estimate, best_of_k(r.successes, 40, r.k))
    # K = 1 is the binomial interval itself
    low, high = binomial_interval(7, 40)
    assert t.loc[0, "low"] == pytest.approx(low) and t.loc[0, "high"] == pytest.approx(high)
    # K > n: no unbiased estimate, but the interval for 1 - (1 - p)^K is still defined
    last = t.iloc[5]
    assert last.k == 41 and np.isnan(last.estimate) and 0 < last.low < last.high < 1 and not last.supported
    assert (t.loc[t["successes"] == 0, "low"] == 0).all()


@pytest.mark.parametrize("n", [1, 2, 7, 12, 40, 256, 3000])
def test_best_of_k_interval_contains_estimate_and_grows_with_k(n):
    ks = sorted({1, 2, 3, 4, 8, 16, 32, 64, 256, n // 2 or 1, n})
    for s in sorted({0, 1, 2, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1))):
        t = best_of_k_table(np.array([s]), n, [0.1], ks)
        t = t[t["k"] <= n]
        assert np.all((t["low"] <= t["estimate"]) & (t["estimate"] <= t["high"])), (n, s, t)
        assert np.all((t["low"] >= 0) & (t["high"] <= 1))
        for col in ("estimate", "low", "high"):
            assert np.all(np.diff(t[col].to_numpy()) >= 0), (n, s, col)


def test_supported_k_rule():
    n = 256
    t = best_of_k_table(np.array([1]), n, [0.1], [1, 2, 4, 8, 16, 25, 26, 32, 64, 128, 256])
    assert MIN_GROUPS == 10
    assert t["supported"].tolist() == [k * MIN_GROUPS <= n for k in t["k"]]
    assert t.set_index("k").loc[25, "supported"] and not t.set_index("k").loc[26, "supported"]
    # K = n with one success reads as probability 1: flagged
    full = t.set_index("k").loc[256]
    assert full.estimate == 1.0 and not full.supported
    # with one success the estimate at K is K/n: at the largest supported K it is at most 1/MIN_GROUPS
    sup = t[t["supported"]]
    assert sup["estimate"].max() <= 1 / MIN_GROUPS
    # another threshold, and an empty cell
    assert best_of_k_table(np.array([1]), 8, [0.1], [1, 2, 4], min_groups=4)["supported"].tolist() == \
        [True, True, False]
    empty = best_of_k_table(np.array([0]), 0, [0.1], [1, 2])
    assert not empty["supported"].any() and empty[["estimate", "low", "high"]].isna().all().all()


def test_best_of_k_interval_inherits_the_binomial_coverage():
    # P(low <= 1 - (1-p)^K <= high) = P(p_low <= p <= p_high) exactly (a monotone transform), or more where the
    # interval was widened to hold the estimate; summed over s ~ Binomial(n, p)
    n = 40
    for p in (0.01, 0.07, 0.3, 0.8):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        base = exact_coverage(p, n)
        for k in (1, 2, 4, 16, 40):
            theta = 1 - (1 - p) ** k
            covered = 0.0
            for s in range(n + 1):
                row = best_of_k_table(np.array([s]), n, [0.1], [k]).iloc[0]
                covered += pmf[s] * (row.low <= theta <= row.high)
            assert covered >= base - 1e-12, (p, k)


def test_best_of_k_table_rejects():
    with pytest.raises(ValueError, match="successes"):
        best_of_k_table(np.array([1, 2]), 10, [0.1], [1])
    with pytest.raises(ValueError, match="successes"):
        best_of_k_table(np.array([11]), 10, [0.1], [1])
    with pytest.raises(ValueError, match="k = 0"):
        best_of_k_table(np.array([1]), 10, [0.1], [0])
    with pytest.raises(ValueError, match="min_groups"):
        best_of_k_table(np.array([1]), 10, [0.1], [1], min_groups=0)


def test_best_of_k_successes_count_excess_risk():
    risk = np.array([0.5, 0.5 + 1e-4, 0.5 + 1e-2, 0.4, np.inf, np.nan, -np.inf])
    assert best_of_k_successes(risk, [1e-3, 1.0]).tolist() == [0, 4]  # non-finite: failures, also -inf
    assert best_of_k_successes(risk, [1e-3, 2e-2], optimal_risk=0.5).tolist() == [3, 4]
    assert best_of_k_successes(pd.Series(risk), [1e-3], optimal_risk=None).tolist() == [0]
    for bad in (np.nan, np.inf, "0.5", True):
        with pytest.raises(ValueError, match="optimal_risk"):
            best_of_k_successes(risk, [1e-3], optimal_risk=bad)


# ------------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_median_interval_contains_median_and_shrinks_with_n():
    rng = np.random.default_rng(3)
    widths = []
    for n in (100, 1000, 10_000):
        x = rng.lognormal(size=n)
        low, high = bootstrap_median_interval(x, seed=1)
        assert low < np.median(x) < high
        widths.append(high - low)
    # the width goes like 1/sqrt(n): each tenfold n should shrink it about 3.2 times
    assert widths[1] < widths[0] / 2 and widths[2] < widths[1] / 2


def test_bootstrap_median_interval_is_deterministic_and_ignores_non_finite():
    x = np.random.default_rng(4).standard_normal(301)
    a = bootstrap_median_interval(x, seed=[7, 0])
    assert a == bootstrap_median_interval(x, seed=[7, 0])
    assert a != bootstrap_median_interval(x, seed=[7, 1])
    assert a == bootstrap_median_interval(np.concatenate([x, [np.nan, np.inf, -np.inf]]), seed=[7, 0])
    assert all(math.isnan(v) for v in bootstrap_median_interval([1.0, np.nan]))
    assert all(math.isnan(v) for v in bootstrap_median_interval([]))
    assert bootstrap_median_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = bootstrap_median_interval([1.0, 3.0])
    assert 1.0 <= low <= high <= 3.0
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_median_interval(x, n_resamples=0)


def test_bootstrap_median_interval_coverage():
    # 300 normal samples of size 101: the interval covers the true median 0 in about 95 % of them (the percentile
    # bootstrap of a median is slightly conservative at this size); 3 standard errors are 0.038
    rng = np.random.default_rng(11)
    hits = [low <= 0.0 <= high for low, high in
            (bootstrap_median_interval(rng.standard_normal(101), seed=i) for i in range(300))]
    assert abs(np.mean(hits) - 0.95) <= 0.04
