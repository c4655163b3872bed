"""Sheets API requests per config refresh and per status flush: GoogleSheet vs naive gspread.

Runs against the local emulator (no network): a config sheet with 5 tabs and 1,000
jobs. The refresh is the engine's own (:func:`sheetops.engine.read_config` →
``GoogleSheet.read_tabs``, parsing 1,000 valid jobs); the flush is the real
:meth:`sheetops.status.StatusWriter.flush` draining an outbox in which 1,000 runs
(one per job) touched Status and Runs. "Naive" is what a first gspread script does:
open the spreadsheet, then one ``worksheet(name).get_all_values()`` per tab to
refresh, and one ``update`` per changed row to flush (Status and Runs rows). Each
request counts against Google's 60-per-minute per-user quota, so the request count is
the figure that matters; the wall-clock speedups (refresh: fetching only, parsing is
the same work either way) are on loopback and understate the real ones.

    python bench/bench_sheets.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sheetops.connectors.sheets.google import GoogleSheet

from sheetops import tabs
from sheetops.engine import read_config
from sheetops.registry import discover_from_settings
from sheetops.settings import get_settings
from sheetops.status import StatusWriter
from sheetops.store import Batch, Store
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
        [f"job-{i}", "heartbeat", "every 10m", "Europe/Paris", "TRUE", '{"url": "x"}',
         "api", "", "3", "1", "300", "600", "1", "once", "ops", ""] for i in range(JOBS)]
    sh.values_batch_update({"valueInputOption": "RAW", "data": [
        {"range": f"Jobs!A1:P{JOBS + 1}", "values": jobs},
        {"range": "RateLimits!A1:C2", "values": [["name", "rate", "scope"],
                                                 ["api", "100/minute", "global"]]},
        {"range": "Templates!A1:D2", "values": [["name", "subject", "body", "format"],
                                                ["hello", "Hi", "Hello {{ name }}", "text"]]},
        {"range": "Settings!A1:B2", "values": [["key", "value"], ["timezone", "UTC"]]},
        {"range": "Alerts!A1:G2", "values": [
            ["name", "job", "metric", "threshold", "window", "channel", "enabled"],
            ["fail", "*", "failure_rate", "0.5", "1h", "email:ops@example.com", "TRUE"]]}]})
    return emu.sheet_url(sh.id)


def _timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def _one_run_per_job(store: Store) -> None:
    """What 1,000 finished runs leave behind: runs, job states and outbox marks."""
    now = time.time()
    batch = Batch()
    for i in range(JOBS):
        run_id = uuid.uuid4().hex[:19]
        start = now + i / 1000
        batch.new_runs.append({"id": run_id, "job": f"job-{i}", "trigger": "schedule",
                               "status": "ok", "started_at": start,
                               "finished_at": start + 0.2, "attempts": 1,
                               "duration_s": 0.2, "records_out": 1})
        batch.job_states[f"job-{i}"] = {"last_run_id": run_id, "last_status": "ok",
                                        "last_start": start, "last_end": start + 0.2,
                                        "last_duration_s": 0.2, "records_out": 1}
        batch.outbox += [(tabs.STATUS, f"job-{i}"), (tabs.RUNS, "")]
    store.record(batch)


def main() -> None:
    problems = discover_from_settings()
    assert not problems, problems
    with SheetsEmulator() as emu, tempfile.TemporaryDirectory() as tmp:
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

        emu.reset_counts()
        snapshot = read_config(sheet)  # the engine's refresh: read_tabs, then parse
        assert len(snapshot.jobs) == JOBS, snapshot.errors[:3]
        engine_refresh = emu.total_requests
        store = Store(f"sqlite:///{Path(tmp) / 'bench.db'}")
        writer = StatusWriter(store, sheet, lambda: snapshot)

        def flush() -> None:
            assert writer.flush()
            assert store.pending_outbox().count == 0

        def naive_flush() -> None:
            sh = naive.open_by_url(url)
            status, runs = sh.worksheet("Status"), sh.worksheet("Runs")
            for i, row in enumerate(writer.status_rows(snapshot)[1:]):
                status.update([row], f"A{i + 2}")
            for i, row in enumerate(writer.runs_rows(snapshot.settings.runs_tab_rows)[1:]):
                runs.update([row], f"A{i + 2}")

        _one_run_per_job(store)
        emu.reset_counts()
        flush()  # the first flush creates the Status and Runs tabs
        first_flush = emu.total_requests
        times, naive_times = [], []
        for _ in range(ROUNDS):
            emu.reset_counts()
            times.append(_timed(refresh))
            per_refresh = emu.total_requests
            emu.reset_counts()
            naive_times.append(_timed(naive_refresh))
            naive_per_refresh = emu.total_requests
        _one_run_per_job(store)
        pending = store.pending_outbox().count
        emu.reset_counts()
        flush_s = _timed(flush)
        per_flush = emu.total_requests
        emu.reset_counts()
        naive_flush_s = _timed(naive_flush)
        naive_per_flush = emu.total_requests
        store.dispose()

    speedup = statistics.median(naive_times) / statistics.median(times)
    print(f"# {len(TABS)} config tabs, {JOBS} jobs, emulator on loopback, median of "
          f"{ROUNDS} refreshes; a flush drains {pending} outbox marks "
          f"({JOBS} runs) into Status and Runs")
    print(f"figure: requests_per_refresh = {max(per_refresh, engine_refresh)} requests "
          f"(goal 1)")
    print(f"figure: naive_requests_per_refresh = {naive_per_refresh} requests")
    print(f"figure: requests_per_flush = {per_flush} requests (goal 1)")
    print(f"figure: requests_first_flush = {first_flush} requests (goal <= 2: creates "
          f"the tabs)")
    print(f"figure: naive_requests_per_flush = {naive_per_flush} requests")
    print(f"figure: refresh_speedup = {speedup:.1f} x (goal >= 1)")
    print(f"figure: flush_speedup = {naive_flush_s / flush_s:.1f} x (goal >= 1)")
    print(f"# at Google's 60 writes/minute the naive flush takes "
          f"{naive_per_flush / 60:.0f} minutes of quota; the batched one 1 request")


if __name__ == "__main__":
    main()
