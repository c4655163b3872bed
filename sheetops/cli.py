"""The ``sheetops`` command. Each command parses its arguments and calls one engine
function; any :class:`SheetopsError` becomes one sentence on stderr and an exit code,
never a traceback.

Exit codes: 0 success; 1 the thing checked failed (validate found errors, a run
failed); 2 the command could not do its work (bad arguments, unreadable sheet, store).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import typer

from sheetops import plugins
from sheetops.errors import SheetopsError
from sheetops.logs import setup_logging
from sheetops.registry import discover_from_settings, registry
from sheetops.settings import Settings, get_settings, unknown_env_vars

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Spreadsheet-driven automation: ops edit a sheet, sheetops runs it.")

SheetOption = typer.Option(None, "--sheet", "-s", envvar="SHEETOPS_SHEET",
                           help="Path to an .xlsx workbook or a Google Sheet URL/key.")

log = logging.getLogger("sheetops.cli")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"sheetops {version('sheetops')}")
        raise typer.Exit()


@app.callback()
def _root(show_version: bool = typer.Option(False, "--version", is_eager=True,
                                            callback=_print_version,
                                            help="Print the installed version and exit.")
          ) -> None:
    """Spreadsheet-driven automation: ops edit a sheet, sheetops runs it."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _prepare(settings: Settings | None = None) -> Settings:
    settings = settings or get_settings()
    setup_logging(settings.log_format, settings.log_level)
    for name in unknown_env_vars():
        log.warning("%s is not a sheetops setting and is ignored", name)
    for problem in discover_from_settings():
        log.warning("automation module not loaded: %s", problem)
    return settings


def _open(sheet: str | None):
    from sheetops.connectors.sheets import open_sheet

    settings = get_settings()
    location = sheet or settings.sheet
    if location and not settings.sheet:  # a pipeline's sheet_tab() reads this sheet
        os.environ["SHEETOPS_SHEET"] = location
        get_settings.cache_clear()
    return open_sheet(location)


def _store(settings: Settings, sheet_location: str):
    return _open_store(_store_url(settings, sheet_location))


def _store_url(settings: Settings, sheet: str | None) -> str:
    """The store URL of ``run`` for ``sheet``: a client's sheet (SHEETOPS_CLIENTS) has
    its client's store, any other the one of SHEETOPS_STORE_URL or beside the workbook."""
    from sheetops.clients import store_url_of

    return store_url_of(settings, sheet)


def _open_store(url: str):
    """The store at ``url``, migrated if it is behind; a file that is not a database (or
    a store newer than this sheetops) is a StoreError, one sentence."""
    from sheetops.store import Store

    return Store(url)


def _check_emulator_data(data: str) -> None:
    """Refuse a ``--data`` path that cannot hold the emulator's SQLite file."""
    path = Path(data)
    if path.is_dir():
        raise _fail(f"--data {data} is a directory; give the path of a SQLite file, "
                    f"e.g. {path / 'sheets.db'}")
    if not path.parent.is_dir():
        raise _fail(f"--data {data}: the folder {path.parent} does not exist; create it "
                    "or choose another path")
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise _fail(f"--data {data} is not a SQLite file (the emulator keeps its "
                            "spreadsheets in one); give a new or an existing emulator file")


@app.command()
def init(sheet: str = SheetOption,
         examples: bool = typer.Option(True, help="Add example rows to new tabs.")) -> None:
    """Create the tabs, headers, notes, dropdowns and examples (existing tabs are kept)."""
    _prepare()
    try:
        backend = _open(sheet)
        from sheetops.engine import init_sheet

        report = init_sheet(backend, examples)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    for name in report.created:
        typer.echo(f"created tab {name}")
    for name in report.existing:
        typer.echo(f"kept existing tab {name}")
    typer.echo(f"{backend.location} is ready: edit the Jobs tab, then run "
               f"'sheetops validate --sheet {backend.location}'")


