# Paths, settings and input functions shared by the rules (no rules here).
# RELUFLOW_VERSION is a param of every job: a new release reruns the studies (changes within a version are not
# tracked: use --forcerun)
from reluflow import __version__ as RELUFLOW_VERSION
from reluflow.pipeline import FIGURE_TABLES, FIGURES, figure_tables
from reluflow.pipeline import SCHEDULER_FILE_ENV, SharedCluster, cancel_pending_timers
from snakemake.exceptions import WorkflowError

RESULTS = "results"
FIGURE_FORMATS = ("png", "pdf")


def cores_given():
    """The cores given with --cores (or --jobs), or None: commands that run no job (--unlock, --report, ...) need
    none, and workflow.cores raises an error when there are none."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


LOCAL_WORKERS = PLAN.execution["workers"] or cores_given() or 1

# scheduler 'local' with jobs running on this machine: one LocalCluster for the whole run (started by onstart when
# the run has integrate jobs to run, stopped when it ends), shared by every integrate job through a scheduler
# file. Jobs that Snakemake runs elsewhere (SLURM executor: the Snakefile is read again there, in remote mode)
# start their own, and so do integrate jobs when onstart did not run (--no-hooks): the jobs learn of the file
# from onstart only, as it starts the cluster.
os.environ.pop(SCHEDULER_FILE_ENV, None)
SHARED_CLUSTER = None
if (PLAN.execution["scheduler"] == "local" and PLAN.execution["shared_cluster"] and workflow.local_exec
        and not workflow.remote_exec and not workflow.subprocess_exec):
    SHARED_CLUSTER = SharedCluster(Path(".snakemake", "reluflow", f"dask-scheduler-{os.getpid()}.json"),
                                   workers=LOCAL_WORKERS, log_path=Path("logs", "dask-cluster.log"))

# An integrate job's Snakemake threads: the workers of its own LocalCluster (execution.workers, else every
# core given with --cores). A client of the run's shared cluster, of an existing scheduler or of a jobqueue
# cluster only submits and joins tables, but still counts as one core: with N cores, N clients keep the N
# shared workers busy, and --cores stays a true bound on what the run uses on this machine.
INTEGRATE_THREADS = LOCAL_WORKERS if PLAN.execution["scheduler"] == "local" and SHARED_CLUSTER is None else 1


def integrate_jobs_to_run():
    """Whether this run may run an integrate job: True, False, or None where Snakemake does not say."""
    try:
        dag = workflow.dag
        # jobs a checkpoint adds are not in the DAG yet
        return any(dag.checkpoint_jobs) or any(job.rule.name == "integrate" for job in dag.needrun_jobs())
    except Exception:  # workflow.dag is Snakemake's, not a documented API: when in doubt, start the cluster
        return None


onstart:
    # A run that only redraws figures or redoes the summary needs no workers (2-3 s of CPU to start them)
    if SHARED_CLUSTER is not None and integrate_jobs_to_run() is not False:
        SHARED_CLUSTER.start()
        os.environ[SCHEDULER_FILE_ENV] = str(SHARED_CLUSTER.scheduler_file)


# Both end the run: Snakemake's rate-limiter timers (1 s, not daemons) would otherwise hold its exit up to 1 s
onsuccess:
    if SHARED_CLUSTER is not None:
        SHARED_CLUSTER.stop()
    cancel_pending_timers()


onerror:
    if SHARED_CLUSTER is not None:
        SHARED_CLUSTER.stop()
    cancel_pending_timers()


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


# The figures drawn from the per-cell tables alone, and those drawn from the summary (rules cell_figures and
# summary_figures)
FIGURES_FROM_CELLS = [name for name in FIGURES if "summary" not in FIGURE_TABLES[name]]
FIGURES_FROM_SUMMARY = [name for name in FIGURES if "summary" in FIGURE_TABLES[name]]


def figure_inputs(names):
    """A figure rule's named inputs besides cells.parquet: by name, the tables FIGURE_TABLES gives for the figures
    ``names`` (``summary``: its file; per-cell tables: an input function for one file per cell)."""
    return {table: f"{RESULTS}/{{study}}/summary.parquet" if table == "summary" else study_tables(table)
            for table in figure_tables(names)}


def figure_files(study, names=FIGURES):
    return [f"{RESULTS}/{study}/figures/{name}.{ext}" for name in names for ext in FIGURE_FORMATS]


def study_targets(studies):
    """The default targets of each study: its cells, summary and best-of-K tables and its figures."""
    targets = []
    for study in studies:
        targets += [f"{RESULTS}/{study}/cells.parquet", f"{RESULTS}/{study}/summary.parquet",
                    f"{RESULTS}/{study}/best_of_k.parquet"]
        targets += figure_files(study)
    return targets
