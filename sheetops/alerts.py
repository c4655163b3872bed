"""Alerts: rules from the Alerts tab, evaluated on a schedule, delivered once per incident.

Every ``alert_interval_s`` (Settings tab, default 60) :class:`AlertEvaluator` computes
each enabled rule's metric with SQL aggregates over the store, per job (``*`` = every
enabled job, each on its own), and moves each (rule, job) pair through a small state
machine kept in ``alert_state``:

- **fired** — the metric reached the threshold (``value >= threshold``) and the pair was
  not firing: one message, then silence while it keeps firing …
- **reminder** — … except one reminder every ``alert_reminder_s`` (default 3600);
- **resolved** — the metric dropped below the threshold (or there is no longer enough
  data to say it is failing): one message.

Every message (and every failed delivery, ``delivery_failed``) is a row of
``alert_events``. Delivery goes to ``email:ADDRESS`` (SMTP settings from
``SHEETOPS_SMTP_*``), ``slack:NAME`` or ``webhook:NAME`` (URL from
``SHEETOPS_SLACK_NAME`` / ``SHEETOPS_WEBHOOK_NAME``), with a few quick retries
(:func:`sheetops.retry.call_policy`). A message that still could not be delivered stays
pending and is tried again at each evaluation (at most ``max_pending_tries`` times,
after which the next reminder tries again). Nothing here ever raises into the scheduler.

Metrics (``window`` is the rule's window column):

``failure_rate``
    (failed + timed out) / finished runs that started in the window, dry runs left out;
    only judged with at least ``min_runs`` (default 3) finished runs, so one failed run
    out of one is not a 100% failure rate.
``consecutive_failures``
    failed runs in a row (the Status tab's column); the window is not used.
``duration_p95_s``
    95th percentile (nearest rank) of the durations of runs finished in the window.
``queue_depth``
    attempts waiting in a queue (``queue_depth:<queue>`` gauges the scheduler publishes;
    ``run`` is the queue in front of the workers). ``*`` watches every queue on its own;
    a named job watches its own queue when one is published, else the ``run`` queue.
``no_success_for_s``
    seconds since the job's last successful run (or, when it never succeeded, since its
    first run or since the rule first looked at it); the window is not used.

Texts come from the Templates tab when it has a row named like the rule (for fired and
reminder; ``<rule>_resolved`` for resolved), else a row named ``alert`` /
``alert_resolved``, else a built-in text. See docs/monitoring.md for the variables.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sheetops.config.model import AlertSpec, Snapshot
from sheetops.errors import PermanentError, RetryableError
from sheetops.retry import call_policy
from sheetops.store import Store, aggregates
from sheetops.store.aggregates import Window
from sheetops.store.schema import DELIVERY_FAILED, FIRED, REMINDER, RESOLVED
from sheetops.templates import Rendered, TemplateSpec, render

log = logging.getLogger("sheetops.alerts")

FAILURE_RATE_MIN_RUNS = 3
METRICS = ("failure_rate", "consecutive_failures", "duration_p95_s", "queue_depth",
           "no_success_for_s")


# -- values ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertMessage:
    """One message about one (rule, job) pair, ready for any channel."""

    kind: str          # fired, reminder, resolved
    rule: str
    job: str
    metric: str
    value: float | None
    threshold: float
    window_s: int
    channel: str
    time: float
    since: float | None
    subject: str
    body: str
    format: str = "text"

    def payload(self) -> dict[str, Any]:
        """What a generic webhook receives (JSON)."""
        return {"text": f"{self.subject}\n{self.text_body()}".strip(), "kind": self.kind,
                "rule": self.rule, "job": self.job, "metric": self.metric,
                "value": self.value, "threshold": self.threshold, "window_s": self.window_s,
                "firing_since": _iso(self.since), "time": _iso(self.time),
                "subject": self.subject, "body": self.body}

    def text_body(self) -> str:
        if self.format == "html":
            from sheetops.connectors.email import html_to_text

            return html_to_text(self.body)
        return self.body


@dataclass(frozen=True)
class AlertEvent:
    """One row of ``alert_events`` written by an evaluation."""

    id: int
    time: float
    kind: str          # fired, reminder, resolved, delivery_failed
    rule: str
    job: str
    metric: str
    value: float | None
    threshold: float
    channel: str
    subject: str = ""
    message: str = ""
    delivered: bool = False
    error: str = ""


@dataclass(frozen=True)
class DeliveryPolicy:
    """Quick, bounded retries of one delivery inside one evaluation."""

    attempts: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 4.0
    timeout_s: float = 10.0
    deadline_s: float = 30.0


Deliver = Callable[[AlertMessage], None]


class ChannelDelivery:
    """Sends an :class:`AlertMessage` to its channel; raises when it could not.

    ``smtp`` gives the SMTP config (default: ``SmtpConfig.from_settings()`` at each
    send, so ``SHEETOPS_SMTP_*`` are read fresh); ``environ`` is where webhook URLs are
    looked up (default ``os.environ``)."""

    def __init__(self, policy: DeliveryPolicy | None = None,
                 smtp: Callable[[], Any] | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.policy = policy or DeliveryPolicy()
        self._smtp = smtp
        self._environ = environ

    def __call__(self, message: AlertMessage) -> None:
        p = self.policy
        retrying = call_policy(lambda e: isinstance(e, RetryableError | OSError),
                               attempts=p.attempts, initial=p.backoff_initial_s,
                               maximum=p.backoff_max_s, deadline_s=p.deadline_s)
        retrying(self._send_once, message)

    def _send_once(self, message: AlertMessage) -> None:
        kind, _, target = message.channel.partition(":")
        kind = kind.strip().lower()
        if kind == "email":
            self._email(message, target.strip())
        elif kind in ("slack", "webhook"):
            self._hook(message, kind, target)
        else:
            raise PermanentError(f"channel {message.channel!r} is not email:ADDRESS, "
                                 "slack:NAME or webhook:NAME")

    def _email(self, message: AlertMessage, to: str) -> None:
        from sheetops.connectors.email import SmtpConfig, build_message, send_email

        config = self._smtp() if self._smtp else SmtpConfig.from_settings()
        config = config.with_overrides(timeout_s=self.policy.timeout_s)
        email = build_message(Rendered(message.subject, message.body, message.format),
                              to=to, sender=config.sender,
                              headers={"X-Sheetops-Alert": f"{message.kind} {message.rule}"})
        send_email(config, email, attempts=1)

    def _hook(self, message: AlertMessage, kind: str, name: str) -> None:
        from sheetops.connectors.http import HttpClient
        from sheetops.connectors.webhook import hook_url, post_json

        url = hook_url(kind, name, self._environ)
        payload = ({"text": f"*{message.subject}*\n{message.text_body()}".strip()}
                   if kind == "slack" else message.payload())
        with HttpClient(timeout_s=self.policy.timeout_s, attempts=1, secrets=[url]) as client:
            post_json(kind, name, payload, client=client, environ=self._environ,
                      timeout_s=self.policy.timeout_s)


# -- the evaluator --------------------------------------------------------------------
@dataclass
class _Target:
    rule: AlertSpec
    key: str               # job (or queue) name
    value: float | None


class AlertEvaluator:
    """Evaluates the Alerts tab's rules against the store and delivers the messages.

    ``snapshot_provider`` returns the current config :class:`Snapshot`; ``deliver``
    sends one message or raises (default :class:`ChannelDelivery`)."""

    def __init__(self, store: Store, snapshot_provider: Callable[[], Snapshot],
                 deliver: Deliver | None = None, *,
                 min_runs: int = FAILURE_RATE_MIN_RUNS,
                 max_pending_tries: int = 20) -> None:
        self.store = store
        self.alerts = store.alerts
        self._snapshot = snapshot_provider
        self.deliver = deliver or ChannelDelivery()
        self.min_runs = max(1, min_runs)
        self.max_pending_tries = max(1, max_pending_tries)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next_due = 0.0
        self.evaluations = 0

    # -- scheduling (the engine's control loop calls tick) ---------------------------
    def tick(self, now: float | None = None) -> bool:
        """Start an evaluation in the background when one is due and none is running;
        returns whether one started. Cheap: call it as often as you like."""
        now = time.time() if now is None else now
        if now < self._next_due or (self._thread is not None and self._thread.is_alive()):
            return False
        snapshot = self._snapshot()
        self._next_due = now + max(1.0, snapshot.settings.alert_interval_s)
        if not any(rule.enabled for rule in snapshot.alerts):
            return False
        self._thread = threading.Thread(target=self.evaluate_safely, name="sheetops-alerts",
                                        daemon=True)
        self._thread.start()
        return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def evaluate_safely(self, now: float | None = None) -> list[AlertEvent]:
        try:
            return self.evaluate(now)
        except Exception:
            log.exception("alert evaluation failed; trying again at the next interval")
            return []

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[AlertEvent]:
        """Evaluate every enabled rule once; return the events recorded."""
        now = time.time() if now is None else now
        with self._lock:
            snapshot = self._snapshot()
            targets = self._targets(snapshot, now)
            states = self._states()
            events: list[AlertEvent] = []
            seen: set[tuple[str, str]] = set()
            for target in targets:
                pair = (target.rule.name, target.key)
                if pair in seen:  # two rows with one name: the first wins
                    continue
                seen.add(pair)
                events += self._step(target, states.get(pair), snapshot, now)
            for pair, state in states.items():
                if pair not in seen:
                    events += self._forget(state, now)
            self.evaluations += 1
        return events

    def _targets(self, snapshot: Snapshot, now: float) -> list[_Target]:
        jobs = sorted(j.job for j in snapshot.jobs.values() if j.enabled)
        gauges = self._gauges()
        targets: list[_Target] = []
        for rule in snapshot.alerts:
            if not rule.enabled:
                continue
            if rule.metric == "queue_depth":
                targets += self._queue_targets(rule, gauges)
                continue
            keys = jobs if rule.job == "*" else [rule.job] if rule.job in jobs else []
            if not keys:
                continue
            values = self._values(rule, keys, now)
            targets += [_Target(rule, key, values.get(key)) for key in keys]
        return targets

    def _queue_targets(self, rule: AlertSpec, gauges: dict[str, float]) -> list[_Target]:
        queues = {name.partition(":")[2]: value for name, value in gauges.items()
                  if name.startswith("queue_depth:")}
        if rule.job == "*":
            return [_Target(rule, q, v) for q, v in sorted(queues.items())]
        if rule.job in queues:
            return [_Target(rule, rule.job, queues[rule.job])]
        return [_Target(rule, rule.job, queues.get("run"))]

    def _values(self, rule: AlertSpec, jobs: list[str], now: float) -> dict[str, float]:
        """The metric of ``rule`` per job, through the same aggregates the dashboard
        shows (:mod:`sheetops.store.aggregates`: dry runs left out)."""
        window = Window(now - rule.window_s, now)
        engine = self.store.engine
        if rule.metric == "failure_rate":
            return aggregates.failure_rates(engine, window, jobs, self.min_runs)
        if rule.metric == "duration_p95_s":
            df = aggregates.duration_percentiles(engine, window, jobs, (95,))
            return {job: float(v) for job, v in zip(df["job"], df["p95_s"], strict=True)
                    if v is not None}
        health = self.alerts.job_health(jobs)
        if rule.metric == "consecutive_failures":
            return {job: float(health[job][0] if job in health else 0) for job in jobs}
        if rule.metric == "no_success_for_s":
            missing = [j for j in jobs if j not in health or health[j][1] is None]
            first_run = self.alerts.first_runs(missing)
            first_seen = self.alerts.first_seen(rule.name)
            values = {}
            for job in jobs:
                success = health[job][1] if job in health else None
                base = (success if success is not None else
                        first_run.get(job) or first_seen.get(job) or now)
                values[job] = max(0.0, now - base)
            return values
        log.warning("alert %r: unknown metric %r", rule.name, rule.metric)
        return {}

    def _gauges(self) -> dict[str, float]:
        return {name: value for name, (value, _at) in self.store.gauges().items()}

    def _states(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.alerts.states()

    # -- the state machine --------------------------------------------------------------
    def _step(self, target: _Target, state: dict[str, Any] | None, snapshot: Snapshot,
              now: float) -> list[AlertEvent]:
        rule, value = target.rule, target.value
        breaching = value is not None and value >= rule.threshold
        if state is None:
            state = {"rule": rule.name, "job": target.key, "first_seen_at": now,
                     "firing_since": None, "last_notified_at": None, "last_sent_at": None,
                     "pending_event_id": None, "pending_tries": 0}
            new = True
        else:
            new = False
        firing = state["firing_since"] is not None
        reminder_s = snapshot.settings.alert_reminder_s
        kind = None
        if breaching and not firing:
            kind = FIRED
            state["firing_since"] = now
        elif firing and not breaching:
            kind = RESOLVED
        elif firing and reminder_s > 0 and now - (state["last_notified_at"] or 0) >= reminder_s:
            kind = REMINDER
        state.update(metric=rule.metric, threshold=rule.threshold, channel=rule.channel,
                     evaluated_at=now, last_value=value)
        events: list[AlertEvent] = []
        if kind is not None:
            message = self._message(kind, rule, target.key, value, state["firing_since"],
                                    snapshot, now)
            if kind == RESOLVED:
                state["firing_since"] = None
            else:
                state["last_notified_at"] = now
            events += self._send_new(message, state)
        elif state["pending_event_id"] is not None:
            events += self._retry_pending(rule, state, now)
        self._save_state(state, new)
        return events

    def _send_new(self, message: AlertMessage, state: dict[str, Any]) -> list[AlertEvent]:
        event_id = self.alerts.add_event(
            time=message.time, rule=message.rule, job=message.job, kind=message.kind,
            metric=message.metric, value=message.value, threshold=message.threshold,
            channel=message.channel, subject=message.subject, message=message.body,
            format=message.format)
        event = AlertEvent(event_id, message.time, message.kind, message.rule, message.job,
                           message.metric, message.value, message.threshold,
                           message.channel, message.subject, message.body)
        log.warning("alert %s %s: %s", message.rule, message.kind, message.subject,
                    extra={"job": message.job, "stage": "alert"})
        state["pending_event_id"], state["pending_tries"] = event_id, 0
        return self._attempt(event, message, state, new=True)

    def _retry_pending(self, rule: AlertSpec, state: dict[str, Any], now: float
                       ) -> list[AlertEvent]:
        row = self.alerts.event(state["pending_event_id"])
        if row is None or row["delivered_at"] is not None:
            state["pending_event_id"], state["pending_tries"] = None, 0
            return []
        message = AlertMessage(row["kind"], row["rule"], row["job"], row["metric"],
                               row["value"], row["threshold"], rule.window_s, rule.channel,
                               now, state["firing_since"], row["subject"], row["message"],
                               row["format"])
        event = AlertEvent(row["id"], row["time"], row["kind"], row["rule"], row["job"],
                           row["metric"], row["value"], row["threshold"], rule.channel,
                           row["subject"], row["message"])
        return self._attempt(event, message, state, new=False)

    def _attempt(self, event: AlertEvent, message: AlertMessage, state: dict[str, Any],
                 new: bool) -> list[AlertEvent]:
        """Deliver ``message``; on success mark ``event`` delivered, else record a
        ``delivery_failed`` event. Never raises. Returns ``event`` (when ``new`` or now
        delivered) and the failure, if any."""
        now = time.time()
        try:
            self.deliver(message)
        except Exception as exc:  # a channel must never break the loop
            state["pending_tries"] = (state.get("pending_tries") or 0) + 1
            give_up = state["pending_tries"] >= self.max_pending_tries
            error = f"{type(exc).__name__}: {exc}"[:1000]
            note = (f"could not deliver the {event.kind} message to {message.channel} "
                    f"(try {state['pending_tries']}): {error}"
                    + ("; giving up on this message, the next reminder tries again"
                       if give_up else "; trying again at the next evaluation"))
            if give_up:
                state["pending_event_id"], state["pending_tries"] = None, 0
            log.warning("alert %s: %s", message.rule, note,
                        extra={"job": message.job, "stage": "alert"})
            failed_id = self.alerts.add_event(
                time=message.time, rule=message.rule, job=message.job,
                kind=DELIVERY_FAILED, metric=message.metric, value=message.value,
                threshold=message.threshold, channel=message.channel,
                subject=message.subject, message=note, format="text", error=error)
            failed = AlertEvent(failed_id, message.time, DELIVERY_FAILED, message.rule,
                                message.job, message.metric, message.value,
                                message.threshold, message.channel, message.subject, note,
                                False, error)
            return [event, failed] if new else [failed]
        self.alerts.mark_delivered(event.id, now, message.channel)
        state["pending_event_id"], state["pending_tries"] = None, 0
        state["last_sent_at"] = now
        return [AlertEvent(event.id, event.time, event.kind, event.rule, event.job,
                           event.metric, event.value, event.threshold, message.channel,
                           event.subject, event.message, True)]

    def _forget(self, state: dict[str, Any], now: float) -> list[AlertEvent]:
        """A pair no longer evaluated (rule removed or disabled, job gone): drop its
        state; if it was firing, note that in the history without sending anything."""
        if state["firing_since"] is None:
            self.alerts.forget(state["rule"], state["job"])
            return []
        note = ("no longer evaluated (the rule was removed or disabled, or the job is "
                "gone); closed without a message")
        event_id = self.alerts.forget(state["rule"], state["job"], {
            "time": now, "rule": state["rule"], "job": state["job"], "kind": RESOLVED,
            "metric": state["metric"], "value": state["last_value"],
            "threshold": state["threshold"], "channel": "", "subject": "", "message": note,
            "format": "text"})
        return [AlertEvent(event_id, now, RESOLVED, state["rule"], state["job"],
                           state["metric"], state["last_value"], state["threshold"], "",
                           "", note)]

    def _save_state(self, state: dict[str, Any], new: bool) -> None:
        self.alerts.save_state(state, new)

    # -- texts ----------------------------------------------------------------------------
    def _message(self, kind: str, rule: AlertSpec, key: str, value: float | None,
                 since: float | None, snapshot: Snapshot, now: float) -> AlertMessage:
        variables = message_variables(kind, rule, key, value, since, now)
        spec = _template_for(kind, rule.name, snapshot.templates)
        rendered = None
        if spec is not None:
            try:
                rendered = render(spec, variables)
            except Exception as exc:  # a bad template still alerts
                log.warning("alert %s: template %r failed (%s: %s); using the built-in text",
                            rule.name, spec.name, type(exc).__name__, exc)
                variables["description"] += (f"\n(Template {spec.name!r} could not be "
                                             f"used: {type(exc).__name__}: {exc})")
        default = default_text(variables)
        if rendered is None:
            rendered = default
        elif not rendered.subject or not rendered.body.strip():  # fill what it leaves out
            rendered = Rendered(rendered.subject or default.subject,
                                rendered.body if rendered.body.strip() else default.body,
                                rendered.format if rendered.body.strip() else "text")
        return AlertMessage(kind, rule.name, key, rule.metric, value, rule.threshold,
                            rule.window_s, rule.channel, now, since, rendered.subject,
                            rendered.body, rendered.format)


def _template_for(kind: str, rule: str, templates: dict[str, TemplateSpec]
                  ) -> TemplateSpec | None:
    names = ((f"{rule}_resolved", "alert_resolved") if kind == RESOLVED else (rule, "alert"))
    return next((templates[n] for n in names if n in templates), None)


# -- texts --------------------------------------------------------------------------------
_STATE_WORDS = {FIRED: "FIRING", REMINDER: "STILL FIRING", RESOLVED: "RESOLVED"}
_METRIC_WORDS = {
    "failure_rate": "failure rate over the last {window}",
    "consecutive_failures": "consecutive failures",
    "duration_p95_s": "95th percentile run duration over the last {window}",
    "queue_depth": "queue depth",
    "no_success_for_s": "time since the last successful run",
}


def format_value(metric: str, value: float | None) -> str:
    """A value as a person reads it: 75%, 3, 2h 05m, 42.0s; "n/a" without data."""
    if value is None:
        return "n/a (not enough data)"
    if metric == "failure_rate":
        return f"{value:.0%}"
    if metric.endswith("_s"):
        return format_duration(value)
    return f"{value:g}"


def format_duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def message_variables(kind: str, rule: AlertSpec, job: str, value: float | None,
                      since: float | None, now: float) -> dict[str, Any]:
    """The variables an alert template can use (documented in docs/monitoring.md)."""
    window = format_duration(rule.window_s) if rule.window_s else ""
    metric_words = _METRIC_WORDS.get(rule.metric, rule.metric).format(window=window)
    value_text = format_value(rule.metric, value)
    threshold_text = format_value(rule.metric, rule.threshold)
    if kind == RESOLVED:
        description = (f"{rule.name} for {job} is resolved: {metric_words} is {value_text}, "
                       f"below the threshold {threshold_text}.")
    else:
        description = (f"{rule.name} for {job}: {metric_words} is {value_text}, at or above "
                       f"the threshold {threshold_text}.")
    return {
        "kind": kind, "state": _STATE_WORDS.get(kind, kind.upper()), "rule": rule.name,
        "job": job, "metric": rule.metric, "metric_words": metric_words,
        "value": value, "value_text": value_text, "threshold": rule.threshold,
        "threshold_text": threshold_text, "window": window, "window_s": rule.window_s,
        "channel": rule.channel, "since": _iso(since) or "",
        "firing_for": format_duration(now - since) if since else "",
        "time": _iso(now), "row": rule.row, "description": description,
    }


def default_text(v: dict[str, Any]) -> Rendered:
    subject = f"[sheetops] {v['state']}: {v['rule']} — {v['job']}"
    lines = [v["description"], "",
             f"Rule:      {v['rule']} (Alerts tab, row {v['row']})",
             f"Job:       {v['job']}",
             f"Metric:    {v['metric']} = {v['value_text']} (threshold {v['threshold_text']}"
             + (f", window {v['window']})" if v["window"] else ")")]
    if v["since"]:
        lines.append(f"Firing since {v['since']} ({v['firing_for']})")
    lines.append(f"Time:      {v['time']}")
    if v["kind"] == REMINDER:
        lines += ["", "This is a reminder: the alert is still firing."]
    return Rendered(subject, "\n".join(lines) + "\n", "text")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


# -- reads for the dashboard (the SQL is in sheetops.store.alerts) -----------------------
def recent_alert_events(store: Store, limit: int = 200, *, rule: str | None = None,
                        job: str | None = None, kinds: Iterable[str] | None = None
                        ) -> list[dict[str, Any]]:
    """``alert_events`` rows, newest first (see :meth:`AlertStore.recent_events`)."""
    return store.alerts.recent_events(limit, rule=rule, job=job, kinds=kinds)


def firing_alerts(store: Store) -> list[dict[str, Any]]:
    """The (rule, job) pairs firing now (see :meth:`AlertStore.firing`)."""
    return store.alerts.firing()
