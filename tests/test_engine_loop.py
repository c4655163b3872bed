"""The engine's control loop: one failing part never skips the others, a refresh
that fails keeps the last good config and is reported once, not at every refresh, and a
Run now request runs exactly once when its scheduler is killed between claiming and
submitting it, or between its run's row and its ack; the engine, not the dashboard, keeps
the rollups."""

from __future__ import annotations

import logging
import subprocess

from automations_for_tests import read_starts
from conftest import wait_for
from sheetops.connectors.sheets.workbook import WorkbookSheet
from sqlalchemy import func, select
from test_cli import SHEETOPS, cli_env, probe, running_cli

from sheetops.dashboard import queries as q
from sheetops.engine import HOLD_AFTER_CLAIM_ENV, HOLD_BEFORE_ACK_ENV, Engine, EngineOptions
from sheetops.metrics import StoreCollector
from sheetops.store import Store
from sheetops.store import rollups as ru
from sheetops.store import schema as t
from sheetops.store.requests import QUEUE


class BreakableSheet(WorkbookSheet):
    """The real workbook backend, whose config read can be made to raise something no
    check foresaw (as a cell that crashed the parser did)."""

    broken = False
    failed_reads = 0

    def read_tabs(self, names):
        if self.broken:
            self.failed_reads += 1
            raise RecursionError("maximum recursion depth exceeded")
        return super().read_tabs(names)


def test_a_failing_refresh_keeps_the_config_and_run_now_still_works(workbook, tmp_path,
                                                                      caplog):
    workbook.settings(refresh_interval_s=0.2)
    workbook.jobs(probe("kept", "manual", tmp_path / "kept"))
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    sheet = BreakableSheet(workbook.path)
    engine = Engine(sheet, store, EngineOptions(workers=1, control_interval_s=0.05))
    caplog.set_level(logging.WARNING, "sheetops.engine")
    engine.start()
    try:
        sheet.broken = True
        wait_for(lambda: engine.last_refresh_ok is False)
        store.request_run("kept", "ops@example.org")
        wait_for(lambda: store.count_runs("kept") >= 1, timeout=15)
        wait_for(lambda: sheet.failed_reads >= 4)  # several refreshes failed
        assert "kept" in engine.snapshot.jobs  # the last good config
    finally:
        engine.stop()
    with store.engine.connect() as conn:
        failed = conn.execute(select(t.config_events.c.detail)
                              .where(t.config_events.c.kind == "failed")).scalars().all()
    store.dispose()
    assert failed == ["the config could not be parsed (RecursionError: maximum recursion "
                      "depth exceeded)"]
    warnings = [r for r in caplog.records if "could not read the config sheet" in r.message]
    assert len(warnings) == 1


def test_a_run_now_behind_a_busy_worker_shows_queued_then_ok(workbook, tmp_path):
    """Through the engine's own status writer: the Runs and Status tabs show the waiting
    run as queued (no start time yet) while the only worker is busy, then ok."""
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=0.2)
    release = tmp_path / "release-blocker"  # busy until the test has seen "queued"
    workbook.jobs(probe("blocker", "manual", tmp_path / "blocker", hold_until=str(release)),
                  probe("waiter", "manual", tmp_path / "waiter"))
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    engine = Engine(WorkbookSheet(workbook.path), store,
                    EngineOptions(workers=1, control_interval_s=0.05))
    engine.start()

    def run_of(job: str) -> dict | None:
        return next((r for r in workbook.records("Runs") if r["job"] == job), None)

    try:
        store.request_run("blocker", "ops@example.org")
        wait_for(lambda: (run_of("blocker") or {}).get("status") == "running")
        store.request_run("waiter", "ops@example.org")
        queued = wait_for(lambda: (lambda r: r if r and r["status"] == "queued" else None)(
            run_of("waiter")))
        assert queued["start"] in (None, "")
        wait_for(lambda: {r["job"]: r["state"] for r in workbook.records("Status")}
                 == {"blocker": "running", "waiter": "queued"})
        release.touch()
        done = wait_for(lambda: (lambda r: r if r and r["status"] == "ok" else None)(
            run_of("waiter")))
        assert done["start"] not in (None, "") and done["attempts"] == 1
    finally:
        release.touch()  # also when an assertion failed: stop() waits for the blocker
        engine.stop()
    assert store.run(done["run_id"])["status"] == "ok"
    store.dispose()


