"""Bad input refused up front (issue #17, item 5): each reported case, and the limits of docs/running.md.

Every refusal is a ConfigError (pipeline) or ValueError (package) naming the key, the value and what is allowed;
`reluflow check` and Snakemake print it as one `error:` message without a traceback.
"""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import reluflow
from reluflow._keys import canonical_json, cell_key
from reluflow.config import (
    LIMITS,
    Cell,
    ConfigError,
    Study,
    check_values,
    load_config_files,
    plan_config,
    plan_from_snakemake,
)
from reluflow.config._yaml import coerce_yaml11_floats, load_yaml_text, retype_scalars
from reluflow.dynamics import method_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package
SNAKEFILE = ROOT / "Snakefile"

TINY_YAML = """\
studies:
  tiny:
    description: <description>
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    method: {kind: gd, step_size: <step>, n_steps: <nsteps>, n_checkpoints: 3, refine: false, norm_bound: <bound>}
    grid:
      problem.network.widths: <widths>
    n_trajectories: <ntraj>
    seed: 1
"""
DEFAULTS = {"description": "a tiny study", "step": "0.05", "nsteps": "10", "bound": "1.0e+8", "widths": "[[2]]",
            "ntraj": "3"}


def tiny(**values: str) -> str:
    text = TINY_YAML
    for key, default in DEFAULTS.items():
        text = text.replace(f"<{key}>", values.get(key, default))
    return text


def plan_text(text: str):
    return plan_config(load_yaml_text(text), SCHEMA)


def refused(text_or_config, *fragments: str, seconds: float = 5.0) -> str:
    """Plan it; it must be refused with a ConfigError holding every fragment, within ``seconds``."""
    config = load_yaml_text(text_or_config) if isinstance(text_or_config, str) else text_or_config
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        plan_config(config, SCHEMA)
    assert time.perf_counter() - start < seconds
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


QUICKSTART_KEYS = {  # cell keys before infinities had a canonical form: finite configs keep theirs
    "w4-gd": 5660814458227680728, "w4-gf": 2357753532536245229, "w16-gd": 6717787842878493723,
    "w16-gf": 6950215535879017501, "w64-gd": 2569629667573190258, "w64-gf": 8417607771503926263,
}


# ------------------------------------------------------------------------------------- infinities and NaN
def test_infinite_norm_bound_works_end_to_end():
    plan = plan_text(tiny(bound=".inf"))
    cell = plan.cell("tiny", "w2")
    assert cell.method["norm_bound"] == float("inf")
    # the key's canonical form writes the infinity as "inf"; cells passed to jobs as JSON read it back
    assert '"norm_bound":"inf"' in canonical_json(cell.params)
    assert cell.key == cell_key(cell.params) and cell.key != plan_text(tiny()).cell("tiny", "w2").key
    assert "Infinity" in cell.to_json()
    back = Cell.from_json(cell.to_json())
    assert back == cell and back.method["norm_bound"] == float("inf")
    assert Study.from_json(plan.study("tiny").to_json()).cells["w2"] == cell
    # and it runs: a few steps of GD with no norm bound
    from reluflow._simulate import simulate

    traj, _, _ = simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=2, seed=cell.seed)
    assert list(traj["status"]) == ["budget", "budget"]


def test_infinity_in_grid_values_and_its_cell_id():
    text = tiny().replace("problem.network.widths: [[2]]", "method.norm_bound: [.inf, 10.0]")
    study = plan_text(text).study("tiny")
    assert len(study.cells) == 2 and all(len(c) <= LIMITS["name_length"] for c in study.cell_ids)


def test_finite_keys_are_unchanged():
    plan = plan_config(load_config_files([ROOT / "config.yaml"]), SCHEMA)
    assert {c.id: c.key for c in plan.study("quickstart").cells.values()} == QUICKSTART_KEYS
    assert canonical_json({"a": 1.0, "b": 0.5, "c": np.float64(np.inf), "d": float("-inf")}) == \
        '{"a":1,"b":0.5,"c":"inf","d":"-inf"}'
    with pytest.raises(ValueError):
        canonical_json(float("nan"))


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_step_size_is_refused_naming_the_key(value):
    refused(tiny(step=value), "study 'tiny': method.step_size", "is not allowed")


@pytest.mark.parametrize("where", [
    "    analysis: {eps: [.inf]}\n",  # passes the schema's exclusiveMinimum
    "    init: {kind: normal, sigma: .nan}\n",
])
def test_non_finite_numbers_are_refused_wherever_they_are(where):
    message = refused(tiny() + where, "study 'tiny'")
    assert "eps[0] = inf" in message or "init.sigma = nan" in message, message


