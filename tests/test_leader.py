"""One active scheduler per store: a second `sheetops run` is a hot standby that fires
nothing until the active one stops, then takes over."""

from __future__ import annotations

import time

import pytest
from conftest import wait_for
from test_cli import probe

from sheetops.engine import Engine, EngineOptions
from sheetops.leader import Lease
from sheetops.store import Batch, Store
from sheetops.store.leases import Fenced


def test_lease_is_exclusive_until_released_or_expired(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    # held for longer than any stall of a loaded machine between the steps below
    first = Lease(store, ttl_s=60, holder="host-a:1:x")
    second = Lease(store, ttl_s=60, holder="host-b:2:y")
    assert first.acquire() and not second.acquire()
    assert second.current_holder() == "host-a:1:x"
    first.release()
    assert second.acquire() and not first.acquire()
    second.ttl_s = 0.5
    assert second.keep(force=True)  # the last renewal, for 0.5 s
    wait_for(first.acquire, timeout=5)  # second stops renewing: the lease expires


def test_a_dead_local_holder_is_replaced_at_once(tmp_path) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    dead = Lease(store, ttl_s=60, holder=f"{socket.gethostname()}:{gone.pid}:dead")
    assert dead.acquire()
    assert Lease(store, ttl_s=60).acquire()  # no need to wait 60 s for a dead process


def test_standby_fires_nothing_then_takes_over(workbook, tmp_path) -> None:
    workbook.jobs({"job": "tick", "automation": "heartbeat", "schedule": "every 1s"})
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    # a lease far longer than the test: a loaded machine stalling the active's renewal
    # for a few seconds must not hand it over early, and the take-over below must come
    # from the release at stop, not from the lease running out
    ttl_s = 60
    options = EngineOptions(workers=1, lease_ttl_s=ttl_s, control_interval_s=0.2)
    active = Engine(workbook.sheet, Store(url), options)
    standby = Engine(workbook.sheet, Store(url), options)
    active.start()
    try:
        standby.start()
        assert active.is_leader and not standby.is_leader
        wait_for(lambda: active.store.count_runs(job="tick") >= 2)
        assert not standby.scheduler.aps.running and standby.scheduler.fired == 0
    finally:
        active.stop()
    try:
        runs_before = standby.store.count_runs(job="tick")
        wait_for(lambda: standby.is_leader, timeout=ttl_s / 2)  # released at stop
        # its own fires (a fire missed during the hand-over runs once as a catch-up,
        # which `fired` does not count), and their runs in the store
        wait_for(lambda: standby.scheduler.fired >= 2, what="two fires of the new leader")
        wait_for(lambda: standby.store.count_runs(job="tick") >= runs_before + 2)
    finally:
        standby.stop()
    assert Lease(Store(url)).acquire()  # the last one released it on stop


def test_taking_the_lease_back_keeps_own_runs_and_fires_nothing_twice(workbook, tmp_path):
    """A scheduler that lost its lease (another took it while this one was paused) and
    then takes it back must not record its own still-running run as Interrupted, and must
    not replay the fires the other scheduler already ran."""
    release = tmp_path / "release-long"  # running until the lease is taken back
    workbook.jobs(probe("long", "manual", tmp_path / "long", hold_until=str(release)),
                  probe("tick", "every 1s", tmp_path / "tick"))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = Store(url)
    engine = Engine(workbook.sheet, store,
                    EngineOptions(workers=2, lease_ttl_s=0.6, control_interval_s=0.05))
    engine.start()
    try:
        long_run = engine.scheduler.run_now("long")
        wait_for(lambda: (store.run(long_run) or {}).get("status") == "running")
        other = Lease(Store(url), ttl_s=1.5, holder="elsewhere:1:x")
        store.release_lease("scheduler", engine.lease.holder)  # as if it had expired
        assert other.acquire()
        wait_for(lambda: not engine.is_leader)
        lost_at = time.time()
        # fires of "tick" fall due meanwhile: the other scheduler's to run (and note)
        wait_for(lambda: time.time() - lost_at > 1.2, timeout=5)
        store.set_fire_times({"tick": time.time()})
        other.release()
        wait_for(lambda: engine.is_leader)
        taken_back_at = time.time()
        assert (store.run(long_run) or {}).get("status") == "running"  # still its own
        release.touch()
        record = wait_for(lambda: (store.run(long_run) or {}).get("status") != "running"
                          and store.run(long_run), timeout=30)
        engine.runner.flush()
        assert record["status"] == "ok", record
        assert [e for e in store.recent_errors(50) if e["error_type"] == "Interrupted"] == []
        ticks = len(store.recent_runs(1000, "tick"))
        wait_for(lambda: engine.runner.flush() >= 0 and
                 len(store.recent_runs(1000, "tick")) >= ticks + 2, timeout=30)
        runs = store.recent_runs(1000, "tick")
        fires = [r["scheduled_for"] for r in runs]
        assert len(fires) == len(set(fires)), "a fire time ran twice"
        # no replay of the paused fires: at most one catch-up, none before the noted time
        assert sum(r["trigger"] == "catch_up" and r["started_at"] >= taken_back_at
                   for r in runs) <= 1
    finally:
        release.touch()  # also after a failed assertion: stop() waits for the run
        engine.stop()
        store.dispose()


@pytest.mark.each_store_backend
def test_each_holder_gets_a_higher_epoch_and_a_stale_one_writes_nothing(store_url) -> None:
    store = Store(store_url)
    try:
        old = Lease(store, ttl_s=60, holder="host-a:1:x")
        new = Lease(store, ttl_s=30, holder="host-b:2:y")
        assert old.acquire() and not new.acquire()  # (a short lease could expire between)
        stale = old.fence
        old.ttl_s = 0.3
        assert old.keep(force=True)  # its last renewal, for 0.3 s
        wait_for(lambda: new.acquire(), timeout=5)  # the old one paused past its TTL
        assert new.epoch > stale.epoch
        assert not old.keep(force=True) and not old.held  # renewing is refused
        run = {"id": "r1", "job": "j", "trigger": "schedule", "scheduled_for": 1.0,
               "started_at": 1.0, "status": "queued"}
        with pytest.raises(Fenced):
            store.record(Batch(new_runs=[run], outbox=[("Runs", "")], fence=stale))
        with pytest.raises(Fenced):
            store.set_fire_times({"j": 5.0}, stale)
        assert store.count_runs() == 0 and "j" not in store.job_states()
        store.record(Batch(new_runs=[run], fence=new.fence))
        store.set_fire_times({"j": 5.0}, new.fence)
        assert store.count_runs() == 1 and store.job_states()["j"]["last_fire_time"] == 5.0
        new.release()  # the row and its epoch stay: the next holder goes higher still
        assert old.acquire() and old.epoch > new.epoch
    finally:
        store.dispose()


@pytest.mark.each_store_backend
def test_a_takeover_waits_for_a_fenced_write_in_progress(store_url) -> None:
    """The fence check locks the lease row: a takeover that starts while the holder's
    write is open commits after it, so the write is never interleaved with a new leader."""
    import threading

    from sheetops.store import schema as t
    from sheetops.store.leases import check_fence

    store = Store(store_url)
    other = Store(store_url)
    try:
        leader = Lease(store, ttl_s=0.2, holder="host-a:1:x")
        assert leader.acquire()
        wait_for(lambda: time.time() > leader._renewed_at + 0.3, timeout=5)  # expired
        taken: list[float] = []
        with store.engine.begin() as conn:
            check_fence(conn, leader.fence)  # the old leader's write begins
            thread = threading.Thread(target=lambda: taken.append(
                Lease(other, ttl_s=30, holder="host-b:2:y").acquire() and time.time()))
            thread.start()
            thread.join(0.5)
            assert not taken, "the takeover did not wait for the open write"
            conn.execute(t.job_state.insert().values(job="j", last_fire_time=1.0))
            committed_at = time.time()
        thread.join(30)
        assert taken and taken[0] >= committed_at
    finally:
        store.dispose()
        other.dispose()
