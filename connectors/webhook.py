"""Post JSON to a webhook or a Slack incoming webhook named in the sheet.

The sheet names a hook (``webhook:deploys``, ``slack:ops``); its URL comes from the
environment — ``SHEETOPS_WEBHOOK_DEPLOYS``, ``SHEETOPS_SLACK_OPS`` — because such URLs
carry their own credentials. For the same reason errors and logs name the hook, never
its URL. Transient failures are retried by :class:`sheetops.connectors.http.HttpClient`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from sheetops.connectors.http import HttpClient

from sheetops.errors import PermanentError

KINDS = {"webhook": "SHEETOPS_WEBHOOK_", "slack": "SHEETOPS_SLACK_"}


def env_var(kind: str, name: str) -> str:
    """The environment variable holding the URL of hook ``name`` of ``kind``."""
    if kind not in KINDS:
        raise PermanentError(f"unknown hook kind {kind!r}; use one of {', '.join(KINDS)}")
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", name.strip()).strip("_").upper()
    if not cleaned:
        raise PermanentError(f"{kind} hook needs a name, e.g. {kind}:ops")
    return KINDS[kind] + cleaned


def hook_url(kind: str, name: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL of hook ``name``; a clear ``PermanentError`` when it is not configured."""
    environ = os.environ if environ is None else environ
    var = env_var(kind, name)
    url = (environ.get(var) or "").strip()
    if not url:
        raise PermanentError(f"{kind} hook {name!r} is not configured: set {var} to its URL "
                             "in the environment or .env")
    if not url.lower().startswith(("http://", "https://")):
        raise PermanentError(f"{var} must be an http(s) URL")
    return url


def post_json(kind: str, name: str, payload: Any, *, client: HttpClient | None = None,
              environ: Mapping[str, str] | None = None, timeout_s: float = 10.0) -> int:
    """POST ``payload`` as JSON to hook ``name``; return the HTTP status."""
    url = hook_url(kind, name, environ)
    label = f"{kind}:{name}"
    own = client is None
    http = client or HttpClient(timeout_s=timeout_s, secrets=[url])
    try:
        response = http.post(url, json=payload, label=label, timeout_s=timeout_s)
        status = response.status_code
        response.close()
        return status
    finally:
        if own:
            http.close()


def post_webhook(name: str, payload: Any, **kwargs: Any) -> int:
    """POST ``payload`` as JSON to ``SHEETOPS_WEBHOOK_<NAME>``."""
    return post_json("webhook", name, payload, **kwargs)


def post_slack(name: str, text: str, *, blocks: list[dict[str, Any]] | None = None,
               **kwargs: Any) -> int:
    """Send ``text`` (and optional Block Kit ``blocks``) to ``SHEETOPS_SLACK_<NAME>``."""
    payload: dict[str, Any] = {"text": text}
    if blocks:
        payload["blocks"] = blocks
    return post_json("slack", name, payload, **kwargs)


def send(channel: str, payload: Any, **kwargs: Any) -> int:
    """Send to an Alerts-tab style channel ``slack:NAME`` or ``webhook:NAME``.

    For Slack a ``str`` payload becomes ``{"text": payload}``; for a webhook a ``str``
    payload becomes ``{"text": payload}`` too, so one message fits both.
    """
    kind, sep, name = channel.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise PermanentError(f"channel {channel!r} is not slack:NAME or webhook:NAME")
    body = {"text": payload} if isinstance(payload, str) else payload
    return post_json(kind, name, body, **kwargs)