@app.command()
def validate(sheet: str = SheetOption) -> None:
    """Check the config tabs; print every problem as Tab!A1: problem (exit 1 on errors)."""
    _prepare()
    try:
        backend = _open(sheet)
        from sheetops.engine import validate_sheet

        snapshot = validate_sheet(backend)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    for problem in snapshot.problems:
        color = typer.colors.RED if problem.is_error else typer.colors.YELLOW
        typer.secho(f"{problem}  [{problem.severity}]{_import_note(str(problem))}", fg=color)
    errors = len(snapshot.errors)
    warnings = len(snapshot.problems) - errors
    typer.echo(f"{len(snapshot.jobs)} valid job(s), {errors} error(s), {warnings} warning(s); "
               f"written to the Validation tab")
    raise typer.Exit(1 if errors else 0)


def _import_note(problem: str) -> str:
    """Beside an ``unknown automation`` problem, the modules that failed to import (the
    likely reason the name is unknown)."""
    if "unknown automation" not in problem or not registry.failed:
        return ""
    return "; not imported: " + "; ".join(f"{module} ({why})"
                                          for module, why in sorted(registry.failed.items()))


SheetsOption = typer.Option(None, "--sheet", "-s", metavar="SHEET", help=(
    "Path to an .xlsx workbook or a Google Sheet URL/key (default SHEETOPS_SHEET); repeat "
    "it to serve several clients: --sheet acme=acme.xlsx --sheet globex=URL."))
ClientsOption = typer.Option(None, "--clients", metavar="FILE", help=(
    'A clients file, one line per client: acme = "acme.xlsx" (default SHEETOPS_CLIENTS).'))


@app.command()
def run(sheet: list[str] = SheetsOption,
        clients_file: str = ClientsOption,
        for_seconds: float = typer.Option(None, "--for", help="Stop by itself after this "
                                          "many seconds (finishing runs, flushing status)."),
        workers: int = typer.Option(0, help="Worker processes (default: SHEETOPS_WORKERS "
                                    "or the number of CPUs; with several clients, per "
                                    "client, default 2)."),
        progress: bool = typer.Option(False, help="Print a line per finished run, and "
                                      "each running pipeline's stages every second.")
        ) -> None:
    """Run the scheduler until Ctrl-C (or --for SECONDS)."""
    settings = _prepare()
    try:
        clients = _clients(settings, sheet or [], clients_file)
        if clients is not None:
            _run_clients(_client_group(settings, clients, workers, progress), for_seconds)
            return
        backend = _open(sheet[0] if sheet else None)
        getattr(backend, "check_writable", lambda: None)()  # a read-only workbook: refuse
        engine = _engine(settings, backend, workers, progress)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    _run_engine(engine, for_seconds)


def _clients(settings: Settings, sheets: list[str], clients_file: str | None):
    """The clients ``run`` serves (sheetops.clients), or ``None`` for one plain sheet."""
    from sheetops import clients

    if clients_file and sheets:
        raise _fail("give either --sheet (repeated) or --clients FILE, not both")
    if clients_file or (not sheets and settings.clients):
        pairs = clients.read_clients_file(clients_file or settings.clients)
    elif len(sheets) > 1 or (sheets and clients.is_named(sheets[0])):
        pairs = clients.parse_sheet_args(sheets)
    else:
        return None
    return clients.resolve(pairs, settings)


def _client_group(settings: Settings, clients, workers: int, progress: bool):
    """One engine per client, each over its own sheet, store and worker pool."""
    from sheetops.clients import ClientGroup

    def build(client):
        backend = _open(client.sheet)
        getattr(backend, "check_writable", lambda: None)()
        return _engine(settings, backend, workers or settings.workers or 2, progress,
                       store_url=client.store_url, client=client.name)

    group = ClientGroup(clients, build)
    if settings.metrics_port > 0:
        _serve_clients_metrics(settings, group)
    return group


def _serve_clients_metrics(settings: Settings, group) -> None:
    """One /metrics for every client of ``group``, each series labelled ``client``."""
    from sheetops.metrics import CLIENTS_REGISTRY, ClientsCollector

    CLIENTS_REGISTRY.register(ClientsCollector(
        lambda: {name: engine.store for name, engine in dict(group.engines).items()},
        lambda: list(group.failed)))
    _start_metrics(settings, CLIENTS_REGISTRY)


