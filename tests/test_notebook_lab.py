"""``sheetops notebook`` starts JupyterLab on loopback; a kernel created through the
server's REST API (token auth) opens the sheet ``sheetops run`` would use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sheetops.testing.ports import free_port

SHEETOPS = str(Path(sys.executable).with_name("sheetops"))
pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout: float, proc: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not ready within {timeout}s")


def _status(base: str, token: str):
    try:
        return requests.get(f"{base}/api/status", params={"token": token}, timeout=2).ok
    except requests.ConnectionError:
        return False


def test_sheetops_notebook_serves_a_kernel_that_opens_the_sheet(workbook, tmp_path):
    from jupyter_client import BlockingKernelClient

    workbook.jobs({"job": "hb", "automation": "heartbeat", "schedule": "every 1m"})
    port, token = free_port(), "test-token-123"
    runtime = tmp_path / "runtime"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    proc = subprocess.Popen([SHEETOPS, "notebook", "--port", str(port), "--token", token,
                             "--sheet", str(workbook.path), "--project", str(tmp_path)],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: _status(base, token), 60, proc)
        assert requests.get(f"{base}/api/kernels", timeout=5).status_code == 403
        headers = {"Authorization": f"token {token}"}
        kernel = requests.post(f"{base}/api/kernels", headers=headers,
                               json={"name": "python3"}, timeout=30).json()
        connection = _wait_for(
            lambda: next(iter(runtime.glob(f"kernel-{kernel['id']}.json")), None), 30, proc)
        client = BlockingKernelClient()
        client.load_connection_file(str(connection))
        client.start_channels()
        try:
            client.wait_for_ready(timeout=30)
            out: list[str] = []
            reply = client.execute_interactive(
                "import os\nfrom sheetops.notebook import open_config\ncfg = open_config()\n"
                "print(list(cfg.jobs['job']), os.getcwd())",
                timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
        finally:
            client.stop_channels()
        assert reply["content"]["status"] == "ok", reply["content"]
        assert "".join(out).strip() == f"['hb'] {tmp_path / 'notebooks'}"
        listed = requests.get(f"{base}/api/kernels", headers=headers, timeout=5).json()
        assert [k["id"] for k in listed] == [kernel["id"]]
        assert json.loads(connection.read_text())["ip"] == "127.0.0.1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
