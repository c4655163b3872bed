"""Jobs: every job with its schedule in words, its state and the window's numbers."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Jobs")
filters = ui.sidebar(status_filter=False)


def body() -> None:
    table = q.jobs_table(ui.store(), filters.window_s)
    if filters.jobs:
        table = table[table["job"].isin(filters.jobs)]
    if table.empty:
        st.info("No jobs yet: the scheduler publishes them after its first config refresh.")
        ui.invalid_jobs_table(ui.store())
        return
    table = ui.epoch_columns(table, "last_start", "last_end", "last_success_at")
    st.caption(f"{len(table)} jobs · numbers over the last {filters.window_label}")
    ui.table(table, key="jobs", pin="job", first=(
        "job", "schedule_words", "enabled", "last_status", "last_start", "consecutive_failures",
        "last_success_at", "runs", "success_rate", "p95_s", "records_failed"))
    ui.invalid_jobs_table(ui.store())
    job = st.selectbox("Open a job", table["job"].tolist(), index=None,
                       placeholder="choose a job")
    if job:
        st.session_state["detail_job"] = job
        st.switch_page(f"{ui.P}/job_detail.py")


ui.auto_refresh(filters, body)