def test_non_finite_execution_setting_is_refused():
    refused(tiny() + "execution: {progress_interval: .inf}\n", "execution.progress_interval = inf")


def test_text_that_overflows_to_infinity_is_refused():
    # a YAML 1.1 reader (Snakemake's) hands 1e999 over as text; read as a number it is inf
    config = load_yaml_text(tiny())
    config["studies"]["tiny"]["method"]["step_size"] = "1e999"
    refused(config, "method.step_size = inf")


def test_command_line_infinity_is_read_back():
    assert retype_scalars({"a": ".inf", "b": "-.inf", "c": ".nan"})["a"] == float("inf")
    config = load_yaml_text(tiny())
    config["studies"]["tiny"]["method"]["norm_bound"] = ".inf"  # as --config would pass it
    command_line = {"studies": {"tiny": {"method": {"norm_bound": ".inf"}}}}
    plan = plan_from_snakemake(config, [], SCHEMA, command_line=command_line)
    assert plan.cell("tiny", "w2").method["norm_bound"] == float("inf")


# ------------------------------------------------------------------------------------- text where numbers belong
def test_quoted_numbers_are_refused_alike_in_the_schema_and_the_package():
    refused(tiny(ntraj="'256'"), "n_trajectories = '256'", "integer")
    refused(tiny(step="'0.02'"), "method.step_size = '0.02'", "unquoted")
    refused(tiny().replace("low: 0.0", "low: '0.0'"), "measure.low = '0.0'", "number")
    refused(tiny().replace("values: [0.0, 1.0, 0.0]", "values: ['0', 1.0, 0.0]"), "target.values")
    refused(tiny().replace("widths: [2]}", "widths: [2], negative_slope: '0.1'}"), "network.negative_slope")


def test_booleans_are_not_numbers():
    refused(tiny().replace("high: 1.0", "high: true"), "measure.high = True")
    refused(tiny().replace("input_dim: 1", "input_dim: true"), "network.input_dim = True")
    refused(tiny(step="true"), "method.step_size = True")


def test_yaml11_text_floats_are_numbers_quoted_or_not():
    # Snakemake's loader reads an unquoted 1e-3 as the text "1e-3": the same number as reluflow's loader reads
    assert coerce_yaml11_floats({"a": ["1e-3", "1.0e5", "0.02", "1.0e+5", "256"], "description": "1e-3"}) == \
        {"a": [0.001, 100000.0, "0.02", "1.0e+5", "256"], "description": "1e-3"}
    assert plan_text(tiny(step="'5e-2'")).cell("tiny", "w2").method["step_size"] == 0.05
    assert plan_text(tiny(step="5e-2")).cell("tiny", "w2").method["step_size"] == 0.05


@pytest.mark.parametrize(("written", "kept"), [("'1.5'", "1.5"), ("1.5", "1.5"), ("'1e-3'", "1e-3"),
                                               ("yes", "true"), ("'256'", "256"), ("12", "12")])
def test_description_is_text_whatever_yaml_reads(written, kept):
    assert plan_text(tiny(description=written)).study("tiny").spec["description"] == kept


def test_description_must_be_a_scalar():
    refused(tiny(description="[a, b]"), "description")


# ------------------------------------------------------------------------------------- sizes
def test_huge_width_is_refused_before_numpy_allocates():
    refused(tiny(widths="[[1000000000]]"), "network.widths = [1000000000]", "P = 3000000001", "24 GB",
            str(LIMITS["n_params"]))


def test_huge_input_dimension_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"input_dim 1000000000 .* P = "):
        reluflow.Problem.from_dict({"network": {"input_dim": 10**9, "widths": [4]},
                                    "measure": {"kind": "gaussian"}, "target": {"kind": "constant", "value": 0.0}})


def test_trajectories_steps_and_checkpoints_beyond_the_limits():
    refused(tiny(ntraj="1e12"), "n_trajectories = 1000000000000.0", str(LIMITS["n_trajectories"]))
    refused(tiny(ntraj="1000000000000"), "n_trajectories = 1000000000000", str(LIMITS["n_trajectories"]))
    refused(tiny(nsteps="1e15"), "method.n_steps = 1000000000000000.0", str(LIMITS["n_steps"]))
    refused(tiny().replace("n_checkpoints: 3", "n_checkpoints: 1000000000"), "method.n_checkpoints")
    plan_text(tiny(ntraj=str(LIMITS["n_trajectories"]), nsteps=str(LIMITS["n_steps"])))  # the limits themselves


