"""Parquet tables: atomic writes (no table is ever readable half-written), provenance metadata, reluflow.load."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reluflow.pipeline import provenance, read_metadata, write_table
from reluflow.pipeline._tables import atomic_path, write_tables_streaming


def _pieces(n: int, fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise KeyboardInterrupt("interrupted mid-write")
        yield pa.table({"trajectory": pa.array(np.arange(i * 10, i * 10 + 10), pa.int64()),
                        "risk": pa.array(np.linspace(0, 1, 10))})


def test_interrupted_write_leaves_no_file(tmp_path):
    out = tmp_path / "trajectories" / "c.parquet"
    with pytest.raises(KeyboardInterrupt):
        write_tables_streaming(_pieces(5, fail_at=3), out, provenance("trajectories"))
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # the temporary file is gone too


def test_interrupted_write_keeps_the_previous_complete_table(tmp_path):
    out = tmp_path / "t.parquet"
    write_tables_streaming(_pieces(2), out, provenance("trajectories"))
    with pytest.raises(KeyboardInterrupt):
        write_tables_streaming(_pieces(5, fail_at=4), out, provenance("trajectories"))
    assert pq.read_table(out).num_rows == 20  # the old, complete file: never a mixture


def test_killed_writer_leaves_no_final_file(tmp_path):
    """SIGKILL a process while it writes (no exception handler runs): only a hidden temporary file remains."""
    out = tmp_path / "curves.parquet"
    script = textwrap.dedent(f"""
        import time, numpy as np, pyarrow as pa
        from reluflow.pipeline._tables import write_tables_streaming
        def pieces():
            for i in range(1000):
                yield pa.table({{"x": pa.array(np.arange(1000.0) + i)}})
                time.sleep(0.01)
        write_tables_streaming(pieces(), {str(out)!r}, {{"reluflow.table": "curves"}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".curves.parquet.") for p in tmp_path.iterdir()):
            assert proc.poll() is None, "the writer finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # some row groups are written
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".") and not p.name.endswith(".parquet") for p in leftovers)
    # a directory reader skips the hidden leftover, and the next write of that table clears it
    assert pq.ParquetDataset(tmp_path).files == []
    write_tables_streaming(_pieces(1), out, provenance("curves"))
    assert [p.name for p in tmp_path.iterdir()] == ["curves.parquet"]


def test_atomic_path_replaces_only_on_success(tmp_path):
    out = tmp_path / "a.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("one")
        assert not out.exists()
    assert out.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("two")
        raise RuntimeError
    assert out.read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_metadata_on_every_table(tmp_path):
    df = pd.DataFrame({"trajectory": np.arange(3, dtype=np.int64), "status": ["a", "b", "c"]})
    meta = provenance("trajectories", study="s", cell="w2-gd", cell_key="12", seed="7",
                      params={"problem": {"x": 1.0}, "init": {"kind": "normal"}, "method": {"kind": "gd"}})
    path = write_table(df, tmp_path / "t.parquet", meta)
    got = read_metadata(path)
    import reluflow

    assert got["reluflow.version"] == reluflow.__version__
    assert got["numpy.version"] == np.__version__ and got["pyarrow.version"] == pa.__version__
    assert got["reluflow.params"] == '{"init":{"kind":"normal"},"method":{"kind":"gd"},"problem":{"x":1}}'
    assert got["reluflow.seed"] == "7" and got["reluflow.cell"] == "w2-gd"
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert back["trajectory"].dtype == np.int64


