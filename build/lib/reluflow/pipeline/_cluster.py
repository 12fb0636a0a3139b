"""Choosing the dask cluster an integrate job runs its shards on.

Always explicit: a ``LocalCluster`` we start (default), an existing scheduler by address, or a dask-jobqueue
``SLURMCluster``. Never a bare ``Client()``, which silently connects to ``DASK_SCHEDULER_ADDRESS`` when set.

A ``LocalCluster`` belongs to the integrate job that does the work: one job per study runs every cell's shards
on it, so the cluster starts once per study, the shards of all cells fill the workers together, and the cluster
ends with the job (dask's own lifecycle: a context manager, nothing to find, share or clean up afterwards).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["BACKGROUND_INTERVALS", "BLAS_THREAD_VARS", "PROFILE_VAR", "SCHEDULERS", "WORKER_MALLOC_ENV",
           "WORKER_PRELOAD", "dask_client", "local_cluster", "pin_blas_threads"]

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
                jobqueue: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` on the chosen cluster, closed (with any cluster we started) on exit.

    ``scheduler="local"`` starts a ``local_cluster(workers)`` that lives as long as the block: the integrate job
    that does the work owns its cluster. Must run in a ``__main__``-guarded entry point (the CLI): local workers
    are started with ``spawn``.
    A scheduler and workers this process starts (``local``, ``jobqueue``) run with ``BACKGROUND_INTERVALS``; a
    bare client has no such timers.
    """
    import dask
    import distributed  # noqa: F401  its config defaults first: leaving dask.config.set would otherwise drop them

    with dask.config.set(_background_intervals()):
        with _client_on(scheduler, workers=workers, address=address, jobqueue=jobqueue) as client:
            yield client


@contextlib.contextmanager
def _client_on(scheduler: str, *, workers: int, address: str | None,
               jobqueue: Mapping[str, Any] | None) -> Iterator[Any]:
    from distributed import Client

    if scheduler == "local":
        with local_cluster(workers) as cluster, Client(cluster) as client:
            log.info("dask: LocalCluster with %d single-threaded worker processes (dashboard %s)", workers,
                     client.dashboard_link, extra={"console": True})
            yield client
    elif scheduler == "address":
        addr = address or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if not addr:
            raise ValueError("execution.scheduler = 'address' needs execution.address or DASK_SCHEDULER_ADDRESS")
        with Client(addr) as client:
            log.info("dask: existing scheduler at %s (%d workers now)", addr,
                     len(client.scheduler_info().get("workers", {})))
            yield client
    elif scheduler == "jobqueue":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise RuntimeError(
                "execution.scheduler = 'jobqueue' needs dask-jobqueue: pip install 'reluflow[cluster]'"
            ) from None
        kwargs = dict(jobqueue or {})
        # Pin BLAS in the SLURM job before the worker starts, for the same reason as pin_blas_threads().
        prologue = list(kwargs.pop("job_script_prologue", []))
        prologue += [f"export {var}=1" for var in BLAS_THREAD_VARS]
        worker_env = {**WORKER_MALLOC_ENV, PROFILE_VAR: "False",
                      **{_dask_env_var(k): v for k, v in BACKGROUND_INTERVALS.items()}}
        prologue += [f"export {var}=${{{var}:-{value}}}" for var, value in worker_env.items()]
        with SLURMCluster(job_script_prologue=prologue, **kwargs) as cluster, Client(cluster) as client:
            cluster.scale(jobs=workers)
            log.info("dask: SLURMCluster, %d job(s) requested", workers)
            yield client
    else:
        raise ValueError(f"execution.scheduler = {scheduler!r} is not allowed: expected one of {list(SCHEDULERS)}")
