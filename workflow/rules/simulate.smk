# Per-study cell table, per-cell initial parameters, and the integration of a cell's trajectories on dask.
# Every rule writes its wall-clock time and peak memory to benchmarks/ (Snakemake's benchmark files).


rule cells:
    output:
        cells="results/{study}/cells.parquet",
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
    log:
        "logs/{study}/cells.log",
    benchmark:
        "benchmarks/{study}/cells.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow cells --study-json {params.study:q} --output {output.cells:q} > {log:q} 2>&1"


# Inits (about a second each) go before any integrate job: with the run's shared cluster, integrate jobs are
# clients that hold a Snakemake core while they wait, so inits queued behind them would keep later cells'
# shards from reaching the workers.
rule init:
    output:
        init="results/{study}/init/{cell}.parquet",
    params:
        cell=cell_json,
        version=RELUFLOW_VERSION,
    log:
        "logs/{study}/init/{cell}.log",
    benchmark:
        "benchmarks/{study}/init/{cell}.tsv"
    priority: 10
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow init --cell-json {params.cell:q} --output {output.init:q} > {log:q} 2>&1"


# Finished shards live in results/{study}/.shards/{cell}/, outside the declared outputs (Snakemake deletes
# those before a job runs), so a killed job that is run again computes only the unfinished shards.
# The log gets everything; its progress lines also reach the console (`3>&2` keeps Snakemake's stderr as
# descriptor 3 before stdout and stderr go to the log), one line per cell every execution.progress_interval.
rule integrate:
    input:
        init="results/{study}/init/{cell}.parquet",
    output:
        trajectories="results/{study}/trajectories/{cell}.parquet",
        curves="results/{study}/curves/{cell}.parquet",
        final="results/{study}/final/{cell}.parquet",
    params:
        cell=cell_json,
        version=RELUFLOW_VERSION,
        shard_dir=lambda wildcards: f"{RESULTS}/{wildcards.study}/.shards/{wildcards.cell}",
    log:
        "logs/{study}/integrate/{cell}.log",
    benchmark:
        "benchmarks/{study}/integrate/{cell}.tsv"
    threads: INTEGRATE_THREADS
    resources:
        mem_mb=lambda wildcards, threads: 1000 + 1000 * threads,
        runtime=240,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow integrate --cell-json {params.cell:q} --init {input.init:q}"
        " --trajectories {output.trajectories:q} --curves {output.curves:q} --final {output.final:q}"
        " --shard-dir {params.shard_dir:q} --workers {threads} --console-fd 3 3>&2 > {log:q} 2>&1"
