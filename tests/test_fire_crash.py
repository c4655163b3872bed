"""A leader SIGKILLed at a fire, right before or right after the one fenced transaction
that commits the fire's time with its runs' ``queued`` rows: the fire is never lost and
never run twice, on the embedded default and on Celery.

Before the commit nothing of the fire is in the store, and the next leader catches it up
(``catch_up`` all) and runs it once. After the commit its runs are in the store: on
Celery the next leader adopts and publishes them and each runs once; on the embedded
default — whose attempts run in the leader's own threads, with no durable mark of having
started — the next leader records them failed (``Interrupted``), as any run its
predecessor left unfinished, and fires nothing of them again. Real ``sheetops run``
processes (and ``sheetops worker`` ones), held at the exact point by the runner's fault
point ``SHEETOPS_TEST_HOLD_AT_FIRE``.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from test_celery import _jobs, tier, with_services
from test_cli import SHEETOPS, cli_env, probe, wait_for

from sheetops.runner import HOLD_AT_FIRE_ENV
from sheetops.store import Store

FAST = {"SHEETOPS_LEASE_TTL_S": "2", "SHEETOPS_CELERY_REPUBLISH_AFTER_S": "2"}


def _tick(folder: Path) -> dict[str, str]:
    """A job fired every 10 s whose missed fires all run (catch-up ``all``), noting each
    execution in ``folder/executions.txt``."""
    return {**probe("tick", "every 10s", folder, executions=str(folder / "executions.txt")),
            "catch_up": "all"}


def _executions(folder: Path) -> Counter:
    """How many times each run id was executed."""
    path = folder / "executions.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(line.split()[0] for line in lines)


def _held(path: Path) -> list[str]:
    return wait_for(lambda: path.exists() and path.read_text().split(","), timeout=60,
                    what="the leader to reach the fire's commit")


def _seed(store: Store) -> float:
    """A last fire 25 s ago: the first leader's start catches up two or three fires (in
    one hand-off, which the fault point holds)."""
    seeded = time.time() - 25
    store.set_fire_times({"tick": seeded})
    return seeded


def _no_fire_twice(runs: list[dict]) -> None:
    twice = [t for t, n in Counter(r["scheduled_for"] for r in runs).items() if n > 1]
    assert not twice, f"fires recorded twice: {twice}"


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_leader_killed_at_a_fire_neither_loses_it_nor_runs_it_twice(
        where, workbook, tmp_path, isolated_env):
    folder = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(_tick(folder))
    store = Store(isolated_env)
    _seed(store)
    hold = tmp_path / "held"
    first = subprocess.Popen([SHEETOPS, "run", "--sheet", str(workbook.path)], cwd=tmp_path,
                             env=cli_env(**FAST, **{HOLD_AT_FIRE_ENV: f"{where}:{hold}"}),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        held = _held(hold)
    finally:
        first.kill()  # SIGKILL at the point: nothing after it happens
        first.wait()
    if where == "before":  # nothing of the fire committed
        [fire] = map(float, held)
        assert store.count_runs("tick") == 0
        assert store.job_states()["tick"]["last_fire_time"] < fire
    else:  # the fire and its runs committed together, none started
        assert {r["id"]: r["status"] for r in store.recent_runs(100, "tick")} == dict.fromkeys(
            held, "queued")
        fire = store.job_states()["tick"]["last_fire_time"]
    second = subprocess.Popen([SHEETOPS, "run", "--sheet", str(workbook.path)], cwd=tmp_path,
                              env=cli_env(**FAST), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        if where == "before":  # caught up by the next leader, once
            [run] = wait_for(lambda: [r for r in store.recent_runs(100, "tick")
                                      if r["scheduled_for"] == fire and r["status"] == "ok"],
                             timeout=60)
            assert run["trigger"] == "catch_up"
        else:  # left unfinished by the dead leader: recorded, not run again
            wait_for(lambda: all((store.run(i) or {}).get("status") == "failed"
                                 for i in held), timeout=60)
            assert {store.run(i)["error_type"] for i in held} == {"Interrupted"}
        wait_for(lambda: store.job_states()["tick"]["last_fire_time"] > fire + 5,
                 timeout=60, what="a regular fire of the next leader")
    finally:
        second.kill()
        second.wait()
    runs = store.recent_runs(1000, "tick")
    _no_fire_twice(runs)
    starts = _executions(folder)
    assert starts and all(n == 1 for n in starts.values()), starts
    if where == "after":
        assert not set(held) & set(starts)  # the dead leader started none of them
    store.dispose()


@with_services
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_celery_leader_killed_at_a_fire_leaves_it_run_exactly_once(
        services, where, tmp_path, workbook):
    folder = tmp_path / "evidence"
    _jobs(workbook, _tick(folder))
    hold = tmp_path / "held"
    with tier(services, "redis", tmp_path, workbook) as t1:
        _seed(t1.store)
        t1.worker("w1", concurrency=2)
        first = t1.start("run", "--sheet", str(workbook.path), name="scheduler-1", **FAST,
                         **{HOLD_AT_FIRE_ENV: f"{where}:{hold}"})
        held = _held(hold)
        t1.kill(first)
        if where == "before":
            [fire] = map(float, held)
            assert t1.store.count_runs("tick") == 0
            expected = None
        else:
            assert {r["status"] for r in t1.runs("tick")} == {"queued"}
            expected = set(held)
            fire = t1.store.job_states()["tick"]["last_fire_time"]
        t1.start("run", "--sheet", str(workbook.path), name="scheduler-2", **FAST)

        def ran() -> list[dict]:  # every run of the held fire (or fires) ended ok
            runs = [r for r in t1.runs("tick") if r["scheduled_for"] <= fire]
            ids = {r["id"] for r in runs}
            done = all(r["status"] == "ok" for r in runs)
            return runs if runs and done and (expected is None or ids == expected) else []

        runs = wait_for(ran, timeout=90, what="the held fire's runs to end ok")
        assert fire in {r["scheduled_for"] for r in runs}
        _no_fire_twice(t1.runs("tick"))
        wait_for(lambda: all(t1.deliveries(r["id"]) >= 1 for r in runs), timeout=30)
    starts = _executions(folder)
    assert all(starts[r["id"]] == 1 for r in runs), starts  # each ran exactly once
