"""Choosing the dask cluster an integrate job runs its shards on.

Always explicit: a ``LocalCluster`` we start (default), an existing scheduler by address, or a dask-jobqueue
``SLURMCluster``. Never a bare ``Client()``, which silently connects to ``DASK_SCHEDULER_ADDRESS`` when set.

A ``LocalCluster`` is either the integrate job's own, or one that a whole Snakemake run shares
(``serve_local_cluster``, started by the workflow when its jobs run on this machine): then every integrate job
is a client of the same workers, which pays the cluster's start-up once per run instead of once per cell and
lets the shards of several cells fill the workers together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = ["BACKGROUND_INTERVALS", "BLAS_THREAD_VARS", "PROFILE_VAR", "SCHEDULERS", "SCHEDULER_FILE_ENV",
           "SharedCluster", "WORKER_MALLOC_ENV", "WORKER_PRELOAD", "dask_client", "local_cluster",
           "pin_blas_threads", "serve_local_cluster"]

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
# The scheduler file of the LocalCluster a Snakemake run shares (set by the workflow, read by integrate jobs).
SCHEDULER_FILE_ENV = "RELUFLOW_SCHEDULER_FILE"
# How long an integrate job waits for the shared cluster to come up (it starts with the run, alongside the
# first jobs; workers importing the stack take a few seconds on a loaded machine).
SHARED_CLUSTER_WAIT_S = 300.0


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


def _failed_path(scheduler_file: Path) -> Path:
    return scheduler_file.with_name(scheduler_file.name + ".failed")


def _pid_path(scheduler_file: Path) -> Path:
    """Where ``SharedCluster.start`` records the cluster process's pid, for clients waiting on it."""
    return scheduler_file.with_name(scheduler_file.name + ".pid")


def _process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie, not yet reaped by its parent, counts as exited)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:  # e.g. access denied: it exists
        return False


def serve_local_cluster(scheduler_file: str | Path, *, workers: int, parent_pid: int | None = None,
                        poll_s: float = 0.5, console: TextIO | None = None) -> None:
    """Run a ``local_cluster(workers)`` for other processes until stopped (SIGTERM, Ctrl-C) or, when
    ``parent_pid`` is given, until that process is gone (so a killed Snakemake run leaves no cluster behind).

    ``scheduler_file`` (JSON with the scheduler's address) is written, atomically, once every worker is up, and
    removed on exit; if the cluster cannot start, ``<scheduler_file>.failed`` holds the reason instead, so
    clients stop waiting at once. ``console`` (the run's console, see ``SharedCluster.start``) gets one line
    with the dashboard's link once the workers are up, and is closed then.
    """
    import psutil
    from distributed import Client

    path = Path(scheduler_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    _failed_path(path).unlink(missing_ok=True)
    try:
        with local_cluster(workers) as cluster, Client(cluster) as client:
            client.wait_for_workers(workers)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"address": cluster.scheduler_address, "workers": workers,
                                       "pid": os.getpid()}))
            os.replace(tmp, path)
            log.info("dask: shared LocalCluster with %d single-threaded worker processes at %s (dashboard %s, "
                     "pid %d)", workers, cluster.scheduler_address, client.dashboard_link, os.getpid())
            if console is not None:
                _announce(console, f"reluflow: dask dashboard {client.dashboard_link} (the run's shared "
                                   f"LocalCluster, {workers} worker(s))")
            try:
                while parent_pid is None or psutil.pid_exists(parent_pid):
                    time.sleep(poll_s)
                log.info("dask: process %d is gone: shutting the shared cluster down", parent_pid)
            finally:
                path.unlink(missing_ok=True)
                _pid_path(path).unlink(missing_ok=True)  # SharedCluster.stop does not run after a SIGKILL
    except Exception as exc:
        _failed_path(path).write_text(f"{type(exc).__name__}: {exc}")
        raise


def _announce(console: TextIO, line: str) -> None:
    """Write ``line`` to ``console`` and close it (nothing else is written there; a console that is gone, a
    closed pipe say, is no reason to stop)."""
    with contextlib.suppress(OSError, ValueError):
        with console:
            print(line, file=console, flush=True)