def _run_clients(group, for_seconds: float | None) -> None:
    """``run`` for several clients: each one's jobs from its own sheet; a client that
    cannot start is named (and retried) while the others run."""
    from sheetops.clients import RETRY_S

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    group.start()
    for name, engine in group.engines.items():
        typer.echo(f"client {name}: {len(engine.snapshot.jobs)} job(s) from "
                   f"{engine.sheet.location}; store {engine.store.safe_url}")
    for name, why in group.failed.items():
        typer.secho(f"client {name} is not running: {why} (tried again every "
                    f"{RETRY_S:g}s; the other clients run)", fg=typer.colors.YELLOW, err=True)
    typer.echo(f"sheetops is running {len(group.engines)} of {len(group.clients)} "
               f"client(s). {_until_note(for_seconds)}")
    _until_stopped(stop, for_seconds, group.stop)
    for name, engine in group.engines.items():
        typer.echo(f"client {name}: {_stop_summary(engine)}")
    for name, why in group.failed.items():
        typer.secho(f"client {name} never ran: {why}", fg=typer.colors.YELLOW, err=True)


def _engine(settings: Settings, backend, workers: int, progress: bool,
            store_url: str | None = None, client: str = "", stages: bool | None = None):
    """The engine over ``backend``; a ``client``'s (one of several in this run) has its
    own store and counts its runs under its name on the shared /metrics (served by
    :func:`_serve_clients_metrics`). ``progress`` prints finished runs, ``stages``
    (default: as ``progress``) each running pipeline's stages."""
    from sheetops.engine import Engine, EngineOptions
    from sheetops.logs import LoggingHook
    from sheetops.progress import ConsoleProgress, StageProgress

    store = _open_store(store_url) if store_url else _store(settings, backend.location)
    hooks = [LoggingHook(), *([ConsoleProgress()] if progress else [])]
    if progress if stages is None else stages:
        hooks.append(StageProgress(store))
    if settings.metrics_port > 0:
        hooks.append(_client_metrics_hook(client) if client else
                     _metrics_hook(settings, store))
    return Engine(backend, store,
                  EngineOptions(executor=settings.executor,
                                workers=workers or settings.workers,
                                lease_ttl_s=settings.lease_ttl_s,
                                client=client or _client_name(settings, backend.location)),
                  hooks)


def _client_name(settings: Settings, location: str) -> str:
    """The client a sheet run on its own belongs to (SHEETOPS_CLIENTS), else ""."""
    from sheetops.clients import client_of

    found = client_of(settings, location)
    return found.name if found is not None else ""


def _client_metrics_hook(client: str):
    from sheetops.metrics import CLIENT_METRICS, MetricsHook

    return MetricsHook(metrics=CLIENT_METRICS, client=client)


def _metrics_hook(settings: Settings, store):
    """Count runs for Prometheus and serve /metrics on SHEETOPS_METRICS_HOST:PORT; a port
    already in use (say, a scheduler running beside run-job) is a warning, not an error."""
    from sheetops.metrics import MetricsHook

    hook = MetricsHook(store)
    _start_metrics(settings)
    return hook


def _start_metrics(settings: Settings, registry=None) -> None:
    from sheetops.metrics import start_metrics_server

    try:
        start_metrics_server(settings.metrics_port, registry, host=settings.metrics_host)
    except OSError as exc:
        log.warning("metrics: cannot serve on %s:%d (%s); running without the endpoint",
                    settings.metrics_host, settings.metrics_port, exc.strerror or exc)


def _run_engine(engine, for_seconds: float | None, run_all_now: bool = False) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        engine.start()
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    if run_all_now:  # the demo shows every scheduled job at once, not after its first fire
        for spec in engine.snapshot.jobs.values():
            if spec.enabled and not spec.parsed_schedule.is_manual:
                # started by a sheetops command, not by a person: trigger "cli"
                engine.scheduler.run_now(spec.job, "cli", requested_by="demo")
    typer.echo(f"sheetops is running {len(engine.snapshot.jobs)} job(s) from "
               f"{engine.sheet.location}; store {engine.store.safe_url}. "
               f"{_until_note(for_seconds)}")
    _until_stopped(stop, for_seconds, engine.stop)
    typer.echo(_stop_summary(engine))


def _until_note(for_seconds: float | None) -> str:
    return "Ctrl-C to stop." if for_seconds is None else f"Stopping in {for_seconds:g}s."


