"""A Celery worker writes a run's start on its own only when the attempt outlasts a
moment; a shorter attempt's start goes with its end (sheetops.executors.late_start)."""

from __future__ import annotations

import threading

from sheetops.executors.late_start import LateStart


def test_a_short_attempt_has_no_start_written_on_its_own() -> None:
    written = threading.Event()
    late = LateStart(delay_s=60)
    late.arm(written.set)
    assert late.disarm() is False  # the caller writes the start with the end
    assert not written.is_set()


def test_an_attempt_that_outlasts_the_delay_has_its_start_written_once() -> None:
    calls: list[int] = []
    written = threading.Event()
    late = LateStart(delay_s=0.01)

    def write() -> None:
        calls.append(1)
        written.set()

    late.arm(write)
    assert written.wait(30)
    assert late.disarm() is True
    assert calls == [1]


def test_a_start_that_could_not_be_written_is_left_to_the_end() -> None:
    tried = threading.Event()
    late = LateStart(delay_s=0.01)

    def fail() -> None:
        tried.set()
        raise OSError("store down")

    late.arm(fail)
    assert tried.wait(30)
    assert late.disarm() is False
