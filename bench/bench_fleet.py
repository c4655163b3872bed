"""What the fenced leader and the store's commit rate cost, for docs/scaling.md:

* runs recorded per second through ``RunStore.record`` in batches of 500 (the
  recorder's flush) and in batches of 1 (one commit per run: the floor when every
  worker records its own attempts), on SQLite and on PostgreSQL when it is reachable;
* the fence: the same batches written under the leader's epoch vs unfenced
  (goal >= 0.8: the check costs at most a fifth), and fenced fires per second (one
  transaction per fire of a schedule group).

    python bench/bench_fleet.py            # 50,000 runs batched, 2,000 one by one
    python bench/bench_fleet.py --full     # 500,000 and 20,000
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

from _common import figure, quiet

from sheetops.leader import Lease
from sheetops.store import Batch, Store
from sheetops.testing.postgres import fresh_pg_database


def _run(i: int, prefix: str) -> dict:
    now = time.time()
    return {"id": f"{prefix}{i:09d}", "job": f"j{i % 100}", "trigger": "schedule",
            "scheduled_for": now, "started_at": now, "finished_at": now, "status": "ok",
            "attempts": 1, "duration_s": 0.001}


def record_rates(store: Store, n: int, batch: int, rounds: int = 5) -> tuple[float, float]:
    """Runs a second recorded unfenced and fenced, in alternating rounds (so neither
    gets the emptier table)."""
    lease = Lease(store, holder=f"bench:{uuid.uuid4().hex[:6]}", ttl_s=600)
    assert lease.acquire()
    spent = {None: 0.0, lease.fence: 0.0}
    per_round = max(batch, n // rounds // batch * batch)
    for _ in range(rounds):
        for fence in spent:
            prefix = uuid.uuid4().hex[:8]
            t0 = time.perf_counter()
            for start in range(0, per_round, batch):
                store.record(Batch(new_runs=[_run(i, prefix)
                                             for i in range(start, start + batch)],
                                   fence=fence))
            spent[fence] += time.perf_counter() - t0
    lease.release()
    unfenced, fenced = (per_round * rounds / spent[f] for f in spent)
    return unfenced, fenced


def fire_rate(store: Store, n: int) -> float:
    lease = Lease(store, holder=f"bench:{uuid.uuid4().hex[:6]}", ttl_s=600)
    assert lease.acquire()
    t0 = time.perf_counter()
    for i in range(n):
        store.set_fire_times({f"group-{i % 10}": float(i)}, lease.fence)
    elapsed = time.perf_counter() - t0
    lease.release()
    return n / elapsed


def stores() -> Iterator[tuple[str, Store]]:
    """A fresh SQLite store, then a fresh PostgreSQL database (when reachable)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        yield "sqlite", store
        store.dispose()
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
    except OSError:
        print("PostgreSQL is not reachable at 127.0.0.1:5432: its figures are skipped")
        return
    with fresh_pg_database("bench_fleet") as url:
        store = Store(url)
        yield "postgres", store
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    batched, single = (500_000, 20_000) if args.full else (50_000, 2_000)
    quiet()
    for kind, store in stores():
        unfenced, fenced = record_rates(store, batched, 500)
        one_by_one = record_rates(store, single, 1)[1]
        figure(f"{kind}_recorded_runs_per_s_batch500", fenced, "runs/s")
        figure(f"{kind}_recorded_runs_per_s_batch1", one_by_one, "runs/s (commits/s)")
        figure(f"{kind}_fenced_vs_unfenced_batch500", fenced / unfenced, "x", ">= 0.8")
        figure(f"{kind}_fenced_fires_per_s", fire_rate(store, single), "fires/s")


if __name__ == "__main__":
    main()
