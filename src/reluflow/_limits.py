"""The stated limits on input, in one place (docs/running.md, "Limits and refused input").

A config or a spec beyond one of these is refused up front, with the key, the value and the limit, rather than
left to fail hours later (or never finish): in ``Problem.from_dict`` and ``method_from_dict`` for what the package
itself would allocate or loop over, in ``reluflow.pipeline`` for what a study adds (trajectories, cells, names, the
config file itself). Raise one here if a study really needs more; nothing else has to change.
"""

from __future__ import annotations

__all__ = ["INF_KEYS", "LIMITS"]

LIMITS: dict[str, int] = {
    # a study
    "n_trajectories": 10**7,  # trajectories per cell
    "cells": 10**4,  # cells per study: the product of the grid's list lengths (validating 10^4 cells takes ~5 s)
    # file names hold 255 bytes; a cell id is also a directory and the stem of files with suffixes such as
    # ".trajectories.parquet", and Snakemake's own records encode whole output paths
    "name_length": 100,  # characters of a study name or a cell id
    # a method (reluflow.dynamics.method_from_dict)
    "n_steps": 10**9,  # GD n_steps, GF max_steps, and t_end / dt of a fixed-step GF solver without max_steps
    "n_checkpoints": 10**5,  # recorded states per trajectory
    # a problem (reluflow.Problem.from_dict)
    "n_params": 10**7,  # P, parameters per trajectory (one float64 copy: 80 MB; a GD state holds several)
    "n_points": 10**7,  # coordinates of a quadrature rule or of sampled data: points x input dimension
    "degree": 64,  # of a polynomial piece (target or density): beyond it float64 monomials are noise, and a
    # density's minimum is found from the roots of its derivative (O(degree^3))
    "teacher_width_1d": 4096,  # units of a 1D shallow ReLU teacher (its exact pieces take a kinks x units table)
    "teacher_width_gaussian": 2048,  # units of a teacher on the gaussian backend (its teacher-teacher term takes
    # units x units tables: 32 MB each at this limit)
    # execution
    "workers": 10**4,  # dask worker processes or SLURM jobs
    # integers anywhere in a config: they are stored as 64-bit integers in the tables
    "integer": 2**63 - 1,  # largest absolute value
    # the config itself (YAML aliases expanded: an "anchor bomb" of 9 aliases of 9 aliases ... is refused
    # before anything walks it)
    "config_bytes": 2**20,  # bytes of one config file
    "config_nodes": 10**6,  # values (mappings, lists and scalars), aliases expanded
    "config_depth": 32,  # levels of nested mappings and lists
    "yaml_aliases": 10**4,  # alias uses (*name) in one config file
}

# Keys whose value may be infinite (.inf): the norm bound of the stopping rule (inf: no bound). NaN is never
# meaningful and refused everywhere.
INF_KEYS = frozenset({"norm_bound"})
