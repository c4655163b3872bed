"""What an automation sees: the run context ``ctx`` handed to ``fn(ctx)``."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import traceback
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sheetops import templates
from sheetops.errors import PermanentError
from sheetops.ratelimit import RateLimitSpec
from sheetops.secrets import (
    SECRET_PREFIX,
    SecretsConfigError,
    allowed_names,
    available_secrets,
    not_allowed,
)
from sheetops.templates import Rendered, TemplateSpec

if TYPE_CHECKING:
    from sheetops.store.deliveries import Deliveries



@dataclass(frozen=True)
class AttemptRequest:
    """One attempt of one run, as shipped to a worker (plain, picklable values only)."""

    run_id: str
    job: str
    automation: str
    attempt: int
    params: dict[str, Any]
    timeout_s: float
    dry_run: bool = False
    template: TemplateSpec | None = None
    rate_limit: RateLimitSpec | None = None
    trigger: str = "schedule"
    #: the worker's memory limit for this attempt in MB (Settings ``worker_memory_mb``);
    #: 0 = no limit
    memory_mb: int = 0
    #: the store, where :attr:`RunContext.deliveries` notes what this run already sent;
    #: its JSON form carries it without the password (see :mod:`sheetops.wire`)
    store_url: str = ""
    #: a pipeline job's stage settings from the Stages tab: stage → {setting: value}
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the client whose job this is when one process serves several ("" for one
    #: sheet): its rate limits and stage limits are kept apart from other clients'
    client: str = ""

    def to_json(self) -> str:
        """This request as JSON, with no secret in it (:mod:`sheetops.wire`)."""
        from sheetops import wire

        return wire.dumps(wire.request_to_dict(self))

    @classmethod
    def from_json(cls, text: str | bytes,
                  environ: dict[str, str] | None = None) -> AttemptRequest:
        """The request :meth:`to_json` wrote; the store URL comes from the worker's own
        ``SHEETOPS_STORE_URL`` in ``environ`` when it is the same store."""
        from sheetops import wire

        return wire.request_from_dict(wire.loads(text), environ)


@dataclass(frozen=True)
class RecordFailure:
    """A record the automation could not process; the run goes on with the others."""

    record_key: str
    error_type: str
    message: str
    stage: str = "run"


@dataclass
class AttemptResult:
    """What came back from one attempt."""

    run_id: str
    job: str
    attempt: int
    started_at: float
    finished_at: float
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    permanent: bool = False
    timed_out: bool = False
    record_failures: list[RecordFailure] = field(default_factory=list)

    def to_json(self) -> str:
        """This result as JSON (messages and tracebacks are masked already)."""
        from sheetops import wire

        return wire.dumps(wire.result_to_dict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> AttemptResult:
        from sheetops import wire

        return wire.result_from_dict(wire.loads(text))


def resolve_secrets(value: Any, environ: dict[str, str] | None = None) -> Any:
    """Replace ``"secret:NAME"`` strings (at any depth) with the allowed secret ``NAME``
    (see :mod:`sheetops.secrets`); a name the deployment does not allow is refused."""
    environ = os.environ if environ is None else environ
    if isinstance(value, str) and value.startswith(SECRET_PREFIX):
        name = value[len(SECRET_PREFIX):].strip()
        try:
            available = available_secrets(environ)
            allowed = allowed_names(environ)
        except SecretsConfigError as exc:
            raise PermanentError(str(exc)) from None
        if name not in allowed:
            raise PermanentError(not_allowed(name))
        if name not in available:
            raise PermanentError(f"secret {name!r} is not set in the environment")
        return available[name]
    if isinstance(value, dict):
        return {k: resolve_secrets(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_secrets(v, environ) for v in value]
    return value


def secret_values(value: Any, environ: dict[str, str] | None = None) -> set[str]:
    """The secret values ``value`` refers to, so they can be masked in any output."""
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    if isinstance(value, str) and value.startswith(SECRET_PREFIX):
        try:
            secret = available_secrets(environ).get(value[len(SECRET_PREFIX):].strip(), "")
        except SecretsConfigError:
            secret = ""
        if len(secret) >= 4:
            found.add(secret)
    elif isinstance(value, dict):
        for v in value.values():
            found |= secret_values(v, environ)
    elif isinstance(value, list):
        for v in value:
            found |= secret_values(v, environ)
    return found


#: every secret a run in this process has used: log lines of any logger (connectors'
#: retry warnings included) are masked with these by :mod:`sheetops.logs`
known_secrets: set[str] = set()


@functools.lru_cache(maxsize=1024)
def _forms(secret: str) -> tuple[str, ...]:
    """The ways a secret reaches the outside: as-is, upper/lower case, base64 (standard
    and URL-safe, padded or not), JSON-escaped and URL-quoted; longest first."""
    raw = secret.encode()
    encoded = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    forms = {secret, secret.upper(), secret.lower(), json.dumps(secret)[1:-1],
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             *encoded, *(e.rstrip("=") for e in encoded)}
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def mask(text: str, secrets: set[str]) -> str:
    """``text`` with every secret, in each of its forms, replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, "***")
    return text


