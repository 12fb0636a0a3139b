"""A strict YAML loader for study configs.

PyYAML follows YAML 1.1, which (i) silently keeps the last of two equal keys, so a study defined twice under
``studies:`` loses the first definition without a word, and (ii) reads ``1e-3`` (no dot) as the *string*
``"1e-3"``. Both are config bugs nobody notices until the results look odd, so this loader rejects duplicate
keys (naming the key and both lines) and reads every YAML 1.2 float as a float.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "FLOAT_RE", "coerce_yaml11_floats", "load_yaml", "load_yaml_text", "retype_scalars"]

# YAML 1.2 core-schema floats (plus the 1.1 forms PyYAML already knows): 1e-3, -2.5E+4, .5, 1., 3.0
FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INT_RE = re.compile(r"^[-+]?[0-9]+$")


class DuplicateKeyError(ValueError):
    """A mapping in a YAML file has the same key twice."""


class _StrictLoader(yaml.SafeLoader):
    pass


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
    loader = _StrictLoader(text)
    if name is not None:
        loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML (or JSON) file strictly; a duplicate key raises :class:`DuplicateKeyError`."""
    path = Path(path)
    return load_yaml_text(path.read_text(encoding="utf-8"), name=str(path))


def coerce_yaml11_floats(obj: Any) -> Any:
    """Turn strings that are YAML 1.2 floats (``"1e-3"``) into floats, recursively; integers stay strings.

    Snakemake reads ``configfile:`` with a YAML 1.1 loader, so ``1e-3`` reaches ``config`` as a string; this
    makes ``config`` equal to what :func:`load_yaml` reads from the same file. No config field is a string that
    looks like a float, so nothing meant as text is changed.
    """
    if isinstance(obj, dict):
        return {k: coerce_yaml11_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [coerce_yaml11_floats(v) for v in obj]
    if isinstance(obj, str) and FLOAT_RE.match(obj) and not _INT_RE.match(obj):
        return float(obj)
    return obj


_BOOLS = {"true": True, "false": False}
_NULLS = {"null", "~", ""}


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
        if low in _BOOLS:
            return _BOOLS[low]
        if low in _NULLS:
            return None
    return obj
