"""Choosing the dask cluster an integrate job runs its shards on.

Always explicit: a ``LocalCluster`` we start (default), an existing scheduler by address, or a dask-jobqueue
``SLURMCluster``. Never a bare ``Client()``, which silently connects to ``DASK_SCHEDULER_ADDRESS`` when set.

A ``LocalCluster`` belongs to the integrate job that does the work: one job per study runs every cell's shards
on it, so the cluster starts once per study, the shards of all cells fill the workers together, and the cluster
ends with the job (dask's own lifecycle: a context manager, nothing to find, share or clean up afterwards).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import StageError

__all__ = ["BACKGROUND_INTERVALS", "BLAS_THREAD_VARS", "PROFILE_VAR", "SCHEDULERS", "WORKER_MALLOC_ENV",
           "WORKER_PRELOAD", "check_worker_versions", "dask_client", "jobqueue_kwargs", "local_cluster",
           "pin_blas_threads", "worker_identity"]

log = logging.getLogger("reluflow.pipeline")

SCHEDULERS = ("local", "address", "jobqueue")
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                    "NUMEXPR_NUM_THREADS")

# glibc malloc settings for worker processes. dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to
# hand freed memory back to the OS at once). Setting any such variable also switches off glibc's adaptive mmap
# threshold, so every temporary above 128 KiB is mmap'd, unmapped and page-faulted in again at each step: that made
# a worker run a shard about 1.5x slower than the same code in-process (bench/README.md, pipeline). Large explicit
# thresholds keep the kernels' per-step temporaries in the heap; a worker's peak memory still follows its shard.
# A value already in the environment wins (dask reads these from os.environ first).
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(128 << 20), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
# dask's statistical profiler samples a worker's task thread every 10 ms; that cost ~20 % of the compute of
# 32-trajectory shards (bench/README.md, pipeline). Off for our workers unless the environment sets it.
PROFILE_VAR = "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED"
# dask's background timers, coarser. Every dask server (scheduler, nanny, worker) wakes every 20 ms to check
# that its event loop is not blocked (tick) and samples system metrics every 500 ms; workers and nannies check
# memory every 100 ms. An idle one-worker LocalCluster spent ~7 % of a core on them (2.05-2.29 core-s per 30 s;
# 0.30-0.34 with these). On a machine whose every core runs a worker, that work competes with the shards
# (bench/README.md, snakemake). Blocked-loop warnings still come (ticks 1 s apart, warned after 3 s), memory
# limits are still enforced (every 0.5 s), the dashboard's system plots update every 2 s. A value the user set,
# in the environment (DASK_DISTRIBUTED__...) or in dask's YAML config, wins.
BACKGROUND_INTERVALS = {"distributed.admin.tick.interval": "1s",
                        "distributed.admin.system-monitor.interval": "2s",
                        "distributed.worker.memory.monitor-interval": "500ms"}
# Imported by each local worker as it starts, so the first shard does not pay for importing the stack (~1 s).
WORKER_PRELOAD = ("reluflow.pipeline._stages", "reluflow._simulate", "reluflow.analysis")


def _dask_env_var(key: str) -> str:
    """The environment variable dask reads ``key`` from: ``distributed.admin.tick.interval`` ->
    ``DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL``."""
    return "DASK_" + key.upper().replace(".", "__").replace("-", "_")


def _background_intervals() -> dict[str, str]:
    """``BACKGROUND_INTERVALS`` less those the user set: in the environment, or to anything but distributed's
    default (a dask YAML file). Call after ``import distributed``, which registers those defaults."""
    import dask

    defaults = dask.config.merge(*dask.config.defaults)
    return {k: v for k, v in BACKGROUND_INTERVALS.items()
            if _dask_env_var(k) not in os.environ and dask.config.get(k) == dask.config.get(k, config=defaults)}


def pin_blas_threads() -> None:
    """One BLAS thread per process: the parallelism is the dask workers.

    Snakemake sets ``OMP_NUM_THREADS=threads`` for a job and the dask nanny keeps an existing value, so without
    this ``T`` workers would each start ``T`` BLAS threads. The variables must be set before the workers start
    (OpenBLAS reads them once, at load); threadpoolctl also limits the pools already loaded in this process.
    """
    for var in BLAS_THREAD_VARS:
        os.environ[var] = "1"
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A ``LocalCluster`` of ``workers`` single-threaded worker processes set up for our kernels: BLAS pinned to
    one thread, large malloc thresholds, no statistical profiler, coarser background timers
    (``BACKGROUND_INTERVALS``), the stack imported as each worker starts.

    A context manager; must run in a ``__main__``-guarded entry point (workers start with ``spawn``).
    """
    import dask
    from distributed import LocalCluster

    pin_blas_threads()
    settings = {"distributed.nanny.pre-spawn-environ": {
        **dask.config.get("distributed.nanny.pre-spawn-environ", {}), **WORKER_MALLOC_ENV},
        **_background_intervals()}
    if PROFILE_VAR not in os.environ:
        settings["distributed.worker.profile.enabled"] = False
    # Held for the cluster's whole life: a nanny that restarts its worker reads the settings again (nannies hand
    # their config to the worker processes they start).
    # dashboard_address=":0" (any free port): concurrent integrate jobs would otherwise fight over 8787.
    with dask.config.set(settings), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                         silence_logs=logging.WARNING, preload=list(WORKER_PRELOAD)) as cluster:
        yield cluster


