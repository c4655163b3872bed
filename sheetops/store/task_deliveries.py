"""Delivery counts of broker tasks: the redelivery cap of the Celery tier.

A broker redelivers a task whose worker died before acking it (``acks_late``,
``reject_on_worker_lost``). That is what makes a killed worker lose nothing, and what
would make a task that kills its worker every time (a poison task) loop forever. So a
worker starts every attempt with :meth:`TaskDeliveryStore.begin_attempt`: one
transaction that counts this delivery of ``run id:attempt`` and reads the run (and, when
asked and the attempt is due, marks the run started; a Celery worker marks it later,
:meth:`TaskDeliveryStore.write_start`, only if the attempt outlasts a moment). The worker
then knows whether to run the attempt, skip a duplicate (its result is already recorded)
or end the run as a poison task once the count passes the cap.
An attempt may also be *published* more than once: a leader republishes a run it (or a
dead predecessor) committed but may not have published (:meth:`mark_sent`,
:meth:`sent`). Each published copy carries its own id; the first copy to reach the
store — a publisher's mark after its publish, or a worker's first delivery — owns the
attempt, and :meth:`begin_attempt` tells a worker holding another copy to drop it. A
redelivery of the owning copy (its worker died) counts against the cap as before.
A worker publishes a retry the same way (a copy, then its mark), and a redelivery of an
attempt whose result is recorded asks :meth:`retry_owed` whether the next attempt still
has to be published (its worker died, or the broker refused it, between the commit and
the publish). A pack of first attempts in one task is counted in one statement
(:meth:`begin_attempts`), each attempt on its own row; a pack delivered again has its
attempts not recorded released (:meth:`release_copies`) and sent on one by one.

"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from sheetops.store import schema as t
from sheetops.store.db import Database
from sheetops.store.runs import Batch, RunStore
from sheetops.store.schema import FINISHED, UNFINISHED, RunStatus


@dataclass(frozen=True)
class AttemptStart:
    """What a worker found when a task for ``run id:attempt`` reached it."""

    deliveries: int  # this delivery's number: 1 the first time
    run_status: str | None  # ``None``: the store has no such run
    recorded: bool  # a result of this attempt is recorded already (a duplicate delivery)
    another_copy: bool = False  # another published copy of the attempt owns it: drop this

    @property
    def finished(self) -> bool:
        return self.run_status in {s.value for s in FINISHED}

    def due(self, cap: int) -> bool:
        """Whether the attempt should run now (not a duplicate, not over the cap)."""
        return (self.run_status is not None and not self.finished and not self.recorded
                and not self.another_copy and self.deliveries <= cap)


@dataclass(frozen=True)
class OwedRetry:
    """A retry recorded as decided but never published (:meth:`TaskDeliveryStore.retry_owed`)."""

    previous_finished_at: float  # the failed attempt's end: the backoff counts from it
    run_started_at: float | None


#: PostgreSQL: count the delivery — unless another copy owns the attempt — and read the
#: run in one statement, whose transaction's commit does not wait for the disk
#: (``set_config``: ``SET LOCAL synchronous_commit`` inside the statement, so a statement
#: sent on its own is the whole transaction).
_BEGIN_PG = """
WITH d AS (
    INSERT INTO task_deliveries (key, deliveries, first_at, last_at, copy_id)
    VALUES (%(key)s, 1, %(now)s, %(now)s, %(copy)s)
    ON CONFLICT (key) DO UPDATE
        SET deliveries = task_deliveries.deliveries + 1, last_at = excluded.last_at,
            copy_id = COALESCE(task_deliveries.copy_id, excluded.copy_id)
        WHERE task_deliveries.copy_id IS NULL OR excluded.copy_id IS NULL
              OR task_deliveries.copy_id = excluded.copy_id
    RETURNING deliveries)
