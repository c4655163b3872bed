"""``sheetops worker``: a Celery worker process of the distributed tier.

It wires the two halves together — the attempt task
(:mod:`sheetops.executors.celery_worker`) and the pipelines' stage task
(:mod:`sheetops.pipelines.celery`) — on one app built from the checked settings
(:mod:`sheetops.executors.celery_config`), and consumes the attempts queue and every
registered pipeline's stage queues unless ``--queues`` names others.
"""

from __future__ import annotations

import logging

from sheetops import wire
from sheetops.executors.celery_config import CeleryConfig, CeleryConfigError
from sheetops.executors.celery_worker import build_app
from sheetops.pipelines.celery import StageTasks, stage_queues
from sheetops.pipelines.model import PIPELINES
from sheetops.settings import Settings

log = logging.getLogger("sheetops.celery")


def serve(settings: Settings, queues: list[str] | None = None, concurrency: int = 0,
          hostname: str | None = None) -> int:
    """Run a Celery worker until it is stopped; returns its exit code. The settings are
    checked first (:class:`CeleryConfigError`, one sentence)."""
    config = CeleryConfig.from_settings(settings)
    if not settings.store_url:
        raise CeleryConfigError("a worker records runs in the store: set "
                                "SHEETOPS_STORE_URL (the scheduler's store, PostgreSQL)")
    names = [q.strip() for q in queues or [] if q.strip()] or [
        config.queue, *stage_queues(config.queue, PIPELINES)]
    app, worker = build_app(config)
    StageTasks(app, worker, served=names).install()
    argv = ["worker", "--pool", "prefork", "--queues", ",".join(names),
            "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
            "--without-heartbeat"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if hostname:
        argv += ["--hostname", hostname]
    log.info("sheetops worker on %s, queues %s", wire.store_ref(config.broker_url),
             ", ".join(names))
    try:
        app.worker_main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