@contextlib.contextmanager
def dask_client(scheduler: str, *, workers: int, address: str | None = None,
                jobqueue: Mapping[str, Any] | None = None, scheduler_file: str | None = None,
                minimum_jobs: int = 1, worker_wait: float = 600.0) -> Iterator[Any]:
    """A ``distributed.Client`` on the chosen cluster, closed (with any cluster we started) on exit.

    ``scheduler="local"`` starts a ``local_cluster(workers)`` that lives as long as the block: the integrate job
    that does the work owns its cluster. Must run in a ``__main__``-guarded entry point (the CLI): local workers
    are started with ``spawn``.
    ``"address"`` joins an existing scheduler (``address``, else ``scheduler_file``, else
    ``DASK_SCHEDULER_ADDRESS``); ``"jobqueue"`` starts a dask-jobqueue ``SLURMCluster`` whose SLURM jobs adapt
    between ``minimum_jobs`` and ``workers`` (``jobqueue_kwargs``). Both wait at most ``worker_wait`` seconds for
    a first worker and check that the workers run this job's package versions (``check_worker_versions``); a
    failure is a ``StageError`` saying what happened and what to do.
    A scheduler and workers this process starts (``local``, ``jobqueue``) run with ``BACKGROUND_INTERVALS``; a
    bare client has no such timers.
    """
    import dask
    import distributed  # noqa: F401  its config defaults first: leaving dask.config.set would otherwise drop them

    with dask.config.set(_background_intervals()):
        if scheduler == "local":
            with local_cluster(workers) as cluster, distributed.Client(cluster) as client:
                log.info("dask: LocalCluster with %d single-threaded worker processes (dashboard %s)", workers,
                         client.dashboard_link, extra={"console": True})
                yield client
        elif scheduler == "address":
            with _existing_scheduler(address, scheduler_file, worker_wait) as client:
                yield client
        elif scheduler == "jobqueue":
            with _jobqueue_cluster(jobqueue or {}, minimum_jobs, workers, worker_wait) as client:
                yield client
        else:
            raise ValueError(f"execution.scheduler = {scheduler!r} is not allowed: expected one of "
                             f"{list(SCHEDULERS)}")


