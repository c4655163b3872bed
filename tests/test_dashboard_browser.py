"""End to end: ``streamlit run app.py`` on a loopback port against a temp SQLite store,
driven by headless Chromium (Debian's, through playwright): open Job detail, click
"Run now", see the request in the store, let a stand-in scheduler run it, and see the
run on the page after a refresh; and every page at 1280 px keeps its tables inside the
window, photographed for docs/monitoring.md.

Screenshots go to ``SHEETOPS_SCREENSHOTS`` (default ``bench/out/screenshots``); with
``SHEETOPS_UPDATE_SCREENSHOTS=1`` the page pictures are also copied to ``docs/img`` (so a
test run never changes the checkout unless asked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from sheetops.dashboard.serve import streamlit_command
from sheetops.store import Batch, Store
from sheetops.testing.http import HttpServer
from sheetops.testing.ports import free_port
from sheetops.testing.store_fill import add_alerts, add_pipelines, fill_realistic, make_run

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
SHOTS = Path(os.environ.get("SHEETOPS_SCREENSHOTS", ROOT / "bench" / "out" / "screenshots"))
DOCS_IMG = ROOT / "docs" / "img"
UPDATE_DOCS = os.environ.get("SHEETOPS_UPDATE_SCREENSHOTS") == "1"  # read before the
# autouse isolated_env fixture clears SHEETOPS_* variables
LOAD_MS = 120_000  # a first page load on a busy two-core machine can take a minute
PAGES = {"overview": "", "jobs": "jobs", "job_detail": "job_detail?job=fetch-orders",
         "runs": "runs", "errors": "errors", "queues": "queues",
         "dead_letters": "dead_letters?job=contacts-sync", "config": "config",
         "alerts": "alerts"}
"""Each page of the dashboard: screenshot name → URL path."""
LONG_MESSAGE = ("connection reset while posting the batch to "
                "https://crm.example.com/api/v2/contacts/bulk-upsert?include=owner,tags; ") * 5

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require(reason: str) -> None:
    if os.environ.get("SHEETOPS_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def dashboard(tmp_path):
    if not Path(CHROMIUM).exists():
        _require(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _require("the playwright package is not installed")
    url = f"sqlite:///{tmp_path}/store.db"
    store = Store(url)
    fill_realistic(store, time.time())
    port = free_port()
    env = {**os.environ, "SHEETOPS_STORE_URL": url}
    env.pop("SHEETOPS_DASHBOARD_PASSWORD", None)
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port), cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
        time.sleep(0.3)
    try:
        yield base, store
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        store.dispose()


def test_run_now_end_to_end(dashboard):
    from playwright.sync_api import expect, sync_playwright

    base, store = dashboard
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(base, wait_until="domcontentloaded")
            expect(page.get_by_text("Success rate")).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="stMetricValue"]').first).to_have_text(
                "18", timeout=30_000)
            page.wait_for_timeout(1500)  # let the charts draw
            page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

            page.goto(f"{base}/job_detail?job=sync-crm", wait_until="domcontentloaded")
            run_now = page.get_by_role("button", name="Run now")
            expect(run_now).to_be_enabled(timeout=30_000)
            run_now.click()
            expect(page.get_by_text("queued by localhost:")).to_be_visible(timeout=15_000)
            page.screenshot(path=str(SHOTS / "job_detail_requested.png"), full_page=True)

            # the request is in the store, with who asked
            deadline = time.time() + 10
            while not (requests := store.claim_run_requests()) and time.time() < deadline:
                time.sleep(0.2)
            assert [r["job"] for r in requests] == ["sync-crm"]
            assert requests[0]["requested_by"].startswith("localhost:")
            assert not requests[0]["dry_run"]

            # a stand-in scheduler runs it and records the finished run
            now = time.time()
            run_id = "manual-e2e-run-0001"
            store.record(Batch(new_runs=[{
                "id": run_id, "job": "sync-crm", "trigger": "manual", "scheduled_for": now,
                "started_at": now, "finished_at": now + 2.0, "status": "ok", "attempts": 1,
                "records_in": 3, "records_out": 3, "records_failed": 0, "duration_s": 2.0,
                "result": "{}", "error_type": "", "error_message": "", "dry_run": False,
                "requested_by": requests[0]["requested_by"]}]))
            store.link_request(requests[0]["id"], run_id)

            page.reload(wait_until="domcontentloaded")
            expect(page.get_by_role("button", name="Run now")).to_be_visible(timeout=30_000)
            # the newest run is the first row of the runs table (glide data grid canvas;
            # its accessible table mirrors the cells)
            expect(page.get_by_text(run_id).first).to_be_attached(timeout=30_000)
            metric = page.locator('[data-testid="stMetric"]', has_text="Records in")
            expect(metric).to_contain_text("37")  # 10+10+4+10 before, +3 now
            page.screenshot(path=str(SHOTS / "job_detail_after_run.png"), full_page=True)
        finally:
            browser.close()


TABLES_JS = """() => {
  const main = document.querySelector('[data-testid="stMainBlockContainer"]')
    .getBoundingClientRect();
  return [...document.querySelectorAll('[data-testid="stDataFrame"]')]
    .filter(e => e.offsetParent !== null)
    .map(e => {
      const r = e.getBoundingClientRect();
      const scroller = e.querySelector('.dvn-scroller');
      return {left: r.left, right: r.right, mainRight: main.right,
              content: scroller ? scroller.scrollWidth : 0};
    });
}"""
TEXT_WIDTH_JS = """(text) => {
  const ctx = document.createElement('canvas').getContext('2d');
  ctx.font = '14px "Source Sans", sans-serif';
  return ctx.measureText(text).width;
}"""


def _shrink_png(path: Path) -> None:
    """Keep screenshots small for the repository: a 256-colour palette is exact enough for
    a page of text and flat colours."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def test_every_page_keeps_its_tables_in_a_1280px_window(dashboard):
    """At 1280 px every table of every page stays inside the window and its column (no
    page scrolls sideways), a 400-character error message does not stretch its table, and
    each page is photographed (``docs/img/dashboard_<page>.png`` when asked)."""
    from playwright.sync_api import expect, sync_playwright

    base, store = dashboard
    now = time.time()
    failed = make_run("sync-crm", now - 600, "failed", 3.0,
                      error=("ConnectionError", LONG_MESSAGE))
    store.record(Batch(new_runs=[failed], errors=[{
        "run_id": failed["id"], "job": "sync-crm", "attempt": 1, "stage": "run",
        "time": now - 597, "error_type": "ConnectionError", "message": LONG_MESSAGE,
        "record_key": "", "traceback": ""}]))
    with HttpServer() as server:
        add_alerts(store, now, server)
    add_pipelines(store)  # real pipelines: one with dead letters, one held at its sink
    assert store.try_lease("scheduler", "ops-box:4242:demo", 3600)
    store.set_gauges({"scheduler_heartbeat": time.time()})
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            for name, path in PAGES.items():
                page.goto(f"{base}/{path}", wait_until="domcontentloaded")
                expect(page.locator('[data-testid="stDataFrame"] >> visible=true').first
                       ).to_be_visible(timeout=LOAD_MS)
                expect(page.get_by_text("holds the lease")).to_be_visible(timeout=LOAD_MS)
                page.wait_for_function(
                    "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                    timeout=LOAD_MS)
                tables = page.evaluate(TABLES_JS)
                assert tables, name
                assert page.evaluate("document.documentElement.scrollWidth") <= 1280, name
                for t in tables:
                    assert t["right"] <= min(1280, t["mainRight"] + 1), (name, t)
                shot = SHOTS / f"dashboard_{name}.png"
                page.screenshot(path=str(shot))
                _shrink_png(shot)
                assert shot.stat().st_size < 250_000, (name, shot.stat().st_size)
                if UPDATE_DOCS:
                    DOCS_IMG.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(shot, DOCS_IMG / shot.name)
                if name == "errors":
                    recent = tables[-1]  # "Most recent", with the long message
                    assert 0 < recent["content"] < page.evaluate(TEXT_WIDTH_JS, LONG_MESSAGE)
        finally:
            browser.close()
