"""A queue item's payload: a batch of records with their keys, as one JSON text.

When every record holds the pipeline's key field, the payload names the field instead
of listing the keys (``{"f": "id", "r": [...]}``): the keys are derived where they are
needed, not built and stored for every batch of every stage.

One item carries up to a stage's ``batch_size`` records — not one row per record — so
the queue's cost (a row, an index entry, a lock) is paid once per thousand records.
The batch is encoded with orjson, several times faster than the standard library, and
handed to the queue as :class:`~sheetops.store.queue.JsonText`, which it stores as it
is (not encoded a second time); stages claim it raw and decode it here.

On a queue that takes them (``Queues.packs``: SQLite) the JSON is compressed
(:class:`~sheetops.store.queue.PackedJson`, Zstandard level 1): a batch of records
shrinks ten- to thirtyfold, SQLite's one writer writes (and checkpoints) that much
less, and Zstandard works without holding the GIL, so the other stages run meanwhile. An item stored
as text before still decodes: the payload's type (bytes or text) tells them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from sheetops.errors import SheetopsError
from sheetops.store.queue import JsonText, PackedJson


class RecordError(SheetopsError):
    """A record that cannot be keyed or stored (no key, not JSON)."""


@dataclass(frozen=True, slots=True)
class Keyed:
    """A record with its key given explicitly: yield ``Keyed(key, record)`` from a
    stage whose output records do not hold the pipeline's key field."""

    key: str
    record: Any


def encode(keys: Sequence[str] | None, records: Sequence[Any], split: bool = False,
           field: str | None = None, packed: bool = False) -> JsonText | PackedJson:
    """One item's payload; ``split`` marks a half of a failed batch (tried once more,
    without retries: the batch's retries already ran). ``keys`` ``None`` means each
    record's key is its ``field`` (as text): the payload names the field instead of
    listing the keys, which every decoder derives (:func:`field_keys`). ``packed``:
    compressed (:class:`PackedJson`), for a queue that takes it (``Queues.packs``)."""
    data: dict[str, Any] = {"r": records}
    if keys is None:
        data["f"] = field
    else:
        data["k"] = keys
    if split:
        data["s"] = 1
    try:
        text = orjson.dumps(data)
    except TypeError as exc:
        raise RecordError(f"a record cannot be stored as JSON: {exc}") from None
    return PackedJson.pack(text) if packed else JsonText(text.decode())


def field_keys(field: str, records: Sequence[Any]) -> list[str]:
    """The keys of records that each hold the key ``field``."""
    return list(map(str, map(itemgetter(field), records)))


def end_keys(field: str, records: Sequence[Any]) -> list[str]:
    """The first and last keys (the one key of a single record) of such records, all
    :func:`item_key` needs."""
    if len(records) <= 1:
        return field_keys(field, records)
    return [str(records[0][field]), str(records[-1][field])]


def decode_item(payload: Any) -> tuple[list[str], list[Any], bool]:
    """``(keys, records, split)`` of an item's payload (a JSON text, packed JSON
    bytes, or an object written by ``replay --edited``). An item queued before batches
    were stored as :class:`JsonText` holds its batch as a JSON string inside the JSON
    text."""
    keys, records, split = decode_batch(payload)  # no field given: keys always listed
    return ([] if keys is None else keys), records, split


def decode_batch(payload: Any, field: Any = None) -> tuple[list[str] | None, list[Any], bool]:
    """Like :func:`decode_item`, but the keys are ``None`` when each record's key is
    its ``field`` (the payload names the same field): derived only where needed."""
    if isinstance(payload, bytes):
        data = orjson.loads(PackedJson.unpack(payload))
    elif isinstance(payload, str):  # orjson takes no str subclass (JsonText): a plain copy
        data = orjson.loads(payload if type(payload) is str else str(payload))
    else:
        data = payload
    if isinstance(data, str):
        data = orjson.loads(data)
    records = list(data["r"])
    if "k" in data:
        keys: list[str] | None = list(data["k"])
    else:
        keys = (None if field is not None and data["f"] == field
                else field_keys(data["f"], records))
    return keys, records, bool(data.get("s"))


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
