"""Study configs: schema validation, the package's own checks, grid expansion into cells.

A config holds named studies; a study's ``grid`` is a cartesian product whose combinations are the **cells**.
Everything here runs before any job: a bad key or value raises :class:`ConfigError` naming the study, the key,
the value and what is allowed, and nothing is written.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from .._keys import canonical_json, cell_key
from ._yaml import coerce_yaml11_floats, load_yaml, retype_scalars

__all__ = [
    "DEFAULT_INIT",
    "Cell",
    "ConfigError",
    "Plan",
    "Study",
    "check_config_files",
    "default_k_list",
    "expand_study",
    "fill_defaults",
    "find_schema",
    "load_config_files",
    "plan_config",
    "plan_from_snakemake",
    "validate_schema",
    "validate_cell",
]

DEFAULT_INIT: dict[str, Any] = {"kind": "normal"}
SCHEMA_RELPATH = Path("workflow") / "schemas" / "config.schema.yaml"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SECTIONS = ("problem", "init", "method")

# Short prefixes for readable cell ids, by the last segment of a grid key (``problem.network.widths`` -> w16).
# An empty prefix means the value speaks for itself (``method.kind`` -> gd).
ABBREVIATIONS: dict[str, str] = {
    "widths": "w", "width": "w", "input_dim": "d", "output_dim": "k", "activation": "", "bias": "bias",
    "fixed_output": "fixed", "kind": "", "backend": "", "solver": "", "schedule": "", "step_size": "lr",
    "n_steps": "n", "t_end": "T", "dt": "dt", "sigma": "s", "epsilon": "eps", "n_points": "m", "dtype": "",
    "decay": "decay", "low": "lo", "high": "hi",
}


class ConfigError(ValueError):
    """A config that cannot run; the message names the study, the key, the value and what is allowed."""


# ---------------------------------------------------------------------------------------------- loading
def load_config_files(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Read config files strictly (duplicate keys are errors) and merge them in order, like Snakemake does
    (a later file's mappings update the earlier ones key by key)."""
    merged: dict[str, Any] = {}
    for path in paths:
        data = _load_strict(path)
        _deep_update(merged, data)
    return merged


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Re-read ``paths`` strictly: Snakemake's YAML loader silently keeps the last of two equal keys (a study
    defined twice loses its first definition), so look for duplicates ourselves."""
    for path in paths:
        _load_strict(path)


def _load_strict(path: str | Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except ValueError as exc:  # DuplicateKeyError
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # yaml.YAMLError: report where the file does not parse
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping (studies:, execution:), not {data!r}")
    return data


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def find_schema(*near: str | Path) -> Path:
    """The config schema: ``config.schema.yaml``, shipped in this package next to this module. It is the one
    schema: the Snakefile validates with it too. ``near`` (config files or directories, which older versions
    searched for ``workflow/schemas/``) is accepted and not used: a schema from elsewhere could disagree with the
    package that reads the config."""
    schema = Path(__file__).with_name("config.schema.yaml")
    if not schema.is_file():
        raise ConfigError(f"the config schema is missing from the installed package ({schema}): reinstall "
                          "reluflow, or pass a schema's path with --schema")
    return schema


# ---------------------------------------------------------------------------------------------- schema
def validate_schema(config: Any, schema: Mapping[str, Any]) -> None:
    """Check ``config`` against the JSON schema; raise one :class:`ConfigError` listing every problem."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = sorted({_format_schema_error(e) for e in errors})
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def _where(path: Sequence[Any]) -> str:
    parts = [str(p) for p in path]
    if len(parts) >= 2 and parts[0] == "studies":
        rest = ".".join(parts[2:])
        return f"study {parts[1]!r}" + (f": {rest}" if rest else "")
    return ".".join(parts) if parts else "config"


