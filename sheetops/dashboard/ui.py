"""Shared drawing helpers for the dashboard pages: the store handle, the access gate,
the filter sidebar, self-refresh and formatting. Pages only draw what
:mod:`sheetops.dashboard.queries` computes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from sheetops import clients
from sheetops.clients import Client
from sheetops.dashboard import auth
from sheetops.dashboard import queries as q
from sheetops.errors import SheetopsError, StoreError
from sheetops.settings import get_settings
from sheetops.store import RunStatus, Store

P = str(Path(__file__).resolve().parent / "pages")  # absolute: works when installed
REFRESH_CHOICES = {"off": 0, "5 s": 5, "10 s": 10, "30 s": 30, "1 min": 60, "5 min": 300}
DEFAULT_REFRESH = "30 s"


@st.cache_resource(show_spinner=False)
def _open_store(url: str) -> Store:
    return q.open_store(url)


@st.cache_data(show_spinner=False, ttl=60)
def _clients(path: str) -> list[Client]:
    return clients.from_settings(get_settings()) if path else []


def served_clients() -> list[Client]:
    """The clients of ``SHEETOPS_CLIENTS`` (re-read every minute), [] without it; a bad
    clients file stops the page with its one sentence."""
    try:
        return _clients(get_settings().clients)
    except SheetopsError as exc:
        st.error(str(exc))
        st.stop()
        raise


def client() -> Client | None:
    """The client chosen in the sidebar (the first one until a choice is made)."""
    found = served_clients()
    chosen = st.session_state.get("_keep_f_client")
    return next((c for c in found if c.name == chosen), found[0] if found else None)


def store() -> Store:
    """The store of the client chosen in the sidebar, else the one named by
    ``SHEETOPS_STORE_URL`` (or the default SQLite file), shared by every session of this
    server. The dashboard never migrates it: a store that needs ``sheetops migrate`` (or
    a newer sheetops) stops the page with that one sentence."""
    chosen = client()
    try:
        return _open_store(chosen.store_url if chosen else
                           get_settings().resolved_store_url())
    except StoreError as exc:
        st.error(str(exc))
        st.stop()
        raise


def client_selector() -> None:
    """The sidebar's client choice, when the dashboard serves several clients: every
    page then reads that client's store (its own runs, jobs, errors and queues)."""
    found = served_clients()
    if len(found) < 2:
        return
    names = [c.name for c in found]
    save = _persisted("f_client", names[0])
    if st.session_state["f_client"] not in names:
        st.session_state["f_client"] = st.session_state["_keep_f_client"] = names[0]
    st.sidebar.selectbox("Client", names, key="f_client", on_change=save)


def page_setup(title: str) -> str | None:
    """Gate access, draw the title and whether a scheduler is running; returns the user
    (for Run now)."""
    user = auth.require_access()
    client_selector()
    st.title(title)
    scheduler_banner(q.scheduler_status(store()))
    return user


def scheduler_banner(status: q.SchedulerStatus) -> None:
    """One line under the title: who holds the scheduler lease and when it last beat, or
    a warning that the page is stale because no scheduler is running."""
    beat = ago(status.last_beat_at)
    if status.running:
        st.caption(f"Scheduler {md_text(status.holder)} holds the lease · last beat {beat}")
    else:
        st.warning(f"No scheduler is running (no one holds the lease; last beat {beat}): "
                   "these numbers are stale, nothing is scheduled and Run now requests "
                   "wait until `sheetops run` starts.", icon=":material/warning:")


@dataclass(frozen=True)
class Filters:
    """The sidebar's choices, shared by every page of a session."""

    window_label: str
    window_s: float
    jobs: tuple[str, ...]
    statuses: tuple[str, ...]
    refresh_s: int


def _persisted(key: str, default: Any) -> Callable[[], None]:
    """Keep a sidebar widget's value across page switches: each page draws its own copy
    of the widget, which Streamlit would start from the default. The value lives under
    ``_keep_<key>``; the returned ``on_change`` callback saves the user's choice there."""
    keep = f"_keep_{key}"
    if keep not in st.session_state:
        st.session_state[keep] = st.session_state.get(key, default)
    st.session_state[key] = st.session_state[keep]

    def save() -> None:
        st.session_state[keep] = st.session_state[key]

    return save


