"""Bring a store's schema to the revision this code expects, or say why not.

A store is in one of four states:

* **empty** (no tables): the current schema is created and stamped with the head
  revision;
* **unversioned** (tables, no ``alembic_version``): written by sheetops 0.1.0; stamped as
  the baseline, then upgraded in place (nothing is dropped);
* **behind**: upgraded to head;
* **newer than the code** (a revision this code does not know): refused with
  :class:`StoreTooNew` — one sentence, never a traceback.

Only one process migrates at a time, under the store's own lease row ``store:migrate``
(a plain row, no advisory lock or session state, so it works behind PgBouncer); another
process that finds the lease taken waits for the store to reach head. The dashboard
never migrates: it opens the store with ``migrate=False`` and gets
:class:`StoreNeedsMigration` when the store is not at head.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sheetops.errors import StoreError
from sheetops.store import schema
from sheetops.store.db import Database
from sheetops.store.leases import LeaseStore

BASELINE = "0001"
MIGRATION_LEASE = "store:migrate"
_LEASE_TTL_S = 600.0


class StoreTooNew(StoreError):
    """The store was written by a newer sheetops (a revision this code does not know)."""


class StoreNeedsMigration(StoreError):
    """The store is older than the code and this process may not migrate it."""


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` found and left: revisions before and after (``None`` before
    = an empty or unversioned store)."""

    before: str | None
    after: str
    state: str  # "empty", "unversioned", "behind", "current"

    @property
    def changed(self) -> bool:
        return self.state != "current"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The revision this code writes."""
    return str(_script().get_current_head())


def _state(conn: sa.Connection) -> tuple[str, str | None]:
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        if current == head():
            return "current", current
        try:
            _script().get_revision(current)
        except Exception:
            return "newer", current
        return "behind", current
    if sa.inspect(conn).has_table(schema.runs.name):
        return "unversioned", None
    return "empty", None


def current_revision(db: Database) -> str | None:
    """The store's revision (``None``: empty or written by 0.1.0)."""
    with db.engine.connect() as conn:
        return _state(conn)[1]


def check(db: Database) -> None:
    """Raise unless the store is at this code's head revision (for readers)."""
    try:
        with db.engine.connect() as conn:
            state, current = _state(conn)
    except sa.exc.OperationalError as exc:
        raise StoreError(f"cannot open the store at {db.safe_url}: {exc.orig}") from None
    if state == "newer":
        raise _too_new(db, current)
    if state != "current":
        raise StoreNeedsMigration(
            f"the store at {db.safe_url} needs `sheetops migrate` (it is at "
            f"{_describe(state, current)}; this sheetops expects revision {head()})")


def _too_new(db: Database, revision: str | None) -> StoreTooNew:
    return StoreTooNew(f"the store at {db.safe_url} was written by a newer sheetops "
                       f"(revision {revision}); upgrade sheetops")


def _describe(state: str, current: str | None) -> str:
    return {"empty": "no tables yet", "unversioned": "the schema of sheetops 0.1.0"}.get(
        state, f"revision {current}")


def _upgrade(db: Database, state: str) -> None:
    with db.engine.begin() as conn:
        config = _config()
        config.attributes["connection"] = conn
        if state == "empty":
            schema.metadata.create_all(conn)
            command.stamp(config, "head")
            return
        if state == "unversioned":
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def migrate(db: Database, wait_s: float = 300.0) -> MigrationReport:
    """Create or upgrade the store to head (see the module docstring); idempotent."""
    try:
        with db.engine.connect() as conn:
            state, before = _state(conn)
    except sa.exc.OperationalError as exc:
        raise StoreError(f"cannot open the store at {db.safe_url}: {exc.orig}") from None
    if state == "current":
        return MigrationReport(before, head(), state)
    if state == "newer":
        raise _too_new(db, before)
    schema.leases.create(db.engine, checkfirst=True)
    leases = LeaseStore(db)
    holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    deadline = time.monotonic() + wait_s
    while not leases.try_lease(MIGRATION_LEASE, holder, _LEASE_TTL_S):
        if time.monotonic() > deadline:
            raise StoreNeedsMigration(
                f"the store at {db.safe_url} is being migrated by another process "
                f"({MIGRATION_LEASE} lease); try again when it is done")
        threading.Event().wait(0.2)
        with db.engine.connect() as conn:
            state, _ = _state(conn)
        if state == "current":
            return MigrationReport(before, head(), "current")
    try:
        with db.engine.connect() as conn:
            state, before = _state(conn)  # another process may have done it meanwhile
        if state == "newer":
            raise _too_new(db, before)
        if state != "current":
            _upgrade(db, state)
    finally:
        leases.release_lease(MIGRATION_LEASE, holder)
    return MigrationReport(before, head(), state)
