"""reluflow.plot: figures drawn from a study's tables (built here synthetically, in the shapes reluflow.load
returns): encodings from the grid, every function on a given Axes, labels and log scales, publication files
(TrueType fonts in the PDF, PNG at >= 200 dpi, the same bytes for the same tables)."""

from __future__ import annotations

import dataclasses
import itertools

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import reluflow.plot as rp
from reluflow._load import StudyTables
from reluflow.analysis import STATUSES, best_of_k_column, best_of_k_successes, best_of_k_table, summarize_cell

matplotlib.use("Agg")

EPS = (1e-4, 1e-3, 1e-2)
KS = (1, 2, 4, 8)
HAT = {"problem.network.input_dim": 1, "problem.measure.kind": "uniform", "problem.measure.low": 0.0,
       "problem.measure.high": 1.0, "problem.target.kind": "piecewise_affine",
       "problem.target.knots": (0.0, 0.5, 1.0), "init.kind": "normal"}
GD = {"method.kind": "gd", "method.n_steps": 400, "method.refine": False}
GF = {"method.kind": "gf", "method.solver": "dopri5", "method.t_end": 20.0, "method.refine": False}


def _trajectory_rows(rng: np.random.Generator, n: int, rate: float, kind: str, step: float | None):
    """One cell's curves and trajectories: log-spaced checkpoints (GF: at uneven times, as an adaptive solver
    records them), risk decaying at ``rate`` with noise, one run that stops early at zero risk, norms growing."""
    curves, trajs = [], []
    for i in range(n):
        if kind == "gd":
            steps = np.unique(np.round(np.geomspace(1, 400, 12)).astype(int))
            t = np.concatenate([[0.0], steps * step])
            steps = np.concatenate([[0], steps])
        else:
            t = np.concatenate([[0.0], np.sort(rng.uniform(0.01, 20.0, 11))])
            steps = np.arange(t.size) * 7
        r0 = 10 ** rng.normal(0.0, 0.5)
        risk = r0 * np.exp(-rate * t * rng.uniform(0.5, 1.5)) + 10 ** rng.uniform(-6, -3)
        status = "budget"
        if i == 0:  # stops early: zero risk at its 6th record
            t, steps, risk = t[:6], steps[:6], np.concatenate([risk[:5], [0.0]])
            status = "zero_risk"
        norm = 1.0 + np.log1p(t) * (0.5 + i / n)
        curves.append(pd.DataFrame({"trajectory": i, "checkpoint": np.arange(t.size), "step": steps, "t": t,
                                    "risk": risk, "grad_norm": np.sqrt(risk), "param_norm": norm}))
        trajs.append({"trajectory": i, "status": status, "risk_final": float(risk[-1]),
                      "risk_init": float(risk[0]), "param_norm_final": float(norm[-1]),
                      "class": "global_min" if risk[-1] < 1e-3 else "unconverged"})
    return pd.concat(curves, ignore_index=True), pd.DataFrame(trajs)


def make_tables(grid: list[dict], *, n: int = 24, seed: int = 7, study: str = "toy") -> StudyTables:
    """A StudyTables as reluflow.load returns it, for cells with the fixed parameters HAT and ``grid``'s."""
    rng = np.random.default_rng(seed)
    ids = [g.pop("cell") for g in (dict(g) for g in grid)]
    rows = [{**HAT, **{k: v for k, v in g.items() if k != "cell"}} for g in grid]
    cell_dtype = pd.CategoricalDtype(ids, ordered=True)
    cells = pd.DataFrame(rows)
    cells.insert(0, "cell", pd.Categorical(ids, dtype=cell_dtype))
    cells.insert(1, "study", study)
    cells.insert(2, "seed", seed)
    cells.insert(3, "n_trajectories", n)
    curves, trajs, summary, bok = [], [], [], []
    for cid, row in zip(ids, rows, strict=True):
        step = row.get("method.step_size")
        rate = 0.5 + 3.0 * (step if step is not None and not pd.isna(step) else 0.1) \
            + 0.02 * row["problem.network.widths"][0]
        c, tr = _trajectory_rows(rng, n, rate, row["method.kind"], step)
        curves.append(c.assign(cell=cid))
        trajs.append(tr.assign(cell=cid))
        summary.append({"cell": cid, **row, "n": n,
                        **summarize_cell(tr, eps_list=EPS, k_list=KS, n_resamples=20)})
        s = best_of_k_successes(tr["risk_final"], EPS)
        bok.append(best_of_k_table(s, n, EPS, KS).assign(cell=cid))

    def with_cell(frames):
        df = pd.concat(frames, ignore_index=True)
        df["cell"] = df["cell"].astype(cell_dtype)
        return df[["cell", *(c for c in df.columns if c != "cell")]]

    return StudyTables("results/" + study, cells, with_cell(trajs), with_cell(curves),
                       with_cell([pd.DataFrame(summary)]), best_of_k=with_cell(bok))


