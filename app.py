"""sheetops dashboard from a checkout — ``streamlit run app.py`` (or ``sheetops dashboard``).

A thin router over the packaged entry point ``sheetops/dashboard/app.py``; the pages live
in ``sheetops/dashboard/pages/`` and draw what ``sheetops.dashboard.queries`` computes from
the store named by ``SHEETOPS_STORE_URL``.
"""

from sheetops.dashboard.app import main

main()
