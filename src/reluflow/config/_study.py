"""Study configs: schema validation, the package's own checks, grid expansion into cells.

A config holds named studies; a study's ``grid`` is a cartesian product whose combinations are the **cells**.
Everything here runs before any job: a bad key or value raises :class:`ConfigError` naming the study, the key,
the value and what is allowed, and nothing is written. A config is read and validated once, at the edge (the
Snakefile, ``reluflow check``); the stages then receive typed objects: :class:`Study` and :class:`Cell` (rebuilt
from their JSON without validating again) and :class:`Execution`. Sizes are bounded by ``LIMITS`` (``reluflow._limits``,
docs/running.md "Limits and refused input"), checked before anything large is built or walked.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

from .._keys import canonical_json, cell_key
from .._limits import INF_KEYS, LIMITS
from .._simulate import simulate_memory, simulate_tables_memory
from ..analysis import check_verdict_spec
from ..dynamics import DEFAULT_INIT, init_from_dict, initialize, method_from_dict
from ..problem import Problem, file_sha256
from ..risk import Memory
from ._figures import check_figures, study_figures
from ._yaml import coerce_yaml11_floats, load_yaml, retype_scalars

__all__ = [
    "DRIVER_BASELINE_MB",
    "LIMITS",
    "WORKER_BASELINE_MB",
    "Cell",
    "ConfigError",
    "Execution",
    "Plan",
    "Study",
    "check_config_files",
    "check_values",
    "default_k_list",
    "expand_study",
    "fill_defaults",
    "find_schema",
    "integrate_memory_mb",
    "load_config_files",
    "shard_size_for",
    "shards_in_flight",
    "plan_config",
    "plan_from_snakemake",
    "study_origins",
    "with_includes",
    "validate_schema",
    "validate_cell",
]

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SECTIONS = ("problem", "init", "method")
LABEL_KEY = "label"  # in a grid value that is a mapping: its label in cell ids

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
    (a later file's mappings update the earlier ones key by key); the files a config ``include``s come just before
    it (``with_includes``)."""
    merged: dict[str, Any] = {}
    for path in with_includes(paths):
        data = _load_strict(path)
        _deep_update(merged, data)
    return merged


def with_includes(paths: Iterable[str | Path]) -> list[Path]:
    """``paths`` in order, each preceded by the files its ``include:`` patterns match (relative to its directory,
    sorted). An included file holds only ``studies:`` and includes nothing; a pattern that matches no file is an
    error."""
    out: list[Path] = []
    for path in map(Path, paths):
        patterns = _load_strict(path).get("include") or []
        if not isinstance(patterns, list) or not all(isinstance(p, str) and p for p in patterns):
            raise ConfigError(f"config file {str(path)!r}: include = {_short(patterns)} is not allowed: expected a "
                              "list of file patterns (text), relative to the config file")
        for pattern in patterns:
            found = sorted(path.parent.glob(pattern))
            if not found:
                raise ConfigError(f"config file {str(path)!r}: include pattern {pattern!r} matches no file (it is "
                                  f"relative to {path.parent.resolve()})")
            for included in found:
                extra = sorted(set(_load_strict(included)) - {"studies"})
                if extra:
                    raise ConfigError(f"included config file {str(included)!r} holds {extra}: an included file "
                                      "holds only studies:")
                if included not in out:
                    out.append(included)
        out.append(path)
    return out


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Read ``paths`` strictly: Snakemake's YAML loader silently keeps the last of two equal keys (a study
    defined twice loses its first definition), so look for duplicates ourselves."""
    for path in paths:
        _load_strict(path)


def study_origins(paths: Iterable[str | Path]) -> dict[str, Path]:
    """The directory of the config file that defines each study (the last one that names it, as merging goes):
    a study's relative data paths are resolved from there."""
    origins: dict[str, Path] = {}
    for path in with_includes(paths):
        studies = _load_strict(path).get("studies")
        if isinstance(studies, dict):
            origins.update(dict.fromkeys(studies, Path(path).resolve().parent))
    return origins


def _load_strict(path: str | Path) -> dict[str, Any]:
    """A config file read strictly, once per process while it is unchanged (the Snakefile checks a file before
    Snakemake's loader reads it, then plans from it); callers must not modify what it returns."""
    try:
        stat = Path(path).stat()
    except OSError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    return _load_strict_cached(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, str(path))


@cache
def _load_strict_cached(resolved: str, mtime_ns: int, size: int, path: str) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except ValueError as exc:  # DuplicateKeyError, YAMLLimitError
        raise ConfigError(str(exc)) from None
    except RecursionError:
        raise ConfigError(f"config file {str(path)!r} is nested too deeply to read") from None
    except Exception as exc:  # yaml.YAMLError: report where the file does not parse
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping (studies:, execution:), not "
                          f"{_short(data)}")
    try:
        check_values(data, values=False)  # aliases expanded: an anchor bomb stops here
    except ConfigError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    return data


