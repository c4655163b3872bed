"""Alerts: rules from the Alerts tab, judged on a schedule, delivered once per incident.

- :mod:`~sheetops.alerts.metrics` — each rule's value per job or queue, over the
  aggregates the dashboard reads too;
- :mod:`~sheetops.alerts.machine` — the state machine (fired, reminder, resolved) over
  the alert store, and the reads the dashboard and ``/metrics`` show;
- :mod:`~sheetops.alerts.messages` — the message value, texts and formatting;
- :mod:`~sheetops.alerts.delivery` — retries around the channel registered for the
  scheme of ``email:…``, ``slack:…``, ``webhook:…`` or a user's own
  (:class:`sheetops.channels.AlertChannel`, entry-point group ``sheetops.alert_channels``).

Callers import from here.
"""

from sheetops.alerts.delivery import ChannelDelivery, Deliver, DeliveryPolicy
from sheetops.alerts.machine import (
    AlertEvaluator,
    AlertEvent,
    firing_alerts,
    recent_alert_events,
)
from sheetops.alerts.messages import (
    AlertMessage,
    default_text,
    format_duration,
    format_value,
    message_variables,
)
from sheetops.alerts.metrics import FAILURE_RATE_MIN_RUNS, METRICS

__all__ = [
    "FAILURE_RATE_MIN_RUNS", "METRICS", "AlertEvaluator", "AlertEvent", "AlertMessage",
    "ChannelDelivery", "Deliver", "DeliveryPolicy", "default_text", "firing_alerts",
    "format_duration", "format_value", "message_variables", "recent_alert_events",
]
