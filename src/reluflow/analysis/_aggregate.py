"""Per-cell aggregates: one summary row from a cell's trajectory table; best-of-K success probabilities and
their confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from ._classify import CLASSES, DIVERGED_STATUSES
from ._intervals import BOOTSTRAP_RESAMPLES, CONFIDENCE, _check_confidence, binomial_interval, bootstrap_median_interval
from ._rates import RATE_MODELS

if TYPE_CHECKING:
    import pandas as pd

# pandas is imported by the functions that use it: the config imports this package (the verdict rules' parameters),
# and every Snakemake start imports the config (`import pandas` is ~0.2 s of a ~0.6 s config import)

__all__ = ["best_of_k", "best_of_k_column", "best_of_k_successes", "best_of_k_table", "summarize_cell",
           "BEST_OF_K_COLUMNS", "MIN_GROUPS", "QUANTILES", "STATUSES"]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# statuses that always get columns (so that summaries of different cells line up); others when present
STATUSES = ("zero_risk", "critical", "budget", "diverged", "nonfinite")
EXACT_MAX_N = 2000  # up to this n, best_of_k uses exact rational arithmetic
LOG1P_MAX_K = 1_000_000  # up to this many terms the log of the ratio is a sum of log1p; beyond it, log-gamma
# best-of-K at K is "supported" when the n runs hold at least this many disjoint groups of K: then no single run
# moves the estimate by more than 1/MIN_GROUPS (docs/analysis.md)
MIN_GROUPS = 10
BEST_OF_K_COLUMNS = ("eps", "k", "successes", "n", "estimate", "low", "high", "supported")


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


def _check_int(name: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} = {value!r} is not allowed: expected an integer >= {minimum}")
    return int(value)


def _check_optimal_risk(optimal_risk: float | None) -> float:
    if optimal_risk is None:
        return 0.0
    if not isinstance(optimal_risk, int | float | np.integer | np.floating) or isinstance(optimal_risk, bool) \
            or not math.isfinite(optimal_risk):
        raise ValueError(f"optimal_risk = {optimal_risk!r} is not allowed: expected None or a finite number")
    return float(optimal_risk)


def best_of_k_successes(risk_final: Any, eps_list: Iterable[float], *,
                        optimal_risk: float | None = None) -> np.ndarray:
    """Successes per ``eps``: how many of the final risks ``risk_final`` (shape ``(T,)``) have excess risk
    ``risk_final − optimal_risk ≤ eps`` (``optimal_risk`` None counts as 0). A non-finite final risk is a
    failure. Returns an int64 array of shape ``(E,)``, in the order of ``eps_list``."""
    import pandas as pd

    opt = _check_optimal_risk(optimal_risk)
    risk = pd.to_numeric(pd.Series(np.asarray(risk_final, dtype=object).ravel()), errors="coerce") \
        .to_numpy(dtype=np.float64, na_value=np.nan)
    excess = risk - opt
    with np.errstate(invalid="ignore"):
        return np.array([int(np.sum(np.isfinite(excess) & (excess <= float(eps)))) for eps in eps_list],
                        dtype=np.int64)


def best_of_k_table(
    successes: Any, n: int, eps_list: Iterable[float], k_list: Iterable[int], *,
    confidence: float = CONFIDENCE, method: str = "wilson", min_groups: int = MIN_GROUPS,
) -> pd.DataFrame:
    """Best-of-K success probabilities with confidence intervals, one row per ``(eps, K)``.

    ``successes`` (shape ``(E,)``, aligned with ``eps_list``) out of ``n`` runs. Columns ``BEST_OF_K_COLUMNS``:
    ``eps``, ``k``, ``successes``, ``n``; ``estimate`` = ``best_of_k(s, n, K)``, unbiased for ``θ = 1 − (1 −
    p)^K`` (NaN for ``K > n``); ``low``, ``high``: the binomial interval ``[p_low, p_high]`` for ``p``
    (``binomial_interval``, ``method`` and ``confidence``) carried through ``p ↦ 1 − (1 − p)^K``, which is
    increasing in ``p``, so the interval covers ``θ`` exactly when ``[p_low, p_high]`` covers ``p``; it is
    widened where needed to contain the estimate (near 1 the estimate can exceed ``1 − (1 − p_high)^K``;
    widening can only raise coverage). NaN for ``n = 0``. ``supported``: ``n ≥ min_groups · K``, the runs hold
    at least ``min_groups`` disjoint groups of ``K``, so no single run moves the estimate by more than
    ``1/min_groups`` and its standard error is at most ``sqrt(θ(1 − θ)/min_groups)`` (Hoeffding's bound for
    U-statistics). Rows: eps in the order given, then K in the order given; ``E · len(k_list)`` rows.
    """
    import pandas as pd

    eps_arr = np.array([float(e) for e in eps_list], dtype=np.float64)
    ks = [_check_int("k", k, 1) for k in k_list]
    n = _check_int("n", n, 0)
    min_groups = _check_int("min_groups", min_groups, 1)
    s_arr = np.asarray(successes)
    if s_arr.shape != eps_arr.shape:
        raise ValueError(f"successes of shape {s_arr.shape} is not allowed: expected one count per eps, shape "
                         f"{eps_arr.shape}")
    s_list = [_check_int("successes", s, 0) for s in s_arr.tolist()]
    p_low, p_high = binomial_interval(np.array(s_list, dtype=np.int64), n, confidence=confidence, method=method)
    rows = []
    for i, (eps, s) in enumerate(zip(eps_arr.tolist(), s_list, strict=True)):
        for k in ks:
            est = best_of_k(s, n, k)
            with np.errstate(divide="ignore"):  # log1p(-1) = -inf: the transform is 1 at p = 1
                low = float(-np.expm1(k * np.log1p(-p_low[i])))
                high = float(-np.expm1(k * np.log1p(-p_high[i])))
            if math.isfinite(est):
                low, high = min(low, est), max(high, est)
            rows.append((eps, k, s, n, est, low, high, n > 0 and n >= min_groups * k))
    table = pd.DataFrame.from_records(rows, columns=list(BEST_OF_K_COLUMNS))
    return table.astype({"eps": "float64", "k": "int64", "successes": "int64", "n": "int64", "estimate": "float64",
                         "low": "float64", "high": "float64", "supported": "bool"})


def _finite(values: Any) -> np.ndarray:
    import pandas as pd

    arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return arr[np.isfinite(arr)]


def _stat(values: Any, how: str) -> float:
    arr = _finite(values)
    if arr.size == 0:
        return float("nan")
    return float({"median": np.median, "min": np.min, "max": np.max}[how](arr))


def summarize_cell(
    trajectories: pd.DataFrame, *, eps_list: Iterable[float], k_list: Iterable[int],
    optimal_risk: float | None = None, confidence: float = CONFIDENCE, n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """One summary row (a flat dict) for a cell, from its table of trajectories (one row each).

    Columns (see docs/analysis.md): ``n``; ``n_status_<s>``, ``frac_status_<s>`` for the statuses of
    ``STATUSES`` and any other status present; ``n_class_<c>``, ``frac_class_<c>`` for every class of
    ``CLASSES``; ``frac_bounded`` (status neither diverged nor nonfinite); ``risk_final_q05 … q95`` (quantiles
    over finite final risks); ``risk_final_min``; ``rate_exp_median``, ``rate_poly_median`` (over finite fits)
    and ``frac_rate_best_<model>``; claim diagnostics ``max_risk_increase_max`` (C1), ``min_unit_norm_min``
    (C8), ``balance_drift_max`` (C10, of ``|drift|``), ``hessian_rank_median_global_min`` (C9), and medians of
    ``grad_norm_final``, ``param_norm_max``, ``t_final``, ``steps``; and for every ``eps`` and ``K`` the
    best-of-K success probability ``p_best_of_<K>_eps_<eps:g>``, a success being an excess final risk
    ``risk_final − optimal_risk ≤ eps`` (``optimal_risk`` None counts as 0; a non-finite final risk is a
    failure), estimated by ``best_of_k`` over all ``n`` trajectories. Fractions are NaN when ``n = 0``.

    Uncertainty: every ``frac_<x>`` is followed by ``frac_<x>_low``, ``frac_<x>_high``, its Wilson interval at
    ``confidence`` (``binomial_interval``; NaN when ``n = 0``), and ``rate_exp_median``, ``rate_poly_median`` by
    ``_low``, ``_high``, a percentile-bootstrap interval (``bootstrap_median_interval``, ``n_resamples``
    resamples drawn from ``default_rng([seed, 0])`` and ``default_rng([seed, 1])``; NaN for fewer than 2
    finite fits). Columns of the frame that are not used are ignored.
    """
    import pandas as pd

    confidence = _check_confidence(confidence)
    seed = _check_int("seed", seed, 0)
    df = trajectories
    n = int(len(df))
    row: dict[str, Any] = {"n": n}

    def frac(name: str, count: int) -> None:
        low, high = binomial_interval(count, n, confidence=confidence)
        row[name] = count / n if n else float("nan")
        row[f"{name}_low"], row[f"{name}_high"] = float(low), float(high)

    status = df["status"].astype(str).to_numpy() if "status" in df else np.full(n, "", dtype=object)
    for s in (*STATUSES, *sorted(set(status) - set(STATUSES))):
        count = int(np.sum(status == s))
        row[f"n_status_{s}"] = count
        frac(f"frac_status_{s}", count)
    cls = df["class"].astype(str).to_numpy() if "class" in df else np.full(n, "", dtype=object)
    for c in CLASSES:
        count = int(np.sum(cls == c))
        row[f"n_class_{c}"] = count
        frac(f"frac_class_{c}", count)
    frac("frac_bounded", int(np.sum(~np.isin(status, list(DIVERGED_STATUSES)))))

    risk_final = pd.to_numeric(df["risk_final"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    finite_risk = risk_final[np.isfinite(risk_final)]
    for q in QUANTILES:
        row[f"risk_final_q{round(q * 100):02d}"] = (
            float(np.quantile(finite_risk, q)) if finite_risk.size else float("nan"))
    row["risk_final_min"] = float(finite_risk.min()) if finite_risk.size else float("nan")

    for stream, key in enumerate(("rate_exp", "rate_poly")):
        values = _finite(df[key]) if key in df else np.empty(0)
        row[f"{key}_median"] = float(np.median(values)) if values.size else float("nan")
        row[f"{key}_median_low"], row[f"{key}_median_high"] = bootstrap_median_interval(
            values, confidence=confidence, n_resamples=n_resamples, seed=[seed, stream])
    best = df["rate_best"].astype(str).to_numpy() if "rate_best" in df else np.full(n, "", dtype=object)
    for m in (*RATE_MODELS, "none"):
        frac(f"frac_rate_best_{m}", int(np.sum(best == m)))

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

    eps_list = list(eps_list)
    successes = best_of_k_successes(risk_final, eps_list, optimal_risk=optimal_risk)
    for eps, s in zip(eps_list, successes.tolist(), strict=True):
        for k in k_list:
            row[best_of_k_column(k, eps)] = best_of_k(s, n, int(k)) if n else float("nan")
    return row
