"""HTTP for automations: a ``requests`` Session that always times out, retries what is
worth retrying and never leaks credentials in its errors.

- Every request has a timeout (``timeout_s``; there is no way to send one without).
- ``429``, ``5xx`` and connection errors/timeouts are retried a bounded number of times
  with exponential backoff and jitter (:func:`sheetops.retry.call_policy`); a
  ``Retry-After`` header sets the wait instead, unless it asks for longer than
  ``max_retry_after_s`` — then the call fails at once with a :class:`TransientHttpError`
  (a ``RetryableError``) so the engine retries the run later instead of blocking a worker.
- When the retries run out the last :class:`TransientHttpError` is raised: the engine
  may retry the whole run.
- Any other ``4xx`` raises :class:`HttpStatusError` (a ``PermanentError``) naming the
  status and URL: asking again would not help.
- Messages pass through a mask: header values that look like credentials
  (``Authorization``, ``*token*``, ``*key*`` …), secret-looking query parameters, URL
  passwords and any ``secrets`` the caller names are replaced with ``***``. Errors are
  raised ``from None`` so no unmasked ``requests`` exception rides along in tracebacks.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests
from tenacity import RetryCallState
from tenacity.wait import wait_base

from sheetops.context import mask
from sheetops.errors import PermanentError, RetryableError
from sheetops.retry import call_policy

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
SENSITIVE_WORDS = ("auth", "token", "key", "secret", "password", "passwd", "signature",
                   "sig", "cookie", "session", "credential")
USER_AGENT = "sheetops/0.1"


class TransientHttpError(RetryableError):
    """A 429/5xx answer or a connection failure: worth another try later."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.url, self.status, self.retry_after = url, status, retry_after


class HttpStatusError(PermanentError):
    """A 4xx answer other than 429: the request itself is wrong (or not allowed)."""

    def __init__(self, message: str, *, url: str, status: int) -> None:
        super().__init__(message)
        self.url, self.status = url, status


def is_sensitive(name: str) -> bool:
    """Whether a header or query parameter name suggests its value is a credential."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def secrets_in(url: str, headers: Mapping[str, str] | None = None) -> set[str]:
    """Credential-looking values in ``url`` (password, sensitive query values) and in
    ``headers`` (sensitive header values, plus the token part of ``Bearer x``)."""
    found: set[str] = set()
    parts = urlsplit(url)
    if parts.password:
        found.add(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if is_sensitive(name) and value:
            found.add(value)
    for name, value in (headers or {}).items():
        if is_sensitive(name) and value:
            found.add(str(value))
            scheme, _, token = str(value).partition(" ")
            if token and scheme.isalpha():
                found.add(token)
    return {s for s in found if len(s) >= 3}


class _WaitRetryAfter(wait_base):
    """Wait what the server asked for in ``Retry-After``; else fall back to backoff."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, TransientHttpError) and exc.retry_after is not None:
            return exc.retry_after
        return float(self.fallback(retry_state))


class HttpClient:
    """A small client over one ``requests.Session``; use it as a context manager.

    ``headers`` are sent with every request; ``secrets`` are extra strings to mask in
    errors (e.g. values of ``secret:NAME`` params). ``attempts`` bounds tries per call.
    """

    def __init__(self, *, headers: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, attempts: int = 4,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 max_retry_after_s: float = 60.0, secrets: Iterable[str] = (),
                 session: requests.Session | None = None) -> None:
        if timeout_s is None or timeout_s <= 0:
            raise ValueError("timeout_s must be a positive number of seconds")
        self.timeout_s = float(timeout_s)
        self.attempts = max(1, int(attempts))
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.headers.update(dict(headers or {}))
        self._secrets = {s for s in secrets if s and len(s) >= 3}
        self._secrets |= secrets_in("", self.session.headers)

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def mask(self, text: str, extra: Iterable[str] = ()) -> str:
        """``text`` with every known secret replaced by ``***``."""
        secrets = self._secrets | set(extra)
        return mask(text, set(sorted(secrets, key=len, reverse=True)))

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, data: Any = None,
                headers: Mapping[str, str] | None = None, timeout_s: float | None = None,
                label: str | None = None) -> requests.Response:
        """Send one request, retrying transient failures; return a 2xx/3xx response.

        ``label`` names the target in errors and logs instead of the URL (for URLs that
        are themselves secret, like chat webhooks).
        """
        timeout = float(timeout_s) if timeout_s else self.timeout_s
        extra = secrets_in(url, headers)
        if params:
            extra |= {str(v) for k, v in params.items() if is_sensitive(k) and v}
        shown = label or self.mask(url, extra)
        policy = call_policy(self._is_retryable_now, attempts=self.attempts,
                             initial=self.backoff_initial_s, maximum=self.backoff_max_s,
                             before_sleep=lambda s: log.warning(
                                 "%s %s: %s; retrying (attempt %d of %d)", method, shown,
                                 s.outcome.exception() if s.outcome else "?",
                                 s.attempt_number, self.attempts))
        policy = policy.copy(wait=_WaitRetryAfter(policy.wait))
        return policy(self._send_once, method, url, params=params, json=json, data=data,
                      headers=headers, timeout=timeout, shown=shown, extra=extra)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", url, **kwargs)

    def get_json(self, url: str, **kwargs: Any) -> Any:
        """GET ``url`` and decode its JSON body (a ``PermanentError`` when it is not JSON)."""
        response = self.get(url, **kwargs)
        try:
            return response.json()
        except ValueError:
            shown = kwargs.get("label") or self.mask(url, secrets_in(url, kwargs.get("headers")))
            ctype = response.headers.get("Content-Type", "no content type")
            raise PermanentError(f"GET {shown} returned {response.status_code} with a body "
                                 f"that is not JSON ({ctype})") from None

    def _is_retryable_now(self, exc: BaseException) -> bool:
        if not isinstance(exc, TransientHttpError):
            return False
        return exc.retry_after is None or exc.retry_after <= self.max_retry_after_s

    def _send_once(self, method: str, url: str, *, timeout: float, shown: str,
                   extra: set[str], **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise TransientHttpError(f"{method} {shown} timed out after {timeout:g}s",
                                     url=shown) from None
        except requests.ConnectionError as exc:
            reason = self.mask(_root_reason(exc), extra | {url})
            raise TransientHttpError(f"{method} {shown} could not connect: {reason}",
                                     url=shown) from None
        except requests.RequestException as exc:
            reason = self.mask(f"{type(exc).__name__}: {exc}", extra | {url})
            raise PermanentError(f"{method} {shown} failed: {reason}") from None
        status = response.status_code
        if status < 400:
            return response
        snippet = self.mask(_snippet(response), extra)
        detail = f"{method} {shown} returned {status} {response.reason or ''}".rstrip()
        if snippet:
            detail += f": {snippet}"
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.close()
            raise TransientHttpError(detail, url=shown, status=status,
                                     retry_after=retry_after)
        response.close()
        raise HttpStatusError(detail, url=shown, status=status)


def _snippet(response: requests.Response, limit: int = 200) -> str:
    try:
        text = response.text
    except Exception:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _root_reason(exc: BaseException) -> str:
    """The innermost cause's class name, which names the failure without the URL."""
    seen: BaseException = exc
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
    text = str(seen)
    return f"{type(seen).__name__}: {text}" if text else type(seen).__name__
