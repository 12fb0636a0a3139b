"""The ``reluflow`` command line: what the Snakemake rules call (``python -m reluflow STAGE ...``).

Each stage takes its study as the JSON of a study validated at the edge (the Snakemake rule passes it as a
param, so a changed parameter reruns exactly the affected jobs; the stage does not validate it again) and explicit
input/output paths. Execution settings (dask scheduler, workers, shard size) come from ``--execution-json`` or the
``RELUFLOW_EXECUTION`` environment variable the Snakefile sets (they never change results, so they are not params:
no reruns when they change), each overridable by its own flag; their defaults are the schema's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__

if TYPE_CHECKING:
    from .config import Execution

__all__ = ["main"]

EXECUTION_ENV = "RELUFLOW_EXECUTION"


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _execution(args: argparse.Namespace) -> Execution:
    """The execution settings: ``--execution-json`` (else ``$RELUFLOW_EXECUTION``, else none) updated by the
    flags given, validated, with the schema's defaults."""
    from .config import Execution

    base = Execution.from_json(args.execution_json or os.environ.get(EXECUTION_ENV) or "{}")
    settings = json.loads(base.to_json())
    return Execution.from_mapping(settings, scheduler=args.scheduler, address=args.address,
                                  shard_size=args.shard_size, retries=args.retries,
                                  progress_interval=args.progress_interval, keep_shards=args.keep_shards or None)


def _console(fd: int | None) -> TextIO | None:
    """A text stream on descriptor ``fd``, the console that a Snakemake rule hands its job with ``3>&2`` before
    sending stdout and stderr to the job's log; ``None`` without one (not given, or not open)."""
    if fd is None:
        return None
    try:
        return os.fdopen(fd, "w", buffering=1)
    except OSError:
        return None


class _ConsoleFilter(logging.Filter):
    """The records logged with ``extra={"console": True}``: progress lines and dashboard links."""

    def filter(self, record: logging.LogRecord) -> bool:
        return bool(getattr(record, "console", False))


def _log_to_console(console: TextIO, prefix: str) -> None:
    """Copy the console records of reluflow's loggers to ``console``, each line starting with ``prefix``."""
    handler = logging.StreamHandler(console)
    handler.addFilter(_ConsoleFilter())
    handler.setFormatter(logging.Formatter(prefix.replace("%", "%%") + " %(message)s"))
    logging.getLogger("reluflow").addHandler(handler)


def _cmd_check(args: argparse.Namespace) -> int:
    from .config import find_schema, load_config_files, plan_config, shard_size_for, study_origins

    files = args.configfile or ["config.yaml"]
    schema = Path(args.schema) if args.schema else find_schema()
    plan = plan_config(load_config_files(files), schema, origins=study_origins(files))
    for study in plan.studies.values():
        mark = "*" if study.name in plan.run else " "
        print(f"{mark} {study.name}: {len(study.cells)} cells x {study.n_trajectories} trajectories, "
              f"seed {study.seed}")
        for cell in study.cells.values():
            n = shard_size_for(cell, plan.execution)
            print(f"    {cell.id:<32} key {cell.key:<20} shards of {n}, ~{-(-cell.memory.bytes(n) // 2**20)} MB "
                  "each on a worker")
    print(f"execution: {plan.execution.to_json()}")
    print("config OK (* = built by `rule all`)")
    return 0


def _cmd_integrate(args: argparse.Namespace) -> int:
    from .config import Study
    from .pipeline import write_cells, write_integrate

    execution = _execution(args)
    study = Study.from_json(args.study_json)
    console = _console(args.console_fd)
    if console is not None:  # progress lines and the dashboard link on the console too
        _log_to_console(console, study.name)
    if args.cells:
        write_cells(study, args.cells)
    # --workers: the cores Snakemake gave the job ({threads}), the local cluster's workers unless execution.workers
    counts = write_integrate(list(study.cells.values()), args.study_dir, execution, cores=args.workers)
    logging.getLogger("reluflow.pipeline").info(
        "integrate done: %d cell(s) reused; %d shard(s) reused, %d computed", counts["cells_reused"],
        counts["shards_reused"], counts["shards_computed"])
    return 0


def _cmd_aggregate(args: argparse.Namespace) -> int:
    from .config import Study
    from .pipeline import write_aggregate

    study = Study.from_json(args.study_json)
    by_cell = {cell: Path(args.study_dir, "trajectories", f"{cell}.parquet") for cell in study.cell_ids}
    write_aggregate(study, by_cell, args.output, best_of_k_output=args.best_of_k)
    if args.figures:
        from .pipeline import write_figures

        write_figures(study, args.study_dir, args.figures)
    return 0


