"""Reconcile, firing, misfires and catch-up on a real APScheduler BackgroundScheduler,
with runs executed by real worker processes and recorded in a real store."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED
from conftest import wait_for

from sheetops.config import parse_config
from sheetops.engine import Engine, EngineOptions
from sheetops.executors.local import LocalExecutor
from sheetops.registry import registry
from sheetops.runner import Runner
from sheetops.scheduler import Scheduler
from sheetops.store import Store

HEADER = ["job", "automation", "schedule", "enabled", "params", "catch_up", "max_attempts"]


def row(job: str, schedule: str = "every 1h", enabled: bool = True, params=None,
        catch_up: str = "once") -> list[str]:
    return [job, "t_probe", schedule, "TRUE" if enabled else "FALSE",
            json.dumps(params or {}), catch_up, "1"]


def snapshot(*rows: list[str], previous=None):
    snap = parse_config({"Jobs": [HEADER, *rows]}, frozenset(registry.names()), previous)
    assert snap.errors == [], snap.errors
    return snap



@pytest.fixture
def scheduling(store: Store, workbook):  # workbook: registers the test automations
    parts: list[tuple[Scheduler, Runner]] = []

    def make(last_fire_times=None) -> Scheduler:
        runner = Runner(store, LocalExecutor, workers=2, flush_interval_s=0.05)
        runner.start()
        scheduler = Scheduler(runner, last_fire_times)
        scheduler.start()
        parts.append((scheduler, runner))
        return scheduler

    yield make
    for scheduler, runner in parts:
        scheduler.stop()
        runner.stop(10)


def runs_of(store: Store, job: str) -> list[dict]:
    return [r for r in store.recent_runs(1000, job) if r["status"] != "running"][::-1]


# -- reconcile ------------------------------------------------------------------------------

def test_reconcile_touches_only_changed_jobs(scheduling):
    sched = scheduling()
    v1 = snapshot(row("same"), row("params-change", params={"n": 1}),
                  row("schedule-change"), row("to-remove"))
    report = sched.apply(v1)
    assert sorted(report.added) == ["params-change", "same", "schedule-change", "to-remove"]
    before = {j: sched.aps_job(j) for j in v1.jobs}
    times = {j: job.next_run_time for j, job in before.items()}

    v2 = snapshot(row("same"), row("params-change", params={"n": 2}),
                  row("schedule-change", "every 2h"), row("new"), previous=v1)
    report = sched.apply(v2)
    assert (report.added, report.removed, report.rescheduled, report.updated) == (
        ["new"], ["to-remove"], ["schedule-change"], ["params-change"])
    # unchanged and params-only jobs keep their APScheduler job and next run time
    for job in ("same", "params-change"):
        assert sched.aps_job(job) is before[job]
        assert sched.aps_job(job).next_run_time == times[job]
    assert sched.aps_job("to-remove") is None
    assert sched.aps_job("schedule-change") is not before["schedule-change"]
    assert sched.aps_job("new") is not None
    # a no-op refresh changes nothing at all
    assert not sched.apply(snapshot(row("same"), row("params-change", params={"n": 2}),
                                    row("schedule-change", "every 2h"), row("new"))).changed


def test_a_params_edit_reaches_the_next_run_without_rescheduling(scheduling, store,
                                                                  tmp_path):
    sched = scheduling()
    params = {"dir": str(tmp_path), "records": 1}
    v1 = snapshot(row("tick", "every 1s", params=params))
    sched.apply(v1)
    aps_job = sched.aps_job("tick")
    wait_for(lambda: runs_of(store, "tick"))
    sched.apply(snapshot(row("tick", "every 1s", params={**params, "records": 7})))
    assert sched.aps_job("tick") is aps_job
    wait_for(lambda: any(r["records_in"] == 7 for r in runs_of(store, "tick")))


def test_disable_enable_and_remove_take_effect(scheduling, store, tmp_path):
    sched = scheduling()
    params = {"dir": str(tmp_path)}
    sched.apply(snapshot(row("tick", "every 1s", params=params)))
    wait_for(lambda: len(runs_of(store, "tick")) >= 1)

    sched.apply(snapshot(row("tick", "every 1s", enabled=False, params=params)))
    disabled_at = time.time()  # after the edit: a fire due during it may still run
    assert sched.aps_job("tick") is None
    time.sleep(2.2)  # two fire times pass: an absence needs a span of time to show
    # disabled: nothing due after the edit ran (a fire under way at the edit may end later)
    assert _due_after(sched, store, "tick", disabled_at) == []

    count = len(store.recent_runs(1000, "tick"))
    sched.apply(snapshot(row("tick", "every 1s", params=params)))
    wait_for(lambda: len(runs_of(store, "tick")) > count)
    triggers = {r["trigger"] for r in runs_of(store, "tick")}
    # runs skipped while disabled are not "caught up": catch_up is for downtime only
    assert triggers == {"schedule"}, triggers

    sched.apply(snapshot())
    removed_at = time.time()
    assert sched.aps.get_jobs() == []
    time.sleep(1.5)
    assert _due_after(sched, store, "tick", removed_at) == []


def _due_after(sched: Scheduler, store: Store, job: str, moment: float) -> list[dict]:
    """``job``'s runs due after ``moment``, once every run handed over has ended and been
    recorded (waiting for them, not for a guessed time)."""
    assert sched.runner.wait_idle(30)
    sched.runner.flush()
    return [r for r in store.recent_runs(1000, job) if r["scheduled_for"] > moment]


def test_a_schedule_edit_does_not_start_an_unexpected_run(scheduling, store, tmp_path):
    """Moving a daily job from 06:00 to 07:00 must not run it at once for yesterday's 07:00."""
    now = datetime.now(UTC)
    old, new = ((now + timedelta(hours=h)).strftime("%M %H * * *") for h in (3, -1))
    sched = scheduling({"daily": (now - timedelta(hours=21)).timestamp()})
    sched.apply(snapshot(row("daily", old, params={"dir": str(tmp_path)})))
    report = sched.apply(snapshot(row("daily", new, params={"dir": str(tmp_path)})))
    assert report.rescheduled == ["daily"]
    assert report.caught_up == {}
    time.sleep(0.5)
    assert store.recent_runs(10, "daily") == []


