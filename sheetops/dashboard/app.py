"""The dashboard's Streamlit entry point, shipped inside the package.

``sheetops dashboard`` runs this file; ``app.py`` at the top of the repository only
calls :func:`main` so ``streamlit run app.py`` works from a checkout too. Page paths are
absolute so the router works wherever the package is installed.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from sheetops.dashboard.ui import P

PAGES = Path(P)


def main() -> None:
    """Configure the page and route to the dashboard's pages."""
    st.set_page_config(page_title="sheetops", page_icon=":material/monitoring:", layout="wide")
    st.navigation([
        st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:",
                default=True),
        st.Page(PAGES / "jobs.py", title="Jobs", icon=":material/list:"),
        st.Page(PAGES / "job_detail.py", title="Job detail", icon=":material/play_circle:"),
        st.Page(PAGES / "runs.py", title="Runs", icon=":material/history:"),
        st.Page(PAGES / "errors.py", title="Errors", icon=":material/error:"),
        st.Page(PAGES / "queues.py", title="Queues", icon=":material/stacks:"),
        st.Page(PAGES / "dead_letters.py", title="Dead letters",
                icon=":material/report:"),
        st.Page(PAGES / "config.py", title="Config", icon=":material/table:"),
        st.Page(PAGES / "alerts.py", title="Alerts", icon=":material/notifications:"),
    ]).run()


if __name__ == "__main__":
    main()
