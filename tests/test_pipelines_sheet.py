"""A sheet tab as a pipeline's source and sink: each record's fate on its own row.

Real sheets: an ``.xlsx`` workbook and gspread over HTTP against the Sheets emulator.
The row outcomes reach the sheet through the status writer's flush — the same outbox
and the same one-request write as the Status tabs — and the tests count the requests.
Crash tests run the pipeline in child processes (``tests/sheet_pipelines_for_tests.py``)
that are SIGKILLed and restarted.
"""

# pytest fixtures are imported by name and then requested as arguments.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from sheet_pipelines_for_tests import flush, sheet_pipeline
from sheetops.connectors.sheets.google import GoogleSheet
from sqlalchemy import create_engine, text

from sheetops.config.model import Snapshot
from sheetops.metrics import SHEET_REQUESTS
from sheetops.pipelines import deadletters as dl
from sheetops.plugins import open_sheet
from sheetops.sheets import ColumnSpec, TabSpec, TabWrite
from sheetops.status import StatusWriter
from sheetops.store import Store, sheet_rows
from sheetops.store.queue_sql import Queues
from sheetops.testing.fixtures import emulator, emulator_env  # noqa: F401

TESTS = Path(__file__).parent
CHILD = [sys.executable, str(TESTS / "sheet_pipelines_for_tests.py")]
OUTCOME = ["sheetops_status", "sheetops_error", "sheetops_at", "sheetops_retry"]


pytestmark = pytest.mark.usefixtures("forget_pipelines")


def contacts(n: int, bad: set[int] = frozenset(), skip: set[int] = frozenset()
             ) -> list[list[str]]:
    """The Contacts tab: header, then ``id``, ``value`` rows (row r holds id r-1)."""
    rows = [["id", "value", "note"]]
    for i in range(1, n + 1):
        value = "oops" if i in bad else "skip" if i in skip else str(i)
        rows.append([f"c{i}", value, f"=HYPERLINK(\"x\") {i}" if i == 1 else ""])
    return rows


def new_book(path: Path, rows: list[list[str]]):
    """A workbook holding only a ``Contacts`` tab with ``rows``."""
    sheet = open_sheet(str(path))
    sheet.ensure_tabs([TabSpec("Contacts", tuple(ColumnSpec(h, h) for h in rows[0]))])
    sheet.write_batch([TabWrite("Contacts", rows)])
    return sheet


def by_id(values: list[list[str]]) -> dict[str, dict[str, str]]:
    """Data rows of a tab read back, as ``id → {column: value}`` (an id's first row)."""
    header = values[0]
    found: dict[str, dict[str, str]] = {}
    for r in values[1:]:
        if r and r[0] and r[0] not in found:
            found[r[0]] = dict(zip(header, r + [""] * (len(header) - len(r)), strict=True))
    return found


