"""What the scheduler publishes about the config and itself: Validation problems, config
change events, gauges, the extent of each status tab and the published job list."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select

from sheetops.store import schema as t
from sheetops.store.db import Database
from sheetops.store.outbox import OutboxStore

if TYPE_CHECKING:
    from sheetops.config.model import JobSpec, Problem


def _job_row(spec: JobSpec, now: float) -> dict[str, Any]:
    return {"job": spec.job, "automation": spec.automation, "schedule": spec.schedule,
            "timezone": spec.timezone or "UTC", "enabled": bool(spec.enabled),
            "owner": spec.owner or "", "notes": spec.notes or "", "published_at": now}


class ConfigStore:
    """Problems, config events, gauges, tab extents and the published jobs."""

    def __init__(self, db: Database, outbox: OutboxStore) -> None:
        self.db = db
        self.outbox = outbox

    def replace_problems(self, problems: Sequence[Problem]) -> bool:
        """Store the current config problems; return whether they changed."""
        new = [{"tab": p.tab, "cell": p.cell, "value": p.value, "problem": p.problem,
                "severity": p.severity} for p in problems]
        with self.db.engine.begin() as conn:
            old = [dict(r._mapping) for r in conn.execute(
                select(t.config_problems.c.tab, t.config_problems.c.cell,
                       t.config_problems.c.value, t.config_problems.c.problem,
                       t.config_problems.c.severity).order_by(t.config_problems.c.id))]
            if old == new:
                return False
            conn.execute(delete(t.config_problems))
            if new:
                conn.execute(insert(t.config_problems), new)
            self.outbox.put([("Validation", "")], conn)
        return True

    def problems(self) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(t.config_problems).order_by(t.config_problems.c.id))]

    def add_config_events(self, events: Iterable[tuple[str, str, str]]) -> None:
        """Append ``(kind, job, detail)`` config change events."""
        rows = [{"time": time.time(), "kind": k, "job": j, "detail": d} for k, j, d in events]
        if rows:
            with self.db.engine.begin() as conn:
                conn.execute(insert(t.config_events), rows)

    def set_gauges(self, values: Mapping[str, float]) -> None:
        if not values:
            return
        now = time.time()
        stmt = self.db.insert(t.gauges)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
            "value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at})
        with self.db.engine.begin() as conn:
            conn.execute(stmt, [{"name": k, "value": float(v), "updated_at": now}
                                for k, v in values.items()])

    def gauges(self) -> dict[str, tuple[float, float]]:
        """name → ``(value, updated_at)``."""
        with self.db.engine.connect() as conn:
            return {r.name: (float(r.value), float(r.updated_at))
                    for r in conn.execute(select(t.gauges))}

    def set_extent(self, tab: str, rows: int) -> None:
        stmt = self.db.insert(t.sheet_extent)
        stmt = stmt.on_conflict_do_update(index_elements=["tab"],
                                          set_={"rows": stmt.excluded.rows})
        with self.db.engine.begin() as conn:
            conn.execute(stmt, [{"tab": tab, "rows": rows}])

    def extents(self) -> dict[str, int]:
        with self.db.engine.connect() as conn:
            return {r.tab: r.rows for r in conn.execute(select(t.sheet_extent))}

    def publish_job_config(self, jobs: Mapping[str, JobSpec] | Iterable[JobSpec]) -> int:
        """Replace the published job configuration with ``jobs`` (the scheduler calls
        this after each successful refresh with ``snapshot.jobs``). Only non-secret
        columns are kept: name, automation, schedule, timezone, enabled, owner, notes.
        Returns the number of jobs published."""
        specs = list(jobs.values()) if isinstance(jobs, Mapping) else list(jobs)
        now = time.time()
        rows = [_job_row(spec, now) for spec in specs]
        with self.db.engine.begin() as conn:
            conn.execute(delete(t.job_config))
            if rows:
                conn.execute(insert(t.job_config), rows)
        return len(rows)
