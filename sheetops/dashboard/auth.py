"""Who may see the dashboard and who pressed "Run now".

Rules: bound to 127.0.0.1 the dashboard is open to the local machine. Bound to any
other address it needs a password (``SHEETOPS_DASHBOARD_PASSWORD``) or Streamlit's OIDC
login (an ``[auth]`` section in ``.streamlit/secrets.toml``), else it refuses to show
anything. When a password is set every visitor logs in (name + password) and "Run now"
records that name; with OIDC it records the identity provider's e-mail. The password is
compared with :func:`hmac.compare_digest` and never shown or logged.
"""

from __future__ import annotations

import getpass
import hmac
import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from sheetops.settings import get_settings

USER_KEY = "sheetops_user"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def dashboard_password() -> str:
    """The configured password ('' when none); read it only to compare it."""
    return get_settings().dashboard_password.get_secret_value()


def password_configured() -> bool:
    return bool(dashboard_password())


def check_password(candidate: str) -> bool:
    """Constant-time comparison with the configured password (False when none is set)."""
    expected = dashboard_password()
    if not expected:
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), expected.encode("utf-8"))


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, names and the rest."""
    host = (host or "").strip().strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def oidc_configured_in_files(root: Path | None = None) -> bool:
    """Whether a Streamlit secrets file (project or home) has an ``[auth]`` section with
    a provider — checked before Streamlit starts, by :func:`sheetops.dashboard.serve`."""
    candidates = [(root or Path.cwd()) / ".streamlit" / "secrets.toml",
                  Path.home() / ".streamlit" / "secrets.toml"]
    for path in candidates:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if _auth_section_ok(data.get("auth")):
            return True
    return False


def _auth_section_ok(auth: Any) -> bool:
    if not hasattr(auth, "get"):
        return False
    return bool(auth.get("redirect_uri") and auth.get("cookie_secret")
                and (auth.get("client_id") or any(hasattr(v, "get") for v in auth.values())))


# -- inside Streamlit -------------------------------------------------------------------
def oidc_configured() -> bool:
    import streamlit as st

    try:
        return _auth_section_ok(st.secrets.get("auth"))
    except Exception:  # no secrets file at all
        return False


def _oidc_user() -> str | None:
    import streamlit as st

    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("name") or "oidc-user")
    except Exception:
        return None
    return None


def current_user() -> str | None:
    """The logged-in user's name, ``localhost:<os user>`` on an open loopback dashboard,
    or None when nobody is logged in but a login is required."""
    import streamlit as st

    if oidc_configured():
        return _oidc_user()
    if password_configured():
        return st.session_state.get(USER_KEY)
    return f"localhost:{_os_user()}"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def require_access() -> str | None:
    """Gate every page: stop with a message when the dashboard is exposed without a
    password or OIDC, show the login when one is required. Returns the user."""
    import streamlit as st

    address = str(st.get_option("server.address") or "127.0.0.1")
    if oidc_configured():
        user = _oidc_user()
        if user is None:
            st.title("sheetops")
            st.write("Log in to see the dashboard.")
            st.button("Log in", on_click=st.login, type="primary")
            st.stop()
        return user
    if password_configured():
        user = st.session_state.get(USER_KEY)
        if user:
            return user
        _login_form()
        st.stop()
    if not is_loopback(address):
        st.error(f"This dashboard is bound to {address} without a password or login; set "
                 "SHEETOPS_DASHBOARD_PASSWORD or configure [auth] in .streamlit/secrets.toml.")
        st.stop()
    return current_user()


def _login_form() -> None:
    import streamlit as st

    st.title("sheetops — log in")
    with st.form("login"):
        name = st.text_input("Your name (recorded when you press Run now)")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if submitted:
        if name.strip() and check_password(password):
            st.session_state[USER_KEY] = name.strip()
            st.rerun()
        else:
            st.error("Wrong password or empty name.")


def logout_button() -> None:
    """A sidebar log-out for password or OIDC sessions."""
    import streamlit as st

    if oidc_configured() and _oidc_user():
        st.sidebar.button("Log out", on_click=st.logout)
    elif (password_configured() and st.session_state.get(USER_KEY)
          and st.sidebar.button("Log out")):
        st.session_state.pop(USER_KEY, None)
        st.rerun()
