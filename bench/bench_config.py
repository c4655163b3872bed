"""Config at scale: parse + validate + reconcile a 10,000-row Jobs tab, and a hot
reload where one row changed, as a ratio to a full reload.

    python bench/bench_config.py [--rows N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import figure, quiet
from sheetops.connectors.sheets.workbook import WorkbookSheet

from sheetops import tabs
from sheetops.config import parse
from sheetops.engine import init_sheet, read_config
from sheetops.executors.local import LocalExecutor
from sheetops.registry import registry
from sheetops.runner import Runner
from sheetops.scheduler import Scheduler
from sheetops.sheets import TabWrite
from sheetops.store import Store

SCHEDULES = ["every 10m", "0 * * * *", "*/5 9-17 * * 1-5", "@daily", "every 30s", "manual",
             "15 6 * * *", "0 */2 * * *"]


def job_rows(n: int, changed: int | None = None) -> list[list[object]]:
    header = [c.name for c in tabs.JOB_COLUMNS]
    rows = [header]
    for i in range(n):
        row = {"job": f"job-{i:05d}", "automation": "heartbeat",
               "schedule": SCHEDULES[i % len(SCHEDULES)],
               "timezone": ["UTC", "Europe/Berlin", "America/New_York"][i % 3],
               "enabled": True, "params": f'{{"n": {i}}}', "max_attempts": 3,
               "timeout_s": 60 if i != changed else 61, "catch_up": "once"}
        rows.append([row.get(h, "") for h in header])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    quiet()
    registry.discover()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ops.xlsx"
        sheet = WorkbookSheet(path)
        init_sheet(sheet, examples=False)
        sheet.write_batch([TabWrite(tabs.JOBS, job_rows(args.rows))])
        store = Store(f"sqlite:///{tmp}/s.db")
        runner = Runner(store, LocalExecutor, workers=1)
        scheduler = Scheduler(runner)
        scheduler.aps.start(paused=True)

        t0 = time.perf_counter()
        rows = sheet.read_tabs(tabs.CONFIG_TABS)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        snapshot = parse.parse_config(rows, frozenset(registry.names()))
        t_parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = scheduler.apply(snapshot)
        t_reconcile = time.perf_counter() - t0
        assert len(snapshot.jobs) == args.rows and not snapshot.errors, snapshot.errors[:3]
        assert len(report.added) == args.rows
        full = t_parse + t_reconcile

        # Baseline for the hot reload: the same full reload with every cache cold.
        parse._parse_job_row.cache_clear()
        scheduler2 = Scheduler(runner)
        scheduler2.aps.start(paused=True)
        t0 = time.perf_counter()
        scheduler2.apply(parse.parse_config(rows, frozenset(registry.names())))
        cold = time.perf_counter() - t0

        sheet.write_batch([TabWrite(tabs.JOBS, job_rows(args.rows, changed=42))])
        t0 = time.perf_counter()
        snapshot2 = read_config(sheet, snapshot)
        t_hot_read_parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        report2 = scheduler.apply(snapshot2)
        t_hot = t_hot_read_parse + time.perf_counter() - t0
        assert report2.updated == ["job-00042"] and not report2.added, report2
        t0 = time.perf_counter()
        hot_no_read = scheduler.apply(parse.parse_config(rows, frozenset(registry.names()),
                                                         snapshot2))
        t_hot_no_read = time.perf_counter() - t0
        del hot_no_read
        scheduler.aps.shutdown(wait=False)
        scheduler2.aps.shutdown(wait=False)

    figure("config_rows", args.rows, "rows")
    figure("read_workbook_s", t_read, "s")
    figure("parse_validate_s", t_parse, "s")
    figure("reconcile_s", t_reconcile, "s")
    figure("parse_validate_reconcile_s", full, "s", "<= 2")
    figure("full_reload_s", t_read + cold, "s")
    figure("hot_reload_one_row_changed_s", t_hot, "s")
    figure("hot_reload_ratio_to_full_reload", t_hot / (t_read + cold), "x", "< 1")
    figure("hot_parse_reconcile_ratio_to_full", t_hot_no_read / cold, "x", "< 1")


if __name__ == "__main__":
    main()
