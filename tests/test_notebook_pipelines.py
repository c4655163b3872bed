"""Pipelines in the notebook API, against a real workbook, a real SQLite store and a
loopback HTTP sink: one stage dry-run on sample records (the sink's writes captured),
a real run with per-stage figures, dead letters as a DataFrame, edit and replay."""

from __future__ import annotations

import pytest

from sheetops.notebook import dead_letters, dry_run, open_config, replay, run, stage_figures
from sheetops.pipelines import PIPELINES, pipeline
from sheetops.registry import registry

CONTACTS = [{"id": i, "email": f"user{i}@example.com", "score": i} for i in range(1, 9)]
CONTACTS[2]["email"] = "not-an-address"   # id 3
CONTACTS[5]["score"] = "high"             # id 6


def _define(url: str):
    """The pipeline a notebook cell would define: validate → deliver (HTTP POST)."""
    import requests

    pipe = pipeline("nb_contacts", source=lambda: list(CONTACTS), key="id")

    @pipe.stage(batch_size=4, retries=0)
    def validate(records):
        for record in records:
            if "@" not in str(record.get("email")):
                raise ValueError(f"contact {record['id']}: email is not valid")
            if not isinstance(record.get("score"), int):
                raise TypeError(f"contact {record['id']}: score must be a whole number")
        return [{**r, "score": r["score"] * 10} for r in records]

    @pipe.sink(batch_size=4, idempotent=True)
    def deliver(records, ctx):
        for record in records:
            requests.post(url, json=record, timeout=5).raise_for_status()
            yield record

    return pipe


@pytest.fixture
def contacts_pipeline(sheetops_http):
    sheetops_http.json("/deliver", {}, method="POST")
    yield _define(sheetops_http.url("/deliver"))
    PIPELINES.pop("nb_contacts", None)
    registry._by_name.pop("nb_contacts", None)


def test_a_stage_dry_run_hands_on_good_records_and_sets_bad_ones_aside(contacts_pipeline,
                                                                       sheetops_http):
    checked = dry_run(contacts_pipeline, stage="validate", records=CONTACTS)
    assert not checked.ok
    assert list(checked.records_out["key"]) == ["1", "2", "4", "5", "7", "8"]
    assert list(checked.records_out["score"]) == [10, 20, 40, 50, 70, 80]
    letters = checked.dead_letters.set_index("key")
    assert sorted(letters.index) == ["3", "6"]
    assert letters.loc["3", "error_type"] == "ValueError"
    assert "email is not valid" in letters.loc["3", "message"]
    assert letters.loc["6", "record"]["score"] == "high"
    assert checked.effects.empty and sheetops_http.requests == []
    assert "Dead letters" in checked._repr_html_()


def test_a_sink_dry_run_captures_its_writes_and_sends_none(contacts_pipeline, sheetops_http):
    import pandas as pd

    sample = pd.DataFrame(CONTACTS[:2])  # records may come as a DataFrame
    delivered = dry_run(contacts_pipeline, stage="deliver", records=sample)
    assert delivered.ok and list(delivered.records_out["key"]) == ["1", "2"]
    posts = delivered.effects
    assert list(posts["kind"]) == ["http", "http"]
    assert list(posts["summary"]) == [f"POST {sheetops_http.url('/deliver')}"] * 2
    assert [d["email"] for d in posts["detail"]] == ["user1@example.com", "user2@example.com"]
    assert sheetops_http.requests == []


def test_run_inspect_dead_letters_edit_and_replay(workbook, contacts_pipeline, sheetops_http):
    cfg = open_config(str(workbook.path))
    result = run(contacts_pipeline, config=cfg)
    assert result.ok, result.errors
    stages = result.stages
    assert list(stages.index) == ["validate", "deliver"]
    assert stages.loc["validate"].to_dict() == {"records_in": 8, "records_out": 6,
                                                "records_failed": 2, "dead_letters": 2}
    assert stages.loc["deliver", "records_out"] == 6
    assert sheetops_http.count("/deliver", "POST") == 6

    figures = stage_figures("nb_contacts", config=cfg).set_index("stage")
    assert list(figures.index) == ["validate", "deliver"]
    assert (figures.loc["validate", "dead"], figures.loc["validate", "waiting"]) == (2, 0)
    assert figures.loc["deliver", "records_out"] == 6

    letters = dead_letters("nb_contacts", config=cfg)
    assert sorted(letters["key"]) == ["3", "6"]
    assert set(letters["error_type"]) == {"ValueError", "TypeError"}
    fixed = letters[letters["key"] == "3"].copy()
    fixed.at[fixed.index[0], "record"] = {**fixed.iloc[0]["record"],
                                          "email": "three@example.com"}
    done = replay(fixed, config=cfg)
    assert (done.requeued, done.through, done.dead_again) == (1, 1, 0)
    posted = [r.json() for r in sheetops_http.requests if r.method == "POST"]
    assert posted[-1] == {"id": 3, "email": "three@example.com", "score": 30}

    left = dead_letters("nb_contacts", config=cfg)
    assert list(left["key"]) == ["6"]
    again = replay(left, config=cfg)  # as it was: it fails again
    assert (again.requeued, again.dead_again) == (1, 1)
    assert sheetops_http.count("/deliver", "POST") == 7


def test_a_sql_sink_dry_run_shows_its_statements(tmp_path):
    from pipelines_for_tests import copy_pipeline

    pipe = copy_pipeline("nb_copy", str(tmp_path / "none.jsonl"))
    try:
        stored = dry_run(pipe, stage="store", records=[{"id": 1, "value": 2},
                                                       {"id": 2, "value": 4}])
    finally:
        PIPELINES.pop("nb_copy", None)
        registry._by_name.pop("nb_copy", None)
    assert stored.ok and list(stored.records_out["key"]) == ["1", "2"]
    sql = stored.effects[stored.effects["kind"] == "sql"]
    insert = sql[sql["target"] == "INSERT"].iloc[0]
    assert "INSERT INTO delivered" in insert["summary"]
    assert list(insert["detail"]) == [("1", 2), ("2", 4)]
