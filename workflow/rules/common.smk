# Paths, settings and input functions shared by the rules (no rules here).
# RELUFLOW_VERSION is a param of every job: a new release reruns the studies (changes within a version are not
# tracked: use --forcerun)
import json
import re

from reluflow import __version__ as RELUFLOW_VERSION
from reluflow.config import EXTRA_FIGURES, FIGURE_TABLES, FIGURES, figure_tables, integrate_memory_mb
from snakemake.exceptions import WorkflowError

RESULTS = "results"
# the studies that state a claim, in the order of their claim ids (C1, C2, ..., C10, C11, SS2018)
CATALOGUE = sorted((name for name, study in PLAN.studies.items() if "claim" in study.spec),
                   key=lambda name: [int(x) if x.isdigit() else x
                                     for x in re.split(r"(\d+)", PLAN.study(name).spec["claim"]["id"])])
FIGURE_FORMATS = ("png", "pdf")


def cores_given():
    """The cores given with --cores (or --jobs), or None: commands that run no job (--unlock, --report, ...) need
    none, and workflow.cores raises an error when there are none."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


LOCAL_WORKERS = PLAN.execution.n_workers(cores_given())

# The integrate job's Snakemake threads: the workers of its own LocalCluster (execution.workers, else every core
# given with --cores). A client of an existing scheduler or of a jobqueue cluster only submits and joins tables,
# but still counts as one core, so --cores stays a true bound on what the run uses on this machine.
INTEGRATE_THREADS = LOCAL_WORKERS if PLAN.execution.scheduler == "local" else 1


def integrate_mem_mb(wildcards, threads):
    """The integrate job's memory (MB): its own process and, for a local cluster, its `threads` workers, each
    with its largest shard (reluflow.config.integrate_memory_mb, from the cells' memory estimates)."""
    study = PLAN.study(wildcards.study)
    return integrate_memory_mb(study.cells.values(), PLAN.execution, threads)


def study_json(wildcards):
    return PLAN.study(wildcards.study).to_json()


# The figures drawn from the per-cell tables alone, and those drawn from the summary (rules cell_figures and
# aggregate, which writes the summary)
FIGURES_FROM_CELLS = [name for name in FIGURES if "summary" not in FIGURE_TABLES[name]]
FIGURES_FROM_SUMMARY = [name for name in FIGURES if "summary" in FIGURE_TABLES[name]]


def figure_inputs(names):
    """A figure rule's named inputs besides cells.parquet: by name, the tables FIGURE_TABLES gives for the figures
    ``names`` (``summary``: its file; per-cell tables: their directory, an output of the study's integrate job)."""
    return {table: f"{RESULTS}/{{study}}/summary.parquet" if table == "summary" else f"{RESULTS}/{{study}}/{table}"
            for table in figure_tables(names)}


def figure_files(study, names=None):
    """The figure files of ``study`` (a name, or "{study}" in a rule): ``names``, else every figure the study
    draws (the four of every study and those its ``figures:`` names)."""
    names = PLAN.study(study).figures if names is None else names
    return [f"{RESULTS}/{study}/figures/{name}.{ext}" for name in names for ext in FIGURE_FORMATS]


def figure_outputs(names):
    """A figure rule's outputs: each figure's files, its PNG in Snakemake's report (`snakemake --report`) with the
    caption workflow/report/{name}.rst, under its study's category."""
    return [report(path, caption=f"../report/{name}.rst", category=report_category, subcategory="figures",
                   labels={"figure": name.replace("_", " ")}) if path.endswith(".png") else path
            for name in names for path in figure_files("{study}", [name])]


def studies_drawing(name):
    """The studies whose ``figures:`` name the extra figure ``name``: the only ones its rule matches."""
    return [s for s in PLAN.studies if name in PLAN.study(s).figures]


# --------------------------------------------------------------------------------------- snakemake --report
def report_category(wildcards):
    """A study's category in the report: its claim id and name (`C4 c4_unbounded_one_neuron`), or its name."""
    claim = PLAN.study(wildcards.study).spec.get("claim") or {}
    return f"{claim['id']} {wildcards.study}" if claim else wildcards.study


def _rst_text(text):
    # a claim's text is shown as text: |x|, *, _ and backquotes would otherwise be reStructuredText markup
    return re.sub(r"([\\`*_|<>\[\]])", r"\\\1", " ".join(str(text).split()))


def study_about(wildcards):
    """One paragraph for the captions of a study's outputs: its claim (or description), cells and trajectories."""
    study = PLAN.study(wildcards.study)
    claim = study.spec.get("claim") or {}
    lead = (f"{claim['id']}: {claim['statement']}" + (f" ({claim['source']})" if claim.get("source") else "")
            if claim else study.spec.get("description", ""))
    size = f"{len(study.cells)} cells x {study.n_trajectories} trajectories, seed {study.seed}."
    return _rst_text(f"{lead}. {size}" if lead else size)


def verdict_labels(wildcards, output):
    """The verdict's status as a label of its entry in the report (read when the report is made)."""
    try:
        with open(output.verdict) as f:
            return {"status": str(json.load(f).get("status", "missing"))}
    except (OSError, ValueError):
        return {"status": "missing"}


def study_targets(studies):
    """The default targets of each study: its cells, summary and best-of-K tables and its figures."""
    targets = []
    for study in studies:
        targets += [f"{RESULTS}/{study}/cells.parquet", f"{RESULTS}/{study}/summary.parquet",
                    f"{RESULTS}/{study}/best_of_k.parquet"]
        targets += figure_files(study)
        if "verdict" in PLAN.study(study).spec:
            targets.append(f"{RESULTS}/{study}/verdict.json")
    return targets
