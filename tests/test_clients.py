"""Many clients, one system: one ``sheetops run`` serves several client sheets, each with
its own jobs, store and status tabs; a broken sheet never stops another client's jobs.

End to end through the real ``sheetops`` command in subprocesses, on real workbooks, the
Sheets emulator (going 503) and the real PostgreSQL; the dashboard through AppTest.
"""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import TESTS_DIR, WorkbookHelper, fresh_pg_database, wait_for
from sheetops.connectors.sheets import open_sheet
from streamlit.testing.v1 import AppTest

from sheetops import clients, tabs
from sheetops.clients import ClientGroup, ClientsError
from sheetops.engine import Engine, EngineOptions, init_sheet
from sheetops.settings import Settings, get_settings
from sheetops.sheets import TabWrite
from sheetops.store import Store
from sheetops.store.db import url_schema
from sheetops.testing import SheetsEmulator
from sheetops.testing.fixtures import emulator, emulator_env  # noqa: F401  (fixtures)
from sheetops.testing.store_fill import make_run

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
ROOT = Path(__file__).resolve().parents[1]
JOB_NAMES = [c.name for c in tabs.JOB_COLUMNS]


def env(**extra: str) -> dict[str, str]:
    """The CLI's environment: the test automations, and no SHEETOPS_STORE_URL (so each
    client's store is the file beside its workbook) unless given."""
    out = {k: v for k, v in os.environ.items() if k != "SHEETOPS_STORE_URL"}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR),
                                                      out.get("PYTHONPATH", "")]))
    out["SHEETOPS_AUTOMATIONS"] = "automations_for_tests"
    out.update(extra)
    return out


def cli(*args: str, cwd: Path, timeout: float = 90, **extra: str
        ) -> subprocess.CompletedProcess:
    return subprocess.run([SHEETOPS, *args], cwd=cwd, env=env(**extra), text=True,
                          capture_output=True, timeout=timeout)


def probe(job: str, schedule: str = "every 1s", **params) -> dict[str, str]:
    return {"job": job, "automation": "t_probe", "schedule": schedule, "enabled": "TRUE",
            "params": json.dumps(params), "max_attempts": "1"}


def client_workbook(folder: Path, name: str, *jobs: dict[str, str]) -> WorkbookHelper:
    """A workbook made like ``sheetops init`` with ``jobs`` and a 1 s status flush."""
    helper = WorkbookHelper(folder / f"{name}.xlsx")
    init_sheet(helper.sheet, examples=False)
    helper.jobs(*jobs)
    helper.settings(refresh_interval_s=30, status_flush_interval_s=1)
    return helper


def store_beside(workbook: WorkbookHelper) -> Store:
    return Store(f"sqlite:///{workbook.path.with_suffix('.sheetops.db')}")


def assert_tabs_hold_only_own_runs(workbook: WorkbookHelper, store: Store,
                                   jobs: set[str]) -> list[dict]:
    """Runs and Status tabs show exactly this client's runs and jobs."""
    runs = store.recent_runs(1000)
    assert runs and {r["job"] for r in runs} == jobs
    runs_tab = workbook.records("Runs")
    assert [(r["run_id"], r["job"]) for r in runs_tab] == [(r["id"], r["job"]) for r in runs]
    assert {r["job"] for r in workbook.records("Status")} == jobs
    return runs


# -- which clients, which stores -----------------------------------------------------------

def test_sheet_arguments_name_clients_and_each_gets_its_own_store(tmp_path):
    pairs = clients.parse_sheet_args([str(tmp_path / "Acme Ops.xlsx"),
                                      "globex=https://docs.google.com/spreadsheets/d/K1/edit"])
    assert pairs == [("acme_ops", str(tmp_path / "Acme Ops.xlsx")),
                     ("globex", "https://docs.google.com/spreadsheets/d/K1/edit")]
    found = clients.resolve(pairs, Settings(store_url=""))
    assert found[0].store_url == f"sqlite:///{tmp_path / 'Acme Ops.sheetops.db'}"
    assert found[1].store_url == f"sqlite:///{Path.cwd() / 'sheetops.globex.db'}"
    # {client} in the URL: one store per client; PostgreSQL: one schema per client
    templated = clients.resolve(pairs, Settings(store_url="sqlite:////s/{client}.db"))
    assert [c.store_url for c in templated] == ["sqlite:////s/acme_ops.db",
                                                "sqlite:////s/globex.db"]
    pg = clients.resolve(pairs, Settings(store_url="postgresql+psycopg://db/ops"))
    assert [url_schema(c.store_url) for c in pg] == ["sheetops_acme_ops", "sheetops_globex"]


