"""Dead letters: a pipeline job's records set aside, filtered by stage, error type and
time, with Replay (as they were) behind the same login as Run now."""

import time

import streamlit as st

from sheetops.dashboard import actions, ui
from sheetops.dashboard import queries as q

user = ui.page_setup("Dead letters")
filters = ui.sidebar(job_filter=False, status_filter=False)
store = ui.store()
pipelines = q.pipeline_stats(store)
names = [p.job for p in pipelines]
if not names:
    st.info("No pipeline has run on this store yet.")
    st.stop()
if st.session_state.get("dl_job") not in names:
    with_dead = [p.job for p in pipelines if any(s.dead for s in p.stages)]
    wanted = st.query_params.get("job")
    st.session_state["dl_job"] = wanted if wanted in names else (with_dead or names)[0]
job = st.selectbox("Pipeline job", names, key="dl_job")
st.query_params["job"] = job
stages = [s.stage for p in pipelines if p.job == job for s in p.stages]
left, mid, right = st.columns(3)
stage = left.selectbox("Stage", ["all stages", *stages], key="dl_stage")
error_type = mid.text_input("Error type", key="dl_error_type", placeholder="any, e.g. ValueError")
since_label = right.selectbox("Dead since", ["any time", *q.WINDOWS], key="dl_since")
chosen_stage = None if stage == "all stages" else stage
since = None if since_label == "any time" else time.time() - q.WINDOWS[since_label]
letters = q.dead_letters(store, job, stage=chosen_stage,
                         error_type=error_type.strip() or None, since=since)
st.metric("Dead letters shown", f"{len(letters):,}")
if letters.empty:
    st.caption("No dead letters match.")
else:
    ui.table(letters, key="letters", pin="key")
    st.download_button("Download CSV", letters.to_csv(index=False), f"{job}-dead-letters.csv",
                       mime="text/csv")

st.subheader("Replay")
keys = sorted(set(letters["key"])) if not letters.empty else []
picked = st.multiselect("Only these keys", keys, key="dl_keys",
                        placeholder=f"every dead letter shown of {chosen_stage or 'any stage'}")
run_now = st.checkbox("and run the job now (a Run now request)", key="dl_run_now")
if user is None:
    st.caption("Log in to replay dead letters.")
replay_keys = picked or (keys if (error_type.strip() or since is not None) else None)
if st.button("Replay", type="primary", disabled=user is None or letters.empty,
             key="dl_replay"):
    count, request = actions.replay(store, job, stage=chosen_stage, keys=replay_keys,
                                    run_now=run_now, requested_by=user or "")
    st.session_state["dl_replayed"] = (job, count, request, user)
    st.rerun()
done = st.session_state.get("dl_replayed")
if done and done[0] == job:
    st.success(f"{done[1]:,} record(s) of {ui.md_text(job)} put back on their queues by "
               f"{ui.md_text(done[3])}"
               + (f"; Run now request {done[2]} filed." if done[2] else
                  "; they go through at the job's next run."))
