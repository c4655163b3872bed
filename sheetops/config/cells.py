"""Checks for config cells whose values could otherwise raise deep inside the engine.

A ``params`` cell becomes a dict that is pickled to a worker and walked by secret
resolution; a timezone name becomes a file lookup. Both are bounded here so that any
cell, however careless or hostile, ends as one sentence at its cell instead of an
exception (a ``RecursionError`` while pickling, an ``OSError`` from the zone database).
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

PARAMS_MAX_DEPTH = 20
PARAMS_MAX_CHARS = 20_000
PARAMS_MAX_INT_DIGITS = 100
TIMEZONE_MAX_CHARS = 64
# what a spreadsheet shows for a formula that failed (Google's values API and, through
# the workbook backend, an .xlsx file hand the parser this text)
ERROR_VALUES = frozenset({"#DIV/0!", "#REF!", "#N/A", "#VALUE!", "#NAME?", "#NUM!",
                          "#NULL!", "#GETTING_DATA", "#SPILL!", "#CALC!", "#ERROR!"})


class _ParamsRejected(ValueError):
    """A params value JSON accepts but sheetops does not (NaN, a huge integer)."""


def _reject_constant(name: str) -> Any:
    raise _ParamsRejected(f"{name} is not allowed; use a finite number or a string")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > PARAMS_MAX_INT_DIGITS:
        raise _ParamsRejected(f"an integer of {len(text.lstrip('-'))} digits is too long "
                              f"(at most {PARAMS_MAX_INT_DIGITS}); quote it as a string")
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts, walked without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _ParamsRejected(f"key {key!r} appears twice")
        result[key] = value
    return result


def parse_params(text: str) -> tuple[dict[str, Any] | None, str]:
    """``params`` cell text → (the dict, "") or (None, the problem sentence)."""
    if len(text) > PARAMS_MAX_CHARS:
        return None, (f"params is {len(text):,} characters long; at most "
                      f"{PARAMS_MAX_CHARS:,} are allowed")
    # cheap upper bound on nesting before the parser recurses: count opening brackets
    if text.count("[") + text.count("{") > PARAMS_MAX_DEPTH and (
            _bracket_depth(text) > PARAMS_MAX_DEPTH):
        return None, f"params is nested too deeply (at most {PARAMS_MAX_DEPTH} levels)"
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int,
                           object_pairs_hook=_no_duplicate_keys)
    except _ParamsRejected as exc:
        return None, f"params: {exc}"
    except json.JSONDecodeError as exc:
        return None, f"params is not valid JSON ({exc.msg} at character {exc.pos})"
    except (ValueError, RecursionError) as exc:
        return None, f"params is not usable JSON ({type(exc).__name__})"
    if not isinstance(value, dict):
        return None, (f"params must be a JSON object like {{\"url\": \"...\"}}, got a "
                      f"{type(value).__name__}")
    if _depth(value) > PARAMS_MAX_DEPTH:
        return None, f"params is nested too deeply (at most {PARAMS_MAX_DEPTH} levels)"
    return value, ""


def _bracket_depth(text: str) -> int:
    """Deepest bracket nesting outside JSON strings (a scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def timezone_problem(name: str) -> str:
    """"" when ``name`` is a usable IANA zone, else the problem sentence.

    ``ZoneInfo`` raises more than ``ZoneInfoNotFoundError``: a directory name such as
    ``Europe`` raises ``IsADirectoryError``, a very long name ``OSError``.
    """
    hint = "use an IANA name such as Europe/Berlin or UTC"
    if len(name) > TIMEZONE_MAX_CHARS:
        return f"unknown timezone ({len(name)} characters long); {hint}"
    try:
        ZoneInfo(name)
    except (ValueError, OSError, LookupError):
        return f"unknown timezone {name!r}; {hint}"
    return ""
