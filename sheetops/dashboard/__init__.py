"""The Streamlit dashboard: SQL aggregates in :mod:`sheetops.dashboard.queries`, drawing
in ``pages/``, access control in :mod:`sheetops.dashboard.auth`, and :func:`serve` to
start ``streamlit run`` of the packaged ``app.py``."""

from sheetops.dashboard.serve import serve

__all__ = ["serve"]