#: how often ``run`` looks whether it was told to stop (see :func:`_until_stopped`)
WAKE_S = 1.0


def _until_stopped(stop: threading.Event, for_seconds: float | None,
                   shut_down: Callable[[], None]) -> None:
    """Wait for --for, SIGTERM (``stop``) or Ctrl-C, then ``shut_down`` (running attempts
    finish, status is flushed). The wait wakes every second: a signal the kernel hands
    to another thread runs its Python handler only when the main thread next runs
    bytecode, which an untimed wait never does."""
    deadline = None if for_seconds is None else time.monotonic() + for_seconds
    try:
        while not stop.is_set():
            left = WAKE_S if deadline is None else min(WAKE_S, deadline - time.monotonic())
            if left <= 0 or stop.wait(left):
                break
    except KeyboardInterrupt:
        typer.echo("\nstopping: finishing running attempts and flushing status…")
    finally:
        shut_down()


def _stop_summary(engine) -> str:
    """What ``run`` prints at stop: status writes, and what is still in the outbox."""

    outbox = engine.store.pending_outbox()
    line = (f"stopped; {engine.status.flushes} status write(s), "
            f"{engine.status.failures} failed and retried; outbox {outbox.count} pending")
    if outbox.count:
        line += (f" (oldest {outbox.age_s(time.time()):.0f}s, tabs "
                 f"{', '.join(sorted(outbox.tabs))}): kept in the store and written at "
                 "the next start")
    return line


@app.command("run-job")
def run_job(job: str = typer.Argument(..., help="The job id from the Jobs tab."),
            sheet: str = SheetOption,
            dry_run: bool = typer.Option(False, "--dry-run", help="Run the job's code here "
                                         "with every email, HTTP write and sheet write "
                                         "captured and printed instead of sent; nothing "
                                         "is recorded."),
            progress: bool = typer.Option(True, help="While a pipeline runs, print its "
                                          "stages' progress every second.")) -> None:
    """Run one job now and print its result (exit 0 on success, 1 on failure)."""
    from sheetops.store import RunStatus

    settings = _prepare()
    if dry_run:
        _dry_run_job(job, sheet)
    try:
        backend = _open(sheet)
        engine = _engine(settings, backend, 1, False, stages=progress)
        run_id, problems = engine.run_job(job)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    if problems:
        raise _fail("\n".join(str(p) for p in problems), 1)
    record = engine.store.run(run_id) if run_id else None
    if record is None:
        raise _fail(f"the run of {job} was not recorded", 1)
    for attempt in engine.store.attempts_of(run_id):
        line = f"attempt {attempt['attempt']}: {attempt['status']}"
        if attempt["error_type"]:
            line += f" — {attempt['error_type']}: {attempt['error_message']}"
        typer.echo(line)
    typer.echo(f"run {run_id} of {job}: {record['status']} after {record['attempts']} "
               f"attempt(s) in {record['duration_s'] or 0:.2f}s; records in/out/failed "
               f"{record['records_in']}/{record['records_out']}/{record['records_failed']}")
    if record["result"] not in ("{}", ""):
        typer.echo(f"result: {record['result']}")
    pending = engine.store.pending_outbox().count
    if pending:
        typer.secho(f"the status tabs could not be updated ({engine.status.last_error}); "
                    f"{pending} change(s) are kept in the outbox and written by the next "
                    "'sheetops run' or 'run-job'", fg=typer.colors.YELLOW, err=True)
    raise typer.Exit(0 if record["status"] == RunStatus.OK else 1)


