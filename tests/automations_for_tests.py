"""Automations used only by the tests, loaded the documented way a team adds its own:
``SHEETOPS_AUTOMATIONS=automations_for_tests`` with this directory importable.

``t_probe`` leaves evidence of every attempt in ``params.dir`` (one JSON file per
attempt: pid, start/end times, throttle permits), so tests measure what really happened
in the worker processes instead of mocking them.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sheetops import automation
from sheetops.errors import PermanentError


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


@automation("t_probe")
def probe(ctx: Any) -> dict[str, Any]:
    """Test probe: record the attempt, sleep, throttle, fail or succeed as params say.

    params: dir, executions (a path: a ``run_id pid`` line appended per execution),
    sleep (s), hold_until (a path: the attempt stays busy until the test
    creates that file, so a state it asserts lasts as long as the test needs, not for a
    sleep a loaded machine can outrun; at most 120 s), throttle (permits to take),
    succeed_on (attempt number), fail ("permanent"), message, bad_records (keys reported
    with record_failure), allocate_mb (memory to take, for the worker memory limit).
    """
    p = ctx.params
    folder = Path(p["dir"]) if p.get("dir") else None
    record: dict[str, Any] = {"job": ctx.job, "run_id": ctx.run_id, "attempt": ctx.attempt,
                              "pid": os.getpid(), "ppid": os.getppid(), "start": time.time(),
                              "dry_run": ctx.dry_run,
                              "trigger": ctx.trigger, "permits": []}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{ctx.job}-{ctx.run_id}-{ctx.attempt}"
        _write_json(folder / f"{name}.start.json", record)
    if p.get("executions"):  # a line per execution, a rerun of the same attempt included
        with Path(p["executions"]).open("a", encoding="utf-8") as out:
            out.write(f"{ctx.run_id} {os.getpid()}\n")
    time.sleep(float(p.get("sleep", 0)))
    if p.get("hold_until"):
        _hold_until(Path(p["hold_until"]))
    hog = bytearray(int(p.get("allocate_mb", 0)) * 1024 * 1024)
    for _ in range(int(p.get("throttle", 0))):
        ctx.throttle()
        record["permits"].append(time.time())
    record["end"] = time.time()
    if folder is not None:
        _write_json(folder / f"{name}.json", record)
    message = str(p.get("message") or f"{ctx.job} attempt {ctx.attempt} fails on purpose")
    if p.get("fail") == "permanent":
        raise PermanentError(message)
    if ctx.attempt < int(p.get("succeed_on", 1)):
        raise RuntimeError(message)
    for key in p.get("bad_records", []):
        ctx.record_failure(key, ValueError(f"record {key} has no email"))
    n = int(p.get("records", 1)) + 0 * len(hog)
    return {"records_in": n, "records_out": n - len(p.get("bad_records", [])),
            "attempt": ctx.attempt}


def _hold_until(path: Path, limit_s: float = 120.0) -> None:
    """Poll until ``path`` exists (a test's release), or ``limit_s`` passes."""
    deadline = time.monotonic() + limit_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@automation("t_leak")
def leak(ctx: Any) -> None:
    """Test: fail with a message, a traceback and a record failure holding a secret."""
    token = ctx.params["token"]
    ctx.record_failure("rec-1", RuntimeError(f"record rejected, token={token}"))
    ctx.record_failure(f"key-{token}", RuntimeError("the record key is the token"))
    echoed = (token.upper(), base64.b64encode(token.encode()).decode(), json.dumps(token),
              quote(token, safe=""))
    ctx.log.warning("server echoed %s", " | ".join(echoed))
    raise RuntimeError(f"login refused for token {token}; echoed {' | '.join(echoed)}")


def read_attempts(folder: Path) -> list[dict[str, Any]]:
    """Every finished attempt ``t_probe`` recorded in ``folder``, oldest start first."""
    found = [json.loads(f.read_text()) for f in Path(folder).glob("*.json")
             if not f.name.endswith(".start.json")]
    return sorted(found, key=lambda r: r["start"])


def read_starts(folder: Path) -> list[dict[str, Any]]:
    """Every attempt that started (finished or not), oldest first."""
    found = [json.loads(f.read_text()) for f in Path(folder).glob("*.start.json")]
    return sorted(found, key=lambda r: r["start"])


@automation("t_wire_deliver")
def wire_deliver(ctx: Any) -> dict[str, Any]:
    """Send each of ``params.keys`` once per run (noted in ``ctx.deliveries``)."""
    sent = []
    for key in ctx.params["keys"]:
        if not ctx.deliveries.done(key):
            ctx.deliveries.add(key)
            sent.append(key)
    return {"sent": sent, "token_length": len(ctx.params["token"])}
