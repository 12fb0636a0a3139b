"""Per-cell aggregates: one summary row from a cell's trajectory table; best-of-K success probabilities."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd

from ._classify import CLASSES, DIVERGED_STATUSES
from ._rates import RATE_MODELS

__all__ = ["best_of_k", "best_of_k_column", "summarize_cell", "QUANTILES", "STATUSES"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# statuses that always get columns (so that summaries of different cells line up); others when present
STATUSES = ("zero_risk", "critical", "budget", "diverged", "nonfinite")
EXACT_MAX_N = 2000  # up to this n, best_of_k uses exact rational arithmetic
LOG1P_MAX_K = 1_000_000  # up to this many terms the log of the ratio is a sum of log1p; beyond it, log-gamma


def best_of_k(successes: int, n: int, k: int) -> float:
    """Unbiased estimate of ``P(min over K independent restarts <= eps)`` from ``n`` runs, ``s`` successes.

    ``1 - C(n - s, K) / C(n, K)``: the probability that a uniformly drawn ``K``-subset of the ``n`` runs
    contains at least one success, averaged over subsets, which is unbiased for ``1 - (1 - p)^K`` (the same
    estimator as pass@k). Exact rational arithmetic for ``n <= 2000``; beyond, ``log C(n-s,K)/C(n,K) =
    sum_{i<K} log1p(-s/(n-i)) = sum_{j<s} log1p(-K/(n-j))`` (the shorter sum; log-gamma when both ``s`` and
    ``K`` exceed 10^6) and ``-expm1`` of it, with no cancellation. ``K = 1`` gives ``s / n``;
    ``s = 0`` gives 0; ``n - s < K`` gives 1; NaN when ``K > n`` (not estimable without bias).
    """
    for name, value in (("successes", successes), ("n", n), ("k", k)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ValueError(f"{name} = {value!r} is not allowed: expected an integer")
    s, n, k = int(successes), int(n), int(k)
    if n < 0 or not 0 <= s <= n:
        raise ValueError(f"successes = {s}, n = {n} are not allowed: expected 0 <= successes <= n")
    if k < 1:
        raise ValueError(f"k = {k} is not allowed: expected an integer >= 1")
    if k > n:
        return float("nan")
    if s == 0:
        return 0.0
    if n - s < k:
        return 1.0
    if n <= EXACT_MAX_N:
        return float(1 - Fraction(math.comb(n - s, k), math.comb(n, k)))
    # C(n-s, K) / C(n, K) = prod_{i<K} (1 - s/(n-i)) = prod_{j<s} (1 - K/(n-j)): the shorter product
    terms, num = (k, s) if k <= s else (s, k)
    if terms <= LOG1P_MAX_K:
        log_ratio = float(np.sum(np.log1p(-num / (n - np.arange(terms, dtype=np.float64)))))
    else:  # both s and K huge: the ratio is below exp(-1e12 / n), log-gamma's absolute error is harmless
        log_ratio = (math.lgamma(n - s + 1) - math.lgamma(n - s - k + 1)
                     - math.lgamma(n + 1) + math.lgamma(n - k + 1))
    return float(-np.expm1(log_ratio))


def best_of_k_column(k: int, eps: float) -> str:
    """Column name of the best-of-``k`` success probability at ``eps``, e.g. ``p_best_of_4_eps_1e-06``."""
    return f"p_best_of_{int(k)}_eps_{float(eps):g}"


def _finite(values: Any) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return arr[np.isfinite(arr)]


def _stat(values: Any, how: str) -> float:
    arr = _finite(values)
    if arr.size == 0:
        return float("nan")
    return float({"median": np.median, "min": np.min, "max": np.max}[how](arr))


def summarize_cell(
    trajectories: pd.DataFrame, *, eps_list: Iterable[float], k_list: Iterable[int]
) -> dict[str, Any]:
    """One summary row (a flat dict) for a cell, from its table of trajectories (one row each).

    Columns (see docs/analysis.md): ``n``; ``n_status_<s>``, ``frac_status_<s>`` for the statuses of
    ``STATUSES`` and any other status present; ``n_class_<c>``, ``frac_class_<c>`` for every class of
    ``CLASSES``; ``frac_bounded`` (status neither diverged nor nonfinite); ``risk_final_q05 … q95`` (quantiles
    over finite final risks); ``risk_final_min``; ``rate_exp_median``, ``rate_poly_median`` (over finite fits)
    and ``frac_rate_best_<model>``; claim diagnostics ``max_risk_increase_max`` (C1), ``min_unit_norm_min``
    (C8), ``balance_drift_max`` (C10, of ``|drift|``), ``hessian_rank_median_global_min`` (C9), and medians of
    ``grad_norm_final``, ``param_norm_max``, ``t_final``, ``steps``; and for every ``eps`` and ``K`` the
    best-of-K success probability ``p_best_of_<K>_eps_<eps:g>``, a success being ``risk_final <= eps`` (a
    non-finite final risk is a failure), estimated by ``best_of_k`` over all ``n`` trajectories. Fractions are
    NaN when ``n = 0``.
    """
    df = trajectories
    n = int(len(df))
    row: dict[str, Any] = {"n": n}

    def frac(count: int) -> float:
        return count / n if n else float("nan")

    status = df["status"].astype(str).to_numpy() if "status" in df else np.full(n, "", dtype=object)
    for s in (*STATUSES, *sorted(set(status) - set(STATUSES))):
        count = int(np.sum(status == s))
        row[f"n_status_{s}"], row[f"frac_status_{s}"] = count, frac(count)
    cls = df["class"].astype(str).to_numpy() if "class" in df else np.full(n, "", dtype=object)
    for c in CLASSES:
        count = int(np.sum(cls == c))
        row[f"n_class_{c}"], row[f"frac_class_{c}"] = count, frac(count)
    row["frac_bounded"] = frac(int(np.sum(~np.isin(status, list(DIVERGED_STATUSES))))) if n else float("nan")

    risk_final = pd.to_numeric(df["risk_final"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite_risk = risk_final[np.isfinite(risk_final)]
    for q in QUANTILES:
        row[f"risk_final_q{round(q * 100):02d}"] = (
            float(np.quantile(finite_risk, q)) if finite_risk.size else float("nan"))
    row["risk_final_min"] = float(finite_risk.min()) if finite_risk.size else float("nan")

    for key in ("rate_exp", "rate_poly"):
        row[f"{key}_median"] = _stat(df[key], "median") if key in df else float("nan")
    best = df["rate_best"].astype(str).to_numpy() if "rate_best" in df else np.full(n, "", dtype=object)
    for m in (*RATE_MODELS, "none"):
        row[f"frac_rate_best_{m}"] = frac(int(np.sum(best == m)))

    extras = (("max_risk_increase", "max"), ("min_unit_norm", "min"), ("grad_norm_final", "median"),
              ("param_norm_max", "median"), ("t_final", "median"), ("steps", "median"))
    for key, how in extras:
        row[f"{key}_{how}"] = _stat(df[key], how) if key in df else float("nan")
    row["balance_drift_max"] = _stat(np.abs(_finite(df["balance_drift"])), "max") if "balance_drift" in df \
        else float("nan")
    if "hessian_rank" in df:
        ranks = df["hessian_rank"].to_numpy()[cls == "global_min"]
        row["hessian_rank_median_global_min"] = _stat(ranks, "median")
    else:
        row["hessian_rank_median_global_min"] = float("nan")

    with np.errstate(invalid="ignore"):
        for eps in eps_list:
            successes = int(np.sum(risk_final <= float(eps)))
            for k in k_list:
                row[best_of_k_column(k, eps)] = best_of_k(successes, n, int(k)) if n else float("nan")
    return row
