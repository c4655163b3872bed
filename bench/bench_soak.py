"""The soak: 1,000 jobs every 10 s on the embedded default (SQLite store, local worker
processes) for minutes on end — runs missed, memory growth, and start lateness beside
bare APScheduler 3 running the same no-op jobs for as long.

    python bench/bench_soak.py            # 50 s each, under two minutes in all
    python bench/bench_soak.py --full     # 10 minutes each (the issue's soak)
    python bench/bench_soak.py --seconds 90 --no-bare

Missed: for every 10 s boundary between the first and the last round, each job should
have one run that ended ``ok``. RSS is this process plus its worker processes, read from
/proc: the last sample against the one taken after the first minute (a third of the run
when it is shorter). Lateness is due time → the function starts (sheetops: the attempt
in a worker process; APScheduler: the function in its thread pool).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import figure, quiet
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from sheetops.config.model import JobSpec, Snapshot
from sheetops.executors.local import LocalExecutor
from sheetops.registry import registry
from sheetops.runner import Runner
from sheetops.scheduler import Scheduler
from sheetops.store import Store
from sheetops.store import schema as t

PERIOD_S = 10


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (default: this process) and all its descendants, MB."""
    pid = pid or os.getpid()
    total_kb = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total_kb / 1024


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")


def _sample_rss(until: float, warmup_at: float) -> tuple[float, float, float]:
    """Sleep until ``until`` sampling RSS; (after warm-up, at the end, peak)."""
    warm = peak = end = rss_mb()
    warm_taken = False
    while time.time() < until:
        time.sleep(min(1.0, max(0.0, until - time.time())))
        end = rss_mb()
        peak = max(peak, end)
        if not warm_taken and time.time() >= warmup_at:
            warm, warm_taken = end, True
    return warm, end, peak


def soak_sheetops(n: int, seconds: float, workers: int) -> dict[str, float]:
    """Run ``n`` no-op jobs every 10 s for ``seconds``; missed runs, RSS, lateness."""
    registry.discover()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/soak.db")
        runner = Runner(store, LocalExecutor, workers=workers)
        scheduler = Scheduler(runner)
        jobs = {f"job-{i}": JobSpec(job=f"job-{i}", automation="soak_noop",
                                    schedule="every 10s", timezone="UTC", timeout_s=30)
                for i in range(n)}
        runner.start()
        started = time.time()
        scheduler.aps.start(paused=True)
        scheduler.apply(Snapshot(jobs=jobs), now=datetime.fromtimestamp(started, UTC))
        scheduler.aps.resume()
        # stop mid-period so no round is cut in half
        stop_at = (int(started + seconds) // PERIOD_S) * PERIOD_S + PERIOD_S / 2
        warm, end, peak = _sample_rss(stop_at, started + min(60.0, seconds / 3))
        scheduler.stop()
        runner.wait_idle(300)
        runner.stop()
        with store.engine.connect() as conn:
            rows = conn.execute(t.runs.select()).all()
        store.dispose()
    rounds = sorted({r.scheduled_for for r in rows})
    expected = len(range(int(rounds[0]), int(rounds[-1]) + 1, PERIOD_S)) * n if rows else 0
    ok = {(r.job, r.scheduled_for) for r in rows if r.status == "ok"}
    late = [r.started_at - r.scheduled_for for r in rows if r.started_at]
    return {"rounds": expected // n if n else 0, "missed": expected - len(ok),
            "rss_warm": warm, "rss_end": end, "rss_peak": peak, "late_p99": p99(late)}


def soak_bare_apscheduler(n: int, seconds: float) -> dict[str, float]:
    """The same ``n`` no-op jobs every 10 s in bare APScheduler; lateness p99 and runs."""
    late: list[float] = []
    lock = threading.Lock()

    def work() -> None:
        now = time.time()
        with lock:
            late.append(now - (now // PERIOD_S) * PERIOD_S)

    first = (int(time.time()) // PERIOD_S + 1) * PERIOD_S
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.start(paused=True)
    trigger = IntervalTrigger(seconds=PERIOD_S, start_date=datetime.fromtimestamp(first, UTC))
    for i in range(n):
        scheduler.add_job(work, trigger, id=f"j{i}")
    scheduler.resume()
    time.sleep(max(0.0, (int(first + seconds) // PERIOD_S) * PERIOD_S + PERIOD_S / 2
                   - time.time()))
    scheduler.shutdown(wait=True)
    return {"runs": len(late), "late_p99": p99(late)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=50)
    parser.add_argument("--full", action="store_true", help="10 minutes each")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-bare", action="store_true", help="skip bare APScheduler")
    args = parser.parse_args()
    seconds = 600.0 if args.full else args.seconds
    quiet()

    from sheetops import automation

    @automation("soak_noop")
    def soak_noop(ctx):
        return None

    mine = soak_sheetops(args.jobs, seconds, args.workers)
    figure("soak_jobs", args.jobs, "jobs")
    figure("soak_rounds", mine["rounds"], "rounds")
    figure("soak_missed_runs", mine["missed"], "runs", "0")
    figure("soak_rss_after_warmup_mb", mine["rss_warm"], "MB")
    figure("soak_rss_end_mb", mine["rss_end"], "MB")
    figure("soak_rss_peak_mb", mine["rss_peak"], "MB")
    figure("soak_rss_growth_pct", 100 * (mine["rss_end"] / mine["rss_warm"] - 1), "%",
           "<= 10")
    figure("soak_start_lateness_p99_s", mine["late_p99"], "s")
    if args.no_bare:
        return
    bare = soak_bare_apscheduler(args.jobs, seconds)
    figure("bare_apscheduler_runs", bare["runs"], "runs")
    figure("bare_apscheduler_lateness_p99_s", bare["late_p99"], "s")
    figure("soak_lateness_p99_ratio_vs_apscheduler", mine["late_p99"] / bare["late_p99"], "x",
           "<= 1.2")


if __name__ == "__main__":
    main()