def _deep_update(base: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def find_schema() -> Path:
    """The config schema: ``config.schema.yaml``, shipped in this package next to this module. It is the one
    schema: the Snakefile and ``reluflow check`` validate with it."""
    schema = Path(__file__).with_name("config.schema.yaml")
    if not schema.is_file():
        raise ConfigError(f"the config schema is missing from the installed package ({schema}): reinstall "
                          "reluflow, or pass a schema's path with --schema")
    return schema


@cache
def _package_schema() -> dict[str, Any]:
    return load_yaml(find_schema())


# ---------------------------------------------------------------------------------------------- input
_NUMBERS = (int, float, np.integer, np.floating)


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message names a value, it does not dump it)."""
    r = reprlib.Repr()  # (keywords only from Python 3.12)
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 8, 8, 3
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _value_key(path: Sequence[Any]) -> str:
    """The key a value belongs to: the last key of its path (the last part of a dotted grid key)."""
    for part in reversed(path):
        if isinstance(part, str):
            return part.split(".")[-1]
    return ""


def check_values(config: Any, *, values: bool = True) -> None:
    """Refuse what no config needs, before anything walks or copies it (:class:`ConfigError` naming the key).

    Always: more than ``LIMITS["config_nodes"]`` values once YAML aliases are expanded (an "anchor bomb"; the
    walk visits each shared subtree once, so it costs the size of the file, not of the expansion), nesting
    deeper than ``LIMITS["config_depth"]``, a subtree that contains itself (a recursive alias), keys that are
    not text, and values that are no number, text, true/false, null, list or mapping (YAML dates, binary, sets).
    With ``values``, also: NaN anywhere, an infinity except under a key of ``INF_KEYS`` (``norm_bound``), and
    integers beyond 64 bits. A study's ``description`` is text, whatever YAML read it as: never refused here.
    """
    max_nodes, max_depth = LIMITS["config_nodes"], LIMITS["config_depth"]
    memo: dict[int, tuple[int, int]] = {}  # id of a container -> (values under it, its levels)
    active: set[int] = set()

    def walk(obj: Any, path: list[Any], level: int) -> tuple[int, int]:
        if isinstance(obj, dict | list):
            key = id(obj)
            if key in active:
                raise ConfigError(f"{_where(path)} contains itself (a YAML alias to a mapping or list around it): "
                                  "write the value out")
            if key in memo:
                nodes, height = memo[key]
                if level + height - 1 > max_depth:
                    raise ConfigError(f"{_where(path)} is nested more than {max_depth} levels deep "
                                      "(LIMITS['config_depth'])")
                return nodes, height
            if level > max_depth:
                raise ConfigError(f"{_where(path)} is nested more than {max_depth} levels deep "
                                  "(LIMITS['config_depth'])")
            active.add(key)
            nodes, height = 1, 1
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            for k, v in items:
                if isinstance(obj, dict) and not isinstance(k, str):
                    raise ConfigError(f"{_where(path)}: key {_short(k)} is not allowed: keys are text (quote it)")
                n, h = walk(v, [*path, k], level + 1)
                nodes, height = nodes + n, max(height, h + 1)
                if nodes > max_nodes:
                    raise ConfigError(
                        f"{_where(path)} holds more than {max_nodes} values once YAML aliases are expanded "
                        "(LIMITS['config_nodes']): is it an alias bomb? Write the values out")
            active.discard(key)
            memo[key] = (nodes, height)
            return nodes, height
        if obj is None or isinstance(obj, str | bool):
            return 1, 0
        if not isinstance(obj, _NUMBERS):
            raise ConfigError(f"{_where(path)} = {_short(obj)} is not allowed: expected a number, text, true/false, "
                              f"null, a list or a mapping (YAML read a {type(obj).__name__}: quote it to make it text)")
        if values and not (path and path[-1] == "description"):
            _check_number(obj, path)
        return 1, 0

    walk(config, [], 1)


def _check_number(value: Any, path: list[Any]) -> None:
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            raise ConfigError(f"{_where(path)} = nan is not allowed: NaN is not a meaningful value anywhere in a "
                              "config")
        if math.isinf(value) and _value_key(path) not in INF_KEYS:
            raise ConfigError(f"{_where(path)} = {float(value)} is not allowed: expected a finite number (only "
                              f"{', '.join(sorted(INF_KEYS))} may be .inf)")
    elif abs(int(value)) > LIMITS["integer"]:
        raise ConfigError(f"{_where(path)} = {value} is not allowed: integers are at most 2^63 - 1 in absolute "
                          "value (LIMITS['integer']: they are stored as 64-bit integers)")


# ---------------------------------------------------------------------------------------------- schema
def validate_schema(config: Any, schema: Mapping[str, Any]) -> None:
    """Check ``config`` against the JSON schema; raise one :class:`ConfigError` listing every problem."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        lines = sorted({_format_schema_error(e) for e in errors})
        if len(lines) > 20:  # a message lists problems, it does not dump a config
            lines = [*lines[:20], f"... and {len(lines) - 20} more"]
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))


