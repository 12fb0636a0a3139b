"""Pipeline overhead: one cell through ``reluflow.simulate`` in-process vs through the integrate stage on a dask
``LocalCluster`` with 1 and 2 workers, at several shard sizes; optionally the whole quickstart study through
Snakemake with ``--cores 1`` and ``--cores 2``.

Reported, each the median of ``repeats`` runs: the cluster's start-up time (workers started and the stack
imported in them; paid once per integrate job, i.e. once per study); the init table's time (``write_init``, which
the integrate stage runs before it opens its cluster); the cost of cutting the cell into shards when computed
without dask (``t_shards``: every shard's ``run_shard`` called in turn in a fresh process set up like a local
worker, i.e. one BLAS thread and the worker's malloc settings, against ``t_simulate`` for the whole cell at once:
the integrate loop's per-step overhead is paid per shard); the dask overhead per shard
``(t_1worker - startup - t_init - t_shards) / n_shards`` (scheduling, serialization, shard files and their checks,
the final join) as a percentage of a shard's compute time; and the parallel speedup ``t_1 / t_2``. Separately, on
a worker that is already running, the stage's wall time against the sum of its tasks' compute time from dask's
task stream: what dask and the stage's files add per shard.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import reluflow
from reluflow.config import Execution, expand_study, load_config_files
from reluflow.pipeline._cluster import BLAS_THREAD_VARS, WORKER_MALLOC_ENV, dask_client
from reluflow.pipeline._stages import plan_shards, write_init, write_integrate

from ._timing import print_table

ROOT = Path(__file__).resolve().parent.parent


def quickstart_cell(cell_id: str = "w16-gd", n_trajectories: int | None = None):
    spec = load_config_files([ROOT / "config.yaml"])["studies"]["quickstart"]
    if n_trajectories is not None:
        spec = {**spec, "n_trajectories": n_trajectories}
    return expand_study("quickstart", spec).cells[cell_id]


def _clear_study(study_dir: Path) -> None:
    """Remove what an integrate run left in ``study_dir``: the cells' tables, their finished shards and the
    ``.done`` names of finished tables (with which a rerun would reuse the cells instead of computing them)."""
    shutil.rmtree(study_dir, ignore_errors=True)
    study_dir.mkdir(parents=True)


def _time_integrate(cells, study_dir: Path, workers: int, shard_size: int, **cluster) -> float:
    """Seconds for ``write_integrate(cells, ...)`` into an emptied ``study_dir``: every cell's init table, then every
    shard computed (none reused), the cluster's start-up included unless ``cluster`` names a running one."""
    _clear_study(study_dir)
    t0 = time.perf_counter()
    execution = Execution.from_mapping(workers=workers, shard_size=shard_size, progress_interval=1e9, **cluster)
    counts = write_integrate(cells, study_dir, execution)
    seconds = time.perf_counter() - t0
    if counts["cells_reused"] or counts["shards_reused"]:
        raise RuntimeError(f"integrate reused finished work in {study_dir} ({counts}): the timing is not valid")
    return seconds


def _time_init(cell, workdir: Path) -> float:
    """Seconds for the cell's init table (``write_init``), part of the integrate stage before its cluster starts."""
    t0 = time.perf_counter()
    write_init(cell, workdir / "init.parquet")
    return time.perf_counter() - t0


def _on_running_worker(cell, workdir: Path, shard_size: int) -> dict[str, float]:
    """The integrate stage on a one-worker ``LocalCluster`` that is already running (and has run a task).

    From dask's task stream (worker clock; the same machine's clock as the stage's): ``wall`` the stage's
    seconds, ``compute`` its tasks' compute seconds, and how the difference splits: ``lead`` from the stage's
    start to its first task (writing the init table, connecting a client, planning, reading the first inits and
    submitting), ``gaps`` the idle time between consecutive
    tasks on the worker (dask's scheduling and the transfers of results between tasks: what a shard costs the
    scheduler), ``tail`` from the last task's end to the stage's end (the last shard's transfer and files, then
    the final join of all shard files into the cell's tables, which grows with the trajectories, not the shards).
    """
    from distributed import get_task_stream

    with dask_client("local", workers=1) as client:
        client.wait_for_workers(1)
        client.submit(abs, 1).result()
        with get_task_stream(client) as stream:
            t_start = time.time()
            wall = _time_integrate([cell], workdir, 1, shard_size, scheduler="address",
                                   address=client.scheduler.address)
            t_end = time.time()
        spans = sorted((ss["start"], ss["stop"]) for task in stream.data for ss in task["startstops"]
                       if ss["action"] == "compute")
    compute = sum(b - a for a, b in spans)
    gaps = sum(max(0.0, spans[i + 1][0] - spans[i][1]) for i in range(len(spans) - 1))
    return {"wall": wall, "compute": compute, "lead": spans[0][0] - t_start, "gaps": gaps,
            "tail": t_end - spans[-1][1]}


