"""Endpoint semantics: a class only where a critical point describes the endpoint (docs/analysis.md)."""

from __future__ import annotations

import numpy as np
import pytest

import reluflow
from reluflow.analysis import TRUST_RTOL, analyse_endpoints, summarize_cell


class Toy:
    """A smooth toy risk in R^2 given by ``f(theta) -> (T,)`` and its gradient ``g(theta) -> (T, 2)``."""

    n_params = 2

    def __init__(self, f, g):
        self.f, self.g = f, g

    def risk(self, theta):
        return self.f(np.asarray(theta, dtype=float))

    def risk_and_grad(self, theta):
        theta = np.asarray(theta, dtype=float)
        return self.f(theta), self.g(theta)


# L = x^2 - y^2 + y^4 / 2 + 1: a saddle at 0 (risk 1), minima at (0, +-1) (risk 1/2)
SADDLE = Toy(lambda t: t[:, 0] ** 2 - t[:, 1] ** 2 + 0.5 * t[:, 1] ** 4 + 1.0,
             lambda t: np.stack([2 * t[:, 0], -2 * t[:, 1] + 2 * t[:, 1] ** 3], axis=1))
# L = (x^2 - 1)^2 + (y^2 - 1)^2 / 10 + 0.1: a minimum at (1, 1) with risk 0.1
WELL = Toy(lambda t: (t[:, 0] ** 2 - 1) ** 2 + 0.1 * (t[:, 1] ** 2 - 1) ** 2 + 0.1,
           lambda t: np.stack([4 * t[:, 0] * (t[:, 0] ** 2 - 1), 0.4 * t[:, 1] * (t[:, 1] ** 2 - 1)], axis=1))


def run(toy, theta, status="budget", **kw):
    theta = np.asarray(theta, dtype=float)
    risk, grad = toy.risk_and_grad(theta)
    kw = {"risk_tol": 1e-12, "grad_tol": 1e-10, **kw}
    return analyse_endpoints(toy, theta, np.array([status] * len(theta)), risk, np.linalg.norm(grad, axis=1), **kw)


def test_approaching_a_saddle_is_a_saddle_escaping_it_is_not():
    # (0.01, 1e-4): above the saddle, in its quadratic region; (1e-3, 0.1): already below it, escaping
    out = run(SADDLE, [[0.01, 1e-4], [1e-3, 0.1]])
    assert out["refine_converged"].all()
    np.testing.assert_allclose(out["nearest_risk"], 1.0, atol=1e-12)
    assert list(out["nearest_class"]) == ["saddle", "saddle"]
    assert list(out["refine_local"]) == [True, False]
    assert list(out["class"]) == ["saddle", "unconverged"]
    assert out["refine_model_error"][0] < TRUST_RTOL


def test_a_far_refinement_gives_no_class():
    # from x = 2 Newton travels to the minimum at x = 1, where the model's gradient at x = 2 is 8 against 24
    out = run(WELL, [[2.0, 1.0], [1.01, 1.0]])
    assert out["refine_converged"].all() and list(out["nearest_class"]) == ["local_min", "local_min"]
    np.testing.assert_allclose(out["refine_model_error"][0], 2 / 3, rtol=1e-4)
    assert out["refine_model_error"][1] < 0.02
    assert list(out["class"]) == ["unconverged", "local_min"]
    # known optimum 0.1: that minimum is global, and the endpoint 1e-3 above it is on its way there, not at it
    out = run(WELL, [[1.01, 1.0], [1.0, 1.0]], status="critical", optimal_risk=0.1)
    assert list(out["nearest_class"]) == ["global_min", "global_min"]
    assert list(out["class"]) == ["unconverged", "global_min"]


def test_critical_endpoints_are_judged_where_they_are():
    # |G| <= grad_tol at the saddle itself: no refinement needed to call it a saddle
    out = run(SADDLE, [[0.0, 0.0]], status="critical")
    assert out["class"][0] == "saddle" and out["hessian_at"][0] in ("refined", "endpoint")
    out = run(SADDLE, [[0.0, 0.0]], status="critical", second_order=False)
    assert out["class"][0] == "unconverged" and not out["refined"].any() and out["hessian_at"][0] == "none"


