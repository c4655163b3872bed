"""A real SMTP server on loopback for tests: aiosmtpd in a thread.

Tests send through the real ``smtplib`` client, so what they check is what a mail
server would see: envelopes, MIME structure, AUTH, STARTTLS and refusals. The server
can require a login, refuse chosen recipients with ``550`` for good, or defer them
with ``451`` a few times to exercise retries::

    with SmtpServer(auth=("bot", "s3cret"), refuse={"bad@example.com"}) as server:
        ...  # send to 127.0.0.1:server.port
        assert server.messages[0]["Subject"] == "Hello"
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class Delivery:
    """One accepted DATA transaction: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        return self._server._decide_rcpt(address, envelope, session)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        self._server._deliver(Delivery(envelope.mail_from, tuple(envelope.rcpt_tos),
                                       message))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """A Controller that can bind port 0 and learn the port the OS picked."""

    async def _bind(self) -> Any:
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname,
                                               port=self.port, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server

    def _create_server(self) -> Any:
        return self._bind()


class SmtpServer:
    """aiosmtpd on ``host`` (a free port by default), collecting what it receives.

    ``auth``: ``(user, password)`` the client must log in with before ``RCPT``.
    ``refuse``: recipients answered with ``550`` (permanent).
    ``defer``: recipient → how many times to answer ``451`` (temporary) before accepting.
    ``starttls``: offer STARTTLS with a throw-away self-signed certificate; clients
    trust it through :meth:`client_ssl_context`. With ``auth`` too, AUTH needs TLS.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 auth: tuple[str, str] | None = None, refuse: Iterable[str] = (),
                 defer: Mapping[str, int] | None = None, starttls: bool = False) -> None:
        self.host = host
        self.port = port
        self._auth = auth
        self._refuse = {a.lower() for a in refuse}
        self._defer = {a.lower(): n for a, n in (defer or {}).items()}
        self._starttls = starttls
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._cert_path: Path | None = None
        self._controller: _Controller | None = None
        self.deliveries: list[Delivery] = []
        self.logins: list[str] = []
        self.rcpt_attempts: list[str] = []

    @property
    def messages(self) -> list[EmailMessage]:
        """Every message received, in arrival order."""
        with self._lock:
            return [d.message for d in self.deliveries]

    def start(self) -> SmtpServer:
        kwargs: dict[str, Any] = {}
        if self._starttls:
            kwargs["tls_context"] = self._server_ssl_context()
        if self._auth:
            # Login is enforced at RCPT (see _decide_rcpt): aiosmtpd's own auth_required
            # warns on every connection when TLS is not required too.
            kwargs.update(authenticator=self._authenticate, auth_require_tls=self._starttls)
        else:
            kwargs["auth_require_tls"] = False
        self._controller = _Controller(_Handler(self), hostname=self.host, port=self.port,
                                       server_hostname="localhost", **kwargs)
        self._controller.start()
        self.port = self._controller.port
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[EmailMessage]:
        """Block until ``count`` messages arrived (or ``timeout_s`` passed); return all."""
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return [d.message for d in self.deliveries]

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts this server's self-signed certificate."""
        if self._cert_path is None:
            raise RuntimeError("the server was not started with starttls=True")
        return ssl.create_default_context(cafile=str(self._cert_path))

    def _decide_rcpt(self, address: str, envelope: Any, session: Any) -> str:
        key = address.lower()
        with self._lock:
            self.rcpt_attempts.append(address)
            if self._auth and not session.authenticated:
                return "530 5.7.0 Authentication required"
            if key in self._refuse:
                return f"550 5.1.1 <{address}>: Recipient address rejected"
            if self._defer.get(key, 0) > 0:
                self._defer[key] -= 1
                return f"451 4.3.0 <{address}>: Temporary failure, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def _deliver(self, delivery: Delivery) -> None:
        with self._arrived:
            self.deliveries.append(delivery)
            self._arrived.notify_all()

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self._auth is None:
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode()
        if (user, auth_data.password.decode()) != self._auth:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
        with self._lock:
            self.logins.append(user)
        return AuthResult(success=True)

    def _server_ssl_context(self) -> ssl.SSLContext:
        self._tmp = tempfile.TemporaryDirectory(prefix="sheetops-smtp-")
        cert, key = _self_signed(Path(self._tmp.name), self.host)
        self._cert_path = cert
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(cert), str(key))
        return context


def _self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """Write a one-day self-signed certificate for ``host`` and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        alt_names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