@pytest.mark.parametrize(("args", "store_url", "expected"), [
    (["a=x.xlsx", "a=y.xlsx"], "", "two clients are named 'a'"),
    (["x.xlsx", "y.xlsx"], "sqlite:////tmp/one.db", "each client needs its own: put {client}"),
    (["https://docs.google.com/spreadsheets/d/K1/edit"], "", "name this client, e.g. --sheet "
     "acme=https://"),
    (["Bad-Name=x.xlsx", "y.xlsx"], "", "client name 'Bad-Name' is not allowed"),
])
def test_clients_that_cannot_be_kept_apart_are_refused_in_one_sentence(args, store_url,
                                                                       expected):
    with pytest.raises(ClientsError, match=None) as caught:
        clients.resolve(clients.parse_sheet_args(args), Settings(store_url=store_url))
    assert expected in str(caught.value)


def test_a_sheet_that_is_no_clients_cannot_use_a_per_client_store_url(tmp_path):
    listing = tmp_path / "clients.toml"
    listing.write_text('acme = "acme.xlsx"\n')
    settings = Settings(store_url="sqlite:////s/{client}.db", clients=str(listing))
    assert clients.store_url_of(settings, str(tmp_path / "acme.xlsx")) == "sqlite:////s/acme.db"
    with pytest.raises(ClientsError, match=r"other\.xlsx is no client's sheet: name it"):
        clients.store_url_of(settings, str(tmp_path / "other.xlsx"))
    assert clients.store_url_of(Settings(store_url=""), str(tmp_path / "x.xlsx")) == (
        f"sqlite:///{tmp_path / 'x.sheetops.db'}")


def test_clients_file_paths_are_relative_to_it_and_mistakes_are_named(tmp_path):
    folder = tmp_path / "conf"
    folder.mkdir()
    good = folder / "clients.toml"
    good.write_text('# one line per client\nacme = "acme.xlsx"\n'
                    'globex = "https://docs.google.com/spreadsheets/d/K2"\n')
    assert clients.read_clients_file(good) == [
        ("acme", str(folder / "acme.xlsx")), ("globex", "https://docs.google.com/spreadsheets/d/K2")]
    bad = folder / "bad.toml"
    bad.write_text("acme = 3\n")
    with pytest.raises(ClientsError, match="client 'acme' needs its sheet as text"):
        clients.read_clients_file(bad)
    bad.write_text("acme = \n")
    with pytest.raises(ClientsError, match=r"bad\.toml: not a clients file"):
        clients.read_clients_file(bad)


# -- the real CLI ---------------------------------------------------------------------------

