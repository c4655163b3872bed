"""Where a pipeline's records come from: streams that can say where they are.

A source's :meth:`Source.read` yields ``(record, position)`` pairs, ``position`` being
a JSON value from which :meth:`Source.read` resumes *after* that record. The engine
saves the position of a batch's last record in the transaction that queues the batch,
so a pipeline killed at any moment reads on from exactly there. Sources stream: a file
is read a line at a time, an API a page at a time, never all at once.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import orjson

from sheetops.errors import PermanentError


class Source(Protocol):
    """Yields ``(record, position)``; ``read(position)`` resumes after ``position``
    (``None``: from the beginning). A source may also have ``read_batches(position,
    size)``, yielding ``(records, position)`` with up to ``size`` records at a time and
    the position after the last of them: the engine then reads it a batch at a time
    (see :func:`batches_of`)."""

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]: ...


def batches_of(source: Source, position: Any, size: int) -> Iterator[tuple[list[Any], Any]]:
    """``(records, position)`` of ``source`` from ``position``, up to ``size`` records
    each, the position being the one after the last of them: the source's own
    ``read_batches`` when it has one (no Python step per record), else its ``read``
    gathered into lists."""
    if hasattr(source, "read_batches"):
        yield from source.read_batches(position, size)
        return
    records: list[Any] = []
    at = position
    for record, at in source.read(position):
        records.append(record)
        if len(records) >= size:
            yield records, at
            records = []
    if records:
        yield records, at


class JsonLines:
    """A JSON-lines file, one record a line; the position is a byte offset."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        offset = int(position or 0)
        with self.path.open("rb") as f:
            f.seek(offset)
            for number, line in enumerate(f, start=1):
                offset += len(line)
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise PermanentError(f"{self.path}: a line after byte "
                                         f"{offset - len(line)} (line {number} from the "
                                         f"resume point) is not JSON: {exc}") from None
                yield record, offset


class CsvFile:
    """A CSV file with a header row, one record (a dict) a row; the position is the
    number of rows read (a quoted field may span lines, so a byte offset would lie)."""

    def __init__(self, path: str | Path, **reader_options: Any) -> None:
        self.path = Path(path)
        self.options = reader_options

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        done = int(position or 0)
        with self.path.open(newline="", encoding="utf-8-sig") as f:
            rows = csv.DictReader(f, **self.options)
            for number, row in enumerate(itertools.islice(rows, done, None), start=done + 1):
                yield row, number


class JsonPages:
    """Pages of a JSON API: each page holds a list of records (at ``records``, a
    dot-separated path, or the page itself) and the URL of the next page (at ``next``,
    relative or absolute; absent or null on the last). The position is the page's URL
    and the records of it already queued, so a resume fetches that page again and
    skips them."""

    def __init__(self, url: str, *, records: str = "items", next: str = "next",
                 headers: Mapping[str, str] | None = None, timeout_s: float = 30.0) -> None:
        self.url, self.records_path, self.next_path = url, records, next
        self.headers, self.timeout_s = dict(headers or {}), timeout_s

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        from sheetops.automations.http_get import find_list
        from sheetops.connectors.http import HttpClient

        url, skip = (position["url"], int(position["done"])) if position else (self.url, 0)
        with HttpClient(headers=self.headers, timeout_s=self.timeout_s) as client:
            while url:
                page = client.get_json(url)
                records = find_list(page, self.records_path if isinstance(page, dict)
                                    else None)
                following = _at(page, self.next_path)
                next_url = urljoin(url, following) if following else None
                for index in range(skip, len(records)):
                    last = index == len(records) - 1
                    yield records[index], ({"url": next_url, "done": 0} if last and next_url
                                           else {"url": url, "done": index + 1})
                url, skip = next_url, 0


class IterableSource:
    """Any re-iterable of records (a list, a generator function): the position is the
    count read, and a resume skips that many. For tests, benches and notebooks."""

    def __init__(self, make: Callable[[], Iterable[Any]] | Iterable[Any]) -> None:
        self.make = make

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        done = int(position or 0)
        records = self.make() if callable(self.make) else self.make
        for number, record in enumerate(itertools.islice(records, done, None),
                                        start=done + 1):
            yield record, number

    def read_batches(self, position: Any, size: int) -> Iterator[tuple[list[Any], int]]:
        """Lists of up to ``size`` records, each with the count read after it."""
        done = int(position or 0)
        records = self.make() if callable(self.make) else self.make
        rest = itertools.islice(records, done, None)
        while batch := list(itertools.islice(rest, size)):
            done += len(batch)
            yield batch, done


class FromParams:
    """A source built from the job's params when a run starts, e.g.
    ``from_params(lambda p: json_pages(p["url"]))`` reads the URL from the Jobs tab."""

    def __init__(self, build: Callable[[dict[str, Any]], Source]) -> None:
        self.build = build

    def bind(self, params: Mapping[str, Any]) -> Source:
        try:
            return self.build(dict(params))
        except KeyError as exc:
            raise PermanentError(f"the pipeline's source needs params.{exc.args[0]} "
                                 "(the Jobs tab's params column)") from None

    def read(self, position: Any) -> Iterator[tuple[Any, Any]]:
        return self.bind({}).read(position)


def from_params(build: Callable[[dict[str, Any]], Source]) -> FromParams:
    """A source made from the job's params at the start of each run."""
    return FromParams(build)


def _at(document: Any, path: str) -> Any:
    node = document
    for part in [p for p in (path or "").split(".") if p]:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def jsonl_file(path: str | Path) -> JsonLines:
    """Records from a JSON-lines file."""
    return JsonLines(path)


def csv_file(path: str | Path, **reader_options: Any) -> CsvFile:
    """Records (dicts by header) from a CSV file."""
    return CsvFile(path, **reader_options)


def json_pages(url: str, *, records: str = "items", next: str = "next",
               headers: Mapping[str, str] | None = None, timeout_s: float = 30.0
               ) -> JsonPages:
    """Records from the pages of a JSON API, following each page's ``next`` link."""
    return JsonPages(url, records=records, next=next, headers=headers, timeout_s=timeout_s)


def iterable(make: Callable[[], Iterable[Any]] | Iterable[Any]) -> IterableSource:
    """Records from a list or a function returning a fresh iterator each call."""
    return IterableSource(make)
