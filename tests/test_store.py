"""The store's contract, checked once for every backend: SQLite (embedded default) and
PostgreSQL (for scale; skipped when absent, required in CI)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from test_cli import wait_for

from sheetops.config.model import Problem
from sheetops.store import Batch, RunStatus, Store
from sheetops.store import schema as t

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _run(i: int, job: str = "j", status: str = "ok", started: float = 1000.0) -> dict:
    return {"id": f"run{i:05d}", "job": job, "trigger": "schedule", "scheduled_for": started,
            "started_at": started + i, "finished_at": started + i + 0.5, "status": status,
            "attempts": 1, "records_in": i, "records_out": i, "records_failed": 0,
            "duration_s": 0.5, "result": "{}", "error_type": "" if status == "ok" else "E",
            "error_message": "", "dry_run": False, "requested_by": ""}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path, services) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'store.db'}")
        yield s
        s.dispose()
        return
    services.postgres()
    import sqlalchemy as sa

    name = f"sheetops_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    s = Store(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        yield s
    finally:
        s.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


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


def test_outbox_pending_until_marked_delivered(store: Store) -> None:
    store.record(Batch(outbox=[("Runs", ""), ("Status", "a"), ("Status", "b")]))
    max_id, tabs, count, oldest = store.pending_outbox()
    assert (tabs, count) == ({"Runs", "Status"}, 3)
    assert oldest is not None and oldest <= time.time()
    store.record(Batch(outbox=[("Errors", "")]))
    store.mark_outbox_delivered(max_id)
    _, tabs, count, _ = store.pending_outbox()
    assert (tabs, count) == ({"Errors"}, 1)  # a later entry is not swallowed


def test_run_requests_are_claimed_once(store: Store) -> None:
    first = store.request_run("j", requested_by="alice", dry_run=True)
    store.request_run("k", requested_by="bob")
    claimed = store.claim_run_requests()
    assert [(r["job"], r["requested_by"], r["dry_run"]) for r in claimed] == [
        ("j", "alice", True), ("k", "bob", False)]
    assert store.claim_run_requests() == []
    store.link_request(first, "run-1")


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
    assert "Validation" in store.pending_outbox()[1]
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
    assert {"Runs", "Errors", "Status"} <= store.pending_outbox()[1]
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
