"""Verdicts: a study's prediction as a check on its tables (docs/studies.md).

A rule takes the study's tables (any object with the ``StudyTables`` attributes ``cells``, ``trajectories``,
``curves``, ``summary``, ``best_of_k``: a rule reads only those it names in ``tables``) and its parameters, and
returns a :class:`Verdict`: ``pass``, ``fail`` or ``inconclusive`` (the tables cannot decide: too few runs, no run
of the kind the claim is about), a one-line summary with the numbers, and the evidence behind it. A rule never
hides a failure: it reports what it measured either way.

Rules are registered in ``VERDICTS`` by name; a study's ``verdict: {rule: NAME, ...}`` is checked when the config
is validated (``check_verdict_spec``), evaluated by the verdict stage (``evaluate_verdict``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._intervals import CONFIDENCE, binomial_interval

__all__ = ["VERDICTS", "VERDICT_STATUSES", "Verdict", "VerdictRule", "check_verdict_spec", "evaluate_verdict"]

VERDICT_STATUSES = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Verdict:
    """What a rule found: ``status`` (one of ``VERDICT_STATUSES``), a one-line ``summary`` with the numbers, and the
    ``evidence`` (JSON-ready numbers and per-cell rows) behind it."""

    rule: str
    status: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"verdict status {self.status!r}: expected one of {VERDICT_STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "status": self.status, "summary": self.summary, "evidence": self.evidence}


@dataclass(frozen=True)
class VerdictRule:
    """A registered rule: its parameters with their defaults (None: required), the tables it reads, and the check."""

    name: str
    description: str
    params: Mapping[str, Any]
    tables: tuple[str, ...]
    check: Callable[[Any, dict[str, Any]], Verdict]
    tables_when: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # more tables where a flag is true

    def tables_for(self, params: Mapping[str, Any]) -> tuple[str, ...]:
        """The tables the rule reads with ``params`` (``check_verdict_spec``'s, defaults filled in)."""
        extra = [t for flag, names in self.tables_when.items() if params.get(flag) for t in names]
        return tuple(dict.fromkeys([*self.tables, *extra]))


VERDICTS: dict[str, VerdictRule] = {}


def _rule(name: str, description: str, tables: tuple[str, ...],
          tables_when: Mapping[str, tuple[str, ...]] | None = None, **params: Any):
    def register(fn: Callable[[Any, dict[str, Any]], Verdict]) -> Callable[[Any, dict[str, Any]], Verdict]:
        VERDICTS[name] = VerdictRule(name, description, params, tables, fn, dict(tables_when or {}))
        return fn

    return register


def check_verdict_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A study's ``verdict`` mapping, validated: its rule exists and its parameters are the rule's (numbers where
    the default is a number). Returns the parameters with defaults filled in; raises ``ValueError`` naming the key."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("rule"), str):
        raise ValueError(f"verdict = {spec!r} is not allowed: expected a mapping with a rule (one of "
                         f"{sorted(VERDICTS)})")
    rule = VERDICTS.get(spec["rule"])
    if rule is None:
        raise ValueError(f"verdict.rule = {spec['rule']!r} is not allowed: expected one of {sorted(VERDICTS)}")
    given = {k: v for k, v in spec.items() if k != "rule"}
    unknown = sorted(set(given) - set(rule.params))
    if unknown:
        raise ValueError(f"verdict: unknown key(s) {unknown} for rule {rule.name!r}: its keys are "
                         f"{sorted(rule.params)}")
    params = {**rule.params, **given}
    missing = sorted(k for k, v in params.items() if v is None)
    if missing:
        raise ValueError(f"verdict: rule {rule.name!r} needs {missing}")
    for key, default in rule.params.items():
        value = params[key]
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ValueError(f"verdict.{key} = {value!r} is not allowed: expected true or false")
        if isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"verdict.{key} = {value!r} is not allowed: expected a finite number >= 0")
    return params


def evaluate_verdict(spec: Mapping[str, Any], tables: Any) -> Verdict:
    """The verdict of ``spec`` (a study's ``verdict`` mapping) on ``tables``."""
    params = check_verdict_spec(spec)
    rule = VERDICTS[spec["rule"]]
    missing = [name for name in rule.tables_for(params) if getattr(tables, name, None) is None]
    if missing:
        return Verdict(rule.name, "inconclusive", f"{rule.name}: the tables {missing} are not available", {})
    return rule.check(tables, params)


def _fmt(x: float) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


# ---------------------------------------------------------------------------------------------- rules
@_rule("risk_never_increases", "C1: the largest relative increase of the risk along any GF trajectory stays within "
       "the integrator's tolerance", ("trajectories",), tolerance=1e-6, method="gf")
def _risk_never_increases(tables: Any, p: dict[str, Any]) -> Verdict:
    traj = tables.trajectories
    cells = tables.cells.set_index("cell")
    kinds = traj["cell"].astype(str).map(cells["method.kind"].astype(str)) if "method.kind" in cells else None
    rows = traj if kinds is None else traj[kinds.to_numpy() == p["method"]]
    if rows.empty:
        return Verdict("risk_never_increases", "inconclusive", f"no {p['method']} trajectory in the study", {})
    per_cell = rows.groupby("cell", observed=True)["max_risk_increase"].agg(["max", "median", "size"])
    worst = float(per_cell["max"].max())
    ok = bool(worst <= p["tolerance"])
    evidence = {"tolerance": p["tolerance"], "max_relative_increase": worst, "n_trajectories": int(len(rows)),
                "cells": [{"cell": str(c), "max": float(r["max"]), "median": float(r["median"]), "n": int(r["size"])}
                          for c, r in per_cell.iterrows()]}
    summary = (f"largest relative risk increase along {len(rows)} {p['method'].upper()} trajectories: "
               f"{_fmt(worst)} ({'within' if ok else 'above'} the tolerance {_fmt(p['tolerance'])})")
    return Verdict("risk_never_increases", "pass" if ok else "fail", summary, evidence)