def _address_in_file(path: str, wait: float) -> str:
    """The scheduler address in ``path`` (the JSON ``dask scheduler --scheduler-file`` writes), waiting up to
    ``wait`` seconds for the file to appear and be complete."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path) as f:
                return str(json.load(f)["address"])
        except (OSError, ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
    raise StageError(
        f"execution.scheduler_file = {path!r} did not appear within {wait:g} s (execution.worker_wait), or holds "
        f"no scheduler address: start the scheduler with `dask scheduler --scheduler-file {path}` (the path as seen "
        "from where Snakemake runs), or correct the path")


@contextlib.contextmanager
def _existing_scheduler(address: str | None, scheduler_file: str | None, wait: float) -> Iterator[Any]:
    from distributed import Client

    env = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not (address or scheduler_file or env):
        raise StageError("execution.scheduler = 'address' needs execution.address, execution.scheduler_file or "
                           "DASK_SCHEDULER_ADDRESS: none is set")
    if address or not scheduler_file:
        where, key = address or env, "execution.address" if address else "DASK_SCHEDULER_ADDRESS"
        kwargs = {"address": where}
    else:
        where, key = scheduler_file, "execution.scheduler_file"
        kwargs = {"address": _address_in_file(scheduler_file, wait)}
    try:
        client = Client(**kwargs, timeout=f"{max(wait, 1):g}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise StageError(f"cannot reach the dask scheduler of {key} = {where!r} ({_one_line(exc)}): start it, or "
                           "correct the address (tcp://HOST:PORT, as the machine running Snakemake sees it)") from None
    with client:
        _wait_for_workers(client, wait, lambda: (
            f"no dask worker joined the scheduler at {client.scheduler.address} ({key} = {where!r}) within "
            f"{wait:g} s (execution.worker_wait): start workers with `dask worker {client.scheduler.address} "
            "--nthreads 1 --preload reluflow._simulate` (the same reluflow installed), or raise "
            "execution.worker_wait"))
        check_worker_versions(client)
        log.info("dask: existing scheduler at %s (%d workers now)", client.scheduler.address,
                 len(client.scheduler_info().get("workers", {})), extra={"console": True})
        yield client


def jobqueue_kwargs(jobqueue: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``dask_jobqueue.SLURMCluster`` for ``execution.jobqueue`` (its schema defaults
    filled in): keys set to null left to dask-jobqueue's configuration; ``processes`` one per core unless given
    (single-threaded workers, like the local ones); each worker imports ``WORKER_PRELOAD`` as it starts; the job
    script's prologue pins BLAS to one thread and exports the malloc, profiler and background-timer settings of
    local workers (each unless set in the job's environment); the dashboard on a free port."""
    kwargs = {k: v for k, v in jobqueue.items() if v is not None}
    if "cores" in kwargs and "processes" not in kwargs:
        kwargs["processes"] = kwargs["cores"]
    # Pin BLAS in the SLURM job before the worker starts, for the same reason as pin_blas_threads().
    prologue = list(kwargs.pop("job_script_prologue", []))
    prologue += [f"export {var}=1" for var in BLAS_THREAD_VARS]
    worker_env = {**WORKER_MALLOC_ENV, PROFILE_VAR: "False",
                  **{_dask_env_var(k): v for k, v in BACKGROUND_INTERVALS.items()}}
    prologue += [f"export {var}=${{{var}:-{value}}}" for var, value in worker_env.items()]
    kwargs["job_script_prologue"] = prologue
    extra = list(kwargs.pop("worker_extra_args", []))
    for module in WORKER_PRELOAD:
        if module not in extra:
            extra += ["--preload", module]
    kwargs["worker_extra_args"] = extra
    kwargs.setdefault("scheduler_options", {"dashboard_address": ":0"})
    if kwargs.get("log_directory"):
        os.makedirs(kwargs["log_directory"], exist_ok=True)
    return kwargs


