"""Alembic migrations of the store, configured in code (:mod:`sheetops.store.migrate`).

``versions/0001`` is the schema of sheetops 0.1.0 (:mod:`.frozen_0_1_0`); every later
change of :mod:`sheetops.store.schema` is one revision after it.
"""
