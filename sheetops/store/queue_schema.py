"""The durable queue's table, on the store's one ``metadata`` so it can be folded into the
schema module with the others.

One table holds every named queue. A row is *live* (waiting, delayed or claimed) or
*dead* (a dead letter kept for inspection and replay); an acknowledged item is deleted.
``visible_at`` is the one time that decides whether a live item can be claimed: the end
of its delay when waiting, the end of its lease when claimed. ``token`` is set by each
claim and checked by every ack, nack, extend and dead-letter (fencing). ``unique_key``
is the item's key when it was put with ``dedupe=True`` (else NULL, which never
conflicts), so an idempotent put is one ``ON CONFLICT DO NOTHING`` on both dialects.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from sheetops.store.schema import metadata

#: ``state`` values.
LIVE, DEAD = "live", "dead"

queue_items = Table(
    "queue_items", metadata,
    # AUTOINCREMENT on SQLite: an acked item's id is never given to a new one
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("queue", String(128), nullable=False),
    Column("key", String(256)),
    Column("unique_key", String(256)),
    Column("payload", Text, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("state", String(8), nullable=False, default=LIVE),
    Column("visible_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("deliveries", Integer, nullable=False, default=0),
    Column("token", String(32)),
    Column("consumer", String(200)),
    Column("claimed_at", Float),
    Column("error_type", String(128)),
    Column("error", Text),
    Column("traceback", Text),
    Column("dead_at", Float),
    sqlite_autoincrement=True,
)

# claim: scan one queue's live items in priority then FIFO order, stop after n visible ones
Index("ix_queue_items_claim", queue_items.c.queue, queue_items.c.state,
      queue_items.c.priority.desc(), queue_items.c.id)
# oldest_age and dead letters by time
Index("ix_queue_items_age", queue_items.c.queue, queue_items.c.state,
      queue_items.c.created_at)
# idempotent put: one live-or-dead item per (queue, key) when put with dedupe
Index("ux_queue_items_unique_key", queue_items.c.queue, queue_items.c.unique_key,
      unique=True)