def _path_str(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _where(path: Sequence[Any]) -> str:
    path = list(path)
    if len(path) >= 2 and path[0] == "studies":
        rest = _path_str(path[2:])
        return f"study {str(path[1])!r}" + (f": {rest}" if rest else "")
    return _path_str(path) if path else "config"


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
        return f"{where}: key {_short(err.instance)} is not allowed: expected {hint or err.message}"
    if v in ("minProperties", "minItems") and not err.instance:
        return f"{where} is empty: {'expected ' + hint if hint else err.message}"
    value = _short(err.instance)
    if v == "enum":
        return f"{where} = {value} is not allowed: expected one of {err.validator_value}{hint_txt}"
    if v == "type":
        return f"{where} = {value} is not allowed: expected type {err.validator_value}{hint_txt}"
    message = err.message if len(err.message) <= 200 else f"{err.validator} {_short(err.validator_value)}"
    return f"{where} = {value} is not allowed: {message}{hint_txt}"


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
    #: the directory relative data paths are resolved from (the config file's; relative to the working directory
    #: where it can be, so that a moved project keeps its keys and JSON)
    base_dir: str = field(default=".", compare=False)

    @property
    def params(self) -> dict[str, Any]:
        """The cell's parameters as hashed by :func:`reluflow._keys.cell_key`."""
        return {"problem": self.problem, "init": self.init, "method": self.method}

    @cached_property
    def problem_object(self) -> Problem:
        """The cell's :class:`~reluflow.Problem`, built once per process (and pickled with the cell, so a dask
        task that receives the cell does not build it again)."""
        return Problem.from_dict(_resolve_data_paths(self.problem, self.base_dir))

    @cached_property
    def memory(self) -> Memory:
        """What ``simulate`` needs for this cell as a function of the trajectories it runs at once (a shard):
        ``reluflow.simulate_memory``. Built once per process, like :attr:`problem_object`."""
        return simulate_memory(self.problem_object, method=self.method, init=self.init)

    @property
    def data_files(self) -> dict[str, dict[str, str]]:
        """The data files the cell reads, by path as written: ``{"resolved": path, "sha256": hex}``."""
        return {m["path"]: {"resolved": str(_resolve(m["path"], self.base_dir)), "sha256": m.get("sha256", "")}
                for m in _empirical_measures(self.problem)}

    def to_json(self) -> str:
        """Everything a per-cell stage needs, as JSON with sorted keys (also a Snakemake rerun trigger).

        Values keep their config types (1.0 stays a float), so a stage runs exactly what the config says.
        """
        return _json({
            "study": self.study, "cell": self.id, "key": self.key, "seed": self.seed,
            "n_trajectories": self.n_trajectories, "base_dir": self.base_dir, **self.params,
        })

    @classmethod
    def from_json(cls, text: str) -> Cell:
        """Rebuild a cell from :meth:`to_json` (made from a validated cell: not validated again); its key is
        recomputed and must match."""
        d = json.loads(text)
        missing = {"study", "cell", "seed", "n_trajectories", "problem", "init", "method"} - set(d)
        if missing:
            raise ConfigError(f"cell JSON lacks {sorted(missing)}")
        key = cell_key({"problem": d["problem"], "init": d["init"], "method": d["method"]})
        if "key" in d and int(d["key"]) != key:
            raise ConfigError(f"cell {d['cell']!r}: key {d['key']} does not match its parameters ({key})")
        return cls(d["study"], d["cell"], key, int(d["seed"]), int(d["n_trajectories"]),
                   d["problem"], d["init"], d["method"], base_dir=d.get("base_dir", "."))


def _json(obj: Any) -> str:
    # An infinity (norm_bound: .inf) is written as Python's JSON does, Infinity, and read back by json.loads;
    # NaN never gets here (check_values refuses it)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)


def validate_cell(cell: Cell) -> Problem:
    """The package's own checks: build the cell's Problem and validate its method and init. Returns the
    Problem (``cell.problem_object``). Raises :class:`ConfigError` prefixed with the study and cell."""
    where = f"study {cell.study!r}, cell {cell.id!r}"
    for section in SECTIONS:
        if not isinstance(getattr(cell, section), dict):
            raise ConfigError(
                f"{where}: {section} = {getattr(cell, section)!r} is not allowed: expected a mapping "
                f"(give the study a {section!r} or a grid key {section!r} whose values are mappings)"
            )
    try:
        problem = cell.problem_object
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
        raise ConfigError(f"{where}: problem: {_msg(exc)}") from None
    for section, check in (("method", method_from_dict), ("init", init_from_dict)):
        try:
            check(getattr(cell, section))
        except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
            raise ConfigError(f"{where}: {section}: {_msg(exc)}") from None
    try:  # what only the problem can tell (a perturbed init's center must have P entries, ...)
        initialize(problem, cell.init, np.arange(1), cell.seed)
    except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
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
    #: where relative data paths are resolved from (``Cell.base_dir``)
    base_dir: str = "."
    #: the content hash of every data file a cell reads, by path as written: pinned when the config is validated
    data_files: dict[str, str] = field(default_factory=dict)

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
    def figures(self) -> list[str]:
        """The figures the study draws: those every study draws, then the ones its ``figures:`` names."""
        return study_figures(self.spec)

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
        return _json({"name": self.name, **self.spec, "grid_order": list(self.spec["grid"]),
                      "base_dir": self.base_dir, "data_files": self.data_files})

    @classmethod
    def from_json(cls, text: str) -> Study:
        """Rebuild a study from :meth:`to_json`, the JSON of a study validated at the edge: its grid is expanded
        again into the same cells (ids, keys), which are not validated again."""
        try:
            d = json.loads(text)
            name = d.pop("name")
            order = d.pop("grid_order")
            base_dir, data_files = d.pop("base_dir"), d.pop("data_files")
            d["grid"] = {k: d["grid"][k] for k in order}
            d["seed"], d["n_trajectories"]  # noqa: B018 (what expand_study reads)
        except (json.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
            raise ConfigError(f"not the JSON of a study as Study.to_json writes it ({type(exc).__name__}: {exc}): "
                              f"{_short(text)}") from None
        return expand_study(name, d, check=False, base_dir=base_dir, data_files=data_files)


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
        # the shortest text that reads back as v (so distinct values get distinct labels), without "e+":
        # 1e308 is "1e308", not 309 digits
        return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v).replace("e+", "e")
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


def _check_id_length(where: str, grid: Mapping[str, list[Any]], labels: Mapping[str, Mapping[str, str]]) -> None:
    """The longest cell id joins the longest label of every grid key: refuse it, naming the key with the longest
    labels, before any cell is built (a cell id names files and directories)."""
    longest = {key: max(labels[key].items(), key=lambda kv: len(kv[1])) for key in grid}
    parts = [lab for _, lab in longest.values() if lab]
    length = sum(map(len, parts)) + max(len(parts) - 1, 0)
    if length <= LIMITS["name_length"]:
        return
    key = max(longest, key=lambda k: len(longest[k][1]))
    cj, label = longest[key]
    value = next(v for v in grid[key] if canonical_json(v) == cj)
    raise ConfigError(
        f"{where}: grid.{key} = {_short(value)} gives the cell id label {_short(label, 60)} "
        f"({len(label)} characters), so cell ids reach {length} characters: expected at most "
        f"{LIMITS['name_length']} (LIMITS['name_length']; a cell id names files and directories): use shorter "
        "values, or fewer grid keys")


def expand_study(name: str, spec: Mapping[str, Any], *, check: bool = True, base_dir: str | Path = ".",
                 data_files: Mapping[str, str] | None = None) -> Study:
    """The cells of one (schema-valid) study, in grid order; ``check`` runs the package's checks on each.

    Data files (an empirical measure's ``path``, resolved from ``base_dir``) are pinned: the sha256 of their content
    becomes the measure's ``sha256``, so it enters the cell key (changed data makes a new cell). ``data_files``
    (path -> sha256, from an earlier expansion) pins them without reading them; without it they are hashed."""
    where = f"study {name!r}"
    if not NAME_RE.match(name):
        raise ConfigError(f"{where}: the name is not allowed: expected letters, digits, '_', '.', '-'")
    if len(name) > LIMITS["name_length"]:
        raise ConfigError(f"{where}: the name is {len(name)} characters long: expected at most "
                          f"{LIMITS['name_length']} (LIMITS['name_length']; it names directories)")
    n_traj = spec.get("n_trajectories")
    if isinstance(n_traj, _NUMBERS) and not isinstance(n_traj, bool) and n_traj > LIMITS["n_trajectories"]:
        raise ConfigError(f"{where}: n_trajectories = {n_traj!r} is not allowed: expected an integer >= 1 and <= "
                          f"{LIMITS['n_trajectories']} (LIMITS['n_trajectories'], per cell)")
    spec = copy.deepcopy(dict(spec))
    grid: dict[str, list[Any]] = spec.get("grid") or {}
    if not grid:
        raise ConfigError(f"{where}: grid is empty: give at least one key with a non-empty list of values")
    lengths = {key: len(values) if isinstance(values, list) else 1 for key, values in grid.items()}
    n_cells = math.prod(lengths.values())
    if n_cells > LIMITS["cells"]:  # known before a single cell is built
        sizes = " x ".join(f"{n} ({key})" for key, n in lengths.items())
        raise ConfigError(f"{where}: grid has {sizes} = {n_cells} cells: expected at most {LIMITS['cells']} cells "
                          "per study (LIMITS['cells']): split it into several studies")
    base = {
        "problem": spec.get("problem"),
        "init": spec.get("init") if spec.get("init") is not None else dict(DEFAULT_INIT),
        "method": spec.get("method"),
    }
    labels: dict[str, dict[str, str]] = {}
    grid = {key: list(values) if isinstance(values, list) else values for key, values in grid.items()}  # spec kept
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key} = {values!r} is not allowed: expected a non-empty list")
        # a mapping value may name itself in its cell ids: {label: k6, ...} (the label is not a parameter)
        given: dict[int, str] = {}
        for i, v in enumerate(values):
            if isinstance(v, dict) and LABEL_KEY in v:
                label = v[LABEL_KEY]
                if not isinstance(label, str) or _sanitize(label) != label or not label:
                    raise ConfigError(f"{where}: grid.{key}[{i}].{LABEL_KEY} = {_short(label)} is not allowed: "
                                      "expected letters, digits, '_', '.', '-' (it names files)")
                given[i] = label
                values[i] = {k: x for k, x in v.items() if k != LABEL_KEY}
        seen: dict[str, int] = {}
        for v in values:
            cj = canonical_json(v)
            if cj in seen:
                raise ConfigError(f"{where}: grid.{key} lists the value {v!r} twice: each value makes its own cells")
            seen[cj] = 1
        auto = _labels_for(key, values)
        labels[key] = dict(zip(seen, [given.get(i, lab) for i, lab in enumerate(auto)], strict=True))
        taken = list(labels[key].values())
        twice = [lab for lab in taken if taken.count(lab) > 1]
        if twice:
            raise ConfigError(f"{where}: grid.{key}: two values get the label {twice[0]!r}: give each its own "
                              f"{LABEL_KEY}")
    _check_id_length(where, grid, labels)

    cells: dict[str, Cell] = {}
    by_key: dict[int, str] = {}
    pinned: dict[str, str] = dict(data_files or {})
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
        for measure in _empirical_measures(params["problem"]):
            _pin_data_file(measure, base_dir, pinned, hash_new=data_files is None, where=f"{where}, cell {cid!r}")
        key = cell_key(params)
        if key in by_key:
            raise ConfigError(
                f"{where}: cells {by_key[key]!r} and {cid!r} have identical parameters: remove one of the grid "
                "values that produce them"
            )
        by_key[key] = cid
        cell = Cell(name, cid, key, int(spec["seed"]), int(spec["n_trajectories"]),
                    params["problem"], params["init"], params["method"], grid_values, base_dir=str(base_dir))
        if check:
            validate_cell(cell)
        cells[cid] = cell
    return Study(name, spec, cells, str(base_dir), pinned)


