"""Verdicts (docs/studies.md): each rule computed from tables, a failure reported with its evidence, bad verdict
specs refused naming the key; the catalogue's config plumbing (include, scale)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from reluflow.analysis import VERDICTS, check_verdict_spec, evaluate_verdict
from reluflow.config import ConfigError, find_schema, load_config_files, plan_config, study_origins

ROOT = Path(__file__).resolve().parents[1]


def _tables(cells: dict[str, dict], risks: dict[str, np.ndarray], **traj_cols: dict[str, np.ndarray]):
    cell_df = pd.DataFrame([{"cell": c, **params} for c, params in cells.items()])
    rows = []
    for c, r in risks.items():
        frame = pd.DataFrame({"cell": c, "trajectory": np.arange(len(r)), "risk_final": r})
        for name, by_cell in traj_cols.items():
            frame[name] = by_cell[c]
        rows.append(frame)
    return SimpleNamespace(cells=cell_df, trajectories=pd.concat(rows, ignore_index=True), curves=None, summary=None,
                           best_of_k=None)


def test_risk_never_increases_passes_and_fails_on_the_numbers():
    cells = {"a": {"method.kind": "gf"}, "b": {"method.kind": "gd"}}
    increases = {"a": np.array([0.0, 1e-9, 3e-8]), "b": np.array([0.5, 0.1, 0.0])}  # GD may go up: not judged
    t = _tables(cells, {"a": np.zeros(3), "b": np.zeros(3)}, max_risk_increase=increases)
    ok = evaluate_verdict({"rule": "risk_never_increases", "tolerance": 1e-6}, t)
    assert ok.status == "pass" and ok.evidence["max_relative_increase"] == 3e-8 and ok.evidence["n_trajectories"] == 3
    bad = evaluate_verdict({"rule": "risk_never_increases", "tolerance": 1e-8}, t)
    assert bad.status == "fail" and "3e-08 (above the tolerance 1e-08)" in bad.summary
    none = evaluate_verdict({"rule": "risk_never_increases"}, _tables({"b": {"method.kind": "gd"}}, {"b": np.zeros(2)},
                                                                      max_risk_increase={"b": np.zeros(2)}))
    assert none.status == "inconclusive"


def test_published_rates_agree_within_two_standard_errors():
    """docs/science.md section 8: |p_hat - p| <= 2 sqrt(p (1 - p) (1/N + 1/1000)); NaN risks count as spurious."""
    rng = np.random.default_rng(0)
    n = 400
    cells = {"k6": {"problem.network.widths": (6,)}, "k9": {"problem.network.widths": (9,)}}
    risks = {"k6": np.where(rng.random(n) < 0.003, 0.1, 0.0), "k9": np.where(np.arange(n) < 0.30 * n, 0.05, 0.0)}
    risks["k9"][-1] = np.nan
    spec = {"rule": "rates_agree_with_published", "threshold": 2e-3, "published": {"[6]": 0.003, "[9]": 0.218}}
    v = evaluate_verdict(spec, _tables(cells, risks))
    rows = {r["cell"]: r for r in v.evidence["cells"]}
    assert rows["k9"]["spurious"] == 121  # 120 spurious + the run that blew up
    allowed = 2 * math.sqrt(0.218 * 0.782 * (1 / n + 1 / 1000))
    assert rows["k9"]["allowed"] == pytest.approx(allowed) and rows["k9"]["agrees"] is False
    assert rows["k6"]["agrees"] is True and v.status == "fail" and "1 of 2 cells agree" in v.summary
    assert rows["k9"]["families"][0] == {"risk": 0.05, "count": 120} and rows["k9"]["families"][-1]["risk"] is None
    assert rows["k9"]["low"] < rows["k9"]["estimate"] < rows["k9"]["high"]
    # chance alone: each of the 2 cells misses with q = P(|Z| > 2) = 0.0455, so P(at least 1 miss) = 1 - (1 - q)^2
    q = math.erfc(2 / math.sqrt(2))
    assert v.evidence["disagreements"] == 1
    assert v.evidence["expected_disagreements_by_chance"] == pytest.approx(2 * q)
    assert v.evidence["p_at_least_as_many_by_chance"] == pytest.approx(1 - (1 - q) ** 2)
    assert "0.1 disagreements expected by chance alone, P(at least 1) = 0.089" in v.summary
    # the table as a whole: chi-square with 2 degrees of freedom, whose survival function is exp(-x / 2)
    z = [(rows[c]["estimate"] - ref) / math.sqrt(ref * (1 - ref) * (1 / n + 1 / 1000))
         for c, ref in (("k6", 0.003), ("k9", 0.218))]
    assert [rows["k6"]["z"], rows["k9"]["z"]] == pytest.approx(z)
    assert v.evidence["chi2"] == pytest.approx(z[0] ** 2 + z[1] ** 2) and v.evidence["chi2_cells"] == 2
    assert v.evidence["chi2_p"] == pytest.approx(math.exp(-v.evidence["chi2"] / 2))
    assert f"all cells together: chi-square {v.evidence['chi2']:.1f} on 2 cells" in v.summary


@pytest.mark.parametrize("spec, fragment", [
    ({"rule": "no_such_rule"}, "verdict.rule = 'no_such_rule' is not allowed: expected one of"),
    ({"rule": "risk_never_increases", "tolerence": 1e-6}, "unknown key(s) ['tolerence']"),
    ({"rule": "risk_never_increases", "tolerance": -1}, "verdict.tolerance = -1 is not allowed"),
    ({"rule": "rates_agree_with_published"}, "needs ['published', 'threshold']"),
])
def test_bad_verdict_specs_are_refused_naming_the_key(spec, fragment):
    with pytest.raises(ValueError) as info:
        check_verdict_spec(spec)
    assert fragment in str(info.value)


def test_every_rule_is_described_and_names_its_tables():
    for name, rule in VERDICTS.items():
        assert rule.name == name and rule.description and set(rule.tables) <= {"trajectories", "curves", "summary",
                                                                                  "best_of_k"}


# ------------------------------------------------------------------------------------------ catalogue plumbing
STUDY = """\
studies:
  {name}:
    problem:
      network: {{input_dim: 1, widths: [2]}}
      measure: {{kind: uniform, low: 0.0, high: 1.0}}
      target: {{kind: affine, slope: 1.0, intercept: 0.0}}
    method: {{kind: gd, step_size: 0.05, n_steps: 10}}
    grid: {{problem.network.widths: [[2]]}}
    n_trajectories: 3
    seed: 1
