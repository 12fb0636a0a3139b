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
