"""Automations and a pipeline the Celery tier's tests run on real worker processes
(``SHEETOPS_AUTOMATIONS=automations_for_tests,celery_for_tests``).

``t_cel_deliver`` is an idempotent sink: it sends each of ``params.keys`` once per run
(``ctx.deliveries`` remembers what was sent across deliveries of the attempt), appending
``key pid`` to ``params.sink``; ``t_cel_kill`` kills its own worker process every time
(a poison task); ``t_cel_gate`` runs until the test opens its gate; ``t_cel_note``
appends its run id to ``params.sink`` once it is done (after an optional gate and
sleep), so a test sees which runs ran and how often. The pipeline
``cel_copy`` reads ``params.input`` (JSON lines) through ``double`` into the SQL sink
table ``cel_delivered``, written in the hand-off transaction (exactly once).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from sheetops import automation
from sheetops.pipelines import from_params, jsonl_file, pipeline

SINK_TABLE = ("CREATE TABLE IF NOT EXISTS cel_delivered (key TEXT, value INTEGER, "
              "pid INTEGER)")


@automation("t_cel_deliver")
def deliver(ctx: Any) -> dict[str, Any]:
    """Test: send each key once, ``params.sleep`` seconds apiece, to ``params.sink``."""
    keys = [str(k) for k in ctx.params["keys"]]
    sent = 0
    for key in keys:
        if ctx.deliveries.done(key):
            continue
        time.sleep(float(ctx.params.get("sleep", 0)))
        with Path(ctx.params["sink"]).open("a", encoding="utf-8") as out:
            out.write(f"{key} {os.getpid()}\n")
        ctx.deliveries.add(key)
        sent += 1
    return {"records_in": len(keys), "records_out": len(keys), "sent_now": sent}


@automation("t_cel_kill")
def kill(ctx: Any) -> None:
    """Test: a poison task, its worker process dies every time it runs."""
    os.kill(os.getpid(), signal.SIGKILL)


@automation("t_cel_gate")
def gate(ctx: Any) -> None:
    """Test: an attempt that runs until the file ``params.gate`` exists (60 s at most)."""
    deadline = time.monotonic() + 60
    while not Path(ctx.params["gate"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@automation("t_cel_note")
def note_run(ctx: Any) -> None:
    """Test: with ``params.gate``, write the run id to ``params.started`` and wait for the
    gate (60 s at most); sleep ``params.sleep`` seconds; then append ``run id pid`` to
    ``params.sink``."""
    params = ctx.params
    if params.get("gate"):
        Path(params["started"]).write_text(ctx.run_id, encoding="utf-8")
        deadline = time.monotonic() + 60
        while not Path(params["gate"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(float(params.get("sleep", 0)))
    with Path(params["sink"]).open("a", encoding="utf-8") as out:
        out.write(f"{ctx.run_id} {os.getpid()}\n")


cel_copy = pipeline("cel_copy", source=from_params(lambda p: jsonl_file(p["input"])),
                    key="id")


@cel_copy.stage(batch_size=10, timeout_s=2.0, max_deliveries=4)
def double(records, ctx):
    time.sleep(float(ctx.params.get("slow_s", 0)))
    return [{**r, "value": r["value"] * 2, "pid": os.getpid()} for r in records]


@cel_copy.sink(batch_size=10, sql=True, timeout_s=2.0, max_deliveries=4)
def store(records, ctx):
    ctx.connection.exec_driver_sql(SINK_TABLE)
    ctx.connection.execute(
        text("INSERT INTO cel_delivered (key, value, pid) VALUES (:k, :v, :p)"),
        [{"k": str(r["id"]), "v": r["value"], "p": r["pid"]} for r in records])


#: ``cel_limited``: one rate-limited sink noting when (and in which process) each record
#: went, so a test sees a stage limit hold across worker processes.
LIMITED_RATE = "20/4 seconds"
LIMITED_TABLE = ("CREATE TABLE IF NOT EXISTS cel_limited_at (key TEXT, at DOUBLE PRECISION, "
                 "pid INTEGER)")
cel_limited = pipeline("cel_limited", source=from_params(lambda p: jsonl_file(p["input"])),
                       key="id")


@cel_limited.sink(batch_size=1, sql=True, timeout_s=2.0, max_deliveries=4,
                  rate_limit=LIMITED_RATE)
def note(records, ctx):
    ctx.connection.exec_driver_sql(LIMITED_TABLE)
    ctx.connection.execute(
        text("INSERT INTO cel_limited_at (key, at, pid) VALUES (:k, :t, :p)"),
        [{"k": str(r["id"]), "t": time.time(), "p": os.getpid()} for r in records])
