"""Refuse requests whose ``Host`` or ``Origin`` is not the dashboard's own address.

The dashboard listens on loopback without a password by default, so a page on any site
could reach it through DNS rebinding (a name that resolves to 127.0.0.1) and drive its
websocket — Streamlit accepts any Host, and its CORS/XSRF settings do not look at Host.
This ASGI middleware runs in front of Streamlit (see :mod:`sheetops.dashboard.launcher`)
and answers 403 (HTTP) or closes the websocket (1008) for a foreign Host or Origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
                   Awaitable[None]]
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` values the dashboard answers on ``host:port``; ``None`` when bound to
    every address (then only the Origin-matches-Host rule applies)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    names = {f"[{host}]" if ":" in host else host}
    try:
        if ipaddress.ip_address(host).is_loopback:
            names.update(LOOPBACK_NAMES)
    except ValueError:  # a host name, allowed as itself
        pass
    hosts = {f"{name.lower()}:{port}" for name in names}
    if port == 80:
        hosts.update(name.lower() for name in names)
    return frozenset(hosts)


def refusal(headers: dict[bytes, bytes], hosts: frozenset[str] | None) -> str | None:
    """Why a request with these headers is refused, or ``None`` to let it through."""
    host = headers.get(b"host", b"").decode("latin-1").strip().lower()
    if hosts is not None and host not in hosts:
        return f"Host {host or '(none)'} is not this dashboard's address"
    origin = headers.get(b"origin")
    if origin is not None:
        netloc = urlsplit(origin.decode("latin-1").strip().lower()).netloc
        if netloc != host:
            return f"Origin {origin.decode('latin-1')} is not this dashboard"
    return None


class HostOriginGuard:
    """ASGI middleware: pass requests for the dashboard's own address, refuse the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._hosts: frozenset[str] | bool | None = False  # False: not computed yet

    def hosts(self) -> frozenset[str] | None:
        """Computed at the first request, from where Streamlit was told to listen."""
        if self._hosts is False:
            from streamlit import config

            self._hosts = allowed_hosts(str(config.get_option("server.address") or
                                            "127.0.0.1"),
                                        int(config.get_option("server.port")))
        return self._hosts  # type: ignore[return-value]

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        reason = refusal(dict(scope.get("headers") or []), self.hosts())
        if reason is None:
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return None
        body = f"403 Forbidden: {reason}\n".encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return None
