"""The built-in alert channels: ``email:ADDRESS``, ``slack:NAME`` and ``webhook:NAME``.

Each implements :class:`sheetops.channels.AlertChannel` over the email and webhook
connectors and is registered by scheme under ``sheetops.alert_channels``; each makes
exactly one delivery try (the alert evaluator retries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sheetops.connectors.email import SmtpConfig, build_message, send_email
from sheetops.connectors.http import HttpClient
from sheetops.connectors.webhook import hook_url, post_json

from sheetops.templates import Rendered

if TYPE_CHECKING:
    from sheetops.alerts.messages import AlertMessage


class _Channel:
    def __init__(self, *, timeout_s: float, environ: Mapping[str, str] | None = None,
                 smtp: Callable[[], Any] | None = None) -> None:
        self.timeout_s = timeout_s
        self.environ = environ
        self.smtp = smtp


class EmailChannel(_Channel):
    """Mails the alert to ``target`` over the SMTP server of ``SHEETOPS_SMTP_*``."""

    def send(self, message: AlertMessage, target: str) -> None:
        config = self.smtp() if self.smtp else SmtpConfig.from_settings()
        config = config.with_overrides(timeout_s=self.timeout_s)
        email = build_message(Rendered(message.subject, message.body, message.format),
                              to=target.strip(), sender=config.sender,
                              headers={"X-Sheetops-Alert": f"{message.kind} {message.rule}"})
        send_email(config, email, attempts=1)


class _HookChannel(_Channel):
    kind = ""

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        raise NotImplementedError

    def send(self, message: AlertMessage, target: str) -> None:
        url = hook_url(self.kind, target, self.environ)
        with HttpClient(timeout_s=self.timeout_s, attempts=1, secrets=[url]) as client:
            post_json(self.kind, target, self.payload(message), client=client,
                      environ=self.environ, timeout_s=self.timeout_s)


class SlackChannel(_HookChannel):
    """Posts the subject and text to the Slack incoming webhook ``SHEETOPS_SLACK_<NAME>``."""

    kind = "slack"

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        return {"text": f"*{message.subject}*\n{message.text_body()}".strip()}


class WebhookChannel(_HookChannel):
    """Posts the alert as JSON (:meth:`AlertMessage.payload`) to ``SHEETOPS_WEBHOOK_<NAME>``."""

    kind = "webhook"

    def payload(self, message: AlertMessage) -> dict[str, Any]:
        return message.payload()
