"""Loopback TCP ports for servers started by tests and benches.

A port picked by binding to port 0 and closing is free at that instant only: until the
server binds it (often seconds later, in another process), any outgoing connection on
the machine may be given it as its source port, and the server then fails with
"address already in use" (on a busy CI machine this happens). :func:`free_port` leaves
the port in TIME_WAIT instead, which the kernel does not hand out as an ephemeral port
again for a minute, while a server that sets ``SO_REUSEADDR`` (tornado/Streamlit,
Jupyter, ``http.server``, asyncio/aiosmtpd, prometheus_client all do) can still bind it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import closing, contextmanager


def free_port() -> int:
    """A loopback port nothing listens on, kept from being handed out meanwhile."""
    with closing(socket.socket()) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = listener.getsockname()
        with closing(socket.create_connection(address)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # this side closes first: the port stays in TIME_WAIT
            client.recv(1)  # the FIN arrived; the client's close completes the exchange
        return address[1]


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for as long as the ``with`` lasts: it is
    bound (so no one else can listen there) but not listening."""
    with closing(socket.socket()) as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]
