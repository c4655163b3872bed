"""A Run now request on the Celery tier runs exactly once when its scheduler is SIGKILLed
after claiming it (before its run's row commits) or after the row commits but before
the ack: real ``sheetops run`` and ``sheetops worker`` processes on Redis and PostgreSQL
(the :class:`~test_celery.Tier` of ``test_celery.py``), the scheduler stopped in the
window by the engine's test hooks."""

from __future__ import annotations

import json

import pytest
from test_celery import _jobs, tier, with_services
from test_cli import wait_for

from sheetops.dashboard import queries as q
from sheetops.engine import HOLD_AFTER_CLAIM_ENV, HOLD_BEFORE_ACK_ENV
from sheetops.store.requests import QUEUE

#: Short failover, so the second scheduler leads within seconds.
FAST = {"SHEETOPS_LEASE_TTL_S": "2", "SHEETOPS_CELERY_REPUBLISH_AFTER_S": "2"}


@with_services
@pytest.mark.parametrize("hook", [HOLD_AFTER_CLAIM_ENV, HOLD_BEFORE_ACK_ENV])
def test_a_run_now_request_runs_once_when_its_scheduler_is_killed(services, hook, tmp_path,
                                                                   workbook):
    sink = tmp_path / "sink.txt"  # a line per execution of the automation
    held = tmp_path / "held.txt"
    _jobs(workbook, {"job": "asked", "automation": "t_cel_deliver", "schedule": "manual",
                     "enabled": "TRUE", "max_attempts": "1",
                     "params": json.dumps({"keys": ["k"], "sink": str(sink), "sleep": 0})})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.worker("w1")
        first = t1.start("run", "--sheet", str(workbook.path), name="scheduler-1",
                         **FAST, **{hook: str(held)})
        request_id = t1.store.request_run("asked", "ops")
        wait_for(lambda: held.exists() and held.read_text(), timeout=60)
        [run_id] = q.run_requests(t1.store)["run_id"].tolist()  # given at the claim
        if hook == HOLD_BEFORE_ACK_ENV:  # the run is recorded and handed to the worker
            wait_for(lambda: t1.finished("asked", 1), timeout=60)
        t1.kill(first)  # SIGKILL in the window: the request is claimed, not acked
        assert t1.store.requests.queues.depths([QUEUE])[QUEUE].claimed == 1
        t1.start("run", "--sheet", str(workbook.path), name="scheduler-2", **FAST)
        # once the dead claim's lease (15 s) ran out: run, or found run, then acked
        wait_for(lambda: QUEUE not in t1.store.requests.queues.depths([QUEUE]),
                 timeout=90)
        [run] = wait_for(lambda: t1.finished("asked", 1), timeout=60)
        assert (run["id"], run["status"]) == (run_id, "ok") and len(t1.runs("asked")) == 1
        assert q.run_requests(t1.store).set_index("id").loc[request_id, "run_id"] == run_id
    assert len(sink.read_text().splitlines()) == 1  # ran once