"""


def _plan(path: Path):
    return plan_config(load_config_files([path]), find_schema(), origins=study_origins([path]))


def test_included_studies_scale_and_verdicts(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "a.yaml").write_text(STUDY.format(name="a"))
    (tmp_path / "studies" / "b.yaml").write_text(STUDY.format(name="b") + "    verdict: {rule: risk_never_increases}\n")
    config = tmp_path / "config.yaml"
    config.write_text("include: [studies/*.yaml]\nscale: 4\n" + STUDY.format(name="own"))
    plan = _plan(config)
    assert list(plan.studies) == ["a", "b", "own"] and plan.study("a").n_trajectories == 12
    assert plan.study("b").spec["verdict"] == {"rule": "risk_never_increases"}
    (tmp_path / "studies" / "b.yaml").write_text(STUDY.format(name="b") + "    verdict: {rule: nope}\n")
    with pytest.raises(ConfigError, match=r"study 'b': verdict.rule = 'nope' is not allowed"):
        _plan(config)
    config.write_text("include: [nothing/*.yaml]\n" + STUDY.format(name="own"))
    with pytest.raises(ConfigError, match=r"include pattern 'nothing/\*.yaml' matches no file"):
        _plan(config)
    (tmp_path / "studies" / "b.yaml").write_text(STUDY.format(name="b") + "run: [b]\n")
    config.write_text("include: [studies/b.yaml]\n" + STUDY.format(name="own"))
    with pytest.raises(ConfigError, match=r"holds \['run'\]: an included file holds only studies"):
        _plan(config)


def test_the_shipped_catalogue_validates_and_every_study_states_a_claim_and_a_verdict():
    plan = _plan(ROOT / "config.yaml")
    catalogue = [s for s in plan.studies.values() if "claim" in s.spec]
    assert catalogue, "no catalogue study"
    for study in catalogue:
        assert "verdict" in study.spec, study.name
        check_verdict_spec(study.spec["verdict"])


def test_the_report_embeds_every_figure_and_verdict(tmp_path):
    """The catalogue page shows each study's claim, verdict (status, summary, evidence) and every figure it has as an
    embedded PNG; a study without a verdict yet says so."""
    import base64
    import json

    from reluflow.config import FIGURES
    from reluflow.pipeline import write_report

    (tmp_path / "studies").mkdir()
    for name in ("a", "b"):
        (tmp_path / "studies" / f"{name}.yaml").write_text(
            STUDY.format(name=name) + "    claim: {id: C1, statement: the risk never goes up, source: a paper}\n"
            "    verdict: {rule: risk_never_increases}\n")
    config = tmp_path / "config.yaml"
    config.write_text("include: [studies/*.yaml]\n")
    plan = _plan(config)
    results = tmp_path / "results"
    pngs = {}
    for i, name in enumerate(FIGURES):
        png = results / "a" / "figures" / f"{name}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        pngs[name] = b"\x89PNG\r\n\x1a\n" + bytes([i]) * 16
        png.write_bytes(pngs[name])
    (results / "a" / "verdict.json").write_text(json.dumps({
        "rule": "risk_never_increases", "status": "fail", "summary": "largest relative risk increase: 0.5",
        "evidence": {"tolerance": 1e-6, "cells": [{"cell": "w2", "max": 0.5, "n": 3}]}}))
    write_report([plan.study("a"), plan.study("b")], results, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    for name, data in pngs.items():
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in page, name
    assert 'class="badge fail">fail' in page and "largest relative risk increase: 0.5" in page
    assert "<td class=text>w2</td><td>0.5</td><td>3</td>" in page
    assert 'class="badge missing">missing' in page and "not computed yet" in page  # study b
    assert page.count("the risk never goes up") == 2


# ------------------------------------------------------------------------------------------ catalogue rules C2–C11
def _curves(rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """(cell, trajectory, t, risk, param_norm) rows as a curves table."""
    return pd.DataFrame(rows, columns=["cell", "trajectory", "t", "risk", "param_norm"])


def test_bounded_runs_reach_critical_values():
    n = 20
    risk = np.r_[np.zeros(5), np.full(14, 1 / 12), 0.057191]
    cols = {"status": {"a": np.r_[["zero_risk"] * 5, ["budget"] * 15]},
            "grad_norm_final": {"a": np.full(n, 1e-6)},
            "refine_local": {"a": np.r_[[False] * 5, [True] * 3, [False] * 12]},
            "refine_converged": {"a": np.r_[[False] * 5, [True] * 3, [False] * 12]},
            "nearest_risk": {"a": np.r_[np.full(5, np.nan), np.full(3, 1 / 12), np.full(12, np.nan)]}}
    t = _tables({"a": {}}, {"a": risk}, **cols)
    v = evaluate_verdict({"rule": "bounded_runs_reach_critical_values"}, t)
    # 19 of 20 end at a found value (0 or 1/12); 0.057191 was never found by a refinement: 95 % passes
    assert v.status == "pass" and v.evidence["at_critical_value"]["count"] == 19
    assert v.evidence["critical_values"] == pytest.approx([0.0, 1 / 12]) or len(v.evidence["critical_values"]) == 2
    t.trajectories.loc[0, "status"] = "diverged"
    assert evaluate_verdict({"rule": "bounded_runs_reach_critical_values"}, t).status == "fail"
    t.trajectories.loc[0, "status"] = "zero_risk"
    t.trajectories["grad_norm_final"] = 1e-2  # far from critical: gradient not small
    assert evaluate_verdict({"rule": "bounded_runs_reach_critical_values"}, t).status == "fail"
    t.trajectories["refine_local"] = False
    t.trajectories["status"] = "budget"
    assert evaluate_verdict({"rule": "bounded_runs_reach_critical_values"}, t).status == "inconclusive"


def test_small_initial_risk_reaches_zero():
    t = _tables({"a": {}}, {"a": np.array([1e-9, 2e-7, 0.3])}, risk_init={"a": np.array([0.1, 0.2, 5.0])})
    spec = {"rule": "small_initial_risk_reaches_zero", "initial_risk_below": 1 / 3}
    v = evaluate_verdict(spec, t)
    assert v.status == "pass" and v.evidence["small_initial_risk"]["count"] == 2
    assert evaluate_verdict({**spec, "eps": 1e-8}, t).status == "fail"
    assert evaluate_verdict({**spec, "initial_risk_below": 0.01}, t).status == "inconclusive"


def test_unbounded_with_vanishing_risk_occurs():
    ts = np.logspace(0, 3, 13)
    rows = []
    for tid in range(4):  # sqrt(ln t) growth: |theta|^2 = 2 + 2.5 ln t, L ~ 1/t
        rows += [("g", tid, t, 1 / t, math.sqrt(2 + 2.5 * math.log(t))) for t in ts]
    for tid in range(4):  # bounded convergence: |theta| settles exponentially
        rows += [("u", tid, t, math.exp(-t), 2 - math.exp(-t)) for t in ts]
    curves = _curves(rows)
    t = _tables({"g": {}, "u": {}}, {"g": np.full(4, 1e-3 * 0.9), "u": np.zeros(4)})
    t.curves = curves
    v = evaluate_verdict({"rule": "unbounded_with_vanishing_risk_occurs"}, t)
    cells = {c["cell"]: c for c in v.evidence["cells"]}
    assert v.status == "pass" and cells["g"]["unbounded_vanishing"]["count"] == 4
    assert cells["u"]["unbounded_vanishing"]["count"] == 0
    assert cells["g"]["sq_norm_increment_last_decade_median"] == pytest.approx(2.5 * math.log(10))
    t.curves = curves[curves["cell"] == "u"]
    assert evaluate_verdict({"rule": "unbounded_with_vanishing_risk_occurs"}, t).status == "fail"
    # a run that stopped on a tolerance at t = 10 (its |theta| still moving then) converged at finite parameters
    early = curves[(curves["cell"] == "g") & (curves["t"] <= 10.0)]
    t.curves = pd.concat([curves[curves["cell"] == "u"], early.assign(cell="u", trajectory=early["trajectory"] + 4)])
    t.trajectories = pd.concat([t.trajectories, pd.DataFrame({"cell": "u", "trajectory": np.arange(4, 8),
                                                               "risk_final": 0.0})], ignore_index=True)
    v = evaluate_verdict({"rule": "unbounded_with_vanishing_risk_occurs"}, t)
    assert v.status == "fail" and v.evidence["cells"][0]["stopped_before_horizon"] == 4


def _bok(p1: dict[str, float], n: int = 256) -> pd.DataFrame:
    from reluflow.analysis._intervals import binomial_interval

    rows = []
    for cell, p in p1.items():
        s = round(p * n)
        low, high = binomial_interval(np.array([s]), np.array([n]))
        for k in (1, 16):
            est = 1 - math.comb(n - s, k) / math.comb(n, k)
            rows.append({"cell": cell, "eps": 1e-4, "k": k, "successes": s, "n": n, "estimate": est,
                         "low": 1 - (1 - float(low[0])) ** k, "high": 1 - (1 - float(high[0])) ** k})
    return pd.DataFrame(rows)


def test_success_grows_with_width_and_k():
    cells = pd.DataFrame([{"cell": "w4", "problem.network.widths": (4,), "method.n_steps": 4000},
                          {"cell": "w8", "problem.network.widths": (8,), "method.n_steps": 4000},
                          {"cell": "w16", "problem.network.widths": (16,), "method.n_steps": 4000}])
    t = SimpleNamespace(cells=cells, trajectories=None, curves=None, summary=None,
                        best_of_k=_bok({"w4": 0.13, "w8": 0.41, "w16": 0.74}))
    v = evaluate_verdict({"rule": "success_grows_with_width_and_k"}, t)
    assert v.status == "pass" and v.evidence["top_cell"] == "w16" and not v.evidence["violations"]
    t.best_of_k = _bok({"w4": 0.5, "w8": 0.2, "w16": 0.74})   # width 8 well below width 4: a violation
    v = evaluate_verdict({"rule": "success_grows_with_width_and_k"}, t)
    assert v.status == "fail" and v.evidence["violations"][0]["larger"] == "w8"
    t.best_of_k = _bok({"w4": 0.1, "w8": 0.1, "w16": 0.1})    # monotone, but best-of-16 at the top 0.82 < 0.99
    assert evaluate_verdict({"rule": "success_grows_with_width_and_k"}, t).status == "fail"


def test_rates_polynomial_or_faster():
    status = np.array(["budget"] * 8 + ["zero_risk"] * 2)
    best = np.array(["polynomial"] * 5 + ["exponential", "none", "polynomial", "none", "none"])
    expo = np.array([3.0, 3.1, 2.9, 3.0, 3.05, np.nan, np.nan, 0.5, np.nan, np.nan])
    t = _tables({"a": {}}, {"a": np.zeros(10)}, status={"a": status}, rate_best={"a": best}, rate_poly={"a": expo})
    v = evaluate_verdict({"rule": "rates_polynomial_or_faster", "min_fraction": 0.85}, t)
    assert v.status == "pass" and v.evidence["polynomial_or_faster"]["count"] == 7
    assert v.evidence["exponent_median"] == pytest.approx(3.0)
    assert evaluate_verdict({"rule": "rates_polynomial_or_faster"}, t).status == "fail"  # 7/8 < 0.9
    t.trajectories["status"] = "zero_risk"
    assert evaluate_verdict({"rule": "rates_polynomial_or_faster"}, t).status == "inconclusive"


def _gd_gf_tables(order: float) -> SimpleNamespace:
    """GF: L = exp(-t); GD at step g: L = exp(-t (1 + c g^order)), so the log gap at t = 10 is 10 c g^order."""
    cells = pd.DataFrame([{"cell": "gf", "method.kind": "gf", "method.step_size": np.nan}] +
                         [{"cell": f"gd{g}", "method.kind": "gd", "method.step_size": g} for g in (0.04, 0.02, 0.01)])
    ts = np.linspace(0, 10, 101)
    rows = [("gf", tid, t, math.exp(-t), 1.0) for tid in range(3) for t in ts]
    for g in (0.04, 0.02, 0.01):
        rows += [(f"gd{g}", tid, t, math.exp(-t * (1 + 5 * g ** order)), 1.0) for tid in range(3) for t in ts[::5]]
    return SimpleNamespace(cells=cells, trajectories=None, curves=_curves(rows), summary=None, best_of_k=None)


def test_gd_approaches_gf():
    v = evaluate_verdict({"rule": "gd_approaches_gf", "max_step": 0.04}, _gd_gf_tables(1.0))
    assert v.status == "pass" and v.evidence["fitted_order"] == pytest.approx(1.0, abs=1e-6)
    assert v.evidence["steps"][0]["gap_median"] == pytest.approx(10 * 5 * 0.04, rel=1e-6)
    bad = evaluate_verdict({"rule": "gd_approaches_gf", "max_step": 0.04}, _gd_gf_tables(0.5))
    assert bad.status == "fail" and bad.evidence["fitted_order"] == pytest.approx(0.5, abs=1e-6)
    one = evaluate_verdict({"rule": "gd_approaches_gf", "max_step": 0.01}, _gd_gf_tables(1.0))
    assert one.status == "inconclusive"


def test_never_reaches_dead_set():
    m = np.array([0.0077, 0.05, 0.2, 0.5, 1.0])
    t = _tables({"a": {}}, {"a": np.zeros(5)}, min_unit_norm={"a": m})
    v = evaluate_verdict({"rule": "never_reaches_dead_set"}, t)
    assert v.status == "pass" and v.evidence["within_delta"]["0.01"]["count"] == 1
    t.trajectories.loc[0, "min_unit_norm"] = 0.0
    assert evaluate_verdict({"rule": "never_reaches_dead_set"}, t).status == "fail"


def test_global_minima_are_regular():
    cells = {"w4": {"n_params": 13}, "w8": {"n_params": 25}}
    cls = {"w4": np.array(["global_min"] * 4 + ["local_min"]), "w8": np.array(["global_min"] * 5)}
    rank = {"w4": pd.array([4, 4, 4, 4, 6], dtype="Int64"), "w8": pd.array([4, 4, 4, 4, 4], dtype="Int64")}
    t = _tables(cells, {"w4": np.zeros(5), "w8": np.zeros(5)}, **{"class": cls}, hessian_rank=rank,
                lambda_min_positive={"w4": np.full(5, 0.04), "w8": np.full(5, 0.04)})
    v = evaluate_verdict({"rule": "global_minima_are_regular", "codimension": 4}, t)
    assert v.status == "pass" and v.evidence["regular"]["count"] == 9
    assert {c["cell"]: c["expected_dim"] for c in v.evidence["cells"]} == {"w4": 9, "w8": 21}
    t.trajectories.loc[5, "hessian_rank"] = 5
    assert evaluate_verdict({"rule": "global_minima_are_regular", "codimension": 4}, t).status == "fail"
    assert evaluate_verdict({"rule": "global_minima_are_regular", "codimension": 4, "min_fraction": 0.8},
                            t).status == "pass"
    with pytest.raises(ValueError, match="needs"):
        check_verdict_spec({"rule": "global_minima_are_regular"})


def test_balance_drift_order():
    cells = {"gf": {"method.kind": "gf", "method.step_size": np.nan}}
    cells |= {f"gd{g}": {"method.kind": "gd", "method.step_size": g} for g in (0.04, 0.02, 0.01, 0.005)}

    def tables(gf_drift, order):
        drift = {"gf": np.full(3, gf_drift)} | {f"gd{g}": np.array([1.0, 1.2, 0.8]) * g ** order
                                                 for g in (0.04, 0.02, 0.01, 0.005)}
        return _tables(cells, {c: np.zeros(3) for c in cells}, balance_drift=drift)

    v = evaluate_verdict({"rule": "balance_drift_order"}, tables(1e-9, 1.0))
    assert v.status == "pass" and v.evidence["fitted_order"] == pytest.approx(1.0)
    assert v.evidence["steps"][0]["ratio_to_half_step"] == pytest.approx(2.0)
    assert evaluate_verdict({"rule": "balance_drift_order"}, tables(1e-3, 1.0)).status == "fail"
    assert evaluate_verdict({"rule": "balance_drift_order"}, tables(1e-9, 0.5)).status == "fail"


def test_rate_one_bound():
    ts = np.logspace(1, 4, 25)
    rows = [("a", 0, t, 1.0 / (1 + t) ** 3, 1.0) for t in ts]          # L ~ t^-3: (1+t) L falls
    rows += [("a", 1, t, 1 / 12 + 1e-16 * (t % 3), 1.0) for t in ts]   # a plateau at round-off: not judged
    rows += [("a", 2, t, 1.0 / (1 + t) ** 0.5, 1.0) for t in ts]       # L ~ t^-1/2: (1+t) L grows
    traj = {"status": {"a": np.array(["budget"] * 3)}, "risk_min": {"a": np.array([1e-12, 1 / 12, 0.01])},
            "risk_inf": {"a": np.array([0.0, 1 / 12, 0.0])}}
    t = _tables({"a": {}}, {"a": np.zeros(3)}, **traj)
    t.curves = _curves(rows)
    v = evaluate_verdict({"rule": "rate_one_bound"}, t)
    assert v.status == "fail" and v.evidence["bounded"]["count"] == 1 and v.evidence["at_floor"] == 1
    t.curves = _curves([r for r in rows if r[1] != 2])
    v = evaluate_verdict({"rule": "rate_one_bound"}, t)
    assert v.status == "pass" and v.evidence["ratio_max"] < 0.05


def test_certified_families_come_from_certificates_of_the_endpoints():
    """``certify_families``: each family of spurious minima gets its first run's certificate. Real GD endpoints of
    SS2018's k8_n8 (GD to |G| <= 1e-9/pi) are certified strict local minima; a family whose endpoint is moved off
    the minimum (by 1e-3) is refused as not critical; the families and the pass/fail rule are those without
    certificates; the report's families column shows each class."""
    pytest.importorskip("flint")
    import json

    import reluflow
    from reluflow.pipeline._report import _evidence_html

    problem = {"network": {"input_dim": 8, "widths": [8], "bias": False, "fixed_output": 1.0},
               "measure": {"kind": "gaussian", "dim": 8, "sigma": 1.0},
               "target": {"kind": "teacher", "widths": [8], "bias": False, "fixed_output": 1.0, "seed": 0,
                          "first_layer": "unit_vectors"},
               "risk": {"backend": "gaussian"}}
    method = {"kind": "gd", "step_size": 0.05, "n_steps": 200000, "grad_tol": 3.1831e-10, "risk_tol": 2.0e-3,
              "refine": False}
    res = reluflow.simulate(reluflow.Problem.from_dict(problem), method=method,
                            init={"kind": "scaled_normal", "sigma": "fan_in"}, n_trajectories=24, seed=2018)
    traj = res.trajectories[["trajectory", "risk_final"]].assign(cell="k8_n8")
    theta = np.stack(res.states["theta_final"])
    spurious = traj.loc[traj["risk_final"] >= 2e-3, "trajectory"].to_numpy()
    assert len(spurious) >= 2  # seed 2018: runs 10 and 17 end at the L = 0.043 minimum
    # a second "family": the last spurious run moved off its minimum, its risk relabelled to set it apart
    moved = spurious[-1]
    theta[moved] += 1e-3
    traj.loc[traj["trajectory"] == moved, "risk_final"] = 0.5
    final = pd.DataFrame({"cell": "k8_n8", "trajectory": traj["trajectory"], "theta_final": list(theta)})
    cells = pd.DataFrame([{"cell": "k8_n8", "problem.network.widths": (8,),
                           "params": json.dumps({"problem": problem})}])
    tables = SimpleNamespace(cells=cells, trajectories=traj, curves=None, summary=None, best_of_k=None, final=final)
    spec = {"rule": "rates_agree_with_published", "threshold": 2e-3, "published": {"k8_n8": 0.126}}
    plain = evaluate_verdict(spec, tables)
    v = evaluate_verdict({**spec, "certify_families": True}, tables)
    families = {f["risk"]: f for f in v.evidence["cells"][0]["families"]}
    minimum = families[float(f"{traj.loc[traj['trajectory'] == spurious[0], 'risk_final'].iloc[0]:.3g}")]
    assert minimum["certified_class"] == "min" and minimum["trajectory"] == spurious[0]
    assert 0 <= minimum["certified_radius"] < 1e-6 and minimum["certified_eig_low"] > 0
    assert families[0.5]["certified_class"] == "none" and families[0.5]["certified_reason"] == "not_critical"
    assert "Newton correction" in families[0.5]["certified_detail"]
    assert "unique critical point within" in minimum["certified_detail"]
    assert (v.status, v.evidence["families_certified_min"], v.evidence["families_certified_none"]) == \
        (plain.status, 1, 1)
    assert [(f["risk"], f["count"]) for f in v.evidence["cells"][0]["families"]] == \
        [(f["risk"], f["count"]) for f in plain.evidence["cells"][0]["families"]]
    assert "spurious families certified: 1 of 2 strict local minima" in v.summary
    html = _evidence_html(v.to_dict())
    assert "(min)" in html and "(not certified: not_critical)" in html
    with pytest.raises(ValueError, match="verdict.certify_families = 'yes' is not allowed: expected true or false"):
        check_verdict_spec({**spec, "certify_families": "yes"})
    # without the final parameters (a table not read): inconclusive, naming it
    missing = evaluate_verdict({**spec, "certify_families": True}, SimpleNamespace(**{**vars(tables), "final": None}))
    assert missing.status == "inconclusive" and "['final']" in missing.summary
