"""Mirror the store into the sheet's Status, Runs, Errors and Validation tabs.

The outbox in the store says which tabs changed; the writer renders those tabs from the
store and sends them in one ``write_batch`` (one request), and marks the outbox entries
done only after the sheet accepted the write. The tabs are a projection of the store,
so a write retried after an outage, a 429 or a crash puts every row there exactly once:
nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sheetops import tabs
from sheetops.config.model import Problem, Snapshot
from sheetops.sheets import CellValue, SheetBackend, TabWrite
from sheetops.status_rows import OUTBOX_TAB, RowOutcomeWriter, writer_for
from sheetops.store import RunStatus, Store, run_output

log = logging.getLogger("sheetops.status")

PRUNE_EVERY_S = 600.0  # how often delivered outbox entries are deleted
KEEP_DELIVERED_S = 3600.0  # delivered entries kept this long (for a look when debugging)

NextRuns = Callable[[Any], list[datetime]]
LiveState = Callable[[str], RunStatus | None]


def fmt_time(epoch: float | None, tz: tzinfo = UTC) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def fmt_dt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def validation_rows(problems: Iterable[Problem | dict[str, Any]]) -> list[list[CellValue]]:
    rows: list[list[CellValue]] = [list(c.name for c in tabs.VALIDATION_COLUMNS)]
    for p in problems:
        d = p if isinstance(p, dict) else p.__dict__
        rows.append([d["tab"], d["cell"], d["value"], d["problem"], d["severity"]])
    return rows


def with_clearing(tab: str, rows: list[list[CellValue]], previous_rows: int) -> TabWrite:
    """A write of ``rows`` from A1 that also blanks rows left from a longer earlier write."""
    width = len(tabs.columns_of(tab))
    blanks = [[""] * width for _ in range(max(0, previous_rows - len(rows)))]
    return TabWrite(tab, rows + blanks, start_row=1, width=width)


class StatusWriter:
    """Drains the outbox into the sheet, one batched write per flush."""

    def __init__(self, store: Store, sheet: SheetBackend,
                 snapshot: Callable[[], Snapshot],
                 next_runs: NextRuns | None = None,
                 live_state: LiveState | None = None,
                 rows: RowOutcomeWriter | None = None) -> None:
        self.store = store
        # pipeline records' outcomes at their rows (sheet-tab sources), same write
        self.rows = rows or writer_for(store)
        self.sheet = sheet
        self._snapshot = snapshot
        self._next_runs = next_runs or (lambda spec: [])
        self._live_state = live_state or (lambda job: None)
        self._lock = threading.Lock()
        self._pruned_at = 0.0
        self.flushes = 0
        self.failures = 0
        self.last_error = ""

    def flush(self, force_tabs: Sequence[str] = ()) -> bool:
        """Write every tab with pending outbox entries; True when the sheet is current.

        The pending entries are read *before* the tabs are rendered, so whatever they
        announce is in the rendering; exactly those entries are marked delivered, and
        only after the sheet accepted the write. Many entries for one tab (every run
        of every job touches Status and Runs) coalesce into one rendering of that tab.
        """
        with self._lock:
            pending = self.store.pending_outbox_entries()
            todo = {tab for _id, tab in pending} | set(force_tabs)
            if not todo:
                return True
            extents = self.store.extents()
            snapshot = self._snapshot()
            writes = [self._render(tab, snapshot, extents.get(tab, 0)) for tab in
                      tabs.SYSTEM_TABS if tab in todo]
            rows = self.rows.render(self.sheet.location) if OUTBOX_TAB in todo else None
            try:
                self.sheet.write_batch(writes + (rows.here if rows else []))
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("status write to %s failed (%s); %d change(s) stay in the "
                            "outbox and will be retried", self.sheet.location,
                            self.last_error, len(pending))
                return False
            for write in writes:
                real_rows = sum(1 for r in write.rows if any(v not in ("", None) for v in r))
                if real_rows != extents.get(write.tab):
                    self.store.set_extent(write.tab, real_rows)
            delivered = [i for i, tab in pending if tab != OUTBOX_TAB]
            if rows is not None:
                delivered += self.rows.delivered(rows)
            if delivered:
                self.store.mark_outbox_delivered(ids=delivered)
            self.flushes += 1
            self.last_error = ""
            self._prune()
            return True

    def _prune(self) -> None:
        """Now and then, forget delivered outbox entries (every run leaves two or three)."""
        now = time.time()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        try:
            self.store.prune_outbox(now - KEEP_DELIVERED_S)
        except Exception as exc:  # housekeeping must never fail a flush
            log.warning("could not prune delivered outbox entries: %s", exc)

    # -- tabs --------------------------------------------------------------------------
    def _render(self, tab: str, snapshot: Snapshot, previous_rows: int) -> TabWrite:
        if tab == tabs.STATUS:
            rows = self.status_rows(snapshot)
        elif tab == tabs.RUNS:
            rows = self.runs_rows(snapshot.settings.runs_tab_rows)
        elif tab == tabs.ERRORS:
            rows = self.errors_rows(snapshot.settings.errors_tab_rows)
        else:
            rows = validation_rows(self.store.problems())
        return with_clearing(tab, rows, previous_rows)

    def status_rows(self, snapshot: Snapshot) -> list[list[CellValue]]:
        states = self.store.job_states()
        now = time.time()
        rows: list[list[CellValue]] = [[c.name for c in tabs.STATUS_COLUMNS]]
        for spec in sorted(snapshot.jobs.values(), key=lambda s: s.row):
            st = states.get(spec.job, {})
            tz = _zone(spec.timezone)
            live = self._live_state(spec.job)
            if not spec.enabled:
                state = tabs.DISABLED
            elif live:
                state = str(live)
            else:
                state = st.get("last_status") or tabs.IDLE
            upcoming = [fmt_dt(t) for t in self._next_runs(spec)]
            upcoming += [""] * (3 - len(upcoming))
            duration = st.get("last_duration_s")
            rows.append([
                spec.job, state, fmt_time(st.get("last_start"), tz),
                fmt_time(st.get("last_end"), tz),
                round(duration, 3) if duration is not None else "",
                st.get("last_result", ""), st.get("records_in", 0) if st else "",
                st.get("records_out", 0) if st else "",
                st.get("records_failed", 0) if st else "",
                st.get("consecutive_failures", 0) if st else "",
                *upcoming, spec.parsed_schedule.describe(), fmt_time(now)])
        for job, errors in snapshot.invalid.items():
            if job not in snapshot.jobs:  # never valid: say why instead of hiding it
                first = str(errors[0]) if errors else "invalid row"
                rows.append([job, tabs.INVALID, "", "", "", first[:300], "", "", "", "",
                             "", "", "", "", fmt_time(now)])
        return rows

    def runs_rows(self, limit: int) -> list[list[CellValue]]:
        rows: list[list[CellValue]] = [[c.name for c in tabs.RUN_COLUMNS]]
        for r in self.store.recent_runs(limit):
            status = r["status"]
            queued = status == RunStatus.QUEUED
            rows.append([
                r["id"], r["job"], r["trigger"] + (" (dry run)" if r["dry_run"] else ""),
                "" if queued else fmt_time(r["started_at"]), fmt_time(r["finished_at"]),
                status, r["attempts"],
                r["records_in"], r["records_out"], r["records_failed"],
                round(r["duration_s"], 3) if r["duration_s"] is not None else "",
                (f"{r['error_type']}: {r['error_message']}"[:300]
                 if status != RunStatus.OK and r["error_type"] else ""),
                run_output(r["result"])])
        return rows

    def errors_rows(self, limit: int) -> list[list[CellValue]]:
        rows: list[list[CellValue]] = [[c.name for c in tabs.ERROR_COLUMNS]]
        for e in self.store.recent_errors(limit):
            rows.append([fmt_time(e["time"]), e["job"], e["run_id"], e["stage"], e["attempt"],
                         e["error_type"], e["message"][:500], e["record_key"]])
        return rows


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except Exception:
        return UTC