HAT = {"network": {"input_dim": 1, "widths": [4]},
       "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
       "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}}


@pytest.fixture(scope="module")
def hat_run():
    """The reported case: hat target, width 4, GD step 0.02, 1000 steps, 200 trajectories, seed 11."""
    return reluflow.simulate(HAT, method={"kind": "gd", "step_size": 0.02, "n_steps": 1000}, n_trajectories=200,
                             seed=11)


def test_hat_classes_agree_with_the_risk(hat_run):
    tr = hat_run.trajectories
    tol = 1e-12  # the method's risk_tol
    assert (tr["status"] == "budget").sum() > 150  # the case is about budget endpoints
    assert (tr.loc[tr["class"] == "global_min", "risk_final"] <= tol).all()
    classed = tr["class"].isin(["local_min", "saddle"])
    # no class from an uphill refinement
    assert (tr.loc[classed & tr["refined"], "nearest_risk"] <= tr.loc[classed & tr["refined"], "risk_final"]
            + tol * np.maximum(1, tr.loc[classed & tr["refined"], "risk_final"])).all()
    # no class from a far one: the endpoint is critical itself, or inside the model's trust region
    far = tr["refine_model_error"] > TRUST_RTOL + 1e-10 / tr["grad_norm_final"]
    assert not (classed & far & (tr["grad_norm_final"] > 1e-10)).any()
    # the refinements that were refused are reported, with what they found
    assert (tr["class"] == "unconverged").sum() > 50
    assert set(tr.loc[tr["class"] == "unconverged", "nearest_class"]) >= {"global_min", "local_min"}
    # and the summary's fractions do not contradict each other
    s = summarize_cell(tr, eps_list=[1e-12, 1e-3], k_list=[1])
    assert s["frac_class_global_min"] <= s["p_best_of_1_eps_1e-12"]
    assert s["n_class_global_min"] == int((tr["risk_final"] <= tol).sum())


def test_final_states_are_the_endpoints(hat_run):
    tr, _, st = hat_run
    problem = reluflow.Problem.from_dict(HAT)
    final = np.stack(st["theta_final"].to_numpy())
    assert final.shape == (200, problem.n_params) and st["trajectory"].tolist() == tr["trajectory"].tolist()
    np.testing.assert_array_equal(problem.risk(final), tr["risk_final"].to_numpy())
    np.testing.assert_allclose(np.linalg.norm(final, axis=1), tr["param_norm_final"], rtol=1e-14)
    has = st["theta_refined"].map(lambda v: v is not None).to_numpy()
    assert (has == tr["refined"].to_numpy()).all()
    refined = np.stack(st["theta_refined"].to_numpy()[has])
    np.testing.assert_allclose(np.linalg.norm(refined - final[has], axis=1), tr.loc[has, "refine_moved"],
                               rtol=1e-12)
    conv = tr["refine_converged"].to_numpy()
    np.testing.assert_array_equal(problem.risk(np.stack(st["theta_refined"].to_numpy()[conv])),
                                  tr.loc[conv, "nearest_risk"].to_numpy())


def test_stated_optimum_of_x_squared_with_one_unit():
    """f = x^2 on [0, 1] with one unit: critical risks 4/3645 (global), 1/180 (affine fit), 4/45 (dead)."""
    problem = {"network": {"input_dim": 1, "widths": [1]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
               "target": {"kind": "polynomial", "coefficients": [0, 0, 1]}}
    method = {"kind": "gd", "step_size": 0.1, "n_steps": 20000}
    unknown = reluflow.simulate(problem, method=method, n_trajectories=48, seed=1).trajectories
    known = reluflow.simulate({**problem, "optimal_risk": 4 / 3645}, method=method, n_trajectories=48,
                              seed=1).trajectories
    at_best = np.isclose(known["risk_final"], 4 / 3645, rtol=1e-9, atol=0)
    assert at_best.sum() >= 1
    assert (known.loc[at_best, "class"] == "global_min").all()
    assert (unknown.loc[at_best, "class"] == "local_min").all()
    assert (known.loc[~at_best, "class"] != "global_min").all()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "0", True])
def test_optimal_risk_is_validated(bad):
    with pytest.raises(ValueError, match=r"problem.optimal_risk = .* expected a finite number >= 0"):
        reluflow.Problem.from_dict({**HAT, "optimal_risk": bad})


def test_aggregate_judges_successes_against_the_stated_optimum(tmp_path):
    """summary.parquet and best_of_k.parquet count a success as L - L* <= eps when the cell states L*, like the
    classes; here L* = 4/3645 (f = x^2, one unit), so eps = 1e-6 separates the global minimum from the rest."""
    import json

    import pandas as pd

    from reluflow.config import find_schema, load_config_files, plan_config
    from reluflow.pipeline import write_aggregate

    opt = 4 / 3645
    problem = {"network": {"input_dim": 1, "widths": [1]}, "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
               "target": {"kind": "polynomial", "coefficients": [0, 0, 1]}, "optimal_risk": opt}
    method = {"kind": "gd", "step_size": 0.1, "n_steps": 20000}
    config = {"studies": {"sq": {"problem": problem, "grid": {"method": [method]}, "n_trajectories": 48, "seed": 1,
                                 "analysis": {"eps": [1e-6], "k": [1, 2]}}}}
    (tmp_path / "c.yaml").write_text(json.dumps(config))
    study = plan_config(load_config_files([tmp_path / "c.yaml"]), find_schema()).study("sq")
    (cell,) = study.cells.values()
    tr = reluflow.simulate(cell.problem, method=cell.method, n_trajectories=48, seed=cell.seed).trajectories
    path = tmp_path / "t.parquet"
    tr.to_parquet(path)
    write_aggregate(study, {cell.id: path}, tmp_path / "summary.parquet", tmp_path / "bok.parquet")
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    at_best = int((tr["risk_final"] - opt <= 1e-6).sum())
    assert 0 < at_best < 48 and at_best == int((tr["class"] == "global_min").sum())
    assert summary["p_best_of_1_eps_1e-06"].iloc[0] == pytest.approx(at_best / 48, rel=1e-12)
    bok = pd.read_parquet(tmp_path / "bok.parquet")
    assert bok.loc[bok["k"] == 1, "successes"].tolist() == [at_best]
