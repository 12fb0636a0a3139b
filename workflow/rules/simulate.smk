# Per-study cell table, per-cell initial parameters, and the integration of a cell's trajectories on dask.
# Every rule writes its wall-clock time and peak memory to benchmarks/ (Snakemake's benchmark files).


# One integrate job per study: it owns a dask LocalCluster (or joins the scheduler execution names) and runs the
# shards of every cell on it, writing each cell's tables (init, trajectories, curves, final) as the cell's last
# shard comes in. Finished shards live in results/{study}/.shards/ and finished cells' tables also under
# results/{study}/.done/ (hard links), outside the declared outputs, which Snakemake deletes before it reruns
# the job: a killed job computes only the unfinished shards, and a job rerun because one cell changed computes
# only that cell. It writes the study's cells table first: as a job of its own, that table waited for integrate,
# which holds every core, and added a process start to the run's serial part (bench/README.md, `snakemake`). The
# log gets everything; its progress lines also reach the console (`3>&2` keeps Snakemake's stderr as descriptor 3
# before stdout and stderr go to the log).
rule integrate:
    output:
        cells="results/{study}/cells.parquet",
        init=directory("results/{study}/init"),
        trajectories=directory("results/{study}/trajectories"),
        curves=directory("results/{study}/curves"),
        final=directory("results/{study}/final"),
    params:
        study=study_json,
        version=RELUFLOW_VERSION,
    log:
        "logs/{study}/integrate.log",
    benchmark:
        "benchmarks/{study}/integrate.tsv"
    threads: INTEGRATE_THREADS
    resources:
        mem_mb=integrate_mem_mb,
        runtime=240,
    conda:
        "../envs/reluflow.yaml"
    shell:
        "python -m reluflow integrate --study-json {params.study:q} --study-dir results/{wildcards.study:q}"
        " --cells {output.cells:q}"
        " --workers {threads} --console-fd 3 3>&2 > {log:q} 2>&1"
