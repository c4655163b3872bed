"""Make the stores written by sheetops 0.1.0 that tests/test_migrations.py upgrades.

Run it with the 0.1.0 release's own interpreter and code (not this tree's), from a
directory outside this tree, so that every row is written by the old code:

    cd /tmp && /path/to/sheetops-0.1.0/.venv/bin/python \\
        /path/to/this/tests/data/make_store_0_1_0.py /path/to/this/tests/data

It writes ``store_0_1_0.sqlite`` and, when PostgreSQL answers on 127.0.0.1:5432,
``store_0_1_0.pg.sql`` (``pg_dump --no-owner --inserts`` of a database filled the same
way). Contents: the dashboard fixture's runs, attempts, errors, job states, problems,
config events, gauges, outbox rows and published jobs (``fill_realistic``), a dry run,
a Run now request, the scheduler lease, a delivery, the alert state and events of two
real evaluations (``add_alerts``), and the hourly/daily rollups refreshed at ``NOW``.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import sheetops
from sheetops.store import Batch, Store
from sheetops.store.deliveries import Deliveries
from sheetops.store.rollups import refresh_rollups
from sheetops.testing.http import HttpServer
from sheetops.testing.store_fill import add_alerts, fill_realistic, make_run

NOW = 1_790_000_000.0
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def fill(store: Store) -> None:
    fill_realistic(store, NOW)
    dry = make_run("send-digest", NOW - 3600.0, "ok", 0.25, trigger="dashboard")
    dry.update(id="dry-run-0001", dry_run=True, requested_by="ana")
    store.record(Batch(new_runs=[dry], outbox=[("Runs", "")]))
    store.request_run("fetch-orders", "ana", dry_run=False)
    store.try_lease("scheduler", "host-1:4242", 3600.0)
    Deliveries(store.url, "dry-run-0001").add("ops@example.com")
    with HttpServer() as server:
        add_alerts(store, NOW, server)
    refresh_rollups(store, NOW)


def main(out: Path) -> None:
    print("sheetops", sheetops.__file__)
    path = out / "store_0_1_0.sqlite"
    path.unlink(missing_ok=True)
    store = Store(f"sqlite:///{path}")
    fill(store)
    with store.engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    with __import__("sqlite3").connect(path) as conn:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
    print("wrote", path, path.stat().st_size, "bytes")
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
        name = f"sheetops_fixture_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # no PostgreSQL here: the SQLite fixture alone
        print("no PostgreSQL dump:", exc)
        return
    try:
        store = Store(f"{PG}/{name}")
        fill(store)
        store.dispose()
        dump = subprocess.run(
            ["pg_dump", "--no-owner", "--no-privileges", "--inserts", "-h", "127.0.0.1",
             "-U", "postgres", name], check=True, capture_output=True, text=True).stdout
        (out / "store_0_1_0.pg.sql").write_text(dump)
        print("wrote", out / "store_0_1_0.pg.sql", len(dump), "bytes")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