def sidebar(job_filter: bool = True, status_filter: bool = True) -> Filters:
    """The filter sidebar: time window, jobs, statuses, refresh interval; plus the link
    to the Google Sheet (when ``SHEETOPS_SHEET`` is a URL) and the masked store URL."""
    sb = st.sidebar
    sb.header("Filters")
    labels = list(q.WINDOWS)
    window_label = sb.selectbox("Time window", labels, key="f_window",
                                on_change=_persisted("f_window", "24h"))
    jobs: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    if job_filter:
        save = _persisted("f_jobs", [])
        options = q.job_names(store())
        st.session_state["f_jobs"] = [j for j in st.session_state["f_jobs"] if j in options]
        jobs = tuple(sb.multiselect("Jobs", options, key="f_jobs", on_change=save,
                                    placeholder="all jobs"))
    if status_filter:
        statuses = tuple(sb.multiselect(
            "Status", [s.value for s in RunStatus], key="f_status",
            on_change=_persisted("f_status", []), placeholder="any status"))
    default_refresh = DEFAULT_REFRESH
    param = st.query_params.get("refresh")
    if param is not None:
        default_refresh = next((k for k, v in REFRESH_CHOICES.items() if str(v) == param),
                               DEFAULT_REFRESH)
    refresh = sb.selectbox("Refresh every", list(REFRESH_CHOICES), key="f_refresh",
                           on_change=_persisted("f_refresh", default_refresh))
    chosen = client()
    sheet = chosen.sheet if chosen else get_settings().sheet
    if sheet.lower().startswith("http"):
        sb.link_button("Open the config sheet", sheet)
    sb.caption(f"Store: {store().safe_url}")
    auth.logout_button()
    return Filters(window_label, q.WINDOWS[window_label], jobs, statuses,
                   REFRESH_CHOICES[refresh])


def auto_refresh(filters: Filters, body: Callable[[], None]) -> None:
    """Draw ``body`` inside a fragment that reruns itself every ``refresh_s`` seconds
    (only the fragment reruns, so the sidebar keeps its state)."""
    every = filters.refresh_s or None
    st.fragment(run_every=every)(body)()


# -- tables -----------------------------------------------------------------------------
LONG_TEXT = frozenset({"error_message", "message", "problem", "detail", "subject", "error",
                       "result", "notes", "value", "traceback"})
"""Columns whose text can run long: bounded to a fixed width (the whole text shows when
the cell is clicked), so one long message does not push the other columns off the page."""
IDS = frozenset({"id", "run_id", "requested_by", "holder"})
TIME_FORMAT = "YYYY-MM-DD HH:mm:ss"
TEXT_WIDTH, ID_WIDTH = 240, 190  # pixels: a long message, a run id
RUN_COLUMNS = ("id", "job", "status", "started_at", "duration_s", "error_type", "error_message")
"""What a runs table shows first: which run, how it ended, how long, why."""


