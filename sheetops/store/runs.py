"""Runs, attempts, errors and job state: what the runner records and the tabs show.

Writes come in batches — one transaction per :meth:`RunStore.record` — so thousands of
runs a second cost a handful of commits.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ARRAY, Connection, String, Table, any_, cast, delete, func, select, update
from sqlalchemy.exc import DBAPIError

from sheetops.store import schema as t
from sheetops.store.db import Database, connection_lost_as_unavailable
from sheetops.store.leases import Fence, check_fence
from sheetops.store.outbox import Mark, OutboxStore
from sheetops.store.schema import UNFINISHED, RunStatus

#: The tabs an interrupted run touches (their outbox marks).
_INTERRUPT_TABS = ("Runs", "Errors", "Status")


@dataclass
class Batch:
    """Everything one flush writes, in one transaction."""

    new_runs: list[dict[str, Any]] = field(default_factory=list)
    run_updates: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    job_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Sheet outbox marks, put on the outbox in the same transaction as the rows.
    outbox: list[Mark] = field(default_factory=list)
    #: the lease this batch is written under (a leader's): refused once it is stale
    fence: Fence | None = None

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.run_updates or self.attempts or self.errors
                    or self.job_states or self.outbox)


def _bulk_insert(table: Table, mark: str) -> tuple[str, list[str], list[Any]]:
    """The driver-level INSERT of ``table``, its column names and their defaults."""
    columns = [(c.name, c.default.arg if c.default is not None and c.default.is_scalar
                else None) for c in table.columns if not (c.primary_key and c.autoincrement
                                                          is True)]
    names = ", ".join(name for name, _ in columns)
    marks = ", ".join(mark for _ in columns)
    return (f"INSERT INTO {table.name} ({names}) VALUES ({marks})",
            [name for name, _ in columns], [default for _, default in columns])


class RunStore:
    """Runs, attempts, errors and job states."""

    def __init__(self, db: Database, outbox: OutboxStore) -> None:
        self.db = db
        self.outbox = outbox
        self._bulk = {table.name: _bulk_insert(table, db.mark)
                      for table in (t.runs, t.attempts, t.errors)}

    # -- writes ----------------------------------------------------------------------
    def record(self, batch: Batch) -> None:
        """Write one batch (runs, updates, attempts, errors, job states, outbox
        entries) in one transaction; raises :class:`~sheetops.store.leases.Fenced`,
        writing nothing, when the batch's fence is stale."""
        if not batch:
            return
        if batch.fence is None:  # BEGIN, every statement and COMMIT: one round trip
            try:
                with self.db.one_trip() as conn:
                    self.write(conn, batch)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # a pooled connection the server dropped since its last use (pinged only
                # when idle, db.ping_when_idle): once more, on a new one
                with connection_lost_as_unavailable(), self.db.one_trip() as conn:
                    self.write(conn, batch)
            return
        # the fence's check reads its rowcount first
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            check_fence(conn, batch.fence)
            with self.db.pipeline(conn):
                self.write(conn, batch)

    def write(self, conn: Connection, batch: Batch) -> None:
        """Write ``batch`` in the caller's transaction ``conn`` (see :meth:`record`); it
        reads no result, so it may run in a :meth:`Database.pipeline` block."""
        now = time.time()
        self._insert_many(conn, t.runs, batch.new_runs)
        self._update_runs(conn, batch.run_updates)
        self._insert_many(conn, t.attempts, batch.attempts)
        self._insert_many(conn, t.errors, batch.errors)
        if batch.job_states:
            self._upsert_many(conn, t.job_state, "job", [
                {"job": job, **values, "updated_at": now}
                for job, values in batch.job_states.items()])
        self.outbox.put(batch.outbox, conn)

    def _insert_many(self, conn: Connection, table: Table,
                     rows: list[dict[str, Any]]) -> None:
        """Insert many rows through the driver's executemany: the hot path of recording
        thousands of runs a second, where SQLAlchemy's per-row processing dominates."""
        if not rows:
            return
        sql, names, defaults = self._bulk[table.name]
        conn.exec_driver_sql(sql, [tuple(map(row.get, names, defaults)) for row in rows])

    def _update_runs(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Update many runs through the driver's executemany, one statement per set of
        columns: a run queued in one flush is updated in the next, thousands a second."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(c for c in row if c != "id"), []).append(row)
        mark = self.db.mark
        for columns, group in groups.items():
            if not columns:
                continue
            sql = (f"UPDATE {t.runs.name} SET {', '.join(f'{c} = {mark}' for c in columns)} "
                   f"WHERE id = {mark}")
            conn.exec_driver_sql(sql, [(*(r[c] for c in columns), r["id"]) for r in group])

    def _upsert_many(self, conn: Connection, table: Table, key: str,
                     rows: list[dict[str, Any]]) -> None:
        """Insert-or-update many rows through the driver (``ON CONFLICT … DO UPDATE``,
        the same SQL on SQLite and PostgreSQL). A new row gets the columns' defaults; an
        existing row has only the given columns updated."""
        defaults = {c.name: c.default.arg for c in table.columns
                    if c.default is not None and c.default.is_scalar}
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(sorted(row)), []).append(row)
        mark = self.db.mark
        for given, group in groups.items():
            filled = [c for c in defaults if c not in given]
            columns = [*given, *filled]
            updates = ", ".join(f"{c} = excluded.{c}" for c in given if c != key)
            sql = (f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES "
                   f"({', '.join(mark for _ in columns)}) ON CONFLICT ({key}) DO "
                   + (f"UPDATE SET {updates}" if updates else "NOTHING"))
            conn.exec_driver_sql(sql, [tuple(r[c] for c in given) +
                                       tuple(defaults[c] for c in filled) for r in group])

    def interrupt_unfinished(self, keep: Iterable[str] = ()) -> list[str]:
        """End runs left ``running``/``queued`` by a scheduler that died (SIGKILL, power
        loss) as failed ``Interrupted``, so they do not look alive forever; the runs in
        ``keep`` (still running in this process) are left alone. Returns their ids. Call
        it only from the scheduler that owns the store, before it starts."""
        now = time.time()
        unfinished = [s.value for s in UNFINISHED]
        keep = set(keep)
        with self.db.engine.begin() as conn:
            rows = [r for r in conn.execute(
                select(t.runs.c.id, t.runs.c.job, t.runs.c.started_at, t.runs.c.attempts)
                .where(t.runs.c.status.in_(unfinished))).all() if r.id not in keep]
            if not rows:
                return []
            message = "sheetops stopped while this run was in progress (process killed)"
            ids = [r.id for r in rows]
            for start in range(0, len(ids), 500):
                conn.execute(update(t.runs).where(
                    t.runs.c.id.in_(ids[start:start + 500]),
                    t.runs.c.status.in_(unfinished)).values(
                    status=RunStatus.FAILED.value, finished_at=now,
                    error_type="Interrupted", error_message=message))
            self._insert_many(conn, t.errors, [
                {"time": now, "job": r.job, "run_id": r.id, "stage": "run",
                 "attempt": r.attempts or 1, "error_type": "Interrupted", "message": message,
                 "record_key": "", "traceback": ""} for r in rows])
            self.outbox.put([(tab, "") for tab in _INTERRUPT_TABS], conn)
        return [r.id for r in rows]

    def set_fire_times(self, times: dict[str, float], fence: Fence | None = None) -> None:
        """Note each job's last scheduled fire time (catch-up after downtime reads it);
        under ``fence``, in the transaction that checks it (a leader's fire), raising
        :class:`~sheetops.store.leases.Fenced` and writing nothing when it is stale."""
        if not times:
            return
        stmt = self.db.insert(t.job_state)
        stmt = stmt.on_conflict_do_update(index_elements=["job"], set_={
            "last_fire_time": stmt.excluded.last_fire_time})
        with connection_lost_as_unavailable(), self.db.engine.begin() as conn:
            check_fence(conn, fence)
            conn.execute(stmt, [{"job": j, "last_fire_time": v} for j, v in times.items()])

    def prune(self, older_than: float) -> int:
        """Delete runs, attempts and errors older than ``older_than``; returns the
        number of runs deleted."""
        with self.db.engine.begin() as conn:
            old_runs = select(t.runs.c.id).where(t.runs.c.started_at < older_than)
            conn.execute(delete(t.attempts).where(t.attempts.c.run_id.in_(old_runs)))
            n = conn.execute(delete(t.runs).where(t.runs.c.started_at < older_than)).rowcount
            conn.execute(delete(t.errors).where(t.errors.c.time < older_than))
            conn.execute(delete(t.task_deliveries)
                         .where(t.task_deliveries.c.last_at < older_than))
        return n or 0

    # -- reads -----------------------------------------------------------------------
    def job_states(self) -> dict[str, dict[str, Any]]:
        with self.db.engine.connect() as conn:
            return {r.job: dict(r._mapping) for r in conn.execute(select(t.job_state))}

    def recent_runs(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        q = select(t.runs).order_by(t.runs.c.started_at.desc(), t.runs.c.id.desc()).limit(limit)
        if job:
            q = q.where(t.runs.c.job == job)
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def recent_errors(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        q = select(t.errors).order_by(t.errors.c.time.desc(), t.errors.c.id.desc()).limit(limit)
        if job:
            q = q.where(t.errors.c.job == job)
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.db.engine.connect() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
            return dict(row._mapping) if row else None

    def attempts_of(self, run_id: str) -> list[dict[str, Any]]:
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(t.attempts).where(t.attempts.c.run_id == run_id)
                .order_by(t.attempts.c.attempt))]

    def statuses(self, run_ids: Iterable[str],
                 queued: bool = True) -> dict[str, dict[str, Any]]:
        """Status, attempts, times, error and result of the given runs (those that
        exist; with ``queued=False`` only those that left the queue): how a scheduler
        whose runs are recorded by workers elsewhere follows them, every few tenths of a
        second, so on PostgreSQL the ids go as one array, not a parameter each."""
        ids = list(run_ids)
        c = t.runs.c
        columns = (c.id, c.status, c.attempts, c.started_at, c.finished_at,
                   c.error_type, c.error_message, c.result)
        postgres = self.db.dialect == "postgresql"
        chunk = 50_000 if postgres else 500  # SQLite: a bound parameter per id
        found: dict[str, dict[str, Any]] = {}
        with self.db.engine.connect() as conn:
            for start in range(0, len(ids), chunk):
                part = ids[start:start + chunk]
                query = select(*columns).where(
                    c.id == any_(cast(part, ARRAY(String))) if postgres else c.id.in_(part))
                if not queued:
                    query = query.where(c.status != RunStatus.QUEUED.value)
                for row in conn.execute(query):
                    found[row.id] = dict(row._mapping)
        return found

    def count_runs(self, job: str | None = None, status: str | None = None) -> int:
        q = select(func.count()).select_from(t.runs)
        if job:
            q = q.where(t.runs.c.job == job)
        if status:
            q = q.where(t.runs.c.status == status)
        with self.db.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())
