"""The one plugin loader: built-ins and a user's plugins found the same way (entry
points), an unknown alias named with the ones there are, a missing extra named with the
command that installs it."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from sheetops.connectors.alert_channels import EmailChannel, SlackChannel, WebhookChannel
from sheetops.connectors.sheets import open_sheet
from sheetops.connectors.sheets.workbook import WorkbookSheet

from sheetops import plugins
from sheetops.errors import SheetError, SheetopsError
from sheetops.executors.base import executor_class
from sheetops.executors.local import LocalExecutor
from sheetops.plugins import MissingExtraError, UnknownPluginError
from sheetops.registry import ENTRY_POINT_GROUP, _entry_point_modules
from sheetops.sheets import SheetBackend

USER_PLUGIN = '''
import json

from sheetops.errors import PermanentError
from sheetops.sheets import InitReport


class PagerChannel:
    """A toy alert channel: appends each page to the file named by PAGER_OUTBOX."""

    def __init__(self, *, timeout_s, environ=None, smtp=None):
        self.outbox = (environ or {}).get("PAGER_OUTBOX")

    def send(self, message, target):
        if not self.outbox:
            raise PermanentError("set PAGER_OUTBOX")
        with open(self.outbox, "a") as f:
            f.write(json.dumps({"to": target, "subject": message.subject}) + "\\n")


class FolderSheet:
    """A toy backend: a folder named *.sheetdir."""

    def __init__(self, location):
        self.location = location

    @classmethod
    def matches(cls, location):
        return location.endswith(".sheetdir")

    @classmethod
    def open(cls, location):
        return cls(location)

    def read_tabs(self, names):
        return {}

    def write_batch(self, writes):
        pass

    def ensure_tabs(self, specs):
        return InitReport()


class NotAnExecutor:
    pass
'''
ENTRY_POINTS = """\
[sheetops.alert_channels]
pager = userplug:PagerChannel
email = userplug:PagerChannel

[sheetops.sheets]
folder = userplug:FolderSheet

[sheetops.executors]
bogus = userplug:NotAnExecutor
broken = userplug_broken:Anything
"""


@pytest.fixture
def user_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution ``userplug`` registering plugins by entry point, as a
    user's package does (a ``.dist-info`` folder on ``sys.path``)."""
    (tmp_path / "userplug.py").write_text(USER_PLUGIN)
    (tmp_path / "userplug_broken.py").write_text("import no_such_module_for_sheetops\n")
    info = tmp_path / "userplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("userplug", "userplug_broken"):
        sys.modules.pop(name, None)


def test_the_built_ins_are_found_by_alias():
    assert executor_class("local") is LocalExecutor
    assert plugins.load(plugins.SHEETS, "workbook") is WorkbookSheet
    assert plugins.load_channel("email") is EmailChannel
    assert plugins.load_channel(" Slack ") is SlackChannel
    assert plugins.load_channel("webhook") is WebhookChannel


@pytest.mark.parametrize("load, message", [
    (lambda: executor_class("celery-ish"),
     "unknown executor 'celery-ish'; available: celery, local"),
    (lambda: plugins.load(plugins.SHEETS, "excel"),
     "unknown sheet backend 'excel'; available: google, workbook"),
    (lambda: plugins.load_channel("pager"),
     "unknown alert channel 'pager'; available: email, slack, webhook"),
])
def test_an_unknown_alias_is_a_lookup_error_naming_the_ones_there_are(load, message):
    with pytest.raises(UnknownPluginError) as caught:
        load()
    assert str(caught.value) == message
    assert isinstance(caught.value, LookupError) and isinstance(caught.value, SheetopsError)


def test_a_users_plugins_load_like_the_built_ins(user_plugins: Path):
    pager = plugins.load_channel("pager")
    assert pager.__module__ == "userplug"
    assert plugins.load_channel("email") is EmailChannel  # a plugin cannot take a built-in
    sheet = open_sheet("ops.sheetdir")
    assert type(sheet).__name__ == "FolderSheet" and isinstance(sheet, SheetBackend)
    assert isinstance(open_sheet(str(user_plugins / "ops.xlsx")), WorkbookSheet)
    with pytest.raises(UnknownPluginError, match="available: bogus, broken, celery, local"):
        executor_class("nope")
    with pytest.raises(SheetopsError, match="'bogus' is not an Executor"):
        executor_class("bogus")


def test_a_plugin_that_fails_to_import_for_a_bug_is_not_disguised(user_plugins: Path):
    with pytest.raises(ModuleNotFoundError, match="no_such_module_for_sheetops"):
        executor_class("broken")