def test_gf_steps_beyond_the_limit():
    with pytest.raises(ValueError, match=r"method.dt = 1e-12 .* t_end / dt"):
        method_from_dict({"kind": "gf", "solver": "rk4", "t_end": 10.0, "dt": 1e-12})
    method_from_dict({"kind": "gf", "solver": "rk4", "t_end": 10.0, "dt": 1e-12, "max_steps": 1000})  # capped
    with pytest.raises(ValueError, match=r"method.max_steps"):
        method_from_dict({"kind": "gf", "solver": "dopri5", "max_steps": 10**10})


def test_a_million_cell_grid_is_refused_before_it_is_expanded():
    grid = "problem.network.widths: [" + ", ".join(f"[{w}]" for w in range(1, 1001)) + "]\n" + \
           "      method.step_size: [" + ", ".join(f"{0.001 * i:.3f}" for i in range(1, 1001)) + "]"
    text = tiny().replace("problem.network.widths: [[2]]", grid)
    refused(text, "1000 (problem.network.widths) x 1000 (method.step_size) = 1000000 cells",
            str(LIMITS["cells"]), seconds=1.0)


def test_huge_step_size_gets_a_short_id():
    cell_ids = plan_text(tiny().replace("problem.network.widths: [[2]]", "method.step_size: [1e308, 0.1]")
                         ).study("tiny").cell_ids
    assert cell_ids == ["lr1e308", "lr0.1"]


def test_cell_id_longer_than_the_limit_is_refused_naming_the_grid_key():
    deep = "[" + ", ".join(["2"] * 60) + "]"
    refused(tiny(widths=f"[[2], {deep}]"), "grid.problem.network.widths", "cell id", str(LIMITS["name_length"]))


def test_long_study_name_is_refused():
    name = "s" * (LIMITS["name_length"] + 1)
    refused(tiny().replace("  tiny:", f"  {name}:"), "the name is 101 characters long")


def test_quadrature_points_beyond_the_limit():
    spec = {"network": {"input_dim": 1, "widths": [2]}, "measure": {"kind": "uniform"},
            "target": {"kind": "function", "name": "sin"}}
    with pytest.raises(ValueError, match=r"risk.n_points = 100000000 "):
        reluflow.Problem.from_dict({**spec, "risk": {"n_points": 10**8}})
    with pytest.raises(ValueError, match=r"risk.n_points = 1024 .* dimension 20000"):
        reluflow.Problem.from_dict({**spec, "network": {"input_dim": 20_000, "widths": [2]}})
    sample = {"kind": "empirical", "sample": {"n_points": 10**6, "dim": 100, "seed": 0}}
    with pytest.raises(ValueError, match=r"measure.sample.n_points = 1000000 .* 1000000 x 100"):
        reluflow.Problem.from_dict({**spec, "network": {"input_dim": 100, "widths": [2]}, "measure": sample})


def test_polynomial_degree_and_1d_teacher_width_beyond_the_limits():
    spec = {"network": {"input_dim": 1, "widths": [2]}, "measure": {"kind": "uniform"}}
    with pytest.raises(ValueError, match=r"target.coefficients .*degree <= 64"):
        reluflow.Problem.from_dict({**spec, "target": {"kind": "polynomial", "coefficients": [1.0] * 66}})
    density = {"kind": "piecewise_polynomial", "knots": [0, 1], "coefficients": [[1.0] * 20_000]}
    start = time.perf_counter()  # its minimum would take the eigenvalues of a 20000 x 20000 matrix
    with pytest.raises(ValueError, match=r"measure.coefficients\[0\] .*degree <= 64"):
        reluflow.Problem.from_dict({**spec, "measure": density, "target": {"kind": "constant", "value": 0.0}})
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ValueError, match=r"target.widths = \[5000\] .* 4096 units"):
        reluflow.Problem.from_dict({**spec, "target": {"kind": "teacher", "widths": [5000], "seed": 0}})