def step_grid() -> list[dict]:
    """widths × GD step sizes: the grid that drew two identical lines when only width and gd/gf were encoded."""
    return [{"cell": f"w{w}-lr{s}", "problem.network.widths": (w,), **GD, "method.step_size": s}
            for w in (4, 16) for s in (0.01, 0.04)]


def gd_gf_grid() -> list[dict]:
    """GF and GD at three step sizes (claim C7), one width."""
    return [{"cell": "gf", "problem.network.widths": (8,), **GF, "method.step_size": None, "method.n_steps": None}] \
        + [{"cell": f"gd-lr{s}", "problem.network.widths": (8,), **GD, "method.step_size": s, "method.solver": None,
            "method.t_end": None} for s in (0.2, 0.05, 0.01)]


@pytest.fixture(scope="module")
def steps() -> StudyTables:
    return make_tables(step_grid())


@pytest.fixture(scope="module")
def c7() -> StudyTables:
    return make_tables(gd_gf_grid(), study="c7")


def _axes(n: int = 1):
    fig = Figure(figsize=(4, 3), layout="constrained")
    return fig, (fig.subplots() if n == 1 else fig.subplots(1, n))


def _line_styles(ax) -> list[tuple]:
    return [(to_rgba(line.get_color()), str(line.get_linestyle()), str(line.get_marker())) for line in ax.lines
            if not line.get_label().startswith("_")]


# ------------------------------------------------------------------------------------ encodings from the grid
def test_step_size_grid_draws_distinguishable_series(steps):
    """Issue #16's bug: a grid over step size drew identical lines (only width and gd/gf were encoded)."""
    assert rp.varying_keys(steps) == ["problem.network.widths", "method.step_size"]
    styles = rp.series_styles(steps)
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 4
    assert styles["w4-lr0.01"]["label"] == "width=4, step=0.01"
    _, ax = _axes()
    rp.risk_curves(steps, ax=ax)
    drawn = _line_styles(ax)
    assert len(drawn) == 4 and len(set(drawn)) == 4
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == sorted(s["label"] for s in styles.values())


def test_a_grid_of_step_sizes_alone_gets_different_colours():
    tables = make_tables([{"cell": f"lr{s}", "problem.network.widths": (8,), **GD, "method.step_size": s}
                          for s in (0.04, 0.01, 0.02)])
    styles = rp.series_styles(tables)
    colours = {c: s["color"] for c, s in styles.items()}
    assert len(set(colours.values())) == 3
    # a sequential colormap in sorted order: the smallest step the darkest
    lum = {c: 0.3 * r + 0.6 * g + 0.1 * b for c, (r, g, b, _) in colours.items()}
    assert lum["lr0.01"] < lum["lr0.02"] < lum["lr0.04"]


def test_gd_and_gf_cells_are_told_apart_by_kind_not_by_their_unset_parameters(c7):
    # method.solver, t_end, n_steps differ too (set in GF or GD only): method.kind and step size tell the cells apart
    assert rp.varying_keys(c7) == ["method.step_size", "method.kind"]
    styles = rp.series_styles(c7)
    assert styles["gf"]["label"] == "gf" and styles["gd-lr0.05"]["label"] == "step=0.05, gd"
    assert styles["gf"]["linestyle"] != styles["gd-lr0.05"]["linestyle"]
    assert len({s["color"] for s in styles.values()}) == 4
    quick = make_tables([{"cell": f"w{w}-{m['method.kind']}", "problem.network.widths": (w,), **m}
                         for w in (4, 16, 64) for m in ({**GD, "method.step_size": 0.02}, GF)])
    assert rp.varying_keys(quick) == ["problem.network.widths", "method.kind"]
    assert rp.series_styles(quick)["w16-gf"]["label"] == "width=16, gf"
    assert [label for label, _ in rp.group_cells(quick)] == ["gd", "gf"]


