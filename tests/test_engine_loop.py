"""The engine's control loop: one failing part never skips the others, and a refresh
that fails keeps the last good config and is reported once, not at every refresh."""

from __future__ import annotations

import logging

from sheetops.connectors.sheets.workbook import WorkbookSheet
from sqlalchemy import select
from test_cli import probe, wait_for

from sheetops.engine import Engine, EngineOptions
from sheetops.store import Store
from sheetops.store import schema as t


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
    workbook.jobs(probe("blocker", "manual", tmp_path / "blocker", sleep=1.5),
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
                 == {"blocker": "running", "waiter": "queued"}, timeout=1)
        done = wait_for(lambda: (lambda r: r if r and r["status"] == "ok" else None)(
            run_of("waiter")))
        assert done["start"] not in (None, "") and done["attempts"] == 1
    finally:
        engine.stop()
    assert store.run(done["run_id"])["status"] == "ok"
    store.dispose()
