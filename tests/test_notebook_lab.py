"""``sheetops notebook`` starts JupyterLab on loopback; a kernel created through the
server's REST API (token auth) opens the demo sheet, found as ``sheetops run`` would find
it (a relative path in the project's ``.env``), with the store ``run`` would use; stopping
``sheetops notebook`` stops the server and its kernel."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import wait_for

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


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting to be reaped counts)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status


def _ends_within(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether ``proc`` ended within ``timeout`` s (killed if not, so nothing is left)."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return False
    return True


def test_sheetops_notebook_serves_a_kernel_that_opens_the_demo_sheet(tmp_path):
    from sheetops.demo import DemoWorkspace

    port, token = free_port(), "test-token-123"
    runtime = tmp_path / "runtime"
    (tmp_path / ".env").write_text("SHEETOPS_SHEET=demo/ops.xlsx\n")  # as `run` reads it
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SHEETOPS_")},
           "JUPYTER_RUNTIME_DIR": str(runtime), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    with DemoWorkspace(tmp_path / "demo") as demo:
        proc = subprocess.Popen([SHEETOPS, "notebook", "--port", str(port), "--token", token,
                                 "--project", "."], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            kernel_pid = _open_the_demo_in_a_kernel(proc, port, token, runtime, tmp_path, demo)
        finally:
            proc.terminate()
            stopped = _ends_within(proc, 30)
    # stopping `sheetops notebook` stopped the server and its kernel with it
    assert stopped, "sheetops notebook did not stop on SIGTERM"
    assert not _status(f"http://127.0.0.1:{port}", token)
    wait_for(lambda: _gone(kernel_pid), 30, "the kernel to end with the server")


def _open_the_demo_in_a_kernel(proc, port, token, runtime, tmp_path, demo) -> int:
    """Start a kernel through the server's API and open the demo sheet in it; its pid."""
    from jupyter_client import BlockingKernelClient

    base = f"http://127.0.0.1:{port}"
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
            "import json, os\nfrom sheetops.notebook import open_config, store_of\n"
            "cfg = open_config()\n"
            "print(json.dumps([os.getpid(), cfg.location, list(cfg.jobs['job']),\n"
            "                  store_of(cfg).url, os.getcwd()]))",
            timeout=60, output_hook=lambda m: out.append(m["content"].get("text", "")))
    finally:
        client.stop_channels()
    assert reply["content"]["status"] == "ok", reply["content"]
    pid, location, jobs, store_url, cwd = json.loads("".join(out))
    assert location == str(demo.workbook) and cwd == str(tmp_path / "notebooks")
    assert jobs[:3] == ["heartbeat", "fetch-customers", "flaky-sync"] and "welcome" in jobs
    assert store_url == f"sqlite:///{demo.store_path}"  # the store `run` would use
    listed = requests.get(f"{base}/api/kernels", headers=headers, timeout=5).json()
    assert [k["id"] for k in listed] == [kernel["id"]]
    assert json.loads(connection.read_text())["ip"] == "127.0.0.1"
    return pid
