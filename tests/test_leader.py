"""One active scheduler per store: a second `sheetops run` is a hot standby that fires
nothing until the active one stops, then takes over."""

from __future__ import annotations

import time

from conftest import wait_for
from test_cli import probe

from sheetops.engine import Engine, EngineOptions
from sheetops.leader import Lease
from sheetops.store import Store


def test_lease_is_exclusive_until_released_or_expired(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    first = Lease(store, ttl_s=0.5, holder="host-a:1:x")
    second = Lease(store, ttl_s=0.5, holder="host-b:2:y")
    assert first.acquire() and not second.acquire()
    assert second.current_holder() == "host-a:1:x"
    first.release()
    assert second.acquire() and not first.acquire()
    time.sleep(0.6)  # second stops renewing: the lease expires
    assert first.acquire()


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
    options = EngineOptions(workers=1, lease_ttl_s=3, control_interval_s=0.2)
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
        wait_for(lambda: standby.is_leader, timeout=5)  # released at stop: no TTL wait
        wait_for(lambda: standby.store.count_runs(job="tick") > runs_before + 1)
        assert standby.scheduler.fired >= 2
    finally:
        standby.stop()
    assert Lease(Store(url)).acquire()  # the last one released it on stop


def test_taking_the_lease_back_keeps_own_runs_and_fires_nothing_twice(workbook, tmp_path):
    """A scheduler that lost its lease (another took it while this one was paused) and
    then takes it back must not record its own still-running run as Interrupted, and must
    not replay the fires the other scheduler already ran."""
    from sheetops.engine import Engine, EngineOptions
    from sheetops.leader import Lease
    from sheetops.store import Store

    workbook.jobs(probe("long", "manual", tmp_path / "long", sleep=2.5),
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
        wait_for(lambda: not engine.is_leader, timeout=5)
        time.sleep(1.2)  # fires of "tick" are due meanwhile: the other scheduler's to run
        store.set_fire_times({"tick": time.time()})  # what the other scheduler noted
        fired_before = engine.scheduler.fired
        other.release()
        wait_for(lambda: engine.is_leader, timeout=5)
        record = wait_for(lambda: (store.run(long_run) or {}).get("status") != "running"
                          and store.run(long_run), timeout=10)
        engine.runner.flush()
        assert record["status"] == "ok", record
        assert [e for e in store.recent_errors(50) if e["error_type"] == "Interrupted"] == []
        assert engine.scheduler.fired - fired_before <= 2  # no replay of the paused fires
        time.sleep(1.5)
        engine.runner.flush()
        fires = [r["scheduled_for"] for r in store.recent_runs(100, "tick")]
        assert len(fires) == len(set(fires)), "a fire time ran twice"
    finally:
        engine.stop()
        store.dispose()