def test_gaussian_teacher_width_beyond_the_limit_is_refused_before_its_tables_exist():
    # the fault: a fuzzed config with a 50 000-unit teacher built (50 000, 50 000, d) tables and was killed for
    # memory; at the limit the teacher's tables are built in chunks, in well under a gigabyte
    import tracemalloc

    spec = {"network": {"input_dim": 6, "widths": [3], "bias": False, "fixed_output": 1.0},
            "measure": {"kind": "gaussian", "dim": 6, "sigma": 1.0}, "risk": {"backend": "gaussian"}}
    teacher = {"kind": "teacher", "bias": False, "fixed_output": 1.0, "seed": 0}
    with pytest.raises(ValueError, match=r"target.widths = \[50000\]: at most 2048 teacher units"):
        reluflow.Problem.from_dict({**spec, "target": {**teacher, "widths": [50000]}})
    tracemalloc.start()
    try:
        problem = reluflow.Problem.from_dict({**spec, "target": {**teacher, "widths": [2048]}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem.backend.teacher_risk > 0 and peak < 400 * 2**20


def test_pieces_that_overflow_are_refused():
    spec = {"network": {"input_dim": 1, "widths": [2]}, "measure": {"kind": "uniform"}}
    target = {"kind": "piecewise_affine", "knots": [0.0, 0.5, 1.0], "values": [1e308, 1.0, 0.0]}
    with pytest.raises(ValueError, match=r"target.knots/values .* infinite"):
        reluflow.Problem.from_dict({**spec, "target": target})
    density = {"kind": "piecewise_polynomial", "knots": [0.0, 1e300], "coefficients": [[1e300]]}
    with pytest.raises(ValueError, match=r"measure.coefficients .* total mass \(and finite in float64\)"):
        reluflow.Problem.from_dict({**spec, "measure": density, "target": {"kind": "constant", "value": 0.0}})


@pytest.mark.parametrize(("measure", "target", "fragment"), [
    ({"kind": "uniform", "low": 0.0, "high": 5e-324}, None, "measure.low/high = (0.0, 5e-324)"),
    ({"kind": "uniform", "low": -1e308, "high": 1e308}, None, "measure.low/high"),
    ({"kind": "gaussian", "sigma": 1e200}, {"kind": "constant", "value": 0.0}, "measure.sigma = 1e+200"),
    ({"kind": "piecewise_polynomial", "knots": [0.0, 5e-324], "coefficients": [[1.0]]}, None,
     "measure.coefficients"),
    # finite data whose exact pieces, re-expanded about their centres, overflow: the set-up's error, named
    ({"kind": "uniform", "low": 1e150, "high": 1e151}, {"kind": "polynomial", "coefficients": [0.0, 0.0, 1e300]},
     "'coefficients': [[0.0, 0.0, 1e+300]]} are out of float64's range"),
])
def test_finite_numbers_too_large_or_small_to_compute_with(measure, target, fragment):
    spec = {"network": {"input_dim": 1, "widths": [2]}, "measure": measure,
            "target": target or {"kind": "piecewise_affine", "knots": [0, 0.5, 1], "values": [0, 1, 0]}}
    with pytest.raises(ValueError) as info:
        reluflow.Problem.from_dict(spec)
    assert fragment in str(info.value)


def test_a_missing_key_names_the_kind_that_needs_it():
    refused(tiny() + "    init: {kind: perturbed}\n", "init.epsilon is missing: kind 'perturbed'")
    with pytest.raises(ValueError, match=r"measure.knots is missing: kind 'piecewise_polynomial'"):
        reluflow.Problem.from_dict({"network": {"input_dim": 1, "widths": [2]},
                                    "measure": {"kind": "piecewise_polynomial", "coefficients": [[1.0]]},
                                    "target": {"kind": "constant", "value": 0.0}})


def test_integers_beyond_64_bits_and_too_many_workers():
    refused(tiny().replace("seed: 1", f"seed: {2**64}"), f"seed = {2**64}", "64-bit")
    refused(tiny() + "execution: {workers: 1000000}\n", "execution.workers = 1000000")


# ------------------------------------------------------------------------------------- the YAML itself
def anchor_bomb(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return tiny() + "    problem_lol:\n" + "".join(f"      {line}\n" for line in lines)


def test_anchor_bomb_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(anchor_bomb())  # 9^10 values expanded: minutes and tens of GB for a plain walk
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml'.*holds more than 1000000 values .* aliases"):
        load_config_files([path])
    assert time.perf_counter() - start < 2.0
    # the same config as Snakemake hands it over (its loader keeps aliases shared): refused before it is copied
    import yaml

    config = yaml.load(anchor_bomb(), Loader=yaml.FullLoader)
    refused(config, "problem_lol.a6", "holds more than 1000000 values", seconds=2.0)


def test_recursive_alias_deep_nesting_and_odd_values():
    config = load_yaml_text(tiny())
    loop = [1]
    loop.append(loop)
    config["studies"]["tiny"]["problem"]["x"] = loop
    refused(config, "problem.x[1] contains itself")
    with pytest.raises(ValueError, match=r"nested more than 32 levels"):
        load_yaml_text("a: " + "[" * 40 + "]" * 40)
    config = load_yaml_text(tiny())
    deep: list = [1]
    for _ in range(32):
        deep = [deep]
    config["studies"]["tiny"]["method"]["step_size"] = deep
    refused(config, "study 'tiny': method.step_size", "nested more than 32 levels")
    refused(tiny().replace("seed: 1", "seed: 2024-01-01"), "seed = datetime.date(2024, 1, 1)", "quote it")
    refused(tiny().replace("    seed: 1", "    seed: 1\n    7: x"), "key 7", "keys are text")
    check_values({"a": [1, {"b": float("inf")}]}, values=False)  # structure only


def test_too_many_aliases_and_too_large_files(tmp_path):
    aliases = "a: &a 1\nb: [" + ", ".join(["*a"] * (LIMITS["yaml_aliases"] + 1)) + "]\n"
    with pytest.raises(ValueError, match=r"more than 10000 alias uses"):
        load_yaml_text(aliases)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * LIMITS["config_bytes"] + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml.*bytes is not allowed"):
        load_config_files([big])


def test_long_lists_in_messages_are_cut():
    message = refused(tiny() + "run: [" + ", ".join(map(str, range(5000))) + "]\n", "run[0] = 0")
    assert len(message) < 3000 and "more" in message


# ------------------------------------------------------------------------------------- the command lines
def _check(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "reluflow", "check", "-c", str(path), "--schema", str(SCHEMA)],
                          capture_output=True, text=True, check=False, timeout=120)


@pytest.mark.parametrize(("text", "fragment"), [
    (tiny(step=".nan"), "method.step_size = nan"),
    (tiny(widths="[[1000000000]]"), "P = 3000000001"),
    (anchor_bomb(), "holds more than 1000000 values"),
])
def test_reluflow_check_prints_one_error_without_a_traceback(tmp_path, text, fragment):
    out = _check(tmp_path, text)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and fragment in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and 'File "' not in out.stderr


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args],
                          cwd=workdir, capture_output=True, text=True, check=False, timeout=300)


