"""Run now requests: the dashboard asks, the running scheduler claims and links a run."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, insert, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database


class RunRequestStore:
    """The ``run_requests`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def request_run(self, job: str, requested_by: str, dry_run: bool = False) -> int:
        """Ask the running scheduler to run ``job`` now (the dashboard's Run now)."""
        with self.db.engine.begin() as conn:
            result = conn.execute(insert(t.run_requests).values(
                job=job, requested_by=requested_by, dry_run=dry_run, created_at=time.time()))
            return int(result.inserted_primary_key[0])

    def claim_run_requests(self) -> list[dict[str, Any]]:
        """Every unclaimed request, oldest first, marked claimed."""
        with self.db.engine.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(t.run_requests).where(t.run_requests.c.claimed_at.is_(None))
                .order_by(t.run_requests.c.id))]
            if rows:
                conn.execute(update(t.run_requests)
                             .where(t.run_requests.c.id.in_([r["id"] for r in rows]))
                             .values(claimed_at=time.time()))
        return rows

    def link_request(self, request_id: int, run_id: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(update(t.run_requests).where(t.run_requests.c.id == request_id)
                         .values(run_id=run_id))

    def pending_count(self) -> int:
        """Requests not claimed yet."""
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.run_requests)
                                    .where(t.run_requests.c.claimed_at.is_(None)))
                       .scalar_one())
