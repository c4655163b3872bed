"""Delivery of an alert message to its channel, with a few quick retries.

The channel column reads ``SCHEME:TARGET`` (``email:ops@example.com``, ``slack:NAME``,
``webhook:NAME``); the scheme picks the :class:`~sheetops.channels.AlertChannel`
registered under the ``sheetops.alert_channels`` entry-point group
(:func:`sheetops.plugins.load_channel`), so a user's package adds a channel the same way
the built-ins are added, and nothing here names a connector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sheetops import plugins
from sheetops.alerts.messages import AlertMessage
from sheetops.errors import PermanentError, RetryableError
from sheetops.retry import call_policy


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
    looked up (default ``os.environ``). Both are handed to every channel."""

    def __init__(self, policy: DeliveryPolicy | None = None,
                 smtp: Callable[[], Any] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
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
        scheme, _, target = message.channel.partition(":")
        try:
            channel_class = plugins.load_channel(scheme)
        except plugins.UnknownPluginError as exc:
            raise PermanentError(f"channel {message.channel!r}: {exc}") from exc
        channel = channel_class(timeout_s=self.policy.timeout_s, environ=self._environ,
                                smtp=self._smtp)
        channel.send(message, target)
