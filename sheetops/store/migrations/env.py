"""Alembic's environment: always given an open connection by :mod:`sheetops.store.migrate`
(``config.attributes["connection"]``); no alembic.ini, no URL of its own."""

from __future__ import annotations

import logging

from alembic import context

logging.getLogger("alembic").setLevel(logging.WARNING)  # sheetops logs what it did
connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
