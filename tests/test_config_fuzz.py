"""Property: every mutated config is either valid or refused up front, with a message naming a mutated key.

Starting from the repository's quickstart study and two variants (GF with an adaptive solver and a quadrature
risk; GD with a piecewise schedule and a perturbed init), hypothesis replaces, deletes or adds one to three keys
or list items anywhere in the config, with NaN, infinities, negative, zero, huge and tiny numbers, integers beyond
64 bits, text (numbers in quotes among it), lists, mappings, null, booleans, deeply nested lists and long lists,
and runs what the Snakefile runs (``plan_from_snakemake``: the schema, the limits, every cell's own checks). Any
other exception, or a refusal that names none of the mutated keys, fails. The count of configs checked is
reported at the end of the pytest run (``conftest.py``) and in the test's output (``pytest -s``).
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reluflow.config import LIMITS, Cell, ConfigError, Study, load_config_files, plan_from_snakemake
from reluflow.config._yaml import load_yaml_text

# valid configs with absurd but allowed values (init sigma 1e300, an unnormalized density) warn, and that is fine
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "src" / "reluflow" / "config" / "config.schema.yaml"  # the one schema, shipped in the package
N_EXAMPLES = 1000

VARIANTS = load_yaml_text("""
studies:
  gfq:
    description: GF with an adaptive solver on a 2D teacher under a Gaussian measure, by quadrature
    problem:
      network: {input_dim: 2, widths: [3]}
      measure: {kind: gaussian, sigma: 1.0}
      target: {kind: teacher, widths: [2], seed: 5}
      risk: {backend: quadrature, n_points: 64, seed: 1}
    init: {kind: scaled_normal, sigma: fan_in}
    method: {kind: gf, solver: dopri5, t_end: 5.0, dt: 0.1, rtol: 1.0e-5, atol: 1.0e-8, max_steps: 1000,
             norm_bound: .inf, n_checkpoints: 5, refine: false}
    grid:
      method.rtol: [1.0e-5, 1.0e-6]
    n_trajectories: 8
    seed: 3
    analysis: {eps: [1.0e-3], k: [1, 2]}
  pw:
    problem:
      network: {input_dim: 1, widths: [3]}
      measure: {kind: piecewise_polynomial, knots: [0.0, 0.5, 1.0], coefficients: [[1.0], [1.0]]}
      target: {kind: function, name: abs, scale: 2.0, shift: -1.0}
    init: {kind: perturbed, epsilon: 0.1, center: global_min}
    method: {kind: gd, schedule: piecewise, boundaries: [10, 20], values: [0.05, 0.02, 0.01], n_steps: 30,
             n_checkpoints: 4}
    grid:
      init.epsilon: [0.1, 0.01]
      problem.network.widths: [[3], [4]]
    n_trajectories: 4
    seed: 0
