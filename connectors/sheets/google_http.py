"""The HTTP side of the Google Sheets backend: a gspread ``HTTPClient`` that is bounded.

gspread's own ``BackOffHTTPClient`` retries forever; :class:`SheetsHTTPClient` instead

* rewrites ``https://sheets.googleapis.com`` / ``https://www.googleapis.com`` to the
  emulator base URL when one is configured (no gspread internals are patched: gspread
  lets callers pass the ``http_client`` class it should build),
* waits on a client-side moving-window rate limit per principal (reads and writes per
  minute, kept below Google's per-user quota of 60/min each) instead of collecting 429s;
  with ``SHEETOPS_RATE_LIMIT_STORAGE`` set the window is shared by every process of the
  fleet using the same principal, as Google counts it,
* sets a timeout on every request, and
* retries 429, 408, 5xx and connection errors with exponential backoff and jitter
  (:func:`sheetops.retry.call_policy`), sleeping at least as long as ``Retry-After``
  says, for a bounded number of attempts; then the last error is raised.

It also finds credentials (:func:`make_client`), so the backend only deals in sheets.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gspread
import requests
from gspread.exceptions import APIError
from gspread.http_client import HTTPClient
from limits import RateLimitItemPerMinute
from tenacity import RetryCallState

from sheetops.errors import SheetError
from sheetops.metrics import count_sheet_request
from sheetops.ratelimit import shared_limiter, wait_for_permit
from sheetops.retry import call_policy

log = logging.getLogger("sheetops.sheets")

GOOGLE_HOSTS = ("https://sheets.googleapis.com", "https://www.googleapis.com")
TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class ClientOptions:
    """How the HTTP client behaves; one per backend instance."""

    emulator: str = ""  # base URL of a Sheets emulator, or "" for Google
    timeout_s: float | None = 30.0
    attempts: int = 6
    retry_initial_s: float = 0.5
    retry_max_s: float = 32.0
    reads_per_minute: int = 0  # 0: no client-side limit
    writes_per_minute: int = 0
    principal: str = "anonymous"  # who the quota is counted against


def is_transient(error: BaseException) -> bool:
    """429/408/5xx answers, rate-limit 403s and connection trouble are worth retrying."""
    if isinstance(error, APIError):
        if error.code in TRANSIENT_CODES or error.response.status_code in TRANSIENT_CODES:
            return True
        reasons = {e.get("reason") for e in error.error.get("errors", []) if isinstance(e, dict)}
        return error.code == 403 and bool(reasons & {"rateLimitExceeded",
                                                     "userRateLimitExceeded"})
    return isinstance(error, requests.ConnectionError | requests.Timeout)


def retry_after_s(error: BaseException | None) -> float:
    """Seconds the server asked us to wait (``Retry-After``), 0 when it did not say."""
    if not isinstance(error, APIError):
        return 0.0
    value = error.response.headers.get("Retry-After", "")
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:
        return 0.0


def route(url: str, emulator: str) -> str:
    """``https://sheets.googleapis.com/v4/...`` -> ``{emulator}/v4/...`` (same for Drive)."""
    if emulator:
        for host in GOOGLE_HOSTS:
            if url.startswith(host):
                return emulator.rstrip("/") + url[len(host):]
    return url


def _wait_for_quota(kind: str, per_minute: int, principal: str) -> None:
    """Block until the moving one-minute window has room (wait, never fail)."""
    if per_minute <= 0:
        return
    item = RateLimitItemPerMinute(per_minute)
    limiter = shared_limiter()
    while (delay := wait_for_permit(limiter, item, "sheets", kind, principal)) > 0:
        delay = max(0.05, delay)
        log.info("Sheets %s quota: waiting %.1fs (limit %d/min)", kind, delay, per_minute)
        time.sleep(delay)