def _format_schema_error(err: jsonschema.ValidationError) -> str:
    path = list(err.absolute_path)
    where = _where(path)
    hint = err.schema.get("description") if isinstance(err.schema, dict) else None
    hint_txt = f" ({hint})" if hint else ""
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        unknown = sorted(set(err.instance) - set(allowed))
        return f"{where}: unknown key(s) {unknown}: allowed keys are {allowed}"
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        sub = err.schema.get("properties", {}).get(missing, {})
        desc = f" ({sub['description']})" if isinstance(sub, dict) and "description" in sub else ""
        return f"{where}: required key {missing!r} is missing{desc}"
    if v == "propertyNames" or (err.parent is None and path and err.instance in (path[-1],) and v == "pattern"):
        return f"{where}: key {err.instance!r} is not allowed: expected {hint or err.message}"
    if v in ("minProperties", "minItems") and not err.instance:
        return f"{where} is empty: {'expected ' + hint if hint else err.message}"
    if v == "enum":
        return f"{where} = {err.instance!r} is not allowed: expected one of {err.validator_value}{hint_txt}"
    if v == "type":
        return f"{where} = {err.instance!r} is not allowed: expected type {err.validator_value}{hint_txt}"
    return f"{where} = {err.instance!r} is not allowed: {err.message}{hint_txt}"


def fill_defaults(config: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the schema's ``default``s into ``config`` (in place, for objects reachable through ``properties``,
    ``additionalProperties`` and local ``$ref``s)."""
    defs = schema.get("$defs", {})

    def resolve(s: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in s:
            s = defs[s["$ref"].split("/")[-1]]
        return s

    def walk(obj: Any, s: Mapping[str, Any]) -> None:
        s = resolve(s)
        if not isinstance(obj, dict):
            return
        for name, sub in s.get("properties", {}).items():
            sub = resolve(sub)
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                walk(obj[name], sub)
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            for name, value in obj.items():
                if name not in s.get("properties", {}):
                    walk(value, extra)

    walk(config, schema)
    return config


# ---------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One combination of a study's grid: the parameters of ``simulate`` plus the study's seed and size."""

    study: str
    id: str
    key: int
    seed: int
    n_trajectories: int
    problem: dict[str, Any]
    init: dict[str, Any]
    method: dict[str, Any]
    grid_values: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        """The cell's parameters as hashed by :func:`reluflow._keys.cell_key`."""
        return {"problem": self.problem, "init": self.init, "method": self.method}

    def to_json(self) -> str:
        """Everything a per-cell stage needs, as JSON with sorted keys (also a Snakemake rerun trigger).

        Values keep their config types (1.0 stays a float), so a stage runs exactly what the config says.
        """
        return _json({
            "study": self.study, "cell": self.id, "key": self.key, "seed": self.seed,
            "n_trajectories": self.n_trajectories, **self.params,
        })

    @classmethod
    def from_json(cls, text: str, *, check: bool = True) -> Cell:
        """Rebuild a cell from :meth:`to_json`; recompute its key and (``check``) rerun the package's checks."""
        d = json.loads(text)
        missing = {"study", "cell", "seed", "n_trajectories", "problem", "init", "method"} - set(d)
        if missing:
            raise ConfigError(f"cell JSON lacks {sorted(missing)}")
        key = cell_key({"problem": d["problem"], "init": d["init"], "method": d["method"]})
        if "key" in d and int(d["key"]) != key:
            raise ConfigError(f"cell {d['cell']!r}: key {d['key']} does not match its parameters ({key})")
        cell = cls(d["study"], d["cell"], key, int(d["seed"]), int(d["n_trajectories"]),
                   d["problem"], d["init"], d["method"])
        if check:
            validate_cell(cell)
        return cell


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def validate_cell(cell: Cell) -> Any:
    """The package's own checks: build the cell's Problem and validate its method and init. Returns the
    Problem. Raises :class:`ConfigError` prefixed with the study and cell."""
    from ..problem import Problem

    where = f"study {cell.study!r}, cell {cell.id!r}"
    for section in SECTIONS:
        if not isinstance(getattr(cell, section), dict):
            raise ConfigError(
                f"{where}: {section} = {getattr(cell, section)!r} is not allowed: expected a mapping "
                f"(give the study a {section!r} or a grid key {section!r} whose values are mappings)"
            )
    try:
        problem = Problem.from_dict(cell.problem)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: problem: {_msg(exc)}") from None
    from ..dynamics import init_from_dict, initialize, method_from_dict

    for section, check in (("method", method_from_dict), ("init", init_from_dict)):
        try:
            check(getattr(cell, section))
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{where}: {section}: {_msg(exc)}") from None
    try:  # what only the problem can tell (a perturbed init's center must have P entries, ...)
        initialize(problem, cell.init, np.arange(1), cell.seed)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{where}: init: {_msg(exc)}") from None
    return problem


def _msg(exc: BaseException) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


