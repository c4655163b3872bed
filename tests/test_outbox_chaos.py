"""The outbox: nothing lost, nothing doubled, whatever Google does.

The first tests drive :class:`~sheetops.status.StatusWriter` in process against the
emulator and count requests. The last two run the real ``sheetops run`` in a
subprocess against an emulator in this process: one through a 30% error rate and a
full outage, one killed with SIGKILL while writes are pending and then restarted.
Afterwards the Status, Runs and Errors tabs must hold exactly what the store holds.
"""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from sheetops.connectors.sheets import open_sheet
from sheetops.connectors.sheets.google import GoogleSheet

from sheetops import tabs
from sheetops.engine import init_sheet, read_config
from sheetops.registry import discover_from_settings
from sheetops.sheets import TabWrite
from sheetops.status import StatusWriter
from sheetops.store import Batch, Store
from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import emulator, emulator_env  # noqa: F401  (fixtures)

JOB_NAMES = [c.name for c in tabs.JOB_COLUMNS]


def job_row(**values: Any) -> list[Any]:
    return [values.get(name, "") for name in JOB_NAMES]


def configure(url: str, jobs: Sequence[dict[str, Any]], settings: dict[str, Any]) -> None:
    """Create the tabs (``sheetops init`` without examples), then the jobs and settings."""
    sheet = open_sheet(url)
    init_sheet(sheet, examples=False)
    sheet.write_batch([
        TabWrite(tabs.JOBS, [JOB_NAMES] + [job_row(**j) for j in jobs]),
        TabWrite(tabs.SETTINGS, [["key", "value"], *([k, v] for k, v in settings.items())]),
    ])


def data_rows(emu: SheetsEmulator, key: str, tab: str) -> list[list[str]]:
    rows = emu.values(key, tab)
    assert rows[0] == [c.name for c in tabs.columns_of(tab)], f"{tab} header"
    return rows[1:]


# ---------------------------------------------------------------- in process: the writer
@pytest.fixture
def writer(emulator_env: SheetsEmulator, tmp_path: Path
           ) -> Iterator[tuple[StatusWriter, Store, GoogleSheet, str]]:
    key = emulator_env.create_spreadsheet("outbox")
    url = emulator_env.sheet_url(key)
    configure(url, [{"job": "a", "automation": "heartbeat", "schedule": "every 1m"},
                    {"job": "b", "automation": "heartbeat", "schedule": "every 1m"},
                    {"job": "c", "automation": "heartbeat", "schedule": "manual"}],
              {"runs_tab_rows": 2000, "errors_tab_rows": 50})
    assert not discover_from_settings()  # the built-in automations, as the CLI loads them
    sheet = GoogleSheet.open(url, attempts=2, retry_initial_s=0.01, retry_max_s=0.02)
    snapshot = read_config(sheet)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    # a failed write's marks are claimable again at once: each flush below is a retry
    yield StatusWriter(store, sheet, lambda: snapshot, retry_delay_s=0), store, sheet, key
    store.dispose()


def record_runs(store: Store, n: int, jobs: Sequence[str] = ("a", "b", "c"),
                outbox: Sequence[tuple[str, str]] | None = None, failed: bool = False
                ) -> list[str]:
    now = time.time()
    runs, states, errors, entries = [], {}, [], []
    for i in range(n):
        job = jobs[i % len(jobs)]
        run_id = uuid.uuid4().hex[:19]
        start = now + i * 0.001
        runs.append({"id": run_id, "job": job, "trigger": "schedule", "status":
                     "failed" if failed else "ok", "started_at": start,
                     "finished_at": start + 0.01, "attempts": 1, "duration_s": 0.01})
        states[job] = {"last_run_id": run_id, "last_status": runs[-1]["status"],
                       "last_start": start, "last_end": start + 0.01}
        if failed:
            errors.append({"time": start, "job": job, "run_id": run_id, "attempt": 1,
                           "error_type": "PermanentError", "message": f"boom {i}"})
        entries += [(tabs.STATUS, job), (tabs.RUNS, "")] + ([(tabs.ERRORS, "")] if failed
                                                            else [])
    store.record(Batch(new_runs=runs, job_states=states, errors=errors,
                       outbox=list(outbox) if outbox is not None else entries))
    return [r["id"] for r in runs]


