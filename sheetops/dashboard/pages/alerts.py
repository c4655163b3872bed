"""Alerts: what is firing now (``alert_state``) and the alert history (``alert_events``:
fired, reminder, resolved, delivery_failed), as recorded by the alert evaluator."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Alerts")
filters = ui.sidebar(status_filter=False)
KIND_LABELS = {"fired": "Fired", "reminder": "Reminders", "resolved": "Resolved",
               "delivery_failed": "Delivery failures"}


def body() -> None:
    store = ui.store()
    firing = q.alerts_firing(store)
    if filters.jobs:
        firing = firing[firing["job"].isin(filters.jobs)]
    counts = q.alert_event_counts(store)
    c = st.columns(2 + len(KIND_LABELS))
    c[0].metric("Alerts firing", f"{len(firing):,}")
    c[1].metric("Alert events", f"{sum(counts.values()):,}")
    for col, (kind, label) in zip(c[2:], KIND_LABELS.items(), strict=True):
        col.metric(label, f"{counts[kind]:,}")
    st.subheader("Firing now")
    if firing.empty:
        st.success("No alert is firing.")
    else:
        undelivered = int(firing["undelivered"].sum())
        if undelivered:
            st.warning(f"{undelivered} firing alert(s) could not be delivered to their "
                       "channel yet; the evaluator keeps trying.")
        ui.table(firing, key="firing")
    st.subheader("History")
    kinds = st.multiselect("Kinds", list(KIND_LABELS), format_func=KIND_LABELS.get,
                           key="alert_kinds")
    events = q.alert_events(store, kinds=kinds or None, jobs=filters.jobs or None)
    if events.empty:
        st.caption("No alert event yet (rules come from the Alerts tab).")
    else:
        ui.table(events, key="history")


ui.auto_refresh(filters, body)
