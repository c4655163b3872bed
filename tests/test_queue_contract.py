"""The durable queue's contract, written once and run on every implementation: SQLite
(the embedded default) and PostgreSQL (skipped when absent, required in CI).

Time is a clock the test moves (``Queues(store, now=clock)``), so delays and leases
need no waiting; only the tests with real processes (two claimers, a claimer killed
with SIGKILL) use the wall clock, and wait for a condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from conftest import wait_for

from sheetops.store import Store
from sheetops.store.queue import (
    LEASE_GRACE_S,
    JsonText,
    PackedJson,
    QueueDepth,
    QueueError,
    StaleClaim,
    lease_for,
)
from sheetops.store.queue_sql import Queues

LEASE = 30.0
#: Every test using ``store``/``store_url`` runs on SQLite and PostgreSQL (conftest).
pytestmark = pytest.mark.each_store_backend


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def queues(store: Store, clock: Clock) -> Iterator[Queues]:
    qs = Queues(store, now=clock)
    yield qs
    qs.dispose()


# -- put, claim, ack ---------------------------------------------------------------------
def test_put_claim_ack_in_fifo_order_with_json_payloads(queues: Queues, clock: Clock) -> None:
    q = queues.queue("stage1")
    payloads = [{"id": 1, "name": "Zoë"}, [1, 2, 3], "text", 42, 2.5, None]
    ids = q.put(payloads, keys=["a", "b", None, "d", "e", "f"])
    assert len(ids) == 6 and ids == sorted(ids)
    assert q.depth() == QueueDepth(ready=6)

    first = q.claim(4, consumer="w1", lease_s=LEASE)
    assert [c.id for c in first] == ids[:4]
    assert [c.payload for c in first] == payloads[:4]
    assert [c.key for c in first] == ["a", "b", None, "d"]
    assert {c.deliveries for c in first} == {1}
    assert {c.claimed_until for c in first} == {clock() + LEASE}
    assert {c.queue for c in first} == {"stage1"}
    assert q.depth() == QueueDepth(ready=2, claimed=4)

    q.ack(first)
    rest = q.claim(10, consumer="w2", lease_s=LEASE)
    assert [c.payload for c in rest] == payloads[4:]
    q.ack(rest)
    assert q.depth() == QueueDepth()
    assert q.claim(10, consumer="w1", lease_s=LEASE) == []


def test_queues_are_separate_and_priority_goes_first(queues: Queues) -> None:
    a, b = queues.queue("a"), queues.queue("b")
    a.put(["low1", "low2"])
    a.put(["high"], priority=5)
    b.put(["other"])
    assert [c.payload for c in a.claim(10, consumer="w", lease_s=LEASE)] == [
        "high", "low1", "low2"]
    assert b.depth() == QueueDepth(ready=1)
    assert queues.names() == ["a", "b"]
    assert queues.depths() == {"a": QueueDepth(claimed=3), "b": QueueDepth(ready=1)}


def test_bad_puts_are_refused_with_a_queue_error(queues: Queues) -> None:
    q = queues.queue("q")
    with pytest.raises(QueueError, match="payload 1 cannot be stored as JSON"):
        q.put([1, {"when": object()}])
    with pytest.raises(QueueError, match="2 keys for 1 payloads"):
        q.put([1], keys=["a", "b"])
    with pytest.raises(QueueError, match="lease_s must be positive"):
        q.claim(1, consumer="w", lease_s=0)
    assert q.depth() == QueueDepth()  # the refused batch left nothing behind


def test_lease_for_adds_a_grace_to_the_timeout() -> None:
    assert lease_for(60) == 60 + LEASE_GRACE_S
    assert lease_for(5, grace_s=1) == 6
    with pytest.raises(QueueError):
        lease_for(0)


# -- delays, nack, leases ------------------------------------------------------------------
def test_nack_with_a_delay_hides_the_item_until_the_delay_is_over(
        queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    q.put([{"n": 1}])
    [claim] = q.claim(1, consumer="w", lease_s=LEASE)
    q.nack(claim, delay_s=60, error=ValueError("upstream said 503"))
    assert q.depth() == QueueDepth(delayed=1)
    clock.advance(59.9)
    assert q.claim(1, consumer="w", lease_s=LEASE) == []
    clock.advance(0.1)
    [again] = q.claim(1, consumer="w", lease_s=LEASE)
    assert (again.id, again.payload, again.deliveries) == (claim.id, {"n": 1}, 2)


def test_put_with_a_delay(queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    q.put(["later"], delay_s=10)
    q.put(["now"])
    assert q.depth() == QueueDepth(ready=1, delayed=1)
    assert [c.payload for c in q.claim(5, consumer="w", lease_s=LEASE)] == ["now"]
    clock.advance(10)
    assert [c.payload for c in q.claim(5, consumer="w", lease_s=LEASE)] == ["later"]


def test_an_expired_lease_makes_the_item_claimable_again(queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    q.put(["job"])
    [first] = q.claim(1, consumer="dies", lease_s=10)
    clock.advance(9.99)
    assert q.claim(1, consumer="other", lease_s=10) == []
    clock.advance(0.02)
    assert q.depth() == QueueDepth(ready=1)  # an expired lease counts as ready
    [second] = q.claim(1, consumer="other", lease_s=10)
    assert (second.id, second.deliveries) == (first.id, 2)
    assert second.token != first.token
    with pytest.raises(StaleClaim):  # the first consumer woke up: fenced off
        q.ack([first])
    q.ack([second])
    assert q.depth() == QueueDepth()


def test_a_stale_claim_is_refused_by_ack_nack_extend_and_dead_letter(
        queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    q.put(["a", "b"])
    good, late = q.claim(2, consumer="w", lease_s=10)
    [late] = q.extend([late], lease_s=1)  # heartbeat: the lease now ends sooner
    clock.advance(5)
    for refused in (lambda: q.ack([late]), lambda: q.nack(late, 1, "x"),
                    lambda: q.extend([late], 10), lambda: q.dead_letter(late, "x")):
        with pytest.raises(StaleClaim) as info:
            refused()
        assert info.value.ids == [late.id]
    with pytest.raises(StaleClaim):  # all or nothing: the good claim was not acked
        q.ack([good, late])
    assert q.depth() == QueueDepth(ready=1, claimed=1)
    q.ack([good])
    assert q.depth() == QueueDepth(ready=1)


def test_extend_keeps_a_long_job_leased(queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    q.put(["long"])
    [claim] = q.claim(1, consumer="w", lease_s=10)
    clock.advance(8)
    [claim] = q.extend([claim], lease_s=10)
    assert claim.claimed_until == clock() + 10
    clock.advance(8)  # past the first lease, within the renewed one
    assert q.claim(1, consumer="other", lease_s=10) == []
    q.ack([claim])


# -- dead letters --------------------------------------------------------------------------
def test_a_worker_that_keeps_dying_ends_as_a_dead_letter(queues: Queues, clock: Clock) -> None:
    q = queues.queue("q", max_deliveries=3)
    q.put(["poison", "fine"], keys=["p", "f"])
    for delivery in (1, 2, 3):
        claims = q.claim(1, consumer="w", lease_s=10)
        assert [(c.payload, c.deliveries) for c in claims] == [("poison", delivery)]
        clock.advance(11)  # the worker died holding it: its lease runs out
    [fine] = q.claim(1, consumer="w", lease_s=10)  # the poison is skipped, not delivered
    assert fine.payload == "fine"
    assert q.depth() == QueueDepth(claimed=1, dead=1)
    [dead] = q.dead_letters()
    assert (dead.key, dead.payload, dead.deliveries) == ("p", "poison", 3)
    assert dead.error.type == "LeaseExpired"
    assert "delivered 3 times" in dead.error.message


def test_nack_after_the_last_delivery_dead_letters_with_the_error(queues: Queues) -> None:
    q = queues.queue("q", max_deliveries=2)
    q.put([{"email": "not-an-address"}], keys=["c-7"])
    for _ in range(2):
        [claim] = q.claim(1, consumer="w", lease_s=LEASE)
        try:
            raise ValueError("bad email: not-an-address")
        except ValueError as exc:
            q.nack(claim, delay_s=0, error=exc)
    assert q.claim(1, consumer="w", lease_s=LEASE) == []
    [dead] = q.dead_letters(keys=["c-7"])
    assert (dead.error.type, dead.error.message) == ("ValueError", "bad email: not-an-address")
    assert "Traceback" in dead.error.traceback and dead.deliveries == 2


def test_dead_letter_and_requeue_by_id_key_edited_or_all(queues: Queues) -> None:
    q = queues.queue("q", max_deliveries=2)
    q.put([{"n": i} for i in range(4)], keys=["k0", "k1", "k2", "k3"])
    for claim in q.claim(4, consumer="w", lease_s=LEASE):
        q.dead_letter(claim, RuntimeError(f"bad {claim.key}"))
    assert q.depth() == QueueDepth(dead=4)
    dead = {d.key: d for d in q.dead_letters()}
    assert dead["k2"].error.message == "bad k2"

    assert q.requeue([dead["k0"].id]) == 1
    assert q.requeue(keys=["k1"]) == 1
    assert q.requeue([dead["k2"].id], edited={dead["k2"].id: {"n": 2, "fixed": True}}) == 1
    assert q.depth() == QueueDepth(ready=3, dead=1)
    replayed = q.claim(10, consumer="w", lease_s=LEASE)
    assert [(c.key, c.payload, c.deliveries) for c in replayed] == [
        ("k0", {"n": 0}, 1), ("k1", {"n": 1}, 1), ("k2", {"n": 2, "fixed": True}, 1)]
    q.ack(replayed)
    assert q.requeue([]) == 0  # an empty selection replays nothing
    assert q.requeue() == 1  # no selection replays every dead letter
    assert [c.key for c in q.claim(10, consumer="w", lease_s=LEASE)] == ["k3"]


# -- depth, age, dedupe, batches --------------------------------------------------------
def test_depth_and_oldest_age(queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    assert (q.depth(), q.oldest_age()) == (QueueDepth(), None)
    q.put(["a", "b"])
    clock.advance(30)
    q.put(["c"])
    q.put(["d"], delay_s=100)
    clock.advance(5)
    claims = q.claim(2, consumer="w", lease_s=LEASE)
    q.dead_letter(claims[1], "bad")
    assert q.depth() == QueueDepth(ready=1, delayed=1, claimed=1, dead=1)
    assert q.depth().waiting == 3
    assert q.oldest_age() == pytest.approx(35)  # "a", claimed but not done
    q.ack(claims[:1])
    assert q.oldest_age() == pytest.approx(5)


def test_dedupe_skips_keys_already_in_the_queue_until_acked(queues: Queues) -> None:
    q = queues.queue("q")
    first = q.put(["a1", "b1", "a-again"], keys=["a", "b", "a"], dedupe=True)
    assert len(first) == 2
    assert len(q.put(["a2", "c1", "loose"], keys=["a", "c", None], dedupe=True)) == 2
    assert len(q.put(["a3"], keys=["a"])) == 1  # without dedupe a key may repeat
    claims = q.claim(10, consumer="w", lease_s=LEASE)
    assert [c.payload for c in claims] == ["a1", "b1", "c1", "loose", "a3"]
    q.dead_letter(claims[1], "bad")  # "b" is dead, not acked: still present
    q.ack([claims[0], claims[2]])
    again = q.put(["a4", "b2", "c2"], keys=["a", "b", "c"], dedupe=True)
    assert len(again) == 2  # a and c were acked; b is a dead letter
    assert [c.payload for c in q.claim(10, consumer="w", lease_s=LEASE)] == ["a4", "c2"]


def test_a_batch_of_10000_is_put_and_claimed_quickly(queues: Queues) -> None:
    q = queues.queue("big")
    t0 = time.perf_counter()
    ids = q.put([{"i": i} for i in range(10_000)], keys=[f"k{i}" for i in range(10_000)],
                dedupe=True)
    put_s = time.perf_counter() - t0
    assert len(ids) == 10_000 and ids == sorted(set(ids))
    claims = q.claim(10_000, consumer="w", lease_s=LEASE)
    assert [c.payload["i"] for c in claims] == list(range(10_000))
    q.ack(claims)
    assert q.depth() == QueueDepth()
    assert put_s < 10, f"putting 10,000 items took {put_s:.1f}s"


def test_a_packed_payload_is_stored_compressed_and_a_text_one_still_decodes(
        queues: Queues) -> None:
    q = queues.queue("packed")
    big = {"r": [{"id": i, "email": f"user{i}@example.com"} for i in range(2000)]}
    packed = PackedJson(zlib.compress(json.dumps(big).encode(), 1))
    q.put([packed, JsonText('{"old": true}')], keys=["p", "t"])
    with queues.engine.connect() as conn:
        stored = dict(conn.execute(sa.text(
            "SELECT key, length(payload) FROM queue_items WHERE queue = 'packed'")).all())
    raw = q.claim(2, consumer="w", lease_s=LEASE, raw=True)
    if queues.packs:  # SQLite: kept compressed, as a BLOB
        assert stored["p"] < len(json.dumps(big)) / 4
        assert [type(c.payload) for c in raw] == [bytes, str]
        assert json.loads(zlib.decompress(raw[0].payload)) == big
    else:  # PostgreSQL's text column: unpacked on the way in
        assert [json.loads(c.payload) for c in raw] == [big, {"old": True}]
    for claim in raw:
        q.dead_letter(claim, "kept")
    assert [d.payload for d in q.dead_letters()] == [big, {"old": True}]


def test_put_claimed_leases_to_its_consumer_and_release_gives_it_back(
        queues: Queues, clock: Clock) -> None:
    q = queues.queue("q")
    with queues.transaction() as tx:
        mine = tx.put_claimed("q", [{"a": 1}, {"a": 2}], keys=["k1", "k2"], consumer="w",
                              lease_s=LEASE)
    assert [(c.key, c.payload, c.deliveries) for c in mine] == [("k1", {"a": 1}, 1),
                                                                 ("k2", {"a": 2}, 1)]
    assert q.depth() == QueueDepth(claimed=2)
    assert q.claim(5, consumer="other", lease_s=LEASE) == []
    q.ack(mine[:1])
    with queues.transaction() as tx:
        assert tx.release(mine) == 1  # the acked one is no longer held: skipped
    [again] = q.claim(5, consumer="other", lease_s=LEASE)
    assert (again.key, again.payload, again.deliveries) == ("k2", {"a": 2}, 1)
    with queues.transaction() as tx:
        [late] = tx.put_claimed("q", ["x"], consumer="dies", lease_s=10)
    clock.advance(11)  # its consumer died: the lease expires like a claim's
    [taken] = q.claim(5, consumer="other", lease_s=LEASE)
    assert (taken.id, taken.deliveries) == (late.id, 2)
    with pytest.raises(StaleClaim):
        q.ack([late])


def test_release_consumer_gives_back_what_a_dead_process_held_blaming_only_its_work(
        queues: Queues) -> None:
    q = queues.queue("q")
    q.put(["worked", "waited", "theirs"], keys=["a", "b", "c"])
    worked, _waited = q.claim(2, consumer="dead", lease_s=LEASE)
    [theirs] = q.claim(1, consumer="alive", lease_s=LEASE)
    with queues.transaction() as tx:
        tx.put_claimed("q", ["handed"], keys=["d"], consumer="dead", lease_s=LEASE)
    with queues.transaction() as tx:
        assert tx.release_consumer("dead", blamed=[worked.id]) == 3
    again = {c.key: c.deliveries for c in q.claim(5, consumer="next", lease_s=LEASE)}
    assert again == {"a": 2, "b": 1, "d": 1}  # only the one being worked counts twice
    q.ack([theirs])  # another consumer's claim is untouched, still held


def test_dead_letter_per_key_keeps_one_dead_letter_per_key(queues: Queues,
                                                            clock: Clock) -> None:
    q = queues.queue("q")
    q.put(["first try"], keys=["k"])
    [claim] = q.claim(1, consumer="w", lease_s=LEASE)
    q.dead_letter(claim, ValueError("bad"), per_key=True)
    clock.advance(5)
    q.put(["second try", "other"], keys=["k", "j"])
    again, other = q.claim(2, consumer="w", lease_s=LEASE)
    q.dead_letter(again, ValueError("still bad"), per_key=True)
    q.dead_letter(other, ValueError("bad too"), per_key=True)
    letters = q.dead_letters()
    assert [(d.id, d.key, d.payload, d.error.message) for d in letters] == [
        (claim.id, "k", "second try", "still bad"), (other.id, "j", "other", "bad too")]
    assert letters[0].dead_at == clock()
    assert q.depth() == QueueDepth(dead=2)


# -- transactions ------------------------------------------------------------------------
def test_ack_and_put_commit_together_or_not_at_all(queues: Queues) -> None:
    stage1, stage2 = queues.queue("stage1"), queues.queue("stage2")
    stage1.put([1, 2, 3])
    claims = stage1.claim(3, consumer="w", lease_s=LEASE)
    with pytest.raises(RuntimeError), queues.transaction() as tx:
        tx.ack(claims)
        tx.put("stage2", [c.payload * 10 for c in claims])
        raise RuntimeError("the stage crashed before its hand-off committed")
    assert stage1.depth() == QueueDepth(claimed=3)
    assert stage2.depth() == QueueDepth()

    with queues.transaction() as tx:
        tx.put("stage2", [c.payload * 10 for c in claims])
        tx.ack(claims)
    assert stage1.depth() == QueueDepth()
    assert [c.payload for c in stage2.claim(5, consumer="w", lease_s=LEASE)] == [10, 20, 30]


def test_a_claim_inside_a_rolled_back_transaction_never_happened(queues: Queues) -> None:
    q = queues.queue("q")
    q.put(["a"])
    with pytest.raises(RuntimeError), queues.transaction() as tx:
        assert [c.payload for c in tx.claim("q", 5, consumer="w", lease_s=LEASE)] == ["a"]
        raise RuntimeError("crashed before committing the claim")
    [claim] = q.claim(5, consumer="w", lease_s=LEASE)
    assert claim.deliveries == 1


def test_a_stale_claim_refuses_the_whole_transaction(queues: Queues, clock: Clock) -> None:
    stage1, stage2 = queues.queue("stage1"), queues.queue("stage2")
    stage1.put(["a", "b"])
    fresh = stage1.claim(1, consumer="w", lease_s=100)
    stale = stage1.claim(1, consumer="w", lease_s=10)
    clock.advance(20)
    with pytest.raises(StaleClaim), queues.transaction() as tx:
        tx.put("stage2", ["out-a", "out-b"])
        tx.ack(fresh + stale)
    assert stage2.depth() == QueueDepth()
    assert stage1.depth() == QueueDepth(ready=1, claimed=1)  # the fresh claim still held
    stage1.ack(fresh)


def test_a_sql_sink_commits_its_write_and_the_ack_in_one_transaction(
        queues: Queues) -> None:
    sink = sa.Table("sink_rows", sa.MetaData(), sa.Column("key", sa.String(20),
                                                          primary_key=True))
    sink.create(queues.engine)
    q = queues.queue("to_sink")
    q.put([{"k": "x"}, {"k": "y"}], keys=["x", "y"])
    claims = q.claim(2, consumer="sink", lease_s=LEASE)

    def deliver(fail: bool) -> None:
        with queues.engine.connect() as conn, conn.begin():
            conn.execute(sa.insert(sink), [{"key": c.payload["k"]} for c in claims])
            with queues.transaction(conn) as tx:
                tx.ack(claims)
            if fail:
                raise RuntimeError("crashed after the write, before the commit")

    with pytest.raises(RuntimeError):
        deliver(fail=True)
    with queues.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(sink)).scalar() == 0
    assert q.depth() == QueueDepth(claimed=2)
    deliver(fail=False)
    with queues.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(sink.c.key)).scalars()) == ["x", "y"]
    assert q.depth() == QueueDepth()


# -- real processes ----------------------------------------------------------------------
CLAIMER = textwrap.dedent("""
    import json, sys, time
    from sheetops.store import Store
    from sheetops.store.queue_sql import Queues

    url, name, mode, batch, lease = sys.argv[1:6]
    queue = Queues(Store(url)).queue(name)
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every claimer starts at once
    if mode == "drain":
        while claims := queue.claim(int(batch), consumer=name, lease_s=float(lease)):
            print(json.dumps([c.id for c in claims]), flush=True)
            time.sleep(0.005)  # the work
            queue.ack(claims)
    else:  # "hold": claim once, report, then hang until killed
        claims = queue.claim(int(batch), consumer=name, lease_s=float(lease))
        print(json.dumps([c.id for c in claims]), flush=True)
        sys.stdin.readline()
