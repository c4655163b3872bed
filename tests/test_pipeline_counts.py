"""A stage's counts are kept in one row per counting thread (``pipeline_counts.shard``):
concurrent hand-offs of one stage never wait on each other's row, every reader (the
run's report, the Queues page's stage stats, Prometheus' totals) sees the sums, and the
pass's end folds them into one row per stage. On both store backends, with a real
pipeline whose stages run several threads."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, text

from sheetops.pipelines import pipeline
from sheetops.store import Store, ledger
from sheetops.store import pipeline_reads as reads
from sheetops.store import schema as t

pytestmark = [pytest.mark.each_store_backend, pytest.mark.usefixtures("forget_pipelines")]

N, BAD = 1000, {5, 500}


def threaded_pipeline(name: str):
    """check (3 threads; records in BAD fail: dead letters) → deliver (2 threads)."""
    pipe = pipeline(name, source=[{"id": i} for i in range(N)], key="id")

    @pipe.stage(batch_size=10, retries=0, concurrency=3)
    def check(records):
        if any(r["id"] in BAD for r in records):
            raise ValueError("bad record")
        return records

    @pipe.sink(batch_size=10, concurrency=2)
    def deliver(records):
        return None

    return pipe


def test_counts_from_many_threads_read_the_same_everywhere_and_fold_at_the_end(store_url):
    report = threaded_pipeline("counted").run(store_url, job="counted")
    assert report.finished
    assert report.stages["check"] == {"records_in": N, "records_out": N - len(BAD),
                                      "records_failed": len(BAD),
                                      "dead_letters": len(BAD)}
    assert report.stages["deliver"]["records_in"] == N - len(BAD)
    assert report.records_out == N - len(BAD)
    store = Store(store_url)
    try:
        [stats] = reads.pipeline_stats(store, order={"counted": ["check", "deliver"]})
        assert [(s.stage, s.records_in, s.records_out, s.records_failed, s.dead_letters)
                for s in stats.stages] == [
            ("check", N, N - len(BAD), len(BAD), len(BAD)),
            ("deliver", N - len(BAD), N - len(BAD), 0, 0)]
        assert reads.stage_totals(store)[("counted", "check")] == {
            "in": N, "out": N - len(BAD), "failed": len(BAD), "dead": len(BAD)}
        with store.engine.connect() as conn:  # folded: one row per stage and pass
            c = t.pipeline_counts.c
            rows = conn.execute(select(c.stage, c.shard, func.count()).group_by(
                c.stage, c.shard).order_by(c.stage)).all()
        assert [tuple(r) for r in rows] == [("check", "", 1), ("deliver", "", 1)]
    finally:
        store.dispose()


def test_two_transactions_counting_the_same_stage_do_not_wait_for_each_other(store_url):
    """Each holds its hand-off's transaction open: on PostgreSQL the second commits while
    the first is still open (with one shared row it waited for the first's commit)."""
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: nothing runs concurrently to wait")
    store = Store(store_url)
    try:
        ledger.create_tables(store.engine)
        with store.engine.begin() as conn:
            generation = ledger.begin_pass(conn, "shared").generation
        with store.engine.connect() as first:
            ledger.add_counts(first, "shared", generation, "s", records_in=10)
            errors: list[BaseException] = []

            def second() -> None:
                try:
                    with store.engine.begin() as conn:
                        conn.execute(text("SET LOCAL lock_timeout = '5s'"))
                        ledger.add_counts(conn, "shared", generation, "s", records_in=7)
                except BaseException as exc:
                    errors.append(exc)

            thread = threading.Thread(target=second)
            thread.start()
            thread.join(30)
            assert not errors and not thread.is_alive()
            first.commit()
        with store.engine.connect() as conn:
            assert ledger.counts(conn, "shared", generation)["s"]["records_in"] == 17
    finally:
        store.dispose()