def _empirical_measures(problem: Any) -> list[dict[str, Any]]:
    """The problem's measure, if it is an empirical one read from a file (a list: none or one)."""
    measure = problem.get("measure") if isinstance(problem, dict) else None
    if isinstance(measure, dict) and measure.get("kind") == "empirical" and isinstance(measure.get("path"), str):
        return [measure]
    return []


def _resolve(path: str, base_dir: str | Path) -> Path:
    return Path(base_dir, path) if not Path(path).is_absolute() else Path(path)


def _resolve_data_paths(problem: dict[str, Any], base_dir: str | Path) -> dict[str, Any]:
    """``problem`` with the data paths it reads resolved from ``base_dir`` (a copy if there are any)."""
    measures = _empirical_measures(problem)
    if not measures or all(Path(m["path"]).is_absolute() for m in measures):
        return problem
    problem = copy.deepcopy(problem)
    for measure in _empirical_measures(problem):
        measure["path"] = str(_resolve(measure["path"], base_dir))
    return problem


def _pin_data_file(measure: dict[str, Any], base_dir: str | Path, pinned: dict[str, str], *, hash_new: bool,
                   where: str) -> None:
    """Set ``measure["sha256"]`` to the content hash of its ``path`` (from ``pinned``, else read when
    ``hash_new``); a ``sha256`` given in the config must match it."""
    path = measure["path"]
    if path not in pinned:
        resolved = _resolve(path, base_dir)
        if not hash_new:
            raise ConfigError(f"{where}: problem.measure.path = {path!r} is not among the study's pinned data files "
                              f"{sorted(pinned)}")
        if not resolved.is_file():
            raise ConfigError(f"{where}: problem.measure.path = {path!r} is not allowed: expected an existing .npy or "
                              f".parquet file ({resolved} is not one; relative paths start from the config file's "
                              "directory)")
        pinned[path] = file_sha256(resolved)
    given = measure.get("sha256")
    if given is not None and given != pinned[path]:
        raise ConfigError(f"{where}: problem.measure.sha256 = {_short(given)} is not allowed: the file {path!r} has "
                          f"sha256 {pinned[path]} (remove the key to pin the file as it is now)")
    measure["sha256"] = pinned[path]


