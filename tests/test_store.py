"""The store's contract, checked once for every backend: SQLite (embedded default) and
PostgreSQL (for scale; skipped when absent, required in CI)."""

from __future__ import annotations

import time

import pytest
from conftest import wait_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sheetops.config.model import Problem
from sheetops.store import Batch, RunStatus, Store
from sheetops.store import schema as t
from sheetops.store.leases import Fenced
from sheetops.store.queue import StaleClaim

#: Every test using ``store``/``store_url`` runs on SQLite and PostgreSQL (conftest).
pytestmark = pytest.mark.each_store_backend


def _run(i: int, job: str = "j", status: str = "ok", started: float = 1000.0) -> dict:
    return {"id": f"run{i:05d}", "job": job, "trigger": "schedule", "scheduled_for": started,
            "started_at": started + i, "finished_at": started + i + 0.5, "status": status,
            "attempts": 1, "records_in": i, "records_out": i, "records_failed": 0,
            "duration_s": 0.5, "result": "{}", "error_type": "" if status == "ok" else "E",
            "error_message": "", "dry_run": False, "requested_by": ""}


def test_record_and_read_back_runs_attempts_errors(store: Store) -> None:
    store.record(Batch(
        new_runs=[_run(i) for i in range(5)] + [_run(9, status=RunStatus.FAILED.value)],
        attempts=[{"run_id": "run00009", "attempt": 1, "job": "j", "started_at": 1.0,
                   "finished_at": 2.0, "status": "failed", "error_type": "ValueError",
                   "error_message": "bad", "traceback": "Traceback…"}],
        errors=[{"time": 2000.0, "job": "j", "run_id": "run00009", "stage": "run",
                 "attempt": 1, "error_type": "ValueError", "message": "=1+1",
                 "record_key": "r-7", "traceback": ""}],
        job_states={"j": {"last_status": "failed", "consecutive_failures": 1}},
        outbox=[("Runs", ""), ("Status", "j")]))
    newest = store.recent_runs(3)
    assert [r["id"] for r in newest] == ["run00009", "run00004", "run00003"]
    assert store.count_runs(status="failed") == 1
    assert store.attempts_of("run00009")[0]["error_message"] == "bad"
    error = store.recent_errors(10)[0]
    assert (error["message"], error["record_key"]) == ("=1+1", "r-7")
    assert store.job_states()["j"]["consecutive_failures"] == 1


def test_update_of_a_running_run_and_job_state_upsert(store: Store) -> None:
    row = _run(1, status=RunStatus.RUNNING.value)
    store.record(Batch(new_runs=[row], job_states={"j": {"last_fire_time": 5.0}}))
    store.record(Batch(run_updates=[{"id": row["id"], "status": "ok", "attempts": 2}],
                       job_states={"j": {"last_status": "ok", "consecutive_failures": 0}}))
    run = store.run(row["id"])
    assert (run["status"], run["attempts"]) == ("ok", 2)
    state = store.job_states()["j"]
    # an upsert of some columns keeps the others
    assert (state["last_fire_time"], state["last_status"]) == (5.0, "ok")


def test_outbox_marks_stay_pending_until_the_writer_acks_what_it_claimed(
        store: Store) -> None:
    store.record(Batch(outbox=[("Runs", ""), ("Status", "a"), ("Status", "b")]))
    pending = store.pending_outbox()
    assert (pending.by_tab, pending.count) == ({"Runs": 1, "Status": 2}, 3)
    assert pending.oldest_at is not None and pending.oldest_at <= time.time()
    claimed = store.outbox.claim("writer", lease_s=60)
    assert claimed.keys == {"Runs": {""}, "Status": {"a", "b"}}
    store.record(Batch(outbox=[("Errors", "")]))  # a change while the write is in flight
    assert store.pending_outbox().count == 4  # claimed marks are pending until acked
    store.outbox.ack(claimed.claims)
    assert store.pending_outbox().by_tab == {"Errors": 1}  # the later mark is not swallowed
    assert store.queues.depths()["sheet_outbox"].ready == 1
    assert store.queue_depths() == {}  # the outbox has gauges of its own, not queue_depth


def test_outbox_marks_commit_with_their_rows_or_not_at_all(store: Store) -> None:
    store.record(Batch(new_runs=[_run(1)], outbox=[("Runs", "")]))
    with pytest.raises(IntegrityError):  # the same run id again: the batch fails
        store.record(Batch(new_runs=[_run(1)], outbox=[("Status", "j")]))
    assert store.pending_outbox().by_tab == {"Runs": 1}
    # the failed batch left nothing behind: the next one commits whole
    store.record(Batch(new_runs=[_run(2)], run_updates=[{"id": "run00001", "attempts": 2}],
                       outbox=[("Status", "j")]))
    assert [r["attempts"] for r in store.recent_runs(5)] == [1, 2]
    assert store.pending_outbox().by_tab == {"Runs": 1, "Status": 1}


def _started(run_id: str, at: float) -> Batch:
    return Batch(run_updates=[{"id": run_id, "status": "running", "started_at": at,
                               "attempts": 1}], outbox=[("Runs", "")])


