"""The tables a study declares (its figures: ``_figures.py``), and a cheap check of the tables on disk, which the
Snakefile runs before Snakemake decides what to run."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from ._study import Study

__all__ = ["CELL_TABLES", "STUDY_TABLES", "parquet_damage", "set_aside_damaged_tables"]

#: a study's per-cell tables, each in results/{study}/{table}/{cell}.parquet (written by its integrate job)
CELL_TABLES = ("init", "curves", "final", "trajectories")
#: a study's own tables, results/{study}/{table}.parquet
STUDY_TABLES = ("cells", "summary", "best_of_k")
PARQUET_MAGIC = b"PAR1"


# ---------------------------------------------------------------------------------------------- damaged tables
def parquet_damage(path: str | Path) -> str | None:
    """Why the parquet file at ``path`` cannot be whole, judged from its first and last bytes (the magic number at
    both ends and the footer's length); None when they look right. Cheap (no parquet reader): it catches a
    truncated or overwritten file; damaged pages behind an intact footer are caught by the readers, which verify
    every page's checksum."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4)
            if size >= 12:
                f.seek(size - 8)
            tail = f.read(8)
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if size < 12:
        return f"{size} bytes: too short to be a parquet file"
    if head != PARQUET_MAGIC or tail[4:] != PARQUET_MAGIC:
        return "no parquet magic number at its start and end (truncated or overwritten)"
    if int.from_bytes(tail[:4], "little") + 12 > size:
        return "its footer is longer than the file (truncated)"
    return None


def set_aside_damaged_tables(results: str | Path, studies: Iterable[Study]) -> list[tuple[Path, str, Path]]:
    """Move the damaged tables of ``studies`` under ``results`` (``parquet_damage``) to ``{study}/.damaged/``, so
    that the jobs that write them run again: a damaged file keeps its old mtime, and Snakemake would otherwise
    find nothing to do. A per-cell table goes with its whole table directory (an output of the study's integrate
    job, which puts the unchanged cells back from ``.done`` and computes the others); a study table alone.
    Returns ``(damaged file, reason, where it went)`` for each."""
    moved = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for study in studies:
        study_dir = Path(results, study.name)
        targets = [(study_dir / f"{table}.parquet", None) for table in STUDY_TABLES]
        targets += [(study_dir / table / f"{cell}.parquet", study_dir / table)
                    for table in CELL_TABLES for cell in study.cell_ids]
        for path, directory in targets:
            if not path.is_file() or (directory is not None and not directory.is_dir()):
                continue
            reason = parquet_damage(path)
            if reason is None:
                continue
            source = directory or path
            target = study_dir / ".damaged" / f"{source.name}.{stamp}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            moved.append((path, reason, target))
    return moved
