"""Schema migrations: a store written by sheetops 0.1.0 upgrades in place with nothing
lost, on SQLite and PostgreSQL; ``sheetops migrate`` is idempotent; a store newer than
the code is refused in one sentence; the dashboard never migrates.

The 0.1.0 stores are fixtures made by the 0.1.0 code itself (tests/data/make_store_0_1_0.py,
run with that release's interpreter): ``store_0_1_0.sqlite`` and ``store_0_1_0.pg.sql``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import TESTS_DIR, fresh_pg_database

from sheetops.dashboard import queries as q
from sheetops.store import Store, StoreNeedsMigration, StoreTooNew, schema
from sheetops.store import migrate as migrations

DATA = TESTS_DIR / "data"
NOW = 1_790_000_000.0  # the clock make_store_0_1_0.py filled the stores with
SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
#: What the 0.1.0 fixtures hold, table by table.
OLD_ROWS = {"runs": 24, "attempts": 3, "errors": 5, "job_state": 3, "outbox": 5,
            "run_requests": 1, "config_problems": 2, "config_events": 2, "gauges": 5,
            "job_config": 3, "leases": 1, "deliveries": 1, "alert_state": 3,
            "alert_events": 8}


#: 0.1.0's tables that migrations retire (their rows move elsewhere; see the test).
RETIRED = ("outbox",)


def _counts(engine: sa.Engine, tables: Iterable[str] = OLD_ROWS) -> dict[str, int]:
    with engine.connect() as conn:
        return {name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
                for name in tables}


def _old_outbox(engine: sa.Engine) -> list[tuple[str, str, float]]:
    """The pending ``(tab, key, created_at)`` marks of a 0.1.0 outbox, after adding one
    delivered mark (which has done its job and must not come back)."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO outbox (tab, key, created_at, delivered_at) "
                             "VALUES ('Runs', '', :t, :t)"), {"t": NOW - 60})
        return [tuple(r) for r in conn.execute(sa.text(
            "SELECT tab, key, created_at FROM outbox WHERE delivered_at IS NULL "
            "ORDER BY id"))]


@pytest.fixture
def old_sqlite(tmp_path: Path) -> str:
    """A copy of the SQLite store 0.1.0 wrote; its URL."""
    path = tmp_path / "old.db"
    shutil.copy(DATA / "store_0_1_0.sqlite", path)
    return f"sqlite:///{path}"


@pytest.fixture
def old_postgres(services) -> Iterator[str]:
    """A fresh PostgreSQL database loaded from the 0.1.0 dump; its URL."""
    services.postgres()
    dump = "\n".join(line for line in (DATA / "store_0_1_0.pg.sql").read_text().splitlines()
                     if not line.startswith("\\"))  # psql meta-commands (\restrict)
    with fresh_pg_database("sheetops_mig") as url:
        loader = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with loader.connect() as conn:
            conn.connection.dbapi_connection.execute(dump)
        loader.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store_url(request) -> str:
    return request.getfixturevalue("old_sqlite" if request.param == "sqlite"
                                   else "old_postgres")


def test_revision_list_matches_the_scripts() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    walked = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert tuple(walked) == migrations.REVISIONS
    assert script.get_current_head() == migrations.HEAD


def test_an_old_store_upgrades_in_place_and_every_row_reads_back(old_store_url) -> None:
    old = sa.create_engine(old_store_url)
    assert _counts(old) == OLD_ROWS
    marks = _old_outbox(old)
    assert len(marks) == OLD_ROWS["outbox"]
    old.dispose()
    store = Store(old_store_url)  # `run`, `run-job` and `demo` open it like this
    try:
        assert migrations.current_revision(store.db) == migrations.HEAD
        kept = [name for name in OLD_ROWS if name not in RETIRED]
        assert _counts(store.engine, kept) == {n: OLD_ROWS[n] for n in kept}  # nothing lost
        # the outbox's pending marks are on the durable queue, as old as they were
        assert not sa.inspect(store.engine).has_table("outbox")
        pending = store.pending_outbox()
        assert pending.by_tab == {"Runs": 2, "Status": 1, "Errors": 1, "Validation": 1}
        assert pending.oldest_at == pytest.approx(min(m[2] for m in marks))
        # what the CLI and the status tabs read
        runs = store.recent_runs(100)
        assert len(runs) == OLD_ROWS["runs"]
        dry = store.run("dry-run-0001")
        assert dry["dry_run"] and dry["requested_by"] == "ana"
        failed = next(r for r in runs if r["status"] == "failed" and r["attempts"] == 3)
        assert [a["attempt"] for a in store.attempts_of(failed["id"])] == [1, 2, 3]
        assert len(store.recent_errors(100)) == OLD_ROWS["errors"]
        assert store.job_states()["fetch-orders"]["consecutive_failures"] == 2
        # what the dashboard reads
        assert len(q.runs_list(store, limit=1000)) == OLD_ROWS["runs"]
        assert len(q.errors_list(store, limit=1000)) == OLD_ROWS["errors"]
        assert len(q.attempts_of(store, [failed["id"]])) == 3
        assert len(q.alert_events(store, limit=1000)) == OLD_ROWS["alert_events"]
        assert set(zip(q.alerts_firing(store)["rule"], q.alerts_firing(store)["job"],
                       strict=True)) == {("digest-slow", "send-digest"),
                                         ("orders-stuck", "fetch-orders")}
        assert q.outbox_status(store, now=NOW).depth == OLD_ROWS["outbox"]
        assert q.run_requests(store)["job"].tolist() == ["fetch-orders"]
        # the request 0.1.0 left unclaimed is on the durable queue for the next scheduler
        assert store.requests.queues.depths()["run_requests"].ready == 1
        assert sorted(q.job_configs(store)["job"]) == ["fetch-orders", "send-digest",
                                                        "sync-crm"]
        assert len(q.problems(store)) == 2 and len(q.config_events(store)) == 2
        day = q.job_summary(store, 86400.0, now=NOW).set_index("job")
        assert day.loc["fetch-orders", "runs"] == 10  # 8 ok, 1 failed, 1 timeout
        assert day.loc["send-digest", "runs"] == 4 and day.loc["send-digest", "dry_runs"] == 1
        # the rollups 0.1.0 built are rebuilt by the engine under the dry-run rule
        assert store.rollups.refreshed_at() is None
        store.rollups.refresh(NOW)
        long = q.job_summary(store, 30 * 86400.0, now=NOW).set_index("job")
        exact = q.job_summary(store, 30 * 86400.0, now=NOW,
                              exact_max_window_s=1e12).set_index("job")
        cols = ["runs", "ok", "failed", "timeout", "dry_runs"]
        assert long[cols].equals(exact[cols])
        # the next status writer claims them with their tabs and keys
        claimed = store.outbox.claim("next-writer", lease_s=60)
        assert sorted((c.payload["tab"], c.payload["key"], c.created_at)
                      for c in claimed.claims) == sorted(marks)
        store.outbox.ack(claimed.claims)
        assert store.pending_outbox().count == 0
        [request] = store.claim_run_requests("next-scheduler")
        assert (request["job"], request["requested_by"]) == ("fetch-orders", "ana")
    finally:
        store.dispose()


