"""Pipeline monitoring: per-stage queue depth, throughput, failures, dead letters and lag
— read from a store a real pipeline ran on, and shown on the Queues and Dead letters
pages (Streamlit AppTest), in Prometheus (scraped over HTTP), as alert metrics (mail to
a real SMTP server) and in the terminal (the real CLI in a subprocess)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from sheetops.pipelines import pipeline
from sheetops.pipelines.model import PIPELINES
from sheetops.settings import get_settings
from sheetops.store import Store
from sheetops.store import pipeline_reads as reads

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
P = "sheetops/dashboard/pages"
BAD = {7, 123}


@pytest.fixture(autouse=True)
def _forget_pipelines():
    before = dict(PIPELINES)
    yield
    PIPELINES.clear()
    PIPELINES.update(before)


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def contacts_pipeline(name: str, n: int = 300, gate: threading.Event | None = None):
    """check → deliver; records in BAD fail the check (dead letters); ``gate`` holds the
    sink until set, so its queue fills (the bottleneck)."""
    pipe = pipeline(name, source=[{"id": i, "email": f"c{i}@example.org"} for i in range(n)],
                    key="id")

    @pipe.stage(batch_size=50, retries=0)
    def check(records):
        for record in records:
            if record["id"] in BAD:
                raise ValueError(f"contact {record['id']}: no consent")
        return records

    @pipe.sink(batch_size=20)
    def deliver(records):
        if gate is not None:
            gate.wait(30)

    return pipe


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


@pytest.fixture
def store(url) -> Iterator[Store]:
    s = Store(url)
    yield s
    s.dispose()


@pytest.fixture
def held(url, store):
    """A pipeline ``held`` running in a thread with its sink held: its ``deliver``
    queue is the bottleneck until ``release()``."""
    gate = threading.Event()
    pipe = contacts_pipeline("held", gate=gate)
    thread = threading.Thread(target=pipe.run, args=(url,), kwargs={"job": "held"})
    thread.start()
    wait_for(lambda: (p := reads.pipeline_stats(store)) and p[0].stages[-1].depth >= 5,
             what="the held sink's queue to fill")

    def release():
        gate.set()
        thread.join(30)

    yield release
    release()


def test_stage_stats_show_the_bottleneck_then_counts_and_dead_letters(store, held):
    [pipe] = reads.pipeline_stats(store, order={"held": ["check", "deliver"]})
    check, deliver = pipe.stages
    assert (pipe.job, pipe.state, [s.stage for s in pipe.stages]) == (
        "held", "read", ["check", "deliver"])
    assert pipe.bottleneck is deliver and deliver.depth >= 5 and deliver.lag_s > 0
    assert check.records_in >= 50 and check.rate > 0 and deliver.records_in == 0
    later = reads.pipeline_stats(store)
    assert reads.with_rates(later, [pipe], 2.0)[0].stages[0].rate == 0.0  # none since
    held()
    [done] = reads.pipeline_stats(store)
    check, deliver = done.stages
    assert done.state == "finished" and done.bottleneck is None
    assert (check.records_in, check.records_out, check.records_failed, check.dead) == (
        300, 298, 2, 2)
    assert (deliver.records_in, deliver.records_out, deliver.depth, deliver.lag_s) == (
        298, 298, 0, None)
    store.request_run("held", requested_by="ana")
    assert [(q.queue, q.waiting) for q in reads.other_queues(store)] == [("run_requests", 1)]
