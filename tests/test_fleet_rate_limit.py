"""Rate limits shared by the whole fleet through Redis (SHEETOPS_RATE_LIMIT_STORAGE):
three real `sheetops run-job` processes, each with its own sheet and store, calling
through one `20/5 seconds` RateLimits row together stay within it (5%) and wait rather
than fail; two processes reading one Google sheet share its per-user quota."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

from automations_for_tests import read_attempts
from test_cli import SHEETOPS, cli_env, probe, wait_for

from sheetops.store import Store
from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import (  # noqa: F401
    emulator,
    emulator_env,
    google_sheet_url,
)

#: A Redis database of this test file's own (other tests use other numbers).
REDIS_URL = "redis://127.0.0.1:6379/13"
AMOUNT, WINDOW_S, PROCESSES, CALLS = 20, 5.0, 3, 20


def _most_over_budget(times: list[float], amount: int, window: float) -> float:
    """The largest ratio of calls made since the first one to the budget for that long
    (``amount`` per started window). Measured from when the automation saw its permit,
    a moment after the limiter granted it: a late note only moves a call later, so
    the ratio never counts a lag as an excess."""
    times = sorted(times)
    return max((n + 1) / (amount * (int((t - times[0]) / window) + 1))
               for n, t in enumerate(times))


def test_three_processes_share_one_redis_rate_limit(workbook, tmp_path, services) -> None:
    services.redis()
    limit = f"fleet-{uuid.uuid4().hex[:8]}"  # fresh keys in the shared Redis
    workbook.write("RateLimits", ["name", "rate", "scope"],
                   [[limit, f"{AMOUNT}/{WINDOW_S:g} seconds", "global"]])
    evidence = tmp_path / "evidence"
    workbook.jobs({**probe("caller", "manual", evidence, throttle=CALLS),
                   "rate_limit": limit})
    procs = []
    for n in range(PROCESSES):
        folder = tmp_path / f"p{n}"
        folder.mkdir()
        sheet = shutil.copy(workbook.path, folder / "ops.xlsx")
        procs.append(subprocess.Popen(
            [SHEETOPS, "run-job", "caller", "--sheet", str(sheet)], cwd=folder, text=True,
            env=cli_env(SHEETOPS_RATE_LIMIT_STORAGE=REDIS_URL,
                        SHEETOPS_STORE_URL=f"sqlite:///{folder / 's.db'}"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, outputs

    attempts = read_attempts(evidence)
    assert len({a["ppid"] for a in attempts}) == PROCESSES  # three schedulers' workers
    permits = sorted(t for a in attempts for t in a["permits"])
    assert len(permits) == PROCESSES * CALLS  # every call went through: waited, not failed
    # never more than the limit allows, across the three processes
    assert _most_over_budget(permits, AMOUNT, WINDOW_S) <= 1.05
    # ... and the budget was used: the calls after the first window came at the rate
    rate = (len(permits) - AMOUNT) / (permits[-1] - permits[0])
    assert rate >= 0.95 * AMOUNT / WINDOW_S, f"{rate:.2f} calls/s"
    for n in range(PROCESSES):
        store = Store(f"sqlite:///{tmp_path / f'p{n}' / 's.db'}")
        assert [r["status"] for r in store.recent_runs(10)] == ["ok"]
        store.dispose()


_READER = """
import logging, sys, time
from sheetops.connectors.sheets.google import GoogleSheet
logging.basicConfig(level=logging.INFO)
sheet = GoogleSheet.open(sys.argv[1])  # one read request (the metadata)
for _ in range(2):
    sheet.read_tabs(["Sheet1"])
    print("read", flush=True)
print("done", flush=True)
time.sleep(600)
"""


def test_two_processes_share_the_sheets_quota_of_one_principal(request, services,
                                                               tmp_path) -> None:
    """4 reads a minute for the principal: two processes that each want 3 get 4 in all,
    and the rest wait (logging it) instead of collecting 429s."""
    services.redis()
    sheets: SheetsEmulator = request.getfixturevalue("emulator_env")
    url: str = request.getfixturevalue("google_sheet_url")
    env = {**os.environ, "SHEETOPS_RATE_LIMIT_STORAGE": REDIS_URL,
           "SHEETOPS_SHEETS_READS_PER_MINUTE": "4"}  # the emulator's URL names the principal
    sheets.reset_counts()
    logs = [tmp_path / f"reader{n}.log" for n in range(2)]
    procs = []
    for log in logs:
        with log.open("w") as out:
            procs.append(subprocess.Popen([sys.executable, "-c", _READER, url],
                                          env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        # each process has either done its three reads or is waiting for the quota
        wait_for(lambda: all("done" in f.read_text() or "quota: waiting" in f.read_text()
                             for f in logs), timeout=60)
        assert sheets.total_requests == 4  # not 6: the quota is the fleet's
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    output = "".join(f.read_text() for f in logs)
    assert "Sheets read quota: waiting" in output and "Traceback" not in output


def test_an_unreachable_storage_waits_and_says_so_once(caplog) -> None:
    from sheetops.ratelimit import STORAGE_RETRY_S, RateLimiter, RateLimitSpec

    limiter = RateLimiter("redis://127.0.0.1:1/0")  # nothing listens on port 1
    spec = RateLimitSpec("api", "10/second")
    with caplog.at_level("WARNING", "sheetops.ratelimit"):
        waits = [limiter.wait_time(spec, "job") for _ in range(3)]
    assert waits == [STORAGE_RETRY_S] * 3  # wait and ask again, never fail the run
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1


def test_a_storage_url_limits_cannot_share_is_one_sentence(workbook, tmp_path) -> None:
    from test_cli import cli

    result = cli("validate", "--sheet", str(workbook.path), cwd=tmp_path,
                 SHEETOPS_RATE_LIMIT_STORAGE="redis:/127.0.0.1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "SHEETOPS_RATE_LIMIT_STORAGE='redis:/127.0.0.1' is not valid" in result.stderr