def test_labels_name_problem_parameters_that_vary_with_the_encoded_one():
    """Safran & Shamir's cells vary the student's width and the input dimension (= the teacher's width) at once:
    the width alone tells the cells apart, but a label naming only it hid k (k8_n9 read "width=9")."""
    cells = [(6, 6), (8, 8), (10, 10), (8, 9)]
    tables = make_tables([{"cell": f"k{k}_n{n}", "problem.network.widths": (n,), "problem.network.input_dim": k,
                           "problem.measure.dim": k, "problem.target.widths": (k,), **GD, "method.step_size": 0.05}
                          for k, n in cells])
    assert rp.varying_keys(tables) == ["problem.network.widths"]  # one encoding: colour by width
    labels = {c: s["label"] for c, s in rp.series_styles(tables).items()}
    # d named once: the measure's dimension and the teacher's width repeat it cell for cell
    assert labels == {"k6_n6": "width=6, d=6", "k8_n8": "width=8, d=8", "k10_n10": "width=10, d=10",
                      "k8_n9": "width=9, d=8"}
    # a teacher width that does not repeat d is named as the teacher's
    other = make_tables([{"cell": f"k{k}", "problem.network.widths": (8,), "problem.network.input_dim": 4,
                          "problem.target.widths": (k,), **GD, "method.step_size": 0.05} for k in (2, 3)])
    assert [s["label"] for s in rp.series_styles(other).values()] == ["target width=2", "target width=3"]


def test_third_key_is_a_marker():
    tables = make_tables([{"cell": f"w{w}-lr{s}-{k}", "problem.network.widths": (w,), **GD, "method.step_size": s,
                           "init.kind": k} for w in (4, 16) for s in (0.01, 0.04) for k in ("normal", "uniform")])
    styles = rp.series_styles(tables)
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in styles.values()}) == 8
    assert styles["w4-lr0.01-uniform"]["label"] == "width=4, step=0.01, init=uniform"


def test_caption_names_what_the_cells_share(steps):
    line = rp.caption(steps)
    assert line.startswith("toy: ")
    for part in ("measure uniform (low=0, high=1)", "target piecewise_affine", "init normal", "steps=400",
                 "24 trajectories per cell", "seed 7"):
        assert part in line, (part, line)
    assert "step=" not in line and "width" not in line  # the grid's keys are in the legend, not the caption
    assert "\n" not in line


# ------------------------------------------------------------------------------------ every function, on ax=
def _draw_all(t: StudyTables, c7: StudyTables) -> dict:
    fig = Figure(figsize=(12, 9), layout="constrained")
    axes = fig.subplots(3, 3).ravel()
    out = {
        "risk_curves": (axes[0], rp.risk_curves(t, ax=axes[0])),
        "final_risk": (axes[1], rp.final_risk(t, ax=axes[1], eps=EPS)),
        "final_risk_hist": (axes[2], rp.final_risk(t, ax=axes[2], kind="hist")),
        "status_fractions": (axes[3], rp.status_fractions(t, ax=axes[3])),
        "class_fractions": (axes[4], rp.status_fractions(t, ax=axes[4], what="class")),
        "best_of_k": (axes[5], rp.best_of_k(t, ax=axes[5], eps=1e-2)),
        "norm_growth": (axes[6], rp.norm_growth(t, ax=axes[6])[0]),
        "rate_comparison": (axes[7], rp.rate_comparison(c7, ax=axes[7])),
        "published_vs_regenerated": (axes[8], rp.published_vs_regenerated(published_table(), ax=axes[8])),
    }
    return fig, out


def published_table() -> pd.DataFrame:
    from reluflow.analysis import binomial_interval

    k = np.arange(6, 21, 2)
    hits = np.array([3, 28, 90, 170, 330, 470, 520, 740])
    low, high = binomial_interval(hits, 1000)
    return pd.DataFrame({"k": k, "n": 1000, "published": [0.003, 0.031, 0.084, 0.19, 0.31, 0.46, 0.61, 0.72],
                         "estimate": hits / 1000, "low": low, "high": high})


def test_every_function_draws_on_the_given_axes_with_labelled_axes(steps, c7):
    _, drawn = _draw_all(steps, c7)
    for name, (given, returned) in drawn.items():
        assert returned is given, name
        ink = len(given.lines) + len(given.collections) + len(given.patches)
        assert ink > 0, name
        assert given.get_xlabel() and given.get_ylabel(), name


