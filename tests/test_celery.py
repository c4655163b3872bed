"""The Celery tier with real processes: ``sheetops run`` with ``SHEETOPS_EXECUTOR=celery``
and ``sheetops worker`` processes on real Redis and RabbitMQ brokers, a real PostgreSQL
store, and the workbook's Runs tab as the user sees it.

Each test gets its own PostgreSQL database and Celery queue names (``t<random>``), and
every process it starts is a process group killed on teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TESTS_DIR, fresh_pg_database
from sqlalchemy import select, text
from test_cli import SHEETOPS, probe, wait_for

from sheetops.store import Store
from sheetops.store import schema as t


def with_services(test):
    """Marks of a test with real PostgreSQL, brokers and worker processes."""
    return pytest.mark.slow(pytest.mark.services(test))


BROKERS = {"redis": "redis://127.0.0.1:6379/13", "amqp": "amqp://guest:guest@127.0.0.1:5672//"}
#: Short enough for a test to wait for, longer than the tests' timeout_s + grace + margin.
VISIBILITY_S = 20


class Tier:
    """One test's scheduler, workers, store and workbook."""

    def __init__(self, broker: str, store_url: str, folder: Path, workbook) -> None:
        self.broker, self.folder, self.workbook = broker, folder, workbook
        self.queue = f"t{uuid.uuid4().hex[:10]}"
        self.store = Store(store_url)
        self.env = {**os.environ,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                                os.environ.get("PYTHONPATH")])),
                    "SHEETOPS_AUTOMATIONS": "automations_for_tests,celery_for_tests",
                    "SHEETOPS_STORE_URL": store_url, "SHEETOPS_EXECUTOR": "celery",
                    "SHEETOPS_BROKER_URL": BROKERS[broker], "SHEETOPS_CELERY_QUEUE": self.queue,
                    "SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
                    "SHEETOPS_CELERY_MAX_DELIVERIES": "2", "SHEETOPS_LOG_LEVEL": "INFO"}
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str, name: str, **env: str) -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("w")
        proc = subprocess.Popen([SHEETOPS, *args], cwd=self.folder, env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = self.folder / f"{name}.log"  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def worker(self, name: str, concurrency: int = 1) -> subprocess.Popen:
        proc = self.start("worker", "--concurrency", str(concurrency), "--hostname",
                          f"{name}@{self.queue}", name=name)
        wait_for(lambda: " ready." in proc.log_path.read_text() or proc.poll() is not None,
                 timeout=60)
        assert proc.poll() is None, proc.log_path.read_text()[-3000:]
        return proc

    def scheduler(self, name: str = "scheduler") -> subprocess.Popen:
        return self.start("run", "--sheet", str(self.workbook.path), name=name)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL the process and every child of it (a worker's pool processes too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def runs(self, job: str | None = None) -> list[dict]:
        return self.store.recent_runs(1000, job)

    def finished(self, job: str, n: int) -> list[dict]:
        runs = [r for r in self.runs(job) if r["status"] in ("ok", "failed", "timeout")]
        return runs if len(runs) >= n else []

    def deliveries(self, run_id: str) -> int:
        return self.store.task_deliveries.deliveries(run_id, 1)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)
        self.store.dispose()
        self._drop_queues()

    def _drop_queues(self) -> None:
        from kombu import Connection

        names = [self.queue, *(f"{self.queue}.stage.{p}" for p in (
            "cel_copy.double", "cel_copy.store", "cel_limited.note"))]
        with contextlib.suppress(Exception), Connection(BROKERS[self.broker]) as conn:
            channel = conn.default_channel
            for name in names:
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)


@contextlib.contextmanager
def tier(services, broker: str, tmp_path: Path, workbook) -> Iterator[Tier]:
    services.postgres()
    if broker == "redis":
        services.redis()
    else:
        services.rabbitmq()
    with fresh_pg_database("celery") as url:
        one = Tier(broker, url, tmp_path, workbook)
        try:
            yield one
        finally:
            one.close()


def _jobs(workbook, *rows: dict) -> None:
    """The Jobs tab, each job's ``timeout_s`` 5 unless given (the tests' brokers hand an
    unacked task on after ``VISIBILITY_S``, so a longer one is refused)."""
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(*({"timeout_s": "5", **row} for row in rows))