@pytest.mark.parametrize(("text", "fragment"), [
    (tiny(step=".nan"), "error: study 'tiny': method.step_size = nan is not allowed"),
    (anchor_bomb(), "holds more than 1000000 values"),
])
def test_snakemake_prints_one_error_without_a_traceback(tmp_path, text, fragment):
    (tmp_path / "config.yaml").write_text(text)
    run = _snakemake(tmp_path, "-n", "--cores", "1")
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert fragment in out, out
    assert "Traceback" not in out and 'File "' not in out, out


def test_snakemake_dry_run_with_an_infinite_norm_bound(tmp_path):
    (tmp_path / "config.yaml").write_text(tiny(bound=".inf"))
    run = _snakemake(tmp_path, "-n", "--cores", "1")
    assert run.returncode == 0, run.stderr
    assert "integrate" in run.stdout


def test_snakemake_command_line_values_are_checked(tmp_path):
    (tmp_path / "config.yaml").write_text(tiny())
    run = _snakemake(tmp_path, "-n", "--cores", "1", "--config", "execution={progress_interval: .nan}")
    assert run.returncode != 0
    assert "error: execution.progress_interval = nan is not allowed" in run.stdout + run.stderr


def test_config_is_not_modified():
    config = load_yaml_text(tiny(bound=".inf"))
    before = copy.deepcopy(config)
    plan_config(config, SCHEMA)
    assert canonical_json(config) == canonical_json(before)


def test_input_dimension_beyond_the_sobol_sequence_is_refused_naming_it():
    """Found by the config fuzz: a Gaussian measure in more dimensions than scipy's Sobol sequence covers raised
    scipy's own message, naming no key."""
    with pytest.raises(ValueError, match=r"measure.dim = 21202 is not allowed: expected at most 21201 "
                                         r"\(network.input_dim\)"):
        reluflow.Problem.from_dict({"network": {"input_dim": 21202, "widths": [2]}, "measure": {"kind": "gaussian"},
                                    "target": {"kind": "constant", "value": 0.0},
                                    "risk": {"backend": "quadrature", "n_points": 16}})
