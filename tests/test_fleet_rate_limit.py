"""A RateLimits row shared by the whole fleet through Redis (SHEETOPS_RATE_LIMIT_STORAGE):
three real `sheetops run-job` processes, each with its own sheet and store, calling
through one `20/5 seconds` limit together stay within it (5%) and wait rather than fail."""

from __future__ import annotations

import shutil
import subprocess
import uuid

from automations_for_tests import read_attempts
from test_cli import SHEETOPS, cli_env, probe

from sheetops.store import Store

#: A Redis database of this test file's own (other tests use other numbers).
REDIS_URL = "redis://127.0.0.1:6379/13"
AMOUNT, WINDOW_S, PROCESSES, CALLS = 20, 5.0, 3, 20


def _most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


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
    # never more than the limit in any window, across the three processes
    assert _most_in_any_window(permits, WINDOW_S) <= AMOUNT * 1.05
    # ... and the budget was used: the calls after the first window came at the rate
    rate = (len(permits) - AMOUNT) / (permits[-1] - permits[0])
    assert rate >= 0.95 * AMOUNT / WINDOW_S, f"{rate:.2f} calls/s"
    for n in range(PROCESSES):
        store = Store(f"sqlite:///{tmp_path / f'p{n}' / 's.db'}")
        assert [r["status"] for r in store.recent_runs(10)] == ["ok"]
        store.dispose()