class SheetsHTTPClient(HTTPClient):
    """gspread's HTTP client with routing, a timeout, a rate limit and bounded retries."""

    options: ClientOptions = ClientOptions()

    def __init__(self, auth: Any, session: requests.Session | None = None) -> None:
        super().__init__(auth, session)
        self.set_timeout(self.options.timeout_s)

    @classmethod
    def configured(cls, options: ClientOptions) -> type[SheetsHTTPClient]:
        """A subclass carrying ``options``: gspread builds its client from a class."""
        return type("ConfiguredSheetsHTTPClient", (cls,), {"options": options})

    def request(self, method: str, endpoint: str, params: Any = None, data: Any = None,
                json: Mapping[str, Any] | None = None, files: Any = None,
                headers: Any = None) -> requests.Response:
        opts = self.options
        url = route(endpoint, opts.emulator)
        is_read = method.lower() == "get"
        per_minute = opts.reads_per_minute if is_read else opts.writes_per_minute

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            planned = state.next_action.sleep if state.next_action else 0.0
            extra = retry_after_s(error) - planned
            log.warning("Sheets %s %s failed (%s); attempt %d of %d, retrying in %.1fs",
                        method.upper(), url.split("?")[0], error, state.attempt_number,
                        opts.attempts, planned + max(extra, 0.0))
            count_sheet_request("retry")
            if extra > 0:
                time.sleep(extra)

        policy = call_policy(is_transient, attempts=max(1, opts.attempts),
                             initial=opts.retry_initial_s, maximum=opts.retry_max_s,
                             before_sleep=before_sleep)
        for attempt in policy:
            with attempt:
                _wait_for_quota("read" if is_read else "write", per_minute, opts.principal)
                count_sheet_request("read" if is_read else "write")
                return super().request(method, url, params=params, data=data, json=json,
                                       files=files, headers=headers)
        raise AssertionError("unreachable: the retry policy re-raises")


def _anonymous_session() -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = "Bearer sheetops-emulator-anonymous"
    return session


def anonymous_client(emulator: str, options: ClientOptions | None = None) -> gspread.Client:
    """A real gspread client talking to an emulator without credentials (no retries
    unless ``options`` says so)."""
    options = options or ClientOptions(emulator=emulator, attempts=1)
    return gspread.Client(auth=None, session=_anonymous_session(),  # type: ignore[arg-type]
                          http_client=SheetsHTTPClient.configured(options))


def credentials_path(configured: str) -> str:
    """``SHEETOPS_GOOGLE_CREDENTIALS`` or else ``GOOGLE_APPLICATION_CREDENTIALS``."""
    return configured or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")


def load_credentials(path: str) -> tuple[Any, str]:
    """Service-account (or authorized-user) credentials from a JSON file, and the
    account email to tell people to share the sheet with."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    try:
        info = json.loads(Path(path).expanduser().read_text())
    except OSError as e:
        raise SheetError(f"Cannot read the Google credentials file {path} ({e.strerror}): "
                         "point SHEETOPS_GOOGLE_CREDENTIALS at a service-account JSON key."
                         ) from None
    except ValueError:
        raise SheetError(f"The Google credentials file {path} is not JSON: download the "
                         "service-account key again (JSON format).") from None
    kind = info.get("type") if isinstance(info, dict) else None
    try:
        if kind == "service_account":
            creds = service_account.Credentials.from_service_account_info(
                info, scopes=gspread.auth.DEFAULT_SCOPES)
            return creds, creds.service_account_email
        if kind == "authorized_user":
            creds = user_credentials.Credentials.from_authorized_user_info(
                info, scopes=gspread.auth.DEFAULT_SCOPES)
            return creds, info.get("client_id", "your Google account")
    except (ValueError, KeyError) as e:
        raise SheetError(f"The Google credentials file {path} is incomplete ({e}): download "
                         "a new service-account key.") from None
    raise SheetError(f"The Google credentials file {path} is not a service-account key "
                     f"(type {kind!r}): create a JSON key for a service account.")


def make_client(options: ClientOptions, credentials_file: str
                ) -> tuple[gspread.Client, str]:
    """A gspread client and the principal it acts as.

    Credentials: a service-account JSON file when configured; else, with an emulator,
    an anonymous bearer token; else gspread's OAuth user flow when
    ``~/.config/gspread/credentials.json`` exists; else a :class:`SheetError`.
    """
    path = credentials_path(credentials_file)
    factory: Callable[[ClientOptions], type[SheetsHTTPClient]] = SheetsHTTPClient.configured
    if path:
        creds, principal = load_credentials(path)
        opts = _with_principal(options, principal)
        return gspread.Client(auth=creds, http_client=factory(opts)), principal
    if options.emulator:
        return anonymous_client(options.emulator, options), "anonymous"
    oauth_file = Path(gspread.auth.DEFAULT_CREDENTIALS_FILENAME)
    if oauth_file.exists():
        opts = _with_principal(options, "oauth-user")
        return gspread.oauth(http_client=factory(opts)), "your Google account"
    raise SheetError("No Google credentials: set SHEETOPS_GOOGLE_CREDENTIALS (or "
                     "GOOGLE_APPLICATION_CREDENTIALS) to a service-account JSON key file "
                     "(see docs/google_sheets.md).")


def _with_principal(options: ClientOptions, principal: str) -> ClientOptions:
    from dataclasses import replace

    return replace(options, principal=principal)