@_rule("rates_agree_with_published", "a published table of rates regenerated: each cell's fraction of runs whose "
       "final risk is at least `threshold` agrees with the published rate within `n_se` binomial standard errors of "
       "the difference; with `certify_families`, one endpoint of each family of spurious minima is certified",
       ("trajectories",), tables_when={"certify_families": ("final",)}, published=None, published_runs=1000,
       threshold=None, n_se=2.0, match="problem.network.widths", certify_families=False)
def _rates_agree_with_published(tables: Any, p: dict[str, Any]) -> Verdict:
    """``published``: {label: rate}, a label being the cell's value of the ``match`` parameter written as text
    (e.g. ``[6]``) or the cell id. ``certify_families``: each family's first run (lowest trajectory id) gets a
    computer-assisted certificate (``certify_critical_points`` on its final parameters): the family's
    ``certified_class`` (``min``, ``saddle`` or ``none``), ``certified_reason``, radius and lower eigenvalue bound
    (not part of the pass/fail rule: evidence, as Safran & Shamir certified one representative per family)."""
    traj, cells = tables.trajectories, tables.cells
    published = {str(k): float(v) for k, v in dict(p["published"]).items()}
    rows, agree_all, compared = [], True, 0
    for _, cell in cells.iterrows():
        cid = str(cell["cell"])
        label = _label(cell.get(p["match"]) if p["match"] in cells else None)
        key = cid if cid in published else label
        risks = traj.loc[traj["cell"].astype(str) == cid, "risk_final"].to_numpy(dtype=float)
        n = len(risks)
        k = int(np.sum(~(risks < p["threshold"])))  # a NaN risk (a run that blew up) counts as not at zero
        low, high = binomial_interval(np.array([k]), np.array([n]))
        est = k / n if n else float("nan")
        row = {"cell": cid, "label": label, "n": n, "spurious": k, "estimate": est, "low": float(low[0]),
               "high": float(high[0]), "families": _families(risks[~(risks < p["threshold"])])}
        if p["certify_families"] and row["families"]:
            _certify_families(row["families"], cell, traj.loc[traj["cell"].astype(str) == cid], tables.final,
                              p["threshold"])
        if key in published and n:
            ref = published[key]
            se = math.sqrt(ref * (1 - ref) * (1 / n + 1 / p["published_runs"]))  # docs/science.md, section 8
            agrees = abs(est - ref) <= p["n_se"] * se
            row.update(published=ref, allowed=p["n_se"] * se, agrees=bool(agrees),
                       z=(est - ref) / se if se > 0 else None)
            agree_all &= agrees
            compared += 1
        rows.append(row)
    if compared == 0:
        return Verdict("rates_agree_with_published", "inconclusive", "no cell has a published rate", {"cells": rows})
    n_agree = sum(1 for r in rows if r.get("agrees"))
    # Even if every published rate were exact, each cell falls outside n_se standard errors with probability
    # 2(1 - Phi(n_se)) (normal approximation); say how many such misses chance alone explains.
    from scipy import stats  # lazily: `import reluflow` stays light

    miss = float(2 * stats.norm.sf(p["n_se"]))
    n_miss = compared - n_agree
    p_chance = float(stats.binom.sf(n_miss - 1, compared, miss))
    summary = (f"{n_agree} of {compared} cells agree with the published rate within {p['n_se']:g} standard errors "
               f"(final risk >= {_fmt(p['threshold'])} counted as spurious)")
    if n_miss:
        summary += (f"; {compared * miss:.1f} disagreements expected by chance alone, "
                    f"P(at least {n_miss}) = {p_chance:.2g}")
    # the whole table at once: if every published rate held, the sum of the cells' squared z-scores would be about
    # chi-square with one degree of freedom per cell (cells with a published rate of 0 or 1 have no z)
    zs = [r["z"] for r in rows if r.get("z") is not None]
    chi2 = float(sum(z * z for z in zs))
    chi2_p = float(stats.chi2.sf(chi2, len(zs))) if zs else float("nan")
    if len(zs) > 1:
        summary += f"; all cells together: chi-square {chi2:.1f} on {len(zs)} cells, p = {chi2_p:.2g}"
    certified = {}
    if p["certify_families"]:
        classes = [f["certified_class"] for r in rows for f in r["families"] if "certified_class" in f]
        certified = {f"families_certified_{c}": classes.count(c) for c in ("min", "saddle", "none")}
        summary += (f"; spurious families certified: {classes.count('min')} of {len(classes)} strict local minima, "
                    f"{classes.count('saddle')} saddles, {classes.count('none')} not certified")
    return Verdict("rates_agree_with_published", "pass" if agree_all else "fail", summary,
                   {"threshold": p["threshold"], "n_se": p["n_se"], "published_runs": p["published_runs"],
                    "confidence": CONFIDENCE, "disagreements": n_miss,
                    "expected_disagreements_by_chance": compared * miss,
                    "p_at_least_as_many_by_chance": p_chance, "chi2": chi2, "chi2_cells": len(zs),
                    "chi2_p": chi2_p, **certified, "cells": rows})


