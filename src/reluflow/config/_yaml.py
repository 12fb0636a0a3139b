"""A strict YAML loader for study configs.

PyYAML follows YAML 1.1, which (i) silently keeps the last of two equal keys, so a study defined twice under
``studies:`` loses the first definition without a word, and (ii) reads ``1e-3`` (no dot) as the *string*
``"1e-3"``. Both are config bugs nobody notices until the results look odd, so this loader rejects duplicate
keys (naming the key and both lines) and reads every YAML 1.2 float as a float.

It also refuses what no config needs and what could take a reader down: a file over ``LIMITS["config_bytes"]``,
more than ``LIMITS["yaml_aliases"]`` alias uses, mappings and lists nested deeper than ``LIMITS["config_depth"]``
(``reluflow._limits``). Aliases are not expanded here (an alias is the same Python object as its anchor);
``reluflow.pipeline`` counts the expanded size before anything walks the config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .._limits import LIMITS

__all__ = [
    "DuplicateKeyError", "FLOAT_RE", "TEXT_KEYS", "YAMLLimitError", "coerce_yaml11_floats", "load_yaml",
    "load_yaml_text", "retype_scalars",
]

# YAML 1.2 core-schema floats (plus the 1.1 forms PyYAML already knows): 1e-3, -2.5E+4, .5, 1., 3.0
FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INT_RE = re.compile(r"^[-+]?[0-9]+$")
# YAML 1.2 floats that PyYAML's YAML 1.1 resolver reads as strings: an exponent without a dot (1e-3) or without a
# sign (1.0e5). Only these reach a config as strings when written unquoted (Snakemake reads config files with
# PyYAML), so only these are turned back into numbers: a quoted number of any other form ('0.02') stays the string
# it was written as, and is refused where a number belongs.
_EXP_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$")
_YAML11 = yaml.resolver.Resolver()
# Keys whose values are text (or names) even when they look like numbers: never coerced.
TEXT_KEYS = frozenset({"description", "run", "address", "path", "columns", "name"})


class DuplicateKeyError(ValueError):
    """A mapping in a YAML file has the same key twice."""


class YAMLLimitError(ValueError):
    """A YAML file beyond ``LIMITS``: too large, too many aliases, nested too deeply."""


class _StrictLoader(yaml.SafeLoader):
    _aliases = 0
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > LIMITS["yaml_aliases"]:
                mark = self.peek_event().start_mark
                raise YAMLLimitError(
                    f"{_where(mark)}: more than {LIMITS['yaml_aliases']} alias uses (*name) is not allowed "
                    "(LIMITS['yaml_aliases']): write the values out, or split the file")
            return super().compose_node(parent, index)
        if self.check_event(yaml.ScalarEvent):  # levels count mappings and lists, as check_values does
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > LIMITS["config_depth"]:
                raise YAMLLimitError(
                    f"{_where(self.peek_event().start_mark)}: mappings and lists nested more than "
                    f"{LIMITS['config_depth']} levels deep are not allowed (LIMITS['config_depth'])")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _where(mark: Any) -> str:
    name = mark.name if mark.name not in ("<unicode string>", "<string>", None) else "YAML"
    return f"{name}, line {mark.line + 1}"


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            where = f"{node.start_mark.name}" if node.start_mark.name not in ("<unicode string>", None) else "YAML"
            raise DuplicateKeyError(
                f"{where}: key {key!r} appears twice in the same mapping (lines {seen[key]} and {line}); "
                "YAML would silently keep only the last one: rename or remove one of them"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Resolve YAML 1.2 floats such as 1e-3 (PyYAML's 1.1 resolver needs a dot) before the string fallback.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml_text(text: str, name: str | None = None) -> Any:
    """Parse YAML text strictly (see the module docstring)."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > LIMITS["config_bytes"]:
        raise YAMLLimitError(f"{name or 'YAML'}: {size} bytes is not allowed: a config file holds at most "
                             f"{LIMITS['config_bytes']} bytes (LIMITS['config_bytes'])")
    loader = _StrictLoader(text)
    if name is not None:
        loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML (or JSON) file strictly; a duplicate key raises :class:`DuplicateKeyError`, a file beyond
    the limits :class:`YAMLLimitError`."""
    path = Path(path)
    size = path.stat().st_size
    if size > LIMITS["config_bytes"]:  # before reading it
        raise YAMLLimitError(f"{path}: {size} bytes is not allowed: a config file holds at most "
                             f"{LIMITS['config_bytes']} bytes (LIMITS['config_bytes'])")
    return load_yaml_text(path.read_text(encoding="utf-8"), name=str(path))


def coerce_yaml11_floats(obj: Any) -> Any:
    """Turn strings that YAML 1.2 reads as floats but PyYAML (YAML 1.1) reads as strings (``"1e-3"``,
    ``"1.0e5"``) into floats, recursively, except under :data:`TEXT_KEYS`; returns a new tree.

    Snakemake reads ``configfile:`` with a YAML 1.1 loader, so an unquoted ``1e-3`` reaches ``config`` as a
    string; this makes ``config`` equal to what :func:`load_yaml` reads from the same file. Other strings, a
    quoted ``'0.02'`` or ``'256'`` say, stay strings (and are refused where a number belongs, by the schema or by
    the package). Subtrees shared through YAML aliases are copied out, so check the expanded size first
    (``reluflow.pipeline.check_values``).
    """
    if isinstance(obj, dict):
        return {k: v if k in TEXT_KEYS else coerce_yaml11_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [coerce_yaml11_floats(v) for v in obj]
    if isinstance(obj, str) and _EXP_FLOAT_RE.match(obj) and _yaml11_tag(obj) != "tag:yaml.org,2002:float":
        return float(obj)
    return obj


def _yaml11_tag(text: str) -> str:
    """The tag PyYAML's YAML 1.1 resolver gives ``text`` written as a plain (unquoted) scalar."""
    return _YAML11.resolve(yaml.ScalarNode, text, (True, False))


_BOOLS = {"true": True, "false": False}
_NULLS = {"null", "~", ""}
_SPECIAL_FLOATS = {".inf": float("inf"), "+.inf": float("inf"), "-.inf": float("-inf"), ".nan": float("nan")}


def retype_scalars(obj: Any) -> Any:
    """Give strings that spell a number, a boolean or null their type, recursively.

    Snakemake parses nested ``--config`` values (``execution={shard_size: 16}``) with YAML's BaseLoader, which
    keeps every scalar a string. Only plain numbers, true/false and null are retyped (not ``04:00:00``, which
    YAML 1.1 would read as a base-60 integer).
    """
    if isinstance(obj, dict):
        return {k: retype_scalars(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [retype_scalars(v) for v in obj]
    if isinstance(obj, str):
        low = obj.strip().lower()
        if _INT_RE.match(obj.strip()):
            return int(obj)
        if FLOAT_RE.match(obj.strip()):
            return float(obj)
        if low in _SPECIAL_FLOATS:  # YAML's .inf (norm_bound) and .nan (refused, naming the key)
            return _SPECIAL_FLOATS[low]
        if low in _BOOLS:
            return _BOOLS[low]
        if low in _NULLS:
            return None
    return obj
