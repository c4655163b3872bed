"""The store: runs, attempts, errors, job state, the sheet outbox and run requests.

One class over SQLAlchemy Core, chosen by URL (``sqlite:///file.db`` by default,
``postgresql+psycopg://…`` for scale). Writes come in batches — one transaction per
:meth:`Store.record` — so thousands of runs a second cost a handful of commits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import NullPool

from sheetops.errors import StoreError
from sheetops.store import schema as t
from sheetops.store.schema import RunStatus

_UPSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass
class Batch:
    """Everything one flush writes, in one transaction."""

    new_runs: list[dict[str, Any]] = field(default_factory=list)
    run_updates: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    job_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.new_runs or self.run_updates or self.attempts or self.errors
                    or self.job_states or self.outbox)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


class Store:
    """Durable state of sheetops. Safe to share between threads of one process."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        try:
            self.engine = engine or create_engine(
                url, future=True,
                **({"poolclass": NullPool} if url.startswith("sqlite") and ":memory:" not in url
                   else {"pool_pre_ping": True}))
        except (ArgumentError, ImportError, ValueError) as exc:  # ValueError: a bad port
            raise StoreError(f"cannot use store URL {self.safe_url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._insert = _UPSERT.get(self.engine.dialect.name, sqlite.insert)
        self._bulk = {table.name: _bulk_insert(table, self.engine.dialect.paramstyle)
                      for table in (t.runs, t.attempts, t.errors)}
        try:
            t.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open the store at {self.safe_url}: {exc.orig}") from None

    @property
    def safe_url(self) -> str:
        """The URL with any password masked, for messages and the dashboard."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except (ArgumentError, ValueError):
            return "<invalid store URL>"

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writes ----------------------------------------------------------------------
    def record(self, batch: Batch) -> None:
        if not batch:
            return
        now = time.time()
        with self.engine.begin() as conn:
            self._insert_many(conn, t.runs, batch.new_runs)
            self._update_runs(conn, batch.run_updates)
            self._insert_many(conn, t.attempts, batch.attempts)
            self._insert_many(conn, t.errors, batch.errors)
            if batch.job_states:
                self._upsert_many(conn, t.job_state, "job", [
                    {"job": job, **values, "updated_at": now}
                    for job, values in batch.job_states.items()])
            if batch.outbox:
                conn.execute(insert(t.outbox), [
                    {"tab": tab, "key": key, "created_at": now} for tab, key in batch.outbox])

    def _insert_many(self, conn, table, rows: list[dict[str, Any]]) -> None:
        """Insert many rows through the driver's executemany: the hot path of recording
        thousands of runs a second, where SQLAlchemy's per-row processing dominates."""
        if not rows:
            return
        sql, columns = self._bulk[table.name]
        conn.exec_driver_sql(sql, [tuple(row.get(c, d) for c, d in columns) for row in rows])

    def _update_runs(self, conn, rows: list[dict[str, Any]]) -> None:
        """Update many runs through the driver's executemany, one statement per set of
        columns: a run queued in one flush is updated in the next, thousands a second."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(c for c in row if c != "id"), []).append(row)
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        for columns, group in groups.items():
            if not columns:
                continue
            sql = (f"UPDATE {t.runs.name} SET {', '.join(f'{c} = {mark}' for c in columns)} "
                   f"WHERE id = {mark}")
            conn.exec_driver_sql(sql, [(*(r[c] for c in columns), r["id"])
                                       for r in group])

    def _upsert_many(self, conn, table, key: str, rows: list[dict[str, Any]]) -> None:
        """Insert-or-update many rows through the driver (``ON CONFLICT … DO UPDATE``,
        the same SQL on SQLite and PostgreSQL). A new row gets the columns' defaults; an
        existing row has only the given columns updated."""
        defaults = {c.name: c.default.arg for c in table.columns
                    if c.default is not None and c.default.is_scalar}
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(sorted(row)), []).append(row)
        mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
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
        unfinished = (RunStatus.RUNNING.value, RunStatus.QUEUED.value)
        keep = set(keep)
        with self.engine.begin() as conn:
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
            conn.execute(insert(t.outbox), [
                {"tab": tab, "key": "", "created_at": now}
                for tab in ("Runs", "Errors", "Status")])
        return [r.id for r in rows]

    def try_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` unless someone else holds an
        unexpired one; atomic on SQLite and PostgreSQL."""
        now = time.time()
        with self.engine.begin() as conn:
            taken = conn.execute(update(t.leases).where(
                t.leases.c.name == name,
                (t.leases.c.holder == holder) | (t.leases.c.expires_at < now))
                .values(holder=holder, expires_at=now + ttl_s)).rowcount
            if taken:
                return True
            stmt = self._insert(t.leases).values(name=name, holder=holder,
                                                 expires_at=now + ttl_s)
            return bool(conn.execute(stmt.on_conflict_do_nothing(
                index_elements=["name"])).rowcount)

    def steal_lease(self, name: str, dead_holder: str, holder: str, ttl_s: float) -> bool:
        """Take the lease from ``dead_holder`` (known to be gone) before it expires."""
        with self.engine.begin() as conn:
            return bool(conn.execute(update(t.leases).where(
                t.leases.c.name == name, t.leases.c.holder == dead_holder)
                .values(holder=holder, expires_at=time.time() + ttl_s)).rowcount)

    def release_lease(self, name: str, holder: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(t.leases).where(t.leases.c.name == name,
                                                t.leases.c.holder == holder))

    def lease_holder(self, name: str) -> tuple[str, float] | None:
        """``(holder, expires_at)`` of an unexpired lease, else ``None``."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.leases.c.holder, t.leases.c.expires_at)
                               .where(t.leases.c.name == name,
                                      t.leases.c.expires_at >= time.time())).first()
        return (row.holder, row.expires_at) if row else None

    def request_run(self, job: str, requested_by: str, dry_run: bool = False) -> int:
        """Ask the running scheduler to run ``job`` now (the dashboard's Run now)."""
        with self.engine.begin() as conn:
            result = conn.execute(insert(t.run_requests).values(
                job=job, requested_by=requested_by, dry_run=dry_run, created_at=time.time()))
            return int(result.inserted_primary_key[0])

    def claim_run_requests(self) -> list[dict[str, Any]]:
        with self.engine.begin() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                select(t.run_requests).where(t.run_requests.c.claimed_at.is_(None))
                .order_by(t.run_requests.c.id))]
            if rows:
                conn.execute(update(t.run_requests)
                             .where(t.run_requests.c.id.in_([r["id"] for r in rows]))
                             .values(claimed_at=time.time()))
        return rows

    def link_request(self, request_id: int, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.run_requests).where(t.run_requests.c.id == request_id)
                         .values(run_id=run_id))

    def replace_problems(self, problems: Sequence[Any]) -> bool:
        """Store the current config problems; return whether they changed."""
        new = [{"tab": p.tab, "cell": p.cell, "value": p.value, "problem": p.problem,
                "severity": p.severity} for p in problems]
        with self.engine.begin() as conn:
            old = [dict(r._mapping) for r in conn.execute(
                select(t.config_problems.c.tab, t.config_problems.c.cell,
                       t.config_problems.c.value, t.config_problems.c.problem,
                       t.config_problems.c.severity).order_by(t.config_problems.c.id))]
            if old == new:
                return False
            conn.execute(delete(t.config_problems))
            if new:
                conn.execute(insert(t.config_problems), new)
            conn.execute(insert(t.outbox).values(tab="Validation", key="",
                                                 created_at=time.time()))
        return True

    def add_config_events(self, events: Iterable[tuple[str, str, str]]) -> None:
        rows = [{"time": time.time(), "kind": k, "job": j, "detail": d} for k, j, d in events]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(t.config_events), rows)

    def set_gauges(self, values: dict[str, float]) -> None:
        if not values:
            return
        now = time.time()
        stmt = self._insert(t.gauges)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={
            "value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at})
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"name": k, "value": float(v), "updated_at": now}
                                for k, v in values.items()])

    def set_fire_times(self, times: dict[str, float]) -> None:
        if not times:
            return
        stmt = self._insert(t.job_state)
        stmt = stmt.on_conflict_do_update(index_elements=["job"], set_={
            "last_fire_time": stmt.excluded.last_fire_time})
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"job": j, "last_fire_time": v} for j, v in times.items()])

    def mark_outbox_delivered(self, up_to_id: int | None = None,
                              ids: Sequence[int] | None = None) -> None:
        """Mark outbox entries delivered: exactly ``ids`` (what a flush saw before it
        rendered), or every pending entry up to ``up_to_id``.

        Prefer ``ids``: on PostgreSQL a transaction holding a lower id can commit
        after one holding a higher id, so "everything up to the highest id seen" could
        swallow a change the flush never rendered.
        """
        now = time.time()
        with self.engine.begin() as conn:
            if ids is not None:
                chosen = sorted(ids)
                for start in range(0, len(chosen), 500):
                    conn.execute(update(t.outbox).where(
                        t.outbox.c.delivered_at.is_(None),
                        t.outbox.c.id.in_(chosen[start:start + 500]))
                        .values(delivered_at=now))
            elif up_to_id is not None:
                conn.execute(update(t.outbox).where(t.outbox.c.delivered_at.is_(None),
                                                    t.outbox.c.id <= up_to_id)
                             .values(delivered_at=now))

    def set_extent(self, tab: str, rows: int) -> None:
        stmt = self._insert(t.sheet_extent)
        stmt = stmt.on_conflict_do_update(index_elements=["tab"],
                                          set_={"rows": stmt.excluded.rows})
        with self.engine.begin() as conn:
            conn.execute(stmt, [{"tab": tab, "rows": rows}])

    def prune(self, older_than: float) -> int:
        """Delete runs, attempts and errors older than ``older_than`` and delivered
        outbox entries; returns the number of runs deleted."""
        with self.engine.begin() as conn:
            old_runs = select(t.runs.c.id).where(t.runs.c.started_at < older_than)
            conn.execute(delete(t.attempts).where(t.attempts.c.run_id.in_(old_runs)))
            n = conn.execute(delete(t.runs).where(t.runs.c.started_at < older_than)).rowcount
            conn.execute(delete(t.errors).where(t.errors.c.time < older_than))
            conn.execute(delete(t.outbox).where(t.outbox.c.delivered_at < older_than))
        return n or 0

    # -- reads -----------------------------------------------------------------------
    def job_states(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            return {r.job: dict(r._mapping) for r in conn.execute(select(t.job_state))}

    def recent_runs(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        q = select(t.runs).order_by(t.runs.c.started_at.desc(), t.runs.c.id.desc()).limit(limit)
        if job:
            q = q.where(t.runs.c.job == job)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def recent_errors(self, limit: int, job: str | None = None) -> list[dict[str, Any]]:
        q = select(t.errors).order_by(t.errors.c.time.desc(), t.errors.c.id.desc()).limit(limit)
        if job:
            q = q.where(t.errors.c.job == job)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
            return dict(row._mapping) if row else None

    def attempts_of(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(t.attempts).where(t.attempts.c.run_id == run_id)
                .order_by(t.attempts.c.attempt))]

    def problems(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(t.config_problems).order_by(t.config_problems.c.id))]

    def pending_outbox(self) -> tuple[int, set[str], int, float | None]:
        """``(highest id, tabs touched, count, oldest created_at)`` of undelivered
        outbox entries."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.outbox.c.tab, func.max(t.outbox.c.id), func.count(),
                       func.min(t.outbox.c.created_at))
                .where(t.outbox.c.delivered_at.is_(None)).group_by(t.outbox.c.tab)).all()
        if not rows:
            return 0, set(), 0, None
        return (max(r[1] for r in rows), {r[0] for r in rows}, sum(r[2] for r in rows),
                min(r[3] for r in rows))

    def prune_outbox(self, delivered_before: float) -> int:
        """Delete outbox entries delivered before ``delivered_before`` (they have done
        their job); pending entries are never touched. Returns how many went."""
        with self.engine.begin() as conn:
            n = conn.execute(delete(t.outbox).where(
                t.outbox.c.delivered_at < delivered_before)).rowcount
        return n or 0

    def pending_outbox_entries(self) -> list[tuple[int, str]]:
        """``(id, tab)`` of every undelivered outbox entry, oldest first."""
        with self.engine.connect() as conn:
            return [(r[0], r[1]) for r in conn.execute(
                select(t.outbox.c.id, t.outbox.c.tab)
                .where(t.outbox.c.delivered_at.is_(None)).order_by(t.outbox.c.id))]

    def extents(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.tab: r.rows for r in conn.execute(select(t.sheet_extent))}

    def gauges(self) -> dict[str, tuple[float, float]]:
        with self.engine.connect() as conn:
            return {r.name: (r.value, r.updated_at) for r in conn.execute(select(t.gauges))}

    def count_runs(self, job: str | None = None, status: str | None = None) -> int:
        q = select(func.count()).select_from(t.runs)
        if job:
            q = q.where(t.runs.c.job == job)
        if status:
            q = q.where(t.runs.c.status == status)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


def _bulk_insert(table, paramstyle: str) -> tuple[str, list[tuple[str, Any]]]:
    columns = [(c.name, c.default.arg if c.default is not None and c.default.is_scalar
                else None) for c in table.columns if not (c.primary_key and c.autoincrement
                                                          is True)]
    mark = "?" if paramstyle == "qmark" else "%s"
    names = ", ".join(name for name, _ in columns)
    marks = ", ".join(mark for _ in columns)
    return f"INSERT INTO {table.name} ({names}) VALUES ({marks})", columns


def open_store(url: str) -> Store:
    return Store(url)


def result_summary(result: dict[str, Any], limit: int = 200) -> str:
    """The free keys of a run's result, as one short line for the sheet."""
    free = {k: v for k, v in result.items()
            if k not in ("records_in", "records_out", "records_failed")}
    if not free:
        return ""
    text = ", ".join(f"{k}={v}" if not isinstance(v, (dict, list)) else
                     f"{k}={json.dumps(v, default=str)}" for k, v in free.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"
