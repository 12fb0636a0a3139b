"""What the workflow's ``onsuccess`` and ``onerror`` handlers call besides stopping the shared cluster."""

from __future__ import annotations

import threading

__all__ = ["cancel_pending_timers"]


def cancel_pending_timers() -> int:
    """Cancel Snakemake's ``threading.Timer`` threads still waiting in this process (those whose function comes
    from a ``snakemake`` module; others are left alone); returns how many there were.

    Snakemake's job rate limiter (``--max-jobs-per-timespan``, on by default at ``100/1s``) starts a 1 s
    ``threading.Timer`` after every scheduling pass, to look at the queue again once the timespan is over. The
    timer is not a daemon thread, so the interpreter waits for the last one before it exits: every run ended
    up to a second after its last job (0.8 s of a 5 s figures-only run). Called when the run is over and no job
    is left to schedule, so nothing waits for what the timers would have triggered.
    """
    timers = [t for t in threading.enumerate() if isinstance(t, threading.Timer) and t.is_alive()
              and getattr(t.function, "__module__", "").startswith("snakemake.")]
    for timer in timers:
        timer.cancel()
    return len(timers)
