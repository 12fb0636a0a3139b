# Paths, settings and input functions shared by the rules (no rules here).
from reluflow import __version__ as RELUFLOW_VERSION  # a param of every job: a new release reruns the
from reluflow.pipeline import FIGURES  # studies (changes within a version are not tracked: use --forcerun)

RESULTS = "results"
FIGURE_FORMATS = ("png", "pdf")
# Local workers per integrate job (its Snakemake threads): execution.workers, else every core given with
# --cores. An existing scheduler or a jobqueue cluster does the work elsewhere: the driver needs one thread.
INTEGRATE_THREADS = (
    (PLAN.execution["workers"] or workflow.cores or 1) if PLAN.execution["scheduler"] == "local" else 1
)


def cell_json(wildcards):
    """The cell's parameters as JSON: a param, so changing them reruns exactly this cell's jobs."""
    return PLAN.cell(wildcards.study, wildcards.cell).to_json()


def study_json(wildcards):
    return PLAN.study(wildcards.study).to_json()


def study_tables(table):
    """Input function: one table per cell of the study (trajectories or curves)."""

    def files(wildcards):
        ids = PLAN.study(wildcards.study).cell_ids
        return [f"{RESULTS}/{wildcards.study}/{table}/{cell}.parquet" for cell in ids]

    return files


def figure_files(study):
    return [f"{RESULTS}/{study}/figures/{name}.{ext}" for name in FIGURES for ext in FIGURE_FORMATS]


def study_targets(studies):
    """The default targets of each study: its cells and summary tables and its figures."""
    targets = []
    for study in studies:
        targets += [f"{RESULTS}/{study}/cells.parquet", f"{RESULTS}/{study}/summary.parquet"]
        targets += figure_files(study)
    return targets
