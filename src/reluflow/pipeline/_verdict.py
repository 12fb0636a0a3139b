"""The verdict stage: a study's prediction checked on its tables (``reluflow.analysis.evaluate_verdict``), written to
``results/{study}/verdict.json`` with the claim, the numbers behind the verdict and the provenance."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from .._load import load
from ..analysis import VERDICTS, check_verdict_spec, evaluate_verdict
from ..config import Study
from ._tables import atomic_path, provenance

__all__ = ["VERDICT_FILE", "write_verdict"]

log = logging.getLogger("reluflow.pipeline")

VERDICT_FILE = "verdict.json"


def write_verdict(study: Study, study_dir: str | Path, output: str | Path) -> dict[str, Any]:
    """Evaluate the study's ``verdict`` on its tables in ``study_dir`` and write ``output`` (JSON); returns what was
    written. A failing verdict is written like a passing one, with its evidence: the stage itself succeeds."""
    spec = study.spec["verdict"]
    rule = VERDICTS[spec["rule"]]
    needed = rule.tables_for(check_verdict_spec(spec))
    tables = load(study_dir, params="all", trajectories="trajectories" in needed, curves="curves" in needed,
                  summary="summary" in needed, best_of_k="best_of_k" in needed, final="final" in needed)
    verdict = evaluate_verdict(spec, tables)
    meta = provenance("verdict", study=study.name, seed=str(study.seed))
    record = {
        "study": study.name,
        "claim": study.spec.get("claim"),
        "description": study.spec.get("description"),
        **verdict.to_dict(),
        "params": {k: v for k, v in spec.items() if k != "rule"},
        "rule_description": rule.description,
        "n_cells": len(study.cells),
        "n_trajectories_per_cell": study.n_trajectories,
        "provenance": {k.removeprefix("reluflow."): v for k, v in meta.items()},
    }
    with atomic_path(output) as tmp:
        Path(tmp).write_text(json.dumps(_finite(record), indent=2, allow_nan=False) + "\n")
    log.info("verdict of %s: %s: %s", study.name, verdict.status.upper(), verdict.summary)
    return record


def _finite(value: Any) -> Any:
    """``value`` as strict JSON data: numpy scalars and arrays as Python numbers and lists, NaN and infinities as
    null (a browser's JSON.parse refuses them)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