def _cluster_startup(workers: int) -> float:
    t0 = time.perf_counter()
    with dask_client("local", workers=workers) as client:
        client.wait_for_workers(workers)
    return time.perf_counter() - t0


_SHARDS_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
import reluflow
from bench.pipeline import quickstart_cell
from reluflow.dynamics import initialize
from reluflow.pipeline._stages import plan_shards, run_shard
cell = quickstart_cell(sys.argv[2], int(sys.argv[3]))
theta0 = initialize(reluflow.Problem.from_dict(cell.problem), cell.init, range(cell.n_trajectories), cell.seed)
t0 = time.perf_counter()
for s in plan_shards(cell, int(sys.argv[4])):
    run_shard(cell, s.start, s.stop, theta0[s.start : s.stop])
print(time.perf_counter() - t0)
"""


def _shards_without_dask(cell_id: str, n_trajectories: int, shard_size: int) -> float:
    """Seconds for every shard's ``run_shard`` in turn, in a fresh process set up like a local dask worker."""
    env = {**os.environ, **WORKER_MALLOC_ENV, **dict.fromkeys(BLAS_THREAD_VARS, "1")}
    done = subprocess.run([sys.executable, "-c", _SHARDS_CHILD, str(ROOT), cell_id, str(n_trajectories),
                           str(shard_size)], env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def run(cell_id: str = "w16-gd", n_trajectories: int = 256, shard_sizes: tuple[int, ...] = (8, 32, 128, 256),
        repeats: int = 3, snakemake: bool = False) -> dict:
    cell = quickstart_cell(cell_id, n_trajectories)
    t0 = time.perf_counter()
    reluflow.simulate(cell.problem, method=cell.method, init=cell.init, n_trajectories=cell.n_trajectories,
                      seed=cell.seed)
    t_sim = time.perf_counter() - t0
    med = statistics.median
    startup = {w: med(_cluster_startup(w) for _ in range(repeats)) for w in (1, 2)}
    rows = []
    with tempfile.TemporaryDirectory(prefix="reluflow-bench-") as tmp:
        study_dir = Path(tmp) / "study"
        t_init = med(_time_init(cell, Path(tmp)) for _ in range(repeats))
        for shard in shard_sizes:
            n_shards = len(plan_shards(cell, shard))
            t_shards = med(_shards_without_dask(cell_id, n_trajectories, shard) for _ in range(repeats))
            t1 = med(_time_integrate([cell], study_dir, 1, shard) for _ in range(repeats))
            t2 = med(_time_integrate([cell], study_dir, 2, shard) for _ in range(repeats))
            overhead = (t1 - startup[1] - t_init - t_shards) / n_shards
            warm = [_on_running_worker(cell, study_dir, shard) for _ in range(repeats)]
            t_warm, t_tasks = med(w["wall"] for w in warm), med(w["compute"] for w in warm)
            gaps, lead, tail = (med(w[k] for w in warm) for k in ("gaps", "lead", "tail"))
            rows.append({
                "shard_size": shard, "n_shards": n_shards, "t_simulate_s": t_sim, "t_shards_s": t_shards,
                "t_1worker_s": t1, "t_2workers_s": t2, "speedup_2_over_1": t1 / t2,
                "speedup_excl_startup": (t1 - startup[1] - t_init) / (t2 - startup[2] - t_init),
                "dask_overhead_per_shard_ms": 1e3 * overhead,
                "dask_overhead_pct_of_shard": 100 * overhead / (t_shards / n_shards),
                "t_running_1worker_s": t_warm, "t_tasks_s": t_tasks,
                "stage_overhead_per_shard_ms": 1e3 * (t_warm - t_tasks) / n_shards,
                "stage_overhead_pct_of_tasks": 100 * (t_warm - t_tasks) / t_tasks,
                "lead_s": lead, "tail_s": tail,
                "scheduling_gap_per_shard_ms": 1e3 * gaps / max(n_shards - 1, 1),
                "scheduling_gap_pct_of_shard": 100 * (gaps / max(n_shards - 1, 1)) / (t_tasks / n_shards),
            })
    print(f"pipeline overhead, cell quickstart/{cell_id} with {cell.n_trajectories} trajectories, medians of "
          f"{repeats} runs (LocalCluster start-up with imports: 1 worker {startup[1]:.2f} s, "
          f"2 workers {startup[2]:.2f} s; the cell's init table {t_init:.3f} s):")
    print_table(rows, ["shard_size", "n_shards", "t_simulate_s", "t_shards_s", "t_1worker_s", "t_2workers_s",
                       "speedup_2_over_1", "speedup_excl_startup", "dask_overhead_per_shard_ms",
                       "dask_overhead_pct_of_shard"])
    print("the same stage on an already running worker: wall time against its tasks' compute time (task stream):")
    print_table(rows, ["shard_size", "n_shards", "t_running_1worker_s", "t_tasks_s", "stage_overhead_per_shard_ms",
                       "stage_overhead_pct_of_tasks"])
    print("where that goes: before the first task (init table, client, submission), between tasks on the worker "
          "(scheduling; per shard after the first), after the last task (its files, the final join of all shards):")
    print_table(rows, ["shard_size", "n_shards", "lead_s", "scheduling_gap_per_shard_ms",
                       "scheduling_gap_pct_of_shard", "tail_s"])
    out = {"cell": cell_id, "repeats": repeats, "startup_s": startup, "init_s": t_init, "rows": rows}
    if snakemake:
        out["snakemake"] = run_snakemake(repeats)
    return out


def _rule_seconds(workdir: Path) -> dict[str, float]:
    """Wall-clock seconds per rule, summed over its jobs, from Snakemake's benchmark files."""
    totals: dict[str, float] = {}
    for tsv in sorted((workdir / "benchmarks").rglob("*.tsv")):
        rel = tsv.relative_to(workdir / "benchmarks").parts  # study/rule.tsv or study/rule/cell.tsv
        rule = rel[1] if len(rel) > 2 else Path(rel[1]).stem
        seconds = float(tsv.read_text().splitlines()[1].split("\t")[0])
        totals[rule] = totals.get(rule, 0.0) + seconds
    return totals


# the integrate job's log lines that end its phases (reluflow.pipeline and the CLI), after the timestamp
_PHASE_ENDS = (("inits", "integrate: "), ("cluster_start", "dask: "), ("shards", "cell "),
               ("close", "integrate done"))


def _integrate_phases(workdir: Path, study: str = "quickstart") -> dict[str, float]:
    """The study's integrate job split by the timestamps of its log (``logs/{study}/integrate.log``), seconds:
    ``inits`` from its first line (the first cell's init table written) to the shard plan, ``cluster_start``
    from there to its LocalCluster's workers being up, ``shards`` from there to the last cell's tables written,
    ``close`` from there to the job's last line (the cluster shut down), and ``process`` the rest of the job's
    time in its benchmark file (Python's start and imports, the study read, the first init, the exit). Empty
    where the log or the benchmark file is missing or does not read as expected."""
    import datetime

    log_path, tsv = workdir / "logs" / study / "integrate.log", workdir / "benchmarks" / study / "integrate.tsv"
    try:
        text = log_path.read_text()
        job = float(tsv.read_text().splitlines()[1].split("\t")[0])
    except (OSError, ValueError, IndexError):
        return {}
    lines = [(datetime.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2])
             for m in re.finditer(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ reluflow[\w.]*: (.*)$", text, re.M)]
    if not lines:
        return {}
    phases, t = {}, lines[0][0]
    for phase, marker in _PHASE_ENDS:
        ends = [ts for ts, msg in lines if msg.startswith(marker)]
        if not ends:
            return {}
        phases[phase], t = max(ends) - t, max(ends)
    phases["process"] = job - (t - lines[0][0])
    return phases


class MachineCPU:
    """The machine's idle core-seconds while the ``with`` block ran, from ``/proc/stat`` (Linux; ``idle`` stays None
    elsewhere): the ``idle`` and ``iowait`` time of every CPU. On the two-core machine a ``--cores 2`` run has to
    itself, that is what the run's serial sections (one process while the others wait) leave unused, however fast
    the host is that round; time the hypervisor steals counts as busy, not idle. Other processes' work on the
    machine counts as busy too: measure on an otherwise quiet machine."""

    def __enter__(self) -> MachineCPU:
        self._start, self.idle = self._read(), None
        return self

    def __exit__(self, *exc) -> None:
        end = self._read()
        if self._start is not None and end is not None:
            self.idle = (end - self._start) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _read() -> int | None:
        try:
            with open("/proc/stat") as f:
                fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
            return int(fields[4]) + int(fields[5])
        except (OSError, ValueError, IndexError):
            return None


SNAKEMAKE_MODES = {
    "default": [],  # the workflow as it is: --cores 1 against --cores 2, each run free to use the whole machine
    # --cores 2 with a LocalCluster of one worker: against default --cores 2, two dask workers against one with
    # everything else (Snakemake, the cells table and inits, the cluster's start-up, aggregate, figures) on the same
    # two cores
    "one_worker": ["--config", "execution={workers: 1}"],
    # the default, with each run held to as many CPUs as its --cores (CPU affinity, inherited by every process the
    # run starts): one CPU against two. Unpinned, a --cores 1 run still has the machine's other CPUs for the work
    # outside its workers (Snakemake itself, the integrate job's driver, scheduler and nanny, the worker's
    # start-up), which a --cores 2 run on two CPUs must fit beside its two workers.
    "pinned": [],
}
MODE_CORES = {"one_worker": (2,)}  # the --cores each mode runs with (default 1 and 2)
PINNED_MODES = ("pinned",)


def default_modes() -> tuple[str, ...]:
    """Every mode this machine can run: all of ``SNAKEMAKE_MODES``, less ``pinned`` where CPU affinity cannot be
    set or fewer than two CPUs are allowed."""
    try:
        pinned_cpus(2)
    except RuntimeError:
        return tuple(m for m in SNAKEMAKE_MODES if m not in PINNED_MODES)
    return tuple(SNAKEMAKE_MODES)


@contextlib.contextmanager
def held_to(cpus: set[int] | None):
    """Run the block with this thread held to ``cpus`` (None: unchanged); processes it starts inherit that.

    Set in the parent around the child's start rather than in ``preexec_fn``, which is unsafe when the parent has
    threads (an earlier suite's dask cluster leaves some)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def pinned_cpus(cores: int) -> set[int]:
    """The first ``cores`` CPUs this process may run on, for a run held to ``cores`` CPUs (Linux only)."""
    if not hasattr(os, "sched_getaffinity"):
        raise RuntimeError("snakemake mode 'pinned' needs CPU affinity (os.sched_setaffinity), which this platform "
                           "lacks: choose the other modes")
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < cores:
        raise RuntimeError(f"snakemake mode 'pinned' needs {cores} CPUs for --cores {cores}, but this process may run "
                           f"on {len(allowed)} ({allowed})")
    return set(allowed[:cores])


def _study_on_cluster(cells, workdir: Path, workers: int) -> tuple[float, float]:
    """Seconds for the integrate stage of every cell (``write_integrate``, as the study's integrate job calls it:
    inits, then all cells' shards, each cell's tables as its last shard comes in) on a ``LocalCluster`` of
    ``workers`` that is already up and has run a task, and the seconds its tasks computed, summed over the workers
    (dask's task stream). Excludes the cluster's start-up and the job's Python start-up, which the integrate job
    pays once per study (``_integrate_phases``)."""
    from distributed import get_task_stream

    with dask_client("local", workers=workers) as client:
        client.wait_for_workers(workers)
        client.run(abs, 1)  # every worker has run something
        with get_task_stream(client) as stream:
            wall = _time_integrate(cells, workdir / f"w{workers}", workers, 128, scheduler="address",
                                   address=client.scheduler.address)
        compute = sum(s["stop"] - s["start"] for task in stream.data for s in task["startstops"]
                      if s["action"] == "compute")
        return wall, compute


def run_study_dask(repeats: int = 3) -> dict:
    """The quickstart study's integrate stage (every cell, every shard) on a running ``LocalCluster`` with one
    and with two workers, rounds in turn: the dask part of the study alone, without Snakemake, its other jobs,
    the integrate job's process and cluster start-up, or the figures. Also the tasks' compute seconds summed over
    the workers: where two workers take more than one for the same shards, the lost speedup is in the shards
    themselves (two busy CPUs), not in the scheduling."""
    spec = load_config_files([ROOT / "config.yaml"])["studies"]["quickstart"]
    cells = list(expand_study("quickstart", spec).cells.values())
    times: dict[int, list[float]] = {1: [], 2: []}
    compute: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="reluflow-bench-study-") as tmp:
        for _ in range(repeats):
            for workers in (1, 2):
                wall, busy = _study_on_cluster(cells, Path(tmp), workers)
                times[workers].append(wall)
                compute[workers].append(busy)
    med = {w: statistics.median(ts) for w, ts in times.items()}
    busy_med = {w: statistics.median(cs) for w, cs in compute.items()}
    ratios = [a / b for a, b in zip(times[1], times[2], strict=True)]
    print(f"quickstart integrate stage on a running LocalCluster ({len(cells)} cells, one write_integrate), "
          f"medians of {repeats} rounds: 1 worker {med[1]:.1f} s, 2 workers {med[2]:.1f} s, speedup of the "
          f"medians {med[1] / med[2]:.2f}x, per-round median {statistics.median(ratios):.2f}x "
          f"(runs: 1 worker {[round(t, 1) for t in times[1]]}, 2 workers {[round(t, 1) for t in times[2]]}; "
          f"per round {[round(r, 2) for r in ratios]})")
    print(f"  the same shards' compute seconds summed over the workers (task stream), medians: 1 worker "
          f"{busy_med[1]:.1f} s, 2 workers {busy_med[2]:.1f} s ({busy_med[2] / busy_med[1]:.3f}x): with each task "
          f"that much longer, two workers give at most {2 * busy_med[1] / busy_med[2]:.2f}x")
    return {"repeats": repeats, "workers_1_s": med[1], "workers_2_s": med[2], "speedup": med[1] / med[2],
            "speedup_per_round_median": statistics.median(ratios), "runs": times, "speedup_per_round": ratios,
            "task_compute_s": compute, "task_compute_ratio": busy_med[2] / busy_med[1]}


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f}, min {min(values):.2f}, max {max(values):.2f}"


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over the runs that have it."""
    keys = dict.fromkeys(k for r in runs for k in r)
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def run_snakemake(repeats: int = 3, modes: tuple[str, ...] | None = None, study_dask_rounds: int | None = None) -> dict:
    """The whole quickstart study through Snakemake: each mode's runs (``--cores 1`` and ``--cores 2``; for
    ``one_worker`` ``--cores 2`` with one dask worker) in turn, ``repeats`` rounds, each run in a fresh copy of the
    workflow. Reported: every run's wall time, their medians, the speedup of the medians and per round (a round's
    ``--cores 1`` time over its ``--cores 2`` time; for ``one_worker``, its time over the same round's
    ``--cores 2`` run of ``default``, or of ``pinned`` where two CPUs are all this process may use), the machine's
    idle core-seconds (``MachineCPU``), the 1-minute load average as each run starts and, medians over the
    rounds, seconds per rule and the integrate job's phases (``_integrate_phases``). Then, for comparison, the
    study's integrate stage alone on a running cluster (``run_study_dask``, ``study_dask_rounds`` rounds: default
    ``repeats``, 0 skips it). Mode ``pinned`` is ``default`` with each run held to as many CPUs as its
    ``--cores`` (CPU affinity): one CPU against two, where the other modes leave every run the whole machine.
    ``modes`` None: ``default_modes()``."""
    modes = default_modes() if modes is None else modes
    unknown = sorted(set(modes) - set(SNAKEMAKE_MODES))
    if unknown:
        raise ValueError(f"snakemake modes {unknown} are not known: choose from {list(SNAKEMAKE_MODES)}")
    for mode in set(modes) & set(PINNED_MODES):  # before any round: it fails here or not at all
        pinned_cpus(max(MODE_CORES.get(mode, (1, 2))))
    combos = [(mode, cores) for mode in modes for cores in MODE_CORES.get(mode, (1, 2))]
    times: dict[tuple[str, int], list[float]] = {c: [] for c in combos}
    idle: dict[tuple[str, int], list[float | None]] = {c: [] for c in combos}
    rules: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in combos}
    phases: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in combos}
    loads: list[float] = []
    for _ in range(repeats):
        for mode, cores in combos:
            with tempfile.TemporaryDirectory(prefix="reluflow-bench-smk-") as tmp:
                for item in ("Snakefile", "workflow", "config.yaml", "profiles"):
                    src = ROOT / item
                    (shutil.copytree if src.is_dir() else shutil.copy)(src, Path(tmp) / item)
                cpus = pinned_cpus(cores) if mode in PINNED_MODES else None
                loads.append(os.getloadavg()[0])
                t0 = time.perf_counter()
                with MachineCPU() as cpu, held_to(cpus):
                    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), "--quiet",
                                    *SNAKEMAKE_MODES[mode]], cwd=tmp, check=True, env={**os.environ},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[mode, cores].append(time.perf_counter() - t0)
                idle[mode, cores].append(cpu.idle)
                rules[mode, cores].append(_rule_seconds(Path(tmp)))
                phases[mode, cores].append(_integrate_phases(Path(tmp)))
    med = {c: statistics.median(ts) for c, ts in times.items()}
    out: dict = {"repeats": repeats, "load_avg_1min_at_run_start": loads, "modes": {}}
    print(f"quickstart through Snakemake, {repeats} round(s), every combination once per round (1-minute load "
          f"average at the runs' starts: {_spread(loads)}):")
    for mode in modes:
        cores_run = MODE_CORES.get(mode, (1, 2))
        entry = out["modes"][mode] = {
            "runs": {c: times[mode, c] for c in cores_run}, **{f"cores_{c}_s": med[mode, c] for c in cores_run},
            "machine_idle_core_s": {c: idle[mode, c] for c in cores_run},
            "per_rule_s": {c: _medians(rules[mode, c]) for c in cores_run},
            "integrate_phases_s": {c: _medians(phases[mode, c]) for c in cores_run}}
        if mode == "one_worker":
            print(f"  {mode:10s} --cores 2 with one dask worker {med[mode, 2]:6.1f} s (runs: "
                  f"{[round(t, 1) for t in times[mode, 2]]})")
            # pinned --cores 2 is the same setup as one_worker's where two CPUs are all this process may use
            same = "pinned" in modes and hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) == 2
            ref = "default" if "default" in modes else "pinned" if same else None
            if ref is not None:  # two workers against one, everything else on the same two cores
                ratios = [a / b for a, b in zip(times[mode, 2], times[ref, 2], strict=True)]
                entry.update(reference=ref, two_workers_speedup=med[mode, 2] / med[ref, 2],
                             two_workers_speedup_per_round=ratios)
                print(f"  two dask workers ({ref} --cores 2) against one, --cores 2 both: speedup of the medians "
                      f"{med[mode, 2] / med[ref, 2]:.2f}x, per round {[round(r, 2) for r in ratios]} "
                      f"({_spread(ratios)})")
        else:
            ratios = [a / b for a, b in zip(times[mode, 1], times[mode, 2], strict=True)]
            entry.update(speedup=med[mode, 1] / med[mode, 2], speedup_per_round=ratios,
                         speedup_per_round_median=statistics.median(ratios))
            print(f"  {mode:10s} --cores 1 {med[mode, 1]:6.1f} s, --cores 2 {med[mode, 2]:6.1f} s, speedup of the "
                  f"medians {med[mode, 1] / med[mode, 2]:.2f}x (runs: 1 core {[round(t, 1) for t in times[mode, 1]]}"
                  f", 2 cores {[round(t, 1) for t in times[mode, 2]]})")
            print(f"  {mode:10s} per round {[round(r, 2) for r in ratios]} ({_spread(ratios)})")
        for c in cores_run:
            ncpu = len(pinned_cpus(c)) if mode in PINNED_MODES else os.cpu_count()
            if all(i is not None for i in idle[mode, c]):
                # idle core-seconds of the machine; for a run on one CPU of two, (2 - 1) x wall - idle is the work
                # that ran beside it on the other CPU
                print(f"  {mode:10s} --cores {c}: machine idle core-seconds per run "
                      f"{[round(i, 1) for i in idle[mode, c]]} (median {statistics.median(idle[mode, c]):.1f}; "
                      f"{os.cpu_count()} CPUs, the run on {ncpu})")
            print(f"  {mode:10s} --cores {c}: medians, seconds per rule (jobs summed): "
                  + ", ".join(f"{r} {v:.1f}" for r, v in entry["per_rule_s"][c].items()))
            if entry["integrate_phases_s"][c]:
                print(f"  {mode:10s} --cores {c}: medians, integrate job by its log: "
                      + ", ".join(f"{r} {v:.2f}" for r, v in entry["integrate_phases_s"][c].items()))
    rounds = repeats if study_dask_rounds is None else study_dask_rounds
    if rounds > 0:
        out["study_dask"] = run_study_dask(rounds)
    return out
