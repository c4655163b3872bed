"""Packs of attempts on the Celery tier, with real processes: many first attempts due at
once travel several to a task (``sheetops.attempts``), each still counted, run, recorded
and capped on its own.

A leader in the test process (a :class:`~sheetops.runner.Runner` with the celery
executor, as ``sheetops run`` builds it) hands :data:`N` runs to the executor at once;
real ``sheetops worker`` processes run them on Redis and PostgreSQL (the
:class:`~test_celery.Tier` of ``test_celery.py``). ``t_cel_note`` appends each run id to
a sink file when it is done, so the file shows which runs ran and how often.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_celery import BROKERS, tier, with_services
from test_cli import wait_for

from sheetops.config.model import JobSpec, Snapshot
from sheetops.executors.celery import CeleryExecutor
from sheetops.executors.celery_config import CeleryConfig
from sheetops.runner import Runner

PACK = 3  # attempts per pack in these tests
N = 32 * PACK  # runs handed off at once: packs of PACK (pack_size is N // 32)
TIMEOUT_S = 4.0
#: Longer than a pack of PACK attempts of TIMEOUT_S (with the allowances, the hard-limit
#: grace and the margin), short enough to wait for a killed worker's pack to come back.
VISIBILITY_S = 30


@contextlib.contextmanager
def leader(t1, pack_max: int = PACK, visibility_s: int = VISIBILITY_S,
           **settings: Any) -> Iterator[Runner]:
    """A runner publishing to ``t1``'s queue as a leader does."""
    config = CeleryConfig(BROKERS[t1.broker], queue=t1.queue, poll_interval_s=0.05,
                          visibility_timeout_s=visibility_s, pack_max=pack_max, **settings)
    runner = Runner(t1.store, functools.partial(CeleryExecutor, config=config),
                    flush_interval_s=0.05)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def _specs(sink: Path, n: int = N, **special: dict[str, Any]) -> list[JobSpec]:
    """``n`` jobs ``j000``… of ``t_cel_note`` writing to ``sink``; ``special["j004"]``
    overrides that job's fields (``params`` merged into its params)."""
    specs = []
    for i in range(n):
        job = f"j{i:03d}"
        fields: dict[str, Any] = {"automation": "t_cel_note", "timeout_s": TIMEOUT_S,
                                  **special.get(job, {})}
        params = {"sink": str(sink), **fields.pop("params", {})}
        specs.append(JobSpec(job=job, schedule="manual", timezone="UTC", max_attempts=1,
                             params_json=json.dumps(params), **fields))
    return specs


def _submit(runner: Runner, specs: list[JobSpec]) -> None:
    runner.submit_many(specs, Snapshot(), f"test-{uuid.uuid4().hex[:4]}", [None])


def _by_job(t1) -> dict[str, dict]:
    return {r["job"]: r for r in t1.runs()}


def _all_finished(t1, n: int = N) -> dict[str, dict]:
    runs = _by_job(t1)
    done = [r for r in runs.values() if r["status"] in ("ok", "failed", "timeout")]
    return runs if len(done) >= n else {}


def _ran(sink: Path) -> Counter:
    """How many times each run id ran to its end (lines in the sink)."""
    if not sink.exists():
        return Counter()
    return Counter(line.split()[0] for line in sink.read_text().splitlines())


def _packs_logged(*workers) -> list[int]:
    """The sizes of the packs the workers ran, from their logs (the pack task's result)."""
    return [int(n) for proc in workers
            for n in re.findall(r"'pack of (\d+): ", proc.log_path.read_text())]


