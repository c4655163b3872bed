"""The alert tables: the state of each evaluated (rule, job) pair and the event history.

:class:`sheetops.alerts.AlertEvaluator` runs the state machine; this is the SQL under
it, and the reads the dashboard's Alerts page and the Overview make.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database
from sheetops.store.schema import EVENT_KINDS, alert_events, alert_state

_STATE_COLUMNS = frozenset(c.name for c in alert_state.columns)


class AlertStore:
    """``alert_state`` and ``alert_events``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- state ----------------------------------------------------------------------------
    def states(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Every (rule, job) pair's state row."""
        with self.db.engine.connect() as conn:
            return {(row.rule, row.job): dict(row._mapping)
                    for row in conn.execute(select(alert_state))}

    def save_state(self, state: dict[str, Any], new: bool) -> None:
        """Insert (``new``) or update a pair's state; unknown keys are ignored."""
        values = {k: v for k, v in state.items() if k in _STATE_COLUMNS}
        with self.db.engine.begin() as conn:
            if new:
                conn.execute(insert(alert_state).values(**values))
            else:
                conn.execute(update(alert_state).where(and_(
                    alert_state.c.rule == state["rule"], alert_state.c.job == state["job"]))
                    .values(**values))

    def forget(self, rule: str, job: str, closing_event: dict[str, Any] | None = None
               ) -> int | None:
        """Drop a pair's state and, in the same transaction, add ``closing_event``
        (an ``alert_events`` row); returns the event's id."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(alert_state).where(and_(
                alert_state.c.rule == rule, alert_state.c.job == job)))
            if closing_event is None:
                return None
            return int(conn.execute(insert(alert_events).values(**closing_event))
                       .inserted_primary_key[0])

    def first_seen(self, rule: str) -> dict[str, float]:
        """job → when ``rule`` first looked at it."""
        with self.db.engine.connect() as conn:
            return dict(conn.execute(
                select(alert_state.c.job, alert_state.c.first_seen_at)
                .where(alert_state.c.rule == rule)).all())

    # -- events ---------------------------------------------------------------------------
    def add_event(self, **values: Any) -> int:
        """Append an ``alert_events`` row; returns its id."""
        with self.db.engine.begin() as conn:
            return int(conn.execute(insert(alert_events).values(**values))
                       .inserted_primary_key[0])

    def event(self, event_id: int) -> dict[str, Any] | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(alert_events).where(
                alert_events.c.id == event_id)).first()
        return dict(row._mapping) if row is not None else None

    def mark_delivered(self, event_id: int, at: float, channel: str) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(update(alert_events).where(alert_events.c.id == event_id)
                         .values(delivered_at=at, channel=channel))

    # -- what the metrics read besides runs ---------------------------------------------
    def job_health(self, jobs: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        """job → ``(consecutive_failures, last_success_at)`` from ``job_state``."""
        s = t.job_state.c
        with self.db.engine.connect() as conn:
            return {row.job: (int(row.consecutive_failures or 0), row.last_success_at)
                    for row in conn.execute(select(s.job, s.consecutive_failures,
                                                   s.last_success_at)
                                            .where(s.job.in_(list(jobs))))}

    def first_runs(self, jobs: Sequence[str]) -> dict[str, float]:
        """job → start of its first (non-dry) run."""
        if not jobs:
            return {}
        r = t.runs.c
        with self.db.engine.connect() as conn:
            return dict(conn.execute(
                select(r.job, func.min(r.started_at))
                .where(r.job.in_(list(jobs)), r.dry_run.is_(False))
                .group_by(r.job)).all())

    # -- reads for the dashboard ---------------------------------------------------------
    def recent_events(self, limit: int = 200, *, rule: str | None = None,
                      job: str | None = None, kinds: Iterable[str] | None = None
                      ) -> list[dict[str, Any]]:
        """``alert_events`` rows, newest first: id, time, rule, job, kind, metric, value,
        threshold, channel, subject, message, format, delivered_at, error."""
        e = alert_events.c
        query = select(alert_events).order_by(e.time.desc(), e.id.desc()).limit(limit)
        if rule:
            query = query.where(e.rule == rule)
        if job:
            query = query.where(e.job == job)
        if kinds:
            query = query.where(e.kind.in_(list(kinds)))
        with self.db.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def firing(self) -> list[dict[str, Any]]:
        """The (rule, job) pairs firing now, longest-firing first: rule, job, metric,
        threshold, channel, last_value, firing_since, last_notified_at, last_sent_at,
        evaluated_at, undelivered (a message is waiting to be delivered)."""
        s = alert_state.c
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(alert_state).where(s.firing_since.is_not(None))
                                .order_by(s.firing_since, s.rule, s.job)).all()
        result = []
        for row in rows:
            item = dict(row._mapping)
            item["undelivered"] = item.pop("pending_event_id") is not None
            item.pop("pending_tries", None)
            item.pop("first_seen_at", None)
            result.append(item)
        return result

    def event_counts(self) -> dict[str, int]:
        """Number of ``alert_events`` rows per kind (every kind present, zeros included)."""
        e = alert_events.c
        with self.db.engine.connect() as conn:
            rows = conn.execute(select(e.kind, func.count()).group_by(e.kind)).all()
        counts = dict.fromkeys(EVENT_KINDS, 0)
        counts.update({k: int(n) for k, n in rows})
        return counts