def _group_pids(proc: subprocess.Popen) -> set[int]:
    """The pids of a worker's process group (its main process and pool processes)."""
    out = subprocess.run(["ps", "-o", "pid=", "-g", str(proc.pid)], capture_output=True,
                         text=True).stdout
    return {int(p) for p in out.split()}


def _runs_tab(workbook) -> dict[str, dict]:
    return {r["run_id"]: r for r in workbook.records("Runs")}


@with_services
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_the_core_loop_runs_on_two_workers_and_shows_on_the_runs_tab(
        services, broker, tmp_path, workbook):
    folder = tmp_path / "evidence"
    _jobs(workbook, *(probe(f"job-{i}", "manual", folder, sleep=0.5) for i in range(6)),
          {**probe("flaky", "manual", folder, succeed_on=2), "max_attempts": "3",
           "backoff_initial_s": "0.1", "backoff_max_s": "0.2"})
    with tier(services, broker, tmp_path, workbook) as t1:
        t1.worker("w1")
        t1.worker("w2")
        t1.scheduler()
        for job in [*(f"job-{i}" for i in range(6)), "flaky"]:
            t1.store.request_run(job, "ops@example.org")
        wait_for(lambda: len([r for r in t1.runs() if r["status"] == "ok"]) == 7, timeout=90)
        runs = t1.runs()
        tab = wait_for(lambda: (lambda rows: rows if {r["id"] for r in runs} <= rows.keys()
                                and all(rows[r["id"]]["status"] == "ok" for r in runs)
                                else None)(_runs_tab(workbook)), timeout=30)
    from automations_for_tests import read_attempts

    attempts = read_attempts(folder)
    assert len({a["pid"] for a in attempts if a["job"].startswith("job-")}) == 2
    flaky = next(r for r in runs if r["job"] == "flaky")
    assert (flaky["attempts"], tab[flaky["id"]]["attempts"]) == (2, 2)
    assert [a["attempt"] for a in read_attempts(folder) if a["job"] == "flaky"] == [1, 2]
    assert all(r["requested_by"] == "ops@example.org" for r in runs)


@with_services
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_a_worker_killed_mid_attempt_loses_nothing_and_sends_nothing_twice(
        services, broker, tmp_path, workbook):
    sink = tmp_path / "sink.txt"
    keys = [f"k{i}" for i in range(8)]
    _jobs(workbook, {"job": "deliver", "automation": "t_cel_deliver", "schedule": "manual",
                     "enabled": "TRUE", "timeout_s": "4", "max_attempts": "1",
                     "params": json.dumps({"keys": keys, "sink": str(sink), "sleep": 0.25})})
    with tier(services, broker, tmp_path, workbook) as t1:
        first = t1.worker("w1")
        t1.scheduler()
        t1.store.request_run("deliver", "ops")
        def sent() -> int:  # keys the automation sent and noted as sent
            with t1.store.engine.connect() as conn:
                return len(conn.execute(select(t.deliveries.c.record_key)).all())

        wait_for(lambda: sent() >= 3, timeout=60)
        t1.kill(first)  # mid-attempt (sleeping before the next key): the task is not acked
        t1.worker("w2")
        [run] = wait_for(lambda: t1.finished("deliver", 1), timeout=VISIBILITY_S + 60)
        assert t1.deliveries(run["id"]) == 2
    lines = [line.split() for line in sink.read_text().splitlines()]
    assert sorted(k for k, _ in lines) == sorted(keys)  # every key once: none lost, none twice
    assert len({pid for _, pid in lines}) == 2
    assert (run["status"], run["attempts"]) == ("ok", 1)


@with_services
def test_a_scheduler_killed_with_runs_in_flight_loses_no_result(services, tmp_path,
                                                                 workbook):
    folder = tmp_path / "evidence"
    release = tmp_path / "release-slow"  # on the worker until the scheduler is dead
    _jobs(workbook, probe("slow", "manual", folder, hold_until=str(release)))
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.worker("w1")
        scheduler = t1.scheduler()
        t1.store.request_run("slow", "ops")
        from automations_for_tests import read_starts

        wait_for(lambda: read_starts(folder), timeout=60)
        t1.kill(scheduler)  # the run is on the worker; the scheduler's memory is gone
        release.touch()
        [run] = wait_for(lambda: t1.finished("slow", 1), timeout=30)
        assert run["status"] == "ok"
        t1.scheduler("scheduler-2")  # a new leader neither fails nor repeats it
        wait_for(lambda: _runs_tab(workbook).get(run["id"], {}).get("status") == "ok",
                 timeout=60)
        assert [r["status"] for r in t1.runs("slow")] == ["ok"]


