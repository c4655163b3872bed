"""The interface an alert channel implements, so alerts reach email, Slack or a webhook
without the engine importing any of them.

A channel is registered by scheme (the part of ``email:ops@example.com`` before the
colon) under the ``sheetops.alert_channels`` entry-point group and found with
:func:`sheetops.plugins.load_channel`; the built-ins live in
``sheetops.connectors.alert_channels``, and a user adds one the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sheetops.alerts.messages import AlertMessage


class AlertChannel(Protocol):
    """Delivers one alert message to a target of its scheme, or raises.

    Raise :class:`~sheetops.errors.RetryableError` (or ``OSError``) for a failure worth
    retrying and :class:`~sheetops.errors.PermanentError` for a target that cannot work
    (an unconfigured hook, a malformed address)."""

    def __init__(self, *, timeout_s: float, environ: Mapping[str, str] | None = None,
                 smtp: Callable[[], Any] | None = None) -> None:
        """``environ``: where hook URLs are looked up (default ``os.environ``); ``smtp``:
        the SMTP config at each send (default: ``SHEETOPS_SMTP_*``)."""
        ...

    def send(self, message: AlertMessage, target: str) -> None:
        """Deliver ``message`` to ``target`` (``ops@example.com``, a hook's name)."""
        ...
