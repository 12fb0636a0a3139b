"""Data files are part of the key (docs/running.md, "Data files"): an empirical data set's content hash enters the
cell key and the tables' metadata, so changed data makes a new cell and a rerun computes it; a relative path starts
from the directory of the config file that defines the study, whatever the working directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from reluflow.config import ConfigError, Execution, Study, find_schema, load_config_files, plan_config, study_origins
from reluflow.pipeline import write_integrate
from reluflow.problem import Problem, file_sha256

CONFIG = """\
studies:
  data:
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: empirical, path: points.npy}
      target: {kind: affine, slope: 1.0, intercept: 0.0}
    method: {kind: gd, step_size: 0.05, n_steps: 20, n_checkpoints: 3, refine: false}
    grid:
      problem.network.widths: [[2]]
    n_trajectories: 4
    seed: 3
"""


def _write_project(root: Path, points: np.ndarray) -> Path:
    """A config in ``root/project`` whose study reads ``points.npy`` next to it."""
    project = root / "project"
    project.mkdir(parents=True, exist_ok=True)
    np.save(project / "points.npy", points)
    (project / "config.yaml").write_text(CONFIG)
    return project / "config.yaml"


def _plan(config_file: Path):
    return plan_config(load_config_files([config_file]), find_schema(), origins=study_origins([config_file]))


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a working directory that is not the config file's."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_relative_data_path_starts_from_the_config_file(tmp_path, elsewhere):
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    cell = _plan(config_file).cell("data", "w2")
    resolved = Path(cell.data_files["points.npy"]["resolved"])
    assert resolved.resolve() == (config_file.parent / "points.npy").resolve()
    assert cell.problem["measure"]["path"] == "points.npy"  # kept as written: the key does not depend on where
    assert cell.problem["measure"]["sha256"] == file_sha256(config_file.parent / "points.npy")
    assert cell.problem_object.measure.points.shape == (7, 1)
    # a stage rebuilds the study from its JSON in another process: same cells, data found, nothing hashed again
    study = _plan(config_file).study("data")
    back = Study.from_json(study.to_json())
    assert back.cells["w2"] == cell and back.data_files == study.data_files
    assert back.cells["w2"].problem_object.measure.points.shape == (7, 1)


def test_missing_data_file_is_refused_naming_the_key(tmp_path, elsewhere):
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    (config_file.parent / "points.npy").unlink()
    with pytest.raises(ConfigError, match=r"problem\.measure\.path = 'points.npy' is not allowed.*config file's"):
        _plan(config_file)


def test_changed_data_changes_the_cell_key(tmp_path, elsewhere):
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    before = _plan(config_file).cell("data", "w2")
    np.save(config_file.parent / "points.npy", np.linspace(0, 1, 9)[:, None])
    after = _plan(config_file).cell("data", "w2")
    assert after.id == before.id and after.key != before.key
    assert after.problem["measure"]["sha256"] != before.problem["measure"]["sha256"]


def test_a_pinned_hash_must_match_the_file(tmp_path, elsewhere):
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    digest = file_sha256(config_file.parent / "points.npy")
    config_file.write_text(CONFIG.replace("path: points.npy}", f"path: points.npy, sha256: '{digest}'}}"))
    assert _plan(config_file).cell("data", "w2").problem["measure"]["sha256"] == digest
    config_file.write_text(CONFIG.replace("path: points.npy}", f"path: points.npy, sha256: '{'0' * 64}'}}"))
    with pytest.raises(ConfigError, match=r"problem\.measure\.sha256 = '0+' is not allowed: the file 'points.npy'"):
        _plan(config_file)


def test_data_changed_after_validation_is_refused_when_read(tmp_path, elsewhere):
    """A job that reads the data after it changed (the plan pinned the old content) stops with one sentence."""
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    cell = _plan(config_file).cell("data", "w2")
    np.save(config_file.parent / "points.npy", np.linspace(0, 1, 9)[:, None])
    with pytest.raises(ValueError, match=r"measure.path = .*the data changed since the config was validated"):
        Problem.from_dict({**cell.problem, "measure": {**cell.problem["measure"],
                                                        "path": cell.data_files["points.npy"]["resolved"]}})


def test_changed_data_is_computed_again_and_recorded(tmp_path, elsewhere):
    """The integrate stage reuses a cell whose data is unchanged and computes it again once the data changes; the
    tables record the data's hash (in the parameters) and where it was read (``reluflow.data_paths``)."""
    config_file = _write_project(tmp_path, np.linspace(0, 1, 7)[:, None])
    results = tmp_path / "results"
    execution = Execution.from_mapping(workers=1, shard_size=2, progress_interval=1e9)

    def run() -> tuple[dict[str, int], dict[bytes, bytes]]:
        study = _plan(config_file).study("data")
        counts = write_integrate(list(study.cells.values()), results, execution)
        return counts, pq.read_schema(results / "trajectories" / "w2.parquet").metadata

    counts, meta = run()
    assert counts["shards_computed"] == 2
    params = json.loads(meta[b"reluflow.params"])
    assert params["problem"]["measure"]["sha256"] == file_sha256(config_file.parent / "points.npy")
    paths = json.loads(meta[b"reluflow.data_paths"])
    assert Path(paths["points.npy"]).resolve() == (config_file.parent / "points.npy").resolve()
    assert run()[0]["cells_reused"] == 1  # unchanged data: nothing computed
    np.save(config_file.parent / "points.npy", np.linspace(0, 1, 9)[:, None])
    counts, meta = run()
    assert counts == {"cells_reused": 0, "shards_reused": 0, "shards_computed": 2}
    assert json.loads(meta[b"reluflow.params"])["problem"]["measure"]["sha256"] == file_sha256(
        config_file.parent / "points.npy")
    assert os.getcwd() == str(elsewhere)
