"""Config validation, grid expansion, cell ids and keys (reluflow.config._study), and bad configs failing
before any job, with Snakemake and with `reluflow check`."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reluflow._keys import cell_key
from reluflow.config import ConfigError, expand_study, load_config_files, load_yaml, plan_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package
SNAKEFILE = ROOT / "Snakefile"

PROBLEM = {
    "network": {"input_dim": 1, "widths": [3]},
    "measure": {"kind": "uniform", "low": 0.0, "high": 1.0},
    "target": {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [0.0, 1.0, 0.0]},
}
GD = {"kind": "gd", "step_size": 0.05, "n_steps": 20, "n_checkpoints": 3, "refine": False}
GF = {"kind": "gf", "solver": "rk4", "dt": 0.1, "t_end": 1.0, "n_checkpoints": 3, "refine": False}


def study(**changes) -> dict:
    s = {
        "problem": copy.deepcopy(PROBLEM),
        "grid": {"problem.network.widths": [[2], [4]], "method": [GD, GF]},
        "n_trajectories": 4,
        "seed": 3,
    }
    s.update(changes)
    return s


def config(**studies) -> dict:
    return {"studies": studies or {"s": study()}}


# ------------------------------------------------------------------------------------------ good configs
def test_repo_config_is_valid_and_runs_quickstart():
    plan = plan_config(load_config_files([ROOT / "config.yaml"]), SCHEMA)
    assert "quickstart" in plan.run
    q = plan.study("quickstart")
    assert q.cell_ids == ["w4-gd", "w4-gf", "w16-gd", "w16-gf", "w64-gd", "w64-gf"]
    assert {c.method["kind"] for c in q.cells.values()} == {"gd", "gf"}
    assert plan.execution.scheduler == "local"


def test_grid_is_cartesian_and_dict_values_replace_subtrees():
    plan = plan_config(config(), SCHEMA)
    s = plan.study("s")
    assert s.cell_ids == ["w2-gd", "w2-gf", "w4-gd", "w4-gf"]  # grid key order, then value order
    gf = s.cells["w4-gf"]
    assert gf.method == GF  # the whole method dict replaced the (absent) fixed one
    assert gf.problem["network"]["widths"] == [4]
    assert gf.problem["measure"] == PROBLEM["measure"]
    assert gf.init == {"kind": "normal"}  # the default init, as in simulate


def test_cell_key_and_simulate_defaults():
    from reluflow._simulate import simulate

    cell = plan_config(config(), SCHEMA).cell("s", "w2-gd")
    assert cell.key == cell_key({"problem": cell.problem, "init": {"kind": "normal"}, "method": cell.method})
    # simulate with the default init (omitted) gives exactly what the pipeline's cell gives
    a, ca, _ = simulate(cell.problem, method=cell.method, n_trajectories=3, seed=cell.seed)
    b, cb, _ = simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=3, seed=cell.seed)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    pd.testing.assert_frame_equal(ca, cb, check_exact=True)


def test_cells_with_one_layout_share_their_initializations(tmp_path):
    """Common random numbers: the GD and GF cells of a width start from the same points, whatever the method's
    stopping rules and monitors; another width does not."""
    from reluflow.pipeline import read_init, write_init

    grid = {"problem.network.widths": [[2], [4]],
            "method": [GD, GF, {**GD, "norm_bound": 10.0, "refine": True, "n_checkpoints": 7, "step_size": 0.01}]}
    plan = plan_config(config(s=study(grid=grid)), SCHEMA)
    cells = plan.study("s").cells
    inits = {}
    for cid, cell in cells.items():
        write_init(cell, tmp_path / f"{cid}.parquet")
        inits[cid] = read_init(tmp_path / f"{cid}.parquet")[1]
        assert pd.read_parquet(tmp_path / f"{cid}.parquet")["cell"].astype(str).eq(cid).all()
    w2 = [cid for cid, c in cells.items() if c.problem["network"]["widths"] == [2]]
    assert len(w2) == 3 and len({cells[c].key for c in w2}) == 3  # three different cells ...
    for cid in w2[1:]:
        np.testing.assert_array_equal(inits[cid], inits[w2[0]])  # ... one set of initial points
    w4 = [cid for cid in cells if cid not in w2]
    assert inits[w4[0]].shape[1] != inits[w2[0]].shape[1]


def test_cell_ids_are_readable_unique_and_filesystem_safe():
    grid = {
        "method": [GD, {**GD, "step_size": 0.01}, GF],
        "problem.network.widths": [[2], [2, 2]],
        "init": [{"kind": "normal"}, {"kind": "uniform", "low": -1.0, "high": 1.0}],
    }
    s = expand_study("s", study(grid=grid), check=False)
    assert len(s.cells) == 12 and len(set(s.cell_ids)) == 12
    assert "gd_lr0.05-w2-normal" in s.cell_ids and "gd_lr0.01-w2x2-uniform" in s.cell_ids
    assert "gf-w2-normal" in s.cell_ids
    for cid in s.cell_ids:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cid), cid
    neg = expand_study("s", study(grid={"problem.target.values": [[0, -1.5, 0], [0, 1, 0]], "method": [GD]}),
                       check=False)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", c) for c in neg.cell_ids), neg.cell_ids


def test_study_json_roundtrip_keeps_grid_order_and_types():
    from reluflow.config import Cell, Study

    s = plan_config(config(), SCHEMA).study("s")
    back = Study.from_json(s.to_json())
    assert back.cell_ids == s.cell_ids
    cell = s.cells["w2-gd"]
    again = Cell.from_json(cell.to_json())
    assert again == cell
    assert isinstance(again.problem["measure"]["high"], float)  # 1.0 stays a float for simulate


def test_yaml_floats_and_duplicate_keys(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a: 1e-3\nb: 1\nc: '1e-3'\n")
    assert load_yaml(p) == {"a": 0.001, "b": 1, "c": "1e-3"}
    p.write_text("studies:\n  x: {seed: 1}\n  x: {seed: 2}\n")
    with pytest.raises(ConfigError, match=r"'x' appears twice.*lines 2 and 3"):
        load_config_files([p])


def test_snakemake_style_string_floats_are_coerced():
    # Snakemake's YAML 1.1 loader hands `1e-3` over as a string; the plan reads it as the number it is.
    s = study(grid={"method": [{**GD, "step_size": "1e-3"}]})
    cell = plan_config(config(s=s), SCHEMA).cell("s", "gd")
    assert cell.method["step_size"] == 0.001


def test_nested_command_line_values_get_their_types_back():
    from reluflow.config import plan_from_snakemake
    from reluflow.config._yaml import retype_scalars

    assert retype_scalars({"a": ["1", "2.5", "1e-3", "true", "null", "04:00:00", "tcp://h:1", "32GB"]}) == {
        "a": [1, 2.5, 0.001, True, None, "04:00:00", "tcp://h:1", "32GB"]}
    # what Snakemake hands over for --config 'execution={shard_size: 16, keep_shards: true}'
    cfg = {**config(), "execution": {"shard_size": "16", "keep_shards": "true"}}
    command_line = {"execution": {"shard_size": "16", "keep_shards": "true"}}
    plan = plan_from_snakemake(cfg, [], SCHEMA, command_line=command_line)
    assert plan.execution.shard_size == 16 and plan.execution.keep_shards is True
    with pytest.raises(ConfigError, match="shard_size"):  # without the retyping: a clear error, not a crash
        plan_from_snakemake(cfg, [], SCHEMA)


# ------------------------------------------------------------------------------------------ bad configs
BAD = {
    "unknown study key": (config(s=study(n_trajectory=3)), [r"study 's'", "n_trajectory", "allowed keys"]),
    "unknown top-level key": ({**config(), "studys": {}}, ["studys", "allowed keys"]),
    "wrong type": (config(s=study(n_trajectories="many")), [r"study 's': n_trajectories", "'many'", "integer"]),
    "impossible value": (config(s=study(n_trajectories=0)), [r"study 's': n_trajectories", "0", "minimum"]),
    "negative seed": (config(s=study(seed=-1)), ["seed", "-1"]),
    "empty grid": (config(s=study(grid={})), [r"study 's': grid", "empty"]),
    "empty grid values": (config(s=study(grid={"method": []})), [r"study 's': grid.method", "empty"]),
    "grid values not a list": (config(s=study(grid={"method": GD})), ["grid.method", "array"]),
    "bad grid key": (config(s=study(grid={"methd.step_size": [0.1]})), ["methd.step_size", "problem, init or method"]),
    "bad study name": (config(**{"my study": study()}), ["my study", "study name"]),
    "bad scheduler": ({**config(), "execution": {"scheduler": "slurm"}}, ["execution.scheduler", "'slurm'", "local"]),
    "unknown run study": ({**config(), "run": ["nope"]}, ["run", "nope"]),
    # the package's own checks, per cell
    "bad step size": (config(s=study(grid={"method": [{**GD, "step_size": -1.0}]})),
                      [r"study 's', cell 'gd'", "step_size", "-1.0", "> 0"]),
    "method key of the other kind": (config(s=study(grid={"method": [{**GF, "step_size": 0.1}]})),
                                     ["cell 'gf'", "step_size"]),
    "bad width": (config(s=study(grid={"problem.network.widths": [[0]], "method": [GD]})),
                  ["cell 'w0-gd'", "widths", "integers >= 1"]),
    "unknown problem key": (config(s=study(problem={**PROBLEM, "loss": "l1"}, grid={"method": [GD]})),
                            ["problem", "loss", "allowed keys"]),
    "bad init": (config(s=study(init={"kind": "gaussian"}, grid={"method": [GD]})), ["init.kind", "gaussian"]),
    "no method": (config(s=study(grid={"problem.network.widths": [[2]]})), ["no method"]),
    "duplicate grid value": (config(s=study(grid={"method": [GD, dict(GD)]})), ["grid.method", "twice"]),
    "grid into a scalar": (config(s=study(grid={"method": [GD], "method.kind.x": [1]})), ["method.kind.x",
                                                                                        "not a mapping"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_is_rejected_with_a_message_naming_it(name):
    cfg, fragments = BAD[name]
    with pytest.raises(ConfigError) as info:
        plan_config(cfg, SCHEMA)
    msg = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, msg), f"{fragment!r} not in {msg!r}"


def test_identical_cells_are_rejected():
    # the same value twice (20.0 and 20 are one parameter value) ...
    s = study(grid={"method": [GD, {**GD, "n_steps": 20.0}]})
    with pytest.raises(ConfigError, match="grid.method lists the value .* twice"):
        plan_config(config(s=s), SCHEMA)
    # ... or two grid routes to the same parameters (a later key overrides an earlier one)
    s = study(grid={"problem.network.widths": [[2], [3]], "problem.network": [{"input_dim": 1, "widths": [3]}],
                    "method": [GD]})
    with pytest.raises(ConfigError, match="identical parameters"):
        plan_config(config(s=s), SCHEMA)


# ------------------------------------------------------------------------------------------ with Snakemake
def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args],
        cwd=workdir, capture_output=True, text=True, check=False,
    )


TINY_YAML = """\
studies:
  tiny:
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    grid:
      method:
        - {kind: gd, step_size: 0.05, n_steps: 10, n_checkpoints: 3, refine: false}
    n_trajectories: 3
    seed: 1
