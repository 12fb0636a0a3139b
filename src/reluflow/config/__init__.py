"""Study configs, read and validated once at the edge: YAML read strictly, the JSON schema shipped with the
package, the package's own checks on every cell, and the typed objects the stages receive (``Plan``, ``Study``,
``Cell``, ``Execution``), plus the outputs (figures) a study declares.

Light to import (no pandas, pyarrow, dask or matplotlib): the Snakefile imports it to read the config before
Snakemake starts any job.
"""

from ._figures import EXTRA_FIGURES, FIGURE_TABLES, FIGURE_VERDICT, FIGURES, figure_tables, study_figures
from ._outputs import CELL_TABLES, STUDY_TABLES, parquet_damage, set_aside_damaged_tables
from ._study import (
    DRIVER_BASELINE_MB,
    LIMITS,
    WORKER_BASELINE_MB,
    Cell,
    ConfigError,
    Execution,
    Plan,
    Study,
    check_config_files,
    check_values,
    default_k_list,
    expand_study,
    fill_defaults,
    find_schema,
    integrate_memory_mb,
    load_config_files,
    plan_config,
    plan_from_snakemake,
    shard_size_for,
    shards_in_flight,
    study_origins,
    validate_cell,
    validate_schema,
    with_includes,
)
from ._yaml import DuplicateKeyError, YAMLLimitError, coerce_yaml11_floats, load_yaml, load_yaml_text, retype_scalars

__all__ = [
    "CELL_TABLES", "STUDY_TABLES", "parquet_damage", "set_aside_damaged_tables",
    "DRIVER_BASELINE_MB", "WORKER_BASELINE_MB", "integrate_memory_mb", "shard_size_for", "shards_in_flight",
    "EXTRA_FIGURES", "FIGURES", "FIGURE_TABLES", "FIGURE_VERDICT", "figure_tables", "study_figures",
    "LIMITS", "Cell", "ConfigError", "DuplicateKeyError", "Execution", "Plan", "Study", "YAMLLimitError",
    "check_config_files", "check_values", "coerce_yaml11_floats", "default_k_list", "expand_study", "fill_defaults",
    "find_schema", "load_config_files", "load_yaml", "load_yaml_text", "plan_config", "plan_from_snakemake",
    "retype_scalars", "study_origins", "validate_cell", "validate_schema", "with_includes",
]