@with_services
def test_a_run_whose_attempt_outlasts_a_moment_shows_running_until_it_ends(
        services, tmp_path, workbook):
    gate = tmp_path / "gate"
    _jobs(workbook, {"job": "long", "automation": "t_cel_gate", "schedule": "manual",
                     "enabled": "TRUE", "params": json.dumps({"gate": str(gate)})})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.worker("w1")
        t1.scheduler()
        t1.store.request_run("long", "ops")
        # the start is written on its own once the attempt outlasts LATE_START_S
        [run] = wait_for(lambda: [r for r in t1.runs("long") if r["status"] == "running"],
                         timeout=60)
        assert t1.deliveries(run["id"]) == 1
        wait_for(lambda: _runs_tab(workbook).get(run["id"], {}).get("status") == "running",
                 timeout=30)
        gate.touch()
        [done] = wait_for(lambda: t1.finished("long", 1), timeout=60)
        assert (done["status"], done["attempts"], done["started_at"]) == (
            "ok", 1, run["started_at"])
        wait_for(lambda: _runs_tab(workbook).get(run["id"], {}).get("status") == "ok",
                 timeout=30)


@with_services
def test_a_poison_task_ends_as_a_failed_run_after_the_redelivery_cap(services, tmp_path,
                                                                     workbook):
    _jobs(workbook, {"job": "poison", "automation": "t_cel_kill", "schedule": "manual",
                     "enabled": "TRUE", "timeout_s": "5", "max_attempts": "3"})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.worker("w1")
        t1.scheduler()
        t1.store.request_run("poison", "ops")
        [run] = wait_for(lambda: t1.finished("poison", 1), timeout=60)
        tab = wait_for(lambda: _runs_tab(workbook).get(run["id"], {}).get("status") ==
                       "failed", timeout=30)
        assert tab
        assert run["status"] == "failed" and run["error_type"] == "WorkerLost"
        assert "delivered 3 times" in run["error_message"]
        assert "SHEETOPS_CELERY_MAX_DELIVERIES=2" in run["error_message"]
        assert t1.deliveries(run["id"]) == 3  # two that died, the third ends it
        with t1.store.engine.connect() as conn:
            assert conn.execute(select(t.task_deliveries.c.key)).scalars().all() == [
                f"{run['id']}:1"]
        errors = [e for e in t1.store.recent_errors(10) if e["run_id"] == run["id"]]
        assert [e["error_type"] for e in errors] == ["WorkerLost"]


@with_services
def test_a_pipeline_runs_on_two_workers_and_a_worker_killed_mid_batch_loses_nothing(
        services, tmp_path, workbook):
    N = 400  # 40 batches of 0.4 s at the double stage: w2 joins long before the end
    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps({"id": i, "value": i}) + "\n" for i in range(N)))
    _jobs(workbook, {"job": "copy", "automation": "cel_copy", "schedule": "manual",
                     "enabled": "TRUE", "timeout_s": "60", "max_attempts": "1",
                     "params": json.dumps({"input": str(source), "slow_s": 0.4})})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = "80"  # > the pass's timeout_s
        w1 = t1.worker("w1", concurrency=2)
        t1.scheduler()
        t1.store.request_run("copy", "ops")
        # the pass (the job's attempt) runs on w1; w2 joins in on the stage queues
        wait_for(lambda: [r for r in t1.runs("copy") if r["status"] == "running"],
                 timeout=60)
        w2 = t1.worker("w2", concurrency=2)
        first_pids = _group_pids(w1)

        def delivered() -> list[tuple]:
            with t1.store.engine.connect() as conn:
                try:
                    return conn.execute(text("SELECT key, value, pid FROM cel_delivered")
                                        ).all()
                except Exception:
                    return []

        wait_for(lambda: {p for _, _, p in delivered()} - first_pids, timeout=90)
        t1.kill(w2)  # mid-batch: its claimed batches come back when their leases run out
        [run] = wait_for(lambda: t1.finished("copy", 1), timeout=120)
        rows = delivered()
    assert run["status"] == "ok", run["error_message"]
    counts = Counter(key for key, _, _ in rows)
    assert sorted(counts, key=int) == [str(i) for i in range(N)]
    assert set(counts.values()) == {1}  # applied once each at the SQL sink
    assert all(value == 2 * int(key) for key, value, _ in rows)
    assert {pid for _, _, pid in rows} - first_pids  # batches ran in both workers' processes
    assert (run["records_in"], run["records_out"]) == (N, N)


