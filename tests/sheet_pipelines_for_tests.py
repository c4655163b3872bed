"""A sheet-tab pipeline the sheet-row tests run in child processes (and in-process).

``python tests/sheet_pipelines_for_tests.py STORE_URL SHEET`` runs the ``sheet_copy``
pipeline over the ``Contacts`` tab of ``SHEET`` (a workbook path or an emulated Google
Sheet URL) on ``STORE_URL`` until it is drained, flushes the row outcomes to the sheet
as the scheduler's status writer would, then exits 0 (a SIGKILL exits otherwise).
"""

from __future__ import annotations

import sys
import time

from sqlalchemy import text

from sheetops.config.model import Snapshot
from sheetops.pipelines import Pipeline, pipeline, sheet_tab
from sheetops.plugins import open_sheet
from sheetops.status import StatusWriter
from sheetops.store import Store

SINK_TABLE = "CREATE TABLE IF NOT EXISTS delivered (key TEXT, value INTEGER)"


def sheet_pipeline(name: str, sheet: str, *, batch_size: int = 20,
                   slow_s: float = 0.0) -> Pipeline:
    """Contacts rows → validate (value must be a whole number; ``skip`` rows are left
    out) → store (a SQL sink writing table ``delivered``, exactly once)."""
    pipe = pipeline(name, source=sheet_tab("Contacts", key="id", sheet=sheet), key="id")

    @pipe.stage(batch_size=batch_size, retries=0, timeout_s=2.0, max_deliveries=3)
    def validate(records):
        if slow_s:
            time.sleep(slow_s)
        for r in records:
            if not r["value"].lstrip("-").isdigit() and r["value"] != "skip":
                raise ValueError(f"Contacts!B{r['_row']}: value {r['value']!r} is not a "
                                 "whole number")
        return [r for r in records if r["value"] != "skip"]

    @pipe.sink(batch_size=batch_size, sql=True, timeout_s=2.0, max_deliveries=3)
    def store(records, ctx):
        ctx.connection.exec_driver_sql(SINK_TABLE)
        ctx.connection.execute(text("INSERT INTO delivered (key, value) VALUES (:k, :v)"),
                               [{"k": r["id"], "v": int(r["value"])} for r in records])

    return pipe


#: the outbox lease of these flushes: a flush killed with its marks claimed holds them
#: this long (the default lease is sized for Google's write timeout)
FLUSH_LEASE_S = 2.0


def flush(store: Store, sheet: str) -> bool:
    """One flush of the status writer onto ``sheet`` (its row outcomes included)."""
    return StatusWriter(store, open_sheet(sheet), lambda: Snapshot(),
                        lease_s=FLUSH_LEASE_S).flush()


def main() -> None:
    store_url, sheet = sys.argv[1:3]
    slow = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    pipe = sheet_pipeline("sheet_copy", sheet, slow_s=slow)
    store = Store(store_url)
    report = pipe.run(store.engine, lease_grace_s=0.3)
    flush(store, sheet)
    print("finished" if report.finished else "unfinished", report.records_out, flush=True)


if __name__ == "__main__":
    main()