class _SubmissionFailures(logging.Filter):
    """Catches the error a failed ``sbatch`` leaves in the log (dask-jobqueue raises it in the event loop, which
    tornado logs with a traceback from deep inside dask): kept to say in one sentence, not printed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = str(exc) if exc is not None else ""
        if "Command exited with non-zero exit code" in text:
            stderr = text.split("stderr:", 1)[-1].strip() or text
            self.messages.append(" ".join(stderr.split()))
            return False
        return True


@contextlib.contextmanager
def _jobqueue_cluster(jobqueue: Mapping[str, Any], minimum: int, maximum: int, wait: float) -> Iterator[Any]:
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise StageError(
            "execution.scheduler = 'jobqueue' needs dask-jobqueue, which is not installed: pip install "
            "'reluflow[cluster]' (or choose execution.scheduler local or address)") from None
    from distributed import Client

    if shutil.which("sbatch") is None:
        raise StageError(
            "execution.scheduler = 'jobqueue' submits its dask workers with sbatch, which is not on PATH here: run "
            "Snakemake on a SLURM login node, or choose execution.scheduler local or address")
    if minimum > maximum:
        raise StageError(f"execution.minimum_jobs = {minimum} is more than execution.workers = {maximum}, the "
                           "most SLURM jobs: lower minimum_jobs or raise workers")
    kwargs = jobqueue_kwargs(jobqueue)
    failures = _SubmissionFailures()
    loggers = [logging.getLogger(name) for name in ("tornado.application", "asyncio", "distributed")]
    for logger in loggers:
        logger.addFilter(failures)
    try:
        try:
            cluster = SLURMCluster(**kwargs)
        except (TypeError, ValueError) as exc:
            raise StageError(f"execution.jobqueue = {dict(jobqueue)!r} is not accepted by "
                               f"dask_jobqueue.SLURMCluster: {_one_line(exc)}") from None
        adaptive, failed = None, False
        try:
            with Client(cluster) as client:
                adaptive = cluster.adapt(minimum_jobs=minimum, maximum_jobs=maximum)
                log.info("dask: SLURMCluster of %d to %d SLURM job(s) of %s worker(s) each (dashboard %s)", minimum,
                         maximum, kwargs.get("processes", "?"), client.dashboard_link, extra={"console": True})

                def why() -> str:
                    if failures.messages:
                        return (f"submitting a dask worker job to SLURM failed ({failures.messages[0]}): check "
                                "execution.jobqueue (account, queue, cores, memory, walltime) against what "
                                "`sbatch` accepts on this cluster, then rerun")
                    return (f"no dask worker job started within {wait:g} s (execution.worker_wait): the SLURM "
                            "jobs are still pending (see `squeue --me`), so the partition or the resources asked "
                            "in execution.jobqueue (cores, memory, walltime) may never be granted; ask for what "
                            "the partition can give, or raise execution.worker_wait if the queue is just busy")

                _wait_for_workers(client, wait, why, stop_early=lambda: bool(failures.messages))
                check_worker_versions(client)
                yield client
        except BaseException:
            failed = True
            raise
        finally:
            _close_jobqueue(cluster, adaptive, failed=failed)
    finally:
        for logger in loggers:
            logger.removeFilter(failures)


def _close_jobqueue(cluster: Any, adaptive: Any, *, failed: bool) -> None:
    """Stop adapting, release every SLURM job (scancel) and close the scheduler. A job whose submission failed
    makes dask's ``close`` raise after the others are cancelled: said in the log, not over the job's own error."""
    try:
        if adaptive is not None:
            adaptive.stop()
        cluster.scale(0)
        cluster.close(timeout=60)
    except Exception as exc:
        (log.debug if failed else log.warning)(
            "closing the SLURMCluster: %s; check `squeue --me` for dask worker jobs left behind", _one_line(exc))


def _wait_for_workers(client: Any, wait: float, why: Any, stop_early: Any = lambda: False) -> None:
    """Wait up to ``wait`` seconds for a first worker (``Client.wait_for_workers``), in steps of 1 s so that
    ``stop_early()`` (a failed submission) ends the wait at once; then a ``StageError`` of ``why()``."""
    t0 = time.monotonic()
    deadline = t0 + wait
    while True:
        step = min(1.0, max(deadline - time.monotonic(), 0.01))
        try:
            client.wait_for_workers(1, timeout=step)
            log.info("dask: %d worker(s) up after %.0f s", len(client.scheduler_info().get("workers", {})),
                     time.monotonic() - t0, extra={"console": True})
            return
        except TimeoutError:
            if stop_early() or time.monotonic() >= deadline:
                raise StageError(why()) from None


def worker_identity() -> dict[str, str | None]:
    """What a worker must share with the job that submits to it: reluflow's version and source hash."""
    from .. import __version__
    from ._tables import source_hash

    return {"version": __version__, "source": source_hash()}


def check_worker_versions(client: Any, expected: Mapping[str, str | None] | None = None) -> None:
    """Stop with one sentence if the workers run other package versions than this job: dask's own check
    (``Client.get_versions(check=True)``: python, dask, distributed, msgpack, ...) and reluflow's version and
    source hash (``worker_identity`` run on each worker), against ``expected`` (default: this process's)."""
    mine = dict(expected) if expected is not None else worker_identity()
    try:
        client.get_versions(check=True)
    except ValueError as exc:
        raise StageError(f"the dask workers run other package versions than this job ({_one_line(exc, 400)}): "
                           "install the same environment where the workers start, then rerun") from None
    try:
        theirs = client.run(worker_identity)
    except Exception as exc:  # a worker that cannot import reluflow cannot run it
        raise StageError(f"the dask workers cannot run reluflow ({_one_line(exc)}): install this reluflow "
                           "where the workers start, then rerun") from None
    for worker, ident in sorted(theirs.items()):
        for key in ("version", "source"):
            if ident.get(key) != mine.get(key) and None not in (ident.get(key), mine.get(key)):
                what = "version" if key == "version" else "source hash (the code differs within a version)"
                raise StageError(
                    f"dask worker {worker} runs reluflow {what} {ident.get(key)!r}, this job "
                    f"{mine.get(key)!r}: install the same reluflow where the workers start (or restart them "
                    "after an upgrade), then rerun")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
