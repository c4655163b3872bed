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