def delivered(url: str) -> list[tuple[str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [(k, v) for k, v in conn.execute(text("SELECT key, value FROM delivered"))]
    except Exception:
        return []
    finally:
        engine.dispose()


def writes() -> float:
    return SHEET_REQUESTS.labels("write")._value.get()


@pytest.mark.each_store_backend
def test_workbook_rows_show_each_record_fate_after_one_write(tmp_path: Path,
                                                             store_url: str) -> None:
    book = tmp_path / "contacts.xlsx"
    rows = contacts(60, bad={7}, skip={12})
    rows += [["", "5", "no key"], ["c3", "9", "same key as row 4"]]
    sheet = new_book(book, rows)
    url = store_url
    store = Store(url)

    dry = sheet_pipeline("rows", str(book)).run(store.engine, dry_run=True)
    assert dry.result()["records_in"] == 60
    before = writes()
    assert flush(store, str(book)) and writes() == before  # a dry run leaves the sheet
    assert delivered(url) == []

    report = sheet_pipeline("rows", str(book)).run(store.engine, lease_grace_s=0.3)
    assert report.result()["records_in"] == 60 and report.records_out == 58

    before = writes()
    assert flush(store, str(book))
    assert writes() - before == 1  # one write of the file, header and every row in it

    values = sheet.read_tabs(["Contacts"])["Contacts"]
    assert values[0] == ["id", "value", "note", *OUTCOME]
    got = by_id(values)
    assert {k for k, r in got.items() if r["sheetops_status"] == "done"} == {
        f"c{i}" for i in range(1, 61) if i not in (7, 12)}
    assert got["c7"]["sheetops_status"] == "dead_letter"
    assert got["c7"]["sheetops_error"].startswith(
        "ValueError: Contacts!B8: value 'oops' is not a whole number")
    assert got["c12"]["sheetops_status"] == "skipped"
    assert "validate" in got["c12"]["sheetops_error"]
    assert values[1][2] == '=HYPERLINK("x") 1'  # the record's own cells are untouched
    no_key, duplicate = values[61], values[62]
    assert no_key[3] == "failed" and no_key[4].startswith("Contacts!A62: the id cell is empty")
    assert duplicate[3] == "failed" and "also on row 4" in duplicate[4]
    assert got["c3"]["value"] == "3" and got["c3"]["sheetops_status"] == "done"
    letters = dl.letters(Queues(store.engine), "rows")
    assert [(x.stage, x.key) for x in letters] == [("validate", "c7")]
    assert sorted(k for k, _ in delivered(url)) == sorted(
        f"c{i}" for i in range(1, 61) if i not in (7, 12))

    # nothing new: the next run reads the tab once and processes nothing
    again = sheet_pipeline("rows", str(book)).run(store.engine, lease_grace_s=0.3)
    assert again.result()["records_in"] == 0
    assert flush(store, str(book))
    store.dispose()


def test_a_retry_cell_reprocesses_that_row_and_is_cleared(tmp_path: Path) -> None:
    book = tmp_path / "contacts.xlsx"
    sheet = new_book(book, contacts(10, bad={4}))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    sheet_pipeline("retry", str(book)).run(store.engine, lease_grace_s=0.3)
    assert flush(store, str(book))
    assert by_id(sheet.read_tabs(["Contacts"])["Contacts"])["c4"]["sheetops_status"] == (
        "dead_letter")

    # ops fix the value and tick the retry cell of that row (column G)
    sheet.write_batch([TabWrite("Contacts", [["4"]], start_row=5, start_col=2),
                       TabWrite("Contacts", [[True]], start_row=5, start_col=7)])
    report = sheet_pipeline("retry", str(book)).run(store.engine, lease_grace_s=0.3)
    assert report.result()["records_in"] == 1 and report.records_out == 1
    assert flush(store, str(book))

    row = by_id(sheet.read_tabs(["Contacts"])["Contacts"])["c4"]
    assert row["sheetops_status"] == "done" and row["sheetops_error"] == ""
    assert row["sheetops_retry"] == ""
    assert sorted(k for k, _ in delivered(url)) == sorted(f"c{i}" for i in range(1, 11))

    # a retry asked on a row already done delivers nothing twice and clears the cell
    sheet.write_batch([TabWrite("Contacts", [[True]], start_row=3, start_col=7)])
    report = sheet_pipeline("retry", str(book)).run(store.engine, lease_grace_s=0.3)
    assert report.result()["records_in"] == 0
    assert flush(store, str(book))
    row = by_id(sheet.read_tabs(["Contacts"])["Contacts"])["c2"]
    assert (row["sheetops_status"], row["sheetops_retry"]) == ("done", "")
    assert len(delivered(url)) == 10


def test_google_sheet_10000_rows_one_read_per_run_one_write_per_flush(
        emulator_env, tmp_path: Path) -> None:
    key = emulator_env.create_spreadsheet("contacts", tabs=["Contacts"])
    location = emulator_env.sheet_url(key)
    open_sheet(location).write_batch([TabWrite("Contacts", contacts(10_000, bad={4321}))])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    writer = StatusWriter(store, open_sheet(location), lambda: Snapshot())  # the scheduler's

    emulator_env.reset_counts()
    report = sheet_pipeline("big", location, batch_size=500).run(store.engine,
                                                                 lease_grace_s=0.3)
    assert report.result()["records_in"] == 10_000 and report.records_out == 9_999
    assert emulator_env.counts["values.batchGet"] == 1  # the tab, read once

    emulator_env.reset_counts()
    assert writer.flush()
    # one values write for 10,000 rows (and the one structural request that widens the
    # grid for the new outcome columns, before it)
    assert emulator_env.counts["values.batchUpdate"] == 1
    assert emulator_env.counts["batchUpdate"] <= 1
    values = emulator_env.values(key, "Contacts")
    assert values[0] == ["id", "value", "note", *OUTCOME]
    got = by_id(values)
    assert sum(r["sheetops_status"] == "done" for r in got.values()) == 9_999
    assert got["c4321"]["sheetops_status"] == "dead_letter"
    assert "Contacts!B4322" in got["c4321"]["sheetops_error"]
    assert values[1][2] == '=HYPERLINK("x") 1'

    # a retry on one row: the next run reads once, the flush is one request
    open_sheet(location).write_batch([
        TabWrite("Contacts", [["4321"]], start_row=4322, start_col=2),
        TabWrite("Contacts", [["TRUE"]], start_row=4322, start_col=7)])
    emulator_env.reset_counts()
    again = sheet_pipeline("big", location, batch_size=500).run(store.engine,
                                                                lease_grace_s=0.3)
    assert again.result()["records_in"] == 1 and again.records_out == 1
    assert emulator_env.counts["values.batchGet"] == 1
    emulator_env.reset_counts()
    assert writer.flush()
    assert dict(emulator_env.counts) == {"values.batchUpdate": 1}
    row = by_id(emulator_env.values(key, "Contacts"))["c4321"]
    assert (row["sheetops_status"], row["sheetops_retry"]) == ("done", "")
    assert len(delivered(url)) == 10_000


def test_google_down_keeps_the_outcomes_until_it_is_back(emulator_env, tmp_path: Path
                                                          ) -> None:
    key = emulator_env.create_spreadsheet("contacts", tabs=["Contacts"])
    location = emulator_env.sheet_url(key)
    open_sheet(location).write_batch([TabWrite("Contacts", contacts(30, bad={3}))])
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    sheet_pipeline("outage", location).run(store.engine, lease_grace_s=0.3)
    sheet = GoogleSheet.open(location, attempts=2, retry_initial_s=0.01, retry_max_s=0.02)
    writer = StatusWriter(store, sheet, lambda: Snapshot(), retry_delay_s=0)

    emulator_env.faults.set(error_rate=1.0, codes=[503])
    assert not writer.flush()
    emulator_env.faults.clear()
    assert emulator_env.values(key, "Contacts")[0] == ["id", "value", "note"]
    assert writer.flush()
    got = by_id(emulator_env.values(key, "Contacts"))
    assert got["c3"]["sheetops_status"] == "dead_letter"
    assert sum(r["sheetops_status"] == "done" for r in got.values()) == 29
    emulator_env.reset_counts()
    assert writer.flush() and emulator_env.total_requests == 0  # nothing left to write


def run_child(url: str, sheet: str, kill_after: float | None = None) -> int:
    """Run the sheet pipeline in a child; SIGKILL it ``kill_after`` seconds after a record
    is in the sink (so the kill lands mid-pass however slowly the child starts), unless
    it ends first. Its exit code (-9 when killed)."""
    proc = subprocess.Popen([*CHILD, url, sheet, "0.05"], env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if kill_after is not None:
            wait_for(lambda: proc.poll() is not None or bool(delivered(url)),
                     timeout=120, interval=0.02)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(kill_after)
            if proc.poll() is None:
                proc.kill()
        return proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_mid_run_then_restart_rows_agree_with_dead_letters_and_store(
        tmp_path: Path) -> None:
    rng = random.Random(15)
    mid_pass = 0  # kills that landed with some records delivered and some not
    for trial in range(6):
        book = tmp_path / f"contacts{trial}.xlsx"
        new_book(book, contacts(200, bad={17, 150}, skip={33}))
        url = f"sqlite:///{tmp_path / f'store{trial}.db'}"
        kills = 0
        for _ in range(2):  # up to two kills a trial, each at a random moment
            if run_child(url, str(book), kill_after=rng.uniform(0.0, 3.0)) == 0:
                break
            kills += 1
            mid_pass += 0 < len(delivered(url)) < 197
        for _ in range(20):  # restarts until a run ends by itself
            if run_child(url, str(book)) == 0:
                break
        else:
            raise AssertionError(f"trial {trial}: the pipeline never finished")
        store = Store(url)
        # a flush killed with marks claimed holds them for its lease; then they are free
        wait_for(lambda s=store, b=str(book): flush(s, b), timeout=60, what="a complete flush")

        got = by_id(open_sheet(str(book)).read_tabs(["Contacts"])["Contacts"])
        status = {k: r["sheetops_status"] for k, r in got.items()}
        dead = {x.key for x in dl.letters(Queues(store.engine), "sheet_copy")}
        keys = [k for k, _ in delivered(url)]
        assert len(keys) == len(set(keys)), (trial, kills)  # exactly once
        assert {k for k, s in status.items() if s == "done"} == set(keys), (trial, kills)
        assert {k for k, s in status.items() if s == "dead_letter"} == dead == {
            "c17", "c150"}, (trial, kills)
        assert {k for k, s in status.items() if s == "skipped"} == {"c33"}
        assert len(keys) == 197
        with store.engine.connect() as conn:
            stored = sheet_rows.outcomes(conn, "sheet_copy")
            assert not sheet_rows.unwritten(conn, "sheet_copy")
        assert {k: o.status for k, o in stored.items()} == status, (trial, kills)
        store.dispose()
    assert mid_pass, "no kill landed in the middle of a pass; the test proved nothing"


def test_the_contacts_example_emails_rows_and_writes_their_fate_back(workbook, tmp_path
                                                                     ) -> None:
    from test_cli import cli

    from sheetops.testing.smtp import SmtpServer

    workbook.write("Contacts", ["email", "name", "subscribed"], [
        ["ada@example.com", "Ada Lovelace", "TRUE"],
        ["not-an-address", "Alan Turing", "TRUE"],
        ["barbara@example.com", "Barbara Liskov", "FALSE"],
        ["", "Ken Thompson", "TRUE"],
        ["grace@example.com", "Grace Hopper", "yes"]], clear_rows=0)
    smtp = SmtpServer()
    smtp.start()
    try:
        workbook.jobs({"job": "outreach", "automation": "contacts_outreach",
                       "schedule": "manual",
                       "params": json.dumps({"smtp": {"host": "127.0.0.1",
                                                      "port": smtp.port}})})
        run = cli("run-job", "outreach", "--sheet", str(workbook.path), cwd=tmp_path)
        assert run.returncode == 0, run.stdout + run.stderr
        assert sorted(m["To"] for m in smtp.messages) == ["ada@example.com",
                                                          "grace@example.com"]
        assert smtp.messages[0]["Subject"].startswith("Welcome, ")
        rows = {r["name"]: r for r in workbook.records("Contacts")}
        assert rows["Ada Lovelace"]["sheetops_status"] == "done"
        assert rows["Alan Turing"]["sheetops_status"] == "dead_letter"
        assert "'not-an-address' is not a valid address" in rows["Alan Turing"][
            "sheetops_error"]
        assert rows["Barbara Liskov"]["sheetops_status"] == "skipped"
        assert rows["Ken Thompson"]["sheetops_status"] == "failed"
        assert rows["Ken Thompson"]["sheetops_error"].startswith("Contacts!A5:")
        errors = workbook.records("Errors")
        assert [(e["stage"], e["record_key"]) for e in errors] == [
            ("validate", "not-an-address")]

        # fixed on the sheet and a retry asked: the next run emails that row only
        workbook.sheet.write_batch([TabWrite("Contacts", [["alan@example.com"]],
                                             start_row=3),
                                    TabWrite("Contacts", [[True]], start_row=3,
                                             start_col=7)])
        again = cli("run-job", "outreach", "--sheet", str(workbook.path), cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert [m["To"] for m in smtp.messages][2:] == ["alan@example.com"]
        row = {r["name"]: r for r in workbook.records("Contacts")}["Alan Turing"]
        assert row["sheetops_status"] == "done" and row["sheetops_retry"] in (None, "")
    finally:
        smtp.stop()


def test_a_tab_of_another_sheet_gets_its_rows_in_its_own_single_write(workbook, tmp_path
                                                                      ) -> None:
    crm = tmp_path / "crm.xlsx"
    # ops moved two outcome columns: status first, error after the value
    header, *data = contacts(20, bad={5})
    sheet = new_book(crm, [["sheetops_status", *header[:2], "sheetops_error", header[2]],
                           *[["", ident, value, "", note] for ident, value, note in data]])
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    pipe = sheet_pipeline("crm", str(crm))
    pipe.run(store.engine, lease_grace_s=0.3)

    writer = StatusWriter(store, workbook.sheet, lambda: Snapshot())  # the config sheet
    before = writes()
    assert writer.flush()
    assert writes() - before == 1  # crm.xlsx only: the config sheet had nothing to write
    values = sheet.read_tabs(["Contacts"])["Contacts"]
    assert values[0] == ["sheetops_status", "id", "value", "sheetops_error", "note",
                         "sheetops_at", "sheetops_retry"]
    by_key = {r[1]: r for r in values[1:]}
    assert by_key["c4"][0] == "done" and by_key["c4"][2] == "4" and by_key["c4"][3] == ""
    assert by_key["c5"][0] == "dead_letter" and "not a whole number" in by_key["c5"][3]
    assert by_key["c1"][4] == '=HYPERLINK("x") 1'
    assert "Contacts" not in workbook.sheet.read_tabs(["Contacts"])
