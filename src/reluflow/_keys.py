"""Stable keys for cells, initializations and trajectories (DESIGN.md, "Randomness").

Trajectory ``i`` of a study with seed ``s`` draws its initial parameters from
``numpy.random.default_rng([i, k, s])`` with ``k = init_key(init, layout)``: a hash of the (normalized) init spec
and the network's parameter layout only. Any trajectory can be recomputed alone, whatever the shard, worker, retry
or order it ran in, and every cell of a study with the same init and layout starts trajectory ``i`` from the same
point (common random numbers): the method, its stopping rules, monitors and analysis settings never change an
initialization.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

__all__ = ["canonical_json", "cell_key", "init_key", "trajectory_rng"]


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
        return _infinity(obj) if isinstance(obj, float) and math.isinf(obj) else obj
    if isinstance(obj, float) and obj.is_integer():
        # 1 and 1.0 are the same parameter value
        return int(obj)
    if isinstance(obj, float) and math.isinf(obj):
        return _infinity(obj)
    return obj


def _infinity(value: float) -> str:
    # JSON has no infinity: written as the string "inf" or "-inf". Where an infinity is allowed (norm_bound: .inf)
    # no string is, so the two cannot meet; finite values keep their form, and so every existing key.
    return "inf" if value > 0 else "-inf"


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, integral floats written as integers and infinities as the strings
    ``"inf"`` and ``"-inf"``; NaN has no canonical form (``ValueError``)."""
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_key(params: dict[str, Any]) -> int:
    """A stable non-negative 63-bit integer hash of a cell's canonical parameters (``problem``, ``init``,
    ``method``). Independent of Python's hash seed, dict order and platform."""
    digest = hashlib.sha256(canonical_json(params).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def init_key(init: dict[str, Any], layout: dict[str, Any]) -> int:
    """The key of an initialization: a stable 63-bit hash of the normalized ``init`` dict and the parameter
    ``layout`` (``Architecture.layout()``), and of nothing else."""
    return cell_key({"init": init, "layout": layout})


def trajectory_rng(trajectory: int, key: int, seed: int) -> np.random.Generator:
    """The generator of trajectory ``trajectory`` with initialization key ``key`` in a study with seed ``seed``."""
    return np.random.default_rng([int(trajectory), int(key), int(seed)])
