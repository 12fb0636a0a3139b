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


VERDICTS: dict[str, VerdictRule] = {}


def _rule(name: str, description: str, tables: tuple[str, ...], **params: Any):
    def register(fn: Callable[[Any, dict[str, Any]], Verdict]) -> Callable[[Any, dict[str, Any]], Verdict]:
        VERDICTS[name] = VerdictRule(name, description, params, tables, fn)
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
        if isinstance(default, int | float) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"verdict.{key} = {value!r} is not allowed: expected a finite number >= 0")
    return params


def evaluate_verdict(spec: Mapping[str, Any], tables: Any) -> Verdict:
    """The verdict of ``spec`` (a study's ``verdict`` mapping) on ``tables``."""
    params = check_verdict_spec(spec)
    rule = VERDICTS[spec["rule"]]
    missing = [name for name in rule.tables if getattr(tables, name, None) is None]
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
       "the difference", ("trajectories",), published=None, published_runs=1000, threshold=None, n_se=2.0,
       match="problem.network.widths")
def _rates_agree_with_published(tables: Any, p: dict[str, Any]) -> Verdict:
    """``published``: {label: rate}, a label being the cell's value of the ``match`` parameter written as text
    (e.g. ``[6]``) or the cell id."""
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
        if key in published and n:
            ref = published[key]
            se = math.sqrt(ref * (1 - ref) * (1 / n + 1 / p["published_runs"]))  # docs/science.md, section 8
            agrees = abs(est - ref) <= p["n_se"] * se
            row.update(published=ref, allowed=p["n_se"] * se, agrees=bool(agrees))
            agree_all &= agrees
            compared += 1
        rows.append(row)
    if compared == 0:
        return Verdict("rates_agree_with_published", "inconclusive", "no cell has a published rate", {"cells": rows})
    n_agree = sum(1 for r in rows if r.get("agrees"))
    summary = (f"{n_agree} of {compared} cells agree with the published rate within {p['n_se']:g} standard errors "
               f"(final risk >= {_fmt(p['threshold'])} counted as spurious)")
    return Verdict("rates_agree_with_published", "pass" if agree_all else "fail", summary,
                   {"threshold": p["threshold"], "n_se": p["n_se"], "published_runs": p["published_runs"],
                    "confidence": CONFIDENCE, "cells": rows})


def _families(risks: np.ndarray, digits: int = 3) -> list[dict[str, Any]]:
    """Distinct final risks (to ``digits`` significant digits) with their counts, most frequent first: the families
    of spurious minima a study found."""
    finite = risks[np.isfinite(risks)]
    values, counts = np.unique([float(f"{r:.{digits}g}") for r in finite], return_counts=True)
    order = np.argsort(-counts, kind="stable")
    out = [{"risk": float(values[i]), "count": int(counts[i])} for i in order]
    if len(finite) < len(risks):
        out.append({"risk": None, "count": int(len(risks) - len(finite))})
    return out


def _label(value: Any) -> str:
    if isinstance(value, tuple | list | np.ndarray):
        return "[" + ", ".join(_label(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