# ---------------------------------------------------------------------------------------------- execution
@dataclass(frozen=True)
class Execution:
    """How to run (``execution:`` of the config): never changes a result, so never part of a cell key or a rerun
    trigger. Every default is the schema's (``config.schema.yaml``, ``$defs.execution``): build one with
    :meth:`from_mapping`, which validates and fills them in."""

    scheduler: str  # local | address | jobqueue
    address: str | None  # for scheduler "address" (else scheduler_file, else DASK_SCHEDULER_ADDRESS)
    scheduler_file: str | None  # for scheduler "address": the file `dask scheduler --scheduler-file` writes
    workers: int | None  # local: worker processes (None: the cores the job is given); jobqueue: most SLURM jobs
    minimum_jobs: int  # jobqueue: SLURM jobs kept while idle (adapt's minimum)
    worker_wait: float  # address, jobqueue: seconds to wait for the first worker
    shard_size: int  # trajectories per dask task and per resumable shard file
    retries: int  # times dask retries a failed shard task
    keep_shards: bool  # keep results/{study}/.shards/ after a cell's tables are written
    progress_interval: float  # seconds between progress lines
    worker_memory_mb: int  # what one dask worker may use: shards are made small enough to fit (shard_size_for)
    jobqueue: dict[str, Any]  # keyword arguments of dask_jobqueue.SLURMCluster

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any] | None = None, **overrides: Any) -> Execution:
        """Validate ``settings`` (the config's ``execution:``) updated by the ``overrides`` that are not None,
        against the schema, and fill in the schema's defaults; :class:`ConfigError` names a bad key."""
        merged = {**dict(settings or {}), **{k: v for k, v in overrides.items() if v is not None}}
        schema = _package_schema()
        wrapper = {"type": "object", "properties": {"execution": {"$ref": "#/$defs/execution"}},
                   "$defs": schema["$defs"]}  # so that messages name execution.KEY
        try:
            validate_schema({"execution": merged}, wrapper)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("invalid config:", "invalid execution settings:", 1)) from None
        fill_defaults({"execution": merged}, wrapper)
        workers = merged["workers"]
        if workers is not None and workers > LIMITS["workers"]:
            raise ConfigError(f"execution.workers = {workers!r} is not allowed: expected at most "
                              f"{LIMITS['workers']} (LIMITS['workers'])")
        if merged["scheduler"] == "jobqueue":
            merged["jobqueue"] = _jobqueue_memory(merged["jobqueue"], merged["worker_memory_mb"])
        return cls(**{f.name: merged[f.name] for f in fields(cls)})

    @classmethod
    def from_json(cls, text: str) -> Execution:
        try:
            settings = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"execution settings are not valid JSON ({exc}): {_short(text)}") from None
        return cls.from_mapping(settings)

    def to_json(self) -> str:
        return canonical_json({f.name: getattr(self, f.name) for f in fields(self)})

    def n_workers(self, cores: int | None) -> int:
        """Worker processes of a local cluster (``workers``, else the ``cores`` the job was given, else 1); the
        most SLURM jobs of a jobqueue cluster, or the workers expected at an existing scheduler (``workers``, else
        1)."""
        if self.scheduler == "local":
            return self.workers or cores or 1
        return self.workers or 1

    def worker_processes(self, cores: int | None) -> int:
        """The most single-threaded dask workers the job will have: ``n_workers``, times the worker processes of
        one SLURM job for a jobqueue cluster (``jobqueue.processes``, else ``jobqueue.cores``)."""
        n = self.n_workers(cores)
        if self.scheduler == "jobqueue":
            n *= self.jobqueue.get("processes") or self.jobqueue.get("cores") or 1
        return n


