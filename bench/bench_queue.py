"""Throughput of the durable queue: items a second through put + claim + ack in batches
of 500 (a steady backlog of 10 batches in the queue), on the embedded SQLite queue next
to a plain ``collections.deque`` doing the same moves in memory, and on PostgreSQL when
it is reachable at 127.0.0.1:5432. Also the pipeline hand-off: claim a batch from one
queue, then put its items on the next and ack, in one transaction.

    python bench/bench_queue.py            # 100,000 items (SQLite), 50,000 (PostgreSQL)
    python bench/bench_queue.py --full     # 1,000,000 and 200,000

The goals are for an otherwise idle 2-core machine; the work is CPU-bound (JSON, the
driver, the database), so a busy machine lowers every figure alike: compare the ratio,
and the SQLite figure per CPU second of the process.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import time
from collections import deque
from pathlib import Path

from _common import figure, quiet

from sheetops.store import Store
from sheetops.store.queue_sql import Queues
from sheetops.testing.postgres import fresh_pg_database

BATCH = 500
BACKLOG_BATCHES = 10


def payloads(start: int) -> list[dict]:
    return [{"id": start + i, "email": f"user{start + i}@example.com"} for i in range(BATCH)]


def plain_deque(n: int) -> float:
    items: deque = deque()
    for b in range(BACKLOG_BATCHES):
        items.extend(payloads(b * BATCH))
    t0 = time.perf_counter()
    for b in range(n // BATCH):
        items.extend(payloads(b * BATCH))
        claimed = [items.popleft() for _ in range(BATCH)]
        del claimed
    return n / (time.perf_counter() - t0)


def durable(url: str, n: int) -> tuple[float, float, float]:
    """(put + claim + ack items/s, the same per CPU second of this process, hand-off
    items/s) on the store at ``url``."""
    store = Store(url)
    queues = Queues(store)
    q = queues.queue("bench")
    for b in range(BACKLOG_BATCHES):
        q.put(payloads(b * BATCH), keys=[str(b * BATCH + i) for i in range(BATCH)])
    t0, cpu0 = time.perf_counter(), time.process_time()
    for b in range(n // BATCH):
        q.put(payloads(b * BATCH), keys=[str(b * BATCH + i) for i in range(BATCH)])
        q.ack(q.claim(BATCH, consumer="bench", lease_s=60))
    cycle = n / (time.perf_counter() - t0)
    per_cpu = n / (time.process_time() - cpu0)

    moved = 0
    t0 = time.perf_counter()
    while claims := q.claim(BATCH, consumer="bench", lease_s=60):
        with queues.transaction() as tx:
            tx.put("next", [c.payload for c in claims], keys=[c.key for c in claims])
            tx.ack(claims)
        moved += len(claims)
    handoff = moved / (time.perf_counter() - t0)
    queues.dispose()
    store.dispose()
    return cycle, per_cpu, handoff


def postgres_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


def on_postgres(n: int) -> tuple[float, float, float] | None:
    if not postgres_reachable():
        print("PostgreSQL is not reachable at 127.0.0.1:5432: its figures are skipped")
        return None
    with fresh_pg_database("sheetops_bench") as url:
        return durable(url, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000,000 / 200,000 items")
    parser.add_argument("--items", type=int, help="items through SQLite (PostgreSQL: half)")
    args = parser.parse_args()
    quiet()
    n = args.items or (1_000_000 if args.full else 100_000)
    n_pg = n // 2 if args.items else (200_000 if args.full else 50_000)

    memory = plain_deque(n)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_cycle, sqlite_cpu, sqlite_handoff = durable(
            f"sqlite:///{Path(tmp) / 'queue.db'}", n)
    figure("queue_sqlite_put_claim_ack", sqlite_cycle, "items/s", ">= 10000")
    figure("queue_sqlite_put_claim_ack_per_cpu_s", sqlite_cpu, "items/cpu-s",
           "- (what a busy machine's wall clock hides)")
    figure("queue_deque_put_claim_ack", memory, "items/s")
    figure("queue_sqlite_vs_deque", sqlite_cycle / memory, "ratio",
           "- (durability's price, for scale)")
    figure("queue_sqlite_handoff", sqlite_handoff, "items/s", ">= 5000")
    pg = on_postgres(n_pg)
    if pg:
        figure("queue_postgres_put_claim_ack", pg[0], "items/s", ">= 5000")
        figure("queue_postgres_handoff", pg[2], "items/s", ">= 2500")


if __name__ == "__main__":
    main()
