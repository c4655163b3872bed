"""A loopback HTTP server for tests: scripted JSON replies, recorded requests.

Routes answer with a sequence of replies (the last one repeats), so a test can script
an outage and a recovery — ``503, 503, 200`` — and then count how often it was called::

    with HttpServer() as server:
        server.sequence("/items", [503, 503, 200], body={"data": [1, 2, 3]})
        ...  # GET server.url("/items")
        assert server.count("/items") == 3
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sheetops.testing.server import BackgroundServer


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``body`` is sent as JSON unless it is ``str``/``bytes``."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    def encoded(self) -> tuple[bytes, str]:
        if self.body is None:
            return b"", "text/plain"
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class HttpServer(BackgroundServer):
    """``ThreadingHTTPServer`` on ``host`` (a free port by default) in a daemon thread.

    Unknown routes answer ``404`` with a JSON error. Every request is recorded in
    :attr:`requests`, including ones to unknown routes.
    """

    thread_name = "sheetops-http"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self._routes: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []

    def add(self, path: str, *replies: Reply, method: str = "GET") -> None:
        """Answer ``method path`` with ``replies`` in turn; the last one repeats."""
        if not replies:
            raise ValueError("a route needs at least one reply")
        with self._lock:
            self._routes[(method.upper(), path)] = list(replies)

    def json(self, path: str, body: Any, *, status: int = 200, method: str = "GET",
             headers: Mapping[str, str] | None = None) -> None:
        """Answer every ``method path`` with ``body`` as JSON."""
        self.add(path, Reply(status, body, dict(headers or {})), method=method)

    def sequence(self, path: str, statuses: Iterable[int], *, body: Any = None,
                 method: str = "GET", headers: Mapping[str, str] | None = None) -> None:
        """Answer with each status in turn; 2xx replies carry ``body``, others an error
        JSON and ``headers`` (e.g. ``Retry-After``)."""
        replies = [Reply(s, body) if 200 <= s < 300
                   else Reply(s, {"error": f"scripted {s}"}, dict(headers or {}))
                   for s in statuses]
        self.add(path, *replies, method=method)

    def url(self, path: str = "") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """How many requests arrived (for ``path`` and ``method`` when given)."""
        with self._lock:
            return sum(1 for r in self.requests
                       if (path is None or r.path == path)
                       and (method is None or r.method == method.upper()))

    def _next_reply(self, method: str, path: str) -> Reply:
        with self._lock:
            replies = self._routes.get((method, path))
            if not replies:
                return Reply(404, {"error": f"no route for {method} {path}"})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner._record(RecordedRequest(
                    self.command, parts.path, parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()}, body))
                reply = owner._next_reply(self.command, parts.path)
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                payload, content_type = reply.encoded()
                headers = {"Content-Type": content_type, **reply.headers}
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(reply.status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output quiet; requests are recorded instead."""

        return Handler
