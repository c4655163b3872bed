"""A lease holder paused (SIGSTOP) *inside* a fenced write transaction: on PostgreSQL the
server ends its session after half the lease's time to live, so a standby still takes
over within twice the time to live, and the woken holder's write is not committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import fresh_pg_database
from test_cli import wait_for
from test_leader_failover import is_stopped

from sheetops.leader import Lease
from sheetops.store import Store

TTL_S = 2.0

# takes the lease, opens a fenced write, stops itself inside it; once woken, tries to
# finish the write and says how that went
HOLDER = textwrap.dedent("""
    import os, signal, sys
    from sqlalchemy import event
    from sheetops.leader import Lease
    from sheetops.store import Store
    store = Store(sys.argv[1])
    lease = Lease(store, ttl_s=float(sys.argv[2]), holder="paused-holder")
    assert lease.acquire()

    @event.listens_for(store.db.engine, "after_cursor_execute")
    def pause_after_the_fence_check(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("UPDATE LEASES"):
            print("inside", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)

    try:  # a leader's fire: the fence check, then the write, in one transaction
        store.set_fire_times({"written-by-paused-holder": 1.0}, lease.fence)
        print("committed", flush=True)
    except Exception as exc:
        print("refused", type(exc).__name__, flush=True)
""")



@pytest.mark.usefixtures("services")
def test_a_holder_paused_inside_a_write_does_not_block_failover_on_postgresql(
        services, tmp_path) -> None:
    services.postgres()
    with fresh_pg_database("lease_pause") as url:
        store = Store(url)
        out = tmp_path / "holder.out"
        with out.open("w") as sink:
            holder = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(TTL_S)],
                                      stdout=sink, stderr=subprocess.STDOUT, text=True)
        try:
            wait_for(lambda: "inside" in out.read_text(), timeout=60, what="the holder's write")
            wait_for(lambda: is_stopped(holder.pid), timeout=10, what="the holder to stop")
            stopped_at = time.time()
            standby = Lease(store, ttl_s=TTL_S, holder="standby")
            wait_for(standby.acquire, timeout=6 * TTL_S, interval=0.05,
                     what="the standby to take the lease")
            took_s = time.time() - stopped_at
            assert took_s <= 2 * TTL_S, f"failover took {took_s:.1f}s"
            assert store.lease_holder("scheduler")[0] == "standby"

            os.kill(holder.pid, signal.SIGCONT)
            assert holder.wait(60) == 0, out.read_text()
            assert "refused StoreUnavailable" in out.read_text(), out.read_text()
            assert "written-by-paused-holder" not in store.job_states()
        finally:
            if holder.poll() is None:
                os.kill(holder.pid, signal.SIGCONT)
                holder.kill()
            store.dispose()