def test_the_engine_keeps_the_rollups_the_dashboard_only_reads(workbook, tmp_path):
    """The hourly/daily rollups behind the dashboard's long windows are refreshed by the
    engine's status loop (the dashboard opens the store read-only and never refreshes
    them): a run shows in them while the engine runs, and a 7-day Overview counts it."""
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=0.2)
    workbook.jobs(probe("tick", "manual", tmp_path / "tick"))
    store = Store(f"sqlite:///{tmp_path / 'engine.db'}")
    assert store.rollups.refreshed_at() is None
    engine = Engine(WorkbookSheet(workbook.path), store,
                    EngineOptions(workers=1, control_interval_s=0.05))
    engine.start()

    def rolled_up() -> int:
        with store.engine.connect() as conn:
            return conn.execute(select(func.sum(ru.runs_hourly.c.ok))).scalar() or 0

    try:
        store.request_run("tick", "ops@example.org")
        wait_for(lambda: rolled_up() == 1, what="the run in the engine's hourly rollup")
    finally:
        engine.stop()
    assert store.rollups.refreshed_at() is not None
    overview = q.overview(store, 7 * 86400)
    assert overview.approximate and (overview.totals.runs, overview.totals.ok) == (1, 1)
    store.dispose()


def test_a_request_claimed_by_a_scheduler_killed_before_submit_runs_once_on_the_next(
        workbook, tmp_path, isolated_env):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("asked", "manual", folder))
    store = Store(isolated_env)
    request_id = store.request_run("asked", "ops@example.org", dry_run=True)
    held = tmp_path / "held"
    first = subprocess.Popen([SHEETOPS, "run", "--sheet", str(workbook.path)], cwd=tmp_path,
                             env=cli_env(**{HOLD_AFTER_CLAIM_ENV: str(held)}), text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the hook writes the ids it claimed, then blocks before submitting
        wait_for(lambda: held.exists() and held.read_text() == str(request_id), timeout=60)
    finally:
        first.kill()  # SIGKILL: no cleanup, the claim is never settled
        first.wait()
    assert store.requests.queues.depths([QUEUE])[QUEUE].claimed == 1
    assert store.count_runs("asked") == 0 and q.pending_requests(store) == 0
    # Prometheus shows the request waiting, read from the queue itself
    [depth] = [f for f in StoreCollector(store).collect() if f.name == "sheetops_queue_depth"]
    assert {s.labels["queue"]: s.value for s in depth.samples} == {QUEUE: 1}

    def linked() -> str | None:
        value = q.run_requests(store).set_index("id").loc[request_id, "run_id"]
        return value if isinstance(value, str) else None

    run_id = linked()  # chosen by the killed scheduler at its claim, never recorded
    assert run_id is not None and store.run(run_id) is None
    with running_cli("run", "--sheet", str(workbook.path), cwd=tmp_path):
        # after the dead claim's lease ran out: run under the id given at the claim
        wait_for(lambda: (store.run(run_id) or {}).get("status") == "ok", timeout=60)
        wait_for(lambda: QUEUE not in store.requests.queues.depths([QUEUE]))
    run = store.run(run_id)
    assert (run["job"], run["requested_by"], bool(run["dry_run"])) == (
        "asked", "ops@example.org", True)
    assert store.count_runs("asked") == 1 and len(read_starts(folder)) == 1  # exactly once
    assert QUEUE not in store.requests.queues.depths([QUEUE])  # acked: nothing left
    store.dispose()


def test_a_request_whose_run_was_recorded_before_its_scheduler_died_is_not_run_again(
        workbook, tmp_path, isolated_env):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("asked", "manual", folder))
    store = Store(isolated_env)
    store.request_run("asked", "ops@example.org")
    held = tmp_path / "held"
    first = subprocess.Popen([SHEETOPS, "run", "--sheet", str(workbook.path)], cwd=tmp_path,
                             env=cli_env(**{HOLD_BEFORE_ACK_ENV: str(held)}), text=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # the hook writes the run ids in the store, then blocks before acking
        run_id = wait_for(lambda: held.exists() and held.read_text(), timeout=60)
        wait_for(lambda: (store.run(run_id) or {}).get("status") == "ok", timeout=30)
    finally:
        first.kill()  # SIGKILL: the run is done and recorded, its request not acked
        first.wait()
    assert store.requests.queues.depths([QUEUE])[QUEUE].claimed == 1
    assert len(read_starts(folder)) == 1
    with running_cli("run", "--sheet", str(workbook.path), cwd=tmp_path):
        # after the dead claim's lease ran out, the next leader finds the run and acks
        wait_for(lambda: QUEUE not in store.requests.queues.depths([QUEUE]), timeout=60)
    assert store.count_runs("asked") == 1 and len(read_starts(folder)) == 1  # exactly once
    assert q.run_requests(store)["run_id"].tolist() == [run_id]
    store.dispose()
