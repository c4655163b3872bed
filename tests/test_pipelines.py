"""Pipelines on the durable queue: bad records isolated, crashes resumed, exactly-once
hand-offs, backpressure, rate limits, replay and the Stages tab.

Crash tests run the pipeline in real child processes (``tests/pipelines_for_tests.py``)
that are SIGKILLed — or kill themselves — and restarted, as a deployment would.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipelines_for_tests import copy_pipeline
from sqlalchemy import create_engine, text

from sheetops import tabs
from sheetops.config import parse_config
from sheetops.pipelines import batch as batches
from sheetops.pipelines import deadletters as dl
from sheetops.pipelines import pipeline
from sheetops.store.queue_sql import Queues

TESTS = Path(__file__).resolve().parent
CHILD = [sys.executable, str(TESTS / "pipelines_for_tests.py")]


pytestmark = pytest.mark.usefixtures("forget_pipelines")


def write_records(path: Path, n: int, bad: set[int] = frozenset(), pad: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(n):
            record = {"id": i, "value": "oops" if i in bad else i}
            if pad:
                record["pad"] = "x" * pad
            f.write(json.dumps(record) + "\n")
    return path


def delivered(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        try:
            return [(k, v) for k, v in conn.execute(text("SELECT key, value FROM delivered"))]
        except Exception:
            return []
        finally:
            engine.dispose()


def run_child(kind: str, url: str, path: Path, env: dict[str, str] | None = None,
              kill_after: float | None = None) -> int:
    """Run the pipeline in a child; SIGKILL it after ``kill_after`` seconds if given."""
    proc = subprocess.Popen([*CHILD, kind, url, str(path)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.communicate(timeout=kill_after if kill_after is not None else 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


def pass_finished(url: str) -> bool:
    """Whether the pipeline's pass is over (a kill may land after it finished, as its
    process exits: then a restart would rightly start a new pass)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            state = conn.execute(text("SELECT state FROM pipeline_checkpoints")).scalar()
        return state == "finished"
    except Exception:
        return False
    finally:
        engine.dispose()


def run_until_finished(kind: str, url: str, path: Path, env=None, limit: int = 40) -> int:
    """Restart the child until it drains the pipeline; return the number of starts."""
    for start in range(1, limit + 1):
        if run_child(kind, url, path, env) == 0:
            return start
    raise AssertionError(f"the {kind} pipeline did not finish in {limit} starts")


