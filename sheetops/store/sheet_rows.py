"""SQL of a sheet tab used as a pipeline's source and sink: each record's outcome at
its row, and which rows the sheet does not show yet.

Every writing function takes the ``Connection`` of the caller's transaction — in the
engine, the queue transaction that hands a batch on or dead-letters a record — so an
outcome commits with the hand-off it describes, and :func:`mark_changed` (an outbox
entry) commits with the outcome: the status writer then sends the row in its next
flush, however long Google is away and whatever process dies meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from sheetops.store import schema as t
from sheetops.store.outbox import put_marks

#: The outbox entry's ``tab`` for "job KEY has outcomes the sheet does not show yet".
OUTBOX_TAB = "sheet_rows"
_INSERT = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_CHUNK = 500
#: Longest error text kept for a row (the sheet's cell shows it).
ERROR_CHARS = 500


@dataclass(frozen=True)
class RowSource:
    """The tab a pipeline job reads, and the 1-based column of each outcome column."""

    job: str
    location: str
    tab: str
    columns: dict[str, int]
    header_pending: bool


@dataclass(frozen=True)
class RowOutcome:
    """A record's fate at its row; ``version`` identifies this state of it."""

    key: str
    row: int
    status: str
    error: str
    at: float
    version: int


def mark_changed(conn: Connection, job: str) -> None:
    """Tell the status writer that ``job``'s tab has rows to write (an outbox entry)."""
    put_marks(conn, [(OUTBOX_TAB, job[:160])])


def save_source(conn: Connection, source: RowSource) -> None:
    """Remember the tab ``source.job`` read and where its outcome columns are."""
    values = {"location": source.location, "tab": source.tab,
              "columns": json.dumps(source.columns), "header_pending": source.header_pending,
              "read_at": time.time()}
    stmt = _INSERT[conn.dialect.name](t.sheet_row_sources).values(job=source.job, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=["job"], set_=values))


def sources(conn: Connection, jobs: Iterable[str]) -> dict[str, RowSource]:
    """The tabs of ``jobs`` that read a sheet, by job."""
    s = t.sheet_row_sources.c
    jobs = list(jobs)
    found: dict[str, RowSource] = {}
    for start in range(0, len(jobs), _CHUNK):
        for r in conn.execute(select(t.sheet_row_sources).where(
                s.job.in_(jobs[start:start + _CHUNK]))):
            found[r.job] = RowSource(r.job, r.location, r.tab, json.loads(r.columns),
                                     bool(r.header_pending))
    return found


def header_written(conn: Connection, job: str) -> None:
    conn.execute(update(t.sheet_row_sources).where(t.sheet_row_sources.c.job == job)
                 .values(header_pending=False))


def outcomes(conn: Connection, job: str) -> dict[str, RowOutcome]:
    """Every record's outcome of ``job``, by key."""
    o = t.sheet_row_outcomes.c
    return {r.key: RowOutcome(r.key, r.row, r.status, r.error, r.at, r.version)
            for r in conn.execute(select(o.key, o.row, o.status, o.error, o.at, o.version)
                                  .where(o.job == job))}


def place(conn: Connection, job: str, rows: Mapping[str, int],
          known: Mapping[str, RowOutcome]) -> None:
    """Record at which row each key was read (``known``: what :func:`outcomes` said,
    ``rows``: every key on the tab now). A key new to the store gets a row without an
    outcome; a key whose row moved (rows sorted or inserted above it) is written again
    at its new row; a key no longer on the tab gets row 0 and is never written."""
    o = t.sheet_row_outcomes.c
    now = time.time()
    new = [{"job": job, "key": k, "row": r, "status": "", "error": "", "at": now,
            "version": 0, "written": 0} for k, r in rows.items() if k not in known]
    if new:
        conn.execute(_INSERT[conn.dialect.name](t.sheet_row_outcomes)
                     .on_conflict_do_nothing(), new)
    moved = [{"k": k, "r": r} for k, r in rows.items() if k in known and known[k].row != r]
    if moved:
        conn.execute(update(t.sheet_row_outcomes).where(
            and_(o.job == job, o.key == bindparam("k"))).values(
            row=bindparam("r"), version=o.version + 1), moved)
    gone = [{"k": k} for k, x in known.items() if k not in rows and x.row != 0]
    if gone:
        conn.execute(update(t.sheet_row_outcomes).where(
            and_(o.job == job, o.key == bindparam("k"))).values(row=0), gone)