@dataclass(frozen=True)
class Study:
    """A validated study: its spec (with defaults) and its cells in grid order."""

    name: str
    spec: dict[str, Any]
    cells: dict[str, Cell]

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def n_trajectories(self) -> int:
        return int(self.spec["n_trajectories"])

    @property
    def cell_ids(self) -> list[str]:
        return list(self.cells)

    @property
    def grid_keys(self) -> list[str]:
        return list(self.spec["grid"])

    @property
    def eps_list(self) -> list[float]:
        return [float(e) for e in self.spec.get("analysis", {}).get("eps") or [1e-4, 1e-3, 1e-2]]

    @property
    def k_list(self) -> list[int]:
        k = self.spec.get("analysis", {}).get("k")
        return sorted({int(x) for x in k}) if k else default_k_list(self.n_trajectories)

    def to_json(self) -> str:
        """The study's spec as JSON: what the study-level stages take (and a rerun trigger).

        The JSON sorts keys, but the grid's key order makes the cell ids and the cell order, so it
        travels along as ``grid_order``.
        """
        return _json({"name": self.name, **self.spec, "grid_order": list(self.spec["grid"])})

    @classmethod
    def from_json(cls, text: str, *, check: bool = True) -> Study:
        d = json.loads(text)
        name = d.pop("name")
        order = d.pop("grid_order", None) or list(d["grid"])
        d["grid"] = {k: d["grid"][k] for k in order}
        return expand_study(name, d, check=check)


def default_k_list(n: int) -> list[int]:
    """1, 2, 4, ... up to ``n``."""
    return [2**i for i in range(int(math.log2(max(n, 1))) + 1)]


def _set_path(cell: dict[str, Any], dotted: str, value: Any, where: str) -> None:
    parts = dotted.split(".")
    node = cell
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(
                f"{where}: grid key {dotted!r} is not allowed: {prefix} = {child!r} is not a mapping, "
                "so it has no keys to set"
            )
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, dict):
        return str(v.get("kind") or v.get("name") or "")
    if isinstance(v, list | tuple):
        return "x".join(_fmt_scalar(x) for x in v)
    return str(v)


def _sanitize(label: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_")
    if label.startswith("-"):  # a negative number: keep file names from looking like options
        label = "m" + label[1:]
    return label.lstrip(".")


def _labels_for(grid_key: str, values: list[Any]) -> list[str]:
    """Readable, filesystem-safe, pairwise distinct labels for one grid key's values."""
    last = grid_key.split(".")[-1]
    abbr = ABBREVIATIONS.get(last, last.replace("_", ""))
    if last in SECTIONS:  # a whole subtree (e.g. grid key ``method``): its kind speaks for itself
        abbr = ""
    labels = [_sanitize(abbr + _fmt_scalar(v)) for v in values]
    # Distinct values with the same label (two GD methods, say): add the keys in which they differ.
    for label in set(labels):
        group = [i for i, lab in enumerate(labels) if lab == label]
        if len(group) < 2:
            continue
        dicts = [values[i] for i in group]
        if all(isinstance(d, dict) for d in dicts):
            keys = sorted({k for d in dicts for k in d})
            differing = [k for k in keys if len({canonical_json(d.get(k)) for d in dicts}) > 1]
            for i, d in zip(group, dicts, strict=True):
                extra = "_".join(
                    _sanitize(ABBREVIATIONS.get(k, k.replace("_", "")) + _fmt_scalar(d.get(k))) for k in differing
                )
                labels[i] = _sanitize(f"{labels[i]}_{extra}" if labels[i] else extra)
    for label in set(labels):
        group = [i for i, lab in enumerate(labels) if lab == label]
        if len(group) > 1 or not label:
            for j, i in enumerate(group):
                labels[i] = _sanitize(f"{label or last}{j + 1}")
    return labels


def expand_study(name: str, spec: Mapping[str, Any], *, check: bool = True) -> Study:
    """The cells of one (schema-valid) study, in grid order; ``check`` runs the package's checks on each."""
    where = f"study {name!r}"
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: the name is not allowed: expected letters, digits, '_', '.', '-'")
    spec = copy.deepcopy(dict(spec))
    grid: dict[str, list[Any]] = spec.get("grid") or {}
    if not grid:
        raise ConfigError(f"{where}: grid is empty: give at least one key with a non-empty list of values")
    base = {
        "problem": spec.get("problem"),
        "init": spec.get("init") if spec.get("init") is not None else dict(DEFAULT_INIT),
        "method": spec.get("method"),
    }
    labels: dict[str, dict[str, str]] = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key} = {values!r} is not allowed: expected a non-empty list")
        seen: dict[str, int] = {}
        for v in values:
            cj = canonical_json(v)
            if cj in seen:
                raise ConfigError(f"{where}: grid.{key} lists the value {v!r} twice: each value makes its own cells")
            seen[cj] = 1
        labels[key] = dict(zip(seen, _labels_for(key, values), strict=True))

    cells: dict[str, Cell] = {}
    by_key: dict[int, str] = {}
    for combo in itertools.product(*grid.values()):
        params = copy.deepcopy(base)
        grid_values = {}
        for key, value in zip(grid, combo, strict=True):
            _set_path(params, key, value, where)
            grid_values[key] = copy.deepcopy(value)
        cid = "-".join(lab for k, v in grid_values.items() if (lab := labels[k][canonical_json(v)]))
        if cid in cells:
            raise ConfigError(f"{where}: two cells get the id {cid!r}; rename grid values to tell them apart")
        for section in SECTIONS:
            if params[section] is None:
                raise ConfigError(
                    f"{where}, cell {cid!r}: no {section}: give the study a {section!r} mapping or a grid key "
                    f"starting with {section!r}"
                )
        key = cell_key(params)
        if key in by_key:
            raise ConfigError(
                f"{where}: cells {by_key[key]!r} and {cid!r} have identical parameters: remove one of the grid "
                "values that produce them"
            )
        by_key[key] = cid
        cell = Cell(name, cid, key, int(spec["seed"]), int(spec["n_trajectories"]),
                    params["problem"], params["init"], params["method"], grid_values)
        if check:
            validate_cell(cell)
        cells[cid] = cell
    return Study(name, spec, cells)