SELECT set_config('synchronous_commit', 'off', true) AS durability,
       (SELECT deliveries FROM d) AS deliveries,
       (SELECT status FROM runs WHERE id = %(run)s) AS status,
       EXISTS (SELECT 1 FROM attempts WHERE run_id = %(run)s AND attempt = %(attempt)s)
           AS recorded"""


#: PostgreSQL: :data:`_BEGIN_PG` for every attempt of a pack at once — one statement,
#: one round trip, one transaction that does not wait for the disk.
_BEGIN_MANY_PG = """
WITH i AS (
    SELECT * FROM unnest(%(keys)s::text[], %(copies)s::text[], %(runs)s::text[],
                         %(attempts)s::int[]) AS i(key, copy_id, run_id, attempt)),
d AS (
    INSERT INTO task_deliveries (key, deliveries, first_at, last_at, copy_id)
    SELECT key, 1, %(now)s, %(now)s, copy_id FROM i
    ON CONFLICT (key) DO UPDATE
        SET deliveries = task_deliveries.deliveries + 1, last_at = excluded.last_at,
            copy_id = COALESCE(task_deliveries.copy_id, excluded.copy_id)
        WHERE task_deliveries.copy_id IS NULL OR excluded.copy_id IS NULL
              OR task_deliveries.copy_id = excluded.copy_id
    RETURNING key, deliveries)
SELECT set_config('synchronous_commit', 'off', true) AS durability, i.key,
       d.deliveries, r.status,
       EXISTS (SELECT 1 FROM attempts a WHERE a.run_id = i.run_id
               AND a.attempt = i.attempt) AS recorded
