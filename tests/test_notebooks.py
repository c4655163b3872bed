"""Every notebook in notebooks/ runs top to bottom in a real kernel (nbclient, the venv's
``python3`` kernel) and produces the values it is there to show."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from sheetops.notebook.execute import NotebookFailed, cell_value, execute_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = pytest.mark.slow


def test_notebooks_are_committed_without_outputs_and_with_a_parameters_cell():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        book = nbformat.read(path, as_version=4)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        assert any("parameters" in c.metadata.get("tags", []) for c in code), path.name


def test_01_prototype_on_the_embedded_default(tmp_path):
    book = execute_notebook(NOTEBOOKS / "01_prototype_an_automation.ipynb",
                            {"workdir": str(tmp_path)}, timeout_s=120, cwd=tmp_path)
    summary = cell_value(book, "summary")
    assert summary == {"problems": 0, "dry_run_ok": True,
                       "captured": [summary["captured"][0]], "status": "ok",
                       "records_in": 7, "sheet_reads": None}
    assert summary["captured"][0].startswith("POST http://127.0.0.1:")
    assert summary["captured"][0].endswith("/report")
    # Jupyter shows the results as HTML: the config, the dry run and the real run
    assert "Config sheet" in _html_of(book, "cfg") and "Next runs" in _html_of(book, "cfg")
    assert "Captured effects" in _html_of(book, "preview")
    assert "/report" in _html_of(book, "preview")
    assert ": ok</h4>" in _html_of(book, "result") and "Attempts" in _html_of(book, "result")


def _html_of(book, name: str) -> str:
    """The HTML the cell ending in the bare expression ``name`` displayed."""
    for cell in book.cells:
        if cell.cell_type == "code" and cell.source.strip().splitlines()[-1:] == [name]:
            return "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
    raise KeyError(name)


def test_01_prototype_against_the_emulated_google_sheet(tmp_path, sheetops_google_sheet,
                                                       sheetops_http):
    from sheetops.connectors.sheets.factory import open_sheet

    from sheetops.demo import DemoWorkspace

    sheetops_http.json("/customers", {"data": [{"id": 1}, {"id": 2}]})
    sheetops_http.json("/report", {}, method="POST")
    with DemoWorkspace(tmp_path / "demo") as demo:  # the demo's config, on the emulator
        open_sheet(sheetops_google_sheet).write_batch(demo._config_writes())
    book = execute_notebook(NOTEBOOKS / "01_prototype_an_automation.ipynb",
                            {"sheet": sheetops_google_sheet,
                             "api_url": sheetops_http.url("/customers")},
                            timeout_s=120, cwd=tmp_path)
    summary = cell_value(book, "summary")
    assert (summary["status"], summary["records_in"], summary["problems"]) == ("ok", 2, 0)
    assert summary["sheet_reads"] >= 1  # the quota meter counted the Google reads
    assert [r.method for r in sheetops_http.requests].count("POST") == 1  # the real run's


def test_01_automation_cell_moved_unchanged_into_a_module_is_a_scheduled_job(
        tmp_path, workbook, sheetops_http):
    """The README's workflow, step 5: the notebook's automation cell, copied as it is
    into a module named in ``SHEETOPS_AUTOMATIONS`` (with the decorator's import), is
    checked with ``run-job --dry-run`` and then scheduled by ``sheetops run``."""
    import json
    import os
    import subprocess
    import sys

    book = nbformat.read(NOTEBOOKS / "01_prototype_an_automation.ipynb", as_version=4)
    cell = next(c.source for c in book.cells if c.cell_type == "code"
                and '@automation("count_customers")' in c.source)
    (tmp_path / "team_automations.py").write_text(f"from sheetops import automation\n\n"
                                                  f"{cell}\n")
    sheetops_http.json("/customers", {"data": [{"id": 1}, {"id": 2}, {"id": 3}]})
    sheetops_http.json("/report", {}, method="POST")
    workbook.settings(status_flush_interval_s=1)
    workbook.jobs({"job": "count", "automation": "count_customers", "schedule": "every 2s",
                   "params": json.dumps({"url": sheetops_http.url("/customers")})})
    sheetops = str(Path(sys.executable).with_name("sheetops"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path),
           "SHEETOPS_AUTOMATIONS": "team_automations"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sheetops, *args, "--sheet", str(workbook.path)], cwd=tmp_path,
                              env=env, text=True, capture_output=True, timeout=120)

    dry = cli("run-job", "count", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would send POST {sheetops_http.url('/report')} {{\"count\": 3}}" in dry.stdout
    assert [r.method for r in sheetops_http.requests] == ["GET"]  # the dry run posted nothing
    scheduled = cli("run", "--for", "8")
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    runs = [r for r in workbook.records("Runs") if r["job"] == "count"]
    assert runs and {r["trigger"] for r in runs} == {"schedule"}
    assert "ok" in {r["status"] for r in runs}
    posted = [r for r in sheetops_http.requests if r.method == "POST"]
    assert posted and all(r.path == "/report" for r in posted)


def _02_expectations(summary):
    assert summary["dry_run_out"] == ["1", "4", "5"] and summary["dry_run_dead"] == ["2", "3"]
    assert summary["would_send"] == ["ann@example.com", "dan@example.com", "eve@example.com"]
    assert summary["stages"]["validate"] == {"records_in": 5, "records_out": 3,
                                             "records_failed": 2, "dead_letters": 2}
    assert summary["stages"]["deliver"]["records_out"] == 3
    assert summary["dead_before"] == ["2", "3"]
    assert summary["replayed"] == [2, 2, 0] and summary["dead_after"] == 0


def test_02_pipeline_debugging_on_the_embedded_default(tmp_path):
    book = execute_notebook(NOTEBOOKS / "02_pipeline_debugging.ipynb",
                            {"workdir": str(tmp_path)}, timeout_s=120, cwd=tmp_path)
    summary = cell_value(book, "summary")
    _02_expectations(summary)
    # the fixed record (edited) and the one the fixed code lets through are delivered
    assert summary["delivered"] == ["ann@example.com", "bob@example.com", "cat@example.com",
                                    "dan@example.com", "eve@example.com"]


def test_02_pipeline_debugging_against_the_emulated_google_sheet(
        tmp_path, sheetops_google_sheet, sheetops_http, sheetops_smtp, sheetops_store):
    contacts = [{"id": 1, "email": "ann@example.com", "name": "Ann"},
                {"id": 2, "email": "bob(at)example.com", "name": "Bob"},
                {"id": 3, "email": "cat@example.com", "name": "Cat O'Neil"},
                {"id": 4, "email": "dan@example.com", "name": "Dan"},
                {"id": 5, "email": "eve@example.com", "name": "Eve"}]
    sheetops_http.json("/contacts", {"items": contacts[:3], "next": "/contacts/2"})
    sheetops_http.json("/contacts/2", {"items": contacts[3:], "next": None})
    book = execute_notebook(NOTEBOOKS / "02_pipeline_debugging.ipynb",
                            {"sheet": sheetops_google_sheet,
                             "api_url": sheetops_http.url("/contacts")},
                            timeout_s=120, cwd=tmp_path)
    _02_expectations(cell_value(book, "summary"))
    assert sorted(m["To"] for m in sheetops_smtp.messages) == [
        "ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com",
        "eve@example.com"]


def test_03_run_history_on_the_embedded_default(tmp_path):
    book = execute_notebook(NOTEBOOKS / "03_run_history.ipynb", {"workdir": str(tmp_path)},
                            timeout_s=180, cwd=tmp_path)
    rates, top_error = cell_value(book, "success_rate, top_error")
    assert rates == {"broken-report": 0.0, "fetch-customers": 1.0, "heartbeat": 1.0}
    assert top_error == ["broken-report", "PermanentError", "no data source"]
    outputs = [o for c in book.cells for o in c.get("outputs", [])]
    charts = [o["data"]["text/html"] for o in outputs if "vega-embed" in
              o.get("data", {}).get("text/html", "")]
    assert len(charts) == 1 and "success rate" in charts[0]


def test_03_run_history_against_the_emulated_google_sheet(tmp_path, sheetops_google_sheet):
    """The notebook reads the history of the sheet's jobs from the store ``run`` uses
    (here: runs made first through the notebook API, the Google sheet as their config)."""
    from sheetops.connectors.sheets.factory import open_sheet

    from sheetops.demo import DemoWorkspace
    from sheetops.notebook import open_config, run

    with DemoWorkspace(tmp_path / "demo") as demo:  # the demo's config, on the emulator
        open_sheet(sheetops_google_sheet).write_batch(demo._config_writes())
        cfg = open_config(sheetops_google_sheet)
        for job in ("heartbeat", "fetch-customers", "fetch-customers", "broken-report"):
            run(job, config=cfg)
        book = execute_notebook(NOTEBOOKS / "03_run_history.ipynb",
                                {"sheet": sheetops_google_sheet}, timeout_s=180, cwd=tmp_path)
    rates, top_error = cell_value(book, "success_rate, top_error")
    assert rates == {"broken-report": 0.0, "fetch-customers": 1.0, "heartbeat": 1.0}
    assert top_error == ["broken-report", "PermanentError", "no data source"]


def test_a_failing_cell_and_a_dying_kernel_fail_within_the_timeout(tmp_path):
    for source, expected in (("raise ValueError('bad cell')", "ValueError: bad cell"),
                             ("import os\nos._exit(3)", "kernel died")):
        book = nbformat.v4.new_notebook()
        book.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(source)]
        path = tmp_path / "broken.ipynb"
        nbformat.write(book, path)
        started = time.monotonic()
        with pytest.raises(NotebookFailed, match=expected):
            execute_notebook(path, timeout_s=30)
        assert time.monotonic() - started < 60


def test_a_notebook_cell_forks_a_stage_defined_in_the_cell(tmp_path):
    cells = [
        "import os\nfrom sheetops.pipelines import iterable, pipeline\n"
        "pipe = pipeline('nb_forked', source=iterable(lambda: ({'id': i} for i in "
        "range(2000))), key='id')",
        "@pipe.stage(batch_size=100, processes=2)\ndef tag(records):\n"
        "    print('working in a forked process')  # a child's print goes nowhere: fine\n"
        "    return [{**r, 'pid': os.getpid()} for r in records]",
        "@pipe.sink(batch_size=100, processes=2)\ndef keep(records):\n    pass",
        f"report = pipe.run('sqlite:///{tmp_path / 'nb.db'}')\n"
        "outcome = (report.finished, report.records_out, report.stages['tag']['records_in'])",
        "outcome",
    ]
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = tmp_path / "forked.ipynb"
    nbformat.write(book, path)
    done = execute_notebook(path, timeout_s=120)
    assert cell_value(done, "outcome") == (True, 2000, 2000)