def _column(name: str, values: pd.Series) -> Any:
    """The default display of one column, from its name and type (``None``: Streamlit's)."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return st.column_config.DatetimeColumn(name, format=TIME_FORMAT, width=150)
    if name in LONG_TEXT:
        return st.column_config.TextColumn(name, width=TEXT_WIDTH)
    if name in IDS and not pd.api.types.is_numeric_dtype(values):
        return st.column_config.TextColumn(name, width=ID_WIDTH)
    if name.endswith("_rate"):
        return st.column_config.NumberColumn(name.removesuffix("_rate"), format="percent")
    if pd.api.types.is_float_dtype(values) and name.endswith("_s"):
        return st.column_config.NumberColumn(name.removesuffix("_s") + " s", format="%.2f")
    return None


def table(data: pd.DataFrame | list[dict[str, Any]], *, key: str | None = None,
          first: tuple[str, ...] = (), pin: str | None = None,
          column_config: dict[str, Any] | None = None) -> None:
    """Draw a table the way every page does: the container's width, an empty cell where a
    value is missing (not ``None``), times to the second, long text bounded. ``first``
    puts those columns first (the others follow, none hidden); ``pin`` keeps one column
    in view while the table scrolls sideways; ``column_config`` relabels or resizes."""
    df = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    config = {c: spec for c in df.columns if (spec := _column(str(c), df[c])) is not None}
    if pin in df.columns:
        config[pin] = {**(config.get(pin) or {}), "pinned": True}
    config.update(column_config or {})
    order = [c for c in first if c in df.columns]
    order += [c for c in df.columns if c not in order]
    st.dataframe(df, hide_index=True, width="stretch", placeholder="", column_config=config,
                 column_order=order if first else None, key=key)


def invalid_jobs_table(store: Store) -> None:
    """The Jobs-tab rows validation rejected, with their cells and problems (they would
    otherwise simply be missing from the page)."""
    invalid = q.invalid_jobs(store)
    if invalid.empty:
        return
    st.subheader(f"Not scheduled: {invalid['row'].nunique()} invalid row(s) on the Jobs tab")
    table(invalid, key="invalid_jobs")


# -- formatting -------------------------------------------------------------------------
_MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$=\"'&^%/@")


def run_outputs(runs: pd.DataFrame, store_url: str, limit: int = 5) -> None:
    """The kept output (a report notebook's executed HTML) of the newest ``limit`` runs
    that have one, offered as a download. Only files in this store's notebook output
    folder are read (an ``output`` elsewhere is named, not opened); the HTML is not
    embedded in the page, so what a notebook printed never runs in the dashboard."""
    from sheetops.notebook.jobs import output_dir

    folder = output_dir(store_url).resolve()
    kept = runs[runs["output"].astype(bool)].head(limit) if "output" in runs else runs[:0]
    for _, run in kept.iterrows():
        page = Path(run["output"]).resolve()
        with st.expander(md_text(f"Output of run {run['id']} ({run['status']}): "
                                 f"{page.name}")):
            if page.parent != folder or page.suffix != ".html" or not page.is_file():
                st.caption(md_text(f"{run['output']} is not in {folder} on this machine "
                                   "(outputs are kept where the run ran)."))
                continue
            st.caption(md_text(f"{page} · {page.stat().st_size / 1024:,.0f} KB"))
            st.download_button("Download the executed notebook (HTML)", page.read_bytes(),
                               file_name=page.name, mime="text/html",
                               key=f"output_{run['id']}")


def md_text(text: object) -> str:
    """Text from the sheet or the store (owner, job names, error messages, user names),
    escaped for a Markdown-rendering element so it shows as typed: no images loaded, no
    links, no emphasis, no ``:icons:`` or ``$math$``."""
    return "".join(f"\\{ch}" if ch in _MARKDOWN_SPECIAL else ch
                   for ch in " ".join(str(text).split()))


def when(ts: float | None) -> str:
    """Epoch seconds → ``2025-01-02 03:04:05 UTC`` ('—' when missing)."""
    if ts is None or pd.isna(ts):
        return "—"
    return datetime.fromtimestamp(float(ts), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(ts: float | None, now: float | None = None) -> str:
    if ts is None or pd.isna(ts):
        return "never"
    return f"{duration(max((now or time.time()) - float(ts), 0))} ago"


def duration(seconds: float | None) -> str:
    if seconds is None or pd.isna(seconds):
        return "—"
    s = float(seconds)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def pct(rate: float | None) -> str:
    return "—" if rate is None or pd.isna(rate) else f"{rate * 100:.1f}%"


def epoch_columns(df: pd.DataFrame, *cols: str) -> pd.DataFrame:
    """Turn epoch-second columns into UTC datetimes for display."""
    df = df.copy()
    for col in cols:
        if col in df:
            df[col] = pd.to_datetime(df[col], unit="s", utc=True)
    return df


#: A colour per run status (``RunStatus`` is a ``StrEnum``: ``STATUS_COLORS["ok"]`` works too).
STATUS_COLORS = {RunStatus.OK: "#2e7d32", RunStatus.FAILED: "#c62828",
                 RunStatus.TIMEOUT: "#ef6c00", RunStatus.RUNNING: "#1565c0",
                 RunStatus.QUEUED: "#6a1b9a"}
