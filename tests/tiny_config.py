"""The smallest study the workflow tests run (one cell of width 3, 10 trajectories, 20 GD steps), shared by the
tests of the everyday commands and of the documented ones.

``execution.workers`` is left at its default (null: the cores given with ``--cores``), which is what made the
Snakefile ask for ``--cores`` even where no job runs."""

#: a study's body, indented to sit under ``studies: NAME:``
STUDY = """\
    problem:
      network: {input_dim: 1, widths: [2]}
      measure: {kind: uniform, low: 0.0, high: 1.0}
      target: {kind: piecewise_affine, knots: [0.0, 0.5, 1.0], values: [0.0, 1.0, 0.0]}
    method: {kind: gd, step_size: 0.05, n_steps: 20, n_checkpoints: 3}
    grid:
      problem.network.widths: [[3]]
    n_trajectories: 10
    seed: 3
"""
#: a whole config: the study ``tiny`` in shards of 5
TINY = f"studies:\n  tiny:\n{STUDY}execution:\n  shard_size: 5\n"