def _dry_run_job(job: str, sheet: str | None) -> None:
    """``run-job --dry-run``: the job's row, run here through :mod:`sheetops.dryrun` (the
    notebook's ``dry_run`` too); prints each effect it would have had, then exits."""
    from sheetops.dryrun import dry_run_job
    from sheetops.engine import read_config

    try:
        snapshot = read_config(_open(sheet))
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    spec = snapshot.jobs.get(job)
    if spec is None:
        problems = snapshot.invalid.get(job) or (f"Jobs!A1: no job {job!r} on the Jobs tab",)
        raise _fail("\n".join(str(p) for p in problems), 1)
    outcome = dry_run_job(
        spec, template=snapshot.templates.get(spec.template) if spec.template else None,
        rate_limit=snapshot.rate_limits.get(spec.rate_limit) if spec.rate_limit else None,
        stages=snapshot.stages.get(job, {}), trigger="cli (dry run)")
    for line in outcome.lines():
        typer.echo(line)
    for failure in outcome.record_failures:
        typer.echo(f"record {failure['record_key']} would fail: {failure['error_type']}: "
                   f"{failure['message']}")
    state = "ok" if outcome.ok else f"failed — {outcome.error}"
    typer.echo(f"dry run of {job}: {state}; {len(outcome.effects)} effect(s) captured, "
               "nothing sent or recorded")
    if outcome.result:
        import json

        typer.echo(f"result: {json.dumps(outcome.result, default=str, sort_keys=True)}")
    raise typer.Exit(0 if outcome.ok else 1)


@app.command()
def demo(directory: Path = typer.Option(Path(".sheetops-demo"), "--dir",
                                        help="Workspace for the demo (git-ignored)."),
         for_seconds: float = typer.Option(60, "--for", help="How long to run "
                                           "(0 = until Ctrl-C)."),
         workers: int = typer.Option(2, help="Worker processes.")) -> None:
    """Run a working demo offline: a workbook, local HTTP and SMTP servers, the scheduler."""
    settings = _prepare()
    if "SHEETOPS_LOG_LEVEL" not in os.environ:  # the progress lines tell the story
        logging.getLogger().setLevel(logging.WARNING)
    from sheetops.demo import DemoWorkspace

    with DemoWorkspace(directory) as workspace:
        typer.echo(workspace.describe())
        os.environ.update(workspace.environment())
        get_settings.cache_clear()
        settings = get_settings()
        try:
            backend = _open(str(workspace.workbook))
            engine = _engine(settings, backend, workers, True)
        except SheetopsError as exc:
            raise _fail(str(exc)) from None
        _run_engine(engine, for_seconds or None, run_all_now=True)
        typer.echo(workspace.summary(engine.store))


@app.command()
def dashboard(host: str = typer.Option(None, help="Address to bind (default 127.0.0.1)."),
              port: int = typer.Option(None, help="Port (default 8501)."),
              sheet: str = SheetOption,
              clients_file: str = ClientsOption) -> None:
    """Serve the Streamlit monitoring page for the configured store (with --clients or
    SHEETOPS_CLIENTS: every client's, chosen in the sidebar)."""
    settings = _prepare()
    try:
        plugins.require_extra("dashboard", "sheetops dashboard")
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    from sheetops.dashboard.serve import serve
    try:
        if clients_file or (settings.clients and not sheet):
            code = _serve_clients(settings, clients_file or settings.clients, host, port)
            raise typer.Exit(code)
        url = _dashboard_store_url(settings, sheet or settings.sheet)
        store = _open_store(url)
        typer.echo(f"dashboard for the store {store.safe_url}")
        if not store.count_runs():
            typer.echo(f"the store {store.safe_url} has no runs yet: the pages stay empty "
                       "until 'sheetops run' uses it", err=True)
        store.dispose()
        code = serve(url, host or settings.dashboard_host, port or settings.dashboard_port)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


def _serve_clients(settings: Settings, path: str, host: str | None, port: int | None
                   ) -> int:
    """The dashboard over every client of a clients file (a selector in its sidebar)."""
    from sheetops import clients
    from sheetops.dashboard.serve import serve
    from sheetops.store.db import safe_url

    path = str(Path(path).resolve())
    served = clients.resolve(clients.read_clients_file(path), settings)
    for client in served:
        typer.echo(f"dashboard for client {client.name}: store "
                   f"{safe_url(client.store_url)}")
    os.environ["SHEETOPS_CLIENTS"] = path  # the Streamlit process reads the same file
    return serve(settings.store_url, host or settings.dashboard_host,
                 port or settings.dashboard_port)


