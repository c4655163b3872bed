"""Rich HTML for Jupyter: a titled block of DataFrames, escaped."""

from __future__ import annotations

import html
from collections.abc import Mapping

import pandas as pd


def section(title: str, frames: Mapping[str, pd.DataFrame], *, note: str = "",
            ok: bool | None = None) -> str:
    """``title`` (green when ``ok``, red when not), an optional note, then each non-empty
    frame under its caption; empty ones say so in one line."""
    colour = "" if ok is None else ("color:#137333" if ok else "color:#c5221f")
    parts = [f"<div class='sheetops'><h4 style='{colour}'>{html.escape(title)}</h4>"]
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    for caption, frame in frames.items():
        if frame is None or frame.empty:
            parts.append(f"<p><i>{html.escape(caption)}: none</i></p>")
        else:
            parts.append(f"<p><b>{html.escape(caption)}</b></p>"
                         + frame.to_html(escape=True, max_rows=50, index=False))
    parts.append("</div>")
    return "".join(parts)
