"""The pipeline layer: config -> validated study -> cells (grid) -> shards -> dask -> parquet tables.

The only layer that knows files, dask and provenance; the Snakemake rules call it through ``reluflow.cli``.
"""

import importlib
from typing import TYPE_CHECKING

from ._cluster import dask_client, pin_blas_threads
from ._config import (
    DEFAULT_INIT,
    LIMITS,
    Cell,
    ConfigError,
    Plan,
    Study,
    check_config_files,
    check_values,
    default_k_list,
    expand_study,
    find_schema,
    load_config_files,
    plan_config,
    plan_from_snakemake,
    validate_cell,
    validate_schema,
)
from ._figures import FIGURE_TABLES, FIGURES, figure_tables, write_figures
from ._yaml import DuplicateKeyError, load_yaml

# The stages and table writers import pandas and pyarrow (0.4 s): they are imported on first use (PEP 562), so
# the Snakefile, which imports this package to read the config before Snakemake starts any job, does not pay
# for them. Every name is still listed here and in __all__.
_LAZY = {
    **dict.fromkeys(("CELL_TABLES", "SHARD_TABLES", "CellFiles", "flatten_params", "plan_shards", "read_final",
                     "read_init", "run_shard", "write_aggregate", "write_cells", "write_init", "write_integrate"),
                    "._stages"),
    **dict.fromkeys(("provenance", "read_metadata", "write_table"), "._tables"),
}
if TYPE_CHECKING:
    from ._stages import (
        CELL_TABLES,
        SHARD_TABLES,
        CellFiles,
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

__all__ = [
    "CELL_TABLES", "DEFAULT_INIT", "FIGURES", "FIGURE_TABLES", "LIMITS", "SHARD_TABLES", "Cell", "CellFiles",
    "ConfigError", "DuplicateKeyError", "Plan", "Study", "check_config_files", "check_values", "dask_client",
    "default_k_list", "expand_study", "figure_tables", "find_schema", "flatten_params", "load_config_files",
    "load_yaml", "pin_blas_threads", "plan_config", "plan_from_snakemake", "plan_shards", "provenance", "read_final",
    "read_init", "read_metadata", "run_shard", "validate_cell", "validate_schema", "write_aggregate", "write_cells",
    "write_figures", "write_init", "write_integrate", "write_table",
]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