def _dashboard_store_url(settings: Settings, sheet: str) -> str:
    """The store ``run`` uses: SHEETOPS_STORE_URL, the one beside ``--sheet``, or — with
    neither — the one workbook in this folder that has a ``<workbook>.sheetops.db``."""
    if settings.store_url or sheet:
        return _store_url(settings, sheet)
    found = sorted(p.name for p in Path.cwd().glob("*.xlsx")
                   if p.with_suffix(".sheetops.db").is_file())
    if len(found) == 1:
        return settings.resolved_store_url(found[0])
    if found:
        raise _fail(f"several workbooks here have a store ({', '.join(found)}): choose "
                    "one with --sheet WORKBOOK.xlsx or SHEETOPS_STORE_URL")
    raise _fail("no store found: no workbook in this folder has a <workbook>.sheetops.db "
                "beside it; give --sheet WORKBOOK.xlsx (the one 'sheetops run' uses) or "
                "set SHEETOPS_STORE_URL")


@app.command()
def worker(queues: str = typer.Option(None, "--queues", "-Q", help="Comma-separated Celery "
                                      "queues to consume (default: the attempts queue "
                                      "SHEETOPS_CELERY_QUEUE and every registered "
                                      "pipeline's stage queues)."),
           concurrency: int = typer.Option(0, "--concurrency", "-c", help="Worker "
                                           "processes (default: SHEETOPS_WORKERS or the "
                                           "number of CPUs)."),
           hostname: str = typer.Option(None, "--hostname", "-n",
                                        help="This worker's name (default: celery's).")
           ) -> None:
    """Run a Celery worker for SHEETOPS_EXECUTOR=celery: it runs attempts and pipeline
    batches and records them in the store (SHEETOPS_BROKER_URL, SHEETOPS_STORE_URL)."""
    settings = _prepare()
    from sheetops.worker import serve

    try:
        code = serve(settings, queues.split(",") if queues else None,
                     concurrency or settings.workers, hostname)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def emulator(port: int = typer.Option(8085, help="Port on 127.0.0.1."),
             data: str = typer.Option(None, help="SQLite file that keeps the "
                                      "spreadsheets across restarts."),
             seed: str = typer.Option(None, help="An .xlsx workbook to load as a new "
                                      "spreadsheet; its URL is printed.")) -> None:
    """Serve the local Google Sheets API emulator for offline development."""
    _prepare()
    from sheetops.testing.emulator import serve

    if data:
        _check_emulator_data(data)
    if seed and not Path(seed).is_file():
        raise _fail(f"--seed {seed}: no such workbook; give the path of an .xlsx file")
    try:
        serve(port, data, seed)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot serve the emulator on 127.0.0.1:{port} ({exc.strerror or exc}): "
                    "choose another --port") from None


@app.command()
def migrate(sheet: str = SheetOption,
            store: str = typer.Option(None, "--store", help="The store URL (default: "
                                      "SHEETOPS_STORE_URL, else the SQLite file beside the "
                                      "workbook).")) -> None:
    """Create or upgrade the store's schema to this version of sheetops (a second run is a
    no-op; `run`, `run-job` and `demo` do it on start)."""
    settings = _prepare()
    try:
        from sheetops.store.db import Database, safe_url
        from sheetops.store.migrate import migrate as upgrade

        url = store or _store_url(settings, sheet)
        db = Database(url)
        try:
            report = upgrade(db)
        finally:
            db.dispose()
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    if report.changed:
        typer.echo(f"migrated the store at {safe_url(url)} from "
                   f"{report.before or 'no revision'} to revision {report.after}")
    else:
        typer.echo(f"the store at {safe_url(url)} is up to date (revision {report.after})")


@app.command()
def notebook(sheet: str = SheetOption,
             port: int = typer.Option(8888, help="Port on 127.0.0.1."),
             token: str = typer.Option(None, envvar="JUPYTER_TOKEN",
                                       help="The server's token (default: a random one)."),
             project: Path = typer.Option(Path("."), "--project",
                                          help="Project folder: its notebooks/ is opened "
                                               "and it is importable in kernels.")) -> None:
    """Start JupyterLab on loopback in notebooks/, with the same settings as run."""
    from sheetops.notebook.lab import start_lab

    _prepare()
    try:
        start_lab(project.resolve(), sheet=sheet, port=port, token=token)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None


def _pipeline_store(sheet: str | None):
    """The store URL of ``run`` for ``--sheet`` (pipelines keep their queues there)."""
    settings = get_settings()
    return _store_url(settings, sheet or settings.sheet or "")


