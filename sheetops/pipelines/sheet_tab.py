"""A sheet tab as a pipeline's source and sink: records are its rows, and each
record's outcome is written back to its own row.

    contacts = pipeline("contacts", source=sheet_tab("Contacts", key="email"), key="email")

Each row under the header is a record (a dict by header, plus ``_row``, its row
number); ``key`` names the column holding the record's stable key. The tab is read
with one request per pass (per run, or per resume after a crash); the position is the
row number, so a resumed pass reads on after the last row queued.

The pipeline owns four columns of the tab, added after the last header if missing:
``sheetops_status`` (``done``, ``skipped``, ``failed``, ``dead_letter``, ``retrying``),
``sheetops_error``, ``sheetops_at`` and ``sheetops_retry``. An outcome is stored
(``sheet_row_outcomes``) in the transaction that decides it — the hand-off of the
record's batch, or its dead letter — and written by the status writer in its next
flush (:mod:`sheetops.status_rows`). A row with an outcome is read again only when
ops set its ``sheetops_retry`` cell to TRUE (the write-back clears it; a ``done`` row
is never sent twice, so there the cell is only cleared); rows without
a key, or repeating another row's key, are ``failed`` with the cell that is wrong and
never enter the pipeline.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sheetops import plugins, tabs
from sheetops.errors import PermanentError
from sheetops.settings import get_settings
from sheetops.sheets import SheetBackend
from sheetops.status_rows import OUTCOME_COLUMNS, RETRY_COLUMN, STATUS_COLUMN
from sheetops.store import schema as t
from sheetops.store import sheet_rows
from sheetops.store.db import Database
from sheetops.store.migrate import migrate
from sheetops.store.queue import ErrorInfo

log = logging.getLogger("sheetops.pipelines")
_TRUE = {w.casefold() for w in tabs.TRUE_WORDS}
_SHEETS: dict[str, SheetBackend] = {}
_SHEETS_LOCK = threading.Lock()


def _column_letter(index: int) -> str:
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _open(location: str) -> SheetBackend:
    """The backend for ``location``, opened once per process (opening a Google Sheet
    costs a metadata request)."""
    with _SHEETS_LOCK:
        sheet = _SHEETS.get(location)
        if sheet is None:
            sheet = _SHEETS[location] = plugins.open_sheet(location)
        return sheet


class _Cells:
    """A row's cells by 0-based column, stripped; past the row's end, empty."""

    def __init__(self, cells: list[str]) -> None:
        self.cells = cells

    def __call__(self, index: int) -> str:
        return self.cells[index].strip() if index < len(self.cells) else ""


class SheetTab:
    """Rows of a tab of the config sheet (``sheet=None``: ``SHEETOPS_SHEET``) or of
    another sheet (a workbook path, a Google Sheet URL or key). See the module
    docstring."""

    def __init__(self, tab: str, key: str, sheet: str | None = None) -> None:
        self.tab, self.key, self.sheet = tab, key, sheet

    @property
    def location(self) -> str:
        location = self.sheet or get_settings().sheet
        if not location:
            raise PermanentError(f"sheet_tab({self.tab!r}) reads the config sheet, but no "
                                 "sheet is known: set SHEETOPS_SHEET or give sheet=")
        return location

    def for_run(self, engine: Engine | None, job: str, queues: Sequence[str] = ()
                ) -> SheetTabRun:
        """This source in one run of ``job`` on ``engine``'s store (``None``: a dry run,
        which reads the sheet's own status cells and records nothing)."""
        return SheetTabRun(self, self.location, engine, job, list(queues))

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        """The rows without an outcome on the sheet (outside a run: records nothing)."""
        return self.for_run(None, self.tab).read(position)