def spy_writes(sheet: GoogleSheet) -> list[list[str]]:
    calls: list[list[str]] = []
    real = sheet.write_batch

    def write_batch(writes: Sequence[TabWrite]) -> None:
        calls.append([w.tab for w in writes])
        real(writes)

    sheet.write_batch = write_batch  # type: ignore[method-assign]
    return calls


def test_a_flush_writes_only_the_tabs_with_pending_entries_in_one_request(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    status, store, sheet, key = writer
    calls = spy_writes(sheet)
    assert status.flush() and calls == []  # nothing pending: no request at all
    ids = record_runs(store, 5, outbox=[(tabs.RUNS, "")])
    emulator_env.reset_counts()
    assert status.flush()
    assert calls == [[tabs.RUNS]]
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == ids[::-1]
    assert data_rows(emulator_env, key, tabs.STATUS) == []  # not pending, not written
    assert store.pending_outbox().count == 0


def test_status_rows_coalesce_into_one_row_per_job(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    status, store, _sheet, key = writer
    record_runs(store, 300)  # 600 outbox entries over Status and Runs
    assert store.pending_outbox().count == 600
    emulator_env.reset_counts()
    assert status.flush()
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}
    rows = data_rows(emulator_env, key, tabs.STATUS)
    assert [r[0] for r in rows] == ["a", "b", "c"] and {r[1] for r in rows} == {"ok"}
    assert len(data_rows(emulator_env, key, tabs.RUNS)) == 300
    assert store.pending_outbox().count == 0 and not store.pending_outbox().tabs


def test_a_growing_tab_costs_one_structural_request(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    status, store, _sheet, key = writer
    record_runs(store, 1500, failed=True)  # Runs outgrows the 1,000-row grid
    emulator_env.reset_counts()
    assert status.flush()
    assert dict(emulator_env.counts) == {"batchUpdate": 1, "values.batchUpdate": 1}
    assert len(data_rows(emulator_env, key, tabs.RUNS)) == 1500
    assert len(data_rows(emulator_env, key, tabs.ERRORS)) == 50  # errors_tab_rows
    emulator_env.reset_counts()
    record_runs(store, 3)
    assert status.flush()
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}


def test_entries_are_delivered_only_when_the_sheet_accepted_them(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    status, store, _sheet, key = writer
    ids = record_runs(store, 4)
    emulator_env.faults.set(outage=True)
    for _ in range(3):
        assert not status.flush()
    assert store.pending_outbox().count == 8 and status.failures == 3
    assert "Unavailable" in status.last_error
    emulator_env.faults.set(outage=False, error_rate=1.0, codes=(400,))  # refused: kept
    assert not status.flush() and store.pending_outbox().count == 8
    emulator_env.faults.clear()
    more = record_runs(store, 2)
    assert status.flush()
    assert store.pending_outbox().count == 0
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == (ids + more)[::-1]


def test_changes_made_while_a_write_is_in_flight_stay_pending(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    """A run recorded between the rendering and the ack: its mark was not claimed, so
    the ack leaves it, and the next flush writes the run."""
    status, store, sheet, key = writer
    first = record_runs(store, 2)
    late: list[str] = []
    real = sheet.write_batch

    def write_batch(writes: Sequence[TabWrite]) -> None:
        real(writes)
        if not late:  # a run finishing between the rendering and the acknowledgement
            late.extend(record_runs(store, 1, outbox=[(tabs.RUNS, "")]))

    sheet.write_batch = write_batch  # type: ignore[method-assign]
    assert status.flush()
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == first[::-1]
    pending = store.pending_outbox()
    assert pending.by_tab == {tabs.RUNS: 1}
    assert status.flush()
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == (first + late)[::-1]
    assert store.pending_outbox().count == 0


def test_delivered_marks_leave_nothing_behind_and_pending_ones_are_kept(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    from sqlalchemy import func, select

    from sheetops.store import schema
    from sheetops.store.outbox import QUEUE

    def rows() -> int:
        with store.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(schema.queue_items)
                                .where(schema.queue_items.c.queue == QUEUE)).scalar_one()

    status, store, _sheet, _key = writer
    record_runs(store, 5)
    assert rows() == 10
    emulator_env.faults.set(outage=True)
    assert not status.flush() and rows() == 10  # pending marks are kept
    emulator_env.faults.clear()
    assert status.flush() and rows() == 0  # acked marks are gone, no pruning needed


def test_a_failed_write_is_retried_after_its_delay_and_not_before(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    _status, store, sheet, key = writer
    snapshot = read_config(sheet)
    status = StatusWriter(store, sheet, lambda: snapshot, retry_delay_s=1.0)
    ids = record_runs(store, 3)
    emulator_env.faults.set(outage=True)
    assert not status.flush() and status.failures == 1
    emulator_env.faults.clear()
    emulator_env.reset_counts()
    assert not status.flush()  # the marks wait out their delay: no request, still behind
    assert emulator_env.total_requests == 0 and store.pending_outbox().count == 6
    assert status.failures == 1
    wait_for(status.flush, 30, "the retry after the delay")
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == ids[::-1]
    assert store.pending_outbox().count == 0


def test_a_renderer_writes_its_tab_from_its_marks_keys_in_the_same_request(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    """Marks ``(tab, key)`` for a tab that is not a status tab reach the renderer added
    for it, keys coalesced; its writes go out in the flush's one write_batch. A renderer
    that fails, or a tab nobody renders, keeps its marks pending and holds back nothing."""
    status, store, _sheet, key = writer

    class Contacts:
        """Writes the marked rows; "r2" is finished only at the second flush."""

        def __init__(self) -> None:
            self.seen: list[frozenset[str]] = []

        def render(self, keys: frozenset[str], snapshot: Any) -> list[TabWrite]:
            self.seen.append(keys)
            return [TabWrite("Contacts", [["row", "outcome"]] +
                             [[k, "sent"] for k in sorted(keys)])]

        def delivered(self, keys: frozenset[str]) -> set[str]:
            return set(keys) if len(self.seen) > 1 else set(keys) - {"r2"}

    class Broken(Contacts):
        def render(self, keys: frozenset[str], snapshot: Any) -> list[TabWrite]:
            raise ValueError("cannot render")

    contacts = Contacts()
    status.add_renderer("Contacts", contacts)
    status.add_renderer("Leads", Broken())
    record_runs(store, 2, outbox=[(tabs.RUNS, ""), ("Contacts", "r1"), ("Contacts", "r2"),
                                  ("Contacts", "r1"), ("Leads", "l1"), ("Orphans", "o1")])
    emulator_env.reset_counts()
    assert not status.flush()  # written, but some marks are still pending
    assert emulator_env.counts["values.batchUpdate"] == 1
    assert contacts.seen == [frozenset({"r1", "r2"})]
    assert emulator_env.values(key, "Contacts") == [["row", "outcome"], ["r1", "sent"],
                                                    ["r2", "sent"]]
    assert len(data_rows(emulator_env, key, tabs.RUNS)) == 2
    assert store.pending_outbox().by_tab == {"Contacts": 1, "Leads": 1, "Orphans": 1}
    assert not status.flush()  # the fixture retries at once: r2 again, Leads still broken
    assert contacts.seen[1:] == [frozenset({"r2"})]
    assert store.pending_outbox().by_tab == {"Leads": 1, "Orphans": 1}
    with pytest.raises(ValueError, match="status tab"):
        status.add_renderer(tabs.STATUS, contacts)


WRITER_CHILD = """
import sys
from sheetops.connectors.sheets.google import GoogleSheet
from sheetops.engine import read_config
from sheetops.registry import discover_from_settings
from sheetops.status import StatusWriter
from sheetops.store import Store

discover_from_settings()
sheet = GoogleSheet.open(sys.argv[2], attempts=1)
snapshot = read_config(sheet)
writer = StatusWriter(Store(sys.argv[1]), sheet, lambda: snapshot,
                      lease_s=float(sys.argv[3]))
print("ready", flush=True)
sys.stdin.readline()
writer.flush()
"""


def test_a_writer_killed_mid_flush_leaves_its_marks_to_the_next_after_its_lease(
        writer: tuple[StatusWriter, Store, GoogleSheet, str],
        emulator_env: SheetsEmulator) -> None:
    """A writer process claims the marks and hangs in the sheet's write (the emulator is
    slow); SIGKILL. The marks are nobody's until its lease runs out, then the next writer
    claims them and every run reaches the tab once."""
    from sheetops.store.outbox import QUEUE

    status, store, sheet, key = writer
    ids = record_runs(store, 4)
    lease_s = 6.0
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER_CHILD, store.url, sheet.location, str(lease_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"  # type: ignore[union-attr]
        emulator_env.faults.set(latency_s=5)
        child.stdin.write("flush\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        wait_for(lambda: store.queues.depths()[QUEUE].claimed == 8, 30, "the child's claim")
        child.kill()
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
    emulator_env.faults.clear()
    emulator_env.reset_counts()
    assert not status.flush()  # still leased to the dead writer: nothing to claim yet
    assert emulator_env.total_requests == 0 and store.pending_outbox().count == 8
    wait_for(status.flush, lease_s + 30, "the marks after the dead writer's lease")
    assert [r[0] for r in data_rows(emulator_env, key, tabs.RUNS)] == ids[::-1]
    assert store.pending_outbox().count == 0


# ---------------------------------------------------------------- the real scheduler
CHAOS_JOBS = [
    {"job": "beat", "automation": "heartbeat", "schedule": "every 1s", "max_attempts": 1},
    {"job": "flaky", "automation": "flaky", "schedule": "every 1s", "max_attempts": 3,
     "backoff_initial_s": 0.05, "backoff_max_s": 0.1, "params": '{"succeed_on_attempt": 2}'},
    {"job": "broken", "automation": "always_fails", "schedule": "every 1s",
     "max_attempts": 1},
]
CHAOS_SETTINGS = {"status_flush_interval_s": 1, "refresh_interval_s": 2,
                  "runs_tab_rows": 1000, "errors_tab_rows": 1000}


class Scheduler:
    """``sheetops run`` in a subprocess of its own process group."""

    def __init__(self, url: str, store_url: str, tmp_path: Path, seconds: float) -> None:
        env = dict(os.environ)
        env.update({"SHEETOPS_STORE_URL": store_url, "SHEETOPS_WORKERS": "2",
                    "SHEETOPS_SHEETS_MAX_RETRIES": "2", "SHEETOPS_SHEETS_TIMEOUT_S": "5"})
        self.log = tmp_path / f"run-{time.monotonic_ns()}.log"
        self._err = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sheetops.cli", "run", "--for", str(seconds),
             "--sheet", url], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
            stderr=self._err, text=True, start_new_session=True)
        self.stdout = ""

    def wait_started(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            self.stdout += line
            if "sheetops is running" in line:
                return
            if not line:
                break
        raise AssertionError(f"the scheduler did not start: {self.stdout}\n{self.stderr}")

    def finish(self, timeout: float = 60) -> int:
        out, _ = self.proc.communicate(timeout=timeout)
        self.stdout += out
        self._err.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the scheduler, then its worker processes (same process group)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._err.close()

    @property
    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.log.read_text()


def assert_tabs_mirror_the_store(emu: SheetsEmulator, key: str, store: Store) -> list[str]:
    """Runs, Errors and Status hold exactly the store's rows; returns the run ids."""
    run_ids = [r[0] for r in data_rows(emu, key, tabs.RUNS)]
    assert len(run_ids) == len(set(run_ids)), "a run is on the Runs tab twice"
    runs = store.recent_runs(CHAOS_SETTINGS["runs_tab_rows"])
    assert run_ids == [r["id"] for r in runs]
    assert [r[5] for r in data_rows(emu, key, tabs.RUNS)] == [r["status"] for r in runs]
    on_tab = [(r[1], r[2], r[4], r[5]) for r in data_rows(emu, key, tabs.ERRORS)]
    in_store = [(e["job"], e["run_id"], str(e["attempt"]), e["error_type"])
                for e in store.recent_errors(CHAOS_SETTINGS["errors_tab_rows"])]
    assert on_tab == in_store
    states = store.job_states()
    status = {r[0]: r for r in data_rows(emu, key, tabs.STATUS)}
    assert list(status) == [j["job"] for j in CHAOS_JOBS]
    for job, row in status.items():
        assert row[1] == states[job]["last_status"], job
        assert row[9] == str(states[job]["consecutive_failures"]), job
    assert store.pending_outbox().count == 0
    return run_ids


def test_run_through_errors_and_an_outage_loses_and_doubles_nothing(
        emulator_env: SheetsEmulator, tmp_path: Path) -> None:
    emu = emulator_env
    key = emu.create_spreadsheet("chaos")
    url = emu.sheet_url(key)
    configure(url, CHAOS_JOBS, CHAOS_SETTINGS)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    scheduler = Scheduler(url, store_url, tmp_path, seconds=20)
    try:
        scheduler.wait_started()
        emu.faults.set(error_rate=0.3, codes=(429, 500, 503), seed=3)
        time.sleep(7)
        emu.faults.set(outage=True)
        time.sleep(4)
        emu.faults.set(outage=False)
        assert scheduler.finish() == 0, scheduler.stderr
    finally:
        if scheduler.proc.poll() is None:
            scheduler.kill()
    emu.faults.clear()
    assert "outbox 0 pending" in scheduler.stdout, scheduler.stdout
    assert "stay in the outbox" in scheduler.stderr  # the outage did bite
    store = Store(store_url)
    try:
        run_ids = assert_tabs_mirror_the_store(emu, key, store)
        assert len(run_ids) >= 30
        assert len(data_rows(emu, key, tabs.ERRORS)) >= 10
        gauges = store.gauges()
        assert gauges["outbox_depth"][0] == 0 and gauges["outbox_age_s"][0] == 0
    finally:
        store.dispose()


def test_sigkill_with_pending_writes_then_restart_delivers_them_once(
        emulator_env: SheetsEmulator, tmp_path: Path) -> None:
    emu = emulator_env
    key = emu.create_spreadsheet("crash")
    url = emu.sheet_url(key)
    configure(url, CHAOS_JOBS, CHAOS_SETTINGS)
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(store_url)
    scheduler = Scheduler(url, store_url, tmp_path, seconds=120)
    try:
        scheduler.wait_started()
        wait_for(lambda: len(data_rows(emu, key, tabs.RUNS)) >= 2, 15, "first runs on the tab")
        emu.faults.set(outage=True)
        outage_at = time.time()
        wait_for(lambda: sum(1 for r in store.recent_runs(100) if r["started_at"] > outage_at
                             and r["finished_at"]) >= 3, 20, "runs during the outage")
        wait_for(lambda: store.gauges().get("outbox_depth", (0, 0))[0] > 0
                 and store.gauges()["outbox_age_s"][0] > 0, 30, "the outbox gauges")
        assert store.pending_outbox().count > 0
        scheduler.kill()
    finally:
        if scheduler.proc.poll() is None:
            scheduler.kill()
    before = [r["id"] for r in store.recent_runs(1000)]
    on_tab = {r[0] for r in data_rows(emu, key, tabs.RUNS)}
    assert set(before) - on_tab, "some runs were waiting in the outbox at the kill"
    assert store.pending_outbox().count > 0

    emu.faults.set(outage=False)
    # a kill that landed mid-flush leaves marks leased to the dead writer: the restarted
    # one writes them once that lease runs out, so it runs until the outbox is empty
    restart = Scheduler(url, store_url, tmp_path, seconds=300)
    try:
        restart.wait_started()
        wait_for(lambda: store.pending_outbox().count == 0 and set(before) <= {
            r[0] for r in data_rows(emu, key, tabs.RUNS)}, 90, "the outbox drained")
        restart.proc.send_signal(signal.SIGTERM)
        assert restart.finish() == 0, restart.stderr
    finally:
        if restart.proc.poll() is None:
            restart.kill()
    assert "outbox 0 pending" in restart.stdout
    try:
        run_ids = assert_tabs_mirror_the_store(emu, key, store)
        assert all(run_ids.count(r) == 1 for r in before)
        assert len(run_ids) > len(before)  # the restarted scheduler ran too
    finally:
        store.dispose()
