"""The catalogue report: one self-contained HTML page (figures embedded) showing, for each study, its claim and
source, its verdict with the numbers behind it, its figures, and for a regenerated published table the published
and regenerated rates side by side."""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._version import __version__
from ..config import Study
from ._tables import atomic_path

__all__ = ["write_report"]

log = logging.getLogger("reluflow.pipeline")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem; margin: 2rem auto;
       padding: 0 1rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7rem; } h2 { font-size: 1.3rem; margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.badge { display: inline-block; padding: 0.1rem 0.6rem; border-radius: 0.8rem; font-weight: 600; color: white; }
.pass { background: #1a7f37; } .fail { background: #c62828; } .inconclusive { background: #8a6d00; }
.missing { background: #6e6e73; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; } th { background: #f4f4f6; }
td.text, th.text { text-align: left; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; }
figure img { max-width: 34rem; border: 1px solid #eee; } figcaption { font-size: 0.85rem; color: #555; }
.claim { background: #f7f7fa; padding: 0.6rem 1rem; border-left: 4px solid #4b6cb7; }
nav li { margin: 0.15rem 0; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return _e(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _verdict_of(study_dir: Path) -> dict[str, Any] | None:
    path = study_dir / "verdict.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _rows_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], headers: Sequence[str]) -> str:
    head = "".join(f"<th{' class=text' if c in ('cell', 'label') else ''}>{_e(h)}</th>"
                   for c, h in zip(columns, headers, strict=True))
    body = ""
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if c == "families":
                value = ", ".join((f"{f['risk']:.3g}×{f['count']}" + _certified(f)) if f["risk"] is not None
                                  else f"blew up×{f['count']}" for f in value or [])
                cells.append(f"<td class=text>{_e(value)}</td>")
            elif c in ("cell", "label"):
                cells.append(f"<td class=text>{_e(value)}</td>")
            else:
                cells.append(f"<td>{_num(value)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _certified(family: dict[str, Any]) -> str:
    """A family's certificate in the families column: `` (min)``, `` (saddle)``, `` (not certified: reason)`` or
    nothing where the study did not certify its families."""
    cls = family.get("certified_class")
    if cls is None:
        return ""
    return f" ({cls})" if cls != "none" else f" (not certified: {family.get('certified_reason') or 'none'})"


def _evidence_html(verdict: dict[str, Any]) -> str:
    evidence = verdict.get("evidence") or {}
    rows = evidence.get("cells") or []
    scalars = {k: v for k, v in evidence.items() if k != "cells" and not isinstance(v, dict | list)}
    out = ""
    if scalars:
        out += "<p>" + "; ".join(f"{_e(k)} = {_num(v)}" for k, v in scalars.items()) + "</p>"
    if verdict.get("rule") == "rates_agree_with_published" and rows:
        columns = ["cell", "label", "n", "published", "estimate", "low", "high", "allowed", "agrees", "families"]
        headers = ["cell", "setting", "runs", "published rate", "regenerated rate", "95 % low", "95 % high",
                   "allowed |difference|", "agrees",
                   "spurious minima found (risk × count; certified class where the study certifies them)"]
        out += _rows_table(rows, columns, headers)
    elif rows:
        columns = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], dict | list)))
        out += _rows_table(rows, columns, columns)
    return out


def _figure_html(path: Path, name: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(name.replace('_', ' '))} (<code>{_e(path.name)}</code>; PDF alongside)</figcaption>"
            "</figure>")


def write_report(studies: Sequence[Study], results: str | Path, output: str | Path) -> None:
    """``output``: one HTML page for ``studies`` (their tables under ``results``): each study's claim, verdict and
    evidence, and its figures (PNG, embedded). A study without a verdict yet says so; nothing is left out."""
    results = Path(results)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>reluflow catalogue</title>"
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>reluflow: claims checked numerically</h1><p>reluflow {_e(__version__)}; {len(studies)} "
             "studies. Each verdict is computed from the study's tables (<code>results/STUDY/verdict.json</code>); "
             "intervals are 95 % Wilson intervals.</p>"]
    toc = []
    for study in studies:
        verdict = _verdict_of(results / study.name)
        status = verdict["status"] if verdict else "missing"
        claim = study.spec.get("claim") or {}
        toc.append(f'<li><a href="#{_e(study.name)}">{_e(claim.get("id", ""))} {_e(study.name)}</a> '
                   f'<span class="badge {status}">{_e(status)}</span></li>')
    parts.append("<nav><ul>" + "".join(toc) + "</ul></nav>")
    for study in studies:
        study_dir = results / study.name
        verdict = _verdict_of(study_dir)
        claim = study.spec.get("claim") or {}
        status = verdict["status"] if verdict else "missing"
        parts.append(f'<section id="{_e(study.name)}"><h2>{_e(claim.get("id", ""))} — {_e(study.name)} '
                     f'<span class="badge {status}">{_e(status)}</span></h2>')
        if claim:
            parts.append(f'<div class=claim><p><b>Claim.</b> {_e(claim.get("statement"))}</p>'
                         f'<p><b>Source.</b> {_e(claim.get("source"))}</p>'
                         f'<p><b>Prediction here.</b> {_e(claim.get("prediction"))}</p></div>')
        parts.append(f"<p><b>Setting.</b> {_e(study.spec.get('description'))} — {len(study.cells)} cells × "
                     f"{study.n_trajectories} trajectories, seed {study.seed}.</p>")
        if verdict:
            parts.append(f"<p><b>Verdict ({_e(verdict['rule'])}).</b> {_e(verdict['summary'])}</p>")
            parts.append(_evidence_html(verdict))
        else:
            parts.append("<p><b>Verdict.</b> not computed yet (run the study).</p>")
        for name in study.figures:
            png = study_dir / "figures" / f"{name}.png"
            if png.is_file():
                parts.append(_figure_html(png, name))
        parts.append("</section>")
    parts.append("</body></html>")
    with atomic_path(output) as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    log.info("report: %d studies -> %s", len(studies), output)