def _jobqueue_memory(jobqueue: Mapping[str, Any], worker_memory_mb: int) -> dict[str, Any]:
    """``jobqueue`` with its ``memory`` checked, or derived where null. A SLURM worker job's ``memory`` is shared by
    its worker processes, and dask's nanny stops a worker at ``distributed.worker.memory.terminate`` (95 %) of its
    share: shards sized for ``worker_memory_mb`` must fit under that, or the workers die one after another
    mid-run. Null: just enough for that, rounded up to 0.1 GB."""
    import dask
    from dask.utils import parse_bytes

    processes = jobqueue.get("processes") or jobqueue.get("cores") or 1
    terminate = dask.config.get("distributed.worker.memory.terminate", 0.95) or 1.0
    need = math.ceil(worker_memory_mb * MB * processes / terminate / 1e8) / 10
    memory = jobqueue.get("memory")
    if memory is None:
        return {**jobqueue, "memory": f"{need:g}GB"}
    try:
        total = parse_bytes(memory)
    except (ValueError, TypeError):
        raise ConfigError(f"execution.jobqueue.memory = {memory!r} is not allowed: expected a size such as "
                          "'4GB' or '3800MB'") from None
    usable_mb = total * terminate / processes / MB
    if usable_mb < worker_memory_mb:
        raise ConfigError(
            f"execution.jobqueue.memory = {memory!r} is not allowed with execution.worker_memory_mb = "
            f"{worker_memory_mb}: each of the job's {processes} worker process(es) could use about {int(usable_mb)} MB "
            f"before dask stops it ({terminate:.0%} of its share), less than the {worker_memory_mb} MB its shards "
            f"are sized for; set jobqueue.memory to at least '{need:g}GB' or worker_memory_mb to at most "
            f"{int(usable_mb)}")
    return dict(jobqueue)


