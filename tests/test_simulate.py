"""``reluflow.simulate``: tables, keys, shards, bitwise reproducibility and the claims the loop measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reluflow import Problem, simulate
from reluflow._simulate import ANALYSIS_COLUMNS, CURVE_COLUMNS, STATE_COLUMNS, TRAJECTORY_COLUMNS
from reluflow.dynamics import initialize

PROBLEM = {
    "network": {"widths": [3]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0.0, 1.0, 0.5]},
    "risk": {"backend": "quadrature", "n_points": 32},
}
GD = {"kind": "gd", "step_size": 0.1, "n_steps": 20, "n_checkpoints": 6}
# max_steps caps the rare trajectory whose kink sticks to a quadrature point (a sliding mode of the
# discontinuous G on a point set, docs/methods.md): such a row stops on its budget, as reproducibly as any other
DOPRI5 = {"kind": "gf", "solver": "dopri5", "t_end": 1.0, "n_checkpoints": 6, "max_steps": 200}

INT_COLUMNS = {"trajectory", "steps", "n_rejected", "n_dead_final"}
BOOL_COLUMNS = {"refined", "refine_converged", "refine_local"}
COUNT_COLUMNS = {"n_negative", "n_zero", "hessian_rank"}  # nullable: <NA> where not measured


def _categories() -> dict[str, list[str]]:
    from reluflow.analysis import CLASSES, CRITICAL_CLASSES, HESSIAN_AT, RATE_MODELS

    return {"status": ["zero_risk", "critical", "budget", "diverged", "nonfinite", "certified"], "class": list(CLASSES),
            "nearest_class": list(CRITICAL_CLASSES), "hessian_at": list(HESSIAN_AT),
            "rate_best": [*RATE_MODELS, "none"]}


CATEGORIES = _categories()


def test_public_signature():
    import inspect

    from reluflow._simulate import simulate as public

    params = inspect.signature(public).parameters
    assert list(params) == ["problem", "method", "init", "n_trajectories", "seed", "trajectory_ids", "theta0",
                            "progress"]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for name, p in params.items() if name != "problem")


def test_tables_columns_dtypes_and_order():
    ids = [5, 0, 3]
    tr, cu, st = simulate(PROBLEM, method=GD, n_trajectories=6, seed=1, trajectory_ids=ids)
    assert list(st.columns) == list(STATE_COLUMNS) and st["trajectory"].tolist() == [0, 3, 5]
    expected = list(TRAJECTORY_COLUMNS)
    assert list(tr.columns) == expected
    assert list(cu.columns) == list(CURVE_COLUMNS)
    assert tr["trajectory"].tolist() == [0, 3, 5]
    for col in tr.columns:
        if col in INT_COLUMNS:
            assert tr[col].dtype == np.int64, col
        elif col in CATEGORIES:
            assert isinstance(tr[col].dtype, pd.CategoricalDtype), col
            assert list(tr[col].cat.categories) == CATEGORIES[col] and not tr[col].cat.ordered, col
        elif col in COUNT_COLUMNS:
            assert tr[col].dtype == "Int64", col
        elif col in BOOL_COLUMNS:
            assert tr[col].dtype == bool
        else:
            assert tr[col].dtype == np.float64, col
    for col in ("trajectory", "checkpoint", "step"):
        assert cu[col].dtype == np.int64
    for col in ("t", "risk", "grad_norm", "param_norm"):
        assert cu[col].dtype == np.float64
    assert cu.equals(cu.sort_values(["trajectory", "checkpoint"]).reset_index(drop=True))
    for traj, grp in cu.groupby("trajectory"):
        row = tr.set_index("trajectory").loc[traj]
        assert grp["checkpoint"].tolist() == list(range(len(grp)))
        assert len(grp) <= GD["n_checkpoints"]
        first, last = grp.iloc[0], grp.iloc[-1]
        assert first["step"] == 0 and first["t"] == 0.0 and first["risk"] == row["risk_init"]
        assert first["param_norm"] == row["param_norm_init"]
        assert last["step"] == row["steps"] and last["t"] == row["t_final"] and last["risk"] == row["risk_final"]
        assert last["grad_norm"] == row["grad_norm_final"] and last["param_norm"] == row["param_norm_final"]
        assert grp["param_norm"].max() <= row["param_norm_max"]
        assert grp["risk"].min() >= row["risk_min"]
    # GD checkpoints are log-spaced step indices
    assert cu[cu.trajectory == 0]["step"].tolist() == [0, 1, 2, 4, 9, 20]
    assert (tr["status"] == "budget").all() and (tr["steps"] == 20).all()
    assert tr["t_final"].tolist() == pytest.approx([2.0] * 3, rel=1e-14)
    assert (tr["n_rejected"] == 0).all()


def test_problem_object_and_paired_initializations():
    tr_a, cu_a, st_a, *_ = simulate(PROBLEM, method=GD, n_trajectories=3, seed=4)
    tr_b, cu_b, st_b, *_ = simulate(Problem.from_dict(PROBLEM), method=GD, n_trajectories=3, seed=4)
    pd.testing.assert_frame_equal(tr_a, tr_b, check_exact=True)
    pd.testing.assert_frame_equal(cu_a, cu_b, check_exact=True)
    tr_c, *_ = simulate(PROBLEM, method=GD, n_trajectories=3, seed=5)
    assert not np.array_equal(tr_a["risk_init"], tr_c["risk_init"])
    # common random numbers: another method (GF), other stopping rules, monitors or analysis settings start
    # from the same points
    theta0 = initialize(Problem.from_dict(PROBLEM), None, np.arange(3), 4)
    for method in (DOPRI5, {**GD, "step_size": 0.05, "norm_bound": 1e3, "n_checkpoints": 3, "refine": False},
                   {**GD, "risk_tol": 1e-3, "grad_tol": 1e-4}):
        tr, cu, _, *_ = simulate(PROBLEM, method=method, n_trajectories=3, seed=4)
        assert tr["risk_init"].tolist() == tr_a["risk_init"].tolist()
        first = cu[cu["checkpoint"] == 0]
        assert first["risk"].tolist() == tr_a["risk_init"].tolist()
    assert tr_a["risk_init"].tolist() == Problem.from_dict(PROBLEM).risk(theta0).tolist()


def test_theta0_and_errors():
    problem = Problem.from_dict(PROBLEM)
    theta0 = np.random.default_rng(0).standard_normal((2, problem.n_params))
    tr, _, *_ = simulate(PROBLEM, method=GD, n_trajectories=10, seed=0, trajectory_ids=[7, 2], theta0=theta0)
    assert tr["trajectory"].tolist() == [2, 7]
    risk0 = problem.risk(theta0)
    assert tr["risk_init"].tolist() == [risk0[1], risk0[0]]
    with pytest.raises(ValueError, match="theta0 has shape"):
        simulate(PROBLEM, method=GD, n_trajectories=10, seed=0, trajectory_ids=[7, 2], theta0=theta0[:1])
    with pytest.raises(ValueError, match="trajectory_ids"):
        simulate(PROBLEM, method=GD, n_trajectories=3, seed=0, trajectory_ids=[1, 3])
    with pytest.raises(ValueError, match="trajectory_ids"):
        simulate(PROBLEM, method=GD, n_trajectories=3, seed=0, trajectory_ids=[1, 1])
    with pytest.raises(ValueError, match="method.kind"):
        simulate(PROBLEM, method={"kind": "sgd"}, n_trajectories=3, seed=0)
    with pytest.raises(ValueError, match="init.kind"):
        simulate(PROBLEM, method=GD, init={"kind": "xavier"}, n_trajectories=3, seed=0)


def test_progress_is_reported():
    calls = []
    simulate(PROBLEM, method=GD, n_trajectories=4, seed=0, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4, 4) and all(t == 4 for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("method", [GD, DOPRI5], ids=["gd", "dopri5"])
def test_row_is_bitwise_the_same_alone_in_7_and_in_1000(method):
    kw = dict(method=method, n_trajectories=1000, seed=11)
    tr_all, cu_all, *_ = simulate(PROBLEM, **kw)
    for i in (0, 3, 500, 999):
        tr_one, cu_one, *_ = simulate(PROBLEM, **kw, trajectory_ids=[i])
        lo = min(max(i - 3, 0), 993)
        tr_seven, cu_seven, *_ = simulate(PROBLEM, **kw, trajectory_ids=list(range(lo, lo + 7)))
        ref_tr = tr_all[tr_all.trajectory == i].reset_index(drop=True)
        ref_cu = cu_all[cu_all.trajectory == i].reset_index(drop=True)
        for tr, cu in ((tr_one, cu_one), (tr_seven, cu_seven)):
            row = tr[tr.trajectory == i].reset_index(drop=True)
            pd.testing.assert_frame_equal(row, ref_tr, check_exact=True)
            pd.testing.assert_frame_equal(cu[cu.trajectory == i].reset_index(drop=True), ref_cu, check_exact=True)
    if method is DOPRI5:
        assert tr_all["n_rejected"].sum() > 0 and tr_all["steps"].nunique() > 5  # rows really stepped apart


def test_rate_fits_of_a_row_do_not_depend_on_how_many_states_its_batch_mates_recorded():
    """Runs that stop at different steps record different numbers of states. The rate fits (``rate_*``,
    ``r2_*``) once padded the curves to the most states in the batch, and a row sum's rounding depends on the
    padded length: the same trajectory got other last bits alone than in its shard (25 of 300 SS2018 k6_n6
    trajectories between shards of 125 and one batch)."""
    problem = {"network": {"input_dim": 6, "widths": [6], "bias": False, "fixed_output": 1.0},
               "measure": {"kind": "gaussian", "dim": 6, "sigma": 1.0},
               "target": {"kind": "teacher", "widths": [6], "bias": False, "fixed_output": 1.0, "seed": 0,
                          "first_layer": "unit_vectors"},
               "risk": {"backend": "gaussian"}, "optimal_risk": 0.0}
    method = {"kind": "gd", "step_size": 0.05, "n_steps": 100000, "grad_tol": 3.1831e-10, "risk_tol": 2.0e-3,
              "n_checkpoints": 40, "refine": False}
    kw = dict(method=method, init={"kind": "scaled_normal", "sigma": "fan_in"}, n_trajectories=40, seed=2018)
    tr_all, cu_all, *_ = simulate(problem, **kw)
    counts = cu_all.groupby("trajectory").size()
    assert counts.nunique() > 3  # the batch mates recorded different numbers of states
    columns = [c for c in tr_all.columns if c.startswith(("rate_", "r2_"))]
    for i in counts.sort_values().index[:6]:  # the rows padded most in the batch
        tr_one, *_ = simulate(problem, **kw, trajectory_ids=[i])
        pd.testing.assert_frame_equal(tr_one[columns].reset_index(drop=True),
                                      tr_all.loc[tr_all.trajectory == i, columns].reset_index(drop=True),
                                      check_exact=True)


def test_gf_risk_never_increases_on_200_trajectories():
    """C1 on 200 random 1D GF trajectories: the largest relative risk increase between consecutive accepted
    steps is at round-off level (here: none at all)."""
    problem = {**PROBLEM, "network": {"widths": [4]}, "risk": {"backend": "quadrature", "n_points": 64}}
    method = {"kind": "gf", "solver": "rk4", "t_end": 2.0, "dt": 0.01, "refine": False, "n_checkpoints": 10}
    tr, cu, *_ = simulate(problem, method=method, n_trajectories=200, seed=5)
    assert len(tr) == 200 and (tr["status"] != "nonfinite").all()
    assert (tr["max_risk_increase"] <= 1e-12).all()
    assert (cu.groupby("trajectory")["risk"].diff().dropna() <= 1e-12 * cu["risk"].max()).all()
    assert (tr["risk_final"] <= tr["risk_init"]).all()


def test_gf_risk_never_increases_with_an_exact_backend():
    """C1 with the adaptive solver on a continuous G (exact1d, when it applies)."""
    problem = {**PROBLEM, "network": {"widths": [4]}, "risk": {"backend": "auto"}}
    if Problem.from_dict(problem).backend_name == "quadrature":
        pytest.skip("no exact backend for this problem yet")
    method = {"kind": "gf", "solver": "dopri5", "t_end": 5.0, "refine": False, "n_checkpoints": 10}
    tr, _, *_ = simulate(problem, method=method, n_trajectories=200, seed=6)
    assert (tr["max_risk_increase"] <= 1e-12).all()


def test_events_through_simulate():
    problem = Problem.from_dict(PROBLEM)
    h = 3
    be = problem.backend
    dead = np.zeros(problem.n_params)
    dead[:h], dead[h:2 * h] = -1.0, -0.5  # every unit dead on [0, 1]
    dead[2 * h:3 * h] = [0.3, -0.2, 1.0]
    dead[-1] = float(np.sum(be.weights * be.target_values[:, 0]))  # the best constant: a critical point
    runaway = np.full(problem.n_params, 10.0)
    theta0 = np.stack([dead, runaway, np.full(problem.n_params, np.nan)])
    method = {"kind": "gd", "step_size": 0.5, "n_steps": 50, "norm_bound": 50.0}
    tr, cu, *_ = simulate(PROBLEM, method=method, n_trajectories=3, seed=0, theta0=theta0)
    assert tr["status"].tolist() == ["critical", "diverged", "nonfinite"]
    assert tr["steps"].tolist()[0] == 0 and tr["n_dead_final"].tolist() == [3, tr["n_dead_final"][1], -1]
    assert cu.groupby("trajectory").size().tolist()[0] == 1
    assert tr["class"].tolist()[1:] == ["diverged", "diverged"]
    assert bool(tr["refined"][0]) and not tr["refined"][1:].any()


def test_analysis_columns():
    problem = {**PROBLEM, "network": {"widths": [2]}}
    tr, _, *_ = simulate(problem, method={**GD, "n_steps": 200, "step_size": 0.2}, n_trajectories=12, seed=2)
    refined = tr["status"].isin(["critical", "budget"])
    assert (tr["refined"] == refined).all()
    for col in ("refine_moved", "refine_grad_norm"):
        assert tr.loc[refined, col].notna().all(), col
        assert tr.loc[~refined, col].isna().all(), col
    described = tr["refine_converged"] | (tr["status"] == "zero_risk")
    assert described.sum() >= 6
    for col in ("n_negative", "n_zero", "lambda_min", "hessian_rank"):
        assert tr.loc[described, col].notna().all(), col
        assert tr.loc[~described & (tr["hessian_at"] == "none"), col].isna().all(), col
    assert set(tr["class"]) <= {"global_min", "local_min", "saddle", "unconverged", "diverged"}
    assert set(tr["rate_best"]) <= {"exponential", "polynomial", "none"}
    assert set(ANALYSIS_COLUMNS) <= set(tr.columns)
    off, _, *_ = simulate(problem, method={**GD, "refine": False}, n_trajectories=3, seed=2)
    assert not off["refined"].any() and off["n_negative"].isna().all()


def test_zero_risk_endpoints_get_their_spectrum():
    """A start at a global minimum stops at once as zero_risk; it is not refined, but its Hessian spectrum is
    measured (C9: the rank of the Hessian at global minima)."""
    tr, _, *_ = simulate(PROBLEM, method=GD, init={"kind": "perturbed", "epsilon": 0.0}, n_trajectories=2, seed=0)
    assert (tr["status"] == "zero_risk").all() and not tr["refined"].any()
    assert tr["hessian_rank"].notna().all() and (tr["n_negative"] == 0).all()
    assert (tr["class"] == "global_min").all()


def test_empty_shard_keeps_the_schema():
    tr, cu, *_ = simulate(PROBLEM, method=GD, n_trajectories=5, seed=0, trajectory_ids=[])
    full, _, *_ = simulate(PROBLEM, method=GD, n_trajectories=1, seed=0)
    assert len(tr) == 0 and len(cu) == 0
    assert list(tr.columns) == list(full.columns) and (tr.dtypes == full.dtypes).all()
    assert list(cu.columns) == list(CURVE_COLUMNS)


def test_categoricals_keep_every_category_and_counts_are_nullable_integers():
    """Absent statuses and classes are still categories (cells concatenate as categoricals, value_counts shows
    the zeros); counts are Int64 with <NA> where the Hessian was not measured, not float NaN."""
    tr, *_ = simulate(PROBLEM, method=GD, n_trajectories=4, seed=1)
    assert (tr["status"] == "budget").all()
    counts = tr["status"].value_counts()
    assert counts["budget"] == 4 and counts["diverged"] == 0 and len(counts) == len(CATEGORIES["status"])
    empty, *_ = simulate(PROBLEM, method=GD, n_trajectories=0, seed=1)
    both = pd.concat([tr, empty], ignore_index=True)
    for col, cats in CATEGORIES.items():
        assert list(both[col].cat.categories) == cats, col
    off, *_ = simulate(PROBLEM, method={**GD, "refine": False}, n_trajectories=2, seed=1)
    assert off["n_negative"].dtype == "Int64" and off["n_negative"].isna().all()
    assert tr["hessian_rank"].dtype == "Int64" and tr["hessian_rank"].notna().any()


def test_an_unknown_category_value_raises_rather_than_becoming_nan():
    from reluflow._simulate import _table_dtypes

    with pytest.raises(ValueError, match="not among"):
        _table_dtypes(pd.DataFrame({"status": ["budget", "lost"]}))