def test_provenance_records_source_host_time_and_schema_version():
    import datetime
    import socket

    from reluflow.pipeline._tables import TABLE_SCHEMA_VERSION, VOLATILE_META_KEYS, git_commit, source_hash

    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    meta = provenance("cells", study="s")
    after = datetime.datetime.now(datetime.UTC)
    assert meta["reluflow.schema_version"] == str(TABLE_SCHEMA_VERSION) == "2"
    assert re.fullmatch(r"[0-9a-f]{64}", meta["reluflow.source_hash"]) and meta["reluflow.source_hash"] == source_hash()
    assert meta["reluflow.host"] == socket.gethostname()
    created = datetime.datetime.fromisoformat(meta["reluflow.created"])
    assert created.utcoffset() == datetime.timedelta(0) and before <= created <= after
    if git_commit() is not None:  # this test runs from a checkout: whether the package's source has edits
        assert meta["reluflow.git_commit"] == git_commit() and meta["reluflow.git_dirty"] in ("true", "false")
    else:
        assert "reluflow.git_dirty" not in meta
    # two writes of the same thing differ in the volatile keys only
    time.sleep(1.1)
    again = provenance("cells", study="s")
    assert again["reluflow.created"] != meta["reluflow.created"]
    strip = lambda m: {k: v for k, v in m.items() if k not in VOLATILE_META_KEYS}  # noqa: E731
    assert strip(again) == strip(meta)


def test_source_hash_follows_the_source_not_the_checkout(tmp_path):
    """A copy of the package outside any git checkout (as a wheel installs it) has the checkout's source hash, no
    git commit and no git_dirty; one changed byte in one module changes the hash."""
    import shutil

    import reluflow
    from reluflow.pipeline._tables import source_hash

    pkg = Path(reluflow.__file__).resolve().parent
    copy = tmp_path / "site" / "reluflow"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
    probe = ("import json, reluflow; from reluflow.pipeline._tables import provenance; "
             "print(json.dumps([reluflow.__file__, provenance('cells')]))")

    def meta_of(site: Path) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(site)}
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path,
                             check=True)
        where, meta = json.loads(out.stdout)
        assert Path(where).resolve().parent == site / "reluflow"
        return meta

    meta = meta_of(copy.parent)
    assert meta["reluflow.source_hash"] == source_hash()
    assert "reluflow.git_commit" not in meta and "reluflow.git_dirty" not in meta
    module = copy / "_keys.py"
    module.write_text(module.read_text() + "\n")
    assert meta_of(copy.parent)["reluflow.source_hash"] != source_hash()


def test_load_joins_cell_parameters(tmp_path):
    """reluflow.load on a hand-made study directory (the end-to-end test loads a real one)."""
    from reluflow import load

    study = tmp_path / "s"
    cells = pd.DataFrame({
        "cell": ["w2-gd", "w4-gd"], "key": [1, 2], "study": ["s", "s"],
        "problem.network.widths": [[2], [4]], "method.kind": ["gd", "gd"], "method.step_size": [0.1, 0.1],
    })
    write_table(cells, study / "cells.parquet", provenance("cells", study="s"))
    for cid in cells["cell"]:
        t = pd.DataFrame({"cell": cid, "trajectory": np.arange(3, dtype=np.int64), "status": "budget",
                          "risk_final": [0.1, 0.2, 0.3]})
        write_table(t, study / "trajectories" / f"{cid}.parquet", provenance("trajectories"))
        c = pd.DataFrame({"cell": cid, "trajectory": np.repeat(np.arange(3), 2), "checkpoint": np.tile([0, 1], 3),
                          "t": np.tile([0.0, 1.0], 3), "risk": np.ones(6)})
        write_table(c, study / "curves" / f"{cid}.parquet", provenance("curves"))
    tables = load(study)
    assert list(tables.trajectories.columns) == ["cell", "problem.network.widths", "trajectory", "status",
                                                 "risk_final"]
    assert len(tables.trajectories) == 6 and len(tables.curves) == 12
    assert [list(w) for w in tables.trajectories["problem.network.widths"]] == [[2]] * 3 + [[4]] * 3
    assert tables.summary is None
    everything = load(study, params="all", curves=False)
    assert "method.step_size" in everything.trajectories.columns and everything.curves is None
    assert tables.param_columns == ["problem.network.widths", "method.kind", "method.step_size"]
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope")