def test_an_attempt_starts_once_and_a_late_delivery_changes_nothing(store: Store) -> None:
    queued = {**_run(1, status="queued"), "finished_at": None, "attempts": 0}
    store.record(Batch(new_runs=[queued]))
    deliveries = store.task_deliveries
    first = deliveries.begin_attempt("run00001", 1, cap=2, started=_started("run00001", 5.0))
    assert (first.deliveries, first.run_status, first.due(2)) == (1, "queued", True)
    assert (store.run("run00001")["status"], store.run("run00001")["started_at"]) == (
        "running", 5.0)
    store.record(Batch(run_updates=[{"id": "run00001", "status": "ok", "finished_at": 6.0}],
                       attempts=[{"run_id": "run00001", "attempt": 1, "job": "j",
                                  "started_at": 5.0, "finished_at": 6.0, "status": "ok"}]))
    # redelivered after its result was committed: counted, not due, the run left as it is
    late = deliveries.begin_attempt("run00001", 1, cap=2, started=_started("run00001", 9.0))
    assert (late.deliveries, late.run_status, late.recorded, late.due(2)) == (
        2, "ok", True, False)
    assert (store.run("run00001")["status"], store.run("run00001")["started_at"]) == (
        "ok", 5.0)
    unknown = deliveries.begin_attempt("nope", 1, cap=2, started=_started("nope", 9.0))
    assert (unknown.run_status, unknown.due(2)) == (None, False)


def test_a_late_start_is_written_while_the_attempt_is_due_only(store: Store) -> None:
    store.record(Batch(new_runs=[{**_run(1, status="queued"), "finished_at": None},
                                 {**_run(2, status="queued"), "finished_at": None}]))
    deliveries = store.task_deliveries
    assert deliveries.begin_attempt("run00001", 1, cap=2).due(2)  # counted, not started
    assert store.run("run00001")["status"] == "queued"
    deliveries.write_start("run00001", 1, cap=2, started=_started("run00001", 5.0))
    assert (store.run("run00001")["status"], store.run("run00001")["started_at"]) == (
        "running", 5.0)
    deliveries.begin_attempt("run00002", 1, cap=2)
    store.record(Batch(run_updates=[{"id": "run00002", "status": "ok"}],
                       attempts=[{"run_id": "run00002", "attempt": 1, "job": "j",
                                  "started_at": 5.0, "finished_at": 6.0, "status": "ok"}]))
    deliveries.write_start("run00002", 1, cap=2, started=_started("run00002", 9.0))
    assert store.run("run00002")["status"] == "ok"  # recorded already: left as it is


def test_an_attempt_over_the_delivery_cap_is_not_started_again(store: Store) -> None:
    store.record(Batch(new_runs=[{**_run(1, status="queued"), "finished_at": None}]))
    deliveries = store.task_deliveries
    for n in (1, 2):  # delivered, its worker died each time
        assert deliveries.begin_attempt("run00001", 1, cap=2,
                                        started=_started("run00001", float(n))).due(2)
    over = deliveries.begin_attempt("run00001", 1, cap=2, started=_started("run00001", 3.0))
    assert (over.deliveries, over.due(2)) == (3, False)
    assert store.run("run00001")["started_at"] == 2.0  # the third delivery wrote no start


def test_statuses_of_runs_in_flight_leave_out_the_queued_ones(store: Store) -> None:
    store.record(Batch(new_runs=[_run(1, status="queued"), _run(2, status="running"),
                                 _run(3)]))
    ids = ["run00001", "run00002", "run00003", "missing"]
    assert sorted(store.runs.statuses(ids)) == ids[:3]
    left = store.runs.statuses(ids, queued=False)
    assert {run_id: row["status"] for run_id, row in left.items()} == {
        "run00002": "running", "run00003": "ok"}


def test_a_nacked_mark_waits_its_delay_and_an_expired_lease_frees_it(store: Store) -> None:
    store.record(Batch(outbox=[("Runs", "")]))
    failed = store.outbox.claim("writer", lease_s=60)
    store.outbox.nack(failed.claims, delay_s=60, error="Google is down")
    assert not store.outbox.claim("writer", lease_s=60)  # delayed: not claimable yet
    assert store.pending_outbox().count == 1  # but still pending
    store.record(Batch(outbox=[("Status", "a")]))
    killed = store.outbox.claim("killed-writer", lease_s=0.05)
    assert killed.keys == {"Status": {"a"}}
    again = wait_for(lambda: store.outbox.claim("next-writer", lease_s=60))
    assert again.keys == {"Status": {"a"}} and again.claims[0].deliveries == 2
    with pytest.raises(StaleClaim):  # the killed writer's claim is fenced off
        store.outbox.ack(killed.claims)
    store.outbox.ack(again.claims)
    assert store.pending_outbox().by_tab == {"Runs": 1}


