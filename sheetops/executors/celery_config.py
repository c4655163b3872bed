"""The Celery tier's reliability settings: explicit, checked at start, one app.

A broker loses or doubles work when a few settings are wrong, silently. So both the
scheduler (``SHEETOPS_EXECUTOR=celery``) and every ``sheetops worker`` build their
Celery app here, from :class:`~sheetops.settings.Settings`, and refuse to start — with
one sentence naming the setting — when one of them would lose or double work:

* ``acks_late`` (ack after the attempt, not before: a worker that dies loses nothing);
* ``reject_on_worker_lost`` (a task whose worker process was killed goes back to the
  queue instead of being acked as failed);
* the redelivery cap ``SHEETOPS_CELERY_MAX_DELIVERIES`` (1 or more): a task delivered
  more often than that without finishing (its worker dies every time) ends as a failed
  run instead of looping;
* prefetch multiplier 1 (a worker holds no task it is not running, so nothing waits
  unacked behind a long attempt);
* the pack size ``SHEETOPS_CELERY_PACK_MAX`` (1 to :data:`PACK_LIMIT`): a pack of attempts
  (one task) is checked like one attempt whose ``timeout_s`` is the pack's
  (:func:`pack_timeout_s`), so the broker never hands a pack still running to a second
  worker either;
* Redis's ``visibility_timeout`` (an unacked task is handed to another worker after it):
  longer than any attempt's ``timeout_s`` plus its retry delay (ETA), checked for each
  attempt before it is sent; RabbitMQ's ``consumer_timeout`` (the server closes a channel
  holding a task unacked longer) is checked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sheetops.errors import SheetopsError
from sheetops.settings import Settings

#: Seconds an attempt may overrun its ``timeout_s`` before the hard time limit kills it
#: (the soft limit, at ``timeout_s``, raises inside the attempt first).
HARD_LIMIT_GRACE_S = 5.0
#: Margin kept between the longest task (timeout, grace and ETA) and the broker's
#: redelivery timeout.
BROKER_MARGIN_S = 5.0
ATTEMPT_TASK = "sheetops.attempt"
#: Several first attempts in one task (:mod:`sheetops.executors.celery_worker`).
PACK_TASK = "sheetops.attempts"
#: The largest ``SHEETOPS_CELERY_PACK_MAX``: a pack's message stays a few kB per attempt,
#: and a worker killed mid-pack has at most this many attempts to send on again.
PACK_LIMIT = 256
#: Seconds a pack allows each of its attempts beyond its ``timeout_s``: counting,
#: recording and committing it (milliseconds; the rest is margin).
PACK_ALLOWANCE_S = 1.0
STAGE_TASK = "sheetops.stage"


class CeleryConfigError(SheetopsError):
    """A Celery setting that would lose or double work (or cannot be used at all)."""


@dataclass(frozen=True)
class CeleryConfig:
    """The checked settings of the Celery tier."""

    broker_url: str
    queue: str = "sheetops"
    max_deliveries: int = 3
    acks_late: bool = True
    reject_on_worker_lost: bool = True
    prefetch_multiplier: int = 1
    visibility_timeout_s: float = 3600.0
    consumer_timeout_s: float = 1800.0
    poll_interval_s: float = 0.1
    republish_after_s: float = 10.0
    pack_max: int = 16

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryConfig:
        """The settings' Celery tier, checked (:meth:`check`)."""
        config = cls(settings.broker_url, settings.celery_queue,
                     settings.celery_max_deliveries, settings.celery_acks_late,
                     settings.celery_reject_on_worker_lost,
                     settings.celery_prefetch_multiplier,
                     settings.broker_visibility_timeout_s, settings.broker_consumer_timeout_s,
                     settings.celery_poll_interval_s, settings.celery_republish_after_s,
                     settings.celery_pack_max)
        config.check()
        return config

    @property
    def transport(self) -> str:
        """``redis`` or ``amqp``."""
        scheme = urlsplit(self.broker_url).scheme.lower()
        return {"rediss": "redis", "pyamqp": "amqp", "amqps": "amqp"}.get(scheme, scheme)

    @property
    def redelivery_timeout_s(self) -> float:
        """Seconds a task may stay unacked before the broker hands it to someone else."""
        return (self.visibility_timeout_s if self.transport == "redis"
                else self.consumer_timeout_s)

    @property
    def restore_interval_s(self) -> float:
        """Redis: how often kombu looks for unacked tasks past the visibility timeout (a
        twentieth of it, between 1 and 10 s)."""
        return min(10.0, max(1.0, self.visibility_timeout_s / 20))

    def lost_after_s(self, timeout_s: float) -> float:
        """How long a copy of an attempt marked sent may go with no worker taking it up
        before the leader takes it for lost by the broker (Redis restarted without
        persistence, a queue purged or deleted) and publishes another: the broker's
        redelivery timeout (a copy a dead worker had reserved comes back after it, and
        Redis's restore sweep), plus the longest attempt a worker may run before taking
        up a copy it reserved (``timeout_s`` and the hard-limit grace), plus the margin.
        A copy only waiting longer in a backlog gets a redundant copy, which costs a
        message: the first copy to reach the store runs, the other is dropped."""
        sweep = self.restore_interval_s if self.transport == "redis" else 0.0
        return (self.redelivery_timeout_s + sweep + timeout_s + HARD_LIMIT_GRACE_S
                + BROKER_MARGIN_S)

    def check(self) -> None:
        """Raise :class:`CeleryConfigError` for the first setting that would lose or
        double work."""
        if not self.broker_url:
            raise CeleryConfigError("SHEETOPS_EXECUTOR=celery needs SHEETOPS_BROKER_URL "
                                    "(redis://host:6379/0 or amqp://user:pass@host:5672//)")
        if self.transport not in ("redis", "amqp"):
            raise CeleryConfigError(f"SHEETOPS_BROKER_URL must be a redis:// or amqp:// URL, "
                                    f"not {self.transport or 'one without a scheme'}://")
        if not self.acks_late:
            raise CeleryConfigError("SHEETOPS_CELERY_ACKS_LATE=false would lose work: a "
                                    "task is acked before it runs, so a worker that dies "
                                    "mid-attempt loses it")
        if not self.reject_on_worker_lost:
            raise CeleryConfigError("SHEETOPS_CELERY_REJECT_ON_WORKER_LOST=false would lose "
                                    "work: a task whose worker process is killed is acked "
                                    "as failed instead of being delivered again")
        if self.max_deliveries < 1:
            raise CeleryConfigError(f"SHEETOPS_CELERY_MAX_DELIVERIES={self.max_deliveries} "
                                    "must be 1 or more: it caps how often a task whose "
                                    "worker dies is delivered again before its run fails")
        if self.prefetch_multiplier != 1:
            raise CeleryConfigError(
                f"SHEETOPS_CELERY_PREFETCH_MULTIPLIER={self.prefetch_multiplier} would "
                "double work: a prefetched task waits unacked behind a long attempt and "
                "the broker hands it to a second worker; use 1")
        if self.redelivery_timeout_s <= HARD_LIMIT_GRACE_S + BROKER_MARGIN_S:
            name = ("SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S" if self.transport == "redis"
                    else "SHEETOPS_BROKER_CONSUMER_TIMEOUT_S")
            raise CeleryConfigError(f"{name}={self.redelivery_timeout_s:g} is too short: "
                                    "every attempt would be delivered to a second worker "
                                    "while it runs")
        if not self.queue or any(c in self.queue for c in " ,"):
            raise CeleryConfigError(f"SHEETOPS_CELERY_QUEUE={self.queue!r} must be one "
                                    "queue name without spaces or commas")
        if self.republish_after_s <= 0:
            raise CeleryConfigError(f"SHEETOPS_CELERY_REPUBLISH_AFTER_S="
                                    f"{self.republish_after_s:g} must be more than 0: it is "
                                    "how long a run waits with its task unsent before it "
                                    "is sent again")
        if not 1 <= self.pack_max <= PACK_LIMIT:
            raise CeleryConfigError(f"SHEETOPS_CELERY_PACK_MAX={self.pack_max} must be "
                                    f"between 1 and {PACK_LIMIT}: it is how many first "
                                    "attempts one task carries at most (1: one each)")

    def task_problem(self, timeout_s: float, eta_s: float = 0.0) -> str:
        """Why an attempt with this ``timeout_s``, sent ``eta_s`` seconds ahead, cannot
        be sent safely (``""`` when it can): the broker would hand it to a second
        worker while the first still holds it."""
        longest = max(0.0, eta_s) + timeout_s + HARD_LIMIT_GRACE_S + BROKER_MARGIN_S
        if longest < self.redelivery_timeout_s:
            return ""
        if self.transport == "redis":
            name, what = "SHEETOPS_BROKER_VISIBILITY_TIMEOUT_S", "Redis visibility timeout"
        else:
            name, what = "SHEETOPS_BROKER_CONSUMER_TIMEOUT_S", "RabbitMQ consumer_timeout"
        return (f"timeout_s {timeout_s:g} plus a retry delay of {eta_s:g}s reaches the "
                f"{what} ({name}={self.redelivery_timeout_s:g}), so the broker would "
                "deliver the attempt to a second worker; raise the setting or lower "
                "timeout_s/backoff_max_s")

    def celery_settings(self) -> dict[str, Any]:
        """The Celery app configuration these settings mean."""
        conf: dict[str, Any] = {
            "broker_url": self.broker_url,
            "task_acks_late": self.acks_late,
            "task_reject_on_worker_lost": self.reject_on_worker_lost,
            # a hard time limit (the attempt ignored its soft limit) is not acked: the
            # task comes back and counts against the redelivery cap
            "task_acks_on_failure_or_timeout": False,
            "worker_prefetch_multiplier": self.prefetch_multiplier,
            "worker_cancel_long_running_tasks_on_connection_loss": True,
            "task_default_queue": self.queue,
            "task_ignore_result": True,
            "task_serializer": "json",
            "accept_content": ["json"],
            "broker_connection_retry_on_startup": True,
            "worker_hijack_root_logger": False,
            "worker_send_task_events": False,
            "task_send_sent_event": False,
            "broker_transport_options": {},
        }
        if self.transport == "redis":
            # kombu looks for tasks whose worker died (unacked past the visibility
            # timeout) every interval × throttle seconds: 100 s by default; here a
            # twentieth of the timeout, between 1 and 10 s
            conf["broker_transport_options"] = {
                "visibility_timeout": self.visibility_timeout_s,
                "unacked_restore_interval": self.restore_interval_s,
                "unacked_restore_throttle": 1}
        return conf


def pack_timeout_s(timeouts: list[float]) -> float:
    """The ``timeout_s`` of a pack of attempts with these ``timeouts``, run one after the
    other: their sum plus :data:`PACK_ALLOWANCE_S` each. Its hard time limit is this plus
    :data:`HARD_LIMIT_GRACE_S`, and :meth:`CeleryConfig.task_problem` checks it as one
    attempt's."""
    return sum(timeouts) + PACK_ALLOWANCE_S * len(timeouts)


def stage_queue(queue: str, pipeline: str, stage: str) -> str:
    """The Celery queue of one pipeline stage (``<queue>.stage.<pipeline>.<stage>``, beside
    the attempts queue ``queue``), so each stage scales on its own workers."""
    return f"{queue}.stage.{pipeline}.{stage}"


def make_app(config: CeleryConfig) -> Any:
    """A Celery app configured by ``config`` (tasks are registered by
    :mod:`sheetops.executors.celery_worker`)."""
    try:
        from celery import Celery
    except ImportError:
        raise CeleryConfigError("SHEETOPS_EXECUTOR=celery needs Celery: pip install "
                                "'sheetops[distributed]'") from None
    app = Celery("sheetops", set_as_current=False)
    app.conf.update(config.celery_settings())
    return app
