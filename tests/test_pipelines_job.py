"""The example pipeline as a job: `sheetops run-job` of ``welcome_contacts`` reads
contacts as JSON pages from a loopback HTTP API, emails each valid one through a
loopback SMTP server, and its run, counts and dead letters show on the Runs and Errors
tabs; ``dead-letters`` exports them and ``replay --edited`` delivers the fixed one."""

from __future__ import annotations

import csv
import io
import json

import pytest
from test_cli import cli

from sheetops.testing.http import HttpServer
from sheetops.testing.smtp import SmtpServer

CONTACTS = [{"id": i, "email": f"user{i}@example.com", "name": f"user {i}"}
            for i in range(1, 26)]
CONTACTS[6]["email"] = "not-an-address"  # id 7
CONTACTS[18]["name"] = ""                # id 19


@pytest.fixture
def servers():
    http, smtp = HttpServer(), SmtpServer()
    http.start()
    smtp.start()
    for page in range(3):  # pages of 10, 10 and 5 contacts
        body = {"items": CONTACTS[page * 10:(page + 1) * 10],
                "next": f"/contacts/{page + 2}" if page < 2 else None}
        http.json("/contacts" if page == 0 else f"/contacts/{page + 1}", body)
    yield http, smtp
    http.stop()
    smtp.stop()


def test_run_job_of_a_pipeline_delivers_and_lists_dead_letters(workbook, tmp_path, servers):
    http, smtp = servers
    params = {"url": http.url("/contacts"),
              "smtp": {"host": "127.0.0.1", "port": smtp.port}}
    workbook.jobs({"job": "welcome", "automation": "welcome_contacts", "schedule": "manual",
                   "params": json.dumps(params), "template": "hello"})
    workbook.write("Templates", ["name", "subject", "body"],
                   [["hello", "Hi {{ first_name }}", "Welcome to {{ domain }}."]])
    workbook.write("Stages", ["job", "stage", "batch_size", "rate_limit"],
                   [["welcome", "deliver", "5", "50/second"]])
    sheet = ["--sheet", str(workbook.path)]

    dry = cli("run-job", "welcome", "--dry-run", *sheet, cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "record 7 would fail: ValueError" in dry.stdout  # on a scratch store, no sink
    assert '"records_failed": 2, "records_in": 25, "records_out": 23' in dry.stdout
    assert smtp.messages == []

    run = cli("run-job", "welcome", *sheet, cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "records in/out/failed 25/23/2" in run.stdout
    assert sorted(m["To"] for m in smtp.messages) == sorted(
        c["email"] for c in CONTACTS if c["id"] not in (7, 19))
    hello = next(m for m in smtp.messages if m["To"] == "user1@example.com")
    assert hello["Subject"] == "Hi User"
    assert "Welcome to example.com." in hello.get_content()

    errors = workbook.records("Errors")  # a dry run records nothing
    assert sorted((e["stage"], str(e["record_key"]), e["error_type"]) for e in errors) == [
        ("validate", "19", "ValueError"), ("validate", "7", "ValueError")]
    assert "email address is not valid" in next(
        e["message"] for e in errors if str(e["record_key"]) == "7")
    assert [r["status"] for r in workbook.records("Runs")] == ["ok"]

    listed = cli("dead-letters", "welcome", "--format", "csv", *sheet, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    rows = list(csv.DictReader(io.StringIO(listed.stdout)))
    assert sorted(r["key"] for r in rows) == ["19", "7"]
    assert json.loads(next(r for r in rows if r["key"] == "7")["record"])["email"] == \
        "not-an-address"

    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps([{"id": 7, "email": "seven@example.com", "name": "Seven"}]))
    replayed = cli("replay", "welcome", "--edited", str(fixed), *sheet, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 1 record(s) of welcome: 1 went through, 0 dead again" in replayed.stdout
    assert [m["To"] for m in smtp.messages].count("seven@example.com") == 1

    again = cli("run-job", "welcome", *sheet, cwd=tmp_path)  # the ledger: no one twice
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(smtp.messages) == 24
    # the API still serves the two bad contacts: the new pass sets them aside again,
    # one dead letter per record and stage (19's is refreshed, not doubled)
    left = cli("dead-letters", "welcome", "--format", "json", *sheet, cwd=tmp_path)
    assert sorted(x["key"] for x in json.loads(left.stdout)) == ["19", "7"]
    newer = cli("dead-letters", "welcome", "--since", "1d", "--error-type", "ValueError",
                *sheet, cwd=tmp_path)
    assert newer.returncode == 0 and "2 dead letter(s) of welcome" in newer.stderr
