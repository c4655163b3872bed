"""Queues: each pipeline drawn as its stages in a row — source → stage → … → sink —
each with its queue's depth, throughput, failures, dead letters and lag, the stage
holding the others up marked as the bottleneck; then the other durable queues, the
sheet outbox and the Run now requests."""

import time

import streamlit as st

from sheetops.dashboard import queries as q
from sheetops.dashboard import ui

ui.page_setup("Queues")
filters = ui.sidebar(job_filter=True, status_filter=False)
_PREVIOUS = "_queues_previous"  # (time, pipelines) of the last draw: rates over the refresh


def _colour(stage: q.StageStats, deepest: int, bottleneck: q.StageStats | None) -> str:
    """A stage's colour: red for the bottleneck, orange for a queue at least half as
    deep as the pipeline's deepest, blue for a shallower one, green when empty."""
    if stage.depth == 0:
        return "green"
    if stage is bottleneck:
        return "red"
    return "orange" if stage.depth * 2 >= deepest else "blue"


def _stage_box(stage: q.StageStats, deepest: int, bottleneck: q.StageStats | None) -> None:
    with st.container(border=True):
        mark = " :red-badge[bottleneck]" if stage is bottleneck else ""
        st.markdown(f":{_colour(stage, deepest, bottleneck)}[**{ui.md_text(stage.stage)}**]"
                    f"{mark}")
        st.metric(f"{stage.job} › {stage.stage} depth", f"{stage.depth:,}",
                  label_visibility="collapsed")
        st.progress(stage.depth / deepest if deepest else 0.0)
        st.caption(f"{stage.rate:,.1f} rec/s · {stage.records_in:,} in · "
                   f"{stage.records_failed:,} failed · {stage.dead:,} dead · "
                   f"lag {ui.duration(stage.lag_s) if stage.lag_s is not None else '—'}")


def _pipeline_row(pipe: q.PipelineStats) -> None:
    st.markdown(f"#### {ui.md_text(pipe.job)}")
    st.caption(f"pass {pipe.generation} · {pipe.state} · {pipe.records_read:,} records "
               f"read · started {ui.ago(pipe.started_at)}")
    deepest = max((s.depth for s in pipe.stages), default=0)
    widths = [1.0] + [x for _ in pipe.stages for x in (0.25, 2.0)]
    cols = st.columns(widths, vertical_alignment="center")
    with cols[0].container(border=True):
        st.markdown("**source**")
        st.caption("finished" if pipe.state == "finished" else
                   "reading" if pipe.state == "reading" else "read")
    bottleneck = pipe.bottleneck
    for i, stage in enumerate(pipe.stages):
        cols[1 + 2 * i].markdown("→")
        with cols[2 + 2 * i]:
            _stage_box(stage, deepest, bottleneck)


def body() -> None:
    store = ui.store()
    now = time.time()
    jobs = list(filters.jobs) or None
    pipelines = q.pipeline_stats(store, now, jobs=jobs)
    before = st.session_state.get(_PREVIOUS)
    if before is not None:
        pipelines = q.with_rates(pipelines, before[1], now - before[0])
    st.session_state[_PREVIOUS] = (now, pipelines)
    others = q.other_queues(store, q.pipeline_stats(store, now) if jobs else pipelines, now)
    outbox = q.outbox_status(store)
    stages = [s for p in pipelines for s in p.stages]
    c = st.columns(5)
    c[0].metric("Queued in stages", f"{sum(s.depth for s in stages):,}")
    c[1].metric("Dead letters", f"{sum(s.dead for s in stages):,}")
    c[2].metric("Oldest waiting", ui.duration(max(
        (s.lag_s for s in stages if s.lag_s is not None), default=None)))
    c[3].metric("Outbox depth", f"{outbox.depth:,}")
    c[4].metric("Outbox oldest", ui.duration(outbox.oldest_age_s))
    st.subheader("Pipelines")
    if not pipelines:
        st.caption("No pipeline has run on this store yet.")
    for pipe in pipelines:
        _pipeline_row(pipe)
    if stages:
        st.caption("Depth: queue items (batches) not yet done; rate: records a stage took "
                   "per second since the last refresh (the pass's average at first); "
                   "lag: age of the oldest waiting item. Dead letters are on the Dead "
                   "letters page.")
        ui.table(q.stage_table(pipelines), key="stages")
    st.subheader("Other durable queues")
    ui.table([{"queue": x.queue, "depth": x.waiting, "ready": x.ready,
               "claimed": x.claimed, "delayed": x.delayed, "dead": x.dead,
               "lag_s": x.lag_s} for x in others], key="queues")
    st.subheader("Sheet outbox (pending writes per tab)")
    ui.table([{"tab": k, "pending": v} for k, v in sorted(outbox.by_tab.items())],
             key="outbox")
    st.subheader("Running now")
    ui.table(ui.epoch_columns(q.running_now(store), "started_at"), key="running")
    st.subheader("Run now requests")
    ui.table(ui.epoch_columns(q.run_requests(store, limit=100), "created_at", "claimed_at"),
             key="requests")


ui.auto_refresh(filters, body)