class SharedCluster:
    """The ``reluflow cluster`` process a Snakemake run starts for its integrate jobs (``workflow/rules``).

    ``start()`` launches it in the background (the workers come up while the first jobs run) and returns at
    once; ``stop()`` shuts it down. The process also shuts itself down when the process that started it is gone,
    so a run killed with SIGKILL leaves no workers behind.
    """

    def __init__(self, scheduler_file: str | Path, *, workers: int, log_path: str | Path) -> None:
        self.scheduler_file = Path(scheduler_file).absolute()
        self.workers = int(workers)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        for stale in (self.scheduler_file, _failed_path(self.scheduler_file), _pid_path(self.scheduler_file)):
            stale.unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # The process logs to log_path; it writes the dashboard's link to this process's stderr (the console of
        # a Snakemake run), through a copy of that descriptor that it closes once it has written the line.
        console = _dup_stderr()
        command = [sys.executable, "-m", "reluflow", "cluster", "--scheduler-file", str(self.scheduler_file),
                   "--workers", str(self.workers), "--parent-pid", str(os.getpid())]
        try:
            with open(self.log_path, "w") as log_file:
                self.process = subprocess.Popen(
                    command + (["--console-fd", str(console)] if console is not None else []),
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    pass_fds=(console,) if console is not None else ())
        finally:
            if console is not None:
                os.close(console)
        # clients that wait for the workers give up at once if this process dies before writing its file
        pid_path = _pid_path(self.scheduler_file)
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = pid_path.with_name(f".{pid_path.name}.{os.getpid()}.tmp")
        tmp.write_text(str(self.process.pid))
        os.replace(tmp, pid_path)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the CLI unwinds, closing the cluster and its workers
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for path in (self.scheduler_file, _failed_path(self.scheduler_file), _pid_path(self.scheduler_file)):
            path.unlink(missing_ok=True)


def _dup_stderr() -> int | None:
    """A new descriptor for this process's stderr, or ``None`` when it has none."""
    try:
        return os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file, or closed
        return None


@contextlib.contextmanager
def _shared_client(scheduler_file: Path, *, wait_s: float = SHARED_CLUSTER_WAIT_S) -> Iterator[Any]:
    """A client of the cluster ``serve_local_cluster`` runs, waiting up to ``wait_s`` for it to come up.

    Stops waiting at once when the cluster recorded that it failed, or when the process ``SharedCluster``
    started (its pid in ``<scheduler_file>.pid``) has exited without writing the scheduler file.
    """
    from distributed import Client

    deadline = time.monotonic() + wait_s
    while True:
        failed = _failed_path(scheduler_file)
        if failed.is_file():
            raise RuntimeError(f"the shared dask cluster ({scheduler_file}) failed to start: {failed.read_text()}")
        try:
            info = json.loads(scheduler_file.read_text())
            break
        except (FileNotFoundError, json.JSONDecodeError):
            pid = _read_pid(_pid_path(scheduler_file))
            if pid is not None and _process_gone(pid) and not scheduler_file.is_file():
                if failed.is_file():  # it wrote why just before exiting
                    continue
                raise RuntimeError(
                    f"the shared dask cluster process (pid {pid}) exited before its workers came up (no "
                    f"{scheduler_file}): see the workflow's logs/dask-cluster.log, or run with --config "
                    "'execution={shared_cluster: false}'") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no shared dask cluster came up within {wait_s:.0f} s (no {scheduler_file}): see the "
                    "workflow's logs/dask-cluster.log, or run with --config 'execution={shared_cluster: false}'"
                ) from None
            time.sleep(0.2)
    with Client(info["address"]) as client:
        log.info("dask: the run's shared LocalCluster at %s (%d single-threaded workers)", info["address"],
                 len(client.scheduler_info().get("workers", {})))
        yield client


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@contextlib.contextmanager
def dask_client(scheduler: str, *, workers: int, address: str | None = None,
                jobqueue: Mapping[str, Any] | None = None, scheduler_file: str | Path | None = None,
                ) -> Iterator[Any]:
    """A ``distributed.Client`` on the chosen cluster, closed (with any cluster we started) on exit.

    ``scheduler="local"`` starts a ``local_cluster(workers)``, or, with ``scheduler_file``, connects to the one
    ``serve_local_cluster`` runs for the whole workflow (waiting for it to come up).
    Must run in a ``__main__``-guarded entry point (the CLI): local workers are started with ``spawn``.
    A scheduler and workers this process starts (``local``, ``jobqueue``) run with ``BACKGROUND_INTERVALS``; a
    bare client has no such timers.
    """
    import dask
    import distributed  # noqa: F401  its config defaults first: leaving dask.config.set would otherwise drop them

    with dask.config.set(_background_intervals()):
        with _client_on(scheduler, workers=workers, address=address, jobqueue=jobqueue,
                        scheduler_file=scheduler_file) as client:
            yield client


@contextlib.contextmanager
def _client_on(scheduler: str, *, workers: int, address: str | None, jobqueue: Mapping[str, Any] | None,
               scheduler_file: str | Path | None) -> Iterator[Any]:
    from distributed import Client

    if scheduler == "local" and scheduler_file:
        with _shared_client(Path(scheduler_file)) as client:
            yield client
    elif scheduler == "local":
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