def test_two_clients_in_one_run_keep_their_runs_and_tabs_apart(tmp_path, test_automations):
    # both sheets have a job called "sync": the names never clash
    acme = client_workbook(tmp_path, "acme", probe("sync", records=1), probe("acme-only"))
    globex = client_workbook(tmp_path, "globex", probe("sync", records=2),
                             probe("globex-only", "every 2s"))
    result = cli("run", "--for", "6", "--workers", "1", "--sheet", f"acme={acme.path}",
                 "--sheet", f"globex={globex.path}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "client acme: 2 job(s)" in result.stdout
    assert "sheetops is running 2 of 2 client(s)" in result.stdout
    acme_store, globex_store = store_beside(acme), store_beside(globex)
    try:
        a = assert_tabs_hold_only_own_runs(acme, acme_store, {"sync", "acme-only"})
        g = assert_tabs_hold_only_own_runs(globex, globex_store, {"sync", "globex-only"})
        assert not {r["id"] for r in a} & {r["id"] for r in g}
        status = {r["job"]: r for r in acme.records("Status")}
        assert status["sync"]["records_in"] == 1
        assert {r["job"]: r for r in globex.records("Status")}["sync"]["records_in"] == 2
    finally:
        acme_store.dispose()
        globex_store.dispose()


def test_a_corrupted_workbook_never_stops_another_clients_jobs(tmp_path, test_automations):
    good = client_workbook(tmp_path, "good", probe("tick"),
                           probe("boom", "every 2s", fail="permanent", message="no"))
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(os.urandom(4000))
    listing = tmp_path / "clients.toml"
    listing.write_text('good = "good.xlsx"\nbroken = "broken.xlsx"\n')
    result = cli("run", "--for", "5", "--workers", "1", "--clients", str(listing),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "sheetops is running 1 of 2 client(s)" in result.stdout
    assert "client broken is not running: cannot read" in result.stderr
    store = store_beside(good)
    try:
        runs = assert_tabs_hold_only_own_runs(good, store, {"tick", "boom"})
        ticks = [r for r in runs if r["job"] == "tick"]
        assert len(ticks) >= 3 and {r["status"] for r in ticks} == {"ok"}
    finally:
        store.dispose()
    # a failed run's log line says whose it is
    assert re.search(r"job boom run \w+ failed .* \[client=good\]", result.stderr)


def test_no_client_able_to_start_is_exit_2_naming_each(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.xlsx").write_bytes(b"not a workbook")
    result = cli("run", "--for", "1", "--sheet", str(tmp_path / "a.xlsx"),
                 "--sheet", str(tmp_path / "b.xlsx"), cwd=tmp_path)
    assert result.returncode == 2
    assert "error: no client could start: a: cannot read" in result.stderr
    assert "; b: cannot read" in result.stderr and "Traceback" not in result.stderr


def _google_client(emu: SheetsEmulator, *jobs: dict[str, str]) -> tuple[str, str]:
    key = emu.create_spreadsheet("globex")
    url = emu.sheet_url(key)
    sheet = open_sheet(url)
    init_sheet(sheet, examples=False)
    sheet.write_batch([
        TabWrite(tabs.JOBS, [JOB_NAMES] + [[j.get(c, "") for c in JOB_NAMES] for j in jobs]),
        TabWrite(tabs.SETTINGS, [["key", "value"], ["refresh_interval_s", "2"],
                                 ["status_flush_interval_s", "1"]])])
    return key, url


def test_google_going_503_for_one_client_leaves_the_others_running(
        emulator_env: SheetsEmulator, tmp_path: Path, test_automations) -> None:
    emu = emulator_env
    key, url = _google_client(emu, probe("remote", "every 1s"))
    local = client_workbook(tmp_path, "acme", probe("local"))
    proc = subprocess.Popen(
        [SHEETOPS, "run", "--workers", "1", "--sheet", f"acme={local.path}",
         "--sheet", f"globex={url}"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env(SHEETOPS_SHEETS_MAX_RETRIES="1",
                                        SHEETOPS_SHEETS_TIMEOUT_S="5"))
    acme_store = globex_store = None
    try:
        globex_db = tmp_path / "sheetops.globex.db"
        wait_for(lambda: len(emu.values(key, tabs.RUNS)) > 1, 60, "globex's Runs tab")
        emu.faults.set(outage=True)  # Google answers 503 to everything from now on
        acme_store = store_beside(local)
        during_start = acme_store.count_runs()
        written = len(local.records("Runs"))
        # acme's jobs go on running and its workbook keeps being written meanwhile
        wait_for(lambda: acme_store.count_runs() >= during_start + 4, 30, "acme runs on")
        wait_for(lambda: len(local.records("Runs")) >= written + 3, 30, "acme's Runs tab")
        seen = len(emu.values(key, tabs.RUNS))
        emu.faults.set(outage=False)
        # globex's outbox delivers what waited through the outage
        wait_for(lambda: len(emu.values(key, tabs.RUNS)) > seen + 2, 60, "globex catches up")
        proc.send_signal(signal.SIGTERM)  # stop: finish, flush every client's tabs
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    globex_store = Store(f"sqlite:///{globex_db}")
    try:
        assert_tabs_hold_only_own_runs(local, acme_store, {"local"})
        # the outbox kept globex's writes through the outage: its tab mirrors its store
        remote = globex_store.recent_runs(1000)
        assert {r["job"] for r in remote} == {"remote"}
        rows = emu.values(key, tabs.RUNS)[1:]
        assert [r[0] for r in rows] == [r["id"] for r in remote]
    finally:
        acme_store.dispose()
        globex_store.dispose()


def test_clients_on_one_postgresql_database_get_a_schema_each(tmp_path, services,
                                                              test_automations):
    services.postgres()
    acme = client_workbook(tmp_path, "acme", probe("sync", records=1))
    globex = client_workbook(tmp_path, "globex", probe("sync", records=2))
    with fresh_pg_database("clients") as url:
        result = cli("run", "--for", "5", "--workers", "1", "--sheet", str(acme.path),
                     "--sheet", str(globex.path), cwd=tmp_path, SHEETOPS_STORE_URL=url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "options=-csearch_path%3Dsheetops_acme" in result.stdout
        found = clients.resolve(clients.parse_sheet_args([str(acme.path), str(globex.path)]),
                                Settings(store_url=url))
        for client, workbook in zip(found, (acme, globex), strict=True):
            store = Store(client.store_url)
            try:
                runs = assert_tabs_hold_only_own_runs(workbook, store, {"sync"})
                expected = 1 if client.name == "acme" else 2
                assert {r["records_in"] for r in runs} == {expected}
            finally:
                store.dispose()
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:  # migrated per schema; nothing in public
                versions = {s: conn.exec_driver_sql(
                    f"SELECT version_num FROM {s}.alembic_version").scalar()
                    for s in ("sheetops_acme", "sheetops_globex")}
                public = conn.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = 'public'").scalar()
        finally:
            engine.dispose()
        assert set(versions.values()) == {versions["sheetops_acme"]} and public == 0


def test_run_job_and_migrate_on_a_clients_sheet_use_that_clients_store(tmp_path,
                                                                   test_automations):
    acme = client_workbook(tmp_path, "acme", probe("sync", "manual", records=4))
    listing = tmp_path / "clients.toml"
    listing.write_text('acme = "acme.xlsx"\nglobex = "globex.xlsx"\n')
    stores = tmp_path / "stores"
    stores.mkdir()
    result = cli("run-job", "sync", "--sheet", str(acme.path), cwd=tmp_path,
                 SHEETOPS_CLIENTS=str(listing),
                 SHEETOPS_STORE_URL=f"sqlite:///{stores}/{{client}}.db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in stores.iterdir() if p.suffix == ".db") == ["acme.db"]
    migrated = cli("migrate", "--sheet", str(acme.path), cwd=tmp_path,
                   SHEETOPS_CLIENTS=str(listing),
                   SHEETOPS_STORE_URL=f"sqlite:///{stores}/{{client}}.db")
    assert f"the store at sqlite:///{stores}/acme.db is up to date" in migrated.stdout
    store = Store(f"sqlite:///{stores / 'acme.db'}")
    try:
        assert_tabs_hold_only_own_runs(acme, store, {"sync"})
    finally:
        store.dispose()


def test_a_store_whose_connections_miss_the_clients_schema_is_refused(services):
    services.postgres()
    from sqlalchemy.engine import make_url

    from sheetops.errors import StoreError

    with fresh_pg_database("clients_miss") as url:
        # as if a pooler replaced the search_path: the server lands in public
        wrong = make_url(url).update_query_dict(
            {"options": "-csearch_path=sheetops_acme -csearch_path=public"}
        ).render_as_string(hide_password=False)
        with pytest.raises(StoreError, match="do not use the schema sheetops_acme "
                           r"\(current schema: public\)"):
            Store(wrong)


# -- in process: a client that comes back --------------------------------------------------

def test_a_client_whose_sheet_is_repaired_starts_without_a_restart(tmp_path,
                                                                   test_automations):
    good = client_workbook(tmp_path, "good", probe("tick"))
    later = tmp_path / "later.xlsx"
    later.write_bytes(b"garbage")
    found = clients.resolve(clients.parse_sheet_args([str(good.path), str(later)]),
                            Settings(store_url=""))

    def build(client: clients.Client) -> Engine:
        return Engine(open_sheet(client.sheet), Store(client.store_url),
                      EngineOptions(workers=1, control_interval_s=0.1))

    group = ClientGroup(found, build, retry_s=0.3)
    group.start()
    try:
        assert set(group.engines) == {"good"} and "cannot read" in group.failed["later"]
        later.unlink()  # an editor replaces the file with a good workbook
        client_workbook(tmp_path, "later", probe("tock"))
        wait_for(lambda: "later" in group.engines, 20, "the repaired client starts")
        store = group.engines["later"].store
        wait_for(lambda: store.count_runs(status="ok") >= 1, 20, "its job runs")
        assert not group.failed
    finally:
        group.stop()


# -- the dashboard ---------------------------------------------------------------------------

@pytest.fixture
def two_client_stores(tmp_path, monkeypatch):
    """Two clients' stores, each with its own runs (job names overlapping), served by
    the dashboard through SHEETOPS_CLIENTS."""
    listing = tmp_path / "clients.toml"
    listing.write_text('acme = "acme.xlsx"\nglobex = "globex.xlsx"\n')
    monkeypatch.delenv("SHEETOPS_STORE_URL")
    monkeypatch.delenv("SHEETOPS_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.setenv("SHEETOPS_CLIENTS", str(listing))
    get_settings.cache_clear()
    now = time.time()
    ids = {}
    from sheetops.store import Batch

    for name, jobs in (("acme", ("sync", "invoices")), ("globex", ("sync", "leads"))):
        store = Store(f"sqlite:///{tmp_path / f'{name}.sheetops.db'}")
        runs = [make_run(job, now - 60 * (i + 1), "ok", 1.0 + i)
                for i, job in enumerate(jobs * 2)]
        store.record(Batch(new_runs=runs))
        ids[name] = {r["id"] for r in runs}
        store.dispose()
    yield ids
    get_settings.cache_clear()


def test_dashboard_client_selector_filters_every_page(two_client_stores):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="f_client").options == ["acme", "globex"]
    at.switch_page("sheetops/dashboard/pages/runs.py").run()
    assert set(at.dataframe[0].value["id"]) == two_client_stores["acme"]
    assert at.sidebar.multiselect(key="f_jobs").options == ["invoices", "sync"]
    at.sidebar.selectbox(key="f_client").set_value("globex").run()
    assert set(at.dataframe[0].value["id"]) == two_client_stores["globex"]
    # the choice holds on the other pages, and their numbers are globex's
    at.switch_page("sheetops/dashboard/pages/overview.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="f_client").value == "globex"
    assert {m.label: m.value for m in at.metric}["Runs"] == "4"
    per_job = next(d.value for d in at.dataframe if "p95_s" in d.value.columns)
    assert set(per_job["job"]) == {"sync", "leads"}


def test_read_queries_of_each_client_see_only_its_runs(two_client_stores):
    from sheetops.dashboard import queries as q

    for client in clients.from_settings(get_settings()):
        store = q.open_store(client.store_url)
        try:
            runs = q.runs_list(store, 3600.0, limit=100)
            assert set(runs["id"]) == two_client_stores[client.name]
        finally:
            store.dispose()


def test_dashboard_with_a_broken_clients_file_says_so_in_one_sentence(two_client_stores,
                                                                      tmp_path):
    (tmp_path / "clients.toml").write_text('acme = "acme.xlsx"\nacme2 = 7\n')
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [
        f"{tmp_path / 'clients.toml'}: client 'acme2' needs its sheet as text, e.g. "
        'acme2 = "acme2.xlsx"']
