"""Config: the current Validation problems, the jobs as last read, the change history."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Config")
filters = ui.sidebar(job_filter=False, status_filter=False)


def body() -> None:
    store = ui.store()
    status = q.config_status(store)
    c = st.columns(4)
    c[0].metric("Last refresh", ui.ago(status.last_refresh_at),
                "—" if status.last_refresh_ok is None
                else "ok" if status.last_refresh_ok else "FAILED", delta_color="off")
    c[1].metric("Errors", f"{status.errors:,}")
    c[2].metric("Warnings", f"{status.warnings:,}")
    c[3].metric("Jobs configured", f"{status.jobs_configured:,}")
    st.subheader("Validation")
    problems = q.problems(store)
    if problems.empty:
        st.success("The config is clean.")
    else:
        ui.table(problems, key="problems")
    st.subheader("Jobs")
    jobs = q.job_configs(store)
    jobs.insert(3, "in words", jobs["schedule"].map(q.describe_schedule))
    ui.table(ui.epoch_columns(jobs, "published_at"), key="jobs", pin="job")
    ui.invalid_jobs_table(store)
    st.subheader("Change history")
    ui.table(q.config_events(store), key="events")


ui.auto_refresh(filters, body)
