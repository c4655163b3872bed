"""Sheets API requests per config refresh and per status flush: GoogleSheet vs naive gspread.

Runs against the local emulator (no network): a config sheet with 5 tabs and 1,000
jobs. "Naive" is what a first gspread script does: open the spreadsheet, then one
``worksheet(name).get_all_values()`` per tab to refresh, and one ``update`` per row to
flush statuses. Each request counts against Google's 60-per-minute per-user quota, so
the request count is the figure that matters; the wall-clock speedup is on loopback
and understates the real one.

    python bench/bench_sheets.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connectors.sheets.base import TabWrite
from connectors.sheets.google import GoogleSheet
from sheetops.settings import get_settings
from sheetops.testing import SheetsEmulator

JOBS = 1000
TABS = ["Jobs", "RateLimits", "Templates", "Settings", "Alerts"]
JOB_HEADER = ["job", "automation", "schedule", "timezone", "enabled", "params", "rate_limit",
              "template", "max_attempts", "backoff_initial_s", "backoff_max_s", "timeout_s",
              "concurrency", "catch_up", "owner", "notes"]
ROUNDS = 5


def _seed(emu: SheetsEmulator) -> str:
    client = emu.gspread_client()
    sh = client.create("bench config")
    sh.sheet1.update_title("Jobs")
    sh.sheet1.resize(rows=JOBS + 100)
    for name in TABS[1:]:
        sh.add_worksheet(name, rows=100, cols=10)
    jobs = [JOB_HEADER] + [
        [f"job-{i}", "http_fetch", "every 10m", "Europe/Paris", "TRUE", '{"url": "x"}',
         "api", "", "3", "1", "300", "600", "1", "once", "ops", ""] for i in range(JOBS)]
    sh.values_batch_update({"valueInputOption": "RAW", "data": [
        {"range": f"Jobs!A1:P{JOBS + 1}", "values": jobs},
        {"range": "RateLimits!A1:C2", "values": [["name", "rate", "scope"],
                                                 ["api", "100/minute", "global"]]},
        {"range": "Templates!A1:D2", "values": [["name", "subject", "body", "format"],
                                                ["hello", "Hi", "Hello {{ name }}", "text"]]},
        {"range": "Settings!A1:B2", "values": [["key", "value"], ["timezone", "UTC"]]},
        {"range": "Alerts!A1:C2", "values": [["name", "job", "metric"],
                                             ["fail", "*", "failure_rate"]]}]})
    return emu.sheet_url(sh.id)


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    with SheetsEmulator() as emu:
        os.environ["SHEETOPS_SHEETS_EMULATOR"] = emu.url
        os.environ["SHEETOPS_SHEETS_READS_PER_MINUTE"] = "100000"
        os.environ["SHEETOPS_SHEETS_WRITES_PER_MINUTE"] = "100000"
        get_settings.cache_clear()
        url = _seed(emu)
        sheet = GoogleSheet.open(url)
        naive = emu.gspread_client()

        def refresh() -> None:
            got = sheet.read_tabs(TABS)
            assert len(got["Jobs"]) == JOBS + 1

        def naive_refresh() -> None:
            sh = naive.open_by_url(url)
            rows = {name: sh.worksheet(name).get_all_values() for name in TABS}
            assert len(rows["Jobs"]) == JOBS + 1

        statuses = [[f"job-{i}", "ok", "2024-01-01T00:00:00Z", "1.2", "done"]
                    for i in range(JOBS)]

        def flush() -> None:
            sheet.write_batch([TabWrite("Status", statuses, start_row=2, width=5)])

        def naive_flush() -> None:
            ws = naive.open_by_url(url).worksheet("Status")
            for i, row in enumerate(statuses):
                ws.update([row], f"A{i + 2}")

        flush()  # creates the Status tab once, as the first flush in production would
        times, naive_times = [], []
        for _ in range(ROUNDS):
            emu.reset_counts()
            times.append(_timed(refresh))
            per_refresh = emu.total_requests
            emu.reset_counts()
            naive_times.append(_timed(naive_refresh))
            naive_per_refresh = emu.total_requests
        emu.reset_counts()
        flush_s = _timed(flush)
        per_flush = emu.total_requests
        emu.reset_counts()
        naive_flush_s = _timed(naive_flush)
        naive_per_flush = emu.total_requests

    speedup = statistics.median(naive_times) / statistics.median(times)
    print(f"# {len(TABS)} tabs, {JOBS} jobs, emulator on loopback, median of {ROUNDS} refreshes")
    print(f"figure: requests_per_refresh = {per_refresh} requests (goal 1)")
    print(f"figure: naive_requests_per_refresh = {naive_per_refresh} requests (goal -)")
    print(f"figure: requests_per_flush = {per_flush} requests (goal 1)")
    print(f"figure: naive_requests_per_flush = {naive_per_flush} requests")
    print(f"figure: refresh_speedup = {speedup:.1f} x (goal >= 1)")
    print(f"figure: flush_speedup = {naive_flush_s / flush_s:.1f} x (goal >= 1)")
    print(f"# at Google's 60 writes/minute the naive flush takes "
          f"{naive_per_flush / 60:.0f} minutes of quota; the batched one 1 request")


if __name__ == "__main__":
    main()