def test_log_scales_where_values_span_decades(steps, c7):
    _, d = _draw_all(steps, c7)
    assert d["risk_curves"][0].get_yscale() == "log"
    assert d["risk_curves"][0].get_xscale() == "symlog"  # t spans decades, and t = 0 stays on the axis
    assert d["risk_curves"][0].get_xlim()[0] == 0.0
    assert d["final_risk"][0].get_xscale() == "log" and d["final_risk_hist"][0].get_xscale() == "log"
    assert d["best_of_k"][0].get_xscale() == "log"
    assert d["rate_comparison"][0].get_yscale() == "log" and d["rate_comparison"][0].get_xscale() == "linear"
    assert d["published_vs_regenerated"][0].get_yscale() == "log"  # 0.003 to 0.74
    assert d["status_fractions"][0].get_yscale() == "linear"


def test_time_axis_says_what_t_is_for_gd_and_gf(steps, c7):
    assert "step sizes summed" in rp.risk_curves(steps, ax=_axes()[1]).get_xlabel()
    mixed = rp.rate_comparison(c7, ax=_axes()[1]).get_xlabel()
    assert mixed.startswith("time") and "GD" in mixed and "gamma" in mixed
    gf = rp.risk_curves(c7, ax=_axes()[1], cells=["gf"]).get_xlabel()
    assert gf == r"time $t$"


def test_norm_growth_on_two_axes_or_a_twin(steps):
    fig = Figure()
    top, bottom = fig.subplots(2, 1)
    norm_ax, risk_ax = rp.norm_growth(steps, ax=(top, bottom), trajectories=2)
    assert (norm_ax, risk_ax) == (top, bottom)
    assert len(top.lines) == len(bottom.lines) == 2 * 4 and risk_ax.get_yscale() == "log"
    assert "theta" in norm_ax.get_ylabel()
    _, ax = _axes()
    norm_ax, risk_ax = rp.norm_growth(steps, ax=ax, trajectories=[0, 3])
    assert norm_ax is ax and risk_ax is not ax and len(risk_ax.lines) == 8
    # the runs whose norm grew most: in this table, the highest ids (norm = 1 + log1p(t) (0.5 + i/n))
    assert rp.norm_growth(steps, ax=_axes()[1], trajectories=1, cells=["w4-lr0.01"])[0].lines[0].get_ydata()[-1] \
        == pytest.approx(float(steps.curves.query("cell == 'w4-lr0.01' and trajectory == 23")["param_norm"].iloc[-1]))


def test_rate_comparison_draws_medians_of_the_paired_starts(c7):
    _, ax = _axes()
    rp.rate_comparison(c7, ax=ax)
    assert len(ax.lines) == 4 and ax.get_legend().get_title().get_text() == "median of 24 paired starts"
    one = rp.gd_vs_gf(c7, ax=_axes()[1], trajectory=5)
    gd = c7.curves.query("cell == 'gd-lr0.05' and trajectory == 5")
    line = next(line for line in one.lines if line.get_label() == "step=0.05, gd")
    np.testing.assert_allclose(line.get_ydata(), gd["risk"].to_numpy(), rtol=1e-12)


def test_risk_curves_read_uneven_checkpoints_on_a_common_time_grid(c7):
    """GF checkpoints are positions within a trajectory, not shared times: the median is over the runs' risks at
    the same t (interpolated), and a run that stopped keeps its last risk."""
    _, ax = _axes()
    rp.risk_curves(c7, ax=ax, cells=["gf"], bands=())
    x = ax.lines[0].get_xdata()
    assert np.all(np.diff(x) > 0) and x[0] == 0.0 and x[-1] == pytest.approx(c7.curves.query("cell == 'gf'").t.max())


def test_status_fractions_draw_the_wilson_intervals(steps):
    _, ax = _axes()
    rp.status_fractions(steps, ax=ax)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["zero risk", "budget"]  # no cell reached the others
    s = steps.summary.set_index("cell").loc["w16-lr0.04"]
    bars = [c for c in ax.collections if len(c.get_segments()) == 2]
    lows = sorted(round(float(seg[0][1]), 12) for c in bars for seg in c.get_segments())
    assert round(float(s["frac_status_budget_low"]), 12) in lows
    assert rp.status_fractions(steps, ax=_axes()[1], show_empty=True).get_xticks().size == len(STATUSES)


