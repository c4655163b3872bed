"""Start the dashboard: ``streamlit run`` of the packaged ``sheetops/dashboard/app.py``
in a subprocess, bound where asked. Streamlit's settings go as flags, so an installed
package needs no ``.streamlit/config.toml``.

Called by ``sheetops dashboard``. Refuses to bind beyond loopback unless a password
(``SHEETOPS_DASHBOARD_PASSWORD``) or Streamlit OIDC (``[auth]`` in secrets.toml) guards it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sheetops.dashboard.auth import is_loopback, oidc_configured_in_files, password_configured

APP = Path(__file__).resolve().parent / "app.py"
LAUNCHER = Path(__file__).with_name("launcher.py")  # app.py behind the Host/Origin guard


def streamlit_command(host: str, port: int, app: Path = LAUNCHER) -> list[str]:
    """The ``streamlit run`` command line (headless, no usage stats, no file watcher)."""
    return [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
            "--runner.magicEnabled", "false"]


def serve(store_url: str, host: str, port: int) -> int:
    """Run the dashboard against ``store_url`` on ``host:port`` until interrupted;
    returns the exit code (2 when refused: non-loopback host without password/OIDC)."""
    if not is_loopback(host) and not (password_configured()
                                      or oidc_configured_in_files()):
        print(f"Refusing to serve the dashboard on {host}: set SHEETOPS_DASHBOARD_PASSWORD "
              "or configure [auth] in .streamlit/secrets.toml to expose it beyond "
              "127.0.0.1.", file=sys.stderr)
        return 2
    if not APP.exists():
        print(f"Cannot find the dashboard entry point {APP}.", file=sys.stderr)
        return 2
    env = {**os.environ, "SHEETOPS_STORE_URL": store_url}
    proc = subprocess.Popen(streamlit_command(host, port), env=env)
    # SIGTERM (systemd, docker stop, kill) stops Streamlit too, not only this process.
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return 0
