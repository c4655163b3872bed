"""Many clients, one system: which sheets one ``sheetops run`` serves, where each
client's data lives, and how their engines run side by side.

A client (or team) is a name and a config sheet: its own jobs, rate limits, templates
and status tabs. Clients come from ``--sheet NAME=LOCATION`` (repeated) or a clients
file (``SHEETOPS_CLIENTS``, TOML, one ``name = "sheet"`` line per client). Each client
gets an :class:`~sheetops.engine.Engine` of its own — config snapshot, scheduler, status
writer, leader lease, worker pool — over a store *namespace* of its own, so job names
never clash and one client's runs never show in another's tabs:

* SQLite (the default): the store file beside each workbook, as for a single sheet
  (``sheetops.<client>.db`` in the working folder for a Google Sheet);
* ``SHEETOPS_STORE_URL`` with ``{client}`` in it: that URL per client (a file, or a
  PostgreSQL database per client);
* a PostgreSQL URL without ``{client}``: one database, a schema ``sheetops_<client>``
  per client (selected through ``search_path``, created and migrated per schema).

:class:`ClientGroup` starts every client's engine; a client whose sheet cannot be read
(a corrupted workbook, Google down) or whose store cannot be opened is reported and
retried in the background, and never stops another client's jobs. Everything done for
a client runs in its :func:`~sheetops.client_context.serving` context, so its log lines,
metrics and threads name it.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sheetops.client_context import serving
from sheetops.errors import SheetopsError
from sheetops.settings import Settings
from sheetops.store.db import in_schema

if TYPE_CHECKING:
    from sheetops.engine import Engine

log = logging.getLogger("sheetops.clients")

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
NAME_RULE = "a lowercase letter, then up to 39 lowercase letters, digits or _"
PLACEHOLDER = "{client}"
#: How often a client that could not start (unreadable sheet, store down) is retried.
RETRY_S = 30.0


class ClientsError(SheetopsError):
    """The clients given cannot be served as asked (a bad name, a clash, a bad file)."""


@dataclass(frozen=True)
class Client:
    """One client: its name, its config sheet and the URL of its own store."""

    name: str
    sheet: str
    store_url: str


def is_named(value: str) -> bool:
    """``acme=acme.xlsx``: a ``--sheet`` value that names its client (what comes before
    ``=`` is a name, not part of a path or URL)."""
    name, sep, _ = value.partition("=")
    return bool(sep) and not any(ch in name for ch in "/\\:.")


def parse_sheet_args(values: Sequence[str]) -> list[tuple[str, str]]:
    """``--sheet`` values as (name, location) pairs: ``acme=acme.xlsx`` names the client;
    a bare workbook path is named after its file (``Acme Ops.xlsx`` → ``acme_ops``)."""
    pairs = []
    for value in values:
        if is_named(value):
            name, _, location = value.partition("=")
            pairs.append((name.strip(), location.strip()))
        elif value.lower().endswith(".xlsx"):
            pairs.append((default_name(value), value))
        else:
            raise ClientsError(f"--sheet {value}: name this client, e.g. --sheet "
                               f"acme={value} (a name is {NAME_RULE})")
    return pairs


def default_name(location: str) -> str:
    """A client name from a workbook's file name."""
    stem = re.sub(r"[^a-z0-9_]+", "_", Path(location).stem.lower()).strip("_")
    stem = stem if stem[:1].isalpha() else f"c_{stem}"
    return stem[:40]


def read_clients_file(path: str | Path) -> list[tuple[str, str]]:
    """The (name, sheet) pairs of a clients file; a workbook path is relative to the
    file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ClientsError(f"cannot read the clients file {path}: "
                           f"{exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ClientsError(f"{path}: not a clients file ({exc}); write one line per "
                           'client: acme = "acme.xlsx"') from None
    pairs = []
    for name, sheet in data.items():
        if not isinstance(sheet, str) or not sheet.strip():
            raise ClientsError(f"{path}: client {name!r} needs its sheet as text, e.g. "
                               f'{name} = "{name}.xlsx"')
        sheet = sheet.strip()
        if sheet.lower().endswith(".xlsx") and not Path(sheet).is_absolute():
            sheet = str((path.parent / sheet).resolve())
        pairs.append((name, sheet))
    if not pairs:
        raise ClientsError(f"{path} names no client; write one line per client: "
                           'acme = "acme.xlsx"')
    return pairs


def store_url_for(settings: Settings, name: str, sheet: str) -> str:
    """The store of client ``name`` when one run serves several clients."""
    base = settings.store_url
    if PLACEHOLDER in base:
        return base.replace(PLACEHOLDER, name)
    if base.startswith("postgresql"):
        return in_schema(base, f"sheetops_{name}")
    if base:
        raise ClientsError(
            "SHEETOPS_STORE_URL names one store, but each client needs its own: put "
            f"{PLACEHOLDER} in it (e.g. sqlite:///stores/{PLACEHOLDER}.db), use a "
            "PostgreSQL URL (a schema per client), or unset it to keep each store beside "
            "its workbook")
    if sheet.lower().endswith(".xlsx"):
        return settings.resolved_store_url(sheet)
    return f"sqlite:///{Path.cwd() / f'sheetops.{name}.db'}"


def resolve(pairs: Sequence[tuple[str, str]], settings: Settings) -> list[Client]:
    """Clients with their stores; a bad name, a name or store used twice is refused."""
    clients: list[Client] = []
    seen: dict[str, str] = {}
    for name, sheet in pairs:
        if not NAME.match(name):
            raise ClientsError(f"client name {name!r} is not allowed: use {NAME_RULE}")
        if any(c.name == name for c in clients):
            raise ClientsError(f"two clients are named {name!r}; give each its own name "
                               f"(--sheet {name}2=…)")
        url = store_url_for(settings, name, sheet)
        if url in seen:
            raise ClientsError(f"clients {seen[url]!r} and {name!r} would share one store; "
                               "give each its own sheet (or put {client} in "
                               "SHEETOPS_STORE_URL)")
        seen[url] = name
        clients.append(Client(name, sheet, url))
    return clients


def from_settings(settings: Settings) -> list[Client]:
    """The clients of ``SHEETOPS_CLIENTS`` ([] when it is not set): what the dashboard
    offers in its client selector."""
    return resolve(read_clients_file(settings.clients), settings) if settings.clients else []


def client_of(settings: Settings, sheet: str | None) -> Client | None:
    """The client of ``SHEETOPS_CLIENTS`` whose sheet ``sheet`` is (default
    SHEETOPS_SHEET), or ``None``: so a ``run-job`` or a one-sheet ``run`` of a client's
    sheet uses that client's store and rate limits, as the multi-client run does."""
    def same(a: str, b: str) -> bool:
        if a.lower().endswith(".xlsx") and b.lower().endswith(".xlsx"):
            return Path(a).resolve() == Path(b).resolve()
        return a.strip() == b.strip()

    target = sheet or settings.sheet
    if not (settings.clients and target):
        return None
    return next((c for c in from_settings(settings) if same(c.sheet, target)), None)


