"""A report notebook registered by name in code runs from the Jobs tab through
``sheetops run``; its executed copy and HTML are kept and linked; a failing cell is a
failed run with the cell's traceback; it runs under the row's retries and timeout, and a
notebook stopped at its deadline leaves no kernel behind."""

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
        failed = [r for r in failed if store.attempts_of(r["id"])]  # not one cut by the stop
        result = json.loads(ok[0]["result"])
        kept = nbformat.read(result["notebook"], as_version=4)
        assert "total is 42" in json.dumps(kept.cells[-1].outputs)
        page = Path(result["output"])
        assert page.name == f"{ok[0]['id']}.html" and "total is 42" in page.read_text()
        assert page.parent == Path(isolated_env.removeprefix("sqlite:///")).parent / "notebooks"
        attempt = store.attempts_of(failed[0]["id"])[0]
        assert attempt["error_type"] == "NotebookCellFailed"
        assert "report.ipynb: cell In [3] failed: ValueError: no data for this week" in \
            attempt["error_message"]
        assert "ValueError" in attempt["traceback"] and "raise ValueError(fail)" in \
            attempt["traceback"]
    finally:
        store.dispose()
    # the Runs tab links the kept HTML; the failed run says which cell, and where its
    # executed copy is; the Errors tab has the failure
    runs_tab = {r["run_id"]: r for r in workbook.records("Runs")}
    assert runs_tab[ok[0]["id"]]["output"] == str(page)
    broken = runs_tab[failed[0]["id"]]
    assert broken["status"] == "failed" and not broken["output"]
    assert "cell In [3] failed: ValueError: no data for this week" in broken["error"]
    assert f"{failed[0]['id']}.html" in broken["error"]
    errors = [e for e in workbook.records("Errors") if e["job"] == "broken"]
    assert errors and errors[0]["error_type"] == "NotebookCellFailed"
    assert "no data for this week" in errors[0]["message"]
    _dashboard_shows_the_output(page, ok[0]["id"])


def _dashboard_shows_the_output(page: Path, run_id: str) -> None:
    """Job detail (and the Runs page's output column) of the dashboard, through AppTest."""
    from streamlit.testing.v1 import AppTest

    from sheetops.dashboard.ui import md_text

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    at = AppTest.from_file(app, default_timeout=30)
    at.run()
    at.switch_page("sheetops/dashboard/pages/runs.py").run()
    runs = next(d.value for d in at.dataframe if "output" in d.value.columns)
    assert str(page) in set(runs["output"])
    at.switch_page("sheetops/dashboard/pages/job_detail.py").run()
    at.selectbox(key="detail_job").set_value("report").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(f"Output of run {run_id}" in e.label for e in at.expander)
    downloads = {b.key: b for b in at.get("download_button")}
    assert downloads[f"output_{run_id}"].label == "Download the executed notebook (HTML)"
    assert any(md_text(str(page)) in c.value for c in at.caption)


RETRIED_AND_SLOW = [
    "marker = ''\nsleep_s = 0\npid_file = ''",
    "import os, time\nif pid_file:\n    open(pid_file, 'w').write(str(os.getpid()))\n"
    "time.sleep(sleep_s)",
    "if marker and not os.path.exists(marker):\n    open(marker, 'w').close()\n"
    "    raise RuntimeError('first attempt fails')",
    "print('done')"]


def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def test_a_report_notebook_is_retried_and_stopped_at_its_timeout(workbook, tmp_path):
    from conftest import wait_for

    from sheetops.notebook import open_config, run
    from sheetops.notebook.jobs import register_notebook
    from sheetops.registry import registry

    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in RETRIED_AND_SLOW]
    book.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(book, tmp_path / "flaky.ipynb")
    register_notebook("t_flaky_report", tmp_path / "flaky.ipynb")
    pid_file = tmp_path / "kernel.pid"
    workbook.jobs(
        {"job": "retried", "automation": "t_flaky_report", "schedule": "manual",
         "params": json.dumps({"marker": str(tmp_path / "failed-once")}),
         "max_attempts": "2", "backoff_initial_s": "0.1", "timeout_s": "60"},
        {"job": "slow", "automation": "t_flaky_report", "schedule": "manual",
         "params": json.dumps({"sleep_s": 600, "pid_file": str(pid_file)}),
         "max_attempts": "1", "timeout_s": "15"})
    try:
        cfg = open_config(str(workbook.path))
        retried = run("retried", config=cfg)
        assert retried.ok and list(retried.attempts["status"]) == ["failed", "ok"]
        assert "first attempt fails" in retried.attempts["error_message"].iloc[0]
        kept = Path(retried.result["output"]).parent
        assert {p.name for p in kept.glob(f"{retried.run_id}*.html")} == {
            f"{retried.run_id}.html", f"{retried.run_id}.attempt2.html"}  # each attempt's

        slow = run("slow", config=cfg)
        assert slow.status == "timeout" and len(slow.attempts) == 1
        kernel = int(wait_for(pid_file.read_text, 5, "the kernel's pid"))
        wait_for(lambda: _gone(kernel), 30, "the timed-out notebook's kernel to end")
    finally:
        registry._by_name.pop("t_flaky_report", None)
