"""Alerts: what is firing now and the alert history (recorded by the alerts feature)."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Alerts")
filters = ui.sidebar(job_filter=False, status_filter=False)


def body() -> None:
    events = q.alert_events(ui.store())
    firing = q.alerts_firing(events)
    c = st.columns(2)
    c[0].metric("Alerts firing", f"{len(firing):,}")
    c[1].metric("Alert events", f"{len(events):,}")
    st.subheader("Firing now")
    if firing.empty:
        st.success("No alert is firing.")
    else:
        st.dataframe(firing, hide_index=True, width="stretch", key="firing")
    st.subheader("History")
    if events.empty:
        st.caption("No alert has fired yet (rules come from the Alerts tab).")
    else:
        st.dataframe(events, hide_index=True, width="stretch", key="history")


ui.auto_refresh(filters, body)
