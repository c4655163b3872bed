"""sheetops dashboard — ``streamlit run app.py`` (or ``sheetops dashboard``).

A thin router: the pages live in ``sheetops/dashboard/pages/`` and draw what
``sheetops.dashboard.queries`` computes from the store named by ``SHEETOPS_STORE_URL``.
"""

import streamlit as st

P = "sheetops/dashboard/pages"

st.set_page_config(page_title="sheetops", page_icon=":material/monitoring:", layout="wide")
st.navigation([
    st.Page(f"{P}/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(f"{P}/jobs.py", title="Jobs", icon=":material/list:"),
    st.Page(f"{P}/job_detail.py", title="Job detail", icon=":material/play_circle:"),
    st.Page(f"{P}/runs.py", title="Runs", icon=":material/history:"),
    st.Page(f"{P}/errors.py", title="Errors", icon=":material/error:"),
    st.Page(f"{P}/queues.py", title="Queues", icon=":material/stacks:"),
    st.Page(f"{P}/config.py", title="Config", icon=":material/table:"),
    st.Page(f"{P}/alerts.py", title="Alerts", icon=":material/notifications:"),
]).run()