def test_one_bad_record_among_10000_is_a_dead_letter_and_the_rest_are_delivered(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pipe = copy_pipeline("one-bad", str(write_records(tmp_path / "in.jsonl", 10_000,
                                                      bad={4321})), batch_size=500)
    report = pipe.run(url, lease_grace_s=0.3)

    rows = delivered(url)
    assert len(rows) == 9_999 and len({k for k, _ in rows}) == 9_999
    assert "4321" not in {k for k, _ in rows}
    assert all(v == int(k) * 2 for k, v in rows)
    letters = dl.letters(Queues(create_engine(url)), "one-bad")
    assert [(x.stage, x.key, x.error_type) for x in letters] == [
        ("validate", "4321", "ValueError")]
    assert "value must be a whole number" in letters[0].message
    assert letters[0].record == {"id": 4321, "value": "oops"}
    assert "Traceback" in letters[0].traceback
    assert report.result()["records_in"] == 10_000
    assert report.result()["records_out"] == 9_999
    assert report.stages["validate"]["dead_letters"] == 1
    assert report.stages["store"]["records_in"] == 9_999
    assert report.dead_letters == [{"stage": "validate", "key": "4321",
                                    "error_type": "ValueError",
                                    "message": letters[0].message}]


def test_sigkill_at_random_points_then_restart_delivers_every_record_exactly_once(tmp_path):
    rng = random.Random(15)
    for trial in range(10):
        url = f"sqlite:///{tmp_path / f'store{trial}.db'}"
        path = write_records(tmp_path / f"in{trial}.jsonl", 2_000, bad={77})
        kills = 0
        for _ in range(2):  # up to two kills per trial, each at a random moment
            if pass_finished(url) or run_child(
                    "copy", url, path, kill_after=rng.uniform(0.3, 1.8)) == 0:
                break
            kills += 1
        if not pass_finished(url):
            run_until_finished("copy", url, path)
        rows = delivered(url)
        keys = [k for k, _ in rows]
        assert len(keys) == len(set(keys)) == 1_999, (trial, kills, len(keys))
        letters = dl.letters(Queues(create_engine(url)), "copy")
        assert [x.key for x in letters] == ["77"], (trial, kills)


def test_a_record_that_kills_its_worker_ends_in_dead_letters_after_n_deliveries(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    path = write_records(tmp_path / "in.jsonl", 40)
    starts = run_until_finished("killer", url, path, env={"KILL_KEY": "13"})

    assert starts > 3  # it crashed its worker more than once before being set aside
    keys = sorted(int(k) for k, _ in delivered(url))
    assert keys == [i for i in range(40) if i != 13]
    letters = dl.letters(Queues(create_engine(url)), "killer")
    assert [(x.stage, x.key, x.error_type, x.attempts) for x in letters] == [
        ("double", "13", "LeaseExpired", 3)]


def test_only_the_batch_being_worked_is_blamed_when_its_process_is_killed(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    path = write_records(tmp_path / "in.jsonl", 50)
    marker = tmp_path / "hanging"
    proc = subprocess.Popen([*CHILD, "held", url, str(path)],
                            env={**os.environ, "MARKER": str(marker)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        # the batch of key 20 is being worked, the two before it went through the sink,
        # and the two after it wait in the process, handed on but not started
        while not (marker.exists() and len(_sizes(url)) == 2):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert run_child("held", url, path, env={"MARKER": str(marker)}) == 0

    # the restart gives back what the killed process held; only the batch it was
    # working counts the delivery and is split: the batches that merely waited there
    # go on whole (counted against it, they would be split too)
    assert sorted(_sizes(url)) == [(0, 10), (10, 10), (20, 5), (25, 5), (30, 10), (40, 10)]


def _sizes(url: str) -> list[tuple[int, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT first, n FROM sizes"))]
    except Exception:  # no batch reached the sink yet
        return []
    finally:
        engine.dispose()


def test_backpressure_keeps_memory_flat_with_a_fast_source_and_a_slow_stage(tmp_path):
    rss = {}
    for n in (2_000, 20_000):
        url = f"sqlite:///{tmp_path / f'store{n}.db'}"
        path = write_records(tmp_path / f"in{n}.jsonl", n, pad=1000)
        out = subprocess.run([*CHILD, "slow", url, str(path)], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
        rss[n] = int(lines["maxrss_kb"])
        assert lines["finished"] == str(n)
    # ten times the records (20 MB of them) cost at most a fifth more memory
    assert rss[20_000] <= 1.2 * rss[2_000], rss


def test_a_queue_never_holds_more_than_its_high_water_mark(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pipe = pipeline("hw", source=lambda: ({"id": i} for i in range(3_000)), key="id")
    seen: list[int] = []
    queues = Queues(create_engine(url))

    @pipe.stage(batch_size=50)
    def fast(records):
        return records

    @pipe.sink(batch_size=50, high_water=200)
    def slow(records):
        seen.append(queues.depths(["hw.slow"]).get("hw.slow").waiting)
        time.sleep(0.002)

    report = pipe.run(url)
    assert report.records_out == 3_000
    assert max(seen) <= 200 // 50 + 1  # its batches waiting, plus the one in hand


def test_a_stage_rate_limit_holds(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    calls: list[tuple[float, int]] = []
    pipe = pipeline("limited", source=lambda: ({"id": i} for i in range(50)), key="id")

    @pipe.sink(batch_size=5, rate_limit="20/second")
    def deliver(records):
        calls.append((time.monotonic(), len(records)))

    started = time.monotonic()
    report = pipe.run(url)
    assert report.records_out == 50
    assert time.monotonic() - started >= 2.0  # 50 records at 20 a second
    # never more than 20 records within one second; a call comes a moment after its
    # permit (the thread may wait for the interpreter lock), so a window of 0.95 s
    for at, _ in calls:
        assert sum(n for t, n in calls if at <= t < at + 0.95) <= 20


def test_replay_plain_and_edited_delivers_each_record_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    broken = {"3", "7"}
    sent: list[str] = []
    pipe = pipeline("replayed", source=lambda: ({"id": i, "email": f"u{i}@example.com"}
                                                 for i in range(10)), key="id")

    @pipe.stage(batch_size=4, retries=0)
    def check(records):
        for r in records:
            if str(r["id"]) in broken or "@" not in r["email"]:
                raise ValueError(f"cannot send to {r['email']}")
        return records

    @pipe.sink(batch_size=4, idempotent=True)
    def deliver(records):
        for r in records:
            sent.append(str(r["id"]))
            yield r

    pipe.run(url)
    assert sorted(sent) == sorted(str(i) for i in range(10) if str(i) not in broken)
    queues = Queues(create_engine(url))
    assert sorted(x.key for x in dl.letters(queues, "replayed")) == ["3", "7"]

    broken.discard("3")  # the bug is fixed: replay 3 as it was
    assert dl.requeue(queues, pipe, "replayed", keys=["3"]) == 1
    pipe.run(url, drain_only=True)
    # 7 was a bad address: replay it with the record edited
    broken.discard("7")
    assert dl.requeue(queues, pipe, "replayed", edited=[
        {"id": 7, "email": "fixed7@example.com"}]) == 1
    pipe.run(url, drain_only=True)
    assert sorted(sent) == sorted(str(i) for i in range(10))  # each exactly once
    assert dl.letters(queues, "replayed") == []
    # a replay of a record the sink's ledger holds delivers nothing again
    check_ledger = pipe.run(url)
    assert sorted(sent) == sorted(str(i) for i in range(10))
    assert check_ledger.stages["deliver"]["records_out"] == 0


def test_a_second_pass_delivers_nothing_twice_and_keeps_one_dead_letter_per_record(
        tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    sent: list[str] = []
    pipe = pipeline("again", source=lambda: ({"id": i, "ok": i != 3} for i in range(10)),
                    key="id")

    @pipe.stage(batch_size=4, retries=0)
    def check(records):
        if not all(r["ok"] for r in records):
            raise ValueError("record 3 is bad at its source")
        return records

    @pipe.sink(batch_size=4, idempotent=True)
    def deliver(records):
        sent.extend(str(r["id"]) for r in records)

    first = pipe.run(url)
    queues = Queues(create_engine(url))
    [letter] = dl.letters(queues, "again")
    second = pipe.run(url)  # the pass was finished: the source is read anew

    assert first.finished and second.finished
    assert second.generation == first.generation + 1 and second.records_read == 10
    assert sorted(sent) == sorted(str(i) for i in range(10) if i != 3)  # none twice
    assert second.stages["deliver"]["records_out"] == 0  # the ledger skipped them all
    assert second.stages["check"]["dead_letters"] == 1  # 3 failed again in this pass
    assert [d["key"] for d in second.dead_letters] == ["3"]
    [again] = dl.letters(queues, "again")  # still one dead letter for 3, refreshed
    assert (again.stage, again.key, again.record) == ("check", "3", {"id": 3, "ok": False})
    assert again.dead_at >= letter.dead_at and again.id == letter.id


def _keep_and_send(name: str):
    """A pipeline of 20 records through a stage that keeps them to a sink that notes
    their ids in the list returned with it."""
    sent: list[int] = []
    pipe = pipeline(name, source=lambda: ({"id": i} for i in range(20)), key="id")

    @pipe.stage(batch_size=5)
    def keep(records):
        return records

    @pipe.sink()
    def deliver(records):
        sent.extend(r["id"] for r in records)

    return pipe, sent


def test_a_dry_run_leaves_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pipe, sent = _keep_and_send("dry")
    report = pipe.run(url, dry_run=True)
    assert sent == [] and report.records_out == 20 and report.result()["dry_run"]
    assert Queues(create_engine(url)).names() == []


def test_a_batch_queued_as_json_text_before_packing_flows_with_packed_ones(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    pipe, sent = _keep_and_send("packed")
    queues = Queues(create_engine(url))
    old = [{"id": 100 + i} for i in range(3)]  # as a version before packing queued it
    queues.queue("packed.keep").put([batches.encode(None, old, field="id")],
                                    keys=[batches.item_key(["100", "102"])])
    with queues.transaction() as tx:
        [item] = tx.put_claimed("packed.keep", [batches.encode(None, old, field="id",
                                                               packed=True)],
                                keys=["x"], consumer="gone", lease_s=60)
        tx.release([item])
    with queues.engine.connect() as conn:
        kinds = conn.execute(text("SELECT typeof(payload) FROM queue_items ORDER BY id")).scalars()
        assert list(kinds) == ["text", "blob"]
    queues.dispose()
    report = pipe.run(url)
    assert report.finished and sorted(sent) == sorted([*range(20), *[100, 101, 102] * 2])


def _stages_rows(*rows):
    return [[c.name for c in tabs.STAGE_COLUMNS], *rows]


def test_stages_tab_overrides_settings_and_names_bad_cells():
    pipe = pipeline("tuned", source=[], key="id")
    pipe.stage(lambda records: records, name="validate", batch_size=500)
    pipe.sink(lambda records: None, name="deliver")
    rows = {
        tabs.JOBS: [["job", "automation", "schedule"], ["tuned-job", "tuned", "manual"],
                    ["beat", "heartbeat", "manual"]],
        tabs.RATE_LIMITS: [["name", "rate"], ["smtp", "30/minute"]],
        tabs.STAGES: _stages_rows(
            ["tuned-job", "validate", "2000", "4", "1", "30", "", "10000"],
            ["tuned-job", "deliver", "", "", "", "", "smtp", ""],
            ["tuned-job", "validate", "0", "", "", "", "", ""],
            ["tuned-job", "nosuch", "10", "", "", "", "", ""],
            ["beat", "x", "", "", "", "", "", ""],
            ["ghost", "x", "", "", "", "", "", ""],
        ),
    }
    snap = parse_config(rows, {"tuned", "heartbeat"})
    assert snap.stages == {"tuned-job": {
        "validate": {"batch_size": 2000, "concurrency": 4, "retries": 1, "timeout_s": 30.0,
                     "high_water": 10000},
        "deliver": {"rate_limit": "30/minute"}}}
    stage_problems = [str(p) for p in snap.problems if p.tab == tabs.STAGES]
    assert stage_problems == [
        "Stages!B4: stage 'validate' of 'tuned-job' is set twice (first on row 2); the "
        "first row is used; the stage keeps the code's settings",
        "Stages!C4: batch_size must be at least 1, got '0'; the stage keeps the code's "
        "settings",
        "Stages!B5: unknown stage 'nosuch' of 'tuned-job'; its stages are validate, "
        "deliver; the stage keeps the code's settings",
        "Stages!A6: job 'beat' runs 'heartbeat', which is not a pipeline; only pipeline "
        "jobs have stages; the stage keeps the code's settings",
        "Stages!A7: unknown job 'ghost'; use a job id from the Jobs tab; the stage keeps "
        "the code's settings",
    ]
    assert set(snap.jobs) == {"tuned-job", "beat"}  # bad Stages rows stop no job
    settings = pipe.stages[0].settings.merged(snap.stages["tuned-job"]["validate"])
    assert (settings.batch_size, settings.concurrency, settings.retries) == (2000, 4, 1)
