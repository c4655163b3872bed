"""Durable state: runs, attempts, errors, job state, the sheet outbox, run requests."""

from sheetops.store.schema import RunStatus
from sheetops.store.store import Batch, Store, open_store, result_summary

__all__ = ["Batch", "RunStatus", "Store", "open_store", "result_summary"]
