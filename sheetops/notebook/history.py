"""Run history and errors from the store, as DataFrames.

Runs, attempts and errors come from the dashboard's read functions (to move into the
store package; when they do, only the import below changes); a pipeline's queues and
dead letters are read in :mod:`sheetops.notebook.pipelines`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from sheetops.dashboard import queries

if TYPE_CHECKING:
    from sheetops.store import Store


def runs(store: Store, *, jobs: list[str] | None = None, window_s: float | None = None,
         limit: int = 1000) -> pd.DataFrame:
    """Recent runs, newest first (``started_at``/``finished_at`` UTC datetimes)."""
    return queries.runs_list(store, window_s, jobs=jobs, limit=limit)


def attempts(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """The attempts of the given runs, with their tracebacks."""
    return queries.attempts_of(store, list(run_ids))


def errors(store: Store, *, jobs: list[str] | None = None, run_ids: list[str] | None = None,
           window_s: float | None = None, limit: int = 1000) -> pd.DataFrame:
    """Recent errors, newest first."""
    return queries.errors_list(store, window_s, jobs=jobs, run_ids=run_ids, limit=limit)


def summary(store: Store, window_s: float) -> pd.DataFrame:
    """Per job over the window: runs, success rate, duration percentiles (as on the
    dashboard's Overview)."""
    return queries.job_summary(store, window_s)


def next_runs(schedule: str, timezone: str, count: int = 3) -> list[Any]:
    return queries.next_runs(schedule, timezone, count=count)


def queue_depths(store: Store) -> pd.DataFrame:
    """Queue depth per pipeline stage (``stage``, ``depth``, ``updated_at``), as the
    scheduler last published it."""
    return queries.queue_depths(store)
