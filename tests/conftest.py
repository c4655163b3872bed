"""Shared fixtures, kept small on purpose.

* ``isolated_env`` (autouse): no ``SHEETOPS_*`` variable of the caller's shell leaks into
  a test; the store is a fresh SQLite file; the settings cache is cleared.
* ``workbook``: a fresh workbook made by the ``sheetops init`` logic, with helpers to
  write and read tabs (:class:`WorkbookHelper`).
* ``require_service(name, host, port)`` (also as the ``services`` fixture): skip with a
  clear reason when a TCP service is down, or fail when ``SHEETOPS_REQUIRE_SERVICES=1``.
* ``store_url`` and ``store``: the test's SQLite store; a test marked
  ``each_store_backend`` (or a module with ``pytestmark = pytest.mark.each_store_backend``)
  runs once per backend (a fresh PostgreSQL database each, from ``fresh_pg_database``).
* ``wait_for(predicate, timeout, what)``: poll until a condition holds (never a sleep).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from sheetops.settings import get_settings
from sheetops.testing.postgres import PG_ADMIN, fresh_pg_database  # noqa: F401  (tests import them from here)

T = TypeVar("T")
TESTS_DIR = Path(__file__).resolve().parent
#: Variables a test run may legitimately carry in (CI switches, not sheetops settings).
KEEP_ENV = ("SHEETOPS_REQUIRE_SERVICES",)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Clear leaking ``SHEETOPS_*`` variables and point the store at a temporary file."""
    for name in list(os.environ):
        if name.startswith("SHEETOPS_") and name not in KEEP_ENV:
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'sheetops.db'}"
    monkeypatch.setenv("SHEETOPS_STORE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, what: str = "the condition",
             *, interval: float = 0.1) -> T:
    """``predicate()``'s first truthy value, polled every ``interval`` s until ``timeout``
    (a condition, never a fixed sleep). A predicate that raises counts as not yet (the
    workbook is being replaced, the store is busy); the last error is in the failure."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            value, error = None, exc  # type: ignore[assignment]
        if value:
            return value
        if time.monotonic() > deadline:
            last = f" (last error: {type(error).__name__}: {error})" if error else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{last}")
        time.sleep(interval)


def require_service(name: str, host: str, port: int, timeout: float = 1.0) -> None:
    """Skip the test when ``host:port`` does not accept TCP connections, unless
    ``SHEETOPS_REQUIRE_SERVICES=1`` (CI), where a missing service fails the test."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc})"
    if os.environ.get("SHEETOPS_REQUIRE_SERVICES", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; SHEETOPS_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)



#: The store backends a test marked ``each_store_backend`` runs on.
STORE_BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``each_store_backend`` (itself, or its module's ``pytestmark``) that
    uses ``store_url`` or ``store`` runs once per backend in :data:`STORE_BACKENDS`."""
    if (metafunc.definition.get_closest_marker("each_store_backend")
            and "store_url" in metafunc.fixturenames):
        metafunc.parametrize("store_url", STORE_BACKENDS, indirect=True)


@pytest.fixture
def store_url(request: pytest.FixtureRequest, isolated_env: str, services) -> Iterator[str]:
    """The test's store URL: its own SQLite file (``isolated_env``), or on the
    ``postgresql`` backend (``each_store_backend``) a fresh PostgreSQL database dropped
    afterwards (skipped when PostgreSQL is absent)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield isolated_env
        return
    services.postgres()
    with fresh_pg_database("sheetops_test") as url:
        yield url


@pytest.fixture
def services() -> SimpleNamespace:
    """``services.require(name, host, port)`` plus the machine's usual endpoints."""
    return SimpleNamespace(
        require=require_service,
        postgres=lambda: require_service("PostgreSQL", "127.0.0.1", 5432),
        redis=lambda: require_service("Redis", "127.0.0.1", 6379),
        rabbitmq=lambda: require_service("RabbitMQ", "127.0.0.1", 5672),
    )


class WorkbookHelper:
    """A workbook created like ``sheetops init`` (no example rows) and ways to edit it.

    Writes go through the workbook backend (re-read, temporary file, atomic replace), the
    way an editor saving the file would replace it.
    """

    def __init__(self, path: Path) -> None:
        from sheetops.connectors.sheets.workbook import WorkbookSheet

        self.path = path
        self.sheet = WorkbookSheet(path)

    def write(self, tab: str, header: Sequence[str], rows: Sequence[Sequence[Any]] = (),
              clear_rows: int = 50) -> None:
        """Replace ``tab`` with ``header`` and ``rows`` (blanking ``clear_rows`` below
        and the columns to the right)."""
        from sheetops.sheets import TabWrite

        values = [list(header), *[list(r) for r in rows]]
        width = max(30, *(len(r) for r in values))  # blank what was there before
        values += [[""] * width for _ in range(clear_rows)]
        self.sheet.write_batch([TabWrite(tab, values, width=width)])

    def jobs(self, *rows: dict[str, Any], header: Sequence[str] | None = None) -> None:
        """Write the Jobs tab from dicts (column name → value); the header defaults to
        every key used, in first-seen order."""
        if header is None:
            header = list(dict.fromkeys(k for r in rows for k in r))
        self.write("Jobs", header, [[r.get(c, "") for c in header] for r in rows])

    def settings(self, **values: Any) -> None:
        self.write("Settings", ["key", "value"], [[k, str(v)] for k, v in values.items()])

    def rows(self, tab: str) -> list[list[Any]]:
        """The tab's rows as openpyxl values (header first, trailing blank rows dropped)."""
        from openpyxl import load_workbook

        wb = load_workbook(self.path)
        try:
            rows = [list(r) for r in wb[tab].iter_rows(values_only=True)]
        finally:
            wb.close()
        while rows and all(v in (None, "") for v in rows[-1]):
            rows.pop()
        return rows

    def records(self, tab: str) -> list[dict[str, Any]]:
        """The tab's data rows as dicts keyed by header."""
        rows = self.rows(tab)
        if not rows:
            return []
        header = [str(h) if h not in (None, "") else "" for h in rows[0]]
        return [{h: v for h, v in zip(header, r, strict=False) if h} for r in rows[1:]]


@pytest.fixture
def workbook(tmp_path: Path) -> WorkbookHelper:
    """A fresh ``ops.xlsx`` with every tab, header notes and validations, no examples."""
    from sheetops.engine import init_sheet
    from sheetops.registry import registry

    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    registry.discover(["automations_for_tests"])
    helper = WorkbookHelper(tmp_path / "ops.xlsx")
    init_sheet(helper.sheet, examples=False)
    return helper


@pytest.fixture
def store(store_url: str):
    """A store on ``store_url``: the test's own SQLite file, or each backend."""
    from sheetops.store import Store

    s = Store(store_url)
    yield s
    s.dispose()


@pytest.fixture
def forget_pipelines() -> Iterator[None]:
    """Forget the pipelines a test defines (``PIPELINES`` as it was before it)."""
    from sheetops.pipelines import PIPELINES

    before = dict(PIPELINES)
    yield
    PIPELINES.clear()
    PIPELINES.update(before)


@pytest.fixture
def test_automations() -> None:
    """Register ``tests/automations_for_tests.py`` (the probes tests run)."""
    from sheetops.registry import registry

    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    registry.discover(["automations_for_tests"])


@pytest.fixture
def root_logging():
    """Restore the root logger after a test that calls ``setup_logging``."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def smtp(sheetops_smtp):
    """The plugin's captured-email server (``sheetops.testing.plugin``); it refuses
    ``refused@example.com`` with 550."""
    return sheetops_smtp
