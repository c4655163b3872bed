"""Pipelines the pipeline tests run in child processes (and in-process).

``python tests/pipelines_for_tests.py KIND STORE_URL INPUT`` runs the pipeline of
``KIND`` on ``STORE_URL`` reading the JSON-lines file ``INPUT`` until it is drained,
then exits 0 (a SIGKILL of it, or by it, exits otherwise). Imported with
``SHEETOPS_AUTOMATIONS=pipelines_for_tests`` the ``welcome_test`` pipeline is a job.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from sqlalchemy import text

from sheetops.pipelines import Pipeline, jsonl_file, pipeline

SINK_TABLE = "CREATE TABLE IF NOT EXISTS delivered (key TEXT, stage TEXT, value INTEGER)"


def copy_pipeline(name: str, path: str, *, batch_size: int = 100,
                  kill_key: str | None = None, slow_s: float = 0.0,
                  processes: int = 0) -> Pipeline:
    """validate → double → store (a SQL sink writing table ``delivered``).

    ``kill_key``: the double stage SIGKILLs its own process on that record.
    ``slow_s``: the double stage sleeps this long per batch.
    ``processes``: every stage worked by that many forked processes."""
    pipe = pipeline(name, source=jsonl_file(path), key="id")

    @pipe.stage(batch_size=batch_size, retries=1, backoff_initial_s=0.01, timeout_s=1.0,
                max_deliveries=3, processes=processes)
    def validate(records):
        for record in records:
            if not isinstance(record.get("value"), int):
                raise ValueError(f"record {record.get('id')}: value must be a whole number")
        return records

    @pipe.stage(batch_size=batch_size, timeout_s=1.0, max_deliveries=3, processes=processes)
    def double(records):
        if slow_s:
            time.sleep(slow_s)
        for record in records:
            if kill_key is not None and str(record["id"]) == kill_key:
                os.kill(os.getpid(), signal.SIGKILL)
        return [{**r, "value": r["value"] * 2} for r in records]

    @pipe.sink(batch_size=batch_size, sql=True, timeout_s=1.0, max_deliveries=3,
               processes=processes)
    def store(records, ctx):
        ctx.connection.exec_driver_sql(SINK_TABLE)
        ctx.connection.execute(
            text("INSERT INTO delivered (key, stage, value) VALUES (:k, 'store', :v)"),
            [{"k": str(r["id"]), "v": r["value"]} for r in records])

    return pipe


def held_pipeline(name: str, path: str, marker: str) -> Pipeline:
    """pass → hang → sizes (a SQL sink noting each batch's first key and size).

    ``hang`` stops, the first time (no file ``marker`` yet), on the batch holding key 20
    until its process is killed, writing its pid to ``marker``: the batches after it
    then only wait in the process, handed on but not started."""
    pipe = pipeline(name, source=jsonl_file(path), key="id")
    pipe.stage(lambda records: records, name="pass", batch_size=10, timeout_s=5.0)

    @pipe.stage(batch_size=10, timeout_s=5.0)
    def hang(records):
        if any(r["id"] == 20 for r in records) and not os.path.exists(marker):
            with open(marker, "w") as out:
                out.write(str(os.getpid()))
            time.sleep(60)
        return records

    @pipe.sink(batch_size=10, sql=True, timeout_s=5.0)
    def sizes(records, ctx):
        ctx.connection.exec_driver_sql(SIZES_TABLE)
        ctx.connection.execute(text("INSERT INTO sizes (first, n) VALUES (:f, :n)"),
                               {"f": records[0]["id"], "n": len(records)})

    return pipe


SIZES_TABLE = "CREATE TABLE IF NOT EXISTS sizes (first INTEGER, n INTEGER)"


def main() -> None:
    kind, store_url, path = sys.argv[1:4]
    processes = int(os.environ.get("PROCESSES", "0"))
    if kind == "copy":
        pipe = copy_pipeline("copy", path, processes=processes)
    elif kind == "killer":
        pipe = copy_pipeline("killer", path, batch_size=8, kill_key=os.environ["KILL_KEY"],
                             processes=processes)
    elif kind == "held":
        pipe = held_pipeline("held", path, os.environ["MARKER"])
    elif kind == "slow":
        pipe = copy_pipeline("slow", path, batch_size=50, slow_s=0.002)
    else:
        raise SystemExit(f"unknown kind {kind}")
    report = pipe.run(store_url, lease_grace_s=0.3)
    if kind == "slow":
        import resource

        print("maxrss_kb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    print("finished" if report.finished else "unfinished", report.records_out, flush=True)


if __name__ == "__main__":
    main()