def test_best_of_k_from_the_summary_is_the_best_of_k_table(steps):
    rebuilt = rp.best_of_k_long(steps.summary)
    table = steps.best_of_k.assign(cell=steps.best_of_k["cell"].astype(str))
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), table[rebuilt.columns].reset_index(drop=True))
    a, b = _axes(2)[1]
    rp.best_of_k(steps, ax=a, eps=1e-2)
    rp.best_of_k(steps.summary, ax=b, eps=1e-2)
    assert [line.get_ydata().tolist() for line in a.lines] == [line.get_ydata().tolist() for line in b.lines]
    est = steps.summary.set_index("cell").loc["w4-lr0.01", best_of_k_column(2, 1e-2)]
    assert est in a.lines[0].get_ydata()
    with pytest.raises(ValueError, match="not among"):
        rp.best_of_k(steps, ax=a, eps=0.5)


def test_published_outside_the_interval_is_marked():
    _, ax = _axes()
    rp.published_vs_regenerated(published_table(), ax=ax, quantity="spurious-minimum rate")
    labels = [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]
    assert "published, outside the interval" in labels  # 0.61 against 520/1000
    assert ax.get_xlabel() == "k (n = 1000 each)" and ax.get_ylabel() == "spurious-minimum rate"


def test_published_disagreement_follows_the_verdict_when_it_is_given():
    """With an ``agrees`` column (a verdict's judgement), red marks exactly its False rows, whatever the interval
    says: 0.61 against 520/1000 lies outside the 95 % interval but is judged to agree here, 0.084 is inside but
    judged not to."""
    df = published_table()
    agrees = (df["k"] != 10).to_numpy()  # only k = 10 disagrees
    _, ax = _axes()
    rp.published_vs_regenerated(df.assign(agrees=agrees), ax=ax, disagree_label="published, more than 2 SE away")
    red = [line for line in ax.lines if line.get_label() == "published, more than 2 SE away"]
    assert len(red) == 1 and red[0].get_xdata().tolist() == [10.0]
    assert not any(line.get_label() == "published, outside the interval" for line in ax.lines)
    # visible where the estimate sits on it (the full table's misses at rates 0.7 and 0.9 on a log axis): larger
    # than the estimate's marker and drawn above it
    estimate = next(line for line in ax.lines if line.get_marker() == "o")
    assert red[0].get_markersize() > 1.5 * estimate.get_markersize()
    assert red[0].get_zorder() > estimate.get_zorder()


def test_published_by_cell_keeps_a_zero_rate_on_its_axis():
    """Text x values (cell ids) take one position each, in order; a zero estimate among rates spanning decades
    gets a symlog axis (a log axis would drop it), linear below the smallest positive value."""
    df = published_table().assign(cell=lambda d: [f"k{k}_n{k}" for k in d["k"]])
    df.loc[0, ["estimate", "low"]] = 0.0
    _, ax = _axes()
    rp.published_vs_regenerated(df, ax=ax, x="cell", xlabel="cell")
    assert [t.get_text() for t in ax.get_xticklabels()] == list(df["cell"])
    assert list(ax.get_xticks()) == list(range(len(df)))
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] < 0.0 <= ax.get_ylim()[1]
    assert any(line.get_ydata()[0] == 0.0 for line in ax.lines)  # the zero estimate is drawn
    assert ax.get_xticklabels()[0].get_rotation() == 90  # eight ids side by side would overlap


def test_tables_not_read_give_empty_axes(steps):
    bare = StudyTables(steps.study_dir, steps.cells, None, None, None)
    for draw in (rp.risk_curves, rp.final_risk, rp.status_fractions, rp.best_of_k, rp.rate_comparison):
        ax = draw(bare, ax=_axes()[1])
        assert not ax.lines and not ax.collections and ax.get_xlabel(), draw.__name__


def test_a_loaded_table_alone_is_enough(steps):
    """A DataFrame instead of the StudyTables: its own parameter columns give the encodings."""
    curves = steps.curves.merge(steps.cells[["cell", "problem.network.widths", "method.step_size"]], on="cell")
    ax = rp.risk_curves(curves, ax=_axes()[1])
    assert len(set(_line_styles(ax))) == 4


def test_without_ax_a_new_figure(steps):
    import matplotlib.pyplot as plt

    try:
        ax = rp.final_risk(steps)
        assert ax.figure is plt.gcf() and ax.lines
        norm_ax, risk_ax = rp.norm_growth(steps)
        assert norm_ax.figure is risk_ax.figure
    finally:
        plt.close("all")


