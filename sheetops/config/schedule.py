"""The Jobs tab's ``schedule`` column: parse it into an APScheduler trigger, say it in
words, and list the next fire times.

Standard cron semantics where APScheduler 3 differs: day-of-week ``0`` (and ``7``) is
Sunday, and on the autumn daylight-saving day a job pinned to specific hours runs once,
not twice, in the repeated hour (like Vixie cron). A spring-forward gap moves the run
forward by the length of the gap instead of skipping it (02:30 in a 02:00→03:00 gap
runs at 03:30).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC as _UTC
from datetime import datetime, timedelta, tzinfo
from functools import lru_cache

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

MANUAL = "manual"
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_INTERVAL = re.compile(r"^every\s+(\d+)\s*(s|sec|secs|second|seconds|m|min|mins|minute|minutes"
                       r"|h|hr|hrs|hour|hours|d|day|days)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Interval schedules are anchored here so "every 10m" fires at :00, :10, … and the
# same instants survive a restart (which makes catch-up exact).
INTERVAL_ANCHOR = datetime(2000, 1, 3)
# The longest interval: longer ones overflow date arithmetic (year 9999) at start-up.
MAX_INTERVAL_S = 3650 * 86400


class ScheduleError(ValueError):
    """The schedule text cannot be understood; the message says what to write."""


class DstSafeCronTrigger(CronTrigger):
    """A cron trigger that fires once in the repeated hour of a DST change when the
    expression names specific hours."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pinned_hours = "*" not in str(self.fields[5])

    def get_next_fire_time(self, previous_fire_time, now):
        fire = super().get_next_fire_time(previous_fire_time, now)
        while self._pinned_hours and fire is not None and _second_pass(fire):
            fire = super().get_next_fire_time(fire, _after(fire, timedelta(seconds=1)))
        return fire

    def __getstate__(self):
        state = super().__getstate__()
        state["pinned_hours"] = self._pinned_hours
        return state

    def __setstate__(self, state):
        self._pinned_hours = state.pop("pinned_hours", True)
        super().__setstate__(state)


def _after(moment: datetime, delta: timedelta = timedelta(microseconds=1)) -> datetime:
    """``moment + delta`` in absolute time (wall-clock arithmetic loses the DST fold)."""
    return (moment.astimezone(_UTC) + delta).astimezone(moment.tzinfo)


def _second_pass(moment: datetime) -> bool:
    """True when ``moment`` is the second occurrence of a wall time repeated by DST."""
    first, second = moment.replace(fold=0), moment.replace(fold=1)
    return (first.utcoffset() != second.utcoffset()
            and moment.utcoffset() == second.utcoffset())


def _expand_dow(field: str) -> str:
    """Rewrite a standard-cron day-of-week field (0/7 = Sunday) as day names."""
    if field == "*":
        return field
    days: set[int] = set()
    for token in field.lower().split(","):
        base, _, step_text = token.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ScheduleError(f"day-of-week step must be at least 1 in {field!r}")
        if base == "*":
            lo, hi = 0, 6
        else:
            lo_text, _, hi_text = base.partition("-")
            lo = _dow_number(lo_text)
            hi = _dow_number(hi_text) if hi_text else (6 if step_text else lo)
            if hi_text and hi == 0 and hi_text.strip() == "7":
                hi = 7
        if lo > hi:
            raise ScheduleError(f"day-of-week range {base!r} runs backwards")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW_NAMES[d] for d in sorted(days))


