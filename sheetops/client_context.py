"""Which client the running code works for, when one process serves several sheets.

One :class:`~contextvars.ContextVar` holds the client's name. :class:`~sheetops.clients.
ClientGroup` sets it (:func:`serving`) around everything it does for a client — opening
its sheet and store, starting and stopping its engine — and every thread the engine
starts is bound to it with :func:`carry`, since a new thread starts with no context
variables set (``threading.Thread`` copies none). So the log filter of
:mod:`sheetops.logs` can name the client on every line, and the sheet-request counter of
:mod:`sheetops.metrics` can label it, without passing the name through each call.

With one plain sheet nothing sets it: :func:`current` is ``""`` and nothing changes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_CLIENT: ContextVar[str] = ContextVar("sheetops_client", default="")


def current() -> str:
    """The client this code works for; ``""`` with one plain sheet."""
    return _CLIENT.get()


@contextlib.contextmanager
def serving(client: str) -> Iterator[None]:
    """Work for ``client`` inside the block (in this thread)."""
    token = _CLIENT.set(client)
    try:
        yield
    finally:
        _CLIENT.reset(token)


def carry(target: Callable[P, T]) -> Callable[P, T]:
    """``target`` bound to the client current where this is called: give it to a new
    thread (or a callback another thread calls) so what it logs names that client."""
    client = current()
    if not client:
        return target

    @functools.wraps(target)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        with serving(client):
            return target(*args, **kwargs)

    return run