def mask_value(value: Any, secrets: set[str]) -> Any:
    """``value`` with every secret in its strings (at any depth) replaced by ``***``."""
    if not secrets:
        return value
    if isinstance(value, str):
        return mask(value, secrets)
    if isinstance(value, dict):
        return {k: mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_value(v, secrets) for v in value)
    return value


class _MaskingAdapter(logging.LoggerAdapter):
    """``ctx.log``: adds the run's fields and masks the run's secrets in each line (the
    message is formatted here, so secrets passed as arguments are masked too)."""

    def __init__(self, logger: logging.Logger, extra: dict[str, Any],
                 secrets: set[str]) -> None:
        super().__init__(logger, extra)
        self.secrets = secrets

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        if self.secrets:
            text = str(msg) % args if args else str(msg)
            exc_info = kwargs.pop("exc_info", None)
            if exc_info:
                if isinstance(exc_info, BaseException):
                    exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
                elif not isinstance(exc_info, tuple):
                    import sys

                    exc_info = sys.exc_info()
                if exc_info[0] is not None:
                    text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
            msg, args = mask(text, self.secrets), ()
        msg, kwargs = self.process(msg, kwargs)
        self.logger.log(level, msg, *args, **kwargs)


class RunContext:
    """The ``ctx`` an automation receives.

    ``params`` has secrets resolved; ``render`` fills the row's template;
    ``throttle`` waits for the row's rate limit; ``record_failure`` reports one bad
    record without failing the run; ``deliveries`` remembers, across the run's attempts,
    which records were already sent (so a retry never sends them again).
    """

    def __init__(self, request: AttemptRequest,
                 throttle: Callable[[RateLimitSpec, str], float] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.request = request
        self.job = request.job
        self.run_id = request.run_id
        self.attempt = request.attempt
        self.dry_run = request.dry_run
        self.trigger = request.trigger
        self.params: dict[str, Any] = resolve_secrets(dict(request.params))
        #: secret values this run uses (params and ``ctx.secret``): masked in its log
        #: lines, errors, tracebacks and result
        self.secrets: set[str] = secret_values(request.params)
        known_secrets.update(self.secrets)
        self.log = _MaskingAdapter(
            logger or logging.getLogger(f"sheetops.automation.{request.automation}"),
            {"job": request.job, "run_id": request.run_id, "attempt": request.attempt,
             # on a Celery worker, the one place that knows whose run this is
             **({"client": request.client} if request.client else {})},
            self.secrets)
        self._throttle = throttle
        self.record_failures: list[RecordFailure] = []

    @functools.cached_property
    def deliveries(self) -> Deliveries:
        """What this run already delivered, kept in the store across attempts."""
        from sheetops.store.deliveries import Deliveries

        return Deliveries(self.request.store_url, self.run_id)

    @property
    def template(self) -> TemplateSpec | None:
        return self.request.template

    def render(self, **variables: Any) -> Rendered:
        """Render the row's template with ``variables`` (sandboxed Jinja2)."""
        if self.request.template is None:
            raise PermanentError(f"job {self.job!r} has no template; set its template "
                                 "column to a name from the Templates tab")
        return templates.render(self.request.template, variables)

    def throttle(self) -> float:
        """Wait until the row's rate limit allows one more call; return seconds waited."""
        if self.request.rate_limit is None or self._throttle is None:
            return 0.0
        return self._throttle(replace(self.request.rate_limit, namespace=self.request.client),
                              self.job)

    def secret(self, name: str) -> str:
        value = resolve_secrets(SECRET_PREFIX + name)
        if len(value) >= 4:
            self.secrets.add(value)
            known_secrets.add(value)
        return value

    def record_failure(self, record_key: Any, error: BaseException | str,
                       stage: str = "run") -> None:
        """Note that one record failed; it is counted in ``records_failed`` and listed
        on the Errors tab with its key, and the run carries on."""
        if isinstance(error, BaseException):
            etype, message = type(error).__name__, str(error)
        else:
            etype, message = "RecordError", str(error)
        self.record_failures.append(RecordFailure(str(record_key), etype, message, stage))