@with_services
@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_many_runs_at_once_go_in_packs_and_each_is_recorded_once(services, broker,
                                                                 tmp_path, workbook):
    sink = tmp_path / "sink.txt"
    n = 200  # packs of 6 (200 // 32), 33 + 1 tasks for 2 worker processes
    with tier(services, broker, tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = "60"
        w1, w2 = t1.worker("w1"), t1.worker("w2")
        with leader(t1, pack_max=16, visibility_s=60) as runner:
            _submit(runner, _specs(sink, n))
            runs = wait_for(lambda: _all_finished(t1, n), timeout=120)
            sent = runner.executor.packs_sent
        with t1.store.engine.connect() as conn:  # one delivery counted for each attempt
            counted = conn.exec_driver_sql("SELECT deliveries FROM task_deliveries").all()
    assert len(runs) == n and {r["status"] for r in runs.values()} == {"ok"}
    ran = _ran(sink)
    assert set(ran) == {r["id"] for r in runs.values()} and set(ran.values()) == {1}
    packs = _packs_logged(w1, w2)
    assert sent == len(packs) >= 30 and sum(packs) >= n - 6
    assert set(packs) <= {6, 5, 4, 3, 2}  # none larger than n // 32
    assert len(counted) == n and {d for d, in counted} == {1}


@with_services
def test_a_worker_killed_mid_pack_reruns_none_of_its_recorded_attempts(services, tmp_path,
                                                                       workbook):
    sink, gate, started = tmp_path / "sink.txt", tmp_path / "gate", tmp_path / "started"
    # j003 j004 j005 are one pack; j004 waits for the gate, the test kills its worker
    specs = _specs(sink, j004={"params": {"gate": str(gate), "started": str(started)}})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = str(VISIBILITY_S)
        first = t1.worker("w1")
        with leader(t1) as runner:
            _submit(runner, specs)
            wait_for(started.exists, timeout=60)
            before = _by_job(t1)
            t1.kill(first)  # j003 recorded, j004 mid-attempt, j005 not started
            gate.touch()
            second = t1.worker("w2")
            runs = wait_for(lambda: _all_finished(t1), timeout=VISIBILITY_S + 90)
        own = t1.store.task_deliveries.deliveries(runs["j004"]["id"], 1)
    assert before["j003"]["status"] == "ok"
    assert before["j004"]["status"] in ("queued", "running")
    assert before["j005"]["status"] == "queued"
    assert {r["status"] for r in runs.values()} == {"ok"}
    ran = _ran(sink)
    assert set(ran) == {r["id"] for r in runs.values()} and set(ran.values()) == {1}
    assert "sent on as 2 single attempt(s)" in second.log_path.read_text()
    assert own == 1  # counted afresh for its own copy, sent on by the pack's redelivery


@with_services
def test_a_poison_attempt_in_a_pack_ends_failed_alone(services, tmp_path, workbook):
    sink = tmp_path / "sink.txt"
    specs = _specs(sink, j004={"automation": "t_cel_kill"})  # in the pack j003 j004 j005
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = str(VISIBILITY_S)
        t1.worker("w1")
        with leader(t1) as runner:
            _submit(runner, specs)
            runs = wait_for(lambda: _all_finished(t1), timeout=VISIBILITY_S + 90)
    poison = runs.pop("j004")
    assert (poison["status"], poison["error_type"]) == ("failed", "WorkerLost")
    # its own deliveries, as a single attempt task: two that died, the third ends it
    assert "delivered 3 times" in poison["error_message"]
    assert {r["status"] for r in runs.values()} == {"ok"}
    ran = _ran(sink)
    assert set(ran) == {r["id"] for r in runs.values()} and set(ran.values()) == {1}


@with_services
def test_an_attempt_in_a_pack_is_stopped_at_its_own_timeout_and_the_next_one_runs(
        services, tmp_path, workbook):
    sink = tmp_path / "sink.txt"
    specs = _specs(sink, j004={"timeout_s": 1.0, "params": {"sleep": 30}})
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = str(VISIBILITY_S)
        worker = t1.worker("w1")
        with leader(t1) as runner:
            _submit(runner, specs)
            runs = wait_for(lambda: _all_finished(t1), timeout=90)
    slow = runs.pop("j004")
    assert (slow["status"], slow["error_type"]) == ("timeout", "RunTimeout")
    assert "timeout_s=1s" in slow["error_message"]
    assert slow["finished_at"] - slow["started_at"] < TIMEOUT_S  # its own, not the pack's
    assert {r["status"] for r in runs.values()} == {"ok"}
    assert runs["j005"]["started_at"] >= slow["finished_at"] - 0.01  # after it, same pack
    ran = _ran(sink)
    assert slow["id"] not in ran and set(ran.values()) == {1} and len(ran) == N - 1
    assert _packs_logged(worker).count(PACK) == N // PACK  # none delivered again


@with_services
def test_packs_the_broker_loses_are_published_again_and_each_attempt_runs_once(
        services, tmp_path, workbook):
    """The packs are marked sent, then purged from Redis before any worker takes them:
    the leader's sweep for lost tasks finds each attempt of them undelivered past the
    bound and publishes it again (packed again, being many), and every run ends ok once."""
    from kombu import Connection

    sink = tmp_path / "sink.txt"
    visibility_s = 20  # a pack of 3 attempts of 1 s: 3 × (1 + 1) + 5 + 5 < 20
    bound = CeleryConfig(BROKERS["redis"], visibility_timeout_s=visibility_s).lost_after_s(1)
    with tier(services, "redis", tmp_path, workbook) as t1:
        t1.env["SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S"] = str(visibility_s)
        with leader(t1, visibility_s=visibility_s, republish_after_s=1.0) as runner:
            _submit(runner, [replace(spec, timeout_s=1.0) for spec in _specs(sink)])
            ids = wait_for(lambda: [r["id"] for r in t1.runs()] if len(t1.runs()) == N
                           else None, timeout=30)
            wait_for(lambda: len(t1.store.task_deliveries.sent(ids)) == N, timeout=30)
            with Connection(BROKERS["redis"]) as conn:
                assert conn.default_channel.queue_purge(t1.queue) == N // PACK  # packs
            t1.worker("w1")
            runs = wait_for(lambda: _all_finished(t1), timeout=bound + 60)
            published, packs = runner.executor.sent, runner.executor.packs_sent
    assert {r["status"] for r in runs.values()} == {"ok"}
    ran = _ran(sink)
    assert set(ran) == set(ids) and set(ran.values()) == {1}
    assert (published, packs) == (2 * N, 2 * N // PACK)


# -- without services: how a hand-off is cut into tasks -----------------------------------

def _request(i: int, timeout_s: float = TIMEOUT_S, **fields: Any):
    from sheetops.context import AttemptRequest

    return AttemptRequest(f"r{i:03d}", f"j{i:03d}", "t_cel_note", 1, {}, timeout_s,
                          **fields)


def _cut(visibility_s: float, ready: list, pack_max: int = 16,
         learned: tuple[float, ...] = ()) -> list[list[str]]:
    """The run ids of each task ``ready`` is published as, by a leader that saw runs of
    ``t_cel_note`` take ``learned`` seconds."""
    from sheetops.retry import JobPolicy

    config = CeleryConfig("redis://127.0.0.1:1/0", visibility_timeout_s=visibility_s,
                          pack_max=pack_max)
    executor = CeleryExecutor(lambda *a: None, lambda *a: None, config=config)
    for seconds in learned:
        executor.durations.learn("t_cel_note", seconds)
    policy = JobPolicy(1, 1.0, 1.0)
    return [[r.run_id for r, _, _ in task]
            for task in executor._tasks([(r, policy, delay) for r, delay in ready])]


def test_a_hand_off_is_packed_only_when_big_and_within_the_redelivery_timeout():
    from sheetops.ratelimit import RateLimitSpec

    many = [(_request(i), 0.0) for i in range(N)]
    assert [len(task) for task in _cut(VISIBILITY_S, many)] == [PACK] * (N // PACK)
    assert [len(task) for task in _cut(3600, many * 20)] == [16] * (N * 20 // 16)
    assert [len(task) for task in _cut(3600, many, pack_max=1)] == [1] * N
    assert [len(task) for task in _cut(3600, many[:63])] == [1] * 63  # a small burst
    # an automation seen taking 50 ms a run is not packed (its runs keep their
    # parallelism); four runs are too few to tell, and 2 ms runs are packed
    assert [len(task) for task in _cut(3600, many, learned=(0.05,) * 5)] == [1] * N
    assert [len(task) for task in _cut(3600, many, learned=(0.05,) * 4)] == [PACK] * 32
    assert [len(task) for task in _cut(3600, many, learned=(0.002,) * 50)] == [PACK] * 32
    # two attempts of 4 s (+ 1 s each) + grace + margin reach a 20 s visibility timeout
    assert [len(task) for task in _cut(20, many)] == [1] * N
    # retries, attempts due later and rate-limited ones go alone, after the packs
    limited = _request(900, rate_limit=RateLimitSpec("one", "1/second"))
    retry = replace(_request(901), attempt=2)
    tasks = _cut(3600, [*many, (limited, 0.0), (retry, 0.0), (_request(902), 5.0)])
    assert tasks[-3:] == [["r900"], ["r901"], ["r902"]]
    assert sorted(run for task in tasks[:-3] for run in task) == [r.run_id for r, _ in many]


@pytest.mark.each_store_backend
def test_a_pack_counts_each_attempt_and_a_released_one_is_owned_by_its_next_copy(store):
    """Store level, on SQLite and PostgreSQL: one call counts every attempt of a pack as
    :meth:`begin_attempt` would, each on its own row; releasing an attempt of the pack's
    copy (not recorded) restarts its count for the copy that reaches the store next."""
    from test_celery_leader import _queued_run
    from test_celery_retry import _failed_attempt

    deliveries = store.task_deliveries
    for run_id in ("a", "b", "c"):
        _queued_run(store, run_id)
    deliveries.mark_sent([("a", 1, "A"), ("b", 1, "B"), ("c", 1, "other")])
    _failed_attempt(store, "recorded", 1)
    pack = [("a", 1, "A"), ("b", 1, "B"), ("c", 1, "C"), ("recorded", 1, "R"),
            ("gone", 1, "G")]
    first = deliveries.begin_attempts(pack, 2)
    assert [(b.deliveries, b.due(2)) for b in first] == [
        (1, True), (1, True), (0, False), (1, False), (1, False)]
    assert first[2].another_copy and first[3].recorded and first[4].run_status is None
    again = deliveries.begin_attempts(pack, 2)  # the pack delivered again
    assert [b.deliveries for b in again[:2]] == [2, 2]
    assert deliveries.release_copies([("a", 1, "A"), ("b", 1, "not B"),
                                      ("recorded", 1, "R")]) == ["a"]
    assert deliveries.deliveries("a", 1) == 0 and deliveries.deliveries("b", 1) == 2
    assert deliveries.begin_attempt("a", 1, 2, copy_id="single").deliveries == 1
    assert deliveries.begin_attempts([("a", 1, "A")], 2)[0].another_copy
