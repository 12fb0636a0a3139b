# Per-study summary table and figures.


rule aggregate:
    input:
        cells="results/{study}/cells.parquet",
        trajectories=study_tables("trajectories"),
    output:
        summary="results/{study}/summary.parquet",
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
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
        " --trajectories {input.trajectories:q} --output {output.summary:q} > {log:q} 2>&1"


rule figures:
    input:
        cells="results/{study}/cells.parquet",
        summary="results/{study}/summary.parquet",
        trajectories=study_tables("trajectories"),
        curves=study_tables("curves"),
    output:
        figures=[f"results/{{study}}/figures/{name}.{ext}" for name in FIGURES for ext in FIGURE_FORMATS],
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
        study_dir=lambda wildcards: f"{RESULTS}/{wildcards.study}",
    log:
        "logs/{study}/figures.log",
    benchmark:
        "benchmarks/{study}/figures.tsv"
    # the figures are drawn in parallel processes: the serial tail of every study, with cores to spare
    threads: min(len(FIGURES), workflow.cores or 1)
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow figures --study-json {params.study:q} --study-dir {params.study_dir:q}"
        " --output {output.figures:q} --processes {threads} > {log:q} 2>&1"
