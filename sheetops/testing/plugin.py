"""The ``sheetops`` pytest plugin: fixtures for testing automations.

Installed with sheetops (entry point ``pytest11``), so a user's test is three lines::

    def test_fetch(sheetops_http, run_automation):
        sheetops_http.json("/items", [1, 2, 3])
        assert run_automation("http_get", params={"url": sheetops_http.url("/items")}
                              )["records_in"] == 3

Fixtures (each fresh per test, each prefixed so it never shadows a project's own):

* ``sheetops_store``: a :class:`~sheetops.store.Store` on a temporary SQLite file, with
  ``SHEETOPS_STORE_URL`` pointing at it;
* ``sheetops_workbook``: the path of a temporary ``ops.xlsx`` config (every tab, no
  examples), with ``SHEETOPS_SHEET`` pointing at it;
* ``sheetops_google_sheet``: the URL of a config sheet on a local Google Sheets emulator
  (needs ``sheetops[google]``; skipped with the reason when it is missing);
* ``sheetops_smtp``: a loopback SMTP server the SMTP settings point at; it keeps what it
  receives (``.messages``, ``.wait_for(n)``) and refuses ``refused@example.com`` (550);
* ``sheetops_http``: a loopback HTTP server with scripted replies, recording requests;
* ``run_automation(name, params=…, template=…, dry_run=…)``: calls a registered
  automation with a real ``ctx`` and returns its result (``run_automation.last`` is the
  :class:`~sheetops.testing.automation.AutomationCall`, with ``ctx.record_failures``).

Only pytest and sheetops itself are imported when the plugin loads; each server is
imported inside its fixture.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

#: the address the captured-email server answers 550 for, to test a refused recipient
REFUSED_ADDRESS = "refused@example.com"


def _clear_settings() -> None:
    from sheetops.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def sheetops_store(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A store on a fresh SQLite file that sheetops' settings point at."""
    from sheetops.store import Store

    url = f"sqlite:///{tmp_path_factory.mktemp('sheetops-store') / 'sheetops.db'}"
    monkeypatch.setenv("SHEETOPS_STORE_URL", url)
    _clear_settings()
    store = Store(url)
    yield store
    store.dispose()
    _clear_settings()


@pytest.fixture
def sheetops_workbook(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary ``ops.xlsx`` made like ``sheetops init --no-examples``."""
    from sheetops.connectors.sheets.workbook import WorkbookSheet
    from sheetops.engine import init_sheet
    from sheetops.registry import discover_from_settings

    discover_from_settings()
    path = tmp_path_factory.mktemp("sheetops-config") / "ops.xlsx"
    init_sheet(WorkbookSheet(path), examples=False)
    monkeypatch.setenv("SHEETOPS_SHEET", str(path))
    _clear_settings()
    yield path
    _clear_settings()


@pytest.fixture
def sheetops_google_sheet(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The URL of a config sheet (every tab) on a local Google Sheets emulator."""
    if importlib.util.find_spec("gspread") is None:
        pytest.skip("sheetops_google_sheet needs the Google backend: "
                    "pip install 'sheetops[google]'")
    from sheetops.connectors.sheets.factory import open_sheet
    from sheetops.engine import init_sheet
    from sheetops.registry import discover_from_settings
    from sheetops.testing.emulator import SheetsEmulator

    with SheetsEmulator() as emulator:
        for name, value in (("SHEETOPS_SHEETS_EMULATOR", emulator.url),
                            ("SHEETOPS_SHEETS_READS_PER_MINUTE", "6000"),
                            ("SHEETOPS_SHEETS_WRITES_PER_MINUTE", "6000"),
                            ("SHEETOPS_SHEETS_TIMEOUT_S", "10")):
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("SHEETOPS_GOOGLE_CREDENTIALS", raising=False)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        _clear_settings()
        discover_from_settings()
        url = emulator.sheet_url(emulator.create_spreadsheet("sheetops test"))
        init_sheet(open_sheet(url), examples=False)
        monkeypatch.setenv("SHEETOPS_SHEET", url)
        _clear_settings()
        yield url
    _clear_settings()


@pytest.fixture
def sheetops_smtp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A loopback SMTP server (aiosmtpd) that keeps every message it accepts."""
    from sheetops.testing.smtp import SmtpServer

    with SmtpServer(refuse={REFUSED_ADDRESS}) as server:
        monkeypatch.setenv("SHEETOPS_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SHEETOPS_SMTP_PORT", str(server.port))
        monkeypatch.setenv("SHEETOPS_SMTP_SENDER", "sheetops@example.com")
        _clear_settings()
        yield server
    _clear_settings()


@pytest.fixture
def sheetops_http() -> Iterator[Any]:
    """A loopback HTTP server: ``.json(path, body)``, ``.sequence(...)``, ``.requests``."""
    from sheetops.testing.http import HttpServer

    with HttpServer() as server:
        yield server


class AutomationRunner:
    """``run_automation(name, params=…)``: the automation's result dict."""

    def __init__(self) -> None:
        from sheetops.registry import discover_from_settings

        discover_from_settings()
        self.last: Any = None
        self._ready: set[str] = set()

    def __call__(self, name: str, params: Mapping[str, Any] | None = None,
                 **options: Any) -> dict[str, Any]:
        from sheetops.settings import get_settings
        from sheetops.testing.automation import call_automation

        options.setdefault("store_url", get_settings().store_url)
        if options["store_url"] and options["store_url"] not in self._ready:
            from sheetops.store import Store

            Store(options["store_url"]).dispose()  # made and migrated, as `run` would
            self._ready.add(options["store_url"])
        self.last = call_automation(name, params, **options)
        return self.last.result


@pytest.fixture
def run_automation() -> AutomationRunner:
    """Call a registered automation with a real ``ctx``; returns its result."""
    return AutomationRunner()
