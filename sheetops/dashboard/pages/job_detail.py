"""Job detail: schedule in words, next runs, recent runs with attempts and errors, and
the Run now / dry-run buttons (requests the scheduler picks up from the store)."""

import time

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

user = ui.page_setup("Job detail")
filters = ui.sidebar(job_filter=False)
store = ui.store()
names = q.job_names(store)
if not names:
    st.info("No jobs yet: the scheduler publishes them after its first config refresh.")
    st.stop()
configs = q.job_configs(store)
if st.session_state.get("detail_job") not in names:
    enabled = configs[configs["enabled"].astype(bool)]["job"].tolist()
    first = next((n for n in names if n in enabled), names[0])  # an enabled job first
    st.session_state["detail_job"] = st.query_params.get("job", first)
    if st.session_state["detail_job"] not in names:
        st.session_state["detail_job"] = first
job = st.selectbox("Job", names, key="detail_job")
st.query_params["job"] = job

config = configs[configs["job"] == job]
states = q.job_states(store)
state = states[states["job"] == job]

left, right = st.columns([3, 2])
with left:
    if config.empty:
        st.caption("Schedule not published yet (the scheduler stores it after a refresh).")
    else:
        row = config.iloc[0]
        st.markdown(f"**Schedule:** {ui.md_text(q.describe_schedule(row['schedule']))}  \n"
                    f"{ui.md_text(row['schedule'])} · timezone {ui.md_text(row['timezone'])}"
                    f" · {'enabled' if row['enabled'] else 'DISABLED'} · automation "
                    f"{ui.md_text(row['automation'])}"
                    + (f" · owner {ui.md_text(row['owner'])}" if row["owner"] else ""))
        running = q.scheduler_status(store).running
        upcoming = (q.next_runs(row["schedule"], row["timezone"])
                    if row["enabled"] and running else [])
        if upcoming:
            st.markdown("**Next runs:** " + ", ".join(
                d.strftime("%a %Y-%m-%d %H:%M:%S %Z") for d in upcoming))
        else:
            st.markdown("**Next runs:** none scheduled ("
                        + ("manual or disabled" if running else "no scheduler is running")
                        + ")")
with right:
    st.markdown("**Run it now**")
    can_run = user is not None
    b1, b2 = st.columns(2)
    if b1.button("Run now", type="primary", disabled=not can_run, key="run_now"):
        rid = store.request_run(job, requested_by=user or "", dry_run=False)
        st.toast(f"Requested a run of {ui.md_text(job)} (request {rid}).")
        st.session_state["last_request"] = (rid, job, False)
    if b2.button("Dry run", disabled=not can_run, key="dry_run"):
        rid = store.request_run(job, requested_by=user or "", dry_run=True)
        st.toast(f"Requested a dry run of {ui.md_text(job)} (request {rid}).")
        st.session_state["last_request"] = (rid, job, True)
    if not can_run:
        st.caption("Log in to run jobs.")
    last = st.session_state.get("last_request")
    if last and last[1] == job:
        st.success(f"Request {last[0]} queued{' (dry run)' if last[2] else ''} by "
                   f"{ui.md_text(user)}; "
                   "the scheduler picks it up within seconds.")
if not state.empty:  # full width: in the left column the values were cut ("time…")
    s = state.iloc[0]
    c = st.columns(4)
    c[0].metric("Last status", s["last_status"] or "—")
    c[1].metric("Consecutive failures", int(s["consecutive_failures"]))
    c[2].metric("Since last success", "never" if s["last_success_at"] is None else
                ui.duration(time.time() - s["last_success_at"]))
    c[3].metric("Last duration", ui.duration(s["last_duration_s"]))


def body() -> None:
    summary = q.job_summary(store, filters.window_s, jobs=[job])
    row = summary.iloc[0] if not summary.empty else None
    c = st.columns(3) + st.columns(3)  # three a row: durations are not cut short
    c[0].metric("Runs", f"{int(row['runs']) if row is not None else 0:,}")
    c[1].metric("Failure rate", ui.pct(row["failure_rate"] if row is not None else None))
    c[2].metric("Duration p95", ui.duration(row["p95_s"] if row is not None else None))
    c[3].metric("Records in", f"{int(row['records_in'] or 0) if row is not None else 0:,}")
    c[4].metric("Records out", f"{int(row['records_out'] or 0) if row is not None else 0:,}")
    c[5].metric("Records failed",
                f"{int(row['records_failed'] or 0) if row is not None else 0:,}")

    requests = q.run_requests(store, limit=20)
    requests = requests[requests["job"] == job]
    if not requests.empty:
        with st.expander(f"Run now requests ({len(requests)})"):
            ui.table(ui.epoch_columns(requests, "created_at", "claimed_at"))

    st.subheader(f"Recent runs (last {filters.window_label})")
    runs = q.runs_list(store, filters.window_s, jobs=[job], statuses=filters.statuses,
                       limit=50)
    if runs.empty:
        st.caption("No runs in this window.")
        return
    ui.table(runs.drop(columns=["job"]), key="job_runs", pin="id", first=ui.RUN_COLUMNS)
    ui.run_outputs(runs, store.url)
    failing = runs[runs["status"].isin(q.FAILED)]["id"].tolist()[:10]
    attempts = q.attempts_of(store, failing)
    errors = q.errors_list(store, run_ids=failing, limit=200)
    for run_id in failing:
        r = runs[runs["id"] == run_id].iloc[0]
        with st.expander(ui.md_text(f"{r['status']} · {r['started_at']:%Y-%m-%d %H:%M:%S} · "
                                    f"{run_id} · {r['error_type']}: "
                                    f"{r['error_message'][:80]}")):
            a = attempts[attempts["run_id"] == run_id]
            ui.table(a.drop(columns=["run_id", "traceback"]))
            e = errors[errors["run_id"] == run_id]
            if not e.empty:
                ui.table(e.drop(columns=["traceback", "run_id", "job"]))
            for _, att in a.iterrows():
                if att["traceback"] and st.toggle(f"Traceback of attempt {att['attempt']}",
                                                  key=f"tb_{run_id}_{att['attempt']}"):
                    st.code(att["traceback"], language="python")


ui.auto_refresh(filters, body)
