"""A throwaway PostgreSQL database, for tests and benchmarks that need a store of their
own on a real server (the loopback one, trust auth, by default)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

#: The database an admin connection opens to create and drop the throwaway ones.
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def fresh_pg_database(prefix: str, user: str = "postgres",
                      admin_url: str = PG_ADMIN) -> Iterator[str]:
    """A new database named ``<prefix>_<random>``, as a store URL (``user`` may carry a
    password: the server trusts loopback); dropped afterwards, connections and all."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    server = f"{admin.url.host}:{admin.url.port or 5432}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{user}@{server}/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
