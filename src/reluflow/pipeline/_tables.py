"""Parquet tables: provenance metadata, atomic writes, and the checks a reader makes.

Every file carries key/value metadata (package version, a hash of the package's source, git commit and whether
the package's source had uncommitted changes when known, host and time of writing, the table schema version,
the cell's parameters as canonical JSON, the seed, numpy and pyarrow versions). Files are written to a temporary
name in the same directory, flushed to disk, and renamed into place with ``os.replace``: a table that exists is
complete. ``check_table`` is what readers (``reluflow.load``) ask of a file: this schema version and the columns
they rely on.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import glob
import hashlib
import json
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .._keys import canonical_json
from .._tableschema import META_PREFIX, REQUIRED_COLUMNS, TABLE_SCHEMA_VERSION, check_table
from .._version import __version__

__all__ = [
    "META_PREFIX",
    "REQUIRED_COLUMNS",
    "TABLE_SCHEMA_VERSION",
    "VOLATILE_META_KEYS",
    "atomic_path",
    "check_table",
    "git_commit",
    "git_dirty",
    "provenance",
    "read_metadata",
    "source_hash",
    "table_from_frame",
    "write_table",
    "write_tables_streaming",
]

#: Metadata keys that differ between two runs of the same code, config and seed (the values never do): compare
#: files' metadata without them.
# where and when a file was written: the same config gives the same tables apart from these
VOLATILE_META_KEYS = frozenset({f"{META_PREFIX}created", f"{META_PREFIX}host", f"{META_PREFIX}data_paths"})
# The package's own files that make up its code: the modules, and data files should it ever ship any.
_SOURCE_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".toml")
# mkstemp creates files readable by their owner only; tables get the permissions of any new file.
_UMASK = os.umask(0)
os.umask(_UMASK)


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the package runs from (editable installs), or ``None``."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


@functools.cache
def git_dirty() -> bool | None:
    """Whether the package's directory in its git checkout has uncommitted changes (untracked files included), or
    ``None`` outside a checkout. Only the package's own directory is looked at: cheap, and what the code is."""
    here = Path(__file__).resolve().parents[1]
    try:
        # --no-optional-locks: concurrent jobs in one checkout must not race for the index lock
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(here), "status", "--porcelain", "--", "."],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


@functools.cache
def source_hash() -> str | None:
    """sha256 of the installed ``reluflow`` package's source: its ``.py`` files (and data files, if any) in the
    order of their paths relative to the package, each fed as its path, its length and its bytes. The same code
    gives the same hash from a git checkout, an editable install or a wheel. ``None`` if the files cannot be read
    (a zipped install): then nothing written earlier counts as written by this code."""
    root = Path(__file__).resolve().parents[1]
    try:
        files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                       if p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts and p.is_file())
        digest = hashlib.sha256()
        for rel, path in files:
            data = path.read_bytes()
            digest.update(f"{len(rel.encode())}:{rel}:{len(data)}:".encode())
            digest.update(data)
    except OSError:
        return None
    return digest.hexdigest() if files else None


def provenance(table: str, **fields: Any) -> dict[str, str]:
    """The metadata of one file: ``reluflow.*`` keys (dicts and lists as canonical JSON) and library versions."""
    meta = {
        f"{META_PREFIX}table": table,
        f"{META_PREFIX}version": __version__,
        f"{META_PREFIX}schema_version": str(TABLE_SCHEMA_VERSION),
        "numpy.version": np.__version__,
        "pyarrow.version": pa.__version__,
        "pandas.version": pd.__version__,
        f"{META_PREFIX}host": socket.gethostname(),
        f"{META_PREFIX}created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    source = source_hash()
    if source:
        meta[f"{META_PREFIX}source_hash"] = source
    commit = git_commit()
    if commit:
        meta[f"{META_PREFIX}git_commit"] = commit
        dirty = git_dirty()
        if dirty is not None:
            meta[f"{META_PREFIX}git_dirty"] = "true" if dirty else "false"
    for name, value in fields.items():
        if value is None:
            continue
        meta[f"{META_PREFIX}{name}"] = value if isinstance(value, str) else canonical_json(value)
    return meta


def read_metadata(path: str | Path) -> dict[str, str]:
    """A parquet file's key/value metadata as ``str -> str`` (without pandas' own ``pandas`` entry)."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"pandas"}


def table_from_frame(df: pd.DataFrame) -> pa.Table:
    """A pandas frame as an arrow table without its index (row order is the data's own order)."""
    return pa.Table.from_pandas(df, preserve_index=False)


def _with_metadata(table: pa.Table, meta: Mapping[str, str]) -> pa.Table:
    keep = {k: v for k, v in (table.schema.metadata or {}).items() if k == b"pandas"}
    keep.update({k.encode(): str(v).encode() for k, v in meta.items()})
    return table.replace_schema_metadata(keep)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``, on any error
    (or interrupt) delete it. Readers therefore see either no file or a complete one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A writer killed without cleanup (SIGKILL, node failure) leaves its temporary file; one file has one
    # writer at a time (one Snakemake job, one shard task), so the leftovers of earlier attempts can go.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    # Hidden, and not ending in .parquet: directory readers skip it.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_table(table: pa.Table | pd.DataFrame, path: str | Path, meta: Mapping[str, str]) -> Path:
    """Write one table atomically with ``meta`` as its key/value metadata."""
    if isinstance(table, pd.DataFrame):
        table = table_from_frame(table)
    table = _with_metadata(table, meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)
    return Path(path)


def write_tables_streaming(tables: Iterable[pa.Table], path: str | Path, meta: Mapping[str, str],
                           schema: pa.Schema | None = None) -> int:
    """Write a sequence of tables with one schema as row groups of one file, atomically; returns rows written.

    Streaming keeps memory at one piece (a shard) however large the cell. ``schema`` defaults to the first
    table's; later pieces are cast to it (they differ at most in null-only columns).
    """
    n_rows = 0
    writer: pq.ParquetWriter | None = None
    with atomic_path(path) as tmp:
        try:
            for table in tables:
                if writer is None:
                    schema = _with_metadata(table if schema is None else schema.empty_table(), meta).schema
                    writer = pq.ParquetWriter(tmp, schema, write_page_checksum=True)
                table = table.replace_schema_metadata(schema.metadata)
                if not table.schema.equals(schema):
                    table = table.select(schema.names).cast(schema)
                writer.write_table(table)
                n_rows += table.num_rows
            if writer is None:  # nothing to write: an empty table with the given schema
                if schema is None:
                    raise ValueError(f"no rows and no schema for {path}")
                schema = _with_metadata(schema.empty_table(), meta).schema
                writer = pq.ParquetWriter(tmp, schema, write_page_checksum=True)
        finally:
            if writer is not None:
                writer.close()
    return n_rows


def json_meta(meta: Mapping[str, str], key: str) -> Any:
    """Decode one ``reluflow.*`` JSON metadata value."""
    return json.loads(meta[f"{META_PREFIX}{key}"])