"""

SNAKEMAKE_BAD = {
    "duplicate study": (TINY_YAML + "  tiny:\n    seed: 2\n", ["'tiny' appears twice"]),
    "unknown key": (TINY_YAML.replace("    seed: 1", "    seed: 1\n    trajectories: 5"),
                    ["study 'tiny'", "trajectories", "allowed keys"]),
    "impossible value": (TINY_YAML.replace("step_size: 0.05", "step_size: -2"),
                         ["study 'tiny', cell 'gd'", "step_size", "-2"]),
}


@pytest.mark.parametrize("name", list(SNAKEMAKE_BAD))
def test_snakemake_stops_before_any_job(tmp_path, name):
    text, fragments = SNAKEMAKE_BAD[name]
    (tmp_path / "config.yaml").write_text(text)
    run = _snakemake(tmp_path, "--cores", "1")
    assert run.returncode != 0
    for fragment in fragments:
        assert fragment in run.stderr + run.stdout, run.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()


def test_reluflow_check_cli(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(TINY_YAML)
    out = subprocess.run([sys.executable, "-m", "reluflow", "check", "-c", str(good), "--schema", str(SCHEMA)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "tiny: 1 cells x 3 trajectories" in out.stdout and "config OK" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(SNAKEMAKE_BAD["duplicate study"][0])
    out = subprocess.run([sys.executable, "-m", "reluflow", "check", "-c", str(bad), "--schema", str(SCHEMA)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "'tiny' appears twice" in out.stderr


def test_default_k_list():
    from reluflow.config import default_k_list

    assert default_k_list(1) == [1]
    assert default_k_list(256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert default_k_list(20) == [1, 2, 4, 8, 16]
    assert np.all(np.diff(default_k_list(1000)) > 0)


def test_execution_defaults_come_from_the_schema_alone():
    """Execution settings have one home for their defaults, the schema: an empty mapping, the JSON the Snakefile
    passes, and the CLI's flags all give settings validated and filled from it."""
    from reluflow.config import ConfigError, Execution, load_yaml

    props = load_yaml(SCHEMA)["$defs"]["execution"]["properties"]
    ex = Execution.from_mapping()
    assert {name: getattr(ex, name) for name in props} == {
        name: spec["default"] if name != "jobqueue" else {k: v["default"] for k, v in spec["properties"].items()}
        for name, spec in props.items()}  # jobqueue: its documented keys' own defaults, nested
    assert all("default" in spec and spec.get("description") for spec in props["jobqueue"]["properties"].values())
    assert Execution.from_json(ex.to_json()) == ex
    assert Execution.from_mapping({"shard_size": 16}, retries=5, address=None).shard_size == 16
    with pytest.raises(ConfigError, match=r"execution\.shard_size = 0 is not allowed"):
        Execution.from_mapping({"shard_size": 16}, shard_size=0)
    with pytest.raises(ConfigError, match=r"execution: unknown key\(s\) \['shards'\]"):
        Execution.from_mapping({"shards": 3})
    assert (Execution.from_mapping().n_workers(4), Execution.from_mapping(workers=2).n_workers(4)) == (4, 2)
    assert Execution.from_mapping(scheduler="address", address="tcp://h:1").n_workers(4) == 1
    # a jobqueue pool counts its worker processes at its largest: jobs x processes (default: one per core)
    jq = Execution.from_mapping(scheduler="jobqueue", workers=3, jobqueue={"cores": 4})
    assert (jq.n_workers(8), jq.worker_processes(8), jq.minimum_jobs, jq.jobqueue["memory"]) == (3, 12, 1, "8.9GB")
    assert Execution.from_mapping(scheduler="jobqueue", jobqueue={"cores": 4, "processes": 2}).worker_processes(8) == 2
    with pytest.raises(ConfigError, match=r"execution\.worker_wait = 0 is not allowed"):
        Execution.from_mapping(worker_wait=0)
    with pytest.raises(ConfigError, match=r"execution\.jobqueue\.cores"):
        Execution.from_mapping(jobqueue={"cores": "4"})


def test_integrate_flags_are_validated_like_the_config(tmp_path):
    run = subprocess.run([sys.executable, "-m", "reluflow", "integrate", "--study-json", "{}", "--study-dir",
                          str(tmp_path), "--retries", "-1"], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "execution.retries = -1 is not allowed" in run.stderr
    run = subprocess.run([sys.executable, "-m", "reluflow", "integrate", "--study-json", "{}", "--study-dir",
                          str(tmp_path)], capture_output=True, text=True, check=False)
    assert run.returncode == 2 and run.stderr.startswith("error: not the JSON of a study as Study.to_json writes")
