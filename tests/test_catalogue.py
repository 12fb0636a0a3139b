"""The shipped catalogue (docs/studies.md): every study validates and dry-runs with its verdict and the report;
one small study runs end to end to its verdict and its page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reluflow.config import FIGURES, find_schema, load_config_files, plan_config, study_origins

ROOT = Path(__file__).resolve().parents[1]


def _catalogue() -> list[str]:
    files = [ROOT / "config.yaml"]
    plan = plan_config(load_config_files(files), find_schema(), origins=study_origins(files))
    return [name for name, study in plan.studies.items() if "claim" in study.spec]


def test_every_catalogue_study_dry_runs_to_its_verdict_and_the_report(tmp_path):
    names = _catalogue()
    assert "c1_risk_monotone" in names and "ss2018" in names
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "catalogue"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    plan = plan_config(load_config_files([ROOT / "config.yaml"]), find_schema(),
                       origins=study_origins([ROOT / "config.yaml"]), check=False)
    for name in names:
        assert re.search(rf"output: results/{re.escape(name)}/verdict\.json", out) or \
            f"results/{name}/verdict.json" in out, name
        for figure in plan.study(name).figures:  # the four of every study and those its `figures:` names
            assert f"results/{name}/figures/{figure}.png" in out, (name, figure)
    assert "results/catalogue.html" in out


@pytest.mark.slow
def test_a_catalogue_study_runs_to_its_verdict_and_page(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "config.yaml", work)
    shutil.copytree(ROOT / "workflow", work / "workflow")
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work),
                          "--cores", "2", "results/c1_risk_monotone/verdict.json",
                          *[f"results/c1_risk_monotone/figures/{name}.png" for name in FIGURES]],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    verdict = json.loads((work / "results" / "c1_risk_monotone" / "verdict.json").read_text())
    assert verdict["status"] == "pass" and verdict["claim"]["id"] == "C1"
    assert verdict["evidence"]["max_relative_increase"] <= verdict["params"]["tolerance"]
    files = [work / "config.yaml"]
    plan = plan_config(load_config_files(files), find_schema(), origins=study_origins(files))
    report = tmp_path / "c1.html"
    rc = subprocess.run([sys.executable, "-m", "reluflow", "report", "--study-json",
                         plan.study("c1_risk_monotone").to_json(), "--results", str(work / "results"), "--output",
                         str(report)], capture_output=True, text=True, check=False)
    assert rc.returncode == 0, rc.stderr
    page = report.read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES) and verdict["summary"] in page
