"""A queue item's payload: a batch of records with their keys, as one JSON text.

One item carries up to a stage's ``batch_size`` records — not one row per record — so
the queue's cost (a row, an index entry, a lock) is paid once per thousand records.
The batch is encoded with orjson, several times faster than the standard library, and
handed to the queue as :class:`~sheetops.store.queue.JsonText`, which it stores as it
is (not encoded a second time); stages claim it raw and decode it here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sheetops.errors import SheetopsError
from sheetops.store.queue import JsonText


class RecordError(SheetopsError):
    """A record that cannot be keyed or stored (no key, not JSON)."""


@dataclass(frozen=True, slots=True)
class Keyed:
    """A record with its key given explicitly: yield ``Keyed(key, record)`` from a
    stage whose output records do not hold the pipeline's key field."""

    key: str
    record: Any


def encode(keys: Sequence[str], records: Sequence[Any], split: bool = False) -> JsonText:
    """One item's payload; ``split`` marks a half of a failed batch (tried once more,
    without retries: the batch's retries already ran)."""
    data: dict[str, Any] = {"k": keys, "r": records}
    if split:
        data["s"] = 1
    try:
        return JsonText(orjson.dumps(data).decode())
    except TypeError as exc:
        raise RecordError(f"a record cannot be stored as JSON: {exc}") from None


def decode_item(payload: Any) -> tuple[list[str], list[Any], bool]:
    """``(keys, records, split)`` of an item's payload (a JSON text, or an object
    written by ``replay --edited``). An item queued before batches were stored as
    :class:`JsonText` holds its batch as a JSON string inside the JSON text."""
    if isinstance(payload, str):  # orjson takes no str subclass (JsonText): a plain copy
        data = orjson.loads(payload if type(payload) is str else str(payload))
    else:
        data = payload
    if isinstance(data, str):
        data = orjson.loads(data)
    return list(data["k"]), list(data["r"]), bool(data.get("s"))


def decode(payload: Any) -> tuple[list[str], list[Any]]:
    """``(keys, records)`` of an item's payload."""
    keys, records, _ = decode_item(payload)
    return keys, records


def item_key(keys: Sequence[str]) -> str:
    """The queue item's key: the record's own for a single record (so dead letters and
    replay are found by record key), else the first and last keys of the batch."""
    if len(keys) == 1:
        return keys[0]
    return f"{keys[0]}…{keys[-1]}"[:256] if keys else ""
