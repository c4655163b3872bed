"""The alert tables, on the store's :data:`~sheetops.store.schema.metadata`.

``alert_state`` holds one row per evaluated (rule, job) pair: whether it is firing and
since when, what was last sent and whether a message still waits for delivery.
``alert_events`` is the history: every fired, reminder and resolved message and every
failed delivery, newest rows shown on the dashboard's Alerts page.

Importing this module before a :class:`~sheetops.store.Store` is built makes the store
create the tables (``sheetops.alerts`` and the engine import it).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from sheetops.store.schema import metadata

# kinds of alert_events rows
FIRED = "fired"
REMINDER = "reminder"
RESOLVED = "resolved"
DELIVERY_FAILED = "delivery_failed"
EVENT_KINDS = (FIRED, REMINDER, RESOLVED, DELIVERY_FAILED)

alert_state = Table(
    "alert_state", metadata,
    Column("rule", String(128), primary_key=True),
    # the job (or, for queue_depth with job *, the queue) this row watches
    Column("job", String(128), primary_key=True),
    Column("metric", String(32), nullable=False),
    Column("threshold", Float, nullable=False),
    Column("channel", String(256), nullable=False, default=""),
    Column("first_seen_at", Float, nullable=False),
    Column("evaluated_at", Float, nullable=False),
    Column("last_value", Float),               # NULL: not enough data to judge
    Column("firing_since", Float),             # NULL: not firing
    Column("last_notified_at", Float),         # last fired/reminder message (sent or not)
    Column("last_sent_at", Float),             # last message actually delivered
    Column("pending_event_id", Integer),       # an alert_events row not yet delivered
    Column("pending_tries", Integer, nullable=False, default=0),
)

alert_events = Table(
    "alert_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("rule", String(128), nullable=False),
    Column("job", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # fired, reminder, resolved, delivery_failed
    Column("metric", String(32), nullable=False, default=""),
    Column("value", Float),
    Column("threshold", Float),
    Column("channel", String(256), nullable=False, default=""),
    Column("subject", Text, nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("format", String(8), nullable=False, default="text"),
    Column("delivered_at", Float),             # when the message reached the channel
    Column("error", Text, nullable=False, default=""),
    Index("ix_alert_events_time", "time"),
    Index("ix_alert_events_rule_job_time", "rule", "job", "time"),
)
