"""The Google Sheets requests a notebook spends against the 60-per-minute quota.

Google allows 60 read and 60 write requests per minute per user; a notebook that re-reads
the config in a loop can use them up and stall the scheduler sharing the account. The
meter counts every HTTP request of a :class:`GoogleSheet` (a ``requests`` response hook
on its session) and shows the last minute's use.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

QUOTA_PER_MINUTE = 60


class QuotaMeter:
    """Requests of one Google sheet: totals and the last 60 s, reads and writes apart."""

    def __init__(self) -> None:
        self._seen: deque[tuple[float, str]] = deque()
        self.total = {"read": 0, "write": 0}

    def attach(self, sheet: Any) -> QuotaMeter:
        """Count the requests of ``sheet`` (a :class:`GoogleSheet`) from now on."""
        sheet.http.session.hooks.setdefault("response", []).append(self._on_response)
        return self

    def _on_response(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        kind = "read" if response.request.method.upper() == "GET" else "write"
        self._seen.append((time.monotonic(), kind))
        self.total[kind] += 1
        return response

    def last_minute(self) -> dict[str, int]:
        cutoff = time.monotonic() - 60
        while self._seen and self._seen[0][0] < cutoff:
            self._seen.popleft()
        counts = {"read": 0, "write": 0}
        for _, kind in self._seen:
            counts[kind] += 1
        return counts

    def __repr__(self) -> str:
        now = self.last_minute()
        return (f"Google Sheets quota: {now['read']}/{QUOTA_PER_MINUTE} reads and "
                f"{now['write']}/{QUOTA_PER_MINUTE} writes in the last minute "
                f"({self.total['read']} reads, {self.total['write']} writes in all)")

    def _repr_html_(self) -> str:
        now = self.last_minute()
        bars = "".join(
            f"<div>{kind}s: <meter min='0' max='{QUOTA_PER_MINUTE}' "
            f"value='{now[kind]}'></meter> {now[kind]}/{QUOTA_PER_MINUTE} per minute</div>"
            for kind in ("read", "write"))
        return f"<div class='sheetops-quota'><b>Google Sheets quota</b>{bars}</div>"
