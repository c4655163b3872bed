"""One SQLAlchemy engine per store URL, set up the same way for every part of the store.

SQLite files get WAL, a busy timeout and (on builds without the math functions) a
Python ``ln()`` for the rollups' histogram buckets; a read-only SQLite URI
(``sqlite:///file:…?mode=ro&uri=true``) is left in the journal mode it has.
PostgreSQL's pooled connections are checked before use when they sat idle
(:func:`ping_when_idle`). :class:`Database` is what every focused store holds.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.pool import NullPool

from sheetops.errors import StoreError, StoreUnavailable

#: libpq's transaction status of a connection outside any transaction
_IDLE = 0

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and the dashboard."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<invalid store URL>"


_SEARCH_PATH = re.compile(r"-c\s*search_path=([a-z_][a-z0-9_]*)")


def in_schema(url: str, schema: str) -> str:
    """The PostgreSQL ``url`` with every connection's ``search_path`` set to ``schema``
    (libpq's ``options``): a store of its own inside one database, e.g. one per client.
    :func:`ensure_schema` creates the schema; the migrations run inside it."""
    parsed = make_url(url)
    options = " ".join(filter(None, [parsed.query.get("options", ""),
                                     f"-csearch_path={schema}"]))
    return parsed.update_query_dict({"options": options}).render_as_string(
        hide_password=False)


def url_schema(url: str) -> str | None:
    """The schema :func:`in_schema` put in ``url`` (``None`` for the default one)."""
    if not url.startswith("postgresql"):
        return None
    found = _SEARCH_PATH.search(str(make_url(url).query.get("options", "")))
    return found.group(1) if found else None


def ensure_schema(url: str) -> None:
    """Create the schema a store URL selects, if it is missing (a no-op for SQLite and
    for a URL without one). Run before the store's engine first connects: PostgreSQL
    reports no current schema to a connection whose ``search_path`` names none that
    exists."""
    schema = url_schema(url)
    if schema is None:
        return
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            current = conn.exec_driver_sql("SELECT current_schema()").scalar()
    except Exception as exc:
        raise StoreError(f"cannot create the schema {schema} in {safe_url(url)}: "
                         f"{exc}") from None
    finally:
        engine.dispose()
    if current != schema:  # e.g. a pooler that drops the options startup parameter
        raise StoreError(f"connections to {safe_url(url)} do not use the schema {schema} "
                         f"(current schema: {current}); a pooler may have dropped the "
                         "options parameter: give each client its own database instead "
                         "({client} in the database name)")


def _read_only(url: str) -> bool:
    return url.startswith("sqlite") and "mode=ro" in url


def sqlite_setup(read_only: bool) -> Any:
    """The connect hook every SQLite engine of the store gets (the queue's pool too)."""
    def setup(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=OFF")
        try:
            cursor.execute("SELECT ln(2.0)")
        except Exception:  # SQLite built without the math functions
            dbapi_connection.create_function(
                "ln", 1, lambda x: math.log(x) if x is not None and x > 0 else None,
                deterministic=True)
        cursor.close()
    return setup


@contextlib.contextmanager
def connection_lost_as_unavailable() -> Iterator[None]:
    """Raise a lost connection inside the block as :class:`StoreUnavailable` (one line
    for the log, a retry for the caller) rather than as the driver's error."""
    try:
        yield
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise StoreUnavailable(f"the store ended the connection mid-write ("
                               f"{type(exc.orig).__name__}: {str(exc.orig).strip()}); "
                               "nothing was written") from None


#: A pooled PostgreSQL connection idle longer than this is pinged before it is used.
PING_IDLE_S = 1.0


def ping_when_idle(engine: Engine, idle_s: float = PING_IDLE_S) -> None:
    """Check a pooled connection before use only when it sat idle more than ``idle_s``
    seconds (one that fails is replaced, as with ``pool_pre_ping``): a connection used a
    moment ago is alive, and a ping on every checkout is one more round trip per
    transaction — as many as a whole pipelined transaction (:meth:`Database.one_trip`).
    A server restarted within ``idle_s`` of a connection's last use shows as a failed
    statement with the connection invalidated; :meth:`RunStore.record
    <sheetops.store.runs.RunStore.record>` then writes its batch once more, other callers
    handle it as any other store error (and the pool opens new connections)."""
    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:  # the dialect's own ping (the one pool_pre_ping uses): leaves no transaction
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(str(exc)) from exc
        if not alive:
            raise DisconnectionError("the pooled connection did not answer a ping")

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def make_engine(url: str) -> Engine:
    """A new engine for ``url`` (NullPool for SQLite files: connections are cheap and
    never shared between threads; PostgreSQL's checked when idle, :func:`ping_when_idle`)."""
    try:
        engine = create_engine(
            url, future=True,
            **({"poolclass": NullPool} if url.startswith("sqlite") and ":memory:" not in url
               else {}))
    except (ArgumentError, ImportError, ValueError) as exc:  # ValueError: a bad port
        raise StoreError(f"cannot use store URL {safe_url(url)}: {exc}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", sqlite_setup(_read_only(url)))
    else:
        ping_when_idle(engine)
    return engine


def shared_engine(url: str) -> Engine:
    """The one engine of this process for ``url`` (used where a part of the store is
    opened from a URL alone, e.g. deliveries in a worker process)."""
    with _lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def _pipeline_mode(engine: Engine) -> bool:
    if engine.dialect.driver != "psycopg":
        return False
    from psycopg import Pipeline

    return bool(Pipeline.is_supported())


class Database:
    """An engine and the few dialect differences the stores need."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        if engine is None:
            engine = make_engine(url)
        elif engine.dialect.name == "sqlite":
            event.listen(engine, "connect", sqlite_setup(_read_only(url)))
        self.engine = engine
        self.dialect = self.engine.dialect.name
        self.insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self.mark = "?" if self.engine.dialect.paramstyle == "qmark" else "%s"
        #: psycopg 3 on a libpq that has pipeline mode (14+; the binary wheels bundle one)
        self.pipelines = self.dialect == "postgresql" and _pipeline_mode(self.engine)

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    @contextlib.contextmanager
    def pipeline(self, conn: Connection) -> Iterator[None]:
        """On PostgreSQL, send the statements run on ``conn`` in the block without
        waiting for each one's answer (psycopg's pipeline mode): together they cost one
        round trip to the server, answered when the block ends, instead of one each —
        what a loaded machine pays most for. No statement in the block may read its
        result through SQLAlchemy (a rowcount, ``RETURNING``; a driver cursor's rows can
        be read after the block); an error of any of them is raised when the block
        ends. Elsewhere (SQLite, a driver without pipeline mode) the statements run as
        usual."""
        if not self.pipelines:
            yield
            return
        driver = conn.connection.dbapi_connection
        try:
            with driver.pipeline():
                yield
        except driver.Error as exc:
            raise self._wrapped(conn, exc) from exc

    @contextlib.contextmanager
    def one_trip(self) -> Iterator[Connection]:
        """A transaction like ``engine.begin()``'s whose BEGIN, statements and COMMIT go
        to PostgreSQL in one :meth:`pipeline`: one round trip to the server for the whole
        transaction, committed when the block ends without an error and rolled back
        otherwise. The block's statements follow :meth:`pipeline`'s rule (none reads
        its result through SQLAlchemy). Elsewhere it is ``engine.begin()``."""
        if not self.pipelines:
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            # the driver would begin (and wait for) the transaction itself otherwise
            conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = conn.connection.dbapi_connection
            try:
                with driver.pipeline():
                    conn.exec_driver_sql("BEGIN")
                    yield conn
                    conn.exec_driver_sql("COMMIT")
            except driver.Error as exc:
                raise self._wrapped(conn, exc) from exc
            finally:
                if not driver.closed and driver.pgconn.transaction_status != _IDLE:
                    driver.rollback()  # failed: end the transaction before it is pooled

    def _wrapped(self, conn: Connection, exc: Exception) -> DBAPIError:
        """A driver error raised at the end of a pipeline as SQLAlchemy raises the
        others (``IntegrityError``, ``OperationalError``, …); a lost connection is
        invalidated, so the pool does not hand it out again."""
        dialect = self.engine.dialect
        lost = dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
        if lost:
            conn.invalidate(exc)
        return DBAPIError.instance("(pipeline)", None, exc, dialect.loaded_dbapi.Error,
                                   connection_invalidated=lost, dialect=dialect)

    @property
    def read_only(self) -> bool:
        return _read_only(self.url)

    def dispose(self) -> None:
        self.engine.dispose()
