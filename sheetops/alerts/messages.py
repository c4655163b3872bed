"""What an alert says: the message value every channel receives, its built-in text, the
variables a Templates-tab row can use, and how values read to a person.

Texts come from the Templates tab when it has a row named like the rule (for fired and
reminder; ``<rule>_resolved`` for resolved), else a row named ``alert`` /
``alert_resolved``, else the built-in text (:func:`default_text`). See
docs/monitoring.md for the variables (:func:`message_variables`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sheetops.config.model import AlertSpec
from sheetops.store.schema import FIRED, REMINDER, RESOLVED
from sheetops.templates import (
    RENDER_TIME_LIMIT_S,
    Rendered,
    TemplateSpec,
    html_to_text,
    render,
)

log = logging.getLogger("sheetops.alerts")


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
                "firing_since": iso(self.since), "time": iso(self.time),
                "subject": self.subject, "body": self.body}

    def text_body(self) -> str:
        """The body as plain text (an HTML body with its tags dropped)."""
        return html_to_text(self.body) if self.format == "html" else self.body


def compose(kind: str, rule: AlertSpec, key: str, value: float | None, since: float | None,
            templates: dict[str, TemplateSpec], now: float, *,
            template_time_limit_s: float = RENDER_TIME_LIMIT_S) -> AlertMessage:
    """The message for one transition of (``rule``, ``key``): the Templates tab's text
    when a row applies and renders (within ``template_time_limit_s``), the built-in text
    for whatever it leaves out."""
    variables = message_variables(kind, rule, key, value, since, now)
    spec = template_for(kind, rule.name, templates)
    rendered = None
    if spec is not None:
        try:
            rendered = render(spec, variables, time_limit_s=template_time_limit_s)
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


def template_for(kind: str, rule: str, templates: dict[str, TemplateSpec]
                 ) -> TemplateSpec | None:
    """The Templates-tab row for a ``kind`` message of ``rule``, if there is one."""
    names = ((f"{rule}_resolved", "alert_resolved") if kind == RESOLVED else (rule, "alert"))
    return next((templates[n] for n in names if n in templates), None)


_STATE_WORDS = {FIRED: "FIRING", REMINDER: "STILL FIRING", RESOLVED: "RESOLVED"}
_METRIC_WORDS = {
    "failure_rate": "failure rate over the last {window}",
    "consecutive_failures": "consecutive failures",
    "duration_p95_s": "95th percentile run duration over the last {window}",
    "queue_depth": "queue depth",
    "no_success_for_s": "time since the last successful run",
    "dead_letters": "dead letters made over the last {window}",
    "stage_lag_s": "age of the oldest record waiting in the stage's queue",
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
    """A duration as a person reads it: 42.0s, 3m 05s, 2h 05m, 1d 03h."""
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
        "channel": rule.channel, "since": iso(since) or "",
        "firing_for": format_duration(now - since) if since else "",
        "time": iso(now), "row": rule.row, "description": description,
    }


def default_text(v: dict[str, Any]) -> Rendered:
    """The built-in subject and body, from :func:`message_variables`."""
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


def iso(ts: float | None) -> str | None:
    """``ts`` as an ISO-8601 UTC time to the second; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
