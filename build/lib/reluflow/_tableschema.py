"""The tables' contract with their readers: schema version, the columns readers rely on, and the check of a file.

Below the pipeline (which writes tables) and ``reluflow.load`` (which reads them), so that both use one contract
without the reader importing the writer.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from ._version import __version__

__all__ = ["META_PREFIX", "REQUIRED_COLUMNS", "TABLE_SCHEMA_VERSION", "check_table"]

META_PREFIX = "reluflow."
#: Version of the tables' layout and meaning, recorded as ``reluflow.schema_version`` on every file and checked by
#: ``reluflow.load``. Version 1 (every reluflow before the key existed) wrote no such key; version 2 records the
#: source hash, host and time; GD and fixed-step GF rows report their real ``max_risk_increase`` (it was 0);
#: initializations are keyed by the init and the parameter layout (paired across methods); endpoint classes are
#: judged on the endpoint (``nearest_*`` columns); counts are nullable integers, labels categoricals.
TABLE_SCHEMA_VERSION = 2
#: Columns a reader relies on, per table: ``check_table`` raises when one is missing.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "cells": ("cell", "key"),
    "trajectories": ("cell", "trajectory", "status", "risk_final"),
    "curves": ("cell", "trajectory", "checkpoint", "t", "risk"),
    "summary": ("cell", "key", "n"),
    "best_of_k": ("cell", "eps", "k", "estimate", "low", "high", "supported"),
    "final": ("cell", "trajectory", "theta_final", "theta_refined"),
    "init": ("cell", "trajectory", "theta"),
}


def check_table(path: str | Path, table: str) -> None:
    """Raise ``ValueError`` unless the file at ``path`` is a ``table`` table (``REQUIRED_COLUMNS``) of this
    ``TABLE_SCHEMA_VERSION`` with the columns readers rely on; each message says what to do."""
    if table not in REQUIRED_COLUMNS:
        raise ValueError(f"table = {table!r} is not allowed: expected one of {sorted(REQUIRED_COLUMNS)}")
    schema = pq.read_schema(path)
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items() if k != b"pandas"}
    rerun = f"rerun the study with this reluflow version ({__version__})"
    version = meta.get(f"{META_PREFIX}schema_version")
    if version is None:
        raise ValueError(f"{path} has no reluflow.schema_version metadata, so it was written by a reluflow older than "
                         f"table schema version {TABLE_SCHEMA_VERSION} (version 1 had no such key): {rerun}")
    if version != str(TABLE_SCHEMA_VERSION):
        raise ValueError(f"{path} has reluflow.schema_version = {version!r} but this reluflow reads table schema "
                         f"version {TABLE_SCHEMA_VERSION}: {rerun}")
    written_as = meta.get(f"{META_PREFIX}table")
    if written_as is not None and written_as != table:
        raise ValueError(f"{path} is a {written_as!r} table (reluflow.table) where a {table!r} table was expected: "
                         f"{rerun}")
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in schema.names]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}, which every {table} table has (required: "
                         f"{list(REQUIRED_COLUMNS[table])}): {rerun}")