# ------------------------------------------------------------------------------------ publication files
def _figure(steps: StudyTables) -> Figure:
    with rp.publication():
        fig, axes = rp.figure(2)
        rp.risk_curves(steps, ax=axes[0])
        rp.best_of_k(steps, ax=axes[1])
    return fig


def test_pdf_embeds_truetype_fonts_and_png_is_200_dpi(steps, tmp_path):
    fig = _figure(steps)
    pdf, png = rp.save(fig, [tmp_path / "f.pdf", tmp_path / "f.png"])
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and b"/FontFile2" in data  # TrueType (Type 42) font programs embedded
    assert b"/Type3" not in data and b"/FontType 3" not in data
    assert b"/CreationDate" not in data
    from PIL import Image

    with Image.open(png) as im:
        w, h = fig.get_size_inches()
        assert im.size == (round(w * rp.DPI), round(h * rp.DPI)) and rp.DPI >= 200
        assert im.info["dpi"][0] == pytest.approx(rp.DPI, abs=0.01)
    with pytest.raises(ValueError, match="at least 200"):
        rp.save(fig, tmp_path / "low.png", dpi=100)


def test_same_tables_give_identical_files(steps, tmp_path):
    for name in ("a", "b"):
        rp.save(_figure(steps), [tmp_path / f"{name}.pdf", tmp_path / f"{name}.png", tmp_path / f"{name}.svg"])
    for ext in ("pdf", "png", "svg"):
        assert (tmp_path / f"a.{ext}").read_bytes() == (tmp_path / f"b.{ext}").read_bytes(), ext


def test_the_notebook_example_of_docs_plotting_runs(steps, tmp_path, monkeypatch):
    import re
    from pathlib import Path

    import matplotlib.pyplot as plt

    import reluflow

    text = (Path(__file__).resolve().parents[1] / "docs" / "plotting.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    monkeypatch.setattr(reluflow, "load", lambda study_dir: steps)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(example, "docs/plotting.md", "exec"), {})
    finally:
        plt.close("all")
    assert (tmp_path / "fig1.pdf").read_bytes().startswith(b"%PDF-") and (tmp_path / "fig1.png").is_file()


@pytest.mark.parametrize("span", [(2.1e-3, 0.09), (1e-9, 1e-1), (4e-3, 6e-3), (1.1e-3, 9e-3), (0.02, 0.9)])
def test_final_risk_tick_labels_do_not_run_into_each_other(steps, span):
    """Final risks within two decades (Safran & Shamir's spurious minima, 2e-3 to 0.1): matplotlib labelled
    2×10⁻³, 3×10⁻³, 4×10⁻³, 6×10⁻³ and they overlapped on a panel 3.6 inches wide."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    lo, hi = span
    traj = steps.trajectories.copy()
    traj["risk_final"] = np.geomspace(lo, hi, len(traj))
    tables = dataclasses.replace(steps, trajectories=traj)
    fig = Figure(figsize=(3.6, 2.7), layout="constrained")
    ax = fig.subplots()
    with rp.publication():
        rp.final_risk(tables, ax=ax)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    x0, x1 = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
              if t.get_visible() and t.get_text() and x0 <= t.get_position()[0] <= x1]
    assert labels, "no label in view"  # the axis still says where it is
    _assert_apart(labels, renderer)


def test_time_axis_labels_do_not_run_into_each_other():
    """GD at step 0.05: the first positive time is 0.05; with the symlog's linear part reaching it, the label 10⁻²
    fell inside that part, next to 0."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    tables = make_tables([{"cell": "lr0.05", "problem.network.widths": (8,), **GD, "method.step_size": 0.05}])
    assert tables.curves["t"][tables.curves["t"] > 0].min() == pytest.approx(0.05)
    fig = Figure(figsize=(3.4, 2.7), layout="constrained")
    ax = fig.subplots()
    with rp.publication():
        rp.risk_curves(tables, ax=ax)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    assert ax.get_xscale() == "symlog" and ax.get_xlim()[0] == 0.0
    renderer = canvas.get_renderer()
    x0, x1 = ax.get_xlim()
    labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text() and x0 <= t.get_position()[0] <= x1]
    assert len(labels) >= 3, [t.get_text() for t in labels]
    _assert_apart(labels, renderer)


def _assert_apart(labels, renderer) -> None:
    """No two of the tick ``labels`` overlap, left to right, as drawn by ``renderer``."""
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    for left, right in itertools.pairwise(boxes):
        assert left.x1 <= right.x0, [t.get_text() for t in labels]
