"""``sheetops demo``: a working system on the embedded default, entirely offline.

It makes a workspace (a workbook, a SQLite store), starts a loopback HTTP API and a
loopback SMTP server for the automations to talk to, and fills the Jobs tab with jobs
that succeed, fail and retry, time out, and render a template into real emails — and
two pipelines: ``welcome`` reads contacts as JSON pages from the local API, and
``contacts`` reads the workbook's own ``Contacts`` tab and writes each row's outcome
back to it (some rows of each deliberately invalid).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sheetops import tabs
from sheetops.connectors.sheets.workbook import WorkbookSheet
from sheetops.engine import init_sheet
from sheetops.sheets import TabWrite
from sheetops.store import RunStatus, Store
from sheetops.testing.http import HttpServer
from sheetops.testing.smtp import SmtpServer

CUSTOMERS = [{"id": i, "name": n} for i, n in enumerate(
    ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne"], start=1)]
#: The welcome pipeline's contacts, two pages from the local API; 4 and 9 are invalid.
API_CONTACTS = [{"id": i, "email": f"{n.split()[0].lower()}@example.com", "name": n}
                for i, n in enumerate(["Ada Lovelace", "Grace Hopper", "Alan Turing",
                                       "Edsger Dijkstra", "Barbara Liskov", "Ken Thompson",
                                       "Margaret Hamilton", "Donald Knuth", "Frances Allen",
                                       "John Backus"], start=1)]
API_CONTACTS[3]["email"] = "edsger-at-example.com"
API_CONTACTS[8]["name"] = ""
#: The Contacts tab the contacts pipeline reads: an invalid address, an empty name, a
#: contact who unsubscribed, a row without an email.
CONTACTS_TAB = [["email", "name", "subscribed", "company"],
                ["ada@example.com", "Ada Lovelace", "TRUE", "Analytical Engines"],
                ["grace@example.com", "Grace Hopper", "TRUE", "Navy"],
                ["not-an-address", "Alan Turing", "TRUE", "Bletchley"],
                ["edsger@example.com", "", "TRUE", "Eindhoven"],
                ["barbara@example.com", "Barbara Liskov", "FALSE", "MIT"],
                ["", "Ken Thompson", "TRUE", "Bell Labs"],
                ["margaret@example.com", "Margaret Hamilton", "TRUE", "NASA"]]


def _sheetops_command() -> str:
    """The ``sheetops`` script of the running interpreter (``.venv/bin/sheetops`` after
    ``make demo``), so the hint works without an activated virtualenv."""
    script = Path(sys.executable).parent / "sheetops"
    return str(script) if script.exists() else "sheetops"


class DemoWorkspace:
    """The demo's files and loopback servers; a context manager that cleans up servers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.workbook = self.directory / "ops.xlsx"
        # where `sheetops dashboard --sheet <workbook>` looks by default
        self.store_path = self.workbook.with_suffix(".sheetops.db")
        self.http = HttpServer()
        self.smtp = SmtpServer()

    def __enter__(self) -> DemoWorkspace:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / ".gitignore").write_text("*\n")
        for stale in (self.workbook, self.store_path):
            if stale.exists():
                stale.unlink()
        self.http.start()
        self.http.json("/customers", {"data": CUSTOMERS})
        self.http.json("/contacts", {"items": API_CONTACTS[:5], "next": "/contacts/2"})
        self.http.json("/contacts/2", {"items": API_CONTACTS[5:], "next": None})
        self.smtp.start()
        sheet = WorkbookSheet(self.workbook)
        init_sheet(sheet, examples=False)
        sheet.write_batch(self._config_writes())
        return self

    def __exit__(self, *exc: object) -> None:
        self.smtp.stop()
        self.http.stop()

    def environment(self) -> dict[str, str]:
        return {"SHEETOPS_STORE_URL": f"sqlite:///{self.store_path}",
                "SHEETOPS_SMTP_HOST": "127.0.0.1", "SHEETOPS_SMTP_PORT": str(self.smtp.port),
                "SHEETOPS_SMTP_SENDER": "sheetops-demo@localhost"}

    def _config_writes(self) -> list[TabWrite]:
        def row(job: str, automation: str, schedule: str, params: dict[str, Any], **extra):
            values = {"job": job, "automation": automation, "schedule": schedule,
                      "enabled": True, "params": json.dumps(params), **extra}
            return [values.get(c.name, "") for c in tabs.JOB_COLUMNS]

        jobs = [
            [c.name for c in tabs.JOB_COLUMNS],
            row("heartbeat", "heartbeat", "every 10s", {}, notes="proves it is alive"),
            row("fetch-customers", "http_get", "every 15s",
                {"url": self.http.url("/customers"), "json_path": "data"},
                rate_limit="api", notes="GETs a local JSON API and counts records"),
            row("flaky-sync", "flaky", "every 20s", {"succeed_on_attempt": 2},
                backoff_initial_s=1, backoff_max_s=4, notes="fails once, retries, succeeds"),
            row("welcome-emails", "send_email", "every 30s",
                {"recipients": [{"email": f"{c['name'].lower()}@example.com",
                                 "name": c["name"]} for c in CUSTOMERS[:3]],
                 "vars": {"team": "Ops"}},
                template="welcome", rate_limit="smtp", notes="renders a template, sends mail"),
            row("slow-export", "sleep", "every 30s", {"seconds": 10}, timeout_s=2,
                max_attempts=2, backoff_initial_s=1, notes="runs past timeout_s on purpose"),
            row("broken-report", "always_fails", "manual", {"message": "no data source"},
                notes="run it with run-job to see a permanent failure"),
            row("welcome", "welcome_contacts", "every 30s", {"url": self.http.url("/contacts")},
                notes="pipeline: API pages → validate → enrich → render → SMTP"),
            row("contacts", "contacts_outreach", "every 30s", {"sheet": str(self.workbook)},
                notes="pipeline: the Contacts tab's rows, each row's outcome written back"),
        ]
        return [
            TabWrite(tabs.JOBS, jobs),
            TabWrite(tabs.RATE_LIMITS, [["name", "rate", "scope"], ["api", "2/second", "global"],
                                        ["smtp", "10/minute", "global"]]),
            TabWrite(tabs.TEMPLATES, [
                ["name", "subject", "body", "format"],
                ["welcome", "Welcome to sheetops, {{ name }}!",
                 "Hello {{ name }},\n\nThe {{ team }} team scheduled this email from a "
                 "spreadsheet.\n", "text"]]),
            TabWrite("Contacts", CONTACTS_TAB),
            TabWrite(tabs.SETTINGS, [["key", "value"], ["timezone", "UTC"],
                                     ["refresh_interval_s", "10"],
                                     ["status_flush_interval_s", "3"]]),
        ]

    def describe(self) -> str:
        return (f"demo workspace: {self.directory}\n"
                f"  workbook  {self.workbook}  (open it in LibreOffice/Excel while it runs)\n"
                f"  store     {self.store_path}\n"
                f"  local API {self.http.url('/customers')}, SMTP 127.0.0.1:{self.smtp.port}")

    def summary(self, store: Store) -> str:
        ok, failed, timeout = (store.count_runs(status=s) for s in (
            RunStatus.OK, RunStatus.FAILED, RunStatus.TIMEOUT))
        return (f"demo finished: {ok} ok, {failed} failed, {timeout} timed out; "
                f"{len(self.smtp.messages)} email(s) delivered to the local SMTP server.\n"
                f"See the Status, Runs and Errors tabs in {self.workbook}, and on its Contacts "
                f"tab each row's outcome (sheetops_status); for the dashboard "
                f"run: {_sheetops_command()} dashboard --sheet {self.workbook} "
                f"(from a checkout: make dashboard)")
