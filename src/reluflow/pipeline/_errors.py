"""The pipeline's one error type, apart so that the stages and the cluster module can both raise it without
importing each other."""

from __future__ import annotations

__all__ = ["StageError"]


class StageError(RuntimeError):
    """A stage that cannot finish, said in one sentence: what happened and what to do (a rerun resumes)."""