def test_load_warns_about_missing_cells(tmp_path):
    from reluflow import load

    write_table(pd.DataFrame({"cell": ["a"], "key": [1]}), tmp_path / "cells.parquet", provenance("cells"))
    with pytest.warns(UserWarning, match="no trajectories table yet"):
        t = load(Path(tmp_path), curves=False)
    assert t.trajectories.empty
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*table yet")  # tables not asked for are not looked for
        lean = load(Path(tmp_path), trajectories=False, curves=False)
    assert lean.trajectories is None and lean.curves is None and list(lean.cells["cell"]) == ["a"]


def _study_with_tables(study: Path) -> None:
    """A hand-made study directory with one cell and every table ``reluflow.load`` reads."""
    write_table(pd.DataFrame({"cell": ["a"], "key": [1], "method.kind": ["gd"]}), study / "cells.parquet",
                provenance("cells"))
    write_table(pd.DataFrame({"cell": "a", "trajectory": [0, 1], "status": "budget", "risk_final": [0.1, 0.2]}),
                study / "trajectories" / "a.parquet", provenance("trajectories"))
    write_table(pd.DataFrame({"cell": "a", "trajectory": [0, 0], "checkpoint": [0, 1], "t": [0.0, 1.0],
                              "risk": [1.0, 0.5]}), study / "curves" / "a.parquet", provenance("curves"))
    write_table(pd.DataFrame({"cell": ["a"], "key": [1], "n": [2]}), study / "summary.parquet",
                provenance("summary"))


def _rewrite(path: Path, *, drop: str | None = None, schema_version: str | None = "keep") -> None:
    """Rewrite a table without column ``drop`` and with ``reluflow.schema_version`` replaced (None: removed)."""
    table = pq.read_table(path)
    if drop is not None:
        table = table.drop_columns([drop])
    meta = dict(table.schema.metadata)
    if schema_version is None:
        meta.pop(b"reluflow.schema_version")
    elif schema_version != "keep":
        meta[b"reluflow.schema_version"] = schema_version.encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


@pytest.mark.parametrize(("table", "change", "message"), [
    ("trajectories/a.parquet", {"drop": "status"},
     r"trajectories/a\.parquet has no column\(s\) \['status'\], which every trajectories table has"),
    ("cells.parquet", {"drop": "cell"}, r"cells\.parquet has no column\(s\) \['cell'\], which every cells table"),
    ("curves/a.parquet", {"drop": "t"}, r"curves/a\.parquet has no column\(s\) \['t'\]"),
    ("summary.parquet", {"drop": "n"}, r"summary\.parquet has no column\(s\) \['n'\]"),
    ("cells.parquet", {"schema_version": None},
     r"cells\.parquet has no reluflow\.schema_version metadata, so it was written by a reluflow older than table "
     r"schema version 2 \(version 1 had no such key\)"),
    ("trajectories/a.parquet", {"schema_version": "1"},
     r"trajectories/a\.parquet has reluflow\.schema_version = '1' but this reluflow reads table schema version 2"),
    ("summary.parquet", {"schema_version": "3"}, r"summary\.parquet has reluflow\.schema_version = '3'"),
])
def test_load_rejects_tables_of_another_schema(tmp_path, table, change, message):
    from reluflow import __version__, load

    study = tmp_path / "s"
    _study_with_tables(study)
    full = load(study)
    assert len(full.trajectories) == 2 and len(full.curves) == 2 and len(full.summary) == 1
    _rewrite(study / table, **change)
    with pytest.raises(ValueError, match=message) as err:
        load(study)
    assert str(err.value).endswith(f": rerun the study with this reluflow version ({__version__})")
    assert str(err.value).count(". ") == 0  # one sentence


def test_load_rejects_a_table_of_another_kind(tmp_path):
    from reluflow import load

    study = tmp_path / "s"
    _study_with_tables(study)
    write_table(pq.read_table(study / "trajectories" / "a.parquet"), study / "curves" / "a.parquet",
                provenance("trajectories"))
    with pytest.raises(ValueError, match=r"curves/a\.parquet is a 'trajectories' table \(reluflow\.table\) where "
                                         r"a 'curves' table was expected"):
        load(study)
    assert load(study, curves=False).curves is None  # a table not asked for is not checked
