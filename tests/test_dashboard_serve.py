"""``sheetops dashboard`` for real: Streamlit on a loopback port, behind the Host/Origin
guard (DNS rebinding), and stopped with its Streamlit child on SIGTERM."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for

from sheetops.store import Store
from sheetops.testing.ports import free_port

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
pytestmark = pytest.mark.slow


def _get(port: int, path: str = "/_stcore/health", **headers: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start(folder: Path, store_url: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "SHEETOPS_STORE_URL": store_url, "SHEETOPS_SHEET": ""}
    env.pop("SHEETOPS_DASHBOARD_PASSWORD", None)
    return subprocess.Popen([SHEETOPS, "dashboard", "--port", str(port)], cwd=folder,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True), port


@pytest.fixture
def dashboard(tmp_path):
    proc, port = _start(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    try:
        wait_for(lambda: _get(port)[0] == 200, 60, "the dashboard to answer")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_foreign_host_or_origin_is_refused_own_address_served(dashboard):
    _proc, port = dashboard
    assert _get(port, Host=f"127.0.0.1:{port}") == (200, "ok")
    assert _get(port, "/", Host=f"localhost:{port}")[0] == 200
    status, body = _get(port, "/", Host=f"rebind.evil.example:{port}")
    assert status == 403 and "Host rebind.evil.example" in body
    status, body = _get(port, "/", Origin="http://evil.example")
    assert status == 403 and "Origin http://evil.example" in body
    # the websocket handshake, as a rebinding page's script would open it
    ws = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
          "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert _get(port, "/_stcore/stream", **ws,
                Host=f"rebind.evil.example:{port}")[0] == 403
    assert _get(port, "/_stcore/stream", **ws, Origin="http://evil.example")[0] == 403
    assert _get(port, "/_stcore/stream", **ws, Origin=f"http://127.0.0.1:{port}")[0] == 101


def test_sigterm_stops_the_dashboard_and_its_streamlit_child(dashboard):
    proc, port = dashboard
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)],
                              capture_output=True, text=True).stdout.split()
    assert children, "the dashboard runs Streamlit in a child process"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    wait_for(lambda: not _port_open(port), timeout=30)
    for pid in children:
        wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
              or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2], timeout=30)


def test_without_sheet_the_dashboard_uses_the_store_beside_the_folders_workbook(tmp_path):
    (tmp_path / "ops.xlsx").write_bytes(b"")
    (tmp_path / "notes.xlsx").write_bytes(b"")  # a workbook without a store is not a choice
    Store(f"sqlite:///{tmp_path / 'ops.sheetops.db'}").dispose()
    proc, port = _start(tmp_path, "")
    try:
        wait_for(lambda: _get(port)[0] == 200, 60, "the dashboard to answer")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"dashboard for the store sqlite:///{tmp_path / 'ops.sheetops.db'}" in out
    assert "has no runs yet" in out
    assert not (tmp_path / "sheetops.db").exists()


@pytest.mark.parametrize("workbooks, expected", [
    (("a.xlsx", "b.xlsx"), "several workbooks here have a store (a.xlsx, b.xlsx)"),
    ((), "no store found: no workbook in this folder"),
])
def test_without_sheet_and_no_single_store_says_how_to_choose(tmp_path, workbooks,
                                                               expected):
    for name in workbooks:
        (tmp_path / name).write_bytes(b"")
        Store(f"sqlite:///{(tmp_path / name).with_suffix('.sheetops.db')}").dispose()
    env = {**os.environ, "SHEETOPS_STORE_URL": "", "SHEETOPS_SHEET": ""}
    result = subprocess.run([SHEETOPS, "dashboard", "--port", str(free_port())],
                            cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and expected in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sheetops.db").exists()
