"""Run now requests: the dashboard (or ``run-job``) asks, the running scheduler claims
with a lease, submits and links a run.

Each request is a row of ``run_requests`` — its visible history for the dashboard (who
asked, when it was picked up, which run it became) — and an item of the durable queue
:data:`QUEUE`, put in the same transaction. The scheduler claims items with a lease,
under its leader fence, and in that same transaction gives each request the id its run
will have (kept when the request is claimed again). It acks only once that run's row is
in the store. So a request is neither lost nor run twice when its scheduler dies: killed
before the run's row commits, the request's lease runs out and the next leader runs it
under the same id; killed after, the next leader finds the run and only acks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, insert, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database
from sheetops.store.leases import Fence, check_fence
from sheetops.store.queue import Claim, lease_for
from sheetops.store.queue_sql import Queues

#: The queue run requests wait on.
QUEUE = "run_requests"
#: How long handing one request to the runner may take: the default lease's timeout.
SUBMIT_TIMEOUT_S = 5.0


class RunRequestStore:
    """The ``run_requests`` table and the :data:`QUEUE` queue, kept together."""

    def __init__(self, db: Database, queues: Callable[[], Queues]) -> None:
        self.db = db
        self._open_queues = queues  # the store's, opened on first use
        self._claims: dict[int, Claim] = {}  # request id -> this process's claim

    @property
    def queues(self) -> Queues:
        return self._open_queues()

    def request_run(self, job: str, requested_by: str, dry_run: bool = False) -> int:
        """Ask the running scheduler to run ``job`` now (the dashboard's Run now)."""
        with self.queues.transaction() as tx:
            result = tx.connection.execute(insert(t.run_requests).values(
                job=job, requested_by=requested_by, dry_run=dry_run, created_at=time.time()))
            request_id = int(result.inserted_primary_key[0])
            tx.put(QUEUE, [{"request_id": request_id, "job": job,
                            "requested_by": requested_by, "dry_run": bool(dry_run)}],
                   keys=[str(request_id)], dedupe=True)
        return request_id

    def claim_run_requests(self, consumer: str = "", lease_s: float | None = None,
                           limit: int = 100, *, new_run_id: Callable[[], str] | None = None,
                           fence: Fence | None = None) -> list[dict[str, Any]]:
        """Requests waiting (or whose last claimer's lease ran out), oldest first, leased
        to ``consumer`` for ``lease_s`` (``lease_for(SUBMIT_TIMEOUT_S)``) and marked
        claimed. Each must be settled by :meth:`link_request` within the lease.

        With ``new_run_id``, a request claimed for the first time is given its run's id
        (``run_id``) in the same transaction; one claimed again keeps the id it has.
        With ``fence``, a replaced leader claims nothing
        (:class:`~sheetops.store.leases.Fenced`)."""
        lease = lease_for(SUBMIT_TIMEOUT_S) if lease_s is None else lease_s
        with self.queues.transaction() as tx:
            claims = tx.claim(QUEUE, limit, consumer=consumer or "scheduler", lease_s=lease)
            if not claims:
                return []
            check_fence(tx.connection, fence)  # raising, it undoes the claim
            ids = [int(c.payload["request_id"]) for c in claims]
            tx.connection.execute(update(t.run_requests).where(t.run_requests.c.id.in_(ids))
                                  .values(claimed_at=time.time()))
            rows = {r.id: dict(r._mapping) for r in tx.connection.execute(
                select(t.run_requests).where(t.run_requests.c.id.in_(ids)))}
            for row in rows.values():
                if new_run_id is not None and row["run_id"] is None:
                    row["run_id"] = new_run_id()
                    tx.connection.execute(update(t.run_requests)
                                          .where(t.run_requests.c.id == row["id"])
                                          .values(run_id=row["run_id"]))
        for request_id, claim in zip(ids, claims, strict=True):
            self._claims[request_id] = claim
        return [rows[i] for i in ids if i in rows]

    def link_request(self, request_id: int, run_id: str | None) -> None:
        """Settle a claimed request: record the run it became (``None``: none, e.g. an
        unknown job; an id given at the claim is cleared) and ack it, in one
        transaction. Raises
        :class:`~sheetops.store.queue.StaleClaim` (and records nothing) when the lease
        ran out and another scheduler may have the request now."""
        claim = self._claims.get(request_id)
        with self.queues.transaction() as tx:
            tx.connection.execute(update(t.run_requests)
                                  .where(t.run_requests.c.id == request_id)
                                  .values(run_id=run_id))
            if claim is not None:
                tx.ack([claim])
        self._claims.pop(request_id, None)

    def pending_count(self) -> int:
        """Requests not claimed yet."""
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.run_requests)
                                    .where(t.run_requests.c.claimed_at.is_(None)))
                       .scalar_one())