def test_next_run_times_are_in_the_jobs_timezone(scheduling):
    sched = scheduling()
    snap = parse_config({"Jobs": [["job", "automation", "schedule", "timezone"],
                                  ["berlin", "t_probe", "30 6 * * *", "Europe/Berlin"]]},
                        frozenset(registry.names()))
    sched.apply(snap)
    times = sched.next_run_times(snap.jobs["berlin"], 3)
    assert [t.strftime("%H:%M") for t in times] == ["06:30"] * 3
    assert all(t.tzname() in ("CET", "CEST") for t in times)
    assert times[0] == sched.aps_job("berlin").next_run_time


# -- misfire -------------------------------------------------------------------------------

def test_a_run_due_while_the_scheduler_thread_was_busy_still_runs(scheduling, store,
                                                                 tmp_path):
    """APScheduler's default 1 s misfire grace would drop a fire processed late; here a
    fire processed 1.3 s late still starts a run."""
    sched = scheduling()
    busy_once = threading.Event()

    def busy(event) -> None:  # runs on the scheduler thread
        tick = sched.aps_job("tick")
        if tick is not None and event.job_id == tick.id and not busy_once.is_set():
            busy_once.set()
            time.sleep(3.3)  # the next fire (2 s later) is processed 1.3 s late

    sched.aps.add_listener(busy, EVENT_JOB_SUBMITTED)
    sched.apply(snapshot(row("tick", "every 2s", params={"dir": str(tmp_path)})))
    runs = wait_for(lambda: (r := runs_of(store, "tick")) and len(r) >= 2 and r, 30)
    late = runs[1]
    assert late["trigger"] == "schedule"
    assert late["started_at"] - late["scheduled_for"] > 1.0, late


# -- catch-up after downtime ----------------------------------------------------------------

@pytest.mark.parametrize(("policy", "expected"), [("skip", 0), ("once", 1), ("all", 5)])
def test_catch_up_after_downtime(workbook, store, policy, expected):
    hour = 3600
    now = time.time()
    last = (int(now // hour) - 5) * hour  # the job last fired 5 hourly fires ago
    missed = [float(last + hour * k) for k in range(1, 6)]
    workbook.jobs({"job": "hourly", "automation": "t_probe", "schedule": "every 1h",
                   "catch_up": policy})
    store.set_fire_times({"hourly": float(last)})
    engine = Engine(workbook.sheet, store, EngineOptions(workers=2))
    engine.start()
    try:
        if expected:
            wait_for(lambda: len(runs_of(store, "hourly")) >= expected)
        else:
            time.sleep(0.5)
        assert engine.runner.wait_idle(10)
    finally:
        engine.stop()
    runs = runs_of(store, "hourly")
    assert [r["trigger"] for r in runs] == ["catch_up"] * expected
    assert sorted(r["scheduled_for"] for r in runs) == missed[len(missed) - expected:]
    state = store.job_states()["hourly"]
    assert state["last_fire_time"] == (missed[-1] if expected else last)
    # the Runs tab shows them as catch-up runs
    assert [r["trigger"] for r in workbook.records("Runs")] == ["catch_up"] * expected
