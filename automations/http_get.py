"""``http_get``: fetch a JSON API and count the records it returns.

Params (the Jobs tab's ``params`` JSON):

- ``url`` (required): what to GET; may be ``"secret:NAME"`` when the URL holds a key.
- ``headers``: a JSON object of request headers, e.g.
  ``{"Authorization": "secret:API_AUTH"}`` where the environment variable ``API_AUTH``
  holds the whole value (``Bearer abc…``); secret values never appear in errors.
- ``timeout_s``: seconds to wait for the server (default 30).
- ``json_path``: where the list of records is, as dot-separated keys and list indexes,
  e.g. ``"data.items"``; without it the response itself must be a list.

Every request waits for the job's rate limit first. 429/5xx answers and connection
failures are retried (honouring ``Retry-After``); other 4xx answers fail the run
without retries. A dry run still sends the GET: it only reads, so a dry run shows what a
real run would count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sheetops.connectors.http import DEFAULT_TIMEOUT_S, HttpClient, secrets_in

from sheetops.context import secret_values
from sheetops.errors import PermanentError
from sheetops.registry import automation


def find_list(document: Any, json_path: str | None) -> list[Any]:
    """The list at ``json_path`` (``"data.items"``, ``"results.0.rows"``) in ``document``."""
    node, walked = document, []
    for key in [k for k in (json_path or "").split(".") if k]:
        where = ".".join(walked) or "the response"
        if isinstance(node, Mapping):
            if key not in node:
                raise PermanentError(f"json_path {json_path!r}: {where} has no key {key!r} "
                                     f"(keys: {', '.join(map(str, node)) or 'none'})")
            node = node[key]
        elif isinstance(node, list) and key.lstrip("-").isdigit():
            try:
                node = node[int(key)]
            except IndexError:
                raise PermanentError(f"json_path {json_path!r}: {where} has "
                                     f"{len(node)} items, no index {key}") from None
        else:
            raise PermanentError(f"json_path {json_path!r}: {where} is a "
                                 f"{type(node).__name__}, cannot take {key!r}")
        walked.append(key)
    if not isinstance(node, list):
        lists = [k for k, v in node.items() if isinstance(v, list)] \
            if isinstance(node, Mapping) else []
        hint = f"; lists found at: {', '.join(lists)}" if lists else ""
        at = f"json_path {json_path!r}" if json_path else "the response (no json_path)"
        raise PermanentError(f"{at} is a {type(node).__name__}, not a list of records{hint}")
    return node


@automation("http_get")
def http_get(ctx: Any) -> dict[str, Any]:
    """GET a JSON API and count the records in it (read-only, so dry runs fetch too)."""
    params = ctx.params
    url = params.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise PermanentError("params.url must be an http(s) URL, e.g. "
                             '{"url": "https://api.example.com/items"}')
    headers = params.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise PermanentError("params.headers must be a JSON object of header: value")
    try:
        timeout_s = float(params.get("timeout_s") or DEFAULT_TIMEOUT_S)
    except (TypeError, ValueError):
        raise PermanentError(f"params.timeout_s must be a number, "
                             f"not {params.get('timeout_s')!r}") from None
    json_path = params.get("json_path")
    secrets = secret_values(ctx.request.params)
    with HttpClient(headers={str(k): str(v) for k, v in headers.items()},
                    timeout_s=timeout_s, secrets=secrets) as client:
        ctx.throttle()
        response = client.get(url)
        shown_url = client.mask(url, secrets_in(url))
        try:
            document = response.json()
        except ValueError:
            ctype = response.headers.get("Content-Type", "no content type")
            raise PermanentError(f"GET {shown_url} returned {response.status_code} with a "
                                 f"body that is not JSON ({ctype})") from None
    records = find_list(document, json_path)
    ctx.log.info("GET %s: %d records", shown_url, len(records))
    return {"records_in": len(records), "records_out": len(records),
            "status": response.status_code, "url": shown_url}