def settle(conn: Connection, job: str, keys: Sequence[str], status: str,
           error: str = "") -> int:
    """Set the outcome of ``keys`` (those read from a sheet; others are ignored) and
    mark the job changed in the outbox. Returns how many rows changed."""
    o = t.sheet_row_outcomes.c
    now = time.time()
    changed = 0
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), _CHUNK):
        changed += conn.execute(update(t.sheet_row_outcomes).where(and_(
            o.job == job, o.key.in_(keys[start:start + _CHUNK]))).values(
            status=status, error=error[:ERROR_CHARS], at=now,
            version=o.version + 1)).rowcount or 0
    if changed:
        mark_changed(conn, job)
    return changed


def rewrite(conn: Connection, job: str, keys: Sequence[str]) -> None:
    """Write the rows of ``keys`` again as they are (to clear a cell ops set on them)."""
    o = t.sheet_row_outcomes.c
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        conn.execute(update(t.sheet_row_outcomes).where(and_(
            o.job == job, o.key.in_(keys[start:start + _CHUNK]))).values(
            version=o.version + 1))
    if keys:
        mark_changed(conn, job)


def settle_each(conn: Connection, job: str, outcomes_: Sequence[tuple[str, str, str]]
                ) -> None:
    """Set ``(key, status, error)`` for each key, in one statement, and mark the job
    changed in the outbox."""
    if not outcomes_:
        return
    o = t.sheet_row_outcomes.c
    conn.execute(update(t.sheet_row_outcomes).where(
        and_(o.job == job, o.key == bindparam("k"))).values(
        status=bindparam("s"), error=bindparam("e"), at=time.time(),
        version=o.version + 1),
        [{"k": k, "s": s, "e": e[:ERROR_CHARS]} for k, s, e in outcomes_])
    mark_changed(conn, job)


def unwritten(conn: Connection, job: str) -> list[RowOutcome]:
    """Outcomes of ``job`` changed since the sheet last accepted them, by row."""
    o = t.sheet_row_outcomes.c
    return [RowOutcome(r.key, r.row, r.status, r.error, r.at, r.version)
            for r in conn.execute(select(o.key, o.row, o.status, o.error, o.at, o.version)
                                  .where(o.job == job, o.version > o.written)
                                  .order_by(o.row))]


def written(conn: Connection, job: str, versions: Sequence[tuple[str, int]]) -> None:
    """The sheet accepted these ``(key, version)``s; a later change stays unwritten."""
    if not versions:
        return
    o = t.sheet_row_outcomes.c
    conn.execute(update(t.sheet_row_outcomes).where(and_(
        o.job == job, o.key == bindparam("k"), o.written < bindparam("v"))).values(
        written=bindparam("v")), [{"k": k, "v": v} for k, v in versions])


def dead_letters_of(conn: Connection, queues: Sequence[str], keys: Sequence[str]
                    ) -> dict[str, tuple[float, str]]:
    """The newest dead letter of each of ``keys`` in ``queues``: ``(dead_at, "Type:
    message")`` — those the queue made itself (a record whose worker kept dying)
    included."""
    q = t.queue_items.c
    found: dict[str, tuple[float, str]] = {}
    keys = list(keys)
    for start in range(0, len(keys), _CHUNK):
        for r in conn.execute(select(q.key, q.dead_at, q.error_type, q.error).where(
                q.queue.in_(list(queues)), q.state == t.DEAD,
                q.key.in_(keys[start:start + _CHUNK]))):
            if r.key not in found or (r.dead_at or 0) > found[r.key][0]:
                found[r.key] = (float(r.dead_at or 0), f"{r.error_type or 'Error'}: "
                                                       f"{r.error or ''}")
    return found


def unsettled(conn: Connection, job: str) -> dict[str, float]:
    """Keys read from the sheet whose record has no outcome yet (or is being retried),
    with the time they were last changed."""
    o = t.sheet_row_outcomes.c
    return {r.key: float(r.at) for r in conn.execute(select(o.key, o.at).where(
        o.job == job, o.status.in_(["", t.ROW_RETRYING])))}


def summary(conn: Connection, job: str) -> dict[str, int]:
    """How many rows of ``job`` have each outcome (``""``: none yet)."""
    o = t.sheet_row_outcomes.c
    return {status: int(n) for status, n in conn.execute(
        select(o.status, func.count()).where(o.job == job).group_by(o.status))}
