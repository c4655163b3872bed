"""Runs: every run matching the filters, newest first, with counts per status."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Runs")
filters = ui.sidebar()


def body() -> None:
    store = ui.store()
    counts = q.status_counts(store, filters.window_s, jobs=filters.jobs)
    cols = st.columns(len(counts))
    for col, (status, n) in zip(cols, counts.items(), strict=True):
        col.metric(status, f"{n:,}")
    limit = st.select_slider("Rows", [50, 200, 1000, 5000], value=200, key="runs_limit")
    runs = q.runs_list(store, filters.window_s, jobs=filters.jobs, statuses=filters.statuses,
                       limit=limit)
    st.caption(f"{len(runs):,} most recent runs in the last {filters.window_label}")
    ui.table(runs, key="runs", pin="id", first=ui.RUN_COLUMNS)


ui.auto_refresh(filters, body)