# ---------------------------------------------------------------------------------------------- memory
MB = 1 << 20
#: a dask worker's own peak memory beside its shards: the interpreter, numpy, scipy, pandas, pyarrow, dask and
#: reluflow, and numba compiling its kernels where the fast extra is installed (tests/test_memory_model.py
#: measures it on a live worker)
WORKER_BASELINE_MB = 400
#: the integrate job's own process (dask client, pandas, pyarrow), besides the shards it holds
DRIVER_BASELINE_MB = 300


def shards_in_flight(workers: int) -> int:
    """Shards the integrate job keeps submitted at once: enough to keep ``workers`` busy while it writes
    finished ones, few enough that its memory stays at a few shards whatever the study's size."""
    return 2 * workers + 2


def shard_size_for(cell: Cell, execution: Execution) -> int:
    """Trajectories per shard of ``cell``: ``execution.shard_size``, or fewer where a shard that large would not
    fit in ``execution.worker_memory_mb`` beside the worker's own ``WORKER_BASELINE_MB`` (the estimate is
    ``cell.memory``). Never changes a result. Raises :class:`ConfigError`, with the numbers, where not even one
    trajectory fits."""
    budget = (execution.worker_memory_mb - WORKER_BASELINE_MB) * MB
    fit = cell.memory.max_trajectories(budget) if budget > 0 else 0
    if fit < 1:
        one = math.ceil(cell.memory.bytes(1) / MB)
        raise ConfigError(
            f"study {cell.study!r}, cell {cell.id!r}: one trajectory needs about {one} MB "
            f"(reluflow.simulate_memory) beside the {WORKER_BASELINE_MB} MB a dask worker needs of its own, more "
            f"than execution.worker_memory_mb = {execution.worker_memory_mb} allows: raise "
            f"execution.worker_memory_mb to at least {one + WORKER_BASELINE_MB}, or make the cell smaller "
            f"({cell.problem_object.n_params} parameters: network.widths, network.input_dim; the teacher: "
            "target.widths; points: risk.n_points; method.n_checkpoints; method.refine: false)")
    return min(execution.shard_size, fit)


def integrate_memory_mb(cells: Iterable[Cell], execution: Execution, workers: int) -> int:
    """The memory (MB) a study's integrate job needs on its machine, for its ``Snakemake`` resources: its own
    process (``DRIVER_BASELINE_MB``; the init table written in chunks of a shard; ``shards_in_flight`` shards'
    initial parameters; a finished shard's tables while it is written and while a cell is merged), and for a
    local cluster its ``workers``, each at ``WORKER_BASELINE_MB`` plus the largest shard of any cell.
    At most ``workers * execution.worker_memory_mb`` plus the driver's share."""
    cells = list(cells)
    driver = worker = 0
    for c in cells:
        n, p = shard_size_for(c, execution), c.problem_object.n_params
        tables = simulate_tables_memory(c.problem_object, method=c.method).bytes(n)
        driver = max(driver, 8 * p * n * (3 + shards_in_flight(workers)) + 2 * tables)
        worker = max(worker, c.memory.bytes(n))
    total = DRIVER_BASELINE_MB * MB + driver
    if execution.scheduler == "local":
        total += workers * (WORKER_BASELINE_MB * MB + worker)
    return math.ceil(total / MB)