""")


def start_claimer(url: str, queue: str, mode: str, batch: int,
                  lease_s: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, url, queue, mode, str(batch), str(lease_s)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_two_processes_claim_each_item_exactly_once(store_url: str, store: Store) -> None:
    queues = Queues(store)
    q = queues.queue("shared")
    ids = q.put([{"n": i} for i in range(2_000)])
    claimers = [start_claimer(store_url, "shared", "drain", 50, 120) for _ in range(2)]
    try:
        for proc in claimers:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=120)[0] for proc in claimers]
    finally:
        for proc in claimers:
            proc.kill()
    assert [proc.returncode for proc in claimers] == [0, 0]
    per_process = [[i for line in out.splitlines() for i in json.loads(line)]
                   for out in outputs]
    claimed = per_process[0] + per_process[1]
    assert sorted(claimed) == ids, "an item was claimed twice or never"
    assert all(per_process), "one claimer got nothing: the test did not claim concurrently"
    assert q.depth() == QueueDepth()
    queues.dispose()


def test_a_claimer_killed_with_sigkill_loses_nothing(store_url: str, store: Store) -> None:
    queues = Queues(store)
    q = queues.queue("victim")
    ids = q.put(list(range(20)))
    proc = start_claimer(store_url, "victim", "hold", 10, 1.5)
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        held = json.loads(proc.stdout.readline())
        assert held == ids[:10]
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
    # the dead process's items are leased until its lease runs out; the others flow on
    rest = q.claim(20, consumer="survivor", lease_s=60)
    assert [c.id for c in rest] == ids[10:]
    q.ack(rest)
    reclaimed = wait_for(lambda: q.claim(20, consumer="survivor", lease_s=60), timeout=15,
                           what="the killed claimer's lease to expire")
    assert [c.id for c in reclaimed] == held
    assert {c.deliveries for c in reclaimed} == {2}
    q.ack(reclaimed)
    assert q.depth() == QueueDepth()
    queues.dispose()