def _pipeline_of(job: str, sheet: str | None, store_url: str):
    """The pipeline the job runs (Jobs tab) and a run context with the job's params,
    template and Stages settings; a job named like a pipeline works without a sheet."""
    from sheetops.pipelines.job import job_context
    from sheetops.pipelines.model import PIPELINES

    if job in PIPELINES and not (sheet or get_settings().sheet):
        return PIPELINES[job], None
    from sheetops.engine import read_config

    return job_context(read_config(_open(sheet)), job, store_url)


@app.command("dead-letters")
def dead_letters(job: str = typer.Argument(..., help="The pipeline job id."),
                 stage: str = typer.Option(None, help="Only this stage's."),
                 error_type: str = typer.Option(None, "--error-type",
                                                help="Only this error type, e.g. ValueError."),
                 since: str = typer.Option(None, help="Only newer ones: a duration (2h, 1d) "
                                           "or an ISO time (2026-05-01T08:00)."),
                 fmt: str = typer.Option("text", "--format", help="text, csv or json."),
                 limit: int = typer.Option(10_000, help="At most this many."),
                 sheet: str = SheetOption) -> None:
    """List a pipeline job's dead letters (records set aside), or export them."""
    from datetime import datetime

    from sheetops.config.parse import parse_duration
    from sheetops.pipelines import deadletters

    _prepare()
    if fmt not in deadletters.FORMATS:
        raise _fail(f"--format must be one of {', '.join(deadletters.FORMATS)}")
    since_ts = None
    if since:
        try:
            since_ts = time.time() - parse_duration(since)
        except ValueError:
            try:
                since_ts = datetime.fromisoformat(since).timestamp()
            except ValueError:
                raise _fail(f"--since {since!r} is neither a duration (2h, 1d) nor an "
                            "ISO time") from None
    try:
        from sheetops.store.queue_sql import Queues

        queues = Queues(_open_store(_pipeline_store(sheet)))
        found = deadletters.letters(queues, job, stage=stage, error_type=error_type,
                                    since=since_ts, limit=limit)
    except SheetopsError as exc:
        raise _fail(str(exc)) from None
    if found or fmt != "text":
        typer.echo(deadletters.render(found, fmt))
    if fmt == "text":
        typer.echo(f"{len(found)} dead letter(s) of {job}", err=True)


@app.command()
def replay(job: str = typer.Argument(..., help="The pipeline job id."),
           stage: str = typer.Option(None, help="Only this stage's dead letters."),
           key: list[str] = typer.Option(None, "--key", help="Only these record keys "
                                         "(repeat the option)."),
           edited: Path = typer.Option(None, "--edited", help="A JSON or JSON-lines file "
                                       "of fixed records: each replaces the dead letter "
                                       "with its key."),
           sheet: str = SheetOption) -> None:
    """Replay a pipeline job's dead letters (as they were, or edited) and run them
    through the rest of the pipeline now (exit 1 if any fail again)."""
    from sheetops.pipelines import deadletters

    _prepare()
    try:
        url = _pipeline_store(sheet)
        pipe, ctx = _pipeline_of(job, sheet, url)
        records = deadletters.read_edited(edited) if edited else None
        store = _open_store(url)
        try:
            done = deadletters.replay(store, pipe, job, stage=stage, keys=key or None,
                                      edited=records, run_context=ctx,
                                      overrides=ctx.request.stages if ctx is not None
                                      else None)
        finally:
            store.dispose()
    except (SheetopsError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if not done.requeued:
        typer.echo(f"no dead letters of {job} to replay")
        raise typer.Exit(0)
    typer.echo(f"replayed {done.requeued} record(s) of {job}: {done.through} went through, "
               f"{done.dead_again} dead again")
    raise typer.Exit(1 if done.dead_again else 0)


@app.command("automations")
def list_automations() -> None:
    """List the registered automations (what the Jobs tab's automation column accepts)."""
    _prepare()
    for name in registry.names():
        item = registry.get(name)
        typer.echo(f"{name:20} {item.description}  ({item.module})")


def main() -> None:
    try:
        app()
    except SheetopsError as exc:  # a last guard: never a traceback for a known problem
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