# ---------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """A validated config: the studies with their cells, the studies to build, the execution settings."""

    studies: dict[str, Study]
    run: list[str]
    execution: dict[str, Any]

    def study(self, name: str) -> Study:
        try:
            return self.studies[name]
        except KeyError:
            raise ConfigError(f"no study {name!r} in the config: studies are {sorted(self.studies)}") from None

    def cell(self, study: str, cell: str) -> Cell:
        s = self.study(study)
        try:
            return s.cells[cell]
        except KeyError:
            raise ConfigError(f"study {study!r} has no cell {cell!r}: its cells are {s.cell_ids}") from None

    def execution_json(self) -> str:
        return canonical_json(self.execution)


def plan_config(config: Any, schema: Mapping[str, Any] | str | Path, *, check: bool = True) -> Plan:
    """Validate a whole config (schema, then every cell with the package's checks) and expand it."""
    if not isinstance(schema, Mapping):
        schema = load_yaml(schema)
    config = coerce_yaml11_floats(copy.deepcopy(config))
    validate_schema(config, schema)
    fill_defaults(config, schema)
    studies = {name: expand_study(name, spec, check=check) for name, spec in config["studies"].items()}
    run = list(config.get("run") or studies)
    unknown = [r for r in run if r not in studies]
    if unknown:
        raise ConfigError(f"run lists unknown studies {unknown}: studies are {sorted(studies)}")
    return Plan(studies, run, dict(config["execution"]))


def plan_from_snakemake(config: dict[str, Any], configfiles: Iterable[str | Path], schema: str | Path,
                        command_line: Mapping[str, Any] | None = None) -> Plan:
    """What the Snakefile calls: look for duplicate keys in the config files (Snakemake's loader merges them
    silently), then validate and expand ``config`` (which includes ``--config`` overrides).

    ``command_line`` is Snakemake's parsed ``--config`` (``workflow.config_settings.config``): its nested values
    arrive as strings, so they get their types back first (see :func:`retype_scalars`).
    """
    check_config_files(configfiles)
    config = copy.deepcopy(dict(config))
    _retype_overrides(config, command_line or {}, top=True)
    return plan_config(config, schema)


def _retype_overrides(config: dict[str, Any], overrides: Mapping[str, Any], *, top: bool = False) -> None:
    for key, value in overrides.items():
        if key not in config:
            continue
        if isinstance(value, Mapping) and isinstance(config[key], dict):
            _retype_overrides(config[key], value)
        elif not top or isinstance(value, list | dict):  # top-level scalars Snakemake already typed
            config[key] = retype_scalars(config[key])
