"""Many jobs due in the same second: runs missed and lateness, sheetops vs bare
APScheduler 3 (BackgroundScheduler, default thread pool, default 1 s misfire grace).

    python bench/bench_scheduler.py            # 50,000 jobs for misses, 10,000 for lateness
    python bench/bench_scheduler.py --jobs N --lateness-jobs M

Lateness is measured two ways for sheetops: *hand-off* (due time → the run is queued
for a worker; what APScheduler's scheduling loop controls) and *start* (due time → the
attempt starts in a worker process). Bare APScheduler's figure is due time → the
function starts in its thread pool.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime

from _common import figure, quiet
from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger

from sheetops.config.model import JobSpec, Snapshot
from sheetops.executors.local import LocalExecutor
from sheetops.registry import registry
from sheetops.runner import Runner
from sheetops.scheduler import Scheduler
from sheetops.store import Store
from sheetops.store import schema as t

PERIOD_S = 10  # sheetops jobs use "every 10s"; all fire together on a 10 s boundary


def next_boundary(lead_s: float) -> float:
    now = time.time()
    boundary = (int(now) // PERIOD_S + 1) * PERIOD_S
    while boundary - now < lead_s:
        boundary += PERIOD_S
    return float(boundary)


def bare_apscheduler(n: int, grace: int | None) -> dict[str, float]:
    due = next_boundary(lead_s=3 + n / 20_000)
    late: list[float] = []
    counts = {"executed": 0, "missed": 0}
    lock = threading.Lock()
    done = threading.Event()

    def work() -> None:
        late.append(time.time() - due)

    def listen(event) -> None:
        with lock:
            counts["executed" if event.code == EVENT_JOB_EXECUTED else "missed"] += 1
            if counts["executed"] + counts["missed"] >= n:
                done.set()

    kwargs = {} if grace == 1 else {"job_defaults": {"misfire_grace_time": grace}}
    scheduler = BackgroundScheduler(timezone=UTC, **kwargs)
    scheduler.add_listener(listen, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED)
    scheduler.start(paused=True)
    run_date = datetime.fromtimestamp(due, UTC)
    for i in range(n):
        scheduler.add_job(work, DateTrigger(run_date), id=f"j{i}")
    scheduler.resume()
    done.wait(120 + n / 500)
    scheduler.shutdown(wait=True)
    return {"executed": counts["executed"], "missed": counts["missed"], **_stats(late)}


def ours(n: int, workers: int) -> dict[str, float]:
    registry.discover()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        runner = Runner(store, LocalExecutor, workers=workers)
        handoff: list[float] = []

        executor_submit_many = runner.executor.submit_many

        def timed_submit_many(requests):
            executor_submit_many(requests)
            handoff.extend([time.time() - requests[0].params["due"]] * len(requests))

        runner.executor.submit_many = timed_submit_many  # type: ignore[method-assign]
        scheduler = Scheduler(runner)
        due = next_boundary(lead_s=3 + n / 10_000)
        jobs = {f"job-{i}": JobSpec(job=f"job-{i}", automation="noop", schedule="every 10s",
                                    timezone="UTC", timeout_s=30, params_json=f'{{"due":{due}}}')
                for i in range(n)}
        runner.start()
        scheduler.aps.start(paused=True)
        scheduler.apply(Snapshot(jobs=jobs), now=datetime.fromtimestamp(due - 1, UTC))
        scheduler.aps.resume()
        while scheduler.fired < n and time.time() < due + 120:
            time.sleep(0.05)
        scheduler.stop()  # one round only
        runner.wait_idle(600)
        runner.stop()
        with store.engine.connect() as conn:
            rows = conn.execute(t.runs.select().where(t.runs.c.scheduled_for == due)).all()
        started = [r.started_at - due for r in rows]
        ok = sum(1 for r in rows if r.status == "ok")
        store.dispose()
    return {"executed": ok, "missed": n - ok, "handoff": _stats(handoff)["mean"],
            "handoff_p95": _stats(handoff)["p95"], **_stats(started)}


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "p95": float("nan"), "max": float("nan")}
    ordered = sorted(values)
    return {"mean": statistics.fmean(ordered), "p95": ordered[int(0.95 * (len(ordered) - 1))],
            "max": ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--lateness-jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    quiet()

    from sheetops import automation

    @automation("noop")
    def noop(ctx):
        return None

    bare = bare_apscheduler(args.jobs, grace=1)
    mine = ours(args.jobs, args.workers)
    figure("jobs_due_same_second", args.jobs, "jobs")
    figure("bare_apscheduler_missed_pct", 100 * bare["missed"] / args.jobs, "%")
    figure("sheetops_missed_runs", mine["missed"], "runs", "0")
    figure("sheetops_all_runs_done_after_s", mine["max"], "s")

    bare_l = bare_apscheduler(args.lateness_jobs, grace=None)
    mine_l = ours(args.lateness_jobs, args.workers)
    figure("lateness_jobs", args.lateness_jobs, "jobs")
    figure("bare_apscheduler_lateness_mean_s", bare_l["mean"], "s")
    figure("bare_apscheduler_lateness_p95_s", bare_l["p95"], "s")
    figure("sheetops_handoff_lateness_mean_s", mine_l["handoff"], "s")
    figure("sheetops_handoff_lateness_p95_s", mine_l["handoff_p95"], "s")
    figure("sheetops_start_lateness_mean_s", mine_l["mean"], "s")
    figure("sheetops_start_lateness_p95_s", mine_l["p95"], "s")
    figure("scheduling_lateness_ratio_vs_apscheduler", mine_l["handoff"] / bare_l["mean"], "x",
           "<= 1.2")
    figure("start_lateness_ratio_vs_apscheduler", mine_l["mean"] / bare_l["mean"], "x",
           "<= 1.2")


if __name__ == "__main__":
    main()
