"""``sheetops run-job JOB --dry-run`` and the notebook's ``dry_run`` are one mechanism
(:mod:`sheetops.dryrun`): the job's real code runs, and the CLI prints every email, HTTP
write and sheet cell it would have sent or changed — none of them leaves, and nothing
is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))

SYNC = '''from sheetops.connectors.http import HttpClient
from sheetops.connectors.sheets import open_sheet
from sheetops.sheets import TabWrite
from sheetops.registry import automation


@automation("t_sync")
def sync(ctx):
    with HttpClient() as client:
        items = client.get_json(ctx.params["url"] + "/items")
        client.post(ctx.params["url"] + "/push", json={"count": len(items)})
    open_sheet(ctx.params["sheet"]).write_batch(
        [TabWrite("Settings", [["key", "value"], ["timezone", "Europe/Berlin"]])])
    return {"records_in": len(items)}
'''


def _cli(*args: str, cwd: Path, code: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code), "SHEETOPS_AUTOMATIONS": "dry_sync"}
    return subprocess.run([SHEETOPS, *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=90)


def test_run_job_dry_run_prints_emails_http_writes_and_cells_and_sends_none(
        workbook, tmp_path, smtp, sheetops_http):
    code = tmp_path / "code"
    code.mkdir()
    (code / "dry_sync.py").write_text(SYNC)
    sheetops_http.json("/items", [1, 2, 3])
    workbook.settings(timezone="UTC")
    workbook.write("Templates", ["name", "subject", "body", "format"],
                   [["hi", "Hello {{ name }}", "Hi {{ name }}", "text"]])
    workbook.jobs(
        {"job": "mail", "automation": "send_email", "schedule": "manual", "template": "hi",
         "params": json.dumps({"recipients": [{"email": "a@example.com", "name": "Ann"}],
                               "vars": {"name": "you"}})},
        {"job": "sync", "automation": "t_sync", "schedule": "manual",
         "params": json.dumps({"url": sheetops_http.url(""), "sheet": str(workbook.path)})})

    mail = _cli("run-job", "mail", "--dry-run", "--sheet", str(workbook.path), cwd=tmp_path,
                code=code)
    assert mail.returncode == 0, mail.stdout + mail.stderr
    assert "would send email to a@example.com: Hello Ann" in mail.stdout
    assert "dry run of mail: ok; 1 effect(s) captured, nothing sent or recorded" in mail.stdout

    sync = _cli("run-job", "sync", "--dry-run", "--sheet", str(workbook.path), cwd=tmp_path,
                code=code)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    lines = sync.stdout.splitlines()
    assert f"would send POST {sheetops_http.url('/push')} {{\"count\": 3}}" in lines
    assert "would change Settings!B2: 'UTC' -> 'Europe/Berlin'" in lines
    assert 'result: {"records_in": 3}' in lines

    assert smtp.messages == []
    assert [r.method for r in sheetops_http.requests] == ["GET"]  # the read went out
    assert {r["key"]: r["value"] for r in workbook.records("Settings")}["timezone"] == "UTC"
    assert workbook.records("Runs") == []


def test_run_job_dry_run_of_a_failing_or_unknown_job_exits_1(workbook, tmp_path):
    workbook.jobs({"job": "boom", "automation": "always_fails", "schedule": "manual",
                   "params": '{"message": "no data"}'},
                  {"job": "bad", "automation": "heartbeat", "schedule": "every sometimes"})
    code = tmp_path
    boom = _cli("run-job", "boom", "--dry-run", "--sheet", str(workbook.path), cwd=tmp_path,
                code=code)
    assert boom.returncode == 1
    assert "dry run of boom: failed — PermanentError: no data" in boom.stdout
    assert "Traceback" not in boom.stdout + boom.stderr
    bad = _cli("run-job", "bad", "--dry-run", "--sheet", str(workbook.path), cwd=tmp_path,
               code=code)
    assert bad.returncode == 1 and "Jobs!C3:" in bad.stderr
    nobody = _cli("run-job", "nobody", "--dry-run", "--sheet", str(workbook.path),
                  cwd=tmp_path, code=code)
    assert nobody.returncode == 1 and "no job 'nobody'" in nobody.stderr
