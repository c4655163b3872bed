"""The alert state machine: rules from the Alerts tab, evaluated on a schedule,
delivered once per incident.

Every ``alert_interval_s`` (Settings tab, default 60) :class:`AlertEvaluator` takes each
enabled rule's metric (:mod:`sheetops.alerts.metrics`), per job (``*`` = every enabled
job, each on its own), and moves each (rule, job) pair through a small state machine
kept by the alert store (:class:`sheetops.store.alerts.AlertStore`):

- **fired** — the metric reached the threshold (``value >= threshold``) and the pair was
  not firing: one message, then silence while it keeps firing …
- **reminder** — … except one reminder every ``alert_reminder_s`` (default 3600);
- **resolved** — the metric dropped below the threshold (or there is no longer enough
  data to say it is failing): one message.

Every message (and every failed delivery, ``delivery_failed``) is a row of
``alert_events``. Texts are :mod:`sheetops.alerts.messages`; delivery is
:class:`sheetops.alerts.delivery.ChannelDelivery` by default. A message that still could
not be delivered stays pending and is tried again at each evaluation (at most
``max_pending_tries`` times, after which the next reminder tries again). Nothing here
ever raises into the scheduler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sheetops.alerts import metrics
from sheetops.alerts.delivery import ChannelDelivery, Deliver
from sheetops.alerts.messages import AlertMessage, compose
from sheetops.alerts.metrics import FAILURE_RATE_MIN_RUNS, Target
from sheetops.client_context import carry
from sheetops.config.model import AlertSpec, Snapshot
from sheetops.store import Store
from sheetops.store.schema import DELIVERY_FAILED, FIRED, REMINDER, RESOLVED
from sheetops.templates import RENDER_TIME_LIMIT_S

log = logging.getLogger("sheetops.alerts")


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


class AlertEvaluator:
    """Evaluates the Alerts tab's rules against the store and delivers the messages.

    ``snapshot_provider`` returns the current config :class:`Snapshot`; ``deliver``
    sends one message or raises (default :class:`ChannelDelivery`);
    ``template_time_limit_s`` bounds one render of a Templates-tab message."""

    def __init__(self, store: Store, snapshot_provider: Callable[[], Snapshot],
                 deliver: Deliver | None = None, *,
                 min_runs: int = FAILURE_RATE_MIN_RUNS,
                 max_pending_tries: int = 20,
                 template_time_limit_s: float = RENDER_TIME_LIMIT_S) -> None:
        self.store = store
        self.alerts = store.alerts
        self._snapshot = snapshot_provider
        self.deliver = deliver or ChannelDelivery()
        self.min_runs = max(1, min_runs)
        self.max_pending_tries = max(1, max_pending_tries)
        self.template_time_limit_s = template_time_limit_s
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
        self._thread = threading.Thread(target=carry(self.evaluate_safely), name="sheetops-alerts",
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

    def _targets(self, snapshot: Snapshot, now: float) -> list[Target]:
        return metrics.targets(self.store, snapshot, now, self.min_runs)

    def _states(self) -> dict[tuple[str, str], dict[str, Any]]:
        return self.alerts.states()

    # -- the state machine --------------------------------------------------------------
    def _step(self, target: Target, state: dict[str, Any] | None, snapshot: Snapshot,
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
            message = compose(kind, rule, target.key, value, state["firing_since"],
                              snapshot.templates, now,
                              template_time_limit_s=self.template_time_limit_s)
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


# -- reads for the dashboard (the SQL is in sheetops.store.alerts) -----------------------
def recent_alert_events(store: Store, limit: int = 200, *, rule: str | None = None,
                        job: str | None = None, kinds: Iterable[str] | None = None
                        ) -> list[dict[str, Any]]:
    """``alert_events`` rows, newest first (see :meth:`AlertStore.recent_events`)."""
    return store.alerts.recent_events(limit, rule=rule, job=job, kinds=kinds)


def firing_alerts(store: Store) -> list[dict[str, Any]]:
    """The (rule, job) pairs firing now (see :meth:`AlertStore.firing`)."""
    return store.alerts.firing()
