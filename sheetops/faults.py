"""Test-only fault points: where a test stops a real process at an exact moment.

A fault point is an environment variable (named by the module that owns the point) and
a call to :func:`hold_if_asked` at that moment. Its value is ``[<stage>:][stop:]<path>``:
when the point is reached with something to report, the ids are written to ``<path>``
and the process either blocks there for good (a test then SIGKILLs it in the window) or,
with ``stop:``, stops itself (SIGSTOP: a paused process, which the test wakes with
SIGCONT to see what it does next). Unset, a point costs one environment lookup.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence


def hold_if_asked(env: str, ids: Sequence[str], stage: str = "") -> None:
    """The fault point ``env`` (at ``stage`` of it, when it has several): block for
    good, or stop this process, when asked and ``ids`` is not empty."""
    asked = os.environ.get(env, "")
    if not asked or not ids:
        return
    if stage:
        if not asked.startswith(f"{stage}:"):
            return
        asked = asked[len(stage) + 1:]
    stop = asked.startswith("stop:")
    with open(asked.removeprefix("stop:"), "w", encoding="utf-8") as out:
        out.write(",".join(ids))
    if stop:
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    threading.Event().wait()
