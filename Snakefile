# reluflow workflow (index). Stages: workflow/rules/*.smk; config: config.yaml, checked against the schema the
# package ships (src/reluflow/config/config.schema.yaml); the rules are thin adapters over the installed
# package's CLI (`python -m reluflow STAGE`). Run: `snakemake --cores 2` (docs/running.md for clusters).
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

from reluflow.config import ConfigError, check_config_files, find_schema, plan_from_snakemake, set_aside_damaged_tables

min_version("8.0")

# A bad config stops Snakemake with one message naming the study, key and value (sys.exit: Snakemake would
# print a traceback through this file and reluflow for an exception).
try:
    # before Snakemake's own loader reads it: that one expands YAML aliases as it merges the file into `config`
    # (an anchor bomb takes minutes and gigabytes); ours refuses one at once (docs/running.md, "Limits")
    check_config_files([p for p in ["config.yaml"] if os.path.exists(p)])
except ConfigError as exc:
    sys.exit(f"error: {exc}")


configfile: "config.yaml"


# Everything is validated before any job runs: the JSON schema, then the package's own checks on every cell
# (Problem.from_dict, method/init validation).
try:
    PLAN = plan_from_snakemake(
        config,
        workflow.configfiles,
        find_schema(),  # the installed package's, the one `reluflow check` uses
        command_line=workflow.config_settings.config,  # --config values, to give nested ones their types back
    )
except ConfigError as exc:
    sys.exit(f"error: {exc}")

# Execution settings reach the integrate jobs through the environment rather than params: they never change
# results, so changing them must not rerun finished jobs (params are a rerun trigger).
os.environ["RELUFLOW_EXECUTION"] = PLAN.execution.to_json()
# Jobs run the reluflow this Snakefile imports, even from a virtual environment that is not activated.
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])


envvars:
    "RELUFLOW_EXECUTION",
    "PATH",


# Study names and cell ids are single path components (see the schema and reluflow.pipeline's cell ids).
wildcard_constraints:
    study=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    cell=r"[A-Za-z0-9][A-Za-z0-9_.-]*",


# `snakemake --report report.html`: this page, then each study's figures and verdict with their captions
# (workflow/report/), one category per study
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/report.smk"


# A table damaged on disk (truncated, overwritten) keeps its old mtime, so Snakemake would find nothing to do and
# every reader would fail: set it aside (results/{study}/.damaged/) so that the job that writes it runs again.
for damaged, reason, moved_to in set_aside_damaged_tables(RESULTS, [PLAN.study(s) for s in PLAN.run]):
    print(f"reluflow: {damaged} is damaged ({reason}): set aside as {moved_to}; it will be rebuilt", file=sys.stderr)


rule all:
    input:
        study_targets(PLAN.run),
    default_target: True


# Every study that states a claim (the catalogue, workflow/studies/), its verdict and figures:
# `snakemake --cores 2 catalogue`.
rule catalogue:
    input:
        study_targets(CATALOGUE),
        f"{RESULTS}/catalogue.html",
