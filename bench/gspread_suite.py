"""Run gspread's own test suite live against ``sheetops emulator`` and print the tally.

gspread's tests replay recorded cassettes; this script runs them for real instead. It
copies the ``tests/`` folder of a gspread checkout (no gspread code lives in this repo)
into a scratch folder, replaces its ``conftest.py`` with one whose ``client`` fixture is
sheetops' ``anonymous_client`` pointed at a freshly started emulator, runs pytest and
prints passed/failed/skipped::

    git clone --branch v6.2.1 https://github.com/burnash/gspread /tmp/gspread-src
    .venv/bin/python bench/gspread_suite.py /tmp/gspread-src [-- -k merge]

Tests that need Drive sharing (a spreadsheet another account did not share with you)
cannot pass against the emulator; they are listed in ``NEEDS_SHARING`` and reported apart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

from sheetops.testing.ports import free_port

NEEDS_SHARING = ("test_access_private_spreadsheet",)  # a sheet someone else did not share

CONFTEST = '''
"""Live conftest: gspread's tests talk to the sheetops emulator at SHEETS_EMULATOR."""
import io
import itertools
import os
import unittest

import gspread
import pytest
import requests
from requests import Response

from sheetops.connectors.sheets.google_http import anonymous_client

I18N_STR = "Iñtërnâtiônàlizætiøn"
EMULATOR = os.environ["GSPREAD_SUITE_EMULATOR"]


def pytest_configure(config):
    config.addinivalue_line("markers", "vcr: recorded cassette (ignored: the run is live)")


class GspreadTest(unittest.TestCase):
    @classmethod
    def get_temporary_spreadsheet_title(cls, suffix=""):
        return "Test {} {}".format(cls.__name__, suffix)

    @classmethod
    def get_cassette_name(cls):
        return cls.__name__

    def _sequence_generator(self):
        name = self.id().split(".")[-1]
        return ("{} {}".format(name, i) for i in itertools.count(1))


@pytest.fixture(scope="module")
def client():
    return anonymous_client(EMULATOR)


class _HtmlErrorClient(gspread.http_client.HTTPClient):
    ERROR_MSG = b"<html><body><h1>Failed</h1></body></html>"

    def request(self, *args, **kwargs):
        resp = Response()
        resp.raw = io.BytesIO(self.ERROR_MSG)
        resp.status_code = 500
        resp.encoding = "text/html"
        raise gspread.exceptions.APIError(resp)


def invalid_json_client():
    gc = gspread.Client(auth=None, session=requests.Session(), http_client=_HtmlErrorClient)
    return gc, _HtmlErrorClient.ERROR_MSG
'''


def _wait_up(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the emulator exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP answer, even an error, means it is up
                return
            time.sleep(0.1)
    raise SystemExit(f"the emulator did not answer at {url} within {timeout_s:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("gspread_src", type=Path, help="a gspread checkout (tag v6.2.1)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    tests = args.gspread_src / "tests"
    if not (tests / "conftest.py").is_file():
        print(f"{args.gspread_src}: not a gspread checkout (no tests/conftest.py)",
              file=sys.stderr)
        return 2
    sheetops = Path(sys.executable).with_name("sheetops")
    with tempfile.TemporaryDirectory(prefix="gspread-suite-") as scratch:
        copy = Path(scratch) / "tests"
        shutil.copytree(tests, copy, ignore=shutil.ignore_patterns("cassettes"))
        (copy / "conftest.py").write_text(CONFTEST, encoding="utf-8")
        for test_file in copy.glob("*_test.py"):  # pytest 8+ refuses marks on fixtures
            text = test_file.read_text(encoding="utf-8")
            test_file.write_text(text.replace("@pytest.mark.vcr()\n", "\n"), encoding="utf-8")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        emulator = subprocess.Popen([str(sheetops), "emulator", "--port", str(port)])
        try:
            _wait_up(url + "/", emulator)
            env = {"GSPREAD_SUITE_EMULATOR": url}
            report = Path(scratch) / "report.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "--rootdir", scratch, "-o", "addopts=", f"--junitxml={report}",
                   str(copy), *args.pytest_args]
            done = subprocess.run(cmd, cwd=scratch, env={**os.environ, **env}, check=False)
            _print_tally(report)
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
    return done.returncode


def _print_tally(report: Path) -> None:
    """passed/failed/skipped, and which failures are the Drive-sharing tests."""
    if not report.is_file():
        print("pytest wrote no report: see its output above", file=sys.stderr)
        return
    outcome: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        kind = ("failed" if kinds & {"failure", "error"} else
                "skipped" if "skipped" in kinds else "passed")
        outcome[kind].append(case.get("name", "?"))
    sharing = [n for n in outcome["failed"] if n in NEEDS_SHARING]
    other = [n for n in outcome["failed"] if n not in NEEDS_SHARING]
    print(f"gspread suite against sheetops emulator: {len(outcome['passed'])} passed, "
          f"{len(outcome['failed'])} failed, {len(outcome['skipped'])} skipped")
    print(f"  failed, need Drive sharing ({len(sharing)}): {', '.join(sharing) or '-'}")
    print(f"  failed, other ({len(other)}): {', '.join(other) or '-'}")


if __name__ == "__main__":
    raise SystemExit(main())
