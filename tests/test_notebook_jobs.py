"""A report notebook registered by name in code runs from the Jobs tab through
``sheetops run``; its executed copy and HTML are kept and linked; a failing cell is a
failed run with the cell's traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from sheetops.store import Store

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
pytestmark = pytest.mark.slow

REGISTER = '''from pathlib import Path
from sheetops.notebook.jobs import register_notebook

register_notebook("t_report", Path(__file__).parent / "report.ipynb")
'''


def _report_notebook(path: Path) -> None:
    book = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('rows = 1\nfail = ""\nrun_id = ""')
    params.metadata["tags"] = ["parameters"]
    book.cells = [params,
                  nbformat.v4.new_code_cell("if fail:\n    raise ValueError(fail)"),
                  nbformat.v4.new_code_cell("total = rows * 2\nprint('total is', total)")]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    nbformat.write(book, path)


def test_scheduled_report_notebook_runs_is_kept_and_a_failing_cell_fails(
        workbook, tmp_path, isolated_env):
    code = tmp_path / "code"
    code.mkdir()
    (code / "report_jobs.py").write_text(REGISTER)
    _report_notebook(code / "report.ipynb")
    workbook.settings(status_flush_interval_s=1)
    workbook.jobs(
        {"job": "report", "automation": "t_report", "schedule": "every 5s",
         "enabled": "TRUE", "params": json.dumps({"rows": 21}), "max_attempts": "1",
         "timeout_s": "60"},
        {"job": "broken", "automation": "t_report", "schedule": "every 5s",
         "enabled": "TRUE", "params": json.dumps({"fail": "no data for this week"}),
         "max_attempts": "1", "timeout_s": "60"})
    env = {**os.environ, "PYTHONPATH": str(code), "SHEETOPS_AUTOMATIONS": "report_jobs"}
    done = subprocess.run([SHEETOPS, "run", "--for", "20", "--sheet", str(workbook.path)],
                          cwd=tmp_path, env=env, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    store = Store(isolated_env)
    try:
        runs = store.recent_runs(100)
        ok = [r for r in runs if r["job"] == "report" and r["status"] == "ok"]
        failed = [r for r in runs if r["job"] == "broken"]
        assert ok and failed and {r["status"] for r in failed} == {"failed"}
        result = json.loads(ok[0]["result"])
        kept = nbformat.read(result["notebook_ipynb"], as_version=4)
        assert "total is 42" in json.dumps(kept.cells[-1].outputs)
        page = Path(result["notebook"])
        assert page.name == f"{ok[0]['id']}.html" and "total is 42" in page.read_text()
        assert page.parent == Path(isolated_env.removeprefix("sqlite:///")).parent / "notebooks"
        attempt = store.attempts_of(failed[0]["id"])[0]
        assert attempt["error_type"] == "NotebookCellFailed"
        assert "no data for this week" in attempt["error_message"]
        assert "ValueError" in attempt["traceback"]
    finally:
        store.dispose()
    status = {r["job"]: r for r in workbook.records("Status")}
    assert f"notebook={page}" in status["report"]["result"]
    runs_tab = {r["job"]: r for r in workbook.records("Runs")}
    assert ".html" in runs_tab["broken"]["error"]
