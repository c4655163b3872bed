"""The JSON form of what crosses between the engine and a worker on another machine.

A distributed executor (Celery next) ships an :class:`~sheetops.context.AttemptRequest`
as JSON and gets an :class:`~sheetops.context.AttemptResult` back the same way. No
secret is ever in it: params hold ``secret:NAME`` references that the worker resolves
from its own environment, and the store travels as a *reference*, its URL without the
password (``postgresql://sheetops@db/ops``). A worker turns the reference back into a
URL with :func:`store_url_for`: its own ``SHEETOPS_STORE_URL`` when that names the same
store (so the password comes from the worker's environment, never from the broker),
else the reference itself (a SQLite file, a trust-auth or ``PGPASSWORD`` database).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from sheetops.context import AttemptRequest, AttemptResult, RecordFailure
from sheetops.errors import SheetopsError
from sheetops.ratelimit import RateLimitSpec
from sheetops.templates import TemplateSpec

#: Bumped when a field changes meaning; a worker refuses a version it does not know.
VERSION = 1


class WireFormatError(SheetopsError):
    """A JSON message that is not an attempt request or result this version can read."""


def store_ref(url: str) -> str:
    """``url`` without its password (in the user info or a ``password=`` query item)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{host}"
    items = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in items if k.lower() != "password"]
    if netloc == parts.netloc and len(kept) == len(items):
        return url  # nothing to remove (urlunsplit would also drop ``sqlite:///``'s slashes)
    query = f"?{urlencode(kept)}" if kept else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}{fragment}"


def store_url_for(ref: str, environ: Mapping[str, str] | None = None) -> str:
    """The URL a worker opens for the store reference ``ref``: its own
    ``SHEETOPS_STORE_URL`` when that is the same store, else ``ref``."""
    environ = os.environ if environ is None else environ
    own = environ.get("SHEETOPS_STORE_URL", "")
    return own if own and store_ref(own) == ref else ref


def request_to_dict(request: AttemptRequest) -> dict[str, Any]:
    """Plain JSON values for ``request``; the store URL as a credential-free reference."""
    data = asdict(request)
    data["store_ref"] = store_ref(data.pop("store_url"))
    if not data["client"]:  # one sheet: the message a worker of before clients reads
        del data["client"]
    if data["rate_limit"] is not None:  # the client is the namespace: sent once, above
        data["rate_limit"].pop("namespace")
    return {"v": VERSION, "kind": "attempt_request", **data}


def request_from_dict(data: Mapping[str, Any],
                      environ: Mapping[str, str] | None = None) -> AttemptRequest:
    """The request ``data`` describes, its store URL resolved by :func:`store_url_for`."""
    fields = _body(data, "attempt_request")
    template, rate_limit = fields.pop("template", None), fields.pop("rate_limit", None)
    ref = fields.pop("store_ref", "")
    try:
        return AttemptRequest(
            **fields, store_url=store_url_for(ref, environ),
            template=TemplateSpec(**template) if template else None,
            rate_limit=RateLimitSpec(**rate_limit) if rate_limit else None)
    except TypeError as exc:
        raise WireFormatError(f"not an attempt request: {exc}") from None


def result_to_dict(result: AttemptResult) -> dict[str, Any]:
    return {"v": VERSION, "kind": "attempt_result", **asdict(result)}


def result_from_dict(data: Mapping[str, Any]) -> AttemptResult:
    fields = _body(data, "attempt_result")
    failures = [RecordFailure(**f) for f in fields.pop("record_failures", [])]
    try:
        return AttemptResult(**fields, record_failures=failures)
    except TypeError as exc:
        raise WireFormatError(f"not an attempt result: {exc}") from None


def dumps(data: Mapping[str, Any]) -> str:
    """Compact JSON; a value JSON cannot hold (a param that is not plain data) is a
    :class:`WireFormatError` naming its type."""
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WireFormatError(f"cannot be sent as JSON: {exc}") from None


def loads(text: str | bytes) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise WireFormatError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireFormatError("not a JSON object")
    return data


def _body(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    if data.get("kind") != kind:
        raise WireFormatError(f"expected a {kind}, got {data.get('kind')!r}")
    if data.get("v") != VERSION:
        raise WireFormatError(f"{kind} version {data.get('v')!r}; this sheetops reads "
                              f"version {VERSION}: upgrade the worker and the engine together")
    return {k: v for k, v in data.items() if k not in ("v", "kind")}
