"""Run the benchmarks: ``python -m bench [risk ...] [--quick]``; each suite's results go to bench/results/SUITE.json."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from reluflow.pipeline._cluster import pin_blas_threads

from .pipeline import SNAKEMAKE_MODES, default_modes

SUITES = ("risk", "kernels", "costs", "dynamics", "memory", "pipeline")
# run only when named (about 4 minutes per round with every mode): the whole quickstart through Snakemake,
# --cores 1 against --cores 2; stiff; gaussian, the gaussian kernels' table of the costs suite alone (~1 min)
OPTIONAL_SUITES = ("snakemake", "stiff", "gaussian")


def main() -> None:
    pin_blas_threads()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", help=f"which suites (default: all of {', '.join(SUITES)})")
    parser.add_argument("--snakemake", action="store_true",
                        help="pipeline suite: also run the snakemake suite (the whole quickstart through Snakemake, "
                        "--cores 1 against --cores 2, every mode)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="snakemake suite: rounds (default 3; 1 with --quick)")
    parser.add_argument("--modes", nargs="+", default=list(default_modes()), choices=list(SNAKEMAKE_MODES),
                        help="snakemake suite: modes to run (default all; 'pinned' only where CPU affinity can be set "
                        "for two CPUs): 'default' --cores 1 against --cores 2; 'pinned' the same with each run held "
                        "to as many CPUs as its --cores; 'one_worker' --cores 2 with one dask worker, against the "
                        "--cores 2 run of 'default' (or 'pinned')")
    parser.add_argument("--study-dask-rounds", type=int, default=None,
                        help="snakemake suite: rounds of the integrate stage alone on a running cluster, 1 worker "
                        "against 2, after the Snakemake rounds (default: --rounds; 0 skips it)")
    args = parser.parse_args()
    suites = args.suites or list(SUITES)
    unknown = sorted(set(suites) - set(SUITES) - set(OPTIONAL_SUITES))
    if unknown:
        parser.error(f"unknown suite(s) {unknown}: choose from {list(SUITES + OPTIONAL_SUITES)}")
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    if "risk" in suites:
        from . import risk_eval

        out["risk"] = risk_eval.run(T=256 if args.quick else 4096, widths=(8, 64) if args.quick else (8, 64, 512),
                                    repeats=3 if args.quick else 5)
    if "kernels" in suites:
        from . import kernels

        out["kernels"] = kernels.run(steps=3 if args.quick else 5, repeats=3 if args.quick else 5,
                                     scale=0.0625 if args.quick else 1.0)
    if "costs" in suites:
        from . import costs

        out["costs"] = costs.run(repeats=3, quick=args.quick)
    if "gaussian" in suites:  # costs' gaussian table alone
        from . import costs

        out["gaussian"] = costs.gaussian_kernels(repeats=5 if args.quick else 15, quick=args.quick)
    if "dynamics" in suites:
        from . import dynamics

        out["dynamics"] = dynamics.run(T=256 if args.quick else 4096, loop_trajectories=8 if args.quick else 32,
                                       repeats=3 if args.quick else 5)
    if "memory" in suites:
        from . import memory

        out["memory"] = memory.run(shards=(64, 256) if args.quick else (256, 1024))
    if "pipeline" in suites:
        from . import pipeline

        out["pipeline"] = pipeline.run(n_trajectories=64 if args.quick else 256,
                                       shard_sizes=(16,) if args.quick else (8, 32, 128, 256),
                                       repeats=1 if args.quick else 3, snakemake=args.snakemake)
    if "snakemake" in suites:
        from . import pipeline

        if args.rounds < 1:
            parser.error(f"--rounds {args.rounds} is not allowed: expected at least 1")
        if args.study_dask_rounds is not None and args.study_dask_rounds < 0:
            parser.error(f"--study-dask-rounds {args.study_dask_rounds} is not allowed: expected 0 or more")
        out["snakemake"] = pipeline.run_snakemake(repeats=1 if args.quick else args.rounds, modes=tuple(args.modes),
                                                  study_dask_rounds=args.study_dask_rounds)
    if "stiff" in suites:
        from . import stiff

        out["stiff"] = stiff.run(n_trajectories=8 if args.quick else 32, repeats=1 if args.quick else 3,
                                 dopri5_t_end=1e3 if args.quick else 1e4)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    header = {k: out.pop(k) for k in ("machine", "python")}
    for suite, figures in out.items():
        path = results / f"{suite}.json"
        path.write_text(json.dumps({**header, "quick": args.quick, suite: figures}, indent=2, default=str))
        print(f"{suite}: results written to {path}")


if __name__ == "__main__":
    main()
