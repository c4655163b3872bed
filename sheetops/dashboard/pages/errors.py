"""Errors: what failed, where (job, stage, record) and how often; tracebacks on demand."""

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Errors")
filters = ui.sidebar(status_filter=False)


def body() -> None:
    store = ui.store()
    counts = q.error_counts(store, filters.window_s, jobs=filters.jobs)
    c = st.columns(3)
    c[0].metric("Errors", f"{int(counts['errors'].sum()) if not counts.empty else 0:,}")
    c[1].metric("Jobs with errors", f"{counts['job'].nunique():,}")
    c[2].metric("Error types", f"{counts['error_type'].nunique():,}")
    config_problems(store)
    st.subheader("By job, stage and type")
    ui.table(counts, key="error_counts")
    st.subheader("Most recent")
    errors = q.errors_list(store, filters.window_s, jobs=filters.jobs, limit=200)
    ui.table(errors.drop(columns=["traceback"]), key="errors_recent", first=(
        "time", "job", "error_type", "message", "record_key", "stage", "attempt", "run_id"))
    with_tb = errors[errors["traceback"] != ""]
    if not with_tb.empty:
        choice = st.selectbox("Show the traceback of", with_tb["id"].tolist(), index=None,
                              format_func=lambda i: _label(with_tb, i),
                              placeholder="choose an error")
        if choice is not None:
            st.code(with_tb[with_tb["id"] == choice].iloc[0]["traceback"], language="python")


def config_problems(store) -> None:
    """The config sheet's errors (tab, cell, problem) next to the runs' errors: a row the
    validation rejected is an error too, though no run recorded it. Warnings stay on the
    Config page, which the link opens."""
    problems = q.problems(store)
    errors = problems[problems["severity"] == "error"].drop(columns=["severity"])
    warnings = int((problems["severity"] != "error").sum())
    if errors.empty and not warnings:
        return
    st.subheader(f"Config errors: {len(errors)}" + (f" (and {warnings} warning(s))"
                                                     if warnings else ""))
    if not errors.empty:
        st.caption("Rows of the config sheet that validation rejected: they are skipped "
                   "until fixed.")
        ui.table(errors, key="config_errors")
    st.page_link(f"{ui.P}/config.py", label="All config problems on the Config page",
                 icon=":material/table:")


def _label(df, error_id) -> str:
    row = df[df["id"] == error_id].iloc[0]
    return f"{row['time']:%Y-%m-%d %H:%M:%S} {row['job']} {row['error_type']}: " \
           f"{row['message'][:60]}"


ui.auto_refresh(filters, body)
