"""Each pipeline record's outcome, written to its own row of the tab it was read from.

A pipeline whose source is a sheet tab (:func:`sheetops.pipelines.sheet_tab`) keeps
each record's fate in the store (``sheet_row_outcomes``) and marks the job in the
outbox in the same transaction. The status writer asks :class:`RowOutcomeRenderer` for
the ranges of the rows that changed since the sheet last accepted them and sends them
in the same ``write_batch`` as the Status, Runs and Errors tabs — one request per flush
whatever the number of rows: consecutive rows go as one range, the outcome columns
only (the record's own cells are never written). A tab of another sheet gets its own
single write per flush. Rows are marked written only after the sheet accepted them,
so an outage or a crash delays a row, never loses or doubles it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from sheetops import plugins
from sheetops.sheets import CellValue, SheetBackend, TabWrite
from sheetops.store import sheet_rows

log = logging.getLogger("sheetops.status")

STATUS_COLUMN, ERROR_COLUMN, AT_COLUMN, RETRY_COLUMN = (
    "sheetops_status", "sheetops_error", "sheetops_at", "sheetops_retry")
#: The columns a sheet-tab pipeline owns in its tab, in the order it adds them.
OUTCOME_COLUMNS = (STATUS_COLUMN, ERROR_COLUMN, AT_COLUMN, RETRY_COLUMN)
OUTBOX_TAB = sheet_rows.OUTBOX_TAB


def same_sheet(a: str, b: str) -> bool:
    """Whether two locations name one sheet (a path spelt two ways, a URL and its key)."""
    a, b = a.strip(), b.strip()
    if a == b:
        return True
    if a.lower().endswith((".xlsx", ".xlsm")) and b.lower().endswith((".xlsx", ".xlsm")):
        return Path(a).resolve() == Path(b).resolve()
    short, long = sorted((a, b), key=len)
    return bool(short) and f"/d/{short}" in long


def _cell_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def outcome_values(outcome: sheet_rows.RowOutcome) -> dict[str, CellValue]:
    """What the outcome columns of a record's row show (the retry cell is cleared)."""
    return {STATUS_COLUMN: outcome.status, ERROR_COLUMN: outcome.error,
            AT_COLUMN: _cell_time(outcome.at) if outcome.status else "",
            RETRY_COLUMN: ""}


def _runs(numbers: Sequence[int]) -> list[list[int]]:
    """Consecutive runs of sorted numbers: [2, 3, 4, 9] -> [[2, 3, 4], [9]]."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs


def render(source: sheet_rows.RowSource, outcomes: Sequence[sheet_rows.RowOutcome]
           ) -> list[TabWrite]:
    """The ranges that put ``outcomes`` (and, if pending, the header) on the sheet."""
    by_column = {c: n for n, c in source.columns.items()}
    column_runs = _runs(sorted(by_column))
    writes: list[TabWrite] = []
    if source.header_pending:
        for cols in column_runs:
            writes.append(TabWrite(source.tab, [[by_column[c] for c in cols]], start_row=1,
                                   start_col=cols[0], width=len(cols)))
    at_row = {o.row: o for o in outcomes if o.row >= 2}
    for rows in _runs(sorted(at_row)):
        values = [outcome_values(at_row[r]) for r in rows]
        for cols in column_runs:
            writes.append(TabWrite(source.tab,
                                   [[v[by_column[c]] for c in cols] for v in values],
                                   start_row=rows[0], start_col=cols[0], width=len(cols)))
    return writes


@dataclass
class RowsFlush:
    """One flush's share of row outcomes: ranges for the status writer's own sheet,
    and what to confirm once the sheet accepted them."""

    here: list[TabWrite] = field(default_factory=list)
    elsewhere: dict[str, list[TabWrite]] = field(default_factory=dict)
    # the jobs whose marks were claimed, the rendered (key, version)s per job, and the
    # location of each job written to another sheet
    jobs: frozenset[str] = frozenset()
    versions: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    header: set[str] = field(default_factory=set)
    location_of: dict[str, str] = field(default_factory=dict)


class RowOutcomeRenderer:
    """The status writer's renderer (:class:`sheetops.status.TabRenderer`) for the
    outbox marks ``(sheet_rows, job)``: :meth:`render` before the flush's one write,
    :meth:`delivered` after the writer's sheet (``location``) accepted it."""

    def __init__(self, engine: Engine, location: str,
                 open_sheet: Callable[[str], SheetBackend] = plugins.open_sheet) -> None:
        self.engine = engine
        self.location = location
        self.open_sheet = open_sheet
        self._sheets: dict[str, SheetBackend] = {}
        self._flush = RowsFlush()

    def render(self, keys: frozenset[str], snapshot: Any = None) -> list[TabWrite]:
        """Ranges of every row of the jobs ``keys`` changed since the last accepted
        write; those on the writer's sheet go in this flush's write, the others are
        written to their own sheet by :meth:`delivered`."""
        flush = RowsFlush(jobs=frozenset(keys))
        with self.engine.connect() as conn:
            found = sheet_rows.sources(conn, sorted(keys))
            for job, source in found.items():
                outcomes = sheet_rows.unwritten(conn, job)
                writes = render(source, outcomes)
                flush.versions[job] = [(x.key, x.version) for x in outcomes]
                if source.header_pending:
                    flush.header.add(job)
                if same_sheet(source.location, self.location):
                    flush.here.extend(writes)
                else:
                    flush.elsewhere.setdefault(source.location, []).extend(writes)
                    flush.location_of[job] = source.location
        self._flush = flush
        return flush.here

    def delivered(self, keys: frozenset[str]) -> list[str]:
        """The writer's sheet took this flush's rows: write the other sheets (one
        request each), record what each sheet now holds, and return the jobs that are
        done (a sheet that failed keeps its jobs' marks for the next flush)."""
        flush, self._flush = self._flush, RowsFlush()
        failed: set[str] = set()
        for location, writes in flush.elsewhere.items():
            try:
                sheet = self._sheets.get(location) or self.open_sheet(location)
                self._sheets[location] = sheet
                sheet.write_batch(writes)
            except Exception as exc:
                failed.add(location)
                self._sheets.pop(location, None)
                log.warning("row outcomes for %s could not be written (%s: %s); they stay "
                            "in the outbox", location, type(exc).__name__, exc)
        done: list[str] = []
        with self.engine.begin() as conn:
            for job in sorted(flush.jobs & set(keys)):
                if flush.location_of.get(job) in failed:
                    continue
                sheet_rows.written(conn, job, flush.versions.get(job, []))
                if job in flush.header:
                    sheet_rows.header_written(conn, job)
                done.append(job)
        return done
