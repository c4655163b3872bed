"""Mirror the store into the sheet's Status, Runs, Errors and Validation tabs (and any
tab a renderer is added for).

The sheet outbox (:mod:`sheetops.store.outbox`, on the durable queue) says which tabs
changed. The writer claims its marks with a lease, renders those tabs from the store and
sends them in one ``write_batch`` (one request), and acks exactly the marks it claimed
only after the sheet accepted the write; a failed write nacks them with a delay, and a
writer killed mid-flush leaves them to the next once its lease runs out. The tabs are a
projection of the store, so a write retried after an outage, a 429 or a crash puts
every row there exactly once: nothing is lost and nothing is doubled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sheetops import tabs
from sheetops.config.model import Problem, Snapshot
from sheetops.sheets import CellValue, SheetBackend, TabWrite
from sheetops.status_rows import OUTBOX_TAB, RowOutcomeRenderer
from sheetops.store import RunStatus, Store, run_output
from sheetops.store.outbox import OutboxClaim
from sheetops.store.queue import Claim, StaleClaim, lease_for

log = logging.getLogger("sheetops.status")

#: How long one flush (rendering and the sheet's write with its retries) may take: the
#: writer's lease on the marks it claimed is this plus the queue's grace. A flush that
#: outlives it only means its marks are written once more by the next flush.
WRITE_TIMEOUT_S = 20.0
#: How long the marks of a failed write wait before a flush claims them again.
RETRY_DELAY_S = 1.0

NextRuns = Callable[[Any], list[datetime]]
LiveState = Callable[[str], RunStatus | None]


class TabRenderer(Protocol):
    """Writes one tab that is not a status tab, from the outbox marks a flush claimed
    for it. The writer calls :meth:`render`, sends the flush's one ``write_batch``, then
    calls :meth:`delivered` (under its lock, one flush at a time), so a renderer may keep
    what it rendered between the two."""

    def render(self, keys: frozenset[str], snapshot: Snapshot) -> Sequence[TabWrite]:
        """The writes that bring the tab up to date for ``keys`` (the marks' keys); they
        go out in the flush's one ``write_batch``. Raising keeps the marks pending."""
        ...

    def delivered(self, keys: frozenset[str]) -> Iterable[str]:
        """The sheet accepted the write: finish (write another sheet, note what the sheet
        now holds) and return the keys that are done. The marks of the others stay
        pending (retried after the delay); raising keeps them all."""
        ...


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
    """Drains the outbox into the sheet, one batched write per flush.

    ``lease_s`` is how long the marks a flush claims are its own (from
    :data:`WRITE_TIMEOUT_S`); ``retry_delay_s`` how long the marks of a failed write wait
    before they are claimed again. Tabs other than the status tabs are written by the
    renderers given to :meth:`add_renderer`.
    """

    def __init__(self, store: Store, sheet: SheetBackend,
                 snapshot: Callable[[], Snapshot],
                 next_runs: NextRuns | None = None,
                 live_state: LiveState | None = None, *,
                 lease_s: float | None = None,
                 retry_delay_s: float = RETRY_DELAY_S,
                 consumer: str = "status-writer") -> None:
        self.store = store
        self.sheet = sheet
        self._snapshot = snapshot
        self._next_runs = next_runs or (lambda spec: [])
        self._live_state = live_state or (lambda job: None)
        self.lease_s = lease_for(WRITE_TIMEOUT_S) if lease_s is None else lease_s
        self.retry_delay_s = retry_delay_s
        self.consumer = consumer
        # pipeline records' outcomes at their rows (sheet-tab sources), same write
        self._renderers: dict[str, TabRenderer] = {
            OUTBOX_TAB: RowOutcomeRenderer(store.engine, sheet.location)}
        self._warned_unrendered: set[str] = set()
        self._lock = threading.Lock()
        self.flushes = 0
        self.failures = 0
        self.last_error = ""

    def add_renderer(self, tab: str, renderer: TabRenderer) -> None:
        """Write ``tab`` with ``renderer`` whenever outbox marks name it (replacing the
        renderer added for it before). Marks for a tab without one stay pending."""
        if tab in tabs.SYSTEM_TABS:
            raise ValueError(f"{tab} is a status tab: the writer renders it itself")
        with self._lock:
            self._renderers[tab] = renderer
            self._warned_unrendered.discard(tab)

    def flush(self, force_tabs: Sequence[str] = ()) -> bool:
        """Write every tab with claimable outbox marks (and the status tabs in
        ``force_tabs``) in one ``write_batch``. True when the sheet took everything this
        flush claimed (or there was nothing to claim and nothing is waiting).

        The marks are claimed *before* the tabs are rendered, so whatever they announce
        is in the rendering; exactly those marks are acked, and only after the sheet
        accepted the write. Many marks for one tab (every run of every job touches
        Status and Runs) coalesce into one rendering of that tab.
        """
        with self._lock:
            outbox = self.store.outbox
            claimed = outbox.claim(self.consumer, self.lease_s)
            if not claimed and not force_tabs:
                return outbox.pending().count == 0
            try:
                extents = self.store.extents()
                writes, kept = self._render_claimed(claimed, force_tabs, extents)
                if writes:
                    self.sheet.write_batch(writes)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("status write to %s failed (%s); %d change(s) stay in the "
                            "outbox and will be retried", self.sheet.location,
                            self.last_error, len(claimed.claims))
                self._give_back(claimed.claims, exc)
                return False
            self._note_extents(writes, extents)
            undone = self._confirm(claimed, kept)
            back = [c for c in claimed.claims if c.payload["tab"] in kept
                    or (c.payload["tab"], c.payload["key"]) in undone]
            self._give_back(back, "not written yet")
            try:
                held = {c.id for c in back}
                outbox.ack([c for c in claimed.claims if c.id not in held])
            except StaleClaim:
                log.warning("a status write outlived its %.0fs lease on the outbox; its "
                            "changes will be written once more", self.lease_s)
            self.flushes += 1
            self.last_error = ""
            return not back

    def _confirm(self, claimed: OutboxClaim, kept: set[str]) -> set[tuple[str, str]]:
        """Tell each renderer that wrote its tab the sheet accepted it; the marks
        ``(tab, key)`` it did not finish."""
        undone: set[tuple[str, str]] = set()
        for tab, keys in claimed.keys.items():
            if tab in tabs.SYSTEM_TABS or tab in kept:
                continue
            try:
                done = set(self._renderers[tab].delivered(keys))
            except Exception as exc:
                log.warning("could not finish the %s tab (%s: %s); its changes stay "
                            "pending", tab, type(exc).__name__, exc)
                done = set()
            undone |= {(tab, key) for key in keys - done}
        return undone

    def _render_claimed(self, claimed: OutboxClaim, force_tabs: Sequence[str],
                        extents: dict[str, int]) -> tuple[list[TabWrite], set[str]]:
        """The writes for the claimed tabs, and the tabs whose marks stay pending (no
        renderer, or it failed)."""
        todo = set(claimed.keys) | set(force_tabs)
        snapshot = self._snapshot()
        writes = [self._render(tab, snapshot, extents.get(tab, 0))
                  for tab in tabs.SYSTEM_TABS if tab in todo]
        kept: set[str] = set()
        for tab in sorted(set(claimed.keys) - set(tabs.SYSTEM_TABS)):
            renderer = self._renderers.get(tab)
            if renderer is None:
                if tab not in self._warned_unrendered:
                    self._warned_unrendered.add(tab)
                    log.warning("the outbox has changes for the %s tab but nothing renders "
                                "it; they stay pending", tab)
                kept.add(tab)
                continue
            try:
                writes.extend(renderer.render(claimed.keys[tab], snapshot))
            except Exception as exc:  # one tab's renderer never holds back the others
                log.warning("could not render the %s tab (%s: %s); its changes stay "
                            "pending", tab, type(exc).__name__, exc)
                kept.add(tab)
        return writes, kept

    def _note_extents(self, writes: Iterable[TabWrite], extents: dict[str, int]) -> None:
        """Remember how many rows each status tab now shows (the next, shorter write
        blanks the rest)."""
        for write in writes:
            if write.tab not in tabs.SYSTEM_TABS:
                continue
            real_rows = sum(1 for r in write.rows if any(v not in ("", None) for v in r))
            if real_rows != extents.get(write.tab):
                self.store.set_extent(write.tab, real_rows)

    def _give_back(self, claims: Sequence[Claim], error: BaseException | str) -> None:
        """Nack ``claims`` with the retry delay; if even that fails (the store is
        down), their lease runs out and the next flush claims them all the same."""
        try:
            self.store.outbox.nack(claims, self.retry_delay_s, error)
        except Exception as exc:
            log.warning("could not give %d outbox change(s) back (%s); they are retried "
                        "when their lease runs out", len(claims), exc)

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
