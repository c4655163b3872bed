"""Durable state, and the one home of SQL: runs, attempts, errors, job state, leases,
run requests, the sheet outbox, config, alerts, rollups and the dashboard's reads."""

from sheetops.store.migrate import StoreNeedsMigration, StoreTooNew
from sheetops.store.schema import RunStatus
from sheetops.store.store import OUTPUT_KEY, Batch, Store, open_store, result_summary, run_output

__all__ = ["OUTPUT_KEY", "Batch", "RunStatus", "Store", "StoreNeedsMigration", "StoreTooNew",
           "open_store", "result_summary", "run_output"]
