"""What counts as a number in a spec: ``int``/``float`` (and numpy's), never ``bool``, never text.

``float("0.5")`` and ``np.asarray(["0", "1"], dtype=float)`` turn text into numbers without a word, and
``float(True)`` is 1.0, so a quoted ``'0.5'`` or a stray ``true`` would run as a number in some places and be
refused in others. The validators use these instead, so that text and booleans are refused wherever a number
belongs, naming the key.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_real", "real_array"]


def is_real(value: Any) -> bool:
    """A real number: an int or float (numpy's included), not a bool."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _all_real(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "iuf"
    if isinstance(value, list | tuple):
        return all(_all_real(v) for v in value)
    return is_real(value)


def real_array(value: Any) -> np.ndarray | None:
    """``value`` (a number, or nested lists or arrays of numbers) as a float array, or None when anything in it
    is not a number (text, true/false, null, a mapping) or the lists are ragged."""
    if not _all_real(value):
        return None
    try:
        return np.asarray(value, dtype=float)
    except (ValueError, TypeError, OverflowError):
        return None
