"""The workbook `sheetops demo` leaves, rendered by LibreOffice as an ops person would see
it: on the Status, Runs and Errors tabs every time, job name, run id and state is shown
whole (a column too narrow would cut ``2026-12-01 18:20:31 UTC`` to ``2026-12-01 18:``),
and booleans read TRUE/FALSE, not 1/0.

Each tab is rendered on its own (the others hidden in a copy, since hidden tabs are not
printed) to PDF; ``pdftotext -layout`` gives what is visible, cut where a cell cuts it.
A PNG of the Runs tab goes to ``SHEETOPS_SCREENSHOTS`` (default bench/out/screenshots),
from where docs/img/workbook_status.png is taken.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import TESTS_DIR, WorkbookHelper
from sheetops.connectors.sheets.workbook import display
from test_cli import cli

TOOLS = {name: shutil.which(name) for name in ("soffice", "pdftotext", "pdftoppm")}
REQUIRED = os.environ.get("SHEETOPS_REQUIRE_SERVICES", "").strip().lower() in ("1", "true",
                                                                                 "yes")
SHOTS = Path(os.environ.get("SHEETOPS_SCREENSHOTS",
                            TESTS_DIR.parent / "bench" / "out" / "screenshots"))
# the columns whose values must show whole (messages are bounded and may be cut on purpose)
WHOLE = {
    "Status": ("job", "state", "last_start", "last_end", "next_run_1", "next_run_2",
               "next_run_3", "updated_at"),
    "Runs": ("run_id", "job", "trigger", "start", "end", "status", "attempts", "records_in",
             "records_out", "records_failed"),
    "Errors": ("time", "job", "run_id", "stage", "attempt", "error_type"),
}

pytestmark = pytest.mark.skipif(
    None in TOOLS.values() and not REQUIRED,
    reason="needs LibreOffice (soffice) and poppler-utils (pdftotext, pdftoppm): "
           + ", ".join(n for n, p in TOOLS.items() if p is None))


def _only_tab(source: Path, dest: Path, tab: str) -> None:
    """A copy of ``source`` in which every tab but ``tab`` is hidden (and ``tab`` active)
    and pages are landscape, one page wide (so one picture shows every column), with the
    grid lines the screen shows; cells, widths and formats as they were."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                sheet = re.sub(r"<pageSetUpPr\b[^>]*/>", '<pageSetUpPr fitToPage="1"/>',
                               data.decode(), count=1)
                data = re.sub(r"(<pageMargins\b[^>]*/>)", r'<printOptions gridLines="1"/>'
                              r'\1<pageSetup orientation="landscape" fitToWidth="1" '
                              r'fitToHeight="0"/>', sheet, count=1).encode()
            if info.filename == "xl/workbook.xml":
                book = data.decode()
                names = re.findall(r'<sheet\b[^>]*\bname="([^"]*)"', book)

                def state(m: re.Match[str]) -> str:
                    name = re.search(r'\bname="([^"]*)"', m.group(0)).group(1)
                    shown = "visible" if name == tab else "hidden"
                    return re.sub(r'\s*\bstate="\w+"', "", m.group(0)).replace(
                        "<sheet ", f'<sheet state="{shown}" ', 1)

                book = re.sub(r"<sheet\b[^>]*/>", state, book)
                book = re.sub(r'\bactiveTab="\d+"', f'activeTab="{names.index(tab)}"', book)
                data = book.encode()
            out.writestr(info, data, compress_type=info.compress_type)


def _render(paths: list[Path], outdir: Path, profile: Path) -> None:
    result = subprocess.run(
        [TOOLS["soffice"], "--headless", f"-env:UserInstallation=file://{profile}",
         "--convert-to", "pdf", "--outdir", str(outdir), *map(str, paths)],
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    for path in paths:
        assert (outdir / f"{path.stem}.pdf").exists(), result.stdout + result.stderr


def _text(pdf: Path) -> str:
    return subprocess.run([TOOLS["pdftotext"], "-layout", str(pdf), "-"], check=True,
                          capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def demo_render(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The demo's workbook, its tab rows as read back, and each status tab's PDF text."""
    assert None not in TOOLS.values(), f"missing: {TOOLS} (.ci/run installs them)"
    tmp = tmp_path_factory.mktemp("render")
    result = cli("demo", "--for", "6", "--dir", str(tmp / "demo"), cwd=tmp, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    workbook = tmp / "demo" / "ops.xlsx"
    copies = []
    for tab in (*WHOLE, "Jobs"):
        copies.append(tmp / f"{tab}.xlsx")
        _only_tab(workbook, copies[-1], tab)
    _render(copies, tmp / "pdf", tmp / "lo-profile")
    return {"workbook": workbook, "pdf": tmp / "pdf",
            "text": {tab: _text(tmp / "pdf" / f"{tab}.pdf") for tab in (*WHOLE, "Jobs")}}


@pytest.mark.parametrize("tab", list(WHOLE))
def test_status_tabs_show_their_values_whole(demo_render: dict[str, object], tab: str) -> None:
    records = WorkbookHelper(demo_render["workbook"]).records(tab)
    assert records, f"the demo left {tab} empty"
    text = demo_render["text"][tab]
    # every cell's value, counted: each must appear whole as often as it is in the tab
    wanted = Counter(display(r[c]) for r in records for c in WHOLE[tab]
                     if display(r[c]) != "")
    cut = {value: n for value, n in wanted.items() if text.count(value) < n}
    assert not cut, f"{tab}: values cut or missing in the rendering: {cut}"
    times = [display(r[c]) for r in records for c in WHOLE[tab]
             if re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+", display(r[c]))]
    assert times, f"{tab}: no whole times shown"


def test_booleans_read_true_and_false(demo_render: dict[str, object]) -> None:
    jobs = WorkbookHelper(demo_render["workbook"]).records("Jobs")
    flags = Counter(r["enabled"] for r in jobs)
    assert set(flags) <= {True, False} and flags, flags  # real boolean cells
    words = Counter(re.findall(r"\b(?:TRUE|FALSE)\b", demo_render["text"]["Jobs"]))
    assert (words["TRUE"], words["FALSE"]) == (flags[True], flags[False]), words


def test_a_picture_of_the_runs_tab(demo_render: dict[str, object]) -> None:
    """The Runs tab as LibreOffice shows it (coloured states, whole times), cropped to
    the table."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    pdf = str(demo_render["pdf"] / "Runs.pdf")
    boxes = subprocess.run([TOOLS["pdftotext"], "-bbox", "-f", "1", "-l", "1", pdf, "-"],
                           check=True, capture_output=True, text=True, timeout=60).stdout
    words = [tuple(float(v) for v in m) for m in re.findall(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)"', boxes)]
    assert words, "the Runs page shows no text"
    dpi, margin = 190, 6  # margin in points
    x0, y0 = (min(w[i] for w in words) - margin for i in (0, 1))
    x1, y1 = (max(w[i] for w in words) + margin for i in (2, 3))
    stem = SHOTS / "workbook_status"
    px = [round(v * dpi / 72) for v in (x0, y0, x1 - x0, y1 - y0)]
    subprocess.run([TOOLS["pdftoppm"], "-png", "-r", str(dpi), "-f", "1", "-l", "1",
                    "-x", str(px[0]), "-y", str(px[1]), "-W", str(px[2]), "-H", str(px[3]),
                    "-singlefile", pdf, str(stem)], check=True, capture_output=True,
                   timeout=60)
    picture = stem.with_suffix(".png")
    assert picture.exists() and 5_000 < picture.stat().st_size < 200_000
