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

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from sheetops.errors import StoreError
from sheetops.store import schema
from sheetops.store.db import Database, ensure_schema
from sheetops.store.leases import LeaseStore

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("sheetops.store")

#: Every revision in ``migrations/versions``, oldest first; the last is the head this code
#: writes. Kept here so opening a store that is up to date (or empty) never imports
#: Alembic; ``tests/test_migrations.py`` checks it against the scripts.
REVISIONS = ("0001", "0002", "0003", "0004", "0005", "0006", "0008", "0010", "0011",
             "0012", "0013")
BASELINE = REVISIONS[0]
HEAD = REVISIONS[-1]
MIGRATION_LEASE = "store:migrate"
_LEASE_TTL_S = 600.0
# Alembic's own version table, as ``alembic stamp`` creates it.
_version_table = sa.Table(
    "alembic_version", sa.MetaData(),
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


class StoreState(StrEnum):
    """Where a store's schema stands against this code."""

    EMPTY = "empty"              # no tables
    UNVERSIONED = "unversioned"  # tables, no alembic_version: written by 0.1.0
    BEHIND = "behind"            # a known revision before head
    CURRENT = "current"          # at head
    NEWER = "newer"              # a revision this code does not know


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
    state: StoreState

    @property
    def changed(self) -> bool:
        return self.state != StoreState.CURRENT


def alembic_config() -> Config:
    """Alembic's configuration, in code: the scripts in ``migrations/`` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def head() -> str:
    """The revision this code writes."""
    return HEAD


def _state(conn: sa.Connection) -> tuple[StoreState, str | None]:
    inspector = sa.inspect(conn)
    if inspector.has_table(_version_table.name):
        current = conn.execute(sa.select(_version_table.c.version_num)).scalar()
        if current is not None:
            if current == HEAD:
                return StoreState.CURRENT, current
            return (StoreState.BEHIND if current in REVISIONS else StoreState.NEWER), current
    if inspector.has_table(schema.runs.name):
        return StoreState.UNVERSIONED, None
    return StoreState.EMPTY, None


def _read_state(db: Database) -> tuple[StoreState, str | None]:
    """:func:`_state`, with a store that cannot be opened (or is not a database) as one
    sentence."""
    try:
        with db.engine.connect() as conn:
            return _state(conn)
    except sa.exc.OperationalError as exc:
        raise StoreError(f"cannot open the store at {db.safe_url}: {exc.orig}") from None
    except sa.exc.DatabaseError as exc:  # e.g. a file that is not a database
        raise StoreError(f"cannot use the store {db.safe_url} (SHEETOPS_STORE_URL): "
                         f"{exc.orig}") from None


def current_revision(db: Database) -> str | None:
    """The store's revision (``None``: empty or written by 0.1.0)."""
    with db.engine.connect() as conn:
        return _state(conn)[1]


def check(db: Database) -> None:
    """Raise unless the store is at this code's head revision (for readers)."""
    state, current = _read_state(db)
    if state == StoreState.NEWER:
        raise _too_new(db, current)
    if state != StoreState.CURRENT:
        raise StoreNeedsMigration(
            f"the store at {db.safe_url} needs `sheetops migrate` (it is at "
            f"{_describe(state, current)}; this sheetops expects revision {HEAD})")


def _too_new(db: Database, revision: str | None) -> StoreTooNew:
    return StoreTooNew(f"the store at {db.safe_url} was written by a newer sheetops "
                       f"(revision {revision}); upgrade sheetops")


def _describe(state: StoreState, current: str | None) -> str:
    words = {StoreState.EMPTY: "no tables yet",
             StoreState.UNVERSIONED: "the schema of sheetops 0.1.0"}
    return words.get(state, f"revision {current}")


def _upgrade(db: Database, state: StoreState, before: str | None) -> None:
    if state == StoreState.EMPTY:  # the current schema at once, stamped as head
        with db.engine.begin() as conn:
            schema.metadata.create_all(conn)
            _version_table.create(conn, checkfirst=True)
            conn.execute(sa.insert(_version_table).values(version_num=HEAD))
        return
    logging.getLogger("alembic").setLevel(logging.WARNING)  # sheetops logs what it did
    from alembic import command

    with db.engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        if state == StoreState.UNVERSIONED:
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")
    log.warning("upgraded the store at %s from %s to revision %s", db.safe_url,
                before or "the schema of sheetops 0.1.0", HEAD)


def _create_leases(db: Database) -> None:
    """The lease table the migration is done under (0.1.0 has it; an empty store gets
    it first). Two processes creating it at once: one wins, the other finds it."""
    try:
        schema.leases.create(db.engine, checkfirst=True)
    except sa.exc.DBAPIError:
        with db.engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema.leases.name):
                raise


def migrate(db: Database, wait_s: float = 300.0) -> MigrationReport:
    """Create or upgrade the store to head (see the module docstring); idempotent. A
    client's schema (:func:`~sheetops.store.db.in_schema`) is created first."""
    ensure_schema(db.url)
    state, before = _read_state(db)
    if state == StoreState.CURRENT:
        return MigrationReport(before, HEAD, state)
    if state == StoreState.NEWER:
        raise _too_new(db, before)
    _create_leases(db)
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
        if state == StoreState.CURRENT:
            return MigrationReport(before, HEAD, StoreState.CURRENT)
    try:
        with db.engine.connect() as conn:
            state, before = _state(conn)  # another process may have done it meanwhile
        if state == StoreState.NEWER:
            raise _too_new(db, before)
        if state != StoreState.CURRENT:
            _upgrade(db, state, before)
    finally:
        leases.release_lease(MIGRATION_LEASE, holder)
    return MigrationReport(before, HEAD, state)
