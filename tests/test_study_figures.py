"""Figures a study asks for (`figures:`): refused at validation when unknown, declared by the workflow for exactly
the studies that name them, drawn by write_figures as publication files, embedded in the catalogue page, and shown
with captions, with each study's verdict, by `snakemake --report` of a finished study."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reluflow.config import (
    EXTRA_FIGURES,
    FIGURE_TABLES,
    FIGURES,
    ConfigError,
    Execution,
    find_schema,
    load_config_files,
    load_yaml_text,
    plan_config,
    study_origins,
)

ROOT = Path(__file__).resolve().parents[1]

# GD and GF from the same starts (rate_comparison), norms along the curves (norm_growth), a rates verdict
# (published_vs_regenerated); the claim's text holds reStructuredText markup (|L|, *...*), which the captions
# must show as text
STUDY = """\
studies:
  tiny:
    description: GD and GF on the hat from the same starts
    claim: {id: T1, statement: the risk |L| never goes up *along* GF, source: a test}
    problem:
      network: {input_dim: 1, widths: [3]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    grid:
      method:
        - {kind: gd, step_size: 0.05, n_steps: 40, n_checkpoints: 4}
        - {kind: gf, solver: dopri5, t_end: 2.0, n_checkpoints: 4}
    n_trajectories: 6
    seed: 5
    figures: [norm_growth, rate_comparison, published_vs_regenerated]
    verdict: {rule: rates_agree_with_published, threshold: 0.01, published: {gd: 0.5, gf: 0.5}}
"""
#: the catalogue studies and the extra figure each draws (docs/studies.md)
WIRED = {"c4_unbounded_one_neuron": "norm_growth", "c7_gd_to_gf": "rate_comparison",
         "ss2018": "published_vs_regenerated"}


def _plan(text: str):
    return plan_config(load_yaml_text(text), find_schema())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A copy of the workflow with STUDY run to its end in this process (no Snakemake, no dask cluster: the
    shards are computed here and joined by write_integrate), its verdict and the figures it draws written: the
    extra ones drawn, the four of every study (drawn and checked by tests/test_pipeline_workflow.py) copies of one
    of them, to keep this module fast on a busy machine."""
    from reluflow.pipeline import (
        plan_shards,
        read_init,
        run_shard,
        write_aggregate,
        write_cells,
        write_figures,
        write_init,
        write_integrate,
        write_verdict,
    )
    from reluflow.pipeline._stages import _write_shard

    d = tmp_path_factory.mktemp("figs")
    shutil.copy(ROOT / "Snakefile", d)
    shutil.copytree(ROOT / "workflow", d / "workflow")
    shutil.copytree(ROOT / "profiles", d / "profiles")
    (d / "config.yaml").write_text(STUDY)
    study = plan_config(load_config_files([d / "config.yaml"]), find_schema()).study("tiny")
    assert study.cell_ids == ["gd", "gf"]
    res = d / "results" / "tiny"
    write_cells(study, res / "cells.parquet")
    for cid, cell in study.cells.items():
        write_init(cell, res / "init" / f"{cid}.parquet")
        _, theta0 = read_init(res / "init" / f"{cid}.parquet")
        for shard in plan_shards(cell, cell.n_trajectories):
            _write_shard(cell, shard, res / ".shards" / cid, run_shard(cell, shard.start, shard.stop, theta0))
    write_integrate(list(study.cells.values()), res, Execution.from_mapping(shard_size=study.n_trajectories))
    write_aggregate(study, {cid: res / "trajectories" / f"{cid}.parquet" for cid in study.cell_ids},
                    res / "summary.parquet", best_of_k_output=res / "best_of_k.parquet")
    write_verdict(study, res, res / "verdict.json")
    write_figures(study, res, [res / "figures" / f"{name}.{ext}" for name in EXTRA_FIGURES for ext in ("png", "pdf")])
    for name in FIGURES:
        for ext in ("png", "pdf"):
            shutil.copy(res / "figures" / f"{EXTRA_FIGURES[0]}.{ext}", res / "figures" / f"{name}.{ext}")
    return d, study


# ------------------------------------------------------------------------------------------ validation
CASES = {
    "unknown name": ("[norm_grwth]", ["figures[0]", "'norm_grwth'", "norm_growth", "rate_comparison",
                                      "published_vs_regenerated"]),
    "a figure every study draws": ("[rate_comparison, risk_curves]", ["figures[1]", "'risk_curves'",
                                                                       "every study draws", "norm_growth"]),
    "published rates without their verdict": ("[published_vs_regenerated]", [
        "figures[0]", "'published_vs_regenerated'", "verdict.rule = 'rates_agree_with_published'",
        "this study has no verdict"]),
    "not a name": ("[3]", ["figures[0]", "3", "string"]),
    "twice": ("[norm_growth, norm_growth]", ["figures", "norm_growth", "non-unique"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_figure_name_is_refused_naming_key_value_and_allowed(case):
    value, fragments = CASES[case]
    text = STUDY.replace("    figures: [norm_growth, rate_comparison, published_vs_regenerated]\n",
                         f"    figures: {value}\n").replace("    verdict: {rule: rates_agree_with_published, "
                                                            "threshold: 0.01, published: {gd: 0.5, gf: 0.5}}\n", "")
    assert text != STUDY
    with pytest.raises(ConfigError) as err:
        _plan(text)
    message = str(err.value)
    assert "'tiny'" in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_study_draws_the_figures_of_every_study_then_those_it_names():
    study = _plan(STUDY).study("tiny")
    assert study.figures == [*FIGURES, "norm_growth", "rate_comparison", "published_vs_regenerated"]
    assert set(EXTRA_FIGURES) | set(FIGURES) == set(FIGURE_TABLES) and not set(EXTRA_FIGURES) & set(FIGURES)
    plain = _plan(STUDY.replace("    figures: [norm_growth, rate_comparison, published_vs_regenerated]\n", ""))
    assert plain.study("tiny").figures == list(FIGURES)
    assert "figures" not in plain.study("tiny").to_json()  # a study without extras keeps its JSON (rerun trigger)


def test_each_wired_catalogue_study_names_its_figure():
    files = [ROOT / "config.yaml"]
    plan = plan_config(load_config_files(files), find_schema(), origins=study_origins(files), check=False)
    for name, figure in WIRED.items():
        assert figure in plan.study(name).figures, name
    assert "published_vs_regenerated" in plan.study("ss2018_full").figures
    assert plan.study("c1_risk_monotone").figures == list(FIGURES)


# ------------------------------------------------------------------------------------------ the workflow
def _dry_run(*targets: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", *targets], cwd=ROOT,
                          capture_output=True, text=True, check=False)


def test_the_workflow_declares_each_wired_studys_extra_figure():
    run = _dry_run(*(f"results/{study}/figures/{figure}.png" for study, figure in WIRED.items()))
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    for study, figure in WIRED.items():
        job = re.search(rf"rule figure_{figure}:\n(?:    .*\n)*?    output: (.*)\n", out)
        assert job, (figure, out[-3000:])
        assert job.group(1) == f"results/{study}/figures/{figure}.png, results/{study}/figures/{figure}.pdf"


def test_a_study_that_does_not_name_a_figure_gets_no_rule_for_it():
    run = _dry_run("results/c1_risk_monotone/figures/norm_growth.png")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "No rule to produce results/c1_risk_monotone/figures/norm_growth.png" in out, out[-2000:]


# ------------------------------------------------------------------------------------------ drawing
def test_write_figures_draws_the_extra_figures_as_publication_files(finished):
    from PIL import Image

    from reluflow.plot import DPI

    d, study = finished
    for name in EXTRA_FIGURES:
        png = d / "results" / "tiny" / "figures" / f"{name}.png"
        pdf = png.with_suffix(".pdf").read_bytes()
        assert pdf.startswith(b"%PDF-") and b"/FontFile2" in pdf, name  # TrueType (Type 42) fonts embedded
        with Image.open(png) as im:
            assert im.info["dpi"][0] == pytest.approx(DPI, abs=0.01) and DPI >= 200, name
            assert im.size[0] > 3 * DPI, name  # a panel at least 3 inches wide


def test_published_vs_regenerated_draws_the_numbers_the_verdict_judges(finished):
    import numpy as np

    from reluflow import load
    from reluflow.pipeline._figures import DRAW

    d, study = finished
    verdict = json.loads((d / "results" / "tiny" / "verdict.json").read_text())
    fig = DRAW["published_vs_regenerated"](study, load(d / "results" / "tiny", params="none"))
    ax = fig.axes[0]
    for key in ("estimate", "low", "high"):  # the dots and both ends of their error bars
        values = [c[key] for c in verdict["evidence"]["cells"]]
        assert any(np.allclose(line.get_ydata(), values) for line in ax.lines), (key, values)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gd", "gf"]
    crosses = [line for line in ax.lines if line.get_label().startswith("published")]
    assert crosses and sorted(np.concatenate([c.get_ydata() for c in crosses])) == [0.5, 0.5]


def test_write_figures_refuses_a_figure_the_study_does_not_name(finished, tmp_path):
    from reluflow.pipeline import write_figures

    d, _ = finished
    plain = _plan(STUDY.replace("    figures: [norm_growth, rate_comparison, published_vs_regenerated]\n", ""))
    with pytest.raises(ValueError, match=r"'norm_growth.png' is not one of study 'tiny'.s figures"):
        write_figures(plain.study("tiny"), d / "results" / "tiny", [tmp_path / "norm_growth.png"])


def test_the_catalogue_page_embeds_the_extra_figures(finished, tmp_path):
    from reluflow.pipeline import write_report

    d, study = finished
    write_report([study], d / "results", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert page.count("data:image/png;base64,") == len(study.figures)
    for name in EXTRA_FIGURES:
        assert f'alt="{name}"' in page, name


def test_snakemake_report_has_each_figure_and_the_verdict_with_captions(finished):
    """`snakemake --report report.html` (no --cores) on the finished study: every figure's PNG and the verdict, in
    the study's category, each with its caption and the study's claim (markup shown as text)."""
    d, study = finished
    command = "snakemake --report report.html"
    assert command in (ROOT / "docs" / "running.md").read_text()  # verbatim, as documented
    run = subprocess.run([sys.executable, "-m", *command.split()], cwd=d, capture_output=True, text=True,
                         check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "Report created" in out, out[-3000:]
    page = (d / "report.html").read_text()
    for name in study.figures:
        entry = re.search(rf'"results/tiny/figures/{name}\.png": \{{"name": "{name}\.png".*?"caption": "(.*?)", '
                          r'"mime_type": "image/png"', page)
        assert entry, name
        caption = entry.group(1)
        assert "<tt class=\\\"docutils literal\\\">tiny</tt>" in caption, (name, caption)
        assert "T1: the risk |L| never goes up *along* GF (a test). 2 cells x 6 trajectories, seed 5." in caption
    assert not re.search(r'"results/tiny/figures/\w+\.pdf": \{', page)  # the PNGs alone: the PDFs sit beside them
    verdict = re.search(r'"results/tiny/verdict\.json": \{"name": "verdict\.json".*?"labels": \{"status": "(\w+)"\}'
                        r'.*?"caption": "(.*?)"', page)
    assert verdict, page[:2000]
    assert verdict.group(1) == json.loads((d / "results" / "tiny" / "verdict.json").read_text())["status"]
    assert "<strong>Verdict</strong>" in verdict.group(2)
    assert '"T1 tiny"' in page  # the study's category: claim id and name


def test_a_long_title_stays_within_the_figure_and_clear_of_the_legend(finished):
    """Every figure of a study with a long name: the title (centred over the panels, wrapped to their width) lies
    inside the figure and overlaps no legend. Centred over the whole figure, it ran into the shared legend's
    column of single-panel figures."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from reluflow import plot
    from reluflow.pipeline._figures import DRAW, _load_for

    d, _ = finished
    name = "a_study_whose_name_is_long_enough_to_crowd_a_title"
    study = _plan(STUDY.replace("  tiny:", f"  {name}:")).study(name)
    tables = _load_for(d / "results" / "tiny", list(DRAW))
    for figure, draw in DRAW.items():
        fig = draw(study, tables)
        with plot.publication():
            canvas = FigureCanvasAgg(fig)
            canvas.draw()
        renderer = canvas.get_renderer()
        titles = [t for t in fig.findobj(Text) if t.get_text().startswith(name[:20])]
        assert len(titles) == 1, figure
        box = titles[0].get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (figure, box, fig.bbox)
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
        for legend in legends:
            assert not box.overlaps(legend.get_window_extent(renderer)), figure
