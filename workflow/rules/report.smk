# Per-study summary tables (summary, best_of_k), figures, verdicts; the catalogue report.
import os
import shlex


# A study's summary tables and the figures drawn from them (FIGURES_FROM_SUMMARY: status fractions, best-of-K),
# in one job: those figures need the summary and nothing else, and drawn by a job of their own they paid a process
# start and the tables' imports again, after aggregate, while the run's other core had nothing left to do
# (bench/README.md, `snakemake`). The figures of the per-cell tables are drawn meanwhile by cell_figures.
rule aggregate:
    input:
        cells="results/{study}/cells.parquet",
        trajectories="results/{study}/trajectories",
    output:
        summary="results/{study}/summary.parquet",
        best_of_k="results/{study}/best_of_k.parquet",
        figures=figure_outputs(FIGURES_FROM_SUMMARY),
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
        about=study_about,
    log:
        "logs/{study}/aggregate.log",
    benchmark:
        "benchmarks/{study}/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow aggregate --study-json {params.study:q}"
        " --study-dir results/{wildcards.study:q} --output {output.summary:q}"
        " --best-of-k {output.best_of_k:q} --figures {output.figures:q} > {log:q} 2>&1"


# The figures of the per-cell tables (FIGURES_FROM_CELLS), drawn while aggregate writes the summary: a study's
# serial tail is then aggregate alongside these.
rule cell_figures:
    input:
        cells="results/{study}/cells.parquet",
        **figure_inputs(FIGURES_FROM_CELLS),
    output:
        figures=figure_outputs(FIGURES_FROM_CELLS),
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
        about=study_about,
        study_dir=lambda wildcards: f"{RESULTS}/{wildcards.study}",
    log:
        "logs/{study}/cell_figures.log",
    benchmark:
        "benchmarks/{study}/cell_figures.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow figures --study-json {params.study:q} --study-dir {params.study_dir:q}"
        " --output {output.figures:q} > {log:q} 2>&1"


# The figures a study asks for besides those every study draws (its `figures:`, reluflow.config.EXTRA_FIGURES): a
# rule per figure, matching only the studies that name it (any other study's file of that name matches no rule), one
# job per study and figure, drawn from the tables FIGURE_TABLES gives. The loop variable is read only while the rule
# is defined (f-strings, calls): the shell line, formatted when a job runs, names none.
for _name in [name for name in EXTRA_FIGURES if studies_drawing(name)]:

    rule:
        name:
            f"figure_{_name}"
        input:
            cells="results/{study}/cells.parquet",
            **figure_inputs([_name]),
        output:
            figures=figure_outputs([_name]),
        wildcard_constraints:
            study="|".join(re.escape(s) for s in studies_drawing(_name)),
        params:
            study=study_json,
            version=RELUFLOW_VERSION,
            about=study_about,
            study_dir=lambda wildcards: f"{RESULTS}/{wildcards.study}",
        log:
            f"logs/{{study}}/figure_{_name}.log",
        benchmark:
            f"benchmarks/{{study}}/figure_{_name}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            "../envs/reluflow.yaml"
        shell:
            "python -m reluflow figures --study-json {params.study:q} --study-dir {params.study_dir:q}"
            " --output {output.figures:q} > {log:q} 2>&1"


# A study's prediction (its `verdict:`) checked on its tables: results/{study}/verdict.json, with the claim, the
# numbers behind the verdict and its provenance. A failing verdict is a result, not a failed job.
rule verdict:
    input:
        cells="results/{study}/cells.parquet",
        trajectories="results/{study}/trajectories",
        curves="results/{study}/curves",
        summary="results/{study}/summary.parquet",
        best_of_k="results/{study}/best_of_k.parquet",
        final="results/{study}/final",  # the endpoints, for verdicts that certify them (certify_families)
    output:
        verdict=report("results/{study}/verdict.json", caption="../report/verdict.rst", category=report_category,
                       subcategory="verdict", labels=verdict_labels),
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
        about=study_about,
    log:
        "logs/{study}/verdict.log",
    benchmark:
        "benchmarks/{study}/verdict.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow verdict --study-json {params.study:q} --study-dir results/{wildcards.study:q}"
        " --output {output.verdict:q} > {log:q} 2>&1"


# The catalogue's report: one self-contained HTML page with every claim, verdict (and its numbers) and figure.
rule catalogue_report:
    input:
        study_targets(CATALOGUE),
    output:
        html=f"{RESULTS}/catalogue.html",
    params:
        studies=" ".join(f"--study-json {shlex.quote(PLAN.study(s).to_json())}" for s in CATALOGUE),
        results=lambda wildcards, output: os.path.dirname(output.html),
        version=RELUFLOW_VERSION,
    log:
        "logs/catalogue_report.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow report {params.studies} --results {params.results:q} --output {output.html:q} > {log:q} 2>&1"
