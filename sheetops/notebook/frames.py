"""Tabs as DataFrames typed from the tab's own column specs, never inferred.

A column's type comes from what the config model says it is: a checkbox or TRUE/FALSE
dropdown column (``ColumnSpec.checkbox``, ``tabs.BOOLEAN_CHOICES``) is ``bool``; a
column the parser reads as a number is one — a field of
:class:`~sheetops.config.model.JobSpec` or :class:`~sheetops.config.model.AlertSpec`
typed ``int``/``float``, a Stages column of :data:`sheetops.config.stages.RANGES`
(whole numbers ``int``); ``params`` is the parsed JSON ``dict``. Every other column
stays text, so ``"007"`` in a name column is still ``"007"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from sheetops import tabs
from sheetops.config.cells import parse_params
from sheetops.config.model import AlertSpec, JobSpec
from sheetops.config.stages import RANGES

_TRUE = {"true", "yes", "1", "y", "on"}
_FALSE = {"false", "no", "0", "n", "off", ""}

def _numeric_fields(spec: type) -> dict[str, str]:
    return {f.name: f.type for f in dataclasses.fields(spec) if f.type in ("int", "float")}


#: tab → numeric column → ``int``/``float``, as the parser reads them
_NUMERIC = {tabs.JOBS: _numeric_fields(JobSpec), tabs.ALERTS: _numeric_fields(AlertSpec),
            tabs.STAGES: {name: "int" if whole else "float"
                          for name, (_low, _high, whole) in RANGES.items()}}


def column_kind(tab: str, name: str) -> str:
    """``bool``, ``int``, ``float``, ``dict`` or ``str`` for column ``name`` of ``tab``."""
    spec = next((c for c in tabs.columns_of(tab) if c.name == name), None)
    if spec is not None and (spec.checkbox or spec.choices == tabs.BOOLEAN_CHOICES):
        return "bool"
    if tab == tabs.JOBS and name == "params":
        return "dict"
    return _NUMERIC.get(tab, {}).get(name, "str")


def _convert(kind: str, text: str) -> Any:
    text = text.strip() if isinstance(text, str) else text
    if kind == "bool":
        low = str(text).lower()
        return True if low in _TRUE else False if low in _FALSE else pd.NA
    if kind in ("int", "float"):
        if text in ("", None):
            return pd.NA
        try:
            number = float(text)
        except ValueError:
            return pd.NA
        return int(number) if kind == "int" and number.is_integer() else number
    if kind == "dict":
        parsed, _problem = parse_params(text or "{}")
        return parsed
    return text


_DTYPES = {"bool": "boolean", "int": "Int64", "float": "Float64", "dict": "object",
           "str": "string"}


def tab_frame(tab: str, rows: Sequence[Sequence[str]]) -> pd.DataFrame:
    """The tab's data rows (header first in ``rows``) as a typed DataFrame; the index is
    the sheet row number, so ``df.loc[3]`` is row 3 of the tab."""
    known = [c.name for c in tabs.columns_of(tab)]
    header = [str(h).strip() for h in rows[0]] if rows else known
    names = [h for h in header if h]
    records, index = [], []
    for number, row in enumerate(rows[1:], start=2):
        values = {h: (row[i] if i < len(row) else "") for i, h in enumerate(header) if h}
        if not any(str(v).strip() for v in values.values()):
            continue
        records.append({h: _convert(column_kind(tab, h), str(values[h])) for h in names})
        index.append(number)
    frame = pd.DataFrame.from_records(records, columns=names,
                                      index=pd.Index(index, name="row"))
    return frame.astype({h: _DTYPES[column_kind(tab, h)] for h in names})