class SheetTabRun:
    """One run's reading of a tab, and the hooks the engine calls with each record's
    fate inside the transaction deciding it."""

    def __init__(self, source: SheetTab, location: str, engine: Engine | None, job: str,
                 queues: list[str]) -> None:
        self.source, self.location, self.engine = source, location, engine
        self.job, self.queues = job, queues
        self.tab = source.tab
        if engine is not None:  # its outbox and outcome tables (a notebook's new store)
            migrate(Database(engine.url.render_as_string(hide_password=False), engine))

    # -- reading -------------------------------------------------------------------
    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        after = int(position or 0)
        sheet = _open(self.location)
        values = sheet.read_tabs([self.tab]).get(self.tab)
        if values is None:
            raise PermanentError(f"{self.location} has no tab {self.tab!r} for the "
                                 f"pipeline {self.job!r} to read")
        header = [h.strip() for h in (values[0] if values else [])]
        folded = [h.casefold() for h in header]
        if self.source.key.casefold() not in folded:
            raise PermanentError(f"{self.tab}!1: no column {self.source.key!r} holds the "
                                 f"records' keys (the header has: "
                                 f"{', '.join(h for h in header if h) or 'nothing'})")
        key_col = folded.index(self.source.key.casefold())
        columns: dict[str, int] = {}
        width = max(len(r) for r in values)  # past every cell in use, headed or not
        for name in OUTCOME_COLUMNS:
            if name in folded:
                columns[name] = folded.index(name) + 1
            else:
                width += 1
                columns[name] = width
        pending_header = any(name not in folded for name in OUTCOME_COLUMNS)
        own = {i - 1 for i in columns.values()}
        rows: dict[str, int] = {}
        records: list[tuple[int, str, dict[str, Any], bool, str]] = []
        failed: list[tuple[str, str, str]] = []
        for number, cells in enumerate(values[1:], start=2):
            if not any(c.strip() for c in cells):
                continue
            cell = _Cells(cells)
            key = cell(key_col)
            where = f"{self.tab}!{_column_letter(key_col + 1)}{number}"
            if not key:
                failed.append((f"@{self.tab}!{number}", t.ROW_FAILED,
                               f"{where}: the {self.source.key} cell is empty; the row "
                               "needs a key to be processed"))
                rows[failed[-1][0]] = number
                continue
            if key in rows:
                failed.append((f"@{self.tab}!{number}", t.ROW_FAILED,
                               f"{where}: {self.source.key} {key!r} is also on row "
                               f"{rows[key]}; each row needs its own key"))
                rows[failed[-1][0]] = number
                continue
            rows[key] = number
            record = {h: cell(i) for i, h in enumerate(header) if h and i not in own}
            record["_row"] = number
            retry = cell(columns[RETRY_COLUMN] - 1).casefold() in _TRUE
            records.append((number, key, record, retry, cell(columns[STATUS_COLUMN] - 1)))
        todo = self._plan(columns, pending_header, rows, failed,
                          [r for r in records if r[0] > after])
        for number, key, record, _retry, _status in records:
            if number > after and key in todo:
                yield record, number

    def _plan(self, columns: dict[str, int], pending_header: bool, rows: dict[str, int],
              failed: list[tuple[str, str, str]],
              records: list[tuple[int, str, dict[str, Any], bool, str]]) -> set[str]:
        """Store where each key is and which rows are bad, take the retries asked for
        on ``records`` (the rows still to read), and return the keys to process: those
        without an outcome, or with a retry asked."""
        if self.engine is None:  # a dry run: the sheet's own cells say what is done
            return {key for _n, key, _r, retry, status in records if retry or not status}
        with self.engine.begin() as conn:
            known = sheet_rows.outcomes(conn, self.job)
            sheet_rows.save_source(conn, sheet_rows.RowSource(
                self.job, self.location, self.tab, columns, pending_header))
            sheet_rows.place(conn, self.job, rows, known)
            sheet_rows.settle_each(conn, self.job, [
                f for f in failed if f[0] not in known
                or (known[f[0]].status, known[f[0]].error) != (f[1], f[2])])
            asked = [key for _n, key, _r, retry, _s in records if retry]
            done = {k for k in asked if k in known and known[k].status == t.ROW_DONE}
            sheet_rows.settle(conn, self.job, [k for k in asked if k not in done],
                              t.ROW_RETRYING)
            sheet_rows.rewrite(conn, self.job, sorted(done))  # a done row is never sent twice
            if pending_header:
                sheet_rows.mark_changed(conn, self.job)
        open_ = {"", t.ROW_RETRYING}
        return {key for key in asked if key not in done} | {
            key for _n, key, _r, _a, _s in records
            if key not in known or known[key].status in open_}

    # -- outcomes (called inside the engine's transactions) -----------------------------
    def handed_off(self, conn: Connection, stage: str, sink: bool, keys_in: Sequence[str],
                   keys_out: Sequence[str]) -> None:
        """A batch of ``stage`` was handed on: records it dropped are ``skipped``;
        what a sink passed is ``done``."""
        out = set(keys_out)
        dropped = [k for k in keys_in if k not in out]
        if dropped:
            sheet_rows.settle(conn, self.job, dropped, t.ROW_SKIPPED,
                              f"left out by stage {stage}")
        if sink and keys_out:
            sheet_rows.settle(conn, self.job, keys_out, t.ROW_DONE)

    def already_done(self, conn: Connection, keys: Sequence[str]) -> None:
        """An idempotent sink had delivered ``keys`` before (a retried done row, or a
        crash between its delivery and the hand-off)."""
        sheet_rows.settle(conn, self.job, keys, t.ROW_DONE)

    def dead(self, conn: Connection, stage: str, key: str, error: ErrorInfo) -> None:
        """The record ``key`` is a dead letter of ``stage``."""
        sheet_rows.settle(conn, self.job, [key], t.ROW_DEAD,
                          f"{error.type}: {error.message}")

    def finish(self) -> None:
        """At the end of a run: records the queue itself dead-lettered (their worker
        kept dying) get their row's outcome too."""
        if self.engine is None or not self.queues:
            return
        try:
            with self.engine.begin() as conn:
                open_ = sheet_rows.unsettled(conn, self.job)
                dead = sheet_rows.dead_letters_of(conn, self.queues, list(open_))
                sheet_rows.settle_each(conn, self.job, [
                    (key, t.ROW_DEAD, error) for key, (at, error) in dead.items()
                    if at >= open_[key]])
        except SQLAlchemyError as exc:  # the next run's finish tries again
            log.warning("pipeline %s: dead letters not yet on %s's rows (%s); the next "
                        "run records them", self.job, self.tab, exc)


def sheet_tab(tab: str, key: str, sheet: str | None = None) -> SheetTab:
    """Records from the rows of ``tab`` (of the config sheet, or of ``sheet``: a
    workbook path or a Google Sheet URL/key), each record's outcome written back to its
    row. ``key`` is the column holding each record's key."""
    return SheetTab(tab, key, sheet)