def test_run_requests_are_claimed_once(store: Store) -> None:
    first = store.request_run("j", requested_by="alice", dry_run=True)
    store.request_run("k", requested_by="bob")
    claimed = store.claim_run_requests()
    assert [(r["job"], r["requested_by"], r["dry_run"]) for r in claimed] == [
        ("j", "alice", True), ("k", "bob", False)]
    assert store.claim_run_requests() == []
    store.link_request(first, "run-1")


def test_a_run_request_keeps_the_run_id_given_at_its_first_claim(store: Store) -> None:
    asked = store.request_run("j", requested_by="alice")
    ids = iter(["run-first", "run-second"])
    [claimed] = store.claim_run_requests("dead-scheduler", lease_s=0.05,
                                         new_run_id=lambda: next(ids))
    assert claimed["run_id"] == "run-first"
    [again] = wait_for(lambda: store.claim_run_requests("next-leader", lease_s=60,
                                                        new_run_id=lambda: next(ids)))
    assert (again["id"], again["run_id"]) == (asked, "run-first")  # the same run
    store.link_request(asked, None)  # e.g. the job left the sheet: no run, the id cleared
    with store.engine.connect() as conn:
        assert conn.execute(select(t.run_requests.c.run_id)).scalar_one() is None
    assert store.queue_depths() == {}


def test_a_replaced_leader_claims_no_run_request(store: Store) -> None:
    store.request_run("j", requested_by="alice")
    old = store.leases.take_fenced("scheduler", "old", ttl_s=0.05)
    assert old is not None
    wait_for(lambda: store.leases.take_fenced("scheduler", "new", ttl_s=60))
    with pytest.raises(Fenced):
        store.claim_run_requests("old", fence=old)
    assert store.queue_depths() == {"run_requests": 1}
    assert [r["job"] for r in store.claim_run_requests("new")] == ["j"]


def test_a_run_request_not_linked_within_its_lease_is_claimed_again(store: Store) -> None:
    asked = store.request_run("j", requested_by="alice")
    [claimed] = store.claim_run_requests("dead-scheduler", lease_s=0.05)
    assert claimed["id"] == asked and store.requests.pending_count() == 0
    again = wait_for(lambda: store.claim_run_requests("next-leader", lease_s=60))
    assert [r["id"] for r in again] == [asked]
    assert store.queue_depths() == {"run_requests": 1}
    store.link_request(asked, "run-1")
    assert store.claim_run_requests("next-leader") == []
    assert store.queue_depths() == {}
    with store.engine.connect() as conn:
        row = conn.execute(select(t.run_requests)).one()
    assert (row.run_id, row.claimed_at is not None) == ("run-1", True)


def test_problems_replace_reports_changes_and_queues_validation(store: Store) -> None:
    problems = [Problem("Jobs", "C3", "61 * * * *", "bad cron")]
    assert store.replace_problems(problems) is True
    assert store.replace_problems(problems) is False
    assert [p["cell"] for p in store.problems()] == ["C3"]
    assert "Validation" in store.pending_outbox().tabs
    assert store.replace_problems([]) is True and store.problems() == []


def test_gauges_extents_and_prune(store: Store) -> None:
    store.set_gauges({"queue_depth:run": 3, "running": 1})
    store.set_gauges({"running": 0})
    assert store.gauges()["queue_depth:run"][0] == 3 and store.gauges()["running"][0] == 0
    store.set_extent("Runs", 12)
    assert store.extents() == {"Runs": 12}
    store.record(Batch(new_runs=[_run(1, started=100.0), _run(2, started=10_000.0)]))
    assert store.prune(older_than=5000.0) == 1
    assert [r["id"] for r in store.recent_runs(10)] == ["run00002"]


def test_safe_url_hides_the_password() -> None:
    store = Store.__new__(Store)
    store.url = "postgresql+psycopg://ops:hunter2@db.example/sheetops"
    assert "hunter2" not in store.safe_url and "***" in store.safe_url


def test_runs_left_running_by_a_killed_scheduler_are_interrupted(store: Store) -> None:
    store.record(Batch(new_runs=[_run(1, status=RunStatus.RUNNING.value), _run(2)]))
    assert store.interrupt_unfinished() == ["run00001"]
    run = store.run("run00001")
    assert (run["status"], run["error_type"]) == ("failed", "Interrupted")
    assert store.recent_errors(5)[0]["run_id"] == "run00001"
    assert {"Runs", "Errors", "Status"} <= store.pending_outbox().tabs
    assert store.run("run00002")["status"] == "ok"
    assert store.interrupt_unfinished() == []


def test_engine_prunes_runs_older_than_run_history_days(workbook, tmp_path) -> None:
    from sheetops.engine import Engine, EngineOptions

    workbook.settings(run_history_days=7)
    store = Store(f"sqlite:///{tmp_path / 'history.db'}")
    day = 86400
    store.record(Batch(new_runs=[_run(1, started=time.time() - 30 * day),
                                 _run(2, started=time.time() - 1 * day)]))
    engine = Engine(workbook.sheet, store, EngineOptions(workers=1))
    engine.refresh_without_scheduling()
    assert engine.prune_history() == 1
    assert [r["id"] for r in store.recent_runs(10)] == ["run00002"]
