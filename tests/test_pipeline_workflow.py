"""End to end through Snakemake: a tiny study in a temporary directory with its own config; the tables' layout,
schemas (as documented in docs/tables.md), values (equal to reluflow._simulate.simulate), metadata, figures,
reluflow.load, and rerun behaviour. Plus `snakemake --lint` and a dry run of the shipped config."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reluflow._simulate import simulate
from reluflow.config import FIGURES, load_config_files, plan_config
from reluflow.pipeline import read_final, read_init, read_metadata

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package

TINY = """\
studies:
  tiny:
    description: end-to-end test study
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    grid:
      problem.network.widths: [[3]]
      method:
        - {kind: gd, step_size: 0.05, n_steps: 40, n_checkpoints: 4}
        - {kind: gf, solver: dopri5, t_end: 2.0, n_checkpoints: 4}
    n_trajectories: 12
    seed: 5
    analysis: {eps: [0.05, 1e-3], k: [1, 2, 4]}
execution:
  shard_size: 7
  workers: 1  # two integrate jobs side by side on 2 cores (the 2-worker case: test_pipeline_integrate)
"""


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args],
                          cwd=workdir, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    (d / "config.yaml").write_text(TINY)
    run = snakemake(d, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    (d / "console.txt").write_text(run.stdout + run.stderr)  # what the first run showed on the console
    plan = plan_config(load_config_files([d / "config.yaml"]), SCHEMA)
    return d, plan.study("tiny")


# ------------------------------------------------------------------------------------------ docs/tables.md
def documented_columns() -> dict[str, list[tuple[re.Pattern, str, bool]]]:
    """{table: [(column pattern, dtype, is_exact)]} from the markdown tables of docs/tables.md."""
    text = (ROOT / "docs" / "tables.md").read_text()
    tables: dict[str, list[tuple[re.Pattern, str, bool]]] = {}
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        m = re.match(r"`(?:[a-z_]+/\{cell\}|[a-z_]+)\.parquet`", section)
        if not m:
            continue
        name = re.sub(r"/\{cell\}", "", m.group(0).strip("`")).removesuffix(".parquet")
        rows = []
        for line in section.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) < 3 or not cells[0].startswith("`") or cells[0] == "column":
                continue
            for col in re.findall(r"`([^`]+)`", cells[0]):
                exact = "<" not in col
                pattern = re.compile("".join(".+" if p.startswith("<") else re.escape(p)
                                             for p in re.split(r"(<[^>]+>)", col)))
                rows.append((pattern, cells[1], exact))
        tables[name] = rows
    return tables


def dtype_matches(doc: str, actual: pa.DataType) -> bool:
    """The documented dtype is the Arrow type as pyarrow.parquet.read_schema gives it, exactly (``string`` is not
    ``large_string``, ``int8`` indices are not ``int32``); parameter columns are typed by the config."""
    return doc == "as in config" or str(actual) == doc


def check_against_docs(table: str, schema: pa.Schema, docs) -> None:
    rows = docs[table]
    for field in schema:
        match = next((r for r in rows if r[2] and r[0].fullmatch(field.name)), None) or \
            next((r for r in rows if not r[2] and r[0].fullmatch(field.name)), None)
        assert match, f"{table}: column {field.name!r} is not documented in docs/tables.md"
        assert dtype_matches(match[1], field.type), f"{table}.{field.name}: {field.type} vs documented {match[1]}"
    for pattern, _, exact in rows:
        if exact:
            assert pattern.pattern.replace("\\", "") in schema.names, f"{table}: documented {pattern.pattern} missing"


# ------------------------------------------------------------------------------------------ tests
def test_layout_and_logs(e2e):
    d, study = e2e
    res = d / "results" / "tiny"
    assert study.cell_ids == ["w3-gd", "w3-gf"]
    expected = {"cells.parquet", "summary.parquet", "best_of_k.parquet"}
    for cid in study.cell_ids:
        expected |= {f"{table}/{cid}.parquet" for table in ("init", "trajectories", "curves", "final")}
    expected |= {f"figures/{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")}
    found = {str(p.relative_to(res)) for p in res.rglob("*") if p.is_file()}
    # hidden names aside (Snakemake's .snakemake_timestamp in each directory it declared, .done, .shards)
    visible = {f for f in found if not any(part.startswith(".") for part in Path(f).parts)}
    assert visible == expected  # no temporary files
    assert not (res / ".shards").exists() or not any((res / ".shards").rglob("*.parquet"))  # no shards left
    # each finished table has a second name in .done (a hard link: the same file), for a rerun of the job
    done = sorted(f for f in found if f.startswith(".done/"))
    assert len(done) == 4 * len(study.cell_ids)
    for cid, cell in study.cells.items():
        for table in ("init", "trajectories", "curves", "final"):
            name = res / ".done" / f"k{cell.key:016x}-s{cell.seed}-n{cell.n_trajectories}.{table}.parquet"
            assert name.stat().st_ino == (res / table / f"{cid}.parquet").stat().st_ino
    # one integrate job for the study, on its own cluster: every cell's shards, then the cluster is gone
    log = (d / "logs" / "tiny" / "integrate.log").read_text()
    assert re.search(r"progress: 4/4 shards \(100 %\), [0-9.]+ trajectories/s, ETA 0:00:00", log), log
    assert "dask: LocalCluster with 1 single-threaded worker processes" in log
    assert "integrate done: 0 cell(s) reused; 0 shard(s) reused, 4 computed" in log


def test_tables_match_docs_and_carry_metadata(e2e):
    d, study = e2e
    res = d / "results" / "tiny"
    docs = documented_columns()
    assert set(docs) == {"cells", "init", "trajectories", "curves", "final", "summary", "best_of_k"}
    import reluflow
    from reluflow.pipeline._tables import source_hash

    for path in sorted(res.rglob("*.parquet")):
        if path.parent.name == ".done":  # second names of the per-cell tables (hard links), checked there
            continue
        table = path.parent.name if path.parent != res else path.stem
        check_against_docs(table, pq.read_schema(path), docs)
        meta = read_metadata(path)
        assert meta["reluflow.table"] == table
        assert meta["reluflow.version"] == reluflow.__version__
        assert {"numpy.version", "pyarrow.version", "reluflow.study", "reluflow.seed", "reluflow.host",
                "reluflow.created"} <= set(meta)
        assert meta["reluflow.seed"] == "5"
        assert meta["reluflow.schema_version"] == "2" and meta["reluflow.source_hash"] == source_hash()
        if table not in ("cells", "summary", "best_of_k"):
            cell = study.cells[path.stem]
            assert json.loads(meta["reluflow.params"]) == json.loads(json.dumps(cell.params))
            assert meta["reluflow.cell_key"] == str(cell.key)
        pd.read_parquet(path)  # opens with pandas


def test_values_equal_simulate(e2e):
    d, study = e2e
    res = d / "results" / "tiny"
    for cid, cell in study.cells.items():
        traj, curves, states = simulate(cell.problem, method=cell.method, init=cell.init,
                                        n_trajectories=cell.n_trajectories, seed=cell.seed)
        got = pd.read_parquet(res / "trajectories" / f"{cid}.parquet")
        assert (got["cell"] == cid).all()
        pd.testing.assert_frame_equal(got.drop(columns="cell"), traj, check_exact=True, check_dtype=False)
        got_c = pd.read_parquet(res / "curves" / f"{cid}.parquet")
        pd.testing.assert_frame_equal(got_c.drop(columns="cell"), curves, check_exact=True, check_dtype=False)
        ids, theta0 = read_init(res / "init" / f"{cid}.parquet")
        assert ids.tolist() == list(range(12)) and theta0.shape == (12, 10)  # P = 3 + 3 + 3 + 1
        ids, final, refined = read_final(res / "final" / f"{cid}.parquet")
        assert ids.tolist() == list(range(12))
        np.testing.assert_array_equal(final, np.stack(states["theta_final"].to_numpy()))
        has = traj["refined"].to_numpy()
        assert (~np.isnan(refined).any(axis=1) == has).all()
        if has.any():
            np.testing.assert_array_equal(refined[has], np.stack(states["theta_refined"].to_numpy()[has]))
    # paired initializations: the GD and GF cells of one width start from the same points
    inits = [read_init(res / "init" / f"{cid}.parquet")[1] for cid in study.cell_ids]
    np.testing.assert_array_equal(inits[0], inits[1])


def test_cells_and_summary(e2e):
    from reluflow.analysis import best_of_k, best_of_k_column

    d, study = e2e
    res = d / "results" / "tiny"
    cells = pd.read_parquet(res / "cells.parquet")
    assert cells["cell"].tolist() == study.cell_ids
    assert cells["key"].tolist() == [c.key for c in study.cells.values()]
    assert cells["method.kind"].tolist() == ["gd", "gf"]
    assert cells["risk_backend"].tolist() == ["exact1d", "exact1d"]
    assert cells["n_params"].tolist() == [10, 10]
    summary = pd.read_parquet(res / "summary.parquet")
    assert summary["cell"].tolist() == study.cell_ids and (summary["n"] == 12).all()
    for _, row in summary.iterrows():
        traj = pd.read_parquet(res / "trajectories" / f"{row['cell']}.parquet")
        s = int((traj["risk_final"] <= 0.05).sum())
        for k in (1, 2, 4):
            assert row[best_of_k_column(k, 0.05)] == pytest.approx(best_of_k(s, 12, k))
        fracs = [c for c in summary.columns if c.startswith("frac_status_") and not c.endswith(("_low", "_high"))]
        assert sum(row[c] for c in fracs) == pytest.approx(1.0)
        assert row["risk_final_q50"] == pytest.approx(traj["risk_final"].median())
        # every fraction has its 95 % Wilson interval; the rate medians their bootstrap intervals
        for c in [c for c in summary.columns if c.startswith("frac_") and not c.endswith(("_low", "_high"))]:
            assert row[f"{c}_low"] <= row[c] <= row[f"{c}_high"], c
        for key in ("rate_exp_median", "rate_poly_median"):
            assert np.isnan(row[key]) or row[f"{key}_low"] <= row[key] <= row[f"{key}_high"]
    for name in ("summary", "best_of_k"):
        meta = read_metadata(res / f"{name}.parquet")
        assert json.loads(meta["reluflow.analysis"]) == {"eps": [0.05, 0.001], "k": [1, 2, 4]}
        assert json.loads(meta["reluflow.intervals"]) == {"confidence": 0.95, "binomial": "wilson", "bootstrap":
                                                          "percentile", "n_resamples": 1000, "min_groups": 10}
        assert meta["reluflow.study_spec"] == study.to_json()


def test_best_of_k_table(e2e):
    from reluflow.analysis import best_of_k_column, best_of_k_table

    d, study = e2e
    res = d / "results" / "tiny"
    bok = pd.read_parquet(res / "best_of_k.parquet")
    summary = pd.read_parquet(res / "summary.parquet").set_index("cell")
    assert list(bok.columns) == ["cell", "eps", "k", "successes", "n", "estimate", "low", "high", "supported"]
    # cells in grid order, then eps in the study's order, then K
    assert list(bok["cell"]) == [c for c in study.cell_ids for _ in range(6)]
    assert list(bok["eps"]) == [0.05] * 3 + [0.001] * 3 + [0.05] * 3 + [0.001] * 3
    assert list(bok["k"]) == [1, 2, 4] * 4
    for cid in study.cell_ids:
        traj = pd.read_parquet(res / "trajectories" / f"{cid}.parquet")
        part = bok[bok["cell"] == cid].reset_index(drop=True)
        successes = np.array([int((traj["risk_final"] <= e).sum()) for e in (0.05, 0.001)])
        expected = best_of_k_table(successes, 12, [0.05, 0.001], [1, 2, 4])
        pd.testing.assert_frame_equal(part.drop(columns="cell"), expected, check_exact=True)
        for r in part.itertuples():  # the summary's columns are the same estimates
            assert summary.at[cid, best_of_k_column(r.k, r.eps)] == r.estimate
    assert list(bok["supported"]) == [k * 10 <= 12 for k in bok["k"]]  # 12 trajectories: K = 1 only


def test_aggregate_fills_a_status_seen_in_another_cell(tmp_path):
    # a status that occurs in one cell only: the other cells get count 0, fraction 0 and the interval of 0 out of
    # n (a cell of no trajectories: NaN), and the best-of-K table comes along
    from reluflow.analysis import binomial_interval
    from reluflow.pipeline import write_aggregate

    (tmp_path / "config.yaml").write_text(TINY)
    study = plan_config(load_config_files([tmp_path / "config.yaml"]), SCHEMA).study("tiny")
    frames = {"w3-gd": pd.DataFrame({"status": ["critical", "weird", "budget"], "risk_final": [0.0, 0.01, 1.0]}),
              "w3-gf": pd.DataFrame({"status": ["critical"] * 4, "risk_final": [0.0, 0.0, 0.2, np.inf]})}
    paths = {}
    for cid, df in frames.items():
        paths[cid] = tmp_path / f"{cid}.parquet"
        df.to_parquet(paths[cid])
    write_aggregate(study, paths, tmp_path / "summary.parquet", best_of_k_output=tmp_path / "best_of_k.parquet")
    s = pd.read_parquet(tmp_path / "summary.parquet").set_index("cell")
    assert s.at["w3-gf", "n_status_weird"] == 0 and s.at["w3-gf", "frac_status_weird"] == 0.0
    low, high = binomial_interval(0, 4)
    assert (s.at["w3-gf", "frac_status_weird_low"], s.at["w3-gf", "frac_status_weird_high"]) == (low, high)
    low, high = binomial_interval(1, 3)
    assert (s.at["w3-gd", "frac_status_weird_low"], s.at["w3-gd", "frac_status_weird_high"]) == (low, high)
    bok = pd.read_parquet(tmp_path / "best_of_k.parquet")
    assert bok.groupby("cell", sort=False)["successes"].first().to_dict() == {"w3-gd": 2, "w3-gf": 2}
    assert read_metadata(tmp_path / "best_of_k.parquet")["reluflow.table"] == "best_of_k"
    # without best_of_k_output, only the summary is written
    write_aggregate(study, paths, tmp_path / "only" / "summary.parquet")
    assert [f.name for f in (tmp_path / "only").iterdir()] == ["summary.parquet"]


def test_figures_are_png_and_pdf(e2e):
    d, _ = e2e
    for name in FIGURES:
        png = d / "results" / "tiny" / "figures" / f"{name}.png"
        pdf = png.with_suffix(".pdf")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_figures_drawn_in_parallel_processes_are_the_same_files(e2e, tmp_path):
    from reluflow.pipeline import write_figures

    d, study = e2e
    files = {}
    for processes in (1, 3):
        outs = [tmp_path / str(processes) / f"{name}.{ext}" for name in FIGURES for ext in ("png", "pdf")]
        outs[0].parent.mkdir()
        write_figures(study, d / "results" / "tiny", outs, processes=processes)
        files[processes] = {p.name: p.read_bytes() for p in outs}
    assert files[1] == files[3]
    assert files[1] == {f.name: f.read_bytes() for f in (d / "results" / "tiny" / "figures").iterdir()}
    with pytest.raises(ValueError, match="processes = 0 is not allowed"):
        write_figures(study, d / "results" / "tiny", [tmp_path / "best_of_k.png"], processes=0)


def _figures_without(e2e, tmp_path, table: str) -> None:
    """The figures not drawn from ``table`` ("summary" or "trajectories"), drawn from a copy of the study without
    that table: the same files as drawn from every table. The workflow relies on it: the cell figures are drawn
    while aggregate writes summary.parquet, and the summary figures do not read the trajectories."""
    import shutil

    from reluflow import load
    from reluflow.config import FIGURE_TABLES
    from reluflow.pipeline import write_figures
    from reluflow.pipeline._figures import DRAW, _save

    d, study = e2e
    names = [n for n in FIGURES if table not in FIGURE_TABLES[n]]
    assert names and len(names) < len(FIGURES)
    full = load(d / "results" / "tiny", params="none")
    assert full.summary is not None and full.curves is not None and full.trajectories is not None
    lean_dir = tmp_path / "tiny"
    gone = "summary.parquet" if table == "summary" else table
    shutil.copytree(d / "results" / "tiny", lean_dir, ignore=shutil.ignore_patterns(gone, "figures"))
    assert not (lean_dir / gone).exists()
    (lean_dir / "figures").mkdir()
    (tmp_path / "full").mkdir()
    for name in names:
        outs = [lean_dir / "figures" / f"{name}.{ext}" for ext in ("png", "pdf")]
        write_figures(study, lean_dir, outs)
        refs = [tmp_path / "full" / p.name for p in outs]
        _save(name, DRAW[name](study, full), refs)
        assert [p.read_bytes() for p in outs] == [r.read_bytes() for r in refs]


def test_cell_figures_need_no_summary(e2e, tmp_path):
    _figures_without(e2e, tmp_path, "summary")


def test_summary_figures_need_no_trajectories(e2e, tmp_path):
    import warnings

    with warnings.catch_warnings():
        # a figure that asked for the missing trajectories would warn about them
        warnings.filterwarnings("error", message=".*no trajectories table yet")
        _figures_without(e2e, tmp_path, "trajectories")


def test_aggregate_draws_the_summary_figures_from_the_summary_it_wrote(e2e, tmp_path):
    """The aggregate job draws the figures of the summary (no job of their own): the files the workflow wrote are
    the ones ``write_figures`` draws from the finished tables, and its log names them."""
    from reluflow.config import FIGURE_TABLES
    from reluflow.pipeline import write_figures

    d, study = e2e
    names = [n for n in FIGURES if "summary" in FIGURE_TABLES[n]]
    assert names
    for name in names:
        made = [d / "results" / "tiny" / "figures" / f"{name}.{ext}" for ext in ("png", "pdf")]
        again = [tmp_path / p.name for p in made]
        write_figures(study, d / "results" / "tiny", again)
        assert [p.read_bytes() for p in made] == [p.read_bytes() for p in again], name
    log = (d / "logs" / "tiny" / "aggregate.log").read_text()
    assert all(f"figure {name} ->" in log for name in names), log[-2000:]
    assert not (d / "logs" / "tiny" / "summary_figures.log").exists()


def test_figures_drawn_without_their_tables_are_empty_axes(e2e):
    # drawn from tables that were not read (None) the per-cell figures have empty panels rather than failing
    from reluflow import load
    from reluflow.pipeline._figures import DRAW

    d, study = e2e
    full = load(d / "results" / "tiny", params="none")
    bare = load(d / "results" / "tiny", params="none", trajectories=False, curves=False)

    def ink(fig) -> int:  # plotted points, filled areas and histogram steps above zero
        return sum(sum(len(line.get_ydata()) for line in ax.lines) + len(ax.collections)
                   + sum(int(np.max(p.get_path().vertices[:, 1], initial=0.0) > 0) for p in ax.patches)
                   for ax in fig.axes)

    for name in ("final_risk_hist", "risk_curves"):
        drawn = [ink(DRAW[name](study, t)) for t in (full, bare)]
        assert drawn[0] > 0 and drawn[1] == 0, (name, drawn)


def test_figure_rules_declare_the_tables_their_figures_are_drawn_from():
    # each figure rule's inputs are the tables FIGURE_TABLES names for its figures, no more (summary_figures
    # would wait for tables it never reads) and no fewer (a figure drawn from a table Snakemake did not wait for)
    from reluflow.config import FIGURE_TABLES

    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    # (integrate has no input: its study's JSON is a param)
    jobs = re.findall(r"^rule (\w+):\n(?:    input: (.*)\n)?    output: (.*)$", out, flags=re.MULTILINE)
    assert sum(rule == "integrate" for rule, _, _ in jobs) == 1  # one job for the study's cells
    figure_jobs = {rule: (inputs, outputs) for rule, inputs, outputs in jobs
                   if "/figures/" in outputs and not rule.startswith("figure_")}
    # the summary's figures are drawn by aggregate, which writes the summary: its tables are its own outputs
    assert set(figure_jobs) == {"cell_figures", "aggregate"}
    for rule, (inputs, outputs) in figure_jobs.items():
        files = outputs.split(", ")
        names = {Path(f).stem for f in files if "/figures/" in f}
        drawn_from = {table for name in names for table in FIGURE_TABLES[name]}
        if rule == "aggregate":
            assert drawn_from == {"summary"} and any(f.endswith("/summary.parquet") for f in files), files
            drawn_from = {"trajectories"}  # what the summary is computed from
        wanted = {"cells", *drawn_from}
        kinds: dict[str, int] = {}
        for f in inputs.split(", "):  # cells.parquet, summary.parquet, or a per-cell table's directory
            kind = Path(f).stem
            kinds[kind] = kinds.get(kind, 0) + 1
        assert set(kinds) == wanted, (rule, kinds)
        assert all(n == 1 for n in kinds.values()), (rule, kinds)


def test_load(e2e):
    from reluflow import load

    d, study = e2e
    t = load(d / "results" / "tiny")
    assert list(t.cells["cell"]) == study.cell_ids
    assert len(t.trajectories) == 24 and len(t.summary) == 2
    # the parameter that differs between the cells is joined on, the shared ones are not
    params = [c for c in t.trajectories.columns if c.startswith(("problem.", "init.", "method."))]
    assert t.trajectories.columns[0] == "cell" and list(t.trajectories.columns[1:len(params) + 1]) == params
    assert {"method.kind", "method.step_size", "method.solver"} <= set(params)
    assert "problem.network.widths" not in params
    assert set(t.curves["method.kind"]) == {"gd", "gf"}
    assert t.metadata["reluflow.study"] == "tiny"
    assert t.best_of_k is not None and t.best_of_k.equals(pd.read_parquet(d / "results" / "tiny" / "best_of_k.parquet"))
    lean = load(d / "results" / "tiny", curves=False, summary=False, best_of_k=False)
    assert lean.curves is None and lean.summary is None and lean.best_of_k is None
    assert lean.trajectories.equals(t.trajectories)
    assert t.final is None  # large: read only when asked for
    final = load(d / "results" / "tiny", curves=False, final=True).final
    assert list(final.columns) == ["cell", "trajectory", "theta_final", "theta_refined"] and len(final) == 24
    np.testing.assert_array_equal(np.stack(final["theta_final"].to_numpy())[:12],
                                  read_final(d / "results" / "tiny" / "final" / "w3-gd.parquet")[1])
    no_traj = load(d / "results" / "tiny", trajectories=False)
    assert no_traj.trajectories is None and no_traj.curves.equals(t.curves) and no_traj.summary.equals(t.summary)


def test_console_shows_each_cells_progress_and_the_dashboard_once(e2e):
    d, study = e2e
    console = (d / "console.txt").read_text()
    for cid in study.cell_ids:  # one line per cell when it is done
        assert len(re.findall(rf"^tiny cell {cid}: done$", console, flags=re.M)) == 1, console
    lines = re.findall(r"^tiny progress: .*$", console, flags=re.M)  # and the study's progress, here once
    assert len(lines) == 1 and re.fullmatch(
        r"tiny progress: 4/4 shards \(100 %\), [0-9.]+ trajectories/s, ETA 0:00:00", lines[0]), console
    dashboards = re.findall(r"^tiny dask: LocalCluster with 1 single-threaded worker processes \(dashboard (\S+)\)$",
                            console, flags=re.M)
    assert len(dashboards) == 1 and dashboards[0].startswith("http://"), console
    assert "INFO" not in console  # the jobs' logs stay in their files


def test_rerun_does_nothing_even_with_other_execution_settings(e2e):
    d, _ = e2e
    # nested --config values reach the Snakefile as strings ('3'): they are typed again, then validated
    run = snakemake(d, "-n", "--config", "execution={shard_size: 3, workers: 2, retries: 5, keep_shards: true}")
    assert run.returncode == 0 and "Nothing to be done" in run.stdout + run.stderr, run.stderr[-2000:]


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_redrawing_a_figure_starts_no_cluster(e2e):
    d, _ = e2e
    figure = d / "results" / "tiny" / "figures" / "risk_curves.png"
    integrate_log = d / "logs" / "tiny" / "integrate.log"
    drawn, integrated = figure.read_bytes(), integrate_log.stat().st_mtime_ns
    figure.unlink()
    run = snakemake(d, "--cores", "2")
    assert run.returncode == 0, run.stderr[-4000:]
    assert figure.read_bytes() == drawn
    assert re.search(r"cell_figures\s+1\b", run.stdout + run.stderr) and "integrate" not in run.stdout + run.stderr
    assert integrate_log.stat().st_mtime_ns == integrated  # no integrate job, so no cluster


def test_parameter_change_reruns_only_that_cell(e2e):
    d, _ = e2e
    (d / "changed.yaml").write_text(TINY.replace("step_size: 0.05", "step_size: 0.04"))
    run = snakemake(d, "-n", "--configfile", "changed.yaml")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-2000:]
    # one integrate job, the study's: it gets the unchanged cell's tables back from .done and computes only the
    # changed one (tests/test_pipeline_integrate.py::test_a_changed_cell_is_the_only_one_computed_again)
    stats = out.split("Job stats:")[1].split("\n\n")[0]
    assert re.search(r"integrate\s+1\b", stats) and not re.search(r"^init\b", stats, flags=re.M), stats


# ------------------------------------------------------------------------------------------ the shipped workflow
def test_lint():
    run = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations" in run.stdout + run.stderr


def test_slurm_profile_names_only_rules_that_exist():
    import yaml

    run = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    rules = set(run.stdout.split())
    assert {"integrate", "aggregate", "cell_figures"} <= rules
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    assert named <= rules, f"profiles/slurm names rules that do not exist: {sorted(named - rules)}"


def test_dry_run_of_the_default_study():
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert "Nothing to be done" in out or re.search(r"integrate\s+\d+", out)


@pytest.mark.parametrize("extra, threads", [
    ([], 4),  # the study's LocalCluster: one worker per core given
    (["--config", "execution={workers: 3}"], 3),
    (["--config", "execution={scheduler: address, address: 'tcp://127.0.0.1:1'}"], 1),  # a client only
])
def test_integrate_threads_follow_the_cluster_mode(tmp_path, extra, threads):
    (tmp_path / "config.yaml").write_text(TINY.replace("  workers: 1", "  workers: null"))
    run = snakemake(tmp_path, "-n", "--cores", "4", *extra)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    jobs = [j for j in out.split("\n\n") if "rule integrate:" in j]
    assert len(jobs) == 1
    for job in jobs:
        assert re.search(rf"--workers {threads}\b", job), job


def test_figures_cli_rejects_a_process_count_below_one(tmp_path):
    run = subprocess.run([sys.executable, "-m", "reluflow", "figures", "--study-json", "{}", "--study-dir",
                          str(tmp_path), "--output", str(tmp_path / "best_of_k.png"), "--processes", "0"],
                         capture_output=True, text=True, check=False)
    assert run.returncode != 0
    assert "--processes = 0 is not allowed: expected an integer >= 1" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "best_of_k.png").exists()


@pytest.mark.slow  # a whole Snakemake or dask run: in `pytest -m slow` (CI runs it), not the default run
def test_a_damaged_table_with_its_old_mtime_is_rebuilt(e2e, tmp_path):
    """A per-cell table truncated on disk keeps its mtime, so Snakemake alone would find nothing to do and every
    reader would fail: the Snakefile sets it aside and the integrate job rebuilds it (the other cells come back
    from .done); a damaged summary is rebuilt by aggregate alone. The rebuilt tables equal the originals."""
    import shutil

    d, study = e2e
    work = tmp_path / "work"
    shutil.copytree(d, work, symlinks=True)
    cell = study.cell_ids[0]
    table = work / "results" / "tiny" / "trajectories" / f"{cell}.parquet"
    original = pd.read_parquet(table)
    summary = work / "results" / "tiny" / "summary.parquet"
    original_summary = pd.read_parquet(summary)
    for path in (table, summary):
        stat = path.stat()
        raw = path.read_bytes()
        path.unlink()  # a new file (the .done name keeps the intact one), as a copy or a sync tool would leave it
        path.write_bytes(raw[: len(raw) // 2])
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    run = snakemake(work, "--cores", "2")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    assert f"{table.relative_to(work)} is damaged (no parquet magic number" in out
    assert "summary.parquet is damaged" in out and "it will be rebuilt" in out
    pd.testing.assert_frame_equal(pd.read_parquet(table), original)
    pd.testing.assert_frame_equal(pd.read_parquet(summary), original_summary)
    assert len(list((work / "results" / "tiny" / ".damaged").iterdir())) == 2  # kept for a look, out of the way
    again = snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def test_parquet_damage_reads_only_the_ends(tmp_path):
    from reluflow.config import parquet_damage

    good = tmp_path / "good.parquet"
    pd.DataFrame({"a": range(100)}).to_parquet(good)
    raw = good.read_bytes()
    assert parquet_damage(good) is None
    for name, data, reason in [("short", raw[:8], "too short"), ("cut", raw[:-1], "magic number"),
                               ("text", b"x" * 100, "magic number"),
                               ("footer", raw[:4] + raw[-8:], "footer is longer than the file")]:
        (tmp_path / name).write_bytes(data)
        assert reason in parquet_damage(tmp_path / name)
    assert "cannot be read" in parquet_damage(tmp_path / "missing")
