"""The schedule column: parsing, standard cron semantics, daylight saving, catch-up."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sheetops.config.schedule import (
    ScheduleError,
    fire_times_between,
    next_fire_times,
    parse_schedule,
)

BERLIN = ZoneInfo("Europe/Berlin")


def fires_on(schedule: str, tz, day_start: datetime, day_end: datetime) -> list[datetime]:
    """Every fire time of ``schedule`` in ``[day_start, day_end)``."""
    trigger = parse_schedule(schedule).trigger(tz)
    found = fire_times_between(trigger, day_start - timedelta(microseconds=1),
                               day_end - timedelta(microseconds=1), 10_000)
    return found


@pytest.mark.parametrize(("text", "kind", "seconds"), [
    ("every 30s", "interval", 30), ("every 10m", "interval", 600),
    ("every 2h", "interval", 7200), ("every 1d", "interval", 86400),
    ("Every  5 minutes", "interval", 300), ("manual", "manual", 0), ("MANUAL", "manual", 0),
    ("0 6 * * 1-5", "cron", 0), ("@hourly", "cron", 0), ("@daily", "cron", 0),
])
def test_schedule_kinds(text, kind, seconds):
    schedule = parse_schedule(text)
    assert schedule.kind == kind
    assert schedule.interval_s == seconds


@pytest.mark.parametrize(("text", "advice"), [
    ("", "schedule is empty"),
    ("every 0s", "longer than zero"),
    ("every ten minutes", "is not an interval"),
    ("every 5 fortnights", "is not an interval"),
    ("@often", "not a known shortcut"),
    ("0 6 * *", "has 4 fields"),
    ("0 6 * * * *", "has 6 fields"),
    ("61 * * * *", "not a valid cron expression"),
    ("0 25 * * *", "not a valid cron expression"),
    ("0 6 * * 8", "out of range"),
    ("0 6 * * 5-1", "runs backwards"),
    ("0 6 * * funday", "not a day of week"),
])
def test_bad_schedules_say_what_to_write(text, advice):
    with pytest.raises(ScheduleError, match=advice):
        parse_schedule(text)


def test_aliases_are_their_cron_expressions():
    monday = datetime(2025, 6, 2, 10, 17, tzinfo=UTC)  # a Monday
    hourly = next_fire_times(parse_schedule("@hourly").trigger(UTC), monday, 2)
    assert hourly == [datetime(2025, 6, 2, 11, tzinfo=UTC), datetime(2025, 6, 2, 12, tzinfo=UTC)]
    daily = next_fire_times(parse_schedule("@daily").trigger(UTC), monday, 1)
    assert daily == [datetime(2025, 6, 3, tzinfo=UTC)]
    weekly = next_fire_times(parse_schedule("@weekly").trigger(UTC), monday, 1)
    assert weekly == [datetime(2025, 6, 8, tzinfo=UTC)]  # Sunday midnight


@pytest.mark.parametrize(("dow", "expected_weekday"), [
    ("0", 6), ("7", 6), ("sun", 6), ("1", 0), ("mon", 0), ("6", 5),
])
def test_day_of_week_uses_standard_cron_numbers(dow, expected_weekday):
    """0 and 7 are Sunday, 1 is Monday (APScheduler alone would read 0 as Monday)."""
    start = datetime(2025, 6, 2, tzinfo=UTC)  # Monday
    fires = next_fire_times(parse_schedule(f"0 6 * * {dow}").trigger(UTC), start, 3)
    assert [f.weekday() for f in fires] == [expected_weekday] * 3


def test_weekday_range_and_step():
    start = datetime(2025, 6, 1, tzinfo=UTC)  # Sunday
    workdays = next_fire_times(parse_schedule("0 9 * * 1-5").trigger(UTC), start, 10)
    assert sorted({f.weekday() for f in workdays}) == [0, 1, 2, 3, 4]
    every_other = next_fire_times(parse_schedule("0 9 * * */2").trigger(UTC), start, 8)
    assert sorted({f.weekday() for f in every_other}) == [1, 3, 5, 6]  # sun, tue, thu, sat
    weekend = next_fire_times(parse_schedule("0 9 * * 6-7").trigger(UTC), start, 4)
    assert sorted({f.weekday() for f in weekend}) == [5, 6]


def test_intervals_are_anchored_so_restarts_keep_the_same_instants():
    trigger = parse_schedule("every 10m").trigger(UTC)
    now = datetime(2025, 6, 2, 10, 17, 42, tzinfo=UTC)
    assert next_fire_times(trigger, now, 3) == [
        datetime(2025, 6, 2, 10, 20, tzinfo=UTC), datetime(2025, 6, 2, 10, 30, tzinfo=UTC),
        datetime(2025, 6, 2, 10, 40, tzinfo=UTC)]


def test_describe_says_the_schedule_in_words():
    assert parse_schedule("every 10m").describe() == "every 10 minutes"
    assert parse_schedule("every 1h").describe() == "every hour"
    assert parse_schedule("every 45s").describe() == "every 45 seconds"
    assert "manual" in parse_schedule("manual").describe()
    words = parse_schedule("0 7 * * 1-5").describe()
    assert "07:00" in words and "Monday" in words and "Friday" in words


# -- daylight saving (Europe/Berlin: 2025-03-30 02:00→03:00, 2025-10-26 03:00→02:00) ---------

SPRING = (datetime(2025, 3, 30, tzinfo=BERLIN), datetime(2025, 3, 31, tzinfo=BERLIN))
FALL = (datetime(2025, 10, 26, tzinfo=BERLIN), datetime(2025, 10, 27, tzinfo=BERLIN))


def test_daily_0230_runs_once_on_the_spring_forward_day():
    """02:30 does not exist that night: the run moves past the gap, it is not skipped."""
    fires = fires_on("30 2 * * *", BERLIN, *SPRING)
    assert len(fires) == 1
    moment = fires[0].astimezone(UTC)
    gap_end = datetime(2025, 3, 30, 1, 0, tzinfo=UTC)  # 03:00 CEST
    assert gap_end <= moment <= gap_end + timedelta(minutes=30)
    # the days around it are untouched
    assert [f.astimezone(BERLIN).strftime("%H:%M") for f in fires_on(
        "30 2 * * *", BERLIN, SPRING[0] - timedelta(days=1), SPRING[0])] == ["02:30"]
    after = fires_on("30 2 * * *", BERLIN, SPRING[1], SPRING[1] + timedelta(days=1))
    assert [f.astimezone(BERLIN).isoformat() for f in after] == ["2025-03-31T02:30:00+02:00"]


def test_daily_0230_runs_once_on_the_fall_back_day():
    """02:30 happens twice that night; a job pinned to that hour runs once (first pass)."""
    fires = fires_on("30 2 * * *", BERLIN, *FALL)
    assert [f.astimezone(UTC) for f in fires] == [datetime(2025, 10, 26, 0, 30, tzinfo=UTC)]
    after = fires_on("30 2 * * *", BERLIN, FALL[1], FALL[1] + timedelta(days=1))
    assert [f.astimezone(UTC) for f in after] == [datetime(2025, 10, 27, 1, 30, tzinfo=UTC)]


@pytest.mark.parametrize(("schedule", "day", "count"), [
    ("0 * * * *", SPRING, 23), ("0 * * * *", FALL, 25),
    ("every 1h", SPRING, 23), ("every 1h", FALL, 25),
])
def test_hourly_job_runs_every_real_hour_on_dst_days(schedule, day, count):
    """A 23-hour day has 23 hourly runs and a 25-hour day 25: an hour apart, none twice."""
    fires = fires_on(schedule, BERLIN, *day)
    assert len(fires) == count
    instants = [f.astimezone(UTC) for f in fires]
    assert len(set(instants)) == count
    assert {b - a for a, b in itertools.pairwise(instants)} == {timedelta(hours=1)}


def test_next_fire_times_through_the_fall_back_night_neither_skip_nor_double():
    trigger = parse_schedule("30 2 * * *").trigger(BERLIN)
    fires = next_fire_times(trigger, datetime(2025, 10, 25, 12, tzinfo=BERLIN), 3)
    assert [f.astimezone(UTC).date().isoformat() for f in fires] == [
        "2025-10-26", "2025-10-27", "2025-10-28"]


# -- catch-up ----------------------------------------------------------------------------

def test_fire_times_between_is_exclusive_of_the_last_fire_and_inclusive_of_now():
    trigger = parse_schedule("every 1h").trigger(UTC)
    last = datetime(2025, 6, 2, 5, tzinfo=UTC)
    now = datetime(2025, 6, 2, 10, tzinfo=UTC)
    missed = fire_times_between(trigger, last, now, 100)
    assert [m.hour for m in missed] == [6, 7, 8, 9, 10]


def test_fire_times_between_keeps_the_latest_when_limited():
    trigger = parse_schedule("0 * * * *").trigger(UTC)
    last = datetime(2025, 6, 2, 5, 0, tzinfo=UTC)
    now = datetime(2025, 6, 2, 10, 30, tzinfo=UTC)
    assert [m.hour for m in fire_times_between(trigger, last, now, 1)] == [10]
    assert [m.hour for m in fire_times_between(trigger, last, now, 3)] == [8, 9, 10]
    assert fire_times_between(trigger, now, now + timedelta(minutes=10), 5) == []


def test_catch_up_over_the_fall_back_night_counts_the_pinned_job_once():
    trigger = parse_schedule("30 2 * * *").trigger(BERLIN)
    last = datetime(2025, 10, 25, 2, 30, tzinfo=BERLIN)
    now = datetime(2025, 10, 27, 12, tzinfo=BERLIN)
    missed = fire_times_between(trigger, last, now, 100)
    assert [m.astimezone(UTC) for m in missed] == [
        datetime(2025, 10, 26, 0, 30, tzinfo=UTC), datetime(2025, 10, 27, 1, 30, tzinfo=UTC)]


# -- absurd intervals and spring-forward days (found in review) ---------------------------

@pytest.mark.parametrize("text", ["every 999999999999999s", "every 99999999d"])
def test_an_absurd_interval_is_a_schedule_problem(text):
    with pytest.raises(ScheduleError, match="too long"):
        parse_schedule(text)


def test_the_spring_forward_rule_in_the_tab_reference_is_what_happens():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from sheetops.config.schedule import next_fire_times

    berlin = ZoneInfo("Europe/Berlin")
    trigger = parse_schedule("30 2 * * *").trigger(berlin)
    first = next_fire_times(trigger, datetime(2026, 3, 28, 12, tzinfo=UTC), 1)[0]
    assert first.astimezone(UTC).astimezone(berlin).strftime("%Y-%m-%d %H:%M") == (
        "2026-03-29 03:30")
    readme = Path(__file__).resolve().parents[1] / "config_sheets" / "README.md"
    text = " ".join(readme.read_text().split())
    assert "(02:30 in Europe/Berlin, where clocks go from 02:00 to 03:00, runs at 03:30)" in text


def test_status_shows_a_spring_forward_run_at_the_wall_clock_time_it_happens():
    """02:30 does not exist in Berlin on 2026-03-29: the run happens at 03:30 CEST, and the
    Status tab must say so, not '02:30 CET' (a time no clock showed that day)."""
    from datetime import UTC, datetime

    from sheetops.config.model import JobSpec
    from sheetops.scheduler import Scheduler
    from sheetops.status import fmt_dt

    spec = JobSpec("nightly", "heartbeat", "30 2 * * *", "Europe/Berlin")
    times = Scheduler(None).next_run_times(spec, 2, now=datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert [fmt_dt(t) for t in times] == ["2026-03-29 03:30:00 CEST",
                                          "2026-03-30 02:30:00 CEST"]