""")["studies"]


def _bases() -> list[dict[str, Any]]:
    repo = load_config_files([ROOT / "config.yaml"])
    # the default study and one catalogue study with labelled grid values (all twelve would triple the run time)
    repo["studies"] = {name: repo["studies"][name] for name in ("quickstart", "ss2018")}
    repo.pop("include", None)
    out = [repo]
    for name, spec in VARIANTS.items():
        out.append({"studies": {name: spec}, "run": [name], "execution": {"shard_size": 4}})
    return out


BASES = _bases()


def _paths(obj: Any, path: tuple = ()) -> list[tuple]:
    """Every key and list item below the root."""
    out = [path] if path else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*path, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*path, i))
    return out


PATHS = [_paths(b) for b in BASES]


def _nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


SPECIAL = [
    float("nan"), float("inf"), float("-inf"), 0, 0.0, -0.0, -1, -0.5, 1, 2, 0.5, 3.0, 1e308, -1e308, 5e-324,
    10**7 + 1, 10**9 + 1, 10**12, 10**15, 2**63, -(2**63) - 1, 10**30, 1e12, 1e15,
    "", "x", "0.02", "256", "1e-3", "1e999", "-1e999", "inf", ".inf", "nan", "true", "null",
    "gd", "gf", "normal", "scaled_normal", "uniform", "perturbed", "teacher", "piecewise_affine", "empirical",
    "exact1d", "quadrature", "gaussian", "relu", "tanh", "auto", "rk4", "euler", "dopri5", "constant", "power",
    "piecewise", "global_min", "fan_in", "same", "local", "jobqueue", "quickstart", "x" * 300,
    None, True, False, [], {}, [1], [0.5, 1.0], [0.0, 0.5, 1.0], ["a"], [[1]], [None], [float("nan")],
    [float("inf")], [10**12], [[4], [4]], {"kind": "gd"}, {"kind": "gf"}, {"kind": "normal"}, {"a": 1},
    _nested(40, 1), _nested(40, {}), list(range(1, 20_002)),
]
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 20), st.floats(-10, 10)), max_size=5),
)
NEW_KEYS = st.sampled_from(["zz_extra", "kind", "seed", "step_size", "norm_bound", "dim", "low", "widths",
                            "method.step_size", "problem.network.widths", "init.sigma", "n_points", "sigma"])
COUNTS = {"valid": 0, "refused": 0, "seconds": 0.0}


def _names(path: tuple) -> set[str]:
    """What a message may call the key at ``path``: its last key (or a part of a dotted grid key)."""
    for part in reversed(path):
        if isinstance(part, str):
            return {part, *part.split(".")}
    return set()


def _get(obj: Any, path: tuple) -> Any:
    for p in path:
        obj = obj[p]
    return obj


def _mutate(config: dict, path: tuple, op: str, value: Any, new_key: str) -> set[str] | None:
    """Apply one mutation; the key names a refusal may name, or None when ``path`` is gone."""
    try:
        parent = _get(config, path[:-1])
        _get(parent, path[-1:])
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(parent, dict | list):  # a string where an earlier mutation put one
        return None
    last = path[-1]
    if op == "add" and isinstance(_get(parent, (last,)), dict):
        _get(parent, (last,))[new_key] = copy.deepcopy(value)
        return {new_key, *new_key.split(".")}
    if op == "scale":  # a nearby or far number where a number is (more of these configs are valid)
        old = parent[last]
        if isinstance(old, int | float) and not isinstance(old, bool) and isinstance(value, int | float) \
                and not isinstance(value, bool):
            value = old * value
        else:
            value = old
    if op == "delete":  # a refusal may name the mapping or list it left (``studies is empty``)
        del parent[last]
        return _names(path) | _names(path[:-1])
    parent[last] = copy.deepcopy(value)
    return _names(path)


FACTORS = st.sampled_from([2, 10, -1, 0, 0.5, 0.1, 1e-3, 1e6, 1e300, 10**6, 10**15])
MUTATION = st.one_of(
    st.tuples(st.integers(min_value=0), st.sampled_from(["replace", "replace", "delete", "add"]), VALUES, NEW_KEYS),
    st.tuples(st.integers(min_value=0), st.just("scale"), FACTORS, st.just("")),
)


@settings(max_examples=N_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(base=st.integers(min_value=0, max_value=len(BASES) - 1), mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_mutated_config_is_valid_or_refused_naming_the_key(base, mutations):
    config = copy.deepcopy(BASES[base])
    names: set[str] = set()
    applied = []
    for index, op, value, new_key in mutations:
        path = PATHS[base][index % len(PATHS[base])]
        got = _mutate(config, path, op, value, new_key)
        if got is not None:
            names |= got
            applied.append((path, op, value if op != "delete" else None, new_key if op == "add" else None))
    start = time.perf_counter()
    try:
        plan = plan_from_snakemake(config, [], SCHEMA)
    except ConfigError as exc:  # (a ValueError) the one way to refuse: any other exception fails the test
        message = str(exc)
        named = any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) for name in names) \
            or ("studies" in names and "study '" in message)
        assert named, f"{applied}: refused without naming {names}: {message}"
        COUNTS["refused"] += 1
    else:
        # what a valid plan hands the stages survives its JSON (an infinite norm_bound included)
        for study in plan.studies.values():
            assert Study.from_json(study.to_json()).cell_ids == study.cell_ids
            for cell in study.cells.values():
                assert Cell.from_json(cell.to_json()) == cell
                assert len(cell.id) <= LIMITS["name_length"]
        COUNTS["valid"] += 1
    finally:
        COUNTS["seconds"] += time.perf_counter() - start


def test_fuzz_count(request):
    """Runs after the property (file order): reports how many configs it checked (in the summary at the end of
    the pytest run, see conftest.py), and that it checked enough."""
    n = COUNTS["valid"] + COUNTS["refused"]
    if n == 0:  # the property was deselected (pytest -k): nothing to report
        return
    report = (f"config fuzz: {n} mutated configs checked ({COUNTS['valid']} valid, {COUNTS['refused']} refused "
              f"naming a mutated key), {COUNTS['seconds']:.1f} s in plan_from_snakemake")
    print(report)
    request.config.reluflow_fuzz_report = report
    assert n >= N_EXAMPLES, f"only {n} mutated configs were checked"