FROM i LEFT JOIN d ON d.key = i.key LEFT JOIN runs r ON r.id = i.run_id"""


def delivery_key(run_id: str, attempt: int) -> str:
    return f"{run_id}:{attempt}"


class TaskDeliveryStore:
    """The ``task_deliveries`` table, written with the runs it guards."""

    def __init__(self, db: Database, runs: RunStore) -> None:
        self.db = db
        self.runs = runs

    def begin_attempt(self, run_id: str, attempt: int, cap: int,
                      started: Batch | None = None, copy_id: str | None = None
                      ) -> AttemptStart:
        """Count this delivery of the attempt (of its published copy ``copy_id``; ``None``
        for a task published once only) and read its run; when the attempt is due
        (:meth:`AttemptStart.due`) write ``started`` in the same transaction.

        On PostgreSQL it is one round trip (:meth:`_begin_pg`) and the commit does not
        wait for the disk (``synchronous_commit`` off for this transaction only): a
        database crash may forget the last few starts — a run shown queued, one delivery
        uncounted — never a result, which commits durably."""
        now = time.time()
        key = delivery_key(run_id, attempt)
        if self.db.dialect == "postgresql":
            return self._begin_pg(key, run_id, attempt, now, cap, started, copy_id)
        with self.db.engine.begin() as conn:
            start = self._begin_portable(conn, key, run_id, attempt, now, copy_id)
            if started and start.due(cap):
                self.runs.write(conn, started)
        return start

    def begin_attempts(self, attempts: Sequence[tuple[str, int, str]], cap: int
                       ) -> list[AttemptStart]:
        """:meth:`begin_attempt` (without ``started``) for each ``(run id, attempt, copy
        id)`` of a pack of attempts delivered as one task, in their order: on PostgreSQL
        one statement for the whole pack (one round trip, the commit not waiting for the
        disk, as :meth:`begin_attempt`), elsewhere one transaction."""
        now = time.time()
        keys = [delivery_key(run_id, attempt) for run_id, attempt, _ in attempts]
        if self.db.dialect != "postgresql":
            with self.db.engine.begin() as conn:
                return [self._begin_portable(conn, key, run_id, attempt, now, copy_id)
                        for key, (run_id, attempt, copy_id) in zip(keys, attempts,
                                                                     strict=True)]
        params = {"keys": keys, "copies": [copy_id for _, _, copy_id in attempts],
                  "runs": [run_id for run_id, _, _ in attempts],
                  "attempts": [attempt for _, attempt, _ in attempts], "now": now}
        with self.db.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            rows = {row.key: row for row in conn.exec_driver_sql(_BEGIN_MANY_PG, params)}
        return [AttemptStart(int(rows[key].deliveries or 0), rows[key].status,
                             bool(rows[key].recorded), rows[key].deliveries is None)
                for key in keys]

    def release_copies(self, attempts: Iterable[tuple[str, int, str]]) -> list[str]:
        """Release each ``(run id, attempt, copy id)`` still owned by that copy and not
        recorded: no copy owns it any more and its delivery count restarts at 0, so the
        copy published next (a pack's attempt sent again on its own) owns it on its first
        delivery and is capped by its own deliveries. The run ids released, in order."""
        d, a = t.task_deliveries, t.attempts
        released: list[str] = []
        with self.db.engine.begin() as conn:
            for run_id, attempt, copy_id in attempts:
                recorded = select(a.c.attempt).where(a.c.run_id == run_id,
                                                     a.c.attempt == attempt).exists()
                row = conn.execute(
                    update(d).where(d.c.key == delivery_key(run_id, attempt),
                                    d.c.copy_id == copy_id, ~recorded)
                    .values(copy_id=None, deliveries=0, last_at=time.time())
                    .returning(d.c.key)).first()
                if row is not None:
                    released.append(run_id)
        return released

    def _begin_pg(self, key: str, run_id: str, attempt: int, now: float, cap: int,
                  started: Batch | None, copy_id: str | None) -> AttemptStart:
        """The count and read — one statement, its own transaction (a Celery worker's
        every attempt: one round trip, no BEGIN nor COMMIT to send) — or, with
        ``started``, the count, the read and ``started`` in one transaction sent at once,
        also one round trip (:meth:`~sheetops.store.db.Database.one_trip`).
        ``started``'s run updates are guarded in SQL by what makes the attempt due (so a
        duplicate delivery, a finished run or one over the cap is left as it is); its
        outbox marks go in either way (a mark only asks for a render)."""
        params = {"key": key, "now": now, "run": run_id, "attempt": attempt,
                  "copy": copy_id}
        if not started:
            with self.db.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                _, deliveries, status, recorded = conn.exec_driver_sql(
                    _BEGIN_PG, params).one()
        else:
            with self.db.one_trip() as conn:
                cursor = conn.connection.dbapi_connection.cursor()
                cursor.execute(_BEGIN_PG, params)
                self._write_started(conn, started, key, attempt, cap)
            _, deliveries, status, recorded = cursor.fetchone()
            cursor.close()
        return AttemptStart(int(deliveries or 0), status, bool(recorded), deliveries is None)

    def _write_started(self, conn: Connection, started: Batch, key: str, attempt: int,
                       cap: int) -> None:
        """``started`` (a run's start: run updates and outbox marks only), each run
        update applied only while the attempt is due, judged in the same transaction."""
        if started.new_runs or started.attempts or started.errors or started.job_states:
            raise ValueError("a start batch holds run updates and outbox marks only")
        finished = ", ".join(f"'{s.value}'" for s in FINISHED)
        for row in started.run_updates:
            columns = [c for c in row if c != "id"]
            sets = ", ".join(f"{c} = %({c})s" for c in columns)
            conn.exec_driver_sql(
                f"UPDATE runs SET {sets} WHERE id = %(id)s AND status NOT IN ({finished}) "
                "AND NOT EXISTS (SELECT 1 FROM attempts WHERE run_id = %(id)s "
                "AND attempt = %(due_attempt)s) AND (SELECT deliveries FROM "
                "task_deliveries WHERE key = %(due_key)s) <= %(due_cap)s",
                {**row, "due_attempt": attempt, "due_key": key, "due_cap": cap})
        self.runs.outbox.put(started.outbox, conn)

    def write_start(self, run_id: str, attempt: int, cap: int, started: Batch) -> None:
        """Write ``started`` (a run's start) after :meth:`begin_attempt` counted the
        delivery, while the attempt is still due, in a transaction of its own that, like
        the count's, does not wait for the disk: the start of an attempt still running
        (:mod:`sheetops.executors.late_start`)."""
        key = delivery_key(run_id, attempt)
        if self.db.dialect != "postgresql":
            with self.db.engine.begin() as conn:
                if self._begin_portable_read(conn, key, run_id, attempt).due(cap):
                    self.runs.write(conn, started)
            return
        with self.db.one_trip() as conn:
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            self._write_started(conn, started, key, attempt, cap)

    def _begin_portable(self, conn: Connection, key: str, run_id: str, attempt: int,
                        now: float, copy_id: str | None) -> AttemptStart:
        d = t.task_deliveries
        stmt = self.db.insert(d).values(key=key, deliveries=1, first_at=now, last_at=now,
                                        copy_id=copy_id)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"deliveries": d.c.deliveries + 1, "last_at": now,
                  "copy_id": func.coalesce(d.c.copy_id, copy_id)},
            where=None if copy_id is None else or_(d.c.copy_id.is_(None),
                                                    d.c.copy_id == copy_id)
        ).returning(d.c.deliveries)
        counted = conn.execute(stmt).scalar_one_or_none()
        start = self._read(conn, int(counted or 0), run_id, attempt)
        return replace(start, another_copy=counted is None)

    def _begin_portable_read(self, conn: Connection, key: str, run_id: str,
                             attempt: int) -> AttemptStart:
        """The attempt as :meth:`_begin_portable` finds it, counting nothing."""
        deliveries = conn.execute(select(t.task_deliveries.c.deliveries).where(
            t.task_deliveries.c.key == key)).scalar_one_or_none()
        return self._read(conn, int(deliveries or 0), run_id, attempt)

    @staticmethod
    def _read(conn: Connection, deliveries: int, run_id: str, attempt: int) -> AttemptStart:
        status = conn.execute(select(t.runs.c.status).where(t.runs.c.id == run_id)
                              ).scalar_one_or_none()
        recorded = conn.execute(select(t.attempts.c.attempt).where(
            t.attempts.c.run_id == run_id, t.attempts.c.attempt == attempt).limit(1)
        ).first() is not None
        return AttemptStart(deliveries, status, recorded)

    def retry_owed(self, run_id: str, attempt: int) -> OwedRetry | None:
        """Whether ``attempt + 1`` of a run still has to be published: ``attempt`` is
        recorded, the run did not end, and ``attempt + 1`` has no mark, no delivery and no
        result (``None`` otherwise). A recorded attempt of a run that did not end was
        followed by a retry decision, since a run's end commits with its last attempt."""
        a, d, r = t.attempts.c, t.task_deliveries.c, t.runs.c
        with self.db.engine.connect() as conn:
            run = conn.execute(select(r.status, r.started_at).where(r.id == run_id)).first()
            if run is None or run.status in {s.value for s in FINISHED}:
                return None
            finished = {row.attempt: row.finished_at for row in conn.execute(
                select(a.attempt, a.finished_at).where(
                    a.run_id == run_id, a.attempt.in_([attempt, attempt + 1])))}
            if attempt not in finished or attempt + 1 in finished:
                return None
            marked = conn.execute(select(d.key).where(
                d.key == delivery_key(run_id, attempt + 1))).first()
        if marked is not None:
            return None
        return OwedRetry(float(finished[attempt]), run.started_at)

    def retries_owed(self, run_ids: Iterable[str]) -> dict[str, tuple[int, float]]:
        """The ``running`` runs among ``run_ids`` whose last recorded attempt has no
        successor marked sent or delivered: ``run id → (that attempt, its end)``. A
        leader republishes such a retry once it is overdue (its worker's publish was lost
        and no redelivery of the attempt published it)."""
        ids = list(run_ids)
        a, r = t.attempts.c, t.runs.c
        owed: dict[str, tuple[int, float]] = {}
        with self.db.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                last = (select(a.run_id, func.max(a.attempt).label("attempt"))
                        .join(t.runs, r.id == a.run_id)
                        .where(a.run_id.in_(ids[start:start + 500]),
                               r.status == RunStatus.RUNNING.value)
                        .group_by(a.run_id).subquery())
                rows = conn.execute(
                    select(a.run_id, a.attempt, a.finished_at)
                    .join(last, (last.c.run_id == a.run_id)
                          & (last.c.attempt == a.attempt))).all()
                keys = {delivery_key(row.run_id, row.attempt + 1): row for row in rows}
                marked = set(conn.execute(select(t.task_deliveries.c.key).where(
                    t.task_deliveries.c.key.in_(list(keys)))).scalars()) if keys else set()
                owed.update({row.run_id: (int(row.attempt), float(row.finished_at))
                             for key, row in keys.items() if key not in marked})
        return owed

    def deliveries(self, run_id: str, attempt: int) -> int:
        """How many times the attempt was delivered (0: never)."""
        with self.db.engine.connect() as conn:
            return int(conn.execute(select(t.task_deliveries.c.deliveries).where(
                t.task_deliveries.c.key == delivery_key(run_id, attempt))
            ).scalar_one_or_none() or 0)

    def mark_sent(self, sent: Iterable[tuple[str, int, str]]) -> None:
        """Note published copies ``(run id, attempt, copy id)`` after their publish: a
        copy whose attempt has no row yet owns it; one whose attempt was marked or
        delivered already (another copy's) changes nothing and will be dropped."""
        now = time.time()
        rows = [{"key": delivery_key(run_id, attempt), "deliveries": 0, "first_at": now,
                 "last_at": now, "copy_id": copy_id} for run_id, attempt, copy_id in sent]
        if not rows:
            return
        stmt = self.db.insert(t.task_deliveries).on_conflict_do_nothing(
            index_elements=["key"])
        with self.db.engine.begin() as conn:
            for start in range(0, len(rows), 500):
                conn.execute(stmt, rows[start:start + 500])

    def release_undelivered(self, run_ids: Iterable[str], marked_before: float,
                            attempt: int = 1) -> list[str]:
        """Of ``run_ids``, those whose ``attempt`` was marked sent before
        ``marked_before`` and never delivered since (0 deliveries): copies the broker
        lost. Each is *released* in the same statement — no copy owns the attempt any
        more, and its mark time becomes now — so the copy published next and the lost
        one, should it turn up after all, compete again: the first to reach the store
        owns the attempt (:meth:`begin_attempt`), the other is dropped. A delivery
        counted meanwhile keeps its row out (the statement matches 0 deliveries only)."""
        keys = {delivery_key(run_id, attempt): run_id for run_id in run_ids}
        key_list = list(keys)
        d = t.task_deliveries
        released: list[str] = []
        with self.db.engine.begin() as conn:
            for start in range(0, len(key_list), 500):
                released += [keys[key] for key in conn.execute(
                    update(d).where(d.c.key.in_(key_list[start:start + 500]),
                                    d.c.deliveries == 0, d.c.last_at < marked_before)
                    .values(copy_id=None, last_at=time.time()).returning(d.c.key)
                ).scalars()]
        return released

    def sent(self, run_ids: Iterable[str], attempt: int = 1) -> set[str]:
        """The runs among ``run_ids`` whose ``attempt`` was marked sent or delivered."""
        keys = {delivery_key(run_id, attempt): run_id for run_id in run_ids}
        found: set[str] = set()
        key_list = list(keys)
        d = t.task_deliveries.c
        with self.db.engine.connect() as conn:
            for start in range(0, len(key_list), 500):
                found.update(keys[k] for k in conn.execute(
                    select(d.key).where(d.key.in_(key_list[start:start + 500]))).scalars())
        return found

    def runs_in_flight(self) -> list[dict[str, Any]]:
        """Every run not finished (``queued``/``running``) with its job, trigger, queue or
        start time and attempts: what a new leader adopts from the one before."""
        c = t.runs.c
        with self.db.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(c.id, c.job, c.trigger, c.scheduled_for, c.started_at, c.status,
                       c.attempts, c.dry_run, c.requested_by)
                .where(c.status.in_([s.value for s in UNFINISHED]))
                .order_by(c.started_at, c.id))]
