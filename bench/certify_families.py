"""Certify one endpoint of every family of spurious minima an SS2018 study found:
``python -m bench.certify_families [RESULTS_DIR] [--cells CELL ...] [--out FILE]`` (default
``results/ss2018_full``, every cell: run ``snakemake --cores 2 results/ss2018_full/verdict.json`` first).

What the verdict option ``certify_families: true`` does (``rates_agree_with_published``; docs/studies.md), run cell
by cell on a finished table, timed: a family is a distinct final risk (three significant digits) among a cell's
spurious runs (final L >= 2e-3), and its first run (lowest trajectory id) goes through
``analysis.certify_critical_points`` (a Krawczyk proof that a critical point lies in a box around the endpoint, and
a rigorous bound on the Hessian's smallest eigenvalue over that box: docs/analysis.md, "Certified critical points").
Safran & Shamir certified one representative per family by hand.

Per cell, one JSON line: the families, how many certified ``min`` / ``saddle`` / ``none`` (with the reasons), the
largest certified radius, the smallest lower eigenvalue bound, the seconds the verdict took (one process, BLAS on
one thread) and, for each family not certified, its risk, size, representative, status and the certificate's
sentence; then a line for the whole study.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import time
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import reluflow  # noqa: E402
from reluflow.analysis import evaluate_verdict  # noqa: E402

from ._timing import report_line  # noqa: E402

# the study's verdict with certificates; no published rates: the families are what is asked for here
SPEC = {"rule": "rates_agree_with_published", "threshold": 2.0e-3, "published": {}, "certify_families": True}


def certify_cell(tables: Any, label: str) -> dict:
    """One cell's families in ``tables`` (``reluflow.load``'s, with ``final``), each representative certified by the
    verdict rule."""
    def one(frame):
        return frame.loc[frame["cell"].astype(str) == label]

    cell_tables = dataclasses.replace(tables, cells=one(tables.cells), trajectories=one(tables.trajectories),
                                      final=one(tables.final))
    t0 = time.process_time()
    families = evaluate_verdict(SPEC, cell_tables).evidence["cells"][0]["families"]
    seconds = time.process_time() - t0
    status = cell_tables.trajectories.set_index("trajectory")["status"]
    certified = [f for f in families if "certified_class" in f]
    classes = collections.Counter(f["certified_class"] for f in certified)
    proved = [f for f in certified if not f["certified_reason"]]
    return {"cell": label, "families": len(certified), "min": classes["min"], "saddle": classes["saddle"],
            "none": classes["none"],
            "reasons": dict(collections.Counter(f["certified_reason"] for f in certified if f["certified_reason"])),
            "largest_radius": max((f["certified_radius"] for f in proved), default=None),
            "smallest_eig_low": min((f["certified_eig_low"] for f in proved), default=None),
            "cpu_seconds": round(seconds, 2),
            "not_certified": [{"risk": f["risk"], "trajectory": f["trajectory"], "runs": f["count"],
                               "status": str(status.loc[f["trajectory"]]), "detail": f["certified_detail"]}
                              for f in certified if f["certified_reason"]]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?", default="results/ss2018_full")
    ap.add_argument("--cells", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    tables = reluflow.load(args.results, final=True, params="all", curves=False, summary=False, best_of_k=False)
    labels = args.cells or [str(c) for c in tables.cells["cell"]]
    rows = []
    for label in labels:
        row = certify_cell(tables, label)
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