@pytest.fixture
def without_gspread(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the ``google`` extra were not installed: importing gspread fails."""
    for name in [m for m in sys.modules if m.partition(".")[0] == "gspread"] or ["gspread"]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("google", "google_http"):
        monkeypatch.delitem(sys.modules, f"sheetops.connectors.sheets.{name}", raising=False)


def test_a_backend_missing_its_extra_names_the_extra(without_gspread, tmp_path: Path):
    with pytest.raises(MissingExtraError) as caught:
        plugins.load(plugins.SHEETS, "google")
    assert str(caught.value) == (
        "the sheet backend 'google' needs the 'google' extra, which is not installed "
        "(no module 'gspread'): pip install 'sheetops[google]'")
    with pytest.raises(SheetError, match=r"pip install 'sheetops\[google\]'"):
        open_sheet("https://docs.google.com/spreadsheets/d/1AbC-dEf_123/edit")
    assert isinstance(open_sheet(str(tmp_path / "ops.xlsx")), WorkbookSheet)


def test_built_in_automations_are_registered_by_entry_points_only():
    modules = _entry_point_modules()
    for name in ("demo", "heartbeat", "http_get", "send_email"):
        assert f"sheetops.automations.{name}" in modules, ENTRY_POINT_GROUP


# -- the built-in alert channels send what the alert evaluator sends today ------------------
def _alert(fmt: str = "text"):
    from sheetops.alerts import AlertMessage

    body = "<p>3 of 4 runs <b>failed</b></p>" if fmt == "html" else "3 of 4 runs failed"
    return AlertMessage("fired", "sync failing", "sync", "failure_rate", 0.75, 0.5, 3600,
                        "", 1_767_000_000.0, 1_766_990_000.0, "[sheetops] FIRING: sync",
                        body, fmt)


def test_the_email_channel_sends_the_message_the_evaluator_sends(smtp):
    from sheetops.alerts import ChannelDelivery, DeliveryPolicy

    message = _alert("html")
    ChannelDelivery(DeliveryPolicy(attempts=1))(replace(message, channel="email:a@example.com"))
    plugins.load_channel("email")(timeout_s=5).send(message, " b@example.com ")
    old, new = smtp.wait_for(2)
    assert (new["To"], new["Subject"], new["X-Sheetops-Alert"]) == (
        "b@example.com", "[sheetops] FIRING: sync", "fired sync failing")
    assert old.get_body(("plain",)).get_content() == new.get_body(("plain",)).get_content()
    assert old.get_body(("html",)).get_content() == new.get_body(("html",)).get_content()


@pytest.mark.parametrize("scheme", ["slack", "webhook"])
def test_the_hook_channels_post_the_payload_the_evaluator_posts(scheme, monkeypatch):
    from sheetops.alerts import ChannelDelivery, DeliveryPolicy
    from sheetops.testing.http import HttpServer

    message = _alert("html")
    with HttpServer() as server:
        server.json("/hook", {"ok": True}, method="POST")
        environ = {f"SHEETOPS_{scheme.upper()}_OPS": server.url("/hook")}
        ChannelDelivery(DeliveryPolicy(attempts=1), environ=environ)(
            replace(message, channel=f"{scheme}:ops"))
        plugins.load_channel(scheme)(timeout_s=5, environ=environ).send(message, "ops")
        old, new = (r.json() for r in server.requests)
    assert new == old and "failed" in json.dumps(new)


def test_a_users_channel_registered_by_entry_point_receives_the_alerts(user_plugins: Path,
                                                                       store):
    from sheetops.alerts import (
        AlertEvaluator,
        ChannelDelivery,
        DeliveryPolicy,
        recent_alert_events,
    )
    from sheetops.config.parse import parse_config
    from sheetops.store import Batch

    snap = parse_config({
        "Jobs": [["job", "automation", "schedule"], ["sync", "demo", "every 1m"]],
        "Alerts": [["name", "job", "metric", "threshold", "channel"],
                   ["sync failing", "sync", "consecutive_failures", "3", "pager:on-call"],
                   ["sync typo", "sync", "consecutive_failures", "3", "pagr:on-call"]],
    }, {"demo"})
    assert [a.name for a in snap.alerts] == ["sync failing"]
    assert [str(p) for p in snap.errors] == [
        "Alerts!E3: channel must be email:ADDRESS, slack:NAME or webhook:NAME, "
        "got 'pagr:on-call'"]
    store.record(Batch(job_states={"sync": {"last_status": "failed",
                                            "consecutive_failures": 3}}))
    outbox = user_plugins / "pages.jsonl"
    deliver = ChannelDelivery(DeliveryPolicy(attempts=1), environ={"PAGER_OUTBOX": str(outbox)})
    AlertEvaluator(store, lambda: snap, deliver).evaluate()

    assert [json.loads(line) for line in outbox.read_text().splitlines()] == [
        {"to": "on-call", "subject": "[sheetops] FIRING: sync failing — sync"}]
    [fired] = recent_alert_events(store)
    assert (fired["kind"], fired["channel"]) == ("fired", "pager:on-call")
    assert fired["delivered_at"] is not None


def test_a_channel_nobody_registered_is_a_delivery_failure_naming_the_ones_there_are():
    from sheetops.alerts import ChannelDelivery, DeliveryPolicy
    from sheetops.errors import PermanentError

    with pytest.raises(PermanentError, match="unknown alert channel 'pager'; available: "
                                             "email, slack, webhook"):
        ChannelDelivery(DeliveryPolicy(attempts=3))(replace(_alert(), channel="pager:x"))


def test_an_unconfigured_hook_is_a_permanent_error_naming_the_variable():
    from sheetops.errors import PermanentError

    with pytest.raises(PermanentError, match="set SHEETOPS_WEBHOOK_NOPE"):
        plugins.load_channel("webhook")(timeout_s=1, environ={}).send(_alert(), "nope")
