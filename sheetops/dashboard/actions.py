"""What the dashboard's buttons change in the store, each through the code path the CLI
uses too: a Run now is a run request (``Store.request_run``), a replay requeues dead
letters with :func:`sheetops.pipelines.deadletters.requeue` (``sheetops replay``'s).

Pages call these only for a logged-in user (:func:`sheetops.dashboard.auth.require_access`),
the same gate as Run now.
"""

from __future__ import annotations

from collections.abc import Sequence

from sheetops.pipelines import deadletters
from sheetops.store import Store


def replay(store: Store, job: str, *, stage: str | None = None,
           keys: Sequence[str] | None = None, run_now: bool = False,
           requested_by: str = "") -> tuple[int, int | None]:
    """Put ``job``'s dead letters (of ``stage``, or only ``keys``) back on their queues
    as they were; they go through at the job's next run — at once with ``run_now``,
    which files a Run now request. Returns (records requeued, request id or None)."""
    count = deadletters.requeue(store.queues, None, job, stage=stage,
                                keys=list(keys) if keys else None)
    request = store.request_run(job, requested_by=requested_by) if count and run_now else None
    return count, request
