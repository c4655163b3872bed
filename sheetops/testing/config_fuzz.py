"""Hypothesis strategies for whole config workbooks, and the checks every one must pass.

Used by the CI-sized fuzz test and by ``bench/bench_fuzz_config.py`` for longer runs:
wrong types, unicode, huge and deeply nested cells, formulas and error values,
empty/duplicated/missing headers, up to thousands of rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from sheetops import tabs
from sheetops.config import parse_config
from sheetops.config.cells import ERROR_VALUES
from sheetops.config.model import Snapshot

AUTOMATIONS = frozenset({"heartbeat", "t_probe"})
_JOB_COLUMNS = [c.name for c in tabs.JOB_COLUMNS]


def _nested(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


_hostile = st.one_of(
    st.sampled_from(sorted(ERROR_VALUES)),
    st.sampled_from(["=1/0", "=1=2", "=HYPERLINK(\"x\")", "Europe", "NaN", "Infinity",
                     '{"x": NaN}', '{"a": 1, "a": 2}', "[1]", "every fortnight", "-1",
                     "1e308", "9" * 5000, "Europe/" + "x" * 300]),
    st.integers(min_value=1, max_value=1200).map(_nested),
    st.text(max_size=40),
    st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.none(),
)
_plausible = {
    "job": st.from_regex(r"\A[a-z][a-z0-9_-]{0,12}\Z"),
    "automation": st.sampled_from(sorted(AUTOMATIONS)),
    "schedule": st.sampled_from(["every 10m", "manual", "0 * * * *", "@daily"]),
    "timezone": st.sampled_from(["", "UTC", "Europe/Berlin"]),
    "enabled": st.sampled_from(["TRUE", "FALSE", ""]),
    "params": st.sampled_from(["", "{}", '{"n": 1}']),
    "max_attempts": st.sampled_from(["", "1", "3"]),
}


def _cell(column: str) -> st.SearchStrategy[Any]:
    plausible = _plausible.get(column, st.just(""))
    return st.one_of(plausible, plausible, plausible, _hostile)


@st.composite
def config_workbooks(draw: st.DrawFn, max_rows: int = 60) -> dict[str, list[list[Any]]]:
    """The rows of every config tab (header first), some of them broken."""
    header = draw(st.lists(st.sampled_from([*_JOB_COLUMNS, "", "Colour", "JOB"]),
                           min_size=0, max_size=len(_JOB_COLUMNS) + 3))
    if draw(st.booleans()):  # mostly a usable header, in any order
        header = [*dict.fromkeys(["job", "automation", "schedule", *header])]
    rows = draw(st.lists(st.tuples(*[_cell(c.lower()) for c in header]).map(list),
                         max_size=max_rows))
    settings = draw(st.lists(st.tuples(st.sampled_from([*tabs.SETTING_KEYS, "bogus"]),
                                       st.one_of(st.sampled_from(["1", "30", "5"]), _hostile)
                                       ).map(list), max_size=6))
    return {tabs.JOBS: [header, *rows], tabs.SETTINGS: [["key", "value"], *settings]}


def as_text(rows_by_tab: dict[str, list[list[Any]]]) -> dict[str, list[list[str]]]:
    """What a sheet backend hands the parser: every cell as its display string."""
    from sheetops.connectors.sheets.workbook import display

    return {tab: [[display(v) for v in row] for row in rows] for tab, rows in
            rows_by_tab.items()}


def check_parse(rows_by_tab: dict[str, Sequence[Sequence[str]]]) -> Snapshot:
    """Parse and check: no exception, every error at a real cell, and every job whose
    row has no error is scheduled (and none whose row has one)."""
    snapshot = parse_config(rows_by_tab, AUTOMATIONS)
    jobs_rows = rows_by_tab.get(tabs.JOBS, [])
    for problem in snapshot.problems:
        m = re.fullmatch(r"([A-Z]+)(\d+)", problem.cell)
        assert m, problem
        if problem.tab == tabs.JOBS:
            assert int(m.group(2)) <= max(1, len(jobs_rows)), problem
    error_rows = {int(re.sub(r"[A-Z]", "", p.cell)) for p in snapshot.errors
                  if p.tab == tabs.JOBS}
    tab_broken = any(p.tab == tabs.JOBS and p.cell == "A1" and p.is_error
                     for p in snapshot.problems)
    for job in snapshot.jobs.values():
        assert job.row not in error_rows, (job, error_rows)
    if not tab_broken:
        scheduled_rows = {job.row for job in snapshot.jobs.values()}
        for number, values in enumerate(jobs_rows[1:], start=2):
            if any(str(v).strip() for v in values) and number not in error_rows:
                assert number in scheduled_rows, (number, values, snapshot.problems)
    return snapshot