def _cmd_verdict(args: argparse.Namespace) -> int:
    from .config import Study
    from .pipeline import write_verdict

    write_verdict(Study.from_json(args.study_json), args.study_dir, args.output)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .config import Study
    from .pipeline import write_report

    write_report([Study.from_json(text) for text in args.study_json], args.results, args.output)
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from .config import Study
    from .pipeline import write_figures

    if args.processes < 1:
        raise SystemExit(f"error: --processes = {args.processes} is not allowed: expected an integer >= 1")
    write_figures(Study.from_json(args.study_json), args.study_dir, args.output,
                  processes=args.processes)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reluflow", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="validate config file(s) and list the studies' cells")
    c.add_argument("-c", "--configfile", action="append", help="config file (repeatable; default config.yaml)")
    c.add_argument("--schema", help="config schema (default: the one installed with reluflow, "
                   "reluflow/config/config.schema.yaml)")
    c.set_defaults(func=_cmd_check)

    c = sub.add_parser("integrate", help="integrate every cell of a study on one dask cluster, resuming finished "
                       "shards and reusing finished cells")
    c.add_argument("--study-json", required=True)
    c.add_argument("--study-dir", required=True, help="results/{study}: where the cells' tables go")
    c.add_argument("--cells", metavar="PATH", help="also write the study's cells table (cells.parquet) here, first")
    c.add_argument("--workers", type=int, help="the cores the job is given (Snakemake passes {threads}): the local "
                   "cluster's workers unless execution.workers is set")
    c.add_argument("--execution-json", help=f"execution settings (default: ${EXECUTION_ENV})")
    c.add_argument("--scheduler", choices=["local", "address", "jobqueue"])
    c.add_argument("--address")
    c.add_argument("--shard-size", type=int)
    c.add_argument("--retries", type=int)
    c.add_argument("--progress-interval", type=float)
    c.add_argument("--keep-shards", action="store_true")
    c.add_argument("--console-fd", type=int, help="also write the progress lines to this open file descriptor "
                   "(the workflow passes the console as 3 while the log takes stdout and stderr)")
    c.set_defaults(func=_cmd_integrate)

    c = sub.add_parser("aggregate", help="write a study's summary.parquet (and best_of_k.parquet)")
    c.add_argument("--study-json", required=True)
    c.add_argument("--study-dir", required=True, help="results/{study}: its trajectories/{cell}.parquet are read")
    c.add_argument("--output", required=True, help="output: summary.parquet")
    c.add_argument("--best-of-k", metavar="PATH", help="output: best_of_k.parquet, best-of-K with intervals "
                   "(long format; not written when omitted)")
    c.add_argument("--figures", nargs="+", metavar="PATH", help="then draw these figures (.png / .pdf) of the "
                   "study, as `figures` does: those drawn from the summary, without a process of their own")
    c.set_defaults(func=_cmd_aggregate)

    c = sub.add_parser("verdict", help="check a study's prediction on its tables: write verdict.json")
    c.add_argument("--study-json", required=True)
    c.add_argument("--study-dir", required=True, help="results/{study}")
    c.add_argument("--output", required=True, help="output: verdict.json")
    c.set_defaults(func=_cmd_verdict)

    c = sub.add_parser("report", help="one HTML page of studies: claims, verdicts with their numbers, figures")
    c.add_argument("--study-json", action="append", required=True, help="a study (repeat for each)")
    c.add_argument("--results", required=True, help="the results directory (results/)")
    c.add_argument("--output", required=True, help="output: the HTML page")
    c.set_defaults(func=_cmd_report)

    c = sub.add_parser("figures", help="draw a study's figures")
    c.add_argument("--study-json", required=True)
    c.add_argument("--study-dir", required=True, help="results/{study}")
    c.add_argument("--output", nargs="+", required=True, help="figure files to write (.png / .pdf)")
    c.add_argument("--processes", type=int, default=1, help="draw the figures in this many processes (default 1; "
                   "the files are the same whatever the number)")
    c.set_defaults(func=_cmd_figures)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``reluflow`` and ``python -m reluflow``."""
    args = _parser().parse_args(argv)
    # SLURM (time limit, scancel) and Snakemake stop jobs with SIGTERM: unwind like Ctrl-C, so the dask cluster
    # shuts down and no temporary file is left behind; finished shards stay for the next run.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    # dask's own INFO lines (scheduler, nannies; workers inherit the environment) would drown our progress lines
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # fontTools' subsetter, which matplotlib runs for every font a PDF embeds, logs each table it prunes at INFO:
    # hundreds of lines per figure in the log
    logging.getLogger("fontTools").setLevel(logging.WARNING)
    from .config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from .pipeline import StageError  # (imported here: `reluflow check` does not load the stages)

        if not isinstance(exc, StageError):
            raise
        if exc.__cause__ is not None:  # what the failing task raised, for the log
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