# ---------------------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class Plan:
    """A validated config: the studies with their cells, the studies to build, the execution settings."""

    studies: dict[str, Study]
    run: list[str]
    execution: Execution

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


def plan_config(config: Any, schema: Mapping[str, Any] | str | Path, *, check: bool = True,
                origins: Mapping[str, Path] | None = None) -> Plan:
    """Validate a whole config (schema, then every cell with the package's checks) and expand it.

    ``origins``: the directory of the config file that defines each study (``study_origins``), which its relative
    data paths start from (default: the working directory)."""
    if not isinstance(schema, Mapping):
        schema = load_yaml(schema)
    check_values(config, values=False)  # its size with aliases expanded, before anything copies or walks it
    config = coerce_yaml11_floats(config)  # a copy
    check_values(config)  # NaN, infinities, integers (1e999 was a string a moment ago)
    validate_schema(config, schema)
    fill_defaults(config, schema)
    for name, spec in config["studies"].items():
        _description_as_text(spec)
        spec["n_trajectories"] *= config["scale"]
        try:
            if "verdict" in spec:
                check_verdict_spec(spec["verdict"])
            check_figures(spec)
        except ValueError as exc:
            raise ConfigError(f"study {name!r}: {exc}") from None
    execution = Execution.from_mapping(config["execution"])
    studies = {name: expand_study(name, spec, check=check, base_dir=_base_dir((origins or {}).get(name)))
               for name, spec in config["studies"].items()}
    if check:  # a cell whose single trajectory cannot fit in a worker: refused now, not when a worker dies
        for study in studies.values():
            for cell in study.cells.values():
                shard_size_for(cell, execution)
    run = list(config.get("run") or studies)
    unknown = [r for r in run if r not in studies]
    if unknown:
        raise ConfigError(f"run lists unknown studies {unknown}: studies are {sorted(studies)}")
    return Plan(studies, run, execution)


def _base_dir(origin: Path | None) -> str:
    """A study's base directory as the jobs see it: relative to the working directory where it can be (the usual
    ".", so that a moved project keeps its JSON), else absolute."""
    if origin is None:
        return "."
    try:
        return str(origin.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(origin.resolve())


def _description_as_text(spec: dict[str, Any]) -> None:
    """A study's description is text: YAML reads ``description: 1.5`` as a number and ``description: yes`` as a
    boolean, so a scalar is kept as the text it stands for (an empty one is dropped)."""
    text = spec.get("description")
    if text is None:
        spec.pop("description", None)
    elif isinstance(text, bool):
        spec["description"] = "true" if text else "false"
    elif not isinstance(text, str):
        spec["description"] = str(text)


def plan_from_snakemake(config: dict[str, Any], configfiles: Iterable[str | Path], schema: str | Path,
                        command_line: Mapping[str, Any] | None = None) -> Plan:
    """What the Snakefile calls: look for duplicate keys in the config files (Snakemake's loader merges them
    silently), then validate and expand ``config`` (which includes ``--config`` overrides).

    ``command_line`` is Snakemake's parsed ``--config`` (``workflow.config_settings.config``): its nested values
    arrive as strings, so they get their types back first (see :func:`retype_scalars`).
    """
    configfiles = list(configfiles)
    check_config_files(configfiles)
    check_values(config, values=False)  # before copying it: Snakemake's config holds YAML aliases unexpanded
    config = copy.deepcopy(dict(config))
    _retype_overrides(config, command_line or {}, top=True)
    # Snakemake's loader knows nothing of include: the included studies go under what it read
    included = [p for p in with_includes(configfiles) if p not in map(Path, configfiles)]
    if included:
        base = load_config_files(included)
        _deep_update(base, config)
        config = base
    return plan_config(config, schema, origins=study_origins(configfiles))


def _retype_overrides(config: dict[str, Any], overrides: Mapping[str, Any], *, top: bool = False) -> None:
    for key, value in overrides.items():
        if key not in config:
            continue
        if isinstance(value, Mapping) and isinstance(config[key], dict):
            _retype_overrides(config[key], value)
        elif not top or isinstance(value, list | dict):  # top-level scalars Snakemake already typed
            config[key] = retype_scalars(config[key])
