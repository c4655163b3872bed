"""Deliveries done per run: what an automation already sent, so a retry never repeats it.

An attempt that dies half way (a timeout kills its worker, an error after some emails
went out) is retried, maybe in another process. Before sending to a record the
automation asks :meth:`Deliveries.done`; after sending it calls :meth:`Deliveries.add`.
The rows live in the store (table ``deliveries``, one row per run and record key), so
the answer survives the process. A store only one process can see (in-memory SQLite)
falls back to a set in this process.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from sheetops.store.db import shared_engine
from sheetops.store.schema import deliveries

log = logging.getLogger("sheetops.store")


def _engine(url: str) -> Engine | None:
    if not url or ":memory:" in url:
        return None
    return shared_engine(url)


class Deliveries:
    """The record keys one run has delivered, in the store at ``store_url``."""

    def __init__(self, store_url: str, run_id: str) -> None:
        self.run_id = run_id
        self._engine = _engine(store_url)
        self._local: set[str] = set()

    def done(self, record_key: str) -> bool:
        """Whether an earlier attempt of this run (or this one) delivered ``record_key``."""
        if record_key in self._local or self._engine is None:
            return record_key in self._local
        with self._engine.connect() as conn:
            found = conn.execute(select(deliveries.c.at).where(
                deliveries.c.run_id == self.run_id,
                deliveries.c.record_key == record_key)).first()
        return found is not None

    def add(self, record_key: str) -> None:
        """Note that ``record_key`` was delivered (once; a second note is a no-op)."""
        self._local.add(record_key)
        if self._engine is None:
            return
        try:
            with self._engine.begin() as conn:
                conn.execute(deliveries.insert().values(run_id=self.run_id,
                                                        record_key=record_key,
                                                        at=time.time()))
        except IntegrityError:
            pass
        except SQLAlchemyError as exc:  # the send happened: never fail it afterwards
            log.warning(
                "could not note the delivery of %s in run %s: %s", record_key, self.run_id,
                type(exc).__name__)