def _certify_families(families: list[dict[str, Any]], cell: Any, traj: Any, final: Any, threshold: float) -> None:
    """Add to each family of one cell (``_families``) its first run (``trajectory``) and that run's certificate
    (``certified_class``, ``certified_reason``, ``certified_detail``, ``certified_radius``, ``certified_eig_low``),
    the problem rebuilt from the cell's ``params``."""
    from ..problem import Problem  # lazily: the rules that need no problem stay light
    from ._certify import certify_critical_points  # without python-flint: class none, reason unavailable

    spurious = traj.loc[~(traj["risk_final"].to_numpy(dtype=float) < threshold)].sort_values("trajectory")
    first: dict[float, int] = {}
    for tid, risk in zip(spurious["trajectory"], spurious["risk_final"], strict=True):
        if np.isfinite(risk):
            first.setdefault(_family_risk(risk), int(tid))
    problem = Problem.from_dict(json.loads(cell["params"])["problem"])
    theta = final.loc[final["cell"].astype(str) == str(cell["cell"])].set_index("trajectory")["theta_final"]
    for fam in families:
        if fam["risk"] is None:
            continue
        tid = first[fam["risk"]]
        out = certify_critical_points(problem, np.asarray(theta.loc[tid], dtype=float)[None])
        fam.update(trajectory=tid, certified_class=str(out["certified_class"][0]),
                   certified_reason=str(out["certified_reason"][0]),
                   certified_detail=str(out["certified_detail"][0]),
                   certified_radius=float(out["certified_radius"][0]),
                   certified_eig_low=float(out["certified_eig_low"][0]))


