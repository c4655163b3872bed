"""The pipelines' tables, on the store's one ``metadata`` so they fold into the schema
module with the others.

* ``pipeline_checkpoints``: one row per pipeline (job): where its source stopped, the
  current generation (a pass over the source, which may span several runs when one is
  killed) and whether that pass finished. Written in the same transaction as the put of
  the batch it follows, so a restart reads on from exactly the last batch queued.
* ``pipeline_counts``: records in, out, failed (retried, then isolated) and dead-lettered
  per (pipeline, generation, stage), updated in each batch's hand-off transaction.
* ``pipeline_ledger``: the idempotency ledger: one row per (pipeline, stage, key) a sink
  has delivered, so a redelivered or replayed record is not delivered twice.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, String, Table, Text

from sheetops.store.schema import metadata

#: ``pipeline_checkpoints.state`` values.
READING, READ, FINISHED = "reading", "read", "finished"

pipeline_checkpoints = Table(
    "pipeline_checkpoints", metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("generation", Integer, nullable=False),
    # JSON of the source's position after the last batch queued; NULL = the beginning
    Column("position", Text),
    Column("state", String(16), nullable=False),
    Column("records", BigInteger, nullable=False, default=0),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

pipeline_counts = Table(
    "pipeline_counts", metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("stage", String(128), primary_key=True),
    Column("records_in", BigInteger, nullable=False, default=0),
    Column("records_out", BigInteger, nullable=False, default=0),
    Column("records_failed", BigInteger, nullable=False, default=0),
    Column("dead_letters", BigInteger, nullable=False, default=0),
)

pipeline_ledger = Table(
    "pipeline_ledger", metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("stage", String(128), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("done_at", Float, nullable=False),
)

TABLES = (pipeline_checkpoints, pipeline_counts, pipeline_ledger)