def _dow_number(text: str) -> int:
    text = text.strip()
    if text.isdigit():
        n = int(text)
        if n > 7:
            raise ScheduleError(f"day of week {n} is out of range 0-7 (0 and 7 = Sunday)")
        return n % 7 if n != 7 else 0
    if text[:3] in _DOW_NAMES:
        return _DOW_NAMES.index(text[:3])
    raise ScheduleError(f"{text!r} is not a day of week (0-7 or sun..sat)")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: its text, its kind and (unless manual) a trigger factory."""

    text: str
    kind: str  # "cron", "interval" or "manual"
    cron: str = ""
    interval_s: int = 0

    @property
    def is_manual(self) -> bool:
        return self.kind == MANUAL

    def trigger(self, tz: tzinfo) -> BaseTrigger | None:
        """The APScheduler trigger in ``tz``. Triggers hold no state, so jobs with the
        same schedule and timezone share one (building cron triggers is costly)."""
        return _trigger(self, tz)

    def _build(self, tz: tzinfo) -> BaseTrigger | None:
        if self.kind == "cron":
            f = self.cron.split()
            return DstSafeCronTrigger(minute=f[0], hour=f[1], day=f[2], month=f[3],
                                      day_of_week=_expand_dow(f[4]), timezone=tz)
        if self.kind == "interval":
            return IntervalTrigger(seconds=self.interval_s, timezone=tz,
                                   start_date=INTERVAL_ANCHOR.replace(tzinfo=tz))
        return None

    def describe(self) -> str:
        """The schedule in words, e.g. "At 07:00 AM, Monday through Friday"."""
        if self.kind == MANUAL:
            return "manual only (Run now / run-job)"
        if self.kind == "interval":
            return "every " + _say_seconds(self.interval_s)
        try:
            from cron_descriptor import Options, get_description

            options = Options()
            options.use_24hour_time_format = True
            return get_description(self.cron, options)
        except Exception:
            return self.cron


@lru_cache(maxsize=4096)
def _trigger(schedule: Schedule, tz: tzinfo) -> BaseTrigger | None:
    return schedule._build(tz)


def _say_seconds(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}" if n != 1 else unit
    return f"{seconds} seconds" if seconds != 1 else "second"


@lru_cache(maxsize=65536)
def parse_schedule(text: str) -> Schedule:
    """Parse the schedule column (raises :class:`ScheduleError` with advice)."""
    raw = " ".join(str(text or "").strip().split())
    lowered = raw.lower()
    if not lowered:
        raise ScheduleError("schedule is empty; write a cron expression such as "
                            "'0 6 * * *', 'every 10m', '@daily' or 'manual'")
    if lowered == MANUAL:
        return Schedule(raw, MANUAL)
    if m := _INTERVAL.match(lowered):
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)[0]]
        if seconds <= 0:
            raise ScheduleError(f"{raw!r}: the interval must be longer than zero")
        if seconds > MAX_INTERVAL_S:
            raise ScheduleError(f"{raw!r} is too long; an interval can be at most 3650 days "
                                "(for a yearly run write '@yearly')")
        return Schedule(raw, "interval", interval_s=seconds)
    if lowered.startswith("every"):
        raise ScheduleError(f"{raw!r} is not an interval; write e.g. 'every 30s', "
                            "'every 10m', 'every 2h' or 'every 1d'")
    cron = ALIASES.get(lowered, lowered if not lowered.startswith("@") else "")
    if not cron:
        raise ScheduleError(f"{raw!r} is not a known shortcut; use @hourly, @daily, "
                            "@weekly, @monthly or @yearly")
    fields = cron.split()
    if len(fields) != 5:
        raise ScheduleError(f"{raw!r} has {len(fields)} fields; a cron schedule has 5 "
                            "(minute hour day-of-month month day-of-week), e.g. '0 6 * * 1-5'")
    schedule = Schedule(raw, "cron", cron=cron)
    try:
        schedule._build(_UTC)
    except ScheduleError:
        raise
    except ValueError as exc:
        raise ScheduleError(f"{raw!r} is not a valid cron expression: {exc}") from None
    return schedule


def next_fire_times(trigger: BaseTrigger, now: datetime, count: int = 3) -> list[datetime]:
    """The next ``count`` fire times after ``now`` (fewer if the trigger ends)."""
    times: list[datetime] = []
    previous = None
    cursor = now
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None:
            break
        times.append(fire)
        previous, cursor = fire, _after(fire)
    return times


def fire_times_between(trigger: BaseTrigger, after: datetime, until: datetime,
                       limit: int) -> list[datetime]:
    """Fire times in ``(after, until]``, at most ``limit`` of them (the latest ones)."""
    times: list[datetime] = []
    previous = after
    cursor = _after(after)
    while True:
        fire = trigger.get_next_fire_time(previous, cursor)
        if fire is None or fire > until:
            break
        times.append(fire)
        if len(times) > limit:
            times.pop(0)
        previous, cursor = fire, _after(fire)
    return times

