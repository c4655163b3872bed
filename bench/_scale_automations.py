"""Automations, a pipeline and a bare Celery app for bench_scale.py (loaded by its worker
processes: ``SHEETOPS_AUTOMATIONS=_scale_automations`` with bench/ importable)."""

from __future__ import annotations

import os
import time

from sheetops import automation
from sheetops.pipelines import from_params, iterable, pipeline


@automation("scale_sleep")
def scale_sleep(ctx):
    """I/O-bound: waits 50 ms (a remote call)."""
    time.sleep(0.05)
    return {"records_in": 1}


@automation("scale_noop")
def scale_noop(ctx):
    return None


def _spin(records: list, rounds: int = 2000) -> int:
    """CPU-bound work, about 0.1 ms per record per 1,000 rounds."""
    return sum((record["id"] * i) % 7 for record in records for i in range(rounds))


scale_pipe = pipeline("scale_pipe", source=from_params(
    lambda p: iterable([{"id": i} for i in range(int(p["n"]))])), key="id")


@scale_pipe.stage(batch_size=50, timeout_s=10)
def parse(records):
    _spin(records)
    return [{**r, "a": 1} for r in records]


@scale_pipe.stage(batch_size=50, timeout_s=10)
def enrich(records):
    _spin(records)
    return [{**r, "b": 2} for r in records]


@scale_pipe.sink(batch_size=50, timeout_s=10)
def deliver(records):
    _spin(records)


# -- bare Celery: the same no-op as a plain task with a result backend ------------------
def bare_app():
    from celery import Celery

    app = Celery("bare", broker=os.environ.get("BARE_BROKER", "redis://127.0.0.1:6379/14"),
                 backend=os.environ.get("BARE_BACKEND", "redis://127.0.0.1:6379/14"))
    app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1,
                    task_default_queue=os.environ.get("BARE_QUEUE", "bare"),
                    worker_hijack_root_logger=False)

    @app.task(name="bare.noop")
    def noop():
        return None

    return app


app = bare_app() if os.environ.get("BARE_QUEUE") else None
