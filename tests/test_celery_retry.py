"""A Celery run's retry is published even when its worker dies, or the broker refuses
or loses the publish, right after the failed attempt's commit: the run ends, its retry
run once.

Real ``sheetops run`` and ``sheetops worker`` processes on Redis and PostgreSQL (the
:class:`~test_celery.Tier` of ``test_celery.py``); the worker is stopped, or its publish
failed, in that window by the test hook ``SHEETOPS_TEST_RETRY_FAULT``. The store-level
rule (when a retry is owed) is also checked on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from automations_for_tests import read_starts
from test_celery import VISIBILITY_S, _jobs, tier, with_services
from test_cli import probe, wait_for

from sheetops.context import AttemptResult
from sheetops.events import AttemptFinished, RunFinished, RunQueued, RunStarted
from sheetops.executors.celery_worker import RETRY_FAULT_ENV
from sheetops.recorder import Recorder
from sheetops.store import RunStatus


@with_services
@pytest.mark.parametrize("fault", ["kill", "refuse", "drop"])
def test_a_retry_whose_publish_was_lost_is_published_again_and_runs_once(
        services, fault, tmp_path, workbook):
    """``kill``: the worker is SIGKILLed after committing the failed attempt 1 and before
    publishing attempt 2 (attempt 1's task is redelivered to another worker); ``refuse``:
    the broker refuses attempt 2's publish (the task is sent again). Either way the
    redelivered attempt 1 finds its retry unpublished and publishes it (``refuse``: the
    leader's check is pushed past the test's end; ``kill``: it comes after the broker's
    redelivery is due, and whichever is first publishes the retry). ``drop``: the
    publish is lost and attempt 1's task acked, so nothing is redelivered: the leader
    finds the retry overdue with no mark and publishes it. In each case the run ends
    ok, attempt 2 run once."""
    folder = tmp_path / "evidence"
    hold = tmp_path / "held.txt"
    _jobs(workbook, {**probe("flaky", "manual", folder, succeed_on=2), "max_attempts": "3",
                     "backoff_initial_s": "1", "backoff_max_s": "1"})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env[RETRY_FAULT_ENV] = f"{fault}:{hold}"
        first = t1.worker("w1")
        scheduler = t1.start("run", "--sheet", str(workbook.path), name="scheduler",
                             SHEETOPS_CELERY_REPUBLISH_AFTER_S={
                                 "drop": "2", "kill": str(VISIBILITY_S)}.get(fault, "600"))
        t1.store.request_run("flaky", "ops")
        run_id = wait_for(lambda: hold.exists() and hold.read_text(), timeout=60)
        if fault == "kill":
            t1.kill(first)  # SIGKILL in the window: attempt 1 recorded, attempt 2 unsent
            assert t1.store.run(run_id)["status"] == "running"
            assert t1.store.task_deliveries.deliveries(run_id, 2) == 0
            worker = t1.worker("w2")  # the hook fired once (its file exists): no fault
        else:
            worker = first
        [run] = wait_for(lambda: t1.finished("flaky", 1), timeout=VISIBILITY_S + 60)
        publishers = {"drop": [scheduler], "kill": [scheduler, worker]}.get(fault, [worker])
        assert any("retry was never published" in p.log_path.read_text()
                   for p in publishers)
        assert t1.store.task_deliveries.deliveries(run_id, 2) == 1
    assert (run["id"], run["status"], run["attempts"]) == (run_id, "ok", 2)
    assert sorted(a["attempt"] for a in read_starts(folder)) == [1, 2]  # each ran once


def _failed_attempt(store, run_id: str, attempt: int, end: bool = False) -> None:
    recorder = Recorder(store)
    if attempt == 1:
        recorder.record(RunQueued(run_id, "j", "t_probe", "manual", 1.0))
        recorder.record(RunStarted(run_id, "j", 2.0))
    recorder.record(AttemptFinished.of(AttemptResult(
        run_id, "j", attempt, 2.0, 3.0 + attempt, False, error_type="RuntimeError")))
    if end:
        recorder.record(RunFinished(run_id, "j", RunStatus.FAILED, attempt, 2.0, 4.0,
                                    False, 0, 0, 0, {}, "RuntimeError", "no"))
    recorder.flush()


@pytest.mark.each_store_backend
def test_a_retry_is_owed_until_it_is_marked_delivered_or_recorded(store):
    deliveries = store.task_deliveries
    assert deliveries.retry_owed("nothing", 1) is None
    _failed_attempt(store, "r", 1)
    assert deliveries.retry_owed("r", 2) is None  # attempt 2 not recorded: nothing owed
    owed = deliveries.retry_owed("r", 1)
    assert owed is not None and owed.previous_finished_at == 4.0
    assert owed.run_started_at == 2.0
    deliveries.mark_sent([("r", 2, "A")])
    assert deliveries.retry_owed("r", 1) is None  # published (a copy marked sent)

    _failed_attempt(store, "delivered", 1)
    deliveries.begin_attempt("delivered", 2, 3, copy_id="B")  # came before its mark
    assert deliveries.retry_owed("delivered", 1) is None

    _failed_attempt(store, "ended", 1, end=True)
    assert deliveries.retry_owed("ended", 1) is None

    _failed_attempt(store, "twice", 1)
    deliveries.mark_sent([("twice", 2, "C")])
    _failed_attempt(store, "twice", 2)
    assert deliveries.retries_owed(["r", "delivered", "ended", "twice", "nothing"]) == {
        "twice": (2, 5.0)}  # the last attempt's successor unmarked, of a running run
