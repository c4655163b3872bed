"""The runner on real worker processes: retries and backoff, permanent errors, hard
timeouts, concurrency, shared rate limits, record failures and masked secrets.

Automations are the test probes of ``automations_for_tests``; they leave evidence (pids,
start/end times, permit times) in files, so what is measured is what really happened.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path

import pytest
from automations_for_tests import read_attempts, read_starts
from conftest import wait_for

from sheetops.config.model import JobSpec, Snapshot
from sheetops.events import (
    AttemptFinished,
    FireTimes,
    RecordError,
    RunFinished,
    RunQueued,
    RunStarted,
    UnknownEventError,
    event_from_dict,
)
from sheetops.executors.local import LocalExecutor
from sheetops.hooks import Hooks
from sheetops.ratelimit import RateLimitSpec
from sheetops.recorder import Recorder
from sheetops.retry import JobPolicy
from sheetops.runner import Runner
from sheetops.status import StatusWriter
from sheetops.store import RunStatus, Store


def spec(job: str, automation: str = "t_probe", **values) -> JobSpec:
    params = values.pop("params", {})
    return JobSpec(job=job, automation=automation, schedule="manual", timezone="UTC",
                   params_json=json.dumps(params), **values)



@pytest.fixture
def make_runner(store: Store):
    runners: list[Runner] = []

    def make(workers: int = 2) -> Runner:
        runner = Runner(store, LocalExecutor, workers=workers, flush_interval_s=0.05)
        runner.start()
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop(10)


def run_to_end(runner: Runner, job: JobSpec, snapshot: Snapshot | None = None,
               timeout: float = 20, **kwargs):
    run_id = runner.submit(job, snapshot or Snapshot(jobs={job.job: job}), "manual",
                           **kwargs)
    outcome = runner.wait(run_id, timeout)
    assert outcome is not None, f"run of {job.job} did not finish within {timeout}s"
    runner.flush()
    return run_id, outcome


# -- retry policy (pure) -------------------------------------------------------------------

def test_job_policy_delays_double_from_initial_up_to_the_cap_plus_bounded_jitter():
    policy = JobPolicy(max_attempts=8, backoff_initial_s=2, backoff_max_s=20)
    rng = random.Random(7)
    for _ in range(200):
        delays = [policy.delay_after(n, permanent=False, rng=rng) for n in range(1, 8)]
        for expected, delay in zip([2, 4, 8, 16, 20, 20, 20], delays, strict=True):
            assert expected <= delay <= expected + 1.0  # jitter ≤ min(initial, 1s)
    assert policy.delay_after(8, permanent=False) is None  # attempts used up
    assert policy.delay_after(1, permanent=True) is None  # permanent: no retry
    small = JobPolicy(3, 0.2, 300)
    assert all(0.2 <= small.delay_after(1, False) <= 0.4 for _ in range(100))
    jitters = {round(policy.delay_after(1, False, rng) - 2, 3) for _ in range(50)}
    assert len(jitters) > 10  # there is jitter, spread out
    assert [policy.latest_delay_after(n) for n in (1, 5, 8)] == [3.0, 21.0, None]
    assert small.latest_delay_after(1) == pytest.approx(0.4)  # the top of its jitter


# -- retries on real workers -----------------------------------------------------------------

def test_retries_wait_longer_each_time_and_respect_the_cap(make_runner, store, tmp_path):
    runner = make_runner()
    job = spec("flaky", max_attempts=5, backoff_initial_s=0.1, backoff_max_s=0.3,
               params={"dir": str(tmp_path), "succeed_on": 5})
    run_id, outcome = run_to_end(runner, job)
    assert (outcome.status, outcome.attempts) == ("ok", 5)
    attempts = store.attempts_of(run_id)
    assert [a["status"] for a in attempts] == ["failed"] * 4 + ["ok"]
    assert [a["error_type"] for a in attempts[:4]] == ["RuntimeError"] * 4
    gaps = [b["started_at"] - a["finished_at"] for a, b in itertools.pairwise(attempts)]
    expected = [0.1, 0.2, 0.3, 0.3]  # 0.1 doubling, capped at 0.3 (uncapped: 0.4, 0.8)
    for want, gap in zip(expected, gaps, strict=True):
        assert want - 0.01 <= gap <= want + 0.1 + 0.2, gaps  # + jitter ≤ 0.1 + scheduling
    assert gaps[2] > gaps[0] and gaps[3] < 0.8, gaps
    # the worker saw the same attempts the store recorded
    assert [a["attempt"] for a in read_attempts(tmp_path)] == [1, 2, 3, 4, 5]


def test_a_run_that_keeps_failing_stops_after_max_attempts(make_runner, store, tmp_path):
    runner = make_runner()
    job = spec("hopeless", max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.05,
               params={"dir": str(tmp_path), "succeed_on": 99, "message": "backend down"})
    run_id, outcome = run_to_end(runner, job)
    assert (outcome.status, outcome.attempts) == ("failed", 3)
    record = store.run(run_id)
    assert (record["status"], record["attempts"], record["error_type"]) == (
        "failed", 3, "RuntimeError")
    assert record["error_message"] == "backend down"
    assert [e["attempt"] for e in store.recent_errors(10)] == [3, 2, 1]
    assert store.job_states()["hopeless"]["consecutive_failures"] == 1


def test_permanent_error_stops_after_one_attempt(make_runner, store, tmp_path):
    runner = make_runner()
    job = spec("perm", max_attempts=5, backoff_initial_s=0.05,
               params={"dir": str(tmp_path), "fail": "permanent", "message": "no such customer"})
    run_id, outcome = run_to_end(runner, job)
    assert (outcome.status, outcome.attempts) == ("failed", 1)
    time.sleep(0.3)  # a (wrong) retry would have started by now
    assert len(read_starts(tmp_path)) == 1
    assert [a["error_type"] for a in store.attempts_of(run_id)] == ["PermanentError"]


def test_unknown_automation_fails_permanently(make_runner, store):
    runner = make_runner()
    _run_id, outcome = run_to_end(runner, spec("ghost", automation="not_registered",
                                              max_attempts=4, backoff_initial_s=0.05))
    assert (outcome.status, outcome.attempts, outcome.error_type) == (
        "failed", 1, "UnknownAutomation")


# -- timeouts --------------------------------------------------------------------------------

def test_timeout_kills_the_worker_process(make_runner, store, tmp_path):
    runner = make_runner()
    job = spec("stuck", timeout_s=0.5, max_attempts=1,
               params={"dir": str(tmp_path), "sleep": 30})
    started = time.time()
    run_id, outcome = run_to_end(runner, job)
    assert outcome.status == "timeout"
    assert time.time() - started < 5
    [attempt] = read_starts(tmp_path)
    with pytest.raises(ProcessLookupError):
        os.kill(attempt["pid"], 0)  # the process is gone, not running on unseen
    assert read_attempts(tmp_path) == []  # it never reached its end
    record = store.run(run_id)
    assert record["status"] == "timeout" and record["error_type"] == "RunTimeout"
    assert "timeout_s=0.5" in record["error_message"]
    # the pool has a fresh worker: the next run works
    _, after = run_to_end(runner, spec("after", params={"records": 2}))
    assert (after.status, after.records_in) == ("ok", 2)


def test_a_timed_out_attempt_is_retried_in_a_new_process(make_runner, tmp_path):
    runner = make_runner(workers=1)
    job = spec("slow-then-fast", timeout_s=0.4, max_attempts=2, backoff_initial_s=0.05,
               params={"dir": str(tmp_path), "sleep": 30})
    _, outcome = run_to_end(runner, job)
    assert (outcome.status, outcome.attempts) == ("timeout", 2)
    pids = [a["pid"] for a in read_starts(tmp_path)]
    assert len(pids) == 2 and pids[0] != pids[1]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- concurrency -------------------------------------------------------------------------------

def max_overlap(attempts: list[dict]) -> int:
    events = sorted([(a["start"], 1) for a in attempts] + [(a["end"], -1) for a in attempts],
                    key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_concurrency_bounds_simultaneous_runs_of_a_job(make_runner, tmp_path):
    runner = make_runner(workers=4)
    job = spec("bounded", concurrency=2, params={"dir": str(tmp_path), "sleep": 0.3})
    snapshot = Snapshot(jobs={job.job: job})
    run_ids = [runner.submit(job, snapshot, "manual") for _ in range(5)]
    assert None not in run_ids
    assert runner.wait_idle(20)
    attempts = read_attempts(tmp_path)
    assert len(attempts) == 5
    assert max_overlap(attempts) == 2  # never more than 2, and 2 were used


def test_other_jobs_are_not_held_by_one_jobs_concurrency(make_runner, tmp_path):
    runner = make_runner(workers=3)
    busy = spec("busy", concurrency=1, params={"dir": str(tmp_path), "sleep": 0.4})
    other = spec("other", params={"dir": str(tmp_path)})
    snapshot = Snapshot(jobs={busy.job: busy, other.job: other})
    for _ in range(2):
        runner.submit(busy, snapshot, "manual")
    runner.submit(other, snapshot, "manual")
    assert runner.wait_idle(20)
    attempts = read_attempts(tmp_path)
    busy_runs = sorted((a for a in attempts if a["job"] == "busy"), key=lambda a: a["start"])
    [other_run] = [a for a in attempts if a["job"] == "other"]
    assert busy_runs[1]["start"] >= busy_runs[0]["end"]
    assert other_run["end"] < busy_runs[0]["end"]  # did not wait behind "busy"


def test_late_scheduled_fires_coalesce_instead_of_piling_up(make_runner, tmp_path):
    runner = make_runner(workers=2)
    job = spec("late", concurrency=1, params={"dir": str(tmp_path), "sleep": 0.3})
    snapshot = Snapshot(jobs={job.job: job})
    ids = [runner.submit(job, snapshot, "schedule") for _ in range(4)]
    assert ids[0] and ids[1] and ids[2:] == [None, None]
    manual = runner.submit(job, snapshot, "manual")  # asked for by a person: never dropped
    assert manual is not None
    assert runner.wait_idle(20)
    assert len(read_attempts(tmp_path)) == 3


# -- rate limits ---------------------------------------------------------------------------

def permit_times(folder: Path) -> list[float]:
    return sorted(t for a in read_attempts(folder) for t in a["permits"])


@pytest.mark.parametrize("scope", ["global", "job"])
def test_rate_limit_is_shared_across_worker_processes(make_runner, tmp_path, scope):
    runner = make_runner(workers=2)
    limit = RateLimitSpec("api", "4/second", scope)
    jobs = [spec(f"caller-{i}", rate_limit="api",
                 params={"dir": str(tmp_path), "throttle": 3}) for i in (1, 2)]
    snapshot = Snapshot(jobs={j.job: j for j in jobs}, rate_limits={"api": limit})
    for job in jobs:
        runner.submit(job, snapshot, "manual")
    assert runner.wait_idle(20)
    permits = permit_times(tmp_path)
    assert len(permits) == 6
    if scope == "global":
        # one budget for both processes: 4 permits per moving second, the rest waited
        assert all(permits[i + 4] - permits[i] >= 0.95 for i in range(len(permits) - 4))
        assert permits[-1] - permits[0] >= 0.95
    else:
        # each job has its own 4/second: nobody waits for 3 permits
        assert permits[-1] - permits[0] < 0.5


# -- what gets recorded ---------------------------------------------------------------------

def test_record_failures_become_errors_rows_with_their_record_key(make_runner, store,
                                                                  workbook, tmp_path):
    runner = make_runner()
    job = spec("enrich", params={"records": 5, "bad_records": ["cust-7", "cust-9"]})
    run_id, outcome = run_to_end(runner, job)
    assert (outcome.status, outcome.records_in, outcome.records_out,
            outcome.records_failed) == ("ok", 5, 3, 2)
    writer = StatusWriter(store, workbook.sheet, lambda: Snapshot(jobs={job.job: job}))
    assert writer.flush()
    errors = workbook.records("Errors")
    assert sorted(e["record_key"] for e in errors) == ["cust-7", "cust-9"]
    assert {(e["job"], e["run_id"], e["stage"], e["error_type"]) for e in errors} == {
        ("enrich", run_id, "run", "ValueError")}
    assert {e["message"] for e in errors} == {"record cust-7 has no email",
                                              "record cust-9 has no email"}
    [run_row] = workbook.records("Runs")
    assert (run_row["run_id"], run_row["status"], run_row["records_in"],
            run_row["records_out"], run_row["records_failed"]) == (run_id, "ok", 5, 3, 2)
    [status] = workbook.records("Status")
    assert (status["job"], status["state"], status["records_failed"]) == ("enrich", "ok", 2)


def test_secrets_are_masked_in_everything_stored(make_runner, store, workbook, monkeypatch):
    secret = "tok-Sup3rSecret-4711"
    monkeypatch.setenv("SHEETOPS_SECRETS", "API_TOKEN")
    monkeypatch.setenv("API_TOKEN", secret)  # before the workers start
    runner = make_runner()
    job = spec("leaky", automation="t_leak", max_attempts=1,
               params={"token": "secret:API_TOKEN"})
    run_id, outcome = run_to_end(runner, job)
    assert outcome.status == "failed"
    record = store.run(run_id)
    stored = [record["error_message"], record["result"]]
    stored += [v for a in store.attempts_of(run_id) for v in (a["error_message"],
                                                             a["traceback"])]
    stored += [v for e in store.recent_errors(10) for v in (e["message"], e["traceback"])]
    assert record["error_message"] == 'login refused for token ***; echoed *** | *** | "***" | ***'
    assert "key-***" in {e["record_key"] for e in store.recent_errors(10)}
    assert any("record rejected, token=***" in s for s in stored)
    assert not [s for s in stored if secret in s]
    writer = StatusWriter(store, workbook.sheet, lambda: Snapshot(jobs={job.job: job}))
    assert writer.flush()
    cells = [str(v) for tab in ("Status", "Runs", "Errors") for row in workbook.rows(tab)
             for v in row if v is not None]
    assert any("***" in c for c in cells)
    assert not [c for c in cells if secret in c]


def test_run_ids_are_unique_even_when_handed_off_in_the_same_millisecond():
    from sheetops.runner import new_run_id

    ids = [new_run_id(1_800_000_000.0) for _ in range(200_000)]
    assert len(set(ids)) == len(ids)
    earlier, later = new_run_id(1_800_000_000.0), new_run_id(1_800_000_000.5)
    assert earlier < later  # ids sort by time


def test_stop_ends_runs_waiting_for_a_retry_or_a_slot_as_shutdown(make_runner, store,
                                                                   tmp_path):
    from sheetops.registry import registry

    registry.discover()  # the shipped demo automations: flaky, sleep
    runner = make_runner(workers=1)
    # attempt 1 fails on purpose; the retry would come 30 s later
    retrying = spec("retrying", "flaky", params={"succeed_on_attempt": 3},
                    max_attempts=3, backoff_initial_s=30, backoff_max_s=30)
    slow = spec("slow", "sleep", params={"seconds": 1}, concurrency=1)
    snapshot = Snapshot(jobs={"retrying": retrying, "slow": slow})
    retry_id = runner.submit(retrying, snapshot, "manual")
    first_slow = runner.submit(slow, snapshot, "manual")
    waiting_slow = runner.submit(slow, snapshot, "manual")  # waits for the slot
    deadline = time.time() + 10
    while not store.attempts_of(retry_id) and time.time() < deadline:
        runner.flush()
        time.sleep(0.05)
    runner.stop(10)
    by_id = {r["id"]: r for r in store.recent_runs(10)}
    assert (by_id[retry_id]["status"], by_id[retry_id]["error_type"]) == ("failed", "Shutdown")
    assert by_id[retry_id]["attempts"] == 1  # the retry never ran
    assert by_id[first_slow]["status"] == "ok"  # a running attempt is let finish
    assert by_id[waiting_slow]["error_type"] == "Shutdown"
    assert runner.in_flight == 0


def test_a_request_that_cannot_reach_a_worker_fails_its_run_and_others_go_on(
        make_runner, store, tmp_path):
    """params nested 950 deep slipped past the parser once and killed the dispatcher
    (RecursionError while pickling): every later run hung. Now only that run fails.
    700 levels: json parses them (a frame each) however deep the test's own stack is
    (a pytest-xdist worker's is deeper), pickle cannot (two frames each)."""
    runner = make_runner()
    deep = "{}"
    for _ in range(700):
        deep = '{"a": ' + deep + "}"
    bad = JobSpec(job="deep", automation="t_probe", schedule="manual", timezone="UTC",
                  params_json=deep, max_attempts=3)
    run_id, outcome = run_to_end(runner, bad)
    assert (outcome.status, outcome.attempts, outcome.error_type) == (
        "failed", 1, "RecursionError")
    [attempt] = store.attempts_of(run_id)
    assert "could not be handed to a worker process" in attempt["error_message"]
    _run_id, outcome = run_to_end(runner, spec("after", params={"dir": str(tmp_path)}))
    assert outcome.status == "ok"


# -- the events path: queued runs, typed hooks, rows built by the recorder --------------------

def runs_tab(writer: StatusWriter, workbook) -> dict[str, dict]:
    assert writer.flush(force_tabs=("Runs", "Status"))
    return {r["run_id"]: r for r in workbook.records("Runs")}


def test_a_run_waiting_behind_a_full_executor_is_queued_then_ok(make_runner, store,
                                                                 workbook, tmp_path):
    runner = make_runner(workers=1)
    release = tmp_path / "release-blocker"  # busy until the test has seen "queued"
    blocker = spec("blocker", params={"dir": str(tmp_path), "hold_until": str(release)})
    waiter = spec("waiter", params={"dir": str(tmp_path)})
    snapshot = Snapshot(jobs={blocker.job: blocker, waiter.job: waiter})
    writer = StatusWriter(store, workbook.sheet, lambda: snapshot,
                          live_state=runner.live_state)
    blocker_id = runner.submit(blocker, snapshot, "manual")
    wait_for(lambda: runner.flush() is not None and read_starts(tmp_path))
    waiter_id = runner.submit(waiter, snapshot, "manual")
    runner.flush()
    assert store.run(waiter_id)["status"] == "queued"
    rows = runs_tab(writer, workbook)
    assert (rows[blocker_id]["status"], rows[waiter_id]["status"]) == ("running", "queued")
    assert rows[waiter_id]["start"] in (None, "")  # it has not started
    states = {r["job"]: r["state"] for r in workbook.records("Status")}
    assert states == {"blocker": "running", "waiter": "queued"}

    release.touch()
    outcome = runner.wait(waiter_id, 20)
    assert outcome is not None and outcome.status == "ok"
    runner.flush()
    rows = runs_tab(writer, workbook)
    assert (rows[waiter_id]["status"], rows[waiter_id]["attempts"]) == ("ok", 1)
    record = store.run(waiter_id)
    assert record["started_at"] >= store.run(blocker_id)["finished_at"] - 0.05
    assert record["duration_s"] == pytest.approx(record["finished_at"] - record["started_at"])


def test_hooks_see_run_status_values(store, tmp_path):
    from sheetops.hooks import RunHook

    class Seen(RunHook):
        def __init__(self) -> None:
            self.outcomes: dict[str, object] = {}

        def on_run_end(self, run, outcome) -> None:
            self.outcomes[run.job] = outcome.status

    seen = Seen()
    runner = Runner(store, LocalExecutor, Hooks([seen]), workers=2, flush_interval_s=0.05)
    runner.start()
    try:
        jobs = [spec("fine"), spec("broken", max_attempts=1, params={"fail": "permanent"}),
                spec("slow", max_attempts=1, timeout_s=0.3, params={"sleep": 30})]
        snapshot = Snapshot(jobs={j.job: j for j in jobs})
        for job in jobs:
            runner.submit(job, snapshot, "manual")
        assert runner.wait_idle(20)
    finally:
        runner.stop(10)
    assert seen.outcomes == {"fine": RunStatus.OK, "broken": RunStatus.FAILED,
                             "slow": RunStatus.TIMEOUT}
    assert all(type(s) is RunStatus for s in seen.outcomes.values())


class BatchesStore(Store):
    """The real store, keeping every batch it was asked to record; ``fail`` makes the
    next ``record`` raise (an outage) before anything is written."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.batches: list = []
        self.fail = 0

    def record(self, batch) -> None:
        if self.fail:
            self.fail -= 1
            raise OSError("store unreachable")
        self.batches.append(batch)
        super().record(batch)


def a_runs_events(run_id: str = "r1"):
    """A run queued at 100, started at 101, failed once, ok on its second attempt."""
    return [
        RunQueued(run_id, "sync", "t_probe", "manual", 100.0, None, False, "ops@x"),
        RunStarted(run_id, "sync", 101.0),
        AttemptFinished(run_id, "sync", 1, RunStatus.FAILED, 101.0, 102.0, "RuntimeError",
                        "backend down", "Traceback …"),
        AttemptFinished(run_id, "sync", 2, RunStatus.OK, 103.0, 104.0, records_in=3,
                        records_out=2, records_failed=1,
                        result={"records_in": 3, "records_out": 2, "records_failed": 1,
                                "sent": 2},
                        record_errors=(RecordError("cust-9", "ValueError", "no email"),)),
        RunFinished(run_id, "sync", RunStatus.OK, 2, 101.0, 104.0, False, 3, 2, 1,
                    {"records_in": 3, "records_out": 2, "records_failed": 1, "sent": 2}),
    ]


@pytest.mark.each_store_backend
@pytest.mark.parametrize("flush_after_each", [False, True])
def test_a_runs_rows_are_the_same_however_flushes_fall(store_url, flush_after_each):
    store = BatchesStore(store_url)
    recorder = Recorder(store)
    for event in a_runs_events():
        recorder.record(event)
        if flush_after_each:
            recorder.flush()
    recorder.flush()
    if not flush_after_each:  # queued, started and finished in one flush: one insert
        [batch] = store.batches
        assert (len(batch.new_runs), batch.run_updates) == (1, [])
    row = store.run("r1")
    assert row == {
        "id": "r1", "job": "sync", "trigger": "manual", "scheduled_for": None,
        "started_at": 101.0, "finished_at": 104.0, "status": "ok", "attempts": 2,
        "records_in": 3, "records_out": 2, "records_failed": 1, "duration_s": 3.0,
        "result": '{"records_failed": 1, "records_in": 3, "records_out": 2, "sent": 2}',
        "error_type": "", "error_message": "", "dry_run": False, "requested_by": "ops@x"}
    assert [(a["attempt"], a["status"], a["error_type"]) for a in store.attempts_of("r1")] \
        == [(1, "failed", "RuntimeError"), (2, "ok", "")]
    assert sorted((e["attempt"], e["error_type"], e["record_key"])
                  for e in store.recent_errors(10)) == [(1, "RuntimeError", ""),
                                                        (2, "ValueError", "cust-9")]
    state = store.job_states()["sync"]
    assert (state["last_status"], state["last_result"], state["consecutive_failures"],
            state["last_success_at"], state["last_start"]) == ("ok", "sent=2", 0, 104.0,
                                                               101.0)
    assert store.pending_outbox().tabs == {"Status", "Runs", "Errors"}
    store.dispose()


def test_a_flush_that_fails_keeps_everything_for_the_next(isolated_env):
    store = BatchesStore(isolated_env)
    recorder = Recorder(store)
    events = a_runs_events()
    recorder.record_many(events[:2])
    store.fail = 1
    with pytest.raises(OSError):
        recorder.flush()
    recorder.record_many(events[2:])  # arrive while the store is down
    assert recorder.flush() == 1
    assert store.run("r1")["status"] == "ok"
    assert len(store.attempts_of("r1")) == 2
    store.dispose()


def test_events_survive_json_unchanged():
    events = [*a_runs_events(), FireTimes({"sync": 1_800_000_000.0}),
              RunFinished("r2", "sync", RunStatus.TIMEOUT, 1, None, 5.0,
                          error_type="RunTimeout", error_message="past timeout_s")]
    for event in events:
        again = event_from_dict(json.loads(json.dumps(event.to_dict())))
        assert again == event and type(again) is type(event)
        assert type(event).from_dict(event.to_dict()) == event
    assert events[-1].duration_s == 0.0  # never started
    with pytest.raises(UnknownEventError, match="unknown run event type 'run_paused'"):
        event_from_dict({"type": "run_paused", "run_id": "r1"})
    with pytest.raises(UnknownEventError, match="expected a run_started event"):
        RunStarted.from_dict(events[0].to_dict())
