"""Every table of the store, in one place (SQLAlchemy Core).

Times are UTC epoch seconds (floats), which aggregate the same way on SQLite and
PostgreSQL. A change here is a change of the store's schema: it needs a migration in
:mod:`sheetops.store.migrations` (``tests/test_migrations.py`` checks that upgrading a
store to the head revision gives exactly these tables and indexes).
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


class RunStatus(StrEnum):
    """Every state a run can be in: store column, Status/Runs cell, dashboard filter."""

    QUEUED = "queued"
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"

    @property
    def finished(self) -> bool:
        return self in FINISHED


#: Runs that ended (counted in success and failure rates) and those that count as failures.
FINISHED = (RunStatus.OK, RunStatus.FAILED, RunStatus.TIMEOUT)
FAILURES = (RunStatus.FAILED, RunStatus.TIMEOUT)
#: Runs a scheduler that died leaves behind.
UNFINISHED = (RunStatus.RUNNING, RunStatus.QUEUED)


runs = Table(
    "runs", metadata,
    Column("id", String(40), primary_key=True),
    Column("job", String(128), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("scheduled_for", Float),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("records_in", Integer, nullable=False, default=0),
    Column("records_out", Integer, nullable=False, default=0),
    Column("records_failed", Integer, nullable=False, default=0),
    Column("duration_s", Float),
    Column("result", Text, nullable=False, default="{}"),
    Column("error_type", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("requested_by", String(128), nullable=False, default=""),
    Index("ix_runs_job_started", "job", "started_at"),
    Index("ix_runs_started", "started_at"),
    Index("ix_runs_status", "status"),
)

attempts = Table(
    "attempts", metadata,
    Column("run_id", String(40), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("job", String(128), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error_type", String(128), nullable=False, default=""),
    Column("error_message", Text, nullable=False, default=""),
    Column("traceback", Text, nullable=False, default=""),
)

errors = Table(
    "errors", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("job", String(128), nullable=False),
    Column("run_id", String(40), nullable=False),
    Column("stage", String(64), nullable=False, default="run"),
    Column("attempt", Integer, nullable=False, default=1),
    Column("error_type", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("record_key", String(256), nullable=False, default=""),
    Column("traceback", Text, nullable=False, default=""),
    Index("ix_errors_time", "time"),
    Index("ix_errors_job_time", "job", "time"),
)

job_state = Table(
    "job_state", metadata,
    Column("job", String(128), primary_key=True),
    Column("last_fire_time", Float),
    Column("last_run_id", String(40)),
    Column("last_status", String(16), nullable=False, default=""),
    Column("last_start", Float),
    Column("last_end", Float),
    Column("last_duration_s", Float),
    Column("last_result", Text, nullable=False, default=""),
    Column("records_in", Integer, nullable=False, default=0),
    Column("records_out", Integer, nullable=False, default=0),
    Column("records_failed", Integer, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("last_success_at", Float),
    Column("updated_at", Float),
)

run_requests = Table(
    "run_requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(128), nullable=False),
    Column("dry_run", Boolean, nullable=False, default=False),
    Column("requested_by", String(128), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("claimed_at", Float),
    Column("run_id", String(40)),
    Index("ix_run_requests_pending", "claimed_at", "id"),
)

config_problems = Table(
    "config_problems", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tab", String(32), nullable=False),
    Column("cell", String(16), nullable=False),
    Column("value", Text, nullable=False, default=""),
    Column("problem", Text, nullable=False),
    Column("severity", String(8), nullable=False),
)

config_events = Table(
    "config_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("kind", String(16), nullable=False),  # refresh, added, changed, removed, failed
    Column("job", String(128), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_config_events_time", "time"),
)

gauges = Table(
    "gauges", metadata,
    Column("name", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

sheet_extent = Table(
    "sheet_extent", metadata,
    Column("tab", String(32), primary_key=True),
    Column("rows", Integer, nullable=False),
)

leases = Table(
    "leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
    # the fencing token: raised by each new holder, checked by the holder's writes
    Column("epoch", BigInteger, nullable=False, server_default="0"),
)


# -- the dashboard's read side -----------------------------------------------------------
# Overview aggregates per job over a window: one index range scan, no table lookups.
# Every dashboard index carries ``dry_run``: aggregates leave dry runs out (revision 0003).
Index("ix_runs_dash_job_started", runs.c.job, runs.c.started_at, runs.c.status,
      runs.c.duration_s, runs.c.records_in, runs.c.records_out, runs.c.records_failed,
      runs.c.dry_run)
# Percentiles by ORDER BY duration_s … OFFSET k, restricted to a window, per job.
Index("ix_runs_dash_job_duration", runs.c.job, runs.c.dry_run, runs.c.duration_s,
      runs.c.started_at)
# Totals and the over-time charts: a range scan on started_at that covers the columns.
Index("ix_runs_dash_started", runs.c.started_at, runs.c.status, runs.c.duration_s, runs.c.job,
      runs.c.dry_run)
# The total percentiles over a large window: ORDER BY duration_s … OFFSET k in index order.
Index("ix_runs_dash_duration", runs.c.dry_run, runs.c.duration_s, runs.c.started_at,
      runs.c.job)

# The job configuration the scheduler publishes after each refresh, so pages can show
# schedules without touching the sheet (only non-secret columns).
job_config = Table(
    "job_config", metadata,
    Column("job", String(128), primary_key=True),
    Column("automation", String(128), nullable=False, default=""),
    Column("schedule", String(128), nullable=False, default=""),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("owner", String(128), nullable=False, default=""),
    Column("notes", Text, nullable=False, default=""),
    Column("published_at", Float, nullable=False),
)

# -- hourly (and daily) run rollups ------------------------------------------------------
# Per job and per hour of ``started_at``: counts by status, duration sum/count/min/max,
# records, the last start, and a log-bucket histogram of durations (``h00`` … ``h71``).
# Dry runs are counted in ``dry_runs`` only: every other column leaves them out (the
# rule of :mod:`sheetops.store.aggregates`). ``runs_daily`` sums the hourly rows per day.
HIST_BUCKETS = 72
HIST_COLUMNS = tuple(f"h{i:02d}" for i in range(HIST_BUCKETS))
COUNT_COLUMNS = ("runs", "queued", "running", "ok", "failed", "timeout", "timed",
                 "records_in", "records_out", "records_failed", "dry_runs")


def _rollup_table(name: str, period: str) -> Table:
    return Table(
        name, metadata,
        Column(period, Float, primary_key=True),       # start of the hour/day, epoch s
        Column("job", String(128), primary_key=True),
        *(Column(c, Integer, nullable=False, default=0) for c in COUNT_COLUMNS),
        Column("duration_sum", Float, nullable=False, default=0.0),
        Column("duration_min", Float),
        Column("duration_max", Float),
        Column("last_start", Float),
        *(Column(c, Integer, nullable=False, default=0) for c in HIST_COLUMNS),
    )


runs_hourly = _rollup_table("runs_hourly", "hour")
runs_daily = _rollup_table("runs_daily", "day")
# The few hours with runs still running or queued (re-aggregated at every refresh).
ROLLUP_OPEN = (runs_hourly.c.running + runs_hourly.c.queued) > 0
Index("ix_runs_hourly_open", runs_hourly.c.hour, sqlite_where=ROLLUP_OPEN,
      postgresql_where=ROLLUP_OPEN)
rollup_state = Table(
    "rollup_state", metadata,
    Column("name", String(32), primary_key=True),
    Column("refreshed_at", Float, nullable=False),   # runs recorded before this are in
    Column("seconds", Float, nullable=False, default=0.0),  # the last refresh took
)

# -- deliveries: what an automation already sent in a run (sheetops.store.deliveries) ---
deliveries = Table(
    "deliveries", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("record_key", String(500), primary_key=True),
    Column("at", Float, nullable=False),
)

# -- alerts ------------------------------------------------------------------------------
# ``alert_state`` holds one row per evaluated (rule, job) pair: whether it is firing and
# since when, what was last sent and whether a message still waits for delivery.
# ``alert_events`` is the history: every fired, reminder and resolved message and every
# failed delivery.
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


# -- the durable queue (sheetops.store.queue_sql) ---------------------------------------
# One table holds every named queue. A row is *live* (waiting, delayed or claimed) or
# *dead* (a dead letter kept for inspection and replay); an acknowledged item is deleted.
# ``visible_at`` is the one time that decides whether a live item can be claimed: the end
# of its delay when waiting, the end of its lease when claimed. ``token`` is set by each
# claim and checked by every ack, nack, extend and dead-letter (fencing). ``unique_key``
# is the item's key when it was put with ``dedupe=True`` (else NULL, which never
# conflicts), so an idempotent put is one ``ON CONFLICT DO NOTHING`` on both dialects.
# Run requests (queue ``run_requests``) and the sheet outbox (``sheet_outbox``) live here.

#: ``queue_items.state`` values.
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


# -- pipelines -----------------------------------------------------------------------
# pipeline_checkpoints: where each pipeline's source stopped (written with the put of the
# batch it follows); pipeline_counts: records in/out/failed/dead per (pipeline,
# generation, stage), in one row per ``shard`` (the thread that counted, so concurrent
# hand-offs never wait on each other's row; readers sum them, the pass's end folds them
# into shard ''); pipeline_ledger: the idempotency ledger, one row per (pipeline,
# stage, key) a sink delivered.
#: ``pipeline_checkpoints.state`` values.
CHECKPOINT_READING, CHECKPOINT_READ, CHECKPOINT_FINISHED = "reading", "read", "finished"

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

#: ``pipeline_counts``' counters, in the order of its columns.
PIPELINE_COUNTS = ("records_in", "records_out", "records_failed", "dead_letters")

pipeline_counts = Table(
    "pipeline_counts", metadata,
    Column("pipeline", String(128), primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("stage", String(128), primary_key=True),
    Column("shard", String(96), primary_key=True, default=""),
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

# A sheet tab as a pipeline's source and sink (sheetops/pipelines/sheet_tab.py).
# sheet_row_sources: per pipeline job, the tab it reads and where its outcome columns
# are; sheet_row_outcomes: each record's fate (done, skipped, failed, dead_letter, or
# retrying after a retry asked for on its row), at the row it was last read from.
# ``version`` grows with every change and ``written`` is the version the sheet holds,
# so the status writer sends exactly the rows that changed since its last flush.
#: ``sheet_row_outcomes.status`` values (also what the sheet's status cell shows).
ROW_DONE, ROW_SKIPPED, ROW_FAILED, ROW_DEAD, ROW_RETRYING = (
    "done", "skipped", "failed", "dead_letter", "retrying")

sheet_row_sources = Table(
    "sheet_row_sources", metadata,
    Column("job", String(128), primary_key=True),
    Column("location", Text, nullable=False),
    Column("tab", String(128), nullable=False),
    # JSON {outcome column name: 1-based column index}
    Column("columns", Text, nullable=False),
    # the outcome columns' header cells still have to be written
    Column("header_pending", Boolean, nullable=False, default=False),
    Column("read_at", Float, nullable=False),
)

sheet_row_outcomes = Table(
    "sheet_row_outcomes", metadata,
    Column("job", String(128), primary_key=True),
    Column("key", String(256), primary_key=True),
    Column("row", Integer, nullable=False),
    Column("status", String(16), nullable=False, default=""),
    Column("error", Text, nullable=False, default=""),
    Column("at", Float, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("written", Integer, nullable=False, default=0),
    Index("ix_sheet_row_outcomes_unwritten", "job", "written", "version"),
)

PIPELINE_TABLES = (pipeline_checkpoints, pipeline_counts, pipeline_ledger)


# -- distributed tier ------------------------------------------------------------------
# task_deliveries: how many times a broker delivered each task (key: run id and attempt,
# or a pipeline batch's task), so a task whose worker dies every time it runs (a poison
# task) ends as a failed run once it reaches the cap instead of being redelivered forever.
task_deliveries = Table(
    "task_deliveries", metadata,
    Column("key", String(200), primary_key=True),
    Column("deliveries", Integer, nullable=False, default=0),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    # the published copy that owns the attempt (its first to reach the store); a row
    # with ``deliveries`` 0 is a publisher's mark: sent, not yet delivered
    Column("copy_id", String(40)),
    Index("ix_task_deliveries_last", "last_at"),
)
