"""Queues: pipeline stage depths, the sheet outbox and the Run now queue."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Queues")
filters = ui.sidebar(job_filter=False, status_filter=False)


def body() -> None:
    store = ui.store()
    queues = q.queue_depths(store)
    outbox = q.outbox_status(store)
    running = q.running_now(store)
    c = st.columns(4)
    c[0].metric("Queued in stages", f"{int(queues['depth'].sum()) if not queues.empty else 0:,}")
    c[1].metric("Outbox depth", f"{outbox.depth:,}")
    c[2].metric("Outbox oldest", ui.duration(outbox.oldest_age_s))
    c[3].metric("Running / queued runs", f"{len(running):,}")
    st.subheader("Pipeline stages")
    if queues.empty:
        st.caption("No queues yet: the scheduler reports them while it runs.")
    else:
        if queues["depth"].any():
            st.bar_chart(queues, x="stage", y="depth")
        else:
            st.caption("Every queue is empty.")
        ui.table(queues, key="stages")
    st.subheader("Sheet outbox (pending writes per tab)")
    ui.table([{"tab": k, "pending": v} for k, v in sorted(outbox.by_tab.items())],
             key="outbox")
    st.subheader("Running now")
    ui.table(ui.epoch_columns(running, "started_at"), key="running")
    st.subheader("Run now requests")
    ui.table(ui.epoch_columns(q.run_requests(store, limit=100), "created_at", "claimed_at"),
             key="requests")


ui.auto_refresh(filters, body)
