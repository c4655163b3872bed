"""Overview: the health of everything at a glance, refreshing by itself."""

import altair as alt
import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Overview")
filters = ui.sidebar(status_filter=False)


def body() -> None:
    ov = q.overview(ui.store(), filters.window_s, jobs=filters.jobs)
    tot = ov.totals
    st.caption(f"Last {filters.window_label} · {ui.when(ov.window.since)} → "
               f"{ui.when(ov.window.until)}"
               + (f" · jobs: {', '.join(filters.jobs)}" if filters.jobs else ""))
    c = st.columns(4)  # four a row: a value such as "10.0 min" is never cut to "10.0 …"
    c[0].metric("Runs", f"{tot.runs:,}")
    c[1].metric("Success rate", ui.pct(tot.success_rate))
    c[2].metric("Failure rate", ui.pct(tot.failure_rate))
    c[3].metric("Running now", f"{ov.running:,}")
    c = st.columns(4)
    c[0].metric("Duration p50", ui.duration(tot.p50_s))
    c[1].metric("Duration p95", ui.duration(tot.p95_s))
    c[2].metric("Failed", f"{tot.failed:,}")
    c[3].metric("Timed out", f"{tot.timeout:,}")
    c = st.columns(4)
    c[0].metric("Run requests waiting", f"{ov.pending_requests:,}")
    c[1].metric("Outbox depth", f"{ov.outbox.depth:,}")
    c[2].metric("Outbox oldest", ui.duration(ov.outbox.oldest_age_s))
    c[3].metric("Alerts firing", f"{len(ov.alerts_firing):,}")

    cfg = ov.config
    refresh_state = ("—" if cfg.last_refresh_ok is None
                     else "ok" if cfg.last_refresh_ok else "FAILED")
    c = st.columns(3)
    c[0].metric("Last config refresh", ui.ago(cfg.last_refresh_at), refresh_state,
                delta_color="off")
    c[1].metric("Config errors", f"{cfg.errors:,}")
    c[2].metric("Config warnings", f"{cfg.warnings:,}")
    if cfg.errors or cfg.warnings:
        with st.expander(f"Config problems ({cfg.errors + cfg.warnings})"):
            ui.table(ov.problems)

    left, right = st.columns(2)
    with left:
        st.subheader("Runs and failures over time")
        series = ov.over_time.melt(id_vars="time", value_vars=["ok", "failed"],
                                   var_name="outcome", value_name="count")
        st.altair_chart(alt.Chart(series).mark_bar().encode(
            x=alt.X("time:T", title=None), y=alt.Y("count:Q", title="runs"),
            color=alt.Color("outcome:N", scale=alt.Scale(
                domain=["ok", "failed"], range=[ui.STATUS_COLORS["ok"],
                                                ui.STATUS_COLORS["failed"]]))),
            width="stretch")
    with right:
        st.subheader("Durations over time")
        series = ov.over_time.melt(id_vars="time", value_vars=["avg_s", "max_s"],
                                   var_name="duration", value_name="seconds").dropna()
        st.altair_chart(alt.Chart(series).mark_line(point=True).encode(
            x=alt.X("time:T", title=None), y=alt.Y("seconds:Q", title="seconds"),
            color="duration:N"), width="stretch")

    st.subheader("Per job")
    per_job = ov.per_job.copy()
    per_job["last_start"] = ui.epoch_columns(per_job, "last_start")["last_start"]
    ui.table(per_job, key="per_job", pin="job")
    if not per_job.empty:
        st.subheader("Duration p95 by job")
        top = per_job.nlargest(30, "p95_s")
        st.altair_chart(alt.Chart(top).mark_bar().encode(
            x=alt.X("p95_s:Q", title="p95 seconds"), y=alt.Y("job:N", sort="-x", title=None)),
            width="stretch")

    c1, c2 = st.columns(2)
    with c1:
        st.subheader("Queue depth per stage")
        if ov.queues.empty:
            st.caption("No queues yet: the scheduler reports them while it runs.")
        else:
            ui.table(ov.queues)
    with c2:
        st.subheader("Alerts firing")
        if ov.alerts_firing.empty:
            st.caption("No alert is firing.")
        else:
            ui.table(ov.alerts_firing[["rule", "job", "metric", "last_value", "threshold",
                                       "firing_since", "undelivered"]])
    st.caption(f"Queries took {sum(ov.timings.values()) * 1000:.0f} ms · refreshed "
               f"{ui.when(ov.window.until)}"
               + (" · over windows longer than 24 h the counts are exact and the "
                  "p50/p95 durations approximate (±12%, from hourly rollups)"
                  if ov.approximate else ""))


ui.auto_refresh(filters, body)
