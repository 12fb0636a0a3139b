"""Best-of-K success probabilities and the per-cell summary row."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reluflow.analysis import CLASSES, best_of_k, best_of_k_column, summarize_cell
from reluflow.analysis import _aggregate as aggregate


def brute_force(s: int, n: int, k: int) -> float:
    """Fraction of the K-subsets of n runs (s of them successes) that contain a success."""
    runs = [True] * s + [False] * (n - s)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(runs[i] for i in sub) for sub in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_enumeration(n):
    for s in range(n + 1):
        for k in range(1, n + 1):
            assert best_of_k(s, n, k) == pytest.approx(brute_force(s, n, k), abs=1e-15)


def test_edge_cases():
    assert best_of_k(0, 10, 3) == 0.0
    assert best_of_k(10, 10, 3) == 1.0
    assert best_of_k(8, 10, 3) == 1.0  # fewer failures than K: every K-subset holds a success
    for s in range(11):
        assert best_of_k(s, 10, 1) == s / 10
    assert math.isnan(best_of_k(3, 10, 11))
    assert math.isnan(best_of_k(0, 0, 1))
    for bad in [(-1, 5, 1), (6, 5, 1), (1, 5, 0), (1.5, 5, 1), (True, 5, 1)]:
        with pytest.raises(ValueError):
            best_of_k(*bad)


def test_unbiased_for_one_minus_q_to_the_k():
    # E[estimate] over s ~ Binomial(n, p) equals 1 - (1 - p)^K exactly, for every K <= n
    n = 12
    for p in (0.01, 0.2, 0.5, 0.9):
        pmf = stats.binom.pmf(np.arange(n + 1), n, p)
        for k in range(1, n + 1):
            mean = sum(pmf[s] * best_of_k(s, n, k) for s in range(n + 1))
            assert mean == pytest.approx(1 - (1 - p) ** k, abs=1e-13)


def test_monte_carlo_agrees():
    # simulate restarts: the estimator from n runs vs the empirical frequency of "best of K runs <= eps"
    rng = np.random.default_rng(5)
    n, k, p = 40, 4, 0.1
    successes = rng.random((4000, n)) < p
    est = np.mean([best_of_k(int(row.sum()), n, k) for row in successes])
    mc = np.mean(successes[:, :k].any(axis=1))
    assert abs(est - (1 - (1 - p) ** k)) < 0.01
    assert abs(mc - (1 - (1 - p) ** k)) < 0.03


@pytest.mark.parametrize(("s", "n", "k"), [(1, 5000, 3), (17, 5000, 250), (4000, 5000, 1), (2, 10_000, 7)])
def test_large_n_paths_agree_with_exact(s, n, k, monkeypatch):
    exact = float(1 - Fraction(math.comb(n - s, k), math.comb(n, k)))
    assert best_of_k(s, n, k) == pytest.approx(exact, rel=1e-12)
    monkeypatch.setattr(aggregate, "LOG1P_MAX_K", 0)  # force the log-gamma path (meant for huge s and K)
    assert best_of_k(s, n, k) == pytest.approx(exact, rel=1e-6)


def make_cell(n=20, seed=0):
    rng = np.random.default_rng(seed)
    status = np.array(["critical"] * 10 + ["budget"] * 6 + ["diverged"] * 3 + ["nonfinite"] * 1)[:n]
    risk_final = np.concatenate([10.0 ** -rng.uniform(3, 12, 16), [np.inf, np.inf, np.nan, np.nan]])[:n]
    cls = np.array(["global_min"] * 6 + ["local_min"] * 2 + ["saddle"] * 2 + ["unconverged"] * 6
                   + ["diverged"] * 4)[:n]
    df = pd.DataFrame({
        "trajectory": np.arange(n), "status": status, "risk_init": rng.uniform(0.1, 1, n),
        "risk_final": risk_final, "risk_min": risk_final, "grad_norm_final": rng.uniform(0, 1e-6, n),
        "param_norm_init": np.ones(n), "param_norm_max": rng.uniform(1, 3, n), "param_norm_final": np.ones(n),
        "t_final": np.full(n, 100.0), "steps": np.full(n, 1000), "n_rejected": np.zeros(n, int),
        "max_risk_increase": rng.uniform(0, 1e-14, n), "n_dead_final": np.zeros(n, int),
        "min_unit_norm": rng.uniform(0.1, 1, n), "balance_drift": rng.normal(0, 1e-9, n),
        "refined": np.ones(n, bool), "refine_moved": np.zeros(n), "refine_grad_norm": np.zeros(n),
        "n_negative": np.zeros(n), "n_zero": np.full(n, 3.0), "lambda_min": np.zeros(n),
        "lambda_min_positive": np.ones(n), "hessian_rank": np.full(n, 7.0), "class": cls,
        "risk_inf": np.zeros(n), "rate_exp": rng.uniform(0.1, 0.2, n), "r2_exp": np.ones(n),
        "rate_poly": rng.uniform(1, 2, n), "r2_poly": np.ones(n),
        "rate_best": np.array(["exponential", "polynomial", "none", "exponential"] * (n // 4 + 1))[:n],
    })
    return df


def test_summary_row():
    df = make_cell()
    eps_list, k_list = [1e-6, 1e-9], [1, 4, 32]
    row = summarize_cell(df, eps_list=eps_list, k_list=k_list)
    assert row["n"] == 20
    assert row["n_status_critical"] == 10 and row["frac_status_budget"] == 6 / 20
    assert row["n_status_diverged"] == 3 and row["n_status_nonfinite"] == 1
    assert row["frac_bounded"] == 16 / 20
    for c in CLASSES:
        assert row[f"n_class_{c}"] == int(np.sum(df["class"] == c))
    assert row["frac_class_global_min"] == 6 / 20
    finite = df["risk_final"][np.isfinite(df["risk_final"])]
    for q, name in zip((0.05, 0.25, 0.5, 0.75, 0.95), ("q05", "q25", "q50", "q75", "q95"), strict=True):
        assert row[f"risk_final_{name}"] == pytest.approx(np.quantile(finite, q))
    assert row["rate_exp_median"] == pytest.approx(np.median(df["rate_exp"]))
    assert row["rate_poly_median"] == pytest.approx(np.median(df["rate_poly"]))
    assert row["frac_rate_best_exponential"] == 10 / 20
    assert row["hessian_rank_median_global_min"] == 7.0
    assert row["balance_drift_max"] == pytest.approx(np.abs(df["balance_drift"]).max())
    for eps in eps_list:
        s = int(np.sum(df["risk_final"] <= eps))  # non-finite final risks are failures
        for k in k_list:
            assert best_of_k_column(k, eps) in row
            expected = best_of_k(s, 20, k) if k <= 20 else np.nan
            np.testing.assert_equal(row[best_of_k_column(k, eps)], expected)
    assert "p_best_of_4_eps_1e-06" in row and "p_best_of_32_eps_1e-09" in row
    assert all(np.isscalar(v) for v in row.values())


def test_summary_of_an_empty_cell_and_unknown_status():
    df = make_cell().iloc[:0]
    row = summarize_cell(df, eps_list=[1e-6], k_list=[1])
    assert row["n"] == 0 and np.isnan(row["frac_bounded"]) and np.isnan(row["risk_final_q50"])
    assert np.isnan(row["p_best_of_1_eps_1e-06"])
    df = make_cell()
    df.loc[0, "status"] = "zero_risk"
    row = summarize_cell(df, eps_list=[], k_list=[])
    assert row["n_status_zero_risk"] == 1 and "n_status_critical" in row


def test_summary_intervals():
    from reluflow.analysis import binomial_interval, bootstrap_median_interval

    df = make_cell()
    row = summarize_cell(df, eps_list=[1e-6], k_list=[1], seed=9)
    fracs = [c for c in row if c.startswith("frac_") and not c.endswith(("_low", "_high"))]
    assert len(fracs) == 5 + len(CLASSES) + 1 + 3  # statuses, classes, bounded, rate models
    for c in fracs:
        count = round(row[c] * 20)
        low, high = binomial_interval(count, 20)
        assert (row[f"{c}_low"], row[f"{c}_high"]) == (float(low), float(high)), c
        assert row[f"{c}_low"] <= row[c] <= row[f"{c}_high"]
    assert row["frac_status_zero_risk_low"] == 0.0 and 0 < row["frac_status_zero_risk_high"] < 0.2
    for stream, key in enumerate(("rate_exp", "rate_poly")):
        assert (row[f"{key}_median_low"], row[f"{key}_median_high"]) == \
            bootstrap_median_interval(df[key], seed=[9, stream])
        assert row[f"{key}_median_low"] < row[f"{key}_median"] < row[f"{key}_median_high"]
    # the seed makes the bootstrap reproducible, and other seeds draw other resamples
    assert summarize_cell(df, eps_list=[], k_list=[], seed=9)["rate_exp_median_low"] == row["rate_exp_median_low"]
    assert summarize_cell(df, eps_list=[], k_list=[], seed=10)["rate_exp_median_low"] != row["rate_exp_median_low"]
    # a wider confidence widens every interval
    wide = summarize_cell(df, eps_list=[], k_list=[], seed=9, confidence=0.99)
    assert wide["frac_bounded_low"] < row["frac_bounded_low"] and wide["rate_poly_median_high"] > \
        row["rate_poly_median_high"]
    # fewer than two finite fits: no interval
    few = df.assign(rate_exp=np.r_[0.5, np.full(19, np.nan)])
    one = summarize_cell(few, eps_list=[], k_list=[])
    assert one["rate_exp_median"] == 0.5 and np.isnan(one["rate_exp_median_low"]) and \
        np.isnan(one["rate_exp_median_high"])
    empty = summarize_cell(df.iloc[:0], eps_list=[], k_list=[])
    assert all(np.isnan(empty[f"{c}_{end}"]) for c in fracs for end in ("low", "high"))
    with pytest.raises(ValueError, match="seed"):
        summarize_cell(df, eps_list=[], k_list=[], seed=-1)
    with pytest.raises(ValueError, match="confidence"):
        summarize_cell(df, eps_list=[], k_list=[], confidence=95)


def test_summary_best_of_k_counts_excess_risk_and_ignores_extra_columns():
    df = make_cell()
    base = summarize_cell(df, eps_list=[1e-6], k_list=[1, 4])
    assert summarize_cell(df, eps_list=[1e-6], k_list=[1, 4], optimal_risk=None) == base
    assert summarize_cell(df, eps_list=[1e-6], k_list=[1, 4], optimal_risk=0.0) == base
    # an optimal risk of 1e-4: a success is risk_final - 1e-4 <= eps, the same set as risk_final <= 1e-4 + eps
    shifted = summarize_cell(df, eps_list=[1e-6], k_list=[1, 4], optimal_risk=1e-4)
    s = int(np.sum(df["risk_final"] - 1e-4 <= 1e-6))
    assert s > int(np.sum(df["risk_final"] <= 1e-6))
    assert shifted["p_best_of_1_eps_1e-06"] == s / 20 and shifted["p_best_of_4_eps_1e-06"] == best_of_k(s, 20, 4)
    # columns the summary does not know (added by other stages) change nothing
    extra = df.assign(nearest_class=np.array(["a", "b"] * 10), something_else=np.arange(20.0))
    assert summarize_cell(extra, eps_list=[1e-6], k_list=[1, 4]) == base
    with pytest.raises(ValueError, match="optimal_risk"):
        summarize_cell(df, eps_list=[1e-6], k_list=[1], optimal_risk=float("nan"))
