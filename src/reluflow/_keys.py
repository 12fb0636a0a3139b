"""Stable keys for cells and trajectories (DESIGN.md, "Randomness").

Trajectory ``i`` of a cell with key ``k`` in a study with seed ``s`` draws from
``numpy.random.default_rng([i, k, s])``: any trajectory can be recomputed alone, whatever the shard, worker,
retry or order it ran in.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["canonical_json", "cell_key", "trajectory_rng"]


def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _canonical(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj.is_integer():
        # 1 and 1.0 are the same parameter value
        return int(obj)
    return obj


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, and integral floats written as integers."""
    return json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_key(params: dict[str, Any]) -> int:
    """A stable non-negative 63-bit integer hash of a cell's canonical parameters (``problem``, ``init``,
    ``method``). Independent of Python's hash seed, dict order and platform."""
    digest = hashlib.sha256(canonical_json(params).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def trajectory_rng(trajectory: int, key: int, seed: int) -> np.random.Generator:
    """The generator of trajectory ``trajectory`` in the cell with key ``key`` of a study with seed ``seed``."""
    return np.random.default_rng([int(trajectory), int(key), int(seed)])
