"""What ``sheetops dashboard`` runs: the dashboard (``app.py``) as an ``st.App`` with the
Host/Origin guard in front (``streamlit run`` detects the ``app`` below)."""

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from sheetops.dashboard.guard import HostOriginGuard

app = st.App(str(Path(__file__).with_name("app.py")),
             middleware=[Middleware(HostOriginGuard)])
