"""The Celery tier's leader across crashes and broker outages, with real processes: a run
the leader committed but never published (or published and never marked sent) runs once
after a restart; a broker outage at fire time loses no run; a new leader counts the runs
in flight it adopts against the job's ``concurrency``.

Real ``sheetops run`` and ``sheetops worker`` processes on Redis and PostgreSQL (the
:class:`~test_celery.Tier` of ``test_celery.py``); the scheduler is stopped in the
hand-off window by the test hook ``SHEETOPS_TEST_HOLD_AT_PUBLISH``; the outage is a TCP
proxy between one scheduler and Redis, taken down and brought back. The copy rules of
``task_deliveries`` are also checked at the store level, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest
from automations_for_tests import read_attempts, read_starts
from sqlalchemy import select
from test_celery import BROKERS, _jobs, tier, with_services
from test_cli import probe, wait_for

from sheetops.executors.celery import HOLD_AT_PUBLISH_ENV
from sheetops.leader import SCHEDULER
from sheetops.store import schema as t

#: Short failover and republish delays, so the tests wait seconds, not minutes.
FAST = {"SHEETOPS_LEASE_TTL_S": "2", "SHEETOPS_CELERY_REPUBLISH_AFTER_S": "2"}


def _log(proc) -> str:
    return proc.log_path.read_text()


@with_services
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_run_the_killed_leader_committed_but_did_not_hand_off_runs_once_after_a_restart(
        services, where, tmp_path, workbook):
    """``before``: killed between the commit and the publish (no task in the broker);
    ``after``: killed between the publish and its mark (the task is in the broker, and
    the new leader publishes a second copy): either way the run runs exactly once."""
    sink = tmp_path / "sink.txt"  # a line per execution of the automation
    hold = tmp_path / "held.txt"
    _jobs(workbook, {"job": "once", "automation": "t_cel_deliver", "schedule": "manual",
                     "enabled": "TRUE", "max_attempts": "1",
                     "params": json.dumps({"keys": ["k"], "sink": str(sink), "sleep": 1})})
    with tier(services, "redis", tmp_path, workbook) as t1:
        if where == "before":
            t1.worker("w1")
        first = t1.start("run", "--sheet", str(workbook.path), name="scheduler-1",
                         **FAST, **{HOLD_AT_PUBLISH_ENV: f"{where}:{hold}"})
        t1.store.request_run("once", "ops")
        [run_id] = wait_for(lambda: hold.exists() and hold.read_text().split(","),
                            timeout=60)
        t1.kill(first)  # SIGKILL in the window: nothing after it happens
        assert t1.store.run(run_id)["status"] == "queued"
        assert t1.deliveries(run_id) == 0
        second = t1.start("run", "--sheet", str(workbook.path), name="scheduler-2", **FAST)
        wait_for(lambda: "publishing them again" in _log(second), timeout=60)
        # two pool processes: a second copy not dropped would run beside the first
        worker = t1.worker("w1", concurrency=2) if where == "after" else t1.procs[0]
        [run] = wait_for(lambda: t1.finished("once", 1), timeout=60)
        assert (run["id"], run["status"], run["attempts"]) == (run_id, "ok", 1)
        if where == "after":  # both copies were delivered; the first one was dropped
            wait_for(lambda: "'duplicate'" in _log(worker), timeout=30)
        assert t1.deliveries(run_id) == 1
    assert len(sink.read_text().splitlines()) == 1  # ran once


class BrokerProxy:
    """A TCP proxy in front of the broker for one process: :meth:`down` closes it and
    every connection through it (that process sees the broker go away), :meth:`up`
    listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as probe_socket:
            probe_socket.bind(("127.0.0.1", 0))
            self.port = probe_socket.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@with_services
