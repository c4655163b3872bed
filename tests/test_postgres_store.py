"""PostgreSQL for everything in the store: `sheetops run --for` from an empty database
(created through the migrations) runs the core loop — schedules, a Run now request on
the durable queue, the status outbox, an alert by email, config history — and the tabs
show the store's rows."""

from __future__ import annotations

import pytest
from conftest import fresh_pg_database
from test_cli import cli, probe

from sheetops.store import Store
from sheetops.store import migrate as migrations
from sheetops.store.reads import config_events


def test_the_core_loop_on_postgresql_from_an_empty_database(workbook, tmp_path, services,
                                                            smtp) -> None:
    services.postgres()
    workbook.settings(refresh_interval_s=30, status_flush_interval_s=1, alert_interval_s=1)
    workbook.jobs(probe("fast", "every 1s"), probe("manual", "manual", records=4),
                  probe("failing", "every 1s", fail="permanent", message="upstream 503"))
    workbook.write("Alerts", ["name", "job", "metric", "threshold", "window", "channel"],
                   [["failing twice", "failing", "consecutive_failures", 2, "1h",
                     "email:ops@example.com"]])
    with fresh_pg_database("fleet_core") as url:
        store = Store(url)  # an empty database: created at the head revision
        try:
            assert migrations.current_revision(store.db) == migrations.HEAD
            store.request_run("manual", "ana@example.com")  # Run now, before the start
            result = cli("run", "--for", "8", "--sheet", str(workbook.path), cwd=tmp_path,
                         SHEETOPS_STORE_URL=url)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "Traceback" not in result.stderr

            runs = store.recent_runs(1000)
            assert {r["status"] for r in runs} == {"ok", "failed"}
            assert sum(r["job"] == "fast" for r in runs) >= 3
            asked = [r for r in runs if r["job"] == "manual"]
            assert [(r["trigger"], r["requested_by"], r["records_in"]) for r in asked] == [
                ("dashboard", "ana@example.com", 4)]
            # the tabs show the store: Runs newest first, Status per job, Errors
            assert [(r["run_id"], r["status"]) for r in workbook.records("Runs")] == [
                (r["id"], r["status"]) for r in runs]
            status = {r["job"]: r for r in workbook.records("Status")}
            assert status["failing"]["state"] == "failed"
            assert status["manual"]["records_in"] == 4
            errors = workbook.records("Errors")
            assert errors and {e["message"] for e in errors} == {"upstream 503"}
            assert len(errors) == len(store.recent_errors(1000))
            assert store.pending_outbox().count == 0  # every status write delivered
            # the alert went out once, by email
            mail = smtp.wait_for(1)[0]
            assert "failing twice" in mail["Subject"] and mail["To"] == "ops@example.com"
            # config history: the jobs added at the start
            events = config_events(store)
            assert {"fast", "manual", "failing"} <= set(events["job"])
        finally:
            store.dispose()


@pytest.mark.parametrize("idle_s", [0.0, 3600.0])
def test_a_pooled_connection_the_server_dropped_is_replaced_before_use(services,
                                                                       idle_s) -> None:
    """Connections are pinged only when they sat idle (not before every transaction);
    one the server dropped meanwhile (a restart, an idle timeout) is replaced — by the
    ping (``idle_s`` 0: every connection counts as idle) or, for one used a moment ago
    (3600: none does), when a batch's write finds it dead — and the write succeeds."""
    import sqlalchemy as sa

    from sheetops.store import Batch
    from sheetops.store.db import ping_when_idle

    services.postgres()
    with fresh_pg_database("pg_ping") as url:
        engine = sa.create_engine(url)
        ping_when_idle(engine, idle_s=idle_s)
        store = Store(url, engine)
        admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        try:
            run = {"id": "r1", "job": "j", "trigger": "t", "started_at": 1.0,
                   "status": "queued"}
            store.record(Batch(new_runs=[run]))
            with admin.connect() as conn:
                dropped = conn.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                    "datname = current_database() AND pid <> pg_backend_pid()").scalar()
            assert dropped >= 1
            store.record(Batch(run_updates=[{"id": "r1", "status": "ok"}]))
            assert store.run("r1")["status"] == "ok"
        finally:
            admin.dispose()
            store.dispose()
