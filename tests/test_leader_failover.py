"""Two real `sheetops run` schedulers on one store (SQLite file and PostgreSQL): the leader
is SIGSTOPped, the standby takes over within twice the lease's TTL, the old leader is
woken and finds itself fenced (it fires nothing and writes nothing), then it is killed;
no fire ran twice.

On SQLite a leader paused *inside* a write keeps the file's write lock until it resumes
(documented in sheetops/store/leases.py), so there the leader is paused outside one;
PostgreSQL ends a paused holder's transaction (tests/test_lease_pause.py pauses one inside
a write on purpose)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from automations_for_tests import read_starts
from conftest import fresh_pg_database
from test_cli import SHEETOPS, cli_env, probe, wait_for

from sheetops.store import Store

TTL_S = 3.0


@contextlib.contextmanager
def _scheduler(name: str, workbook, tmp_path: Path, url: str) -> Iterator[subprocess.Popen]:
    """`sheetops run` in the background, its output in ``tmp_path/<name>.log``."""
    log = (tmp_path / f"{name}.log").open("w")
    proc = subprocess.Popen(
        [SHEETOPS, "run", "--sheet", str(workbook.path), "--workers", "1"], cwd=tmp_path,
        env=cli_env(SHEETOPS_STORE_URL=url, SHEETOPS_LEASE_TTL_S=str(TTL_S)),
        stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
        log.close()


def _holder_pid(store: Store) -> int | None:
    found = store.lease_holder("scheduler")
    if not found or not found[0].startswith(socket.gethostname() + ":"):
        return None
    return int(found[0].split(":")[1])


def is_stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0] == "T"


def _pause(pid: int, url: str) -> float:
    """SIGSTOP ``pid``; on SQLite, again until it is paused holding no write lock (see the
    module docstring). Returns when it was stopped."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.time()
        wait_for(lambda: is_stopped(pid), timeout=10, interval=0.01)
        if not url.startswith("sqlite"):
            return stopped_at
        probe_db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0,
                                   isolation_level=None)
        try:
            probe_db.execute("BEGIN IMMEDIATE")
            probe_db.execute("ROLLBACK")
            return stopped_at
        except sqlite3.OperationalError:  # paused inside a write: let it finish it
            os.kill(pid, signal.SIGCONT)
            wait_for(lambda: not is_stopped(pid), timeout=10, interval=0.01)
        finally:
            probe_db.close()


def _log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()


def _failover(workbook, tmp_path: Path, url: str) -> None:
    evidence = tmp_path / "evidence"
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1)
    workbook.jobs(probe("tick", "every 1s", evidence))
    store = Store(url)
    try:
        with _scheduler("a", workbook, tmp_path, url) as a:
            wait_for(lambda: _holder_pid(store) == a.pid, timeout=60)
            with _scheduler("b", workbook, tmp_path, url) as b:
                wait_for(lambda: "standby" in _log(tmp_path, "b"), timeout=60)
                wait_for(lambda: store.count_runs(job="tick", status="ok") >= 2, timeout=30)

                stopped_at = _pause(a.pid, url)
                wait_for(lambda: _holder_pid(store) == b.pid, timeout=4 * TTL_S,
                         interval=0.05)
                failover_s = time.time() - stopped_at
                assert failover_s <= 2 * TTL_S, f"failover took {failover_s:.1f}s"
                wait_for(lambda: sum(s["ppid"] == b.pid for s in read_starts(evidence)) >= 2,
                         timeout=30)

                rows_before_wake = {r["id"] for r in store.recent_runs(10_000)}
                os.kill(a.pid, signal.SIGCONT)
                woken_at = time.time()
                wait_for(lambda: "fenced:" in _log(tmp_path, "a"), timeout=30)
                # the new leader goes on firing while the old one stands by
                fired_by_b = sum(s["ppid"] == b.pid for s in read_starts(evidence))
                wait_for(lambda: sum(s["ppid"] == b.pid for s in read_starts(evidence))
                         >= fired_by_b + 2, timeout=30)
                assert _holder_pid(store) == b.pid
                a.kill()
                a.wait()

                starts = read_starts(evidence)
                # the woken leader fired nothing (an attempt it had handed over before
                # the pause may start just after it wakes)
                late = [s for s in starts if s["ppid"] == a.pid and s["start"] > woken_at + 1]
                assert late == [], late
                # ... and wrote nothing: every run row it left predates its wake
                a_runs = {s["run_id"] for s in starts if s["ppid"] == a.pid}
                new_rows = {r["id"] for r in store.recent_runs(10_000)} - rows_before_wake
                assert not new_rows & a_runs
                log_a = _log(tmp_path, "a")
                assert log_a.count("fenced:") == 1 and "Traceback" not in log_a

                b.send_signal(signal.SIGTERM)
                assert b.wait(60) == 0, _log(tmp_path, "b")
        runs = store.recent_runs(10_000, "tick")
        fires = [r["scheduled_for"] for r in runs]
        assert len(fires) == len(set(fires)), "a fire time ran twice"
        ran = [s["run_id"] for s in read_starts(evidence)]
        assert len(ran) == len(set(ran))
        # the Runs tab shows the store's runs (written by the leader that stayed)
        tab = {r["run_id"] for r in workbook.records("Runs")}
        assert tab and tab <= {r["id"] for r in runs}
        assert "Traceback" not in _log(tmp_path, "b")
    finally:
        store.dispose()


def test_failover_on_sqlite_fences_the_woken_leader(workbook, tmp_path) -> None:
    _failover(workbook, tmp_path, f"sqlite:///{tmp_path / 'shared.db'}")


@pytest.mark.usefixtures("services")
def test_failover_on_postgresql_fences_the_woken_leader(workbook, tmp_path, services) -> None:
    services.postgres()
    with fresh_pg_database("fleet_failover") as url:
        _failover(workbook, tmp_path, url)