def _families(risks: np.ndarray, digits: int = 3) -> list[dict[str, Any]]:
    """Distinct final risks (to ``digits`` significant digits) with their counts, most frequent first: the families
    of spurious minima a study found."""
    finite = risks[np.isfinite(risks)]
    values, counts = np.unique([_family_risk(r, digits) for r in finite], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    out = [{"risk": float(values[i]), "count": int(counts[i])} for i in order]
    if len(finite) < len(risks):
        out.append({"risk": None, "count": int(len(risks) - len(finite))})
    return out


def _family_risk(risk: float, digits: int = 3) -> float:
    """The final risk that names a run's family: ``risk`` to ``digits`` significant digits."""
    return float(f"{risk:.{digits}g}")


def _label(value: Any) -> str:
    if isinstance(value, tuple | list | np.ndarray):
        return "[" + ", ".join(_label(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------------------- helpers (C2–C11)
def _interval(k: int, n: int) -> tuple[float, float]:
    low, high = binomial_interval(np.array([k]), np.array([n]))
    return float(low[0]), float(high[0])


def _fraction(k: int, n: int) -> dict[str, Any]:
    """A count out of n with its fraction and 95 % Wilson interval (JSON-ready)."""
    low, high = _interval(k, n)
    return {"count": int(k), "n": int(n), "fraction": k / n if n else float("nan"), "low": low, "high": high}


def _cell_column(tables: Any, rows: Any, column: str) -> Any:
    """The cells-table ``column`` for each row of ``rows`` (by its ``cell``), or None when the cells lack it."""
    cells = tables.cells
    if cells is None or column not in cells:
        return None
    by_cell = dict(zip(cells["cell"].astype(str), cells[column], strict=True))
    return rows["cell"].astype(str).map(by_cell)


def _bounded(traj: Any) -> np.ndarray:
    return ~traj["status"].astype(str).isin(["diverged", "nonfinite"]).to_numpy()


def _order_fit(steps: np.ndarray, values: np.ndarray) -> float:
    """Slope of log(values) against log(steps): the order p of values ~ C step^p (NaN with < 2 usable points)."""
    ok = np.isfinite(values) & (values > 0) & np.isfinite(steps) & (steps > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(steps[ok]), np.log(values[ok]), 1)[0])


# ---------------------------------------------------------------------------------------------- C2
@_rule("bounded_runs_reach_critical_values", "C2: every bounded run ends with |G| <= `grad_tol` at a risk within "
       "`value_tol` of a critical value the study found (refined critical points and zero-risk endpoints); passes "
       "when every run is bounded and at least `min_fraction` of them do", ("trajectories",), value_tol=1e-6,
       grad_tol=1e-4, min_fraction=0.95)
def _bounded_runs_reach_critical_values(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "bounded_runs_reach_critical_values"
    traj = tables.trajectories
    if traj.empty:
        return Verdict(name, "inconclusive", "no trajectory in the study", {})
    bounded = _bounded(traj)
    status = traj["status"].astype(str).to_numpy()
    # critical values: risks of converged, local refinements (a critical point describes the endpoint) and of
    # zero-risk endpoints (a global minimum); a run's own value counts only through the set
    none = np.zeros(len(traj), bool)
    local = traj["refine_local"].fillna(False).to_numpy(dtype=bool) if "refine_local" in traj else none
    conv = traj["refine_converged"].fillna(False).to_numpy(dtype=bool) if "refine_converged" in traj else local
    values = np.concatenate([traj["nearest_risk"].to_numpy(dtype=float)[local & conv] if "nearest_risk" in traj
                             else np.array([]), traj["risk_final"].to_numpy(dtype=float)[status == "zero_risk"]])
    values = np.sort(values[np.isfinite(values)])
    if values.size:  # one value per cluster of values within value_tol of each other (0 and 1e-12 are one)
        values = values[np.r_[True, np.diff(values) > p["value_tol"]]]
    if values.size == 0:
        return Verdict(name, "inconclusive", "no critical value found (no converged local refinement, no zero-risk "
                       "endpoint): turn on method.refine", {"n_trajectories": int(len(traj))})
    risk = traj["risk_final"].to_numpy(dtype=float)
    dist = np.min(np.abs(risk[:, None] - values[None, :]), axis=1)
    grad = traj["grad_norm_final"].to_numpy(dtype=float)
    ok = bounded & (dist <= p["value_tol"]) & (grad <= p["grad_tol"])
    n_b = int(bounded.sum())
    frac = _fraction(int(ok.sum()), n_b)
    families = _families(values)
    passed = bool(n_b == len(traj) and frac["fraction"] >= p["min_fraction"])
    evidence = {"value_tol": p["value_tol"], "grad_tol": p["grad_tol"], "min_fraction": p["min_fraction"],
                "critical_values": [f["risk"] for f in families], "n_trajectories": int(len(traj)),
                "bounded": _fraction(n_b, len(traj)), "at_critical_value": frac,
                "max_distance": float(np.max(dist[bounded])) if n_b else float("nan"),
                "grad_norm_final_median": float(np.median(grad[bounded])) if n_b else float("nan"),
                "described_by_a_critical_point": _fraction(int((local & conv).sum() + (status == "zero_risk").sum()),
                                                           len(traj))}
    summary = (f"{n_b}/{len(traj)} runs bounded; {frac['count']}/{n_b} ({frac['fraction']:.1%}, 95 % "
               f"[{frac['low']:.1%}, {frac['high']:.1%}]) end within {_fmt(p['value_tol'])} of one of "
               f"{len(values)} critical values with |G| <= {_fmt(p['grad_tol'])} (needed {p['min_fraction']:.0%})")
    return Verdict(name, "pass" if passed else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C3
@_rule("small_initial_risk_reaches_zero", "C3: every run whose initial risk is below `initial_risk_below` ends with "
       "risk <= `eps`", ("trajectories",), initial_risk_below=None, eps=1e-6)
def _small_initial_risk_reaches_zero(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "small_initial_risk_reaches_zero"
    traj = tables.trajectories
    small = traj["risk_init"].to_numpy(dtype=float) < p["initial_risk_below"]
    risk = traj["risk_final"].to_numpy(dtype=float)
    n = int(small.sum())
    if n == 0:
        return Verdict(name, "inconclusive", f"no run starts below the risk {_fmt(p['initial_risk_below'])}",
                       {"n_trajectories": int(len(traj))})
    reached = small & (risk <= p["eps"])
    frac = _fraction(int(reached.sum()), n)
    large = ~small
    cells = []
    for cell, rows in traj.assign(_small=small, _ok=reached).groupby("cell", observed=True):
        cells.append({"cell": str(cell), "n": int(len(rows)), "small": int(rows["_small"].sum()),
                      "small_reached": int(rows["_ok"].sum()), "risk_final_max": float(rows["risk_final"].max())})
    evidence = {"initial_risk_below": p["initial_risk_below"], "eps": p["eps"], "small_initial_risk": frac,
                "risk_final_max_small": float(np.nanmax(risk[small])),
                "others_reached": _fraction(int((large & (risk <= p["eps"])).sum()), int(large.sum())),
                "cells": cells}
    ok = frac["count"] == n
    summary = (f"{frac['count']}/{n} runs with initial risk < {_fmt(p['initial_risk_below'])} end with risk <= "
               f"{_fmt(p['eps'])} (largest {_fmt(evidence['risk_final_max_small'])}; 95 % interval of the fraction "
               f"[{frac['low']:.3f}, {frac['high']:.3f}]); {evidence['others_reached']['count']}/{int(large.sum())} "
               f"of the others too")
    return Verdict(name, "pass" if ok else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C4
def _sq_norm_at(curve: Any, t: float) -> float:
    """|theta_t|^2 at time t, interpolated linearly in ln t between checkpoints (NaN outside the curve)."""
    ts = curve["t"].to_numpy(dtype=float)
    sq = curve["param_norm"].to_numpy(dtype=float) ** 2
    keep = ts > 0
    ts, sq = ts[keep], sq[keep]
    if ts.size == 0 or t < ts[0] or t > ts[-1] * (1 + 1e-9):
        return float("nan")
    return float(np.interp(np.log(t), np.log(ts), sq))


@_rule("unbounded_with_vanishing_risk_occurs", "C4 (a possibility): some run ends with risk <= `eps` while |theta|^2 "
       "still grows by >= `min_increment` over the last decade of the horizon and by at least `min_ratio` times its "
       "growth over the decade before (runs that stopped on a tolerance before the horizon converged at finite "
       "parameters) (a bounded, converging run's increments shrink geometrically; sqrt(ln t) growth "
       "keeps them steady)", ("trajectories", "curves"), eps=1e-3, min_increment=1.0, min_ratio=0.5)
def _unbounded_with_vanishing_risk_occurs(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "unbounded_with_vanishing_risk_occurs"
    traj, curves = tables.trajectories, tables.curves
    finals = traj.set_index([traj["cell"].astype(str), "trajectory"])
    cells, total, total_n = [], 0, 0
    for cell, rows in curves.groupby(curves["cell"].astype(str), observed=True):
        n, k, low_risk, incs, stopped = 0, 0, 0, [], 0
        horizon = float(rows["t"].max())
        for tid, curve in rows.groupby("trajectory"):
            curve = curve.sort_values("t")
            n += 1
            t_end = float(curve["t"].iloc[-1])
            risk = float(finals.loc[(cell, tid), "risk_final"])
            if not risk <= p["eps"]:
                continue
            if t_end < horizon * (1 - 1e-9):  # stopped on a tolerance before the horizon: converged, at finite θ
                stopped += 1
                continue
            low_risk += 1
            last = _sq_norm_at(curve, t_end) - _sq_norm_at(curve, t_end / 10)
            prev = _sq_norm_at(curve, t_end / 10) - _sq_norm_at(curve, t_end / 100)
            if np.isfinite(last):
                incs.append(last)
            if last >= p["min_increment"] and last >= p["min_ratio"] * prev:
                k += 1
        total, total_n = total + k, total_n + n
        cells.append({"cell": cell, "n": n, "risk_below_eps_at_horizon": low_risk, "stopped_before_horizon": stopped,
                      "unbounded_vanishing": _fraction(k, n),
                      "sq_norm_increment_last_decade_median": float(np.median(incs)) if incs else float("nan")})
    if total_n == 0:
        return Verdict(name, "inconclusive", "no curve in the study", {})
    best = max(cells, key=lambda c: c["unbounded_vanishing"]["count"])
    f = best["unbounded_vanishing"]
    summary = (f"{total}/{total_n} runs end with risk <= {_fmt(p['eps'])} while |theta|^2 still grows "
               f">= {_fmt(p['min_increment'])} per decade; most in cell {best['cell']}: {f['count']}/{f['n']} "
               f"({f['fraction']:.0%}, 95 % [{f['low']:.0%}, {f['high']:.0%}])")
    evidence = {"eps": p["eps"], "min_increment": p["min_increment"], "min_ratio": p["min_ratio"], "cells": cells}
    return Verdict(name, "pass" if total >= 1 else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C5
@_rule("success_grows_with_width_and_k", "C5: the success fraction (best-of-1, final risk <= `eps`) does not decrease "
       "with width (`width`) nor with the other varying grid parameter (their 95 % intervals overlap when it "
       "seems to), and best-of-`k` in the cell with the largest values is >= `min_success`", ("best_of_k",),
       eps=1e-4, k=16, min_success=0.99, width="problem.network.widths", steps="method.n_steps")
def _success_grows_with_width_and_k(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "success_grows_with_width_and_k"
    bok, cells = tables.best_of_k, tables.cells
    rows = bok[np.isclose(bok["eps"].to_numpy(dtype=float), p["eps"])]
    if rows.empty:
        return Verdict(name, "inconclusive", f"no best-of-K rows at eps = {_fmt(p['eps'])}", {})
    info = cells.set_index(cells["cell"].astype(str))

    def size(v: Any) -> float:
        return float(np.sum(v)) if isinstance(v, tuple | list | np.ndarray) else float(v)

    table = []
    for cell, r in rows.groupby(rows["cell"].astype(str), observed=True, sort=False):
        one = r[r["k"] == 1].iloc[0]
        kk = r[r["k"] == p["k"]]
        table.append({"cell": cell, "width": size(info.loc[cell, p["width"]]) if p["width"] in info else 0.0,
                      "steps": size(info.loc[cell, p["steps"]]) if p["steps"] in info else 0.0,
                      "p1": float(one["estimate"]), "p1_low": float(one["low"]), "p1_high": float(one["high"]),
                      "successes": int(one["successes"]), "n": int(one["n"]),
                      "pk": float(kk["estimate"].iloc[0]) if len(kk) else float("nan"),
                      "pk_low": float(kk["low"].iloc[0]) if len(kk) else float("nan")})
    violations = []
    for a in table:
        for b in table:
            larger = (b["width"] >= a["width"] and b["steps"] >= a["steps"]) and (b["width"], b["steps"]) != (
                a["width"], a["steps"])
            if larger and b["p1_high"] < a["p1_low"]:
                violations.append({"smaller": a["cell"], "larger": b["cell"], "p1_smaller": a["p1"],
                                   "p1_larger": b["p1"]})
    top = max(table, key=lambda c: (c["width"], c["steps"]))
    top_ok = bool(np.isfinite(top["pk"]) and top["pk"] >= p["min_success"])
    ok = not violations and top_ok
    summary = (f"best-of-1 success at eps {_fmt(p['eps'])}: "
               + ", ".join(f"{c['cell']} {c['p1']:.3f}" for c in table)
               + f"; {len(violations)} decrease(s) beyond the intervals; best-of-{p['k']} in {top['cell']} "
               f"{_fmt(top['pk'])} (needed >= {p['min_success']:g})")
    evidence = {"eps": p["eps"], "k": p["k"], "min_success": p["min_success"], "cells": table,
                "violations": violations, "top_cell": top["cell"]}
    return Verdict(name, "pass" if ok else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C6
@_rule("rates_polynomial_or_faster", "C6: among bounded runs still moving at the end (status `budget`), at least "
       "`min_fraction` have a tail fitted as exponential, or polynomial with exponent >= `min_exponent`; runs that "
       "stopped on a tolerance (zero risk, zero gradient) converged in finite time and count as faster",
       ("trajectories",), min_exponent=0.8, min_fraction=0.9)
def _rates_polynomial_or_faster(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "rates_polynomial_or_faster"
    traj = tables.trajectories
    bounded = _bounded(traj)
    status = traj["status"].astype(str).to_numpy()
    best = traj["rate_best"].astype(str).to_numpy()
    expo = traj["rate_poly"].to_numpy(dtype=float)
    moving = bounded & (status == "budget")
    poly = moving & (best == "polynomial")
    # `none` at the end of a long run: the tail is flat to round-off (a plateau reached faster than any power)
    ok = moving & ((best == "exponential") | (best == "none") | (poly & (expo >= p["min_exponent"])))
    n = int(moving.sum())
    if n == 0:
        return Verdict(name, "inconclusive", "no bounded run was still moving at the end: nothing to fit",
                       {"n_trajectories": int(len(traj))})
    frac = _fraction(int(ok.sum()), n)
    e = expo[poly & np.isfinite(expo)]
    q = np.quantile(e, [0.1, 0.5, 0.9]) if e.size else np.full(3, np.nan)
    counts = {m: int((moving & (best == m)).sum()) for m in ("exponential", "polynomial", "none")}
    evidence = {"min_exponent": p["min_exponent"], "min_fraction": p["min_fraction"], "n_trajectories": int(len(traj)),
                "stopped_on_tolerance": int((bounded & (status != "budget")).sum()), "moving": counts,
                "polynomial_or_faster": frac, "exponent_q10": float(q[0]), "exponent_median": float(q[1]),
                "exponent_q90": float(q[2])}
    passed = frac["fraction"] >= p["min_fraction"]
    summary = (f"{frac['count']}/{n} runs still moving at t_end converge polynomially (exponent >= "
               f"{p['min_exponent']:g}) or faster ({frac['fraction']:.0%}, 95 % [{frac['low']:.0%}, "
               f"{frac['high']:.0%}]); {counts['polynomial']} polynomial tails, exponent median {_fmt(q[1])} "
               f"(q10-q90 {_fmt(q[0])}-{_fmt(q[2])}); {evidence['stopped_on_tolerance']} stopped on a tolerance")
    return Verdict(name, "pass" if passed else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C7
def _gaps(gd: Any, gf: Any, floor: float) -> np.ndarray:
    """Per trajectory (present in both), max over the GD checkpoints within the GF horizon with both risks above
    ``floor`` of |log L_GD(t) - log L_GF(t)|, log L_GF interpolated linearly in t."""
    out = []
    gf_by = {tid: c.sort_values("t") for tid, c in gf.groupby("trajectory")}
    for tid, c in gd.groupby("trajectory"):
        ref = gf_by.get(tid)
        if ref is None:
            continue
        ts, rs = ref["t"].to_numpy(dtype=float), ref["risk"].to_numpy(dtype=float)
        keep = rs > floor
        t, r = c["t"].to_numpy(dtype=float), c["risk"].to_numpy(dtype=float)
        sel = (t <= ts[-1]) & (r > floor) & np.isfinite(r)
        if keep.sum() < 2 or not sel.any():
            continue
        ref_log = np.interp(t[sel], ts[keep], np.log(rs[keep]))
        out.append(float(np.max(np.abs(np.log(r[sel]) - ref_log))))
    return np.array(out)


@_rule("gd_approaches_gf", "C7: the largest gap |log L_GD(t) - log L_GF(t)| along a run (same initialization, GF "
       "cell as reference) shrinks with the step: its median's fitted order in the step over steps <= `max_step` is "
       ">= `order` - `margin`", ("curves",), max_step=0.02, order=1.0, margin=0.3, floor=1e-13)
def _gd_approaches_gf(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "gd_approaches_gf"
    curves = tables.curves
    kinds = _cell_column(tables, curves, "method.kind")
    steps = _cell_column(tables, curves, "method.step_size")
    if kinds is None or steps is None:
        return Verdict(name, "inconclusive", "the cells do not say method.kind and method.step_size", {})
    kinds = kinds.astype(str).to_numpy()
    if not (kinds == "gf").any() or not (kinds == "gd").any():
        return Verdict(name, "inconclusive", "needs a GF cell and GD cells", {})
    gf = curves[kinds == "gf"]
    rows = []
    gd_all = curves[kinds == "gd"]
    gd_steps = steps[kinds == "gd"].astype(float)
    for step in sorted(set(gd_steps), reverse=True):
        d = _gaps(gd_all[gd_steps.to_numpy() == step], gf, p["floor"])
        q = np.quantile(d, [0.5, 0.9]) if d.size else np.full(2, np.nan)
        rows.append({"step": float(step), "n": int(d.size), "gap_median": float(q[0]), "gap_q90": float(q[1])})
    for a, b in zip(rows, rows[1:], strict=False):
        a["ratio_to_half_step"] = a["gap_median"] / b["gap_median"] if b["gap_median"] > 0 else float("nan")
    small = [r for r in rows if r["step"] <= p["max_step"] * (1 + 1e-12)]
    fitted = _order_fit(np.array([r["step"] for r in small]), np.array([r["gap_median"] for r in small]))
    if not np.isfinite(fitted):
        return Verdict(name, "inconclusive", f"fewer than two GD step sizes <= {p['max_step']:g} with a gap",
                       {"steps": rows})
    ok = fitted >= p["order"] - p["margin"]
    summary = ("median max |log L_GD - log L_GF| by step: "
               + ", ".join(f"{r['step']:g}: {_fmt(r['gap_median'])}" for r in rows)
               + f"; fitted order over steps <= {p['max_step']:g}: {fitted:.2f} (needed >= "
               f"{p['order'] - p['margin']:.2f})")
    evidence = {"max_step": p["max_step"], "order": p["order"], "margin": p["margin"], "floor": p["floor"],
                "fitted_order": fitted, "steps": rows}
    return Verdict(name, "pass" if ok else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C8
@_rule("never_reaches_dead_set", "C8: the smallest |w_j| + |b_j| over units, time and runs stays above `threshold`; "
       "the counts of runs within delta of the set are reported for delta = 0.1 ... 0.001 (about proportional to "
       "delta for a curve meeting a tube around a codimension-2 set)", ("trajectories",), threshold=1e-6)
def _never_reaches_dead_set(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "never_reaches_dead_set"
    traj = tables.trajectories
    m = traj["min_unit_norm"].to_numpy(dtype=float)
    m = m[np.isfinite(m)]
    if m.size == 0:
        return Verdict(name, "inconclusive", "no finite min_unit_norm in the study", {})
    deltas = [0.1, 0.03, 0.01, 0.003, 0.001]
    counts = {f"{d:g}": _fraction(int((m < d).sum()), int(m.size)) for d in deltas}
    low = float(m.min())
    ok = low > p["threshold"]
    summary = (f"smallest |w_j| + |b_j| over {m.size} runs: {_fmt(low)} ({'above' if ok else 'not above'} "
               f"{_fmt(p['threshold'])}); runs within delta = " +
               ", ".join(f"{k}: {v['count']}" for k, v in counts.items()))
    return Verdict(name, "pass" if ok else "fail", summary,
                   {"threshold": p["threshold"], "min_unit_norm_min": low, "n": int(m.size),
                    "min_unit_norm_median": float(np.median(m)), "within_delta": counts})


# ---------------------------------------------------------------------------------------------- C9
@_rule("global_minima_are_regular", "C9: at global-minimum endpoints the Hessian rank equals `codimension` (= P - "
       "dim of the manifold of global minima) in at least `min_fraction` of them", ("trajectories",),
       codimension=None, min_fraction=0.95)
def _global_minima_are_regular(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "global_minima_are_regular"
    traj = tables.trajectories
    rows = traj[(traj["class"].astype(str) == "global_min").to_numpy()]
    rows = rows[rows["hessian_rank"].notna().to_numpy()]
    if rows.empty:
        return Verdict(name, "inconclusive", "no global-minimum endpoint with a Hessian rank", {})
    n_params = _cell_column(tables, rows, "n_params")
    rank = rows["hessian_rank"].to_numpy(dtype=float)
    match = rank == p["codimension"]
    frac = _fraction(int(match.sum()), int(len(rows)))
    cells = []
    for cell, r in rows.assign(_P=n_params if n_params is not None else np.nan).groupby("cell", observed=True):
        ranks, counts = np.unique(r["hessian_rank"].to_numpy(dtype=int), return_counts=True)
        P = float(r["_P"].iloc[0])
        cells.append({"cell": str(cell), "n_params": P, "expected_dim": P - p["codimension"],
                      "global_min": int(len(r)), "ranks": {str(k): int(c) for k, c in zip(ranks, counts, strict=True)},
                      "lambda_min_positive_min": float(r["lambda_min_positive"].min())
                      if "lambda_min_positive" in r else float("nan")})
    ok = frac["fraction"] >= p["min_fraction"]
    summary = (f"{frac['count']}/{frac['n']} global-minimum endpoints have Hessian rank {p['codimension']} = P - dim "
               f"({frac['fraction']:.0%}, 95 % [{frac['low']:.0%}, {frac['high']:.0%}]; needed "
               f"{p['min_fraction']:.0%}); " + ", ".join(f"{c['cell']}: P = {c['n_params']:g}, ranks {c['ranks']}"
                                                         for c in cells))
    return Verdict(name, "pass" if ok else "fail", summary,
                   {"codimension": p["codimension"], "min_fraction": p["min_fraction"], "regular": frac,
                    "cells": cells})


# ---------------------------------------------------------------------------------------------- C10
@_rule("balance_drift_order", "C10: the balance drift of every GF run is <= `gf_tolerance`; the median |drift| of "
       "GD has fitted order in the step over steps <= `max_step` of at least `order` - `margin`",
       ("trajectories",), gf_tolerance=1e-6, max_step=0.02, order=1.0, margin=0.3)
def _balance_drift_order(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "balance_drift_order"
    traj = tables.trajectories
    kinds = _cell_column(tables, traj, "method.kind")
    steps = _cell_column(tables, traj, "method.step_size")
    if kinds is None:
        return Verdict(name, "inconclusive", "the cells do not say method.kind", {})
    kinds = kinds.astype(str).to_numpy()
    drift = np.abs(traj["balance_drift"].to_numpy(dtype=float))
    gf = drift[kinds == "gf"]
    rows = []
    if steps is not None and (kinds == "gd").any():
        st = steps.to_numpy(dtype=float)
        for s in sorted(set(st[kinds == "gd"]), reverse=True):
            d = drift[(kinds == "gd") & (st == s)]
            rows.append({"step": float(s), "n": int(d.size), "drift_median": float(np.median(d)),
                         "drift_max": float(np.max(d))})
    for a, b in zip(rows, rows[1:], strict=False):
        a["ratio_to_half_step"] = a["drift_median"] / b["drift_median"] if b["drift_median"] > 0 else float("nan")
    small = [r for r in rows if r["step"] <= p["max_step"] * (1 + 1e-12)]
    fitted = _order_fit(np.array([r["step"] for r in small]), np.array([r["drift_median"] for r in small]))
    if gf.size == 0 and not np.isfinite(fitted):
        return Verdict(name, "inconclusive", "no GF run and fewer than two GD step sizes", {})
    gf_max = float(np.max(gf)) if gf.size else float("nan")
    gf_ok = gf.size == 0 or gf_max <= p["gf_tolerance"]
    gd_ok = not np.isfinite(fitted) and not rows or fitted >= p["order"] - p["margin"]
    summary = (f"GF balance drift max {_fmt(gf_max)} (tolerance {_fmt(p['gf_tolerance'])}); GD median drift by step: "
               + ", ".join(f"{r['step']:g}: {_fmt(r['drift_median'])}" for r in rows)
               + f"; fitted order over steps <= {p['max_step']:g}: {_fmt(fitted)} (needed >= "
               f"{p['order'] - p['margin']:.2f})")
    evidence = {"gf_tolerance": p["gf_tolerance"], "gf_drift_max": gf_max, "gf_runs": int(gf.size),
                "max_step": p["max_step"], "order": p["order"], "margin": p["margin"], "fitted_order": fitted,
                "steps": rows}
    return Verdict(name, "pass" if gf_ok and gd_ok else "fail", summary, evidence)


# ---------------------------------------------------------------------------------------------- C11
@_rule("rate_one_bound", "C11: along each bounded run reaching the end, the largest (1 + t)(L_t - L_inf) over the "
       "last decade of t is at most `max_ratio` times the largest over the decade before (L_inf: the fitted limit, "
       "at most the run's smallest risk); runs whose earlier value is below `floor` sit at round-off and are not "
       "judged; passes when at least `min_fraction` of the judged runs satisfy it", ("trajectories", "curves"),
       max_ratio=1.0, floor=1e-9, min_fraction=0.95)
def _rate_one_bound(tables: Any, p: dict[str, Any]) -> Verdict:
    name = "rate_one_bound"
    traj, curves = tables.trajectories, tables.curves
    info = traj.set_index([traj["cell"].astype(str), "trajectory"])
    ratios, sups, at_floor, short = [], [], 0, 0
    for (cell, tid), c in curves.groupby([curves["cell"].astype(str), "trajectory"], observed=True):
        row = info.loc[(cell, tid)]
        if str(row["status"]) in ("diverged", "nonfinite"):
            continue
        t, r = c["t"].to_numpy(dtype=float), c["risk"].to_numpy(dtype=float)
        t_end = float(t.max())
        lo_inf = float(row["risk_min"])
        fit = float(row["risk_inf"]) if "risk_inf" in row and np.isfinite(row["risk_inf"]) else lo_inf
        l_inf = min(fit, lo_inf)
        g = (1 + t) * (r - l_inf)
        last = (t > t_end / 10) & (t <= t_end)
        prev = (t > t_end / 100) & (t <= t_end / 10)
        if not last.any() or not prev.any() or str(row["status"]) != "budget":
            short += 1
            continue
        s_last, s_prev = float(np.max(g[last])), float(np.max(g[prev]))
        sups.append(float(np.max(g)))
        if s_prev <= p["floor"]:
            at_floor += 1
            continue
        ratios.append(s_last / s_prev)
    ratios_a = np.array(ratios)
    n = int(ratios_a.size)
    if n == 0:
        return Verdict(name, "inconclusive", "no bounded run with a tail above the floor over the last two decades",
                       {"at_floor": at_floor, "stopped_early": short})
    frac = _fraction(int((ratios_a <= p["max_ratio"]).sum()), n)
    ok = frac["fraction"] >= p["min_fraction"]
    summary = (f"{frac['count']}/{n} runs have sup (1+t)(L - L_inf) over the last decade <= {p['max_ratio']:g} x the "
               f"decade before ({frac['fraction']:.0%}, 95 % [{frac['low']:.0%}, {frac['high']:.0%}]); ratio "
               f"median {_fmt(np.median(ratios_a))}, max {_fmt(ratios_a.max())}; overall sup {_fmt(max(sups))}; "
               f"{at_floor} at round-off, {short} stopped before t_end")
    evidence = {"max_ratio": p["max_ratio"], "floor": p["floor"], "min_fraction": p["min_fraction"], "bounded": frac,
                "ratio_median": float(np.median(ratios_a)), "ratio_max": float(ratios_a.max()),
                "sup_overall": float(max(sups)), "at_floor": at_floor, "stopped_before_end": short}
    return Verdict(name, "pass" if ok else "fail", summary, evidence)
