"""Certify one endpoint of every family of spurious minima an SS2018 study found:
``python -m bench.certify_families [RESULTS_DIR] [--cells CELL ...] [--out FILE]`` (default
``results/ss2018_full``, every cell: run ``snakemake --cores 2 results/ss2018_full/verdict.json`` first).

A family is a distinct final risk (three significant digits, as the verdict's ``families`` list groups them) among
a cell's spurious runs (final L >= 2e-3). Safran & Shamir certified one representative per family by hand; here
each family's first trajectory (lowest id) is put through ``analysis.certify_critical_points`` (a Krawczyk proof
that a critical point lies in a box around the endpoint, and a rigorous bound on the Hessian's smallest eigenvalue
over that box: docs/analysis.md, "Certified critical points").

Per cell, one JSON line: the families, how many certified ``min`` / ``saddle`` / ``none`` (with the reasons), the
largest certified radius, the smallest lower eigenvalue bound, the seconds the certificates took (one process,
BLAS on one thread) and, for each family not certified, its risk, size, representative, status and the
certificate's sentence; then a line for the whole study.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import reluflow  # noqa: E402
from reluflow.analysis import certify_critical_points  # noqa: E402

from ._timing import report_line  # noqa: E402
from .certstop_validate import cell  # noqa: E402

THRESHOLD = 2.0e-3  # a run is spurious when its final risk is at least this (docs/science.md, section 8)


def family_representatives(trajectories, threshold: float = THRESHOLD) -> dict[float, int]:
    """``{family risk: first trajectory id}`` over the spurious runs of one cell's ``trajectories``."""
    spurious = trajectories[~(trajectories["risk_final"] < threshold)].sort_values("trajectory")
    out: dict[float, int] = {}
    for tid, risk in zip(spurious["trajectory"], spurious["risk_final"], strict=True):
        if np.isfinite(risk):
            out.setdefault(float(f"{risk:.3g}"), int(tid))
    return out


def certify_cell(label: str, trajectories, final) -> dict:
    """One cell's families, each representative certified."""
    problem = reluflow.Problem.from_dict(cell(label))
    reps = family_representatives(trajectories)
    theta = final.set_index("trajectory")["theta_final"]
    status = trajectories.set_index("trajectory")["status"]
    spurious = trajectories["risk_final"][~(trajectories["risk_final"] < THRESHOLD)]
    counts = collections.Counter(float(f"{r:.3g}") for r in spurious if np.isfinite(r))
    classes: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter()
    radii, eig_low, seconds, refused = [], [], 0.0, []
    for risk, tid in sorted(reps.items()):
        t0 = time.process_time()
        out = certify_critical_points(problem, np.asarray(theta.loc[tid], dtype=float)[None])
        seconds += time.process_time() - t0
        classes[str(out["certified_class"][0])] += 1
        if out["certified_reason"][0]:
            reasons[str(out["certified_reason"][0])] += 1
            refused.append({"risk": risk, "trajectory": tid, "runs": int(counts[risk]),
                            "status": str(status.loc[tid]), "detail": str(out["certified_detail"][0])})
        else:
            radii.append(float(out["certified_radius"][0]))
            eig_low.append(float(out["certified_eig_low"][0]))
    return {"cell": label, "families": len(reps), "min": classes["min"], "saddle": classes["saddle"],
            "none": classes["none"], "reasons": dict(reasons),
            "largest_radius": max(radii) if radii else None, "smallest_eig_low": min(eig_low) if eig_low else None,
            "cpu_seconds": round(seconds, 2), "not_certified": refused}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default="results/ss2018_full")
    ap.add_argument("--cells", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tables = reluflow.load(args.results, final=True)
    traj, final = tables.trajectories, tables.final
    labels = args.cells or [str(c) for c in tables.cells["cell"]]
    rows = []
    for label in labels:
        row = certify_cell(label, traj[traj["cell"].astype(str) == label], final[final["cell"].astype(str) == label])
        rows.append(row)
        report_line(row, args.out)
    radii = [r["largest_radius"] for r in rows if r["largest_radius"] is not None]
    eigs = [r["smallest_eig_low"] for r in rows if r["smallest_eig_low"] is not None]
    report_line({"study": args.results, "cells": len(rows), "families": sum(r["families"] for r in rows),
                 "min": sum(r["min"] for r in rows), "saddle": sum(r["saddle"] for r in rows),
                 "none": sum(r["none"] for r in rows), "largest_radius": max(radii) if radii else None,
                 "smallest_eig_low": min(eigs) if eigs else None,
                 "cpu_seconds": round(sum(r["cpu_seconds"] for r in rows), 1)}, args.out)


if __name__ == "__main__":
    main()