def test_the_upgraded_schema_is_the_current_schema(old_store_url, tmp_path) -> None:
    """0.1.0 + every revision = the tables and indexes of sheetops.store.schema, exactly
    what a new store gets."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    for url in (old_store_url, f"sqlite:///{tmp_path / 'new.db'}"):
        store = Store(url)
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
        store.dispose()
        assert diff == [], url


def test_migrate_twice_is_a_no_op(old_sqlite, tmp_path) -> None:
    first = subprocess.run([SHEETOPS, "migrate", "--store", old_sqlite], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "from no revision to revision " + migrations.HEAD in first.stdout
    path = old_sqlite.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        shape = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    second = subprocess.run([SHEETOPS, "migrate", "--store", old_sqlite], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == (f"the store at {old_sqlite} is up to date (revision "
                                     f"{migrations.HEAD})")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"
                            ).fetchall() == shape


def test_a_store_newer_than_the_code_is_refused_in_one_sentence(old_sqlite, tmp_path,
                                                                 workbook) -> None:
    Store(old_sqlite).dispose()
    path = old_sqlite.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0999'")
    expected = (f"the store at {old_sqlite} was written by a newer sheetops (revision "
                "0999); upgrade sheetops")
    for args in (["migrate", "--store", old_sqlite],
                 ["run-job", "anything", "--sheet", str(workbook.path)]):
        done = subprocess.run([SHEETOPS, *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120,
                              env={**os.environ, "SHEETOPS_STORE_URL": old_sqlite})
        assert done.returncode == 2, done
        assert done.stderr.strip() == f"error: {expected}", done.stderr
        assert "Traceback" not in done.stderr
    with pytest.raises(StoreTooNew, match="newer sheetops"):
        q.open_store(old_sqlite)


def test_the_dashboard_never_migrates(old_sqlite) -> None:
    with pytest.raises(StoreNeedsMigration) as caught:
        q.open_store(old_sqlite)
    assert str(caught.value) == (
        f"the store at {old_sqlite} needs `sheetops migrate` (it is at the schema of "
        f"sheetops 0.1.0; this sheetops expects revision {migrations.HEAD})")
    path = old_sqlite.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "alembic_version" not in tables
        assert "dry_runs" not in {r[1] for r in conn.execute("PRAGMA table_info(runs_hourly)")}


def test_two_processes_opening_an_empty_store_make_it_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = ("import sys; from sheetops.store import Store; Store(sys.argv[1]).dispose()")
    procs = [subprocess.Popen([sys.executable, "-c", code, url]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = Store(url, migrate=False)
    assert migrations.current_revision(store.db) == migrations.HEAD
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert conn.execute(sa.text("SELECT count(*) FROM leases")).scalar_one() == 0
    store.dispose()


def test_the_dashboard_page_says_the_store_needs_migrate(old_sqlite, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    from sheetops.settings import get_settings

    monkeypatch.setenv("SHEETOPS_STORE_URL", old_sqlite)
    monkeypatch.delenv("SHEETOPS_DASHBOARD_PASSWORD", raising=False)
    get_settings.cache_clear()
    at = AppTest.from_file(str(TESTS_DIR.parent / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        f"the store at {old_sqlite} needs `sheetops migrate` (it is at the schema of "
        f"sheetops 0.1.0; this sheetops expects revision {migrations.HEAD})"]
    get_settings.cache_clear()
