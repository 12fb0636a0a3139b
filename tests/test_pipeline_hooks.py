"""What Snakemake's own process runs, kept short: its start (reading the Snakefile imports reluflow before any
job starts) and its end (Snakemake's pending rate-limiter timers are cancelled, not waited for)."""

import ast
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import reluflow.pipeline
from reluflow.pipeline import cancel_pending_timers


def test_cancel_pending_timers_cancels_snakemakes_timers_only():
    from snakemake.scheduling.job_scheduler import JobScheduler

    # the timer Snakemake's scheduler leaves after each pass, made by Snakemake's own code
    scheduler = SimpleNamespace(_open_jobs=threading.Semaphore(0))
    JobScheduler._schedule_reevalutation(scheduler, 600)
    fired = threading.Event()

    def release() -> None:
        fired.set()

    release.__module__ = "snakemake.scheduling.job_scheduler"
    ours = threading.Timer(600.0, release)
    not_snakemakes = threading.Timer(600.0, fired.set)
    stop_other = threading.Event()
    other = threading.Thread(target=stop_other.wait)
    for t in (ours, not_snakemakes, other):
        t.start()
    snakemake_timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t is not ours
                        and t is not not_snakemakes]
    try:
        assert len(snakemake_timers) >= 1
        assert cancel_pending_timers() == len(snakemake_timers) + 1
        for t in (ours, *snakemake_timers):
            t.join(60.0)  # a cancelled timer's thread ends at once; an uncancelled one would wait 600 s
            assert not t.is_alive()
        assert not fired.is_set() and not scheduler._open_jobs.acquire(blocking=False)
        assert not_snakemakes.is_alive() and other.is_alive()  # not Snakemake's: untouched
        assert cancel_pending_timers() == 0
    finally:
        stop_other.set()
        other.join()
        not_snakemakes.cancel()
        for t in snakemake_timers:
            t.cancel()


def test_what_the_snakefile_imports_leaves_pandas_and_pyarrow_unimported():
    """Snakemake starts no job until it has read the Snakefile; pandas was 0.4 s of that (docs/architecture.md)."""
    root = Path(__file__).resolve().parents[1]
    imports = [line.strip() for f in (root / "Snakefile", *sorted((root / "workflow" / "rules").glob("*.smk")))
               for line in f.read_text().splitlines() if line.startswith(("import reluflow", "from reluflow"))]
    assert any("plan_from_snakemake" in line for line in imports)
    code = "; ".join([*imports, "import sys", "print(sorted(m for m in ('pandas', 'pyarrow') if m in sys.modules))"])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ast.literal_eval(out.stdout.strip()) == []


def test_every_pipeline_name_resolves_lazy_ones_included():
    assert set(reluflow.pipeline._LAZY) <= set(reluflow.pipeline.__all__)
    for name in reluflow.pipeline.__all__:
        assert getattr(reluflow.pipeline, name) is not None
    assert reluflow.pipeline.write_table is reluflow.pipeline._tables.write_table
    try:
        reluflow.pipeline.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
