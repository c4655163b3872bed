"""The SQLite queue checkpoints its write-ahead log from a thread of its own: writers
never wait for a checkpoint's fsyncs, the WAL stays bounded while they write, and a
commit is as durable as before (a SIGKILL loses nothing committed)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import wait_for

from sheetops.pipelines import batch as batches
from sheetops.store.db import make_engine
from sheetops.store.queue import JsonText
from sheetops.store.queue_sql import Queues

BIG = JsonText('"' + "x" * 200_000 + '"')


def test_the_wal_is_checkpointed_by_the_thread_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    queues = Queues(make_engine(f"sqlite:///{path}"))
    try:
        assert queues.wal is not None
        queues.wal.checkpoint_bytes = 1 << 20
        queues.wal.restart_bytes = 2 << 20
        with queues.engine.connect() as conn:  # the writers leave it to the thread
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        queue = queues.queue("big")
        largest = 0
        for _ in range(150):  # 90 MB through the queue, a few items at a time
            queue.put([BIG] * 3)
            queue.ack(queue.claim(5, consumer="w", lease_s=30))
            largest = max(largest, os.path.getsize(f"{path}-wal"))
        wait_for(lambda: queues.wal.restarts > 0, what="a WAL restart")
        assert queues.wal.checkpoints > queues.wal.restarts
        # bounded by a few times the restart mark, not by what was written
        assert largest < 16 << 20, largest
        assert queue.depth().waiting == 0
    finally:
        queues.dispose()


CHILD = textwrap.dedent("""
    import sys, time
    from sheetops.store.db import make_engine
    from sheetops.store.queue import JsonText
    from sheetops.store.queue_sql import Queues
    queues = Queues(make_engine("sqlite:///" + sys.argv[1]))
    queue = queues.queue("big")
    for n in range(40):
        queue.put([JsonText('"' + "y" * 100_000 + '"')], keys=[str(n)])
    print("put", flush=True)
    time.sleep(600)
""")


def test_committed_items_survive_a_sigkill_before_any_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "put"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    conn = sqlite3.connect(path)
    try:
        keys = [k for (k,) in conn.execute("SELECT key FROM queue_items ORDER BY id")]
    finally:
        conn.close()
    assert keys == [str(n) for n in range(40)]


def test_a_batch_keyed_by_its_field_lists_no_keys_and_decodes_with_them() -> None:
    records = [{"id": 7, "v": "a"}, {"id": 9, "v": "b"}]
    payload = batches.encode(None, records, field="id")
    assert '"k"' not in payload
    assert batches.decode_item(payload) == (["7", "9"], records, False)
    assert batches.decode_item(batches.encode(["x", "y"], records, split=True)) == (
        ["x", "y"], records, True)
    assert batches.item_key(batches.end_keys("id", records)) == "7…9"
    assert batches.item_key(batches.end_keys("id", records[:1])) == "7"


def test_a_reader_that_keeps_the_wal_from_starting_over_stalls_writers_once(
        tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    queues = Queues(make_engine(f"sqlite:///{path}"))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        assert queues.wal is not None
        queues.wal.checkpoint_bytes = 256 << 10
        queues.wal.restart_bytes = 1 << 20
        queues.wal.hold_s = 0.5
        queue = queues.queue("big")
        queue.put([BIG])
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM queue_items").fetchone()  # a snapshot held
        started = time.monotonic()
        for _ in range(40):  # 8 MB: past twice the restart mark, which cannot happen
            queue.put([BIG])
        assert time.monotonic() - started < 20  # the writers waited once, not 40 times
        assert queues.wal.restarts == 0
        reader.execute("COMMIT")

        def started_over() -> bool:  # writing on, the WAL holds little again
            queue.put([BIG])
            _busy, frames, _done = reader.execute(
                "PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return frames * 4096 < (1 << 20)

        wait_for(started_over, what="the WAL to start over once the reader left")
        assert queue.depth().waiting > 41
    finally:
        reader.close()
        queues.dispose()