@with_services
def test_an_attempt_longer_than_the_visibility_timeout_fails_instead_of_running_twice(
        services, tmp_path, workbook):
    folder = tmp_path / "evidence"
    _jobs(workbook, {**probe("long", "manual", folder), "timeout_s": str(VISIBILITY_S)})
    with tier(services, "redis", tmp_path, workbook) as t1:
        done = subprocess.run([SHEETOPS, "run-job", "long", "--sheet", str(workbook.path)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60,
                              env=t1.env)
        assert done.returncode == 1
        [run] = t1.runs("long")
    assert run["status"] == "failed" and run["error_type"] == "ConfigError"
    assert f"SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S={VISIBILITY_S}" in run["error_message"]
    assert not folder.exists()  # never sent to a worker


# -- without services: the checks that come before any connection ------------------------

@pytest.mark.parametrize(("env", "named", "scheduler_too"), [
    ({"SHEETOPS_CELERY_ACKS_LATE": "false"}, "SHEETOPS_CELERY_ACKS_LATE=false would lose work",
     True),
    ({"SHEETOPS_CELERY_PREFETCH_MULTIPLIER": "4"},
     "SHEETOPS_CELERY_PREFETCH_MULTIPLIER=4 would double work", True),
    ({"SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S": "5"},
     "SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S=5 is too short", True),
    ({"SHEETOPS_CELERY_REJECT_ON_WORKER_LOST": "0"},
     "SHEETOPS_CELERY_REJECT_ON_WORKER_LOST=false would lose work", False),
    ({"SHEETOPS_CELERY_MAX_DELIVERIES": "0"}, "SHEETOPS_CELERY_MAX_DELIVERIES=0 must be 1",
     False),
    ({"SHEETOPS_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
      "SHEETOPS_BROKER_CONSUMER_TIMEOUT_S": "3"}, "SHEETOPS_BROKER_CONSUMER_TIMEOUT_S=3 is",
     False),
    ({"SHEETOPS_CELERY_PACK_MAX": "0"}, "SHEETOPS_CELERY_PACK_MAX=0 must be between 1 and",
     False),
    ({"SHEETOPS_BROKER_URL": ""}, "SHEETOPS_EXECUTOR=celery needs SHEETOPS_BROKER_URL", False),
    ({"SHEETOPS_BROKER_URL": "sqs://queue"}, "must be a redis:// or amqp:// URL", False),
])
def test_a_setting_that_would_lose_or_double_work_is_refused_in_one_sentence(
        tmp_path, workbook, env, named, scheduler_too):
    """A worker (and the scheduler: the same check) refuses it at start, before
    connecting to anything (the broker's port here has nothing listening)."""
    _jobs(workbook, probe("one", "manual"))
    base = {**os.environ, "SHEETOPS_STORE_URL": f"sqlite:///{tmp_path}/s.db",
            "SHEETOPS_EXECUTOR": "celery", "SHEETOPS_BROKER_URL": "redis://127.0.0.1:1/0"}
    commands = [["worker"], ["run", "--sheet", str(workbook.path)]]
    for args in commands if scheduler_too else commands[:1]:
        done = subprocess.run([SHEETOPS, *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env={**base, **env})
        assert done.returncode == 2, done.stderr
        assert named in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_an_attempt_is_sent_only_when_the_broker_will_not_hand_it_to_a_second_worker():
    from sheetops.executors.celery_config import CeleryConfig

    redis = CeleryConfig("redis://h/0", visibility_timeout_s=100)
    assert redis.task_problem(timeout_s=80) == ""
    assert "SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S=100" in redis.task_problem(80, eta_s=20)
    rabbit = CeleryConfig("amqp://h//", consumer_timeout_s=1800)
    assert rabbit.task_problem(timeout_s=1000, eta_s=300) == ""
    assert "RabbitMQ consumer_timeout" in rabbit.task_problem(timeout_s=1800)


def _one_batch_for_cel_copy(tmp_path):
    """A SQLite store holding one batch of two records on ``cel_copy``'s first stage
    queue: the store, the two queue names and the stage task's attempt request."""
    from celery_for_tests import cel_copy

    from sheetops.context import AttemptRequest
    from sheetops.pipelines import batch as batches
    from sheetops.store import ledger

    store = Store(f"sqlite:///{tmp_path}/s.db")
    first, second = cel_copy.queue_names("copy")
    ledger.create_tables(store.engine)
    with store.queues.transaction() as tx:
        tx.put(first, [batches.encode(["1", "2"], [{"id": 1, "value": 1},
                                                   {"id": 2, "value": 2}])],
               keys=[batches.item_key(["1", "2"])])
    request = AttemptRequest("r1", "copy", "cel_copy", 1, {"input": str(tmp_path / "in")},
                             60.0, store_url=store.url)
    return store, first, second, request


def test_a_batch_a_stage_task_hands_on_is_claimable_at_once_by_any_worker(tmp_path):
    """A stage task keeps nothing leased to itself: the batch it hands on waits on the
    next stage's store queue for whichever worker comes first, not for a lease to run
    out (the task's body on a SQLite store, so without services)."""
    from celery_for_tests import cel_copy

    from sheetops.pipelines import batch as batches
    from sheetops.pipelines.celery import work_stage

    store, _, second, request = _one_batch_for_cel_copy(tmp_path)
    told: list[int] = []
    assert work_stage(cel_copy, store, 0, 1, request, lambda *a: told.append(a[1])) == 1
    assert told == [1]  # the next stage's task was sent
    another_worker = Store(store.url)
    try:
        [claim] = another_worker.queues.queue(second).claim(1, consumer="w2", lease_s=10)
        assert [r["value"] for r in batches.decode_item(claim.payload)[1]] == [2, 4]
    finally:
        another_worker.dispose()
        store.dispose()


def test_a_stage_task_takes_a_batch_through_every_stage_its_worker_serves(tmp_path):
    """A worker consuming every stage's queue works them all in one task: the batch
    reaches the sink in this process and no task is sent for the next stage; the
    batch is applied once (the task's body on a SQLite store, so without services)."""
    from celery_for_tests import cel_copy

    from sheetops.pipelines.celery import work_stage

    store, first, second, request = _one_batch_for_cel_copy(tmp_path)
    told: list[int] = []
    try:
        assert work_stage(cel_copy, store, 0, 1, request, lambda *a: told.append(a[1]),
                          served=[0, 1]) == 2
        assert told == []  # this worker served the next stage itself
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT key, value FROM cel_delivered")).all()
        assert sorted(rows) == [("1", 2), ("2", 4)]
        depths = store.queues.depths([first, second])
        assert all(d.waiting == 0 for d in depths.values())
    finally:
        store.dispose()


def test_a_pass_on_celery_alone_delivers_each_record_once_and_keeps_one_task_waiting(
        tmp_path):
    """With no other worker the pass finishes by itself (its source put several batches
    a transaction): every record reaches the SQL sink once, and while no worker takes
    the stage tasks the dispatcher keeps one waiting per stage, not one per batch (the
    pass on a SQLite store, its broker replaced by a list, so without services)."""
    from celery_for_tests import cel_copy

    from sheetops.context import AttemptRequest, RunContext
    from sheetops.pipelines.celery import run_pass

    source = tmp_path / "input.jsonl"
    source.write_text("".join(json.dumps({"id": i, "value": i}) + "\n" for i in range(95)))
    store = Store(f"sqlite:///{tmp_path}/s.db")
    request = AttemptRequest("r1", "copy", "cel_copy", 1,
                             {"input": str(source), "slow_s": 0.05}, 60.0,
                             store_url=store.url)
    sent: list[int] = []
    try:
        report = run_pass(cel_copy, store.url, send=lambda *a: sent.append(a[1]),
                          pending=lambda pipeline, index: sent.count(index),
                          job="copy", run_id="r1", run_context=RunContext(request))
        with store.engine.connect() as conn:
            rows = conn.execute(text("SELECT key, value FROM cel_delivered")).all()
    finally:
        store.dispose()
    assert report.finished and (report.records_read, report.records_out) == (95, 95)
    assert sorted(int(k) for k, _ in rows) == list(range(95))
    assert all(v == 2 * int(k) for k, v in rows)
    tasks = Counter(sent)  # stage index → tasks sent
    assert tasks[0] == 1 and max(tasks.values()) == 1  # nobody took one: none more
