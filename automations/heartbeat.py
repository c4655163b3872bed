"""``heartbeat``: proves the scheduler, a worker and the status tabs are alive."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sheetops.registry import automation


@automation("heartbeat")
def heartbeat(ctx: Any) -> dict[str, Any]:
    """Record that the system is alive: one record out and the time of the beat (UTC).

    Schedule it (e.g. ``every 5m``) and alert on ``no_success_for_s`` to learn when
    scheduling or workers stop. It touches nothing outside sheetops, so dry runs are
    the same as real ones.
    """
    beat = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ctx.log.debug("heartbeat at %s", beat)
    return {"records_out": 1, "beat": beat}
