"""The pipeline layer: validated study (``reluflow.config``) -> cells -> shards -> dask -> parquet tables ->
summaries and figures.

The only layer that knows files, dask and provenance; the Snakemake rules call it through ``reluflow.cli``.
"""

from ._cluster import dask_client, pin_blas_threads
from ._figures import write_figures
from ._report import write_report
from ._stages import (
    CELL_TABLES,
    SHARD_TABLES,
    CellFiles,
    StageError,
    flatten_params,
    plan_shards,
    read_final,
    read_init,
    run_shard,
    write_aggregate,
    write_cells,
    write_init,
    write_integrate,
)
from ._tables import provenance, read_metadata, write_table
from ._verdict import VERDICT_FILE, write_verdict

__all__ = [
    "CELL_TABLES", "SHARD_TABLES", "CellFiles", "StageError", "dask_client", "flatten_params", "pin_blas_threads",
    "plan_shards", "VERDICT_FILE", "write_report", "write_verdict",
    "provenance", "read_final", "read_init", "read_metadata", "run_shard", "write_aggregate", "write_cells",
    "write_figures", "write_init", "write_integrate", "write_table",
]