def test_a_broker_outage_when_a_run_fires_loses_no_run(services, tmp_path, workbook):
    folder = tmp_path / "evidence"
    _jobs(workbook, probe("fired", "manual", folder))
    with tier(services, "redis", tmp_path, workbook) as t1:
        proxy = BrokerProxy(("127.0.0.1", 6379))
        proxy.up()
        try:
            t1.worker("w1")  # the worker reaches Redis directly; only the scheduler loses it
            scheduler = t1.start(
                "run", "--sheet", str(workbook.path), name="scheduler", **FAST,
                SHEETOPS_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/13")
            wait_for(lambda: t1.store.lease_holder(SCHEDULER), timeout=60)  # leading
            proxy.down()
            t1.store.request_run("fired", "ops")
            wait_for(lambda: "the Celery broker refused 1 task" in _log(scheduler),
                     timeout=60)
            [queued] = t1.runs("fired")
            assert queued["status"] == "queued"  # not failed: it waits for the broker
            proxy.up()
            [run] = wait_for(lambda: t1.finished("fired", 1), timeout=60)
        finally:
            proxy.down()
        assert (run["id"], run["status"], run["attempts"]) == (queued["id"], "ok", 1)
        assert t1.deliveries(run["id"]) == 1
    assert [a["run_id"] for a in read_attempts(folder)] == [run["id"]]


@with_services
def test_a_new_leader_counts_the_runs_in_flight_it_adopts_against_concurrency(
        services, tmp_path, workbook):
    folder = tmp_path / "evidence"
    # concurrency 1; a run outlasts a scheduler's restart and failover on a busy machine
    _jobs(workbook, {**probe("single", "manual", folder, sleep=15), "timeout_s": "30",
                     "concurrency": "1"})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = "60"  # above timeout_s + margins
        t1.worker("w1")
        t1.worker("w2")  # a free worker: only the concurrency slot keeps the second back
        first = t1.start("run", "--sheet", str(workbook.path), name="scheduler-1", **FAST)
        t1.store.request_run("single", "ops")
        wait_for(lambda: read_starts(folder), timeout=60)
        t1.kill(first)
        second = t1.start("run", "--sheet", str(workbook.path), name="scheduler-2", **FAST)
        wait_for(lambda: "following 1 run(s) in flight" in _log(second), timeout=60)
        assert not read_attempts(folder), "the first run ended before the failover"
        t1.store.request_run("single", "ops")
        runs = wait_for(lambda: t1.finished("single", 2), timeout=90)
    assert [r["status"] for r in runs] == ["ok", "ok"]
    adopted, later = read_attempts(folder)
    assert adopted["end"] <= later["start"], "the second run started while the adopted one ran"


def _queued_run(store, run_id: str) -> None:
    from sheetops.events import RunQueued
    from sheetops.recorder import Recorder

    recorder = Recorder(store)
    recorder.record(RunQueued(run_id, "j", "t_probe", "manual", 1.0))
    recorder.flush()


@pytest.mark.each_store_backend
def test_the_first_copy_of_an_attempt_to_reach_the_store_owns_it(store):
    """Store level, on SQLite and PostgreSQL: a publisher's mark or a worker's first
    delivery claims the attempt for its copy; another copy is dropped uncounted; the
    owner's redeliveries are counted; a task without a copy id is counted as before."""
    deliveries = store.task_deliveries
    for run_id in ("marked", "delivered", "plain"):
        _queued_run(store, run_id)
    assert deliveries.sent(["marked", "delivered", "plain"]) == set()
    deliveries.mark_sent([("marked", 1, "B")])
    deliveries.mark_sent([("marked", 1, "C")])  # a later copy's mark changes nothing
    assert deliveries.sent(["marked", "delivered", "plain"]) == {"marked"}
    other = deliveries.begin_attempt("marked", 1, 3, copy_id="A")
    assert other.another_copy and not other.due(3)
    owner = deliveries.begin_attempt("marked", 1, 3, copy_id="B")
    assert (owner.deliveries, owner.another_copy, owner.due(3)) == (1, False, True)
    assert deliveries.begin_attempt("marked", 1, 3, copy_id="B").deliveries == 2
    assert deliveries.begin_attempt("marked", 1, 3, copy_id="C").another_copy
    assert deliveries.deliveries("marked", 1) == 2

    first = deliveries.begin_attempt("delivered", 1, 3, copy_id="A")  # before any mark
    assert first.due(3) and first.deliveries == 1
    deliveries.mark_sent([("delivered", 1, "B")])  # B's publisher comes second: B loses
    assert deliveries.begin_attempt("delivered", 1, 3, copy_id="B").another_copy

    assert [deliveries.begin_attempt("plain", 1, 3).deliveries for _ in range(2)] == [1, 2]
    in_flight = {r["id"]: r["status"] for r in deliveries.runs_in_flight()}
    assert in_flight == {"marked": "queued", "delivered": "queued", "plain": "queued"}


@pytest.mark.each_store_backend
def test_a_sent_attempt_no_worker_took_up_is_released_for_the_next_copy(store):
    """Store level: only a mark older than the bound with no delivery is released; then
    whichever copy reaches the store first owns the attempt, the lost one included."""
    deliveries = store.task_deliveries
    for run_id in ("lost", "taken", "recent"):
        _queued_run(store, run_id)
    deliveries.mark_sent([("lost", 1, "A"), ("taken", 1, "A")])
    assert deliveries.begin_attempt("taken", 1, 3, copy_id="A").due(3)
    deliveries.mark_sent([("recent", 1, "A")])
    cutoff = store.db.engine.connect().execute(
        select(t.task_deliveries.c.last_at).where(
            t.task_deliveries.c.key == "recent:1")).scalar_one()
    assert deliveries.release_undelivered(["lost", "taken", "recent"], cutoff) == ["lost"]
    assert deliveries.release_undelivered(["lost"], cutoff) == []  # its mark is now again
    late = deliveries.begin_attempt("lost", 1, 3, copy_id="A")  # the lost copy turns up
    assert late.due(3) and late.deliveries == 1
    assert deliveries.begin_attempt("lost", 1, 3, copy_id="B").another_copy


@with_services
@pytest.mark.parametrize("broker_lost_it", [True, False])
def test_a_task_marked_sent_that_the_broker_loses_is_published_again_and_runs_once(
        services, broker_lost_it, tmp_path, workbook):
    """The run's task is published and marked sent, then purged from Redis before any
    worker takes it: the leader publishes another copy once no worker took it up within
    the bound (redelivery timeout + timeout_s + grace), and the run ends ok, once. Not
    purged (only waiting, with no worker running): the two copies compete and the
    first to reach the store runs, the other is dropped."""
    from kombu import Connection

    from sheetops.executors.celery_config import CeleryConfig

    folder = tmp_path / "evidence"
    executions = folder / "executions.txt"
    _jobs(workbook, {**probe("once", "manual", folder, executions=str(executions)),
                     "timeout_s": "1"})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = "12"  # 1 + 5 + 5 < 12: allowed
        bound = CeleryConfig(BROKERS["redis"], visibility_timeout_s=12).lost_after_s(1)
        scheduler = t1.start("run", "--sheet", str(workbook.path), name="scheduler", **FAST)
        t1.store.request_run("once", "ops")
        [run_id] = wait_for(lambda: [r["id"] for r in t1.runs("once")], timeout=60)
        wait_for(lambda: t1.store.task_deliveries.sent([run_id]), timeout=30)
        sent_at = time.time()
        if broker_lost_it:
            with Connection(BROKERS["redis"]) as conn:
                assert conn.default_channel.queue_purge(t1.queue) == 1
            worker = t1.worker("w1")
        wait_for(lambda: "publishing another copy" in _log(scheduler), timeout=3 * bound)
        assert time.time() - sent_at >= bound - 1  # not before the bound
        if not broker_lost_it:  # both copies wait; two pool processes could run both
            worker = t1.worker("w1", concurrency=2)
            wait_for(lambda: "'duplicate'" in _log(worker), timeout=60)
        [run] = wait_for(lambda: t1.finished("once", 1), timeout=60)
        assert (run["id"], run["status"], run["attempts"]) == (run_id, "ok", 1)
        assert t1.deliveries(run_id) == 1
    assert executions.read_text().split()[0::2] == [run_id]  # ran exactly once
