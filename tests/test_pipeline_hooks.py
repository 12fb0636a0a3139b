"""What Snakemake's own process runs, kept short: its start (reading the Snakefile imports reluflow before any
job starts) and its end (Snakemake's pending rate-limiter timers are cancelled, not waited for)."""

import ast
import subprocess
import sys
import threading
from pathlib import Path

import reluflow.pipeline
from reluflow.pipeline import cancel_pending_timers


def test_cancel_pending_timers_cancels_waiting_timers_and_leaves_other_threads():
    fired = threading.Event()
    timers = [threading.Timer(600.0, fired.set) for _ in range(2)]
    stop_other = threading.Event()
    other = threading.Thread(target=stop_other.wait)
    for t in (*timers, other):
        t.start()
    try:
        assert cancel_pending_timers() >= 2
        for t in timers:
            t.join(60.0)  # a cancelled timer's thread ends at once; an uncancelled one would wait 600 s
            assert not t.is_alive()
        assert not fired.is_set()
        assert other.is_alive()  # not a timer: untouched
        assert cancel_pending_timers() == 0
    finally:
        stop_other.set()
        other.join()
        for t in timers:
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


def test_lazy_pipeline_names_resolve_and_are_listed():
    for name in reluflow.pipeline._LAZY:
        assert name in reluflow.pipeline.__all__ and name in dir(reluflow.pipeline)
        assert callable(getattr(reluflow.pipeline, name))
    try:
        reluflow.pipeline.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