def store_url_of(settings: Settings, sheet: str | None) -> str:
    """The store ``run`` uses for ``sheet``: its client's (``SHEETOPS_CLIENTS``) when a
    client has it, so ``run-job``, ``migrate`` and the dashboard find the same runs;
    else SHEETOPS_STORE_URL or the file beside the workbook."""
    found = client_of(settings, sheet)
    if found is not None:
        return found.store_url
    target = sheet or settings.sheet
    if PLACEHOLDER in settings.store_url:
        raise ClientsError(f"SHEETOPS_STORE_URL has {PLACEHOLDER} in it, but "
                           f"{target or 'this sheet'} is no client's sheet: name it "
                           "(--sheet acme=…) or list it in SHEETOPS_CLIENTS")
    return settings.resolved_store_url(sheet)


class ClientGroup:
    """Every client's engine in one process. ``build`` makes a client's engine (opens
    its sheet and store); a client whose engine cannot be built or started is logged
    and retried every ``retry_s`` while the others run."""

    def __init__(self, clients: Sequence[Client], build: Callable[[Client], Engine],
                 retry_s: float = RETRY_S) -> None:
        self.clients = list(clients)
        self.build = build
        self.retry_s = retry_s
        self.engines: dict[str, Engine] = {}
        self.failed: dict[str, str] = {}  # client → why it is not running
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._retry: threading.Thread | None = None

    def start(self) -> None:
        """Start every client that can start; raise only when none can."""
        starting = [threading.Thread(target=self._try_start, args=(client,),
                                     name=f"sheetops-start-{client.name}")
                    for client in self.clients]  # side by side: a slow sheet delays none
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        if not self.engines:
            raise ClientsError("no client could start: " + "; ".join(  # in their order
                f"{c.name}: {self.failed[c.name]}" for c in self.clients
                if c.name in self.failed))
        self._retry = threading.Thread(target=self._retry_loop, name="sheetops-clients",
                                       daemon=True)
        self._retry.start()

    def _try_start(self, client: Client) -> bool:
        with serving(client.name):  # what it builds and starts names the client
            return self._start(client)

    def _start(self, client: Client) -> bool:
        engine = None
        try:
            engine = self.build(client)
            engine.start()
        except Exception as exc:  # a SheetopsError, or anything a broken sheet raises
            if engine is not None:  # the next try builds a new one
                engine.store.dispose()
            why = str(exc) if isinstance(exc, SheetopsError) else f"{type(exc).__name__}: {exc}"
            if self.failed.get(client.name) != why:  # once, again only when it changes
                log.error("client %s cannot start (%s); its jobs wait, the other clients "
                          "run; retrying every %gs", client.name, why, self.retry_s)
            self.failed[client.name] = why
            return False
        with self._lock:
            if self._stop.is_set():  # stopped while this one was starting
                engine.stop()
                return False
            self.engines[client.name] = engine
        if self.failed.pop(client.name, None) is not None:
            log.warning("client %s started after all", client.name)
        return True

    def _retry_loop(self) -> None:
        while not self._stop.wait(self.retry_s):
            for client in self.clients:
                if client.name in self.failed and not self._stop.is_set():
                    self._try_start(client)

    def stop(self) -> None:
        """Stop every engine at once (each finishes its running attempts and flushes its
        sheet), so one slow client does not hold up the others' shutdown."""
        with self._lock:
            self._stop.set()
            engines = list(self.engines.items())
        threads = [threading.Thread(target=self._stop_one, args=(name, engine),
                                    name=f"sheetops-stop-{name}") for name, engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._retry is not None:  # a client starting now stops itself when done
            self._retry.join(60)

    @staticmethod
    def _stop_one(name: str, engine: Engine) -> None:
        with serving(name):
            engine.stop()
