"""The durable queue's interface: what pipelines, run requests and executors rely on.

Delivery is *at least once*: a claimed item is leased to one consumer until
``claimed_until``; acked, it is gone; not acked in time (the worker died, hung or was
killed), it is claimable again, with no cron job. Every claim carries a ``token``: an
ack, nack, extend or dead-letter is accepted only while that claim's lease holds, so a
worker that wakes up after its lease expired cannot ack an item someone else now has
(fencing). An item delivered ``max_deliveries`` times without an ack ends as a dead
letter instead of looping; dead letters are listed and replayed (``requeue``).

*Exactly-once hand-off* between stages comes from :class:`QueueTransaction`: acks and
puts made in one transaction commit together or not at all, and a stale claim refuses
the whole unit. See docs/queue.md.

The SQL implementation (SQLite, PostgreSQL) is :mod:`sheetops.store.queue_sql`.
"""

from __future__ import annotations

import json
import threading
import traceback as tb
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from sheetops.errors import StoreError

#: What a payload may be: anything ``json.dumps`` takes (dicts, lists, str, numbers, …).
Payload = Any


class JsonText(str):
    """A payload already encoded as JSON text (by a faster encoder, say): ``put`` stores
    it as it is instead of encoding it again, and a claim made with ``raw=True`` hands
    every payload back as its JSON text (a ``str``) for the caller to decode. The
    caller vouches that the text is valid JSON."""

    __slots__ = ()


class PackedJson(bytes):
    """A payload as JSON text compressed with Zstandard: ``put`` stores it as it is, as
    a BLOB, on a database whose queue takes them (``Queues.packs``: SQLite, where a
    pipeline's batches of records are most of what the single writer writes, and a
    tenth to a thirtieth of the bytes is that much less to write and checkpoint). A
    reader tells it from JSON text by its type (bytes, not text), so items stored as
    text before still decode (:func:`load_payload`); a claim made with ``raw=True``
    hands it back as bytes. Items packed with zlib before still unpack: a Zstandard
    frame opens with its own magic number."""

    __slots__ = ()

    #: Zstandard's level: 1 packs a batch of records to a quarter of zlib's bytes (at
    #: any level), at a third of zlib's level 1 cost; both release the GIL meanwhile
    LEVEL = 1

    @classmethod
    def pack(cls, text: bytes) -> PackedJson:
        """``text`` (JSON, UTF-8) packed."""
        return cls(_zstd().compress(text))

    @staticmethod
    def unpack(stored: bytes | bytearray | memoryview) -> bytes:
        """The JSON text (UTF-8) of a packed payload."""
        data = bytes(stored)
        if data[:4] == _ZSTD_MAGIC:
            return _zstd_d().decompress(data)
        return zlib.decompress(data)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: one (de)compressor per thread: Zstandard's contexts are not shared between threads
_local = threading.local()


def _zstd() -> zstandard.ZstdCompressor:
    try:
        return _local.compressor
    except AttributeError:
        _local.compressor = zstandard.ZstdCompressor(level=PackedJson.LEVEL)
        return _local.compressor


def _zstd_d() -> zstandard.ZstdDecompressor:
    try:
        return _local.decompressor
    except AttributeError:
        _local.decompressor = zstandard.ZstdDecompressor()
        return _local.decompressor


def load_payload(stored: str | bytes) -> Any:
    """The JSON value of a payload as stored: JSON text, or :class:`PackedJson`."""
    if isinstance(stored, bytes | bytearray | memoryview):
        return json.loads(PackedJson.unpack(stored))
    return json.loads(stored)


#: Seconds added to a work item's timeout to make its lease (see :func:`lease_for`).
LEASE_GRACE_S = 10.0
#: Deliveries after which an item that was never acked becomes a dead letter.
MAX_DELIVERIES = 5


class QueueError(StoreError):
    """A queue operation that cannot be done as asked (bad payload, bad arguments)."""


class StaleClaim(QueueError):
    """An ack, nack, extend or dead-letter for a claim whose lease has expired (or that
    was acked, nacked or reclaimed since). Nothing of the operation — or of the
    transaction it was part of — was applied; the item belongs to whoever claims it
    next."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        shown = ", ".join(str(i) for i in self.ids[:10]) + ("…" if len(self.ids) > 10 else "")
        super().__init__(f"the lease on queue item(s) {shown} has expired or passed to "
                         "another consumer; nothing was applied")


def lease_for(timeout_s: float, grace_s: float = LEASE_GRACE_S) -> float:
    """The lease to claim work with whose hard timeout is ``timeout_s``: the timeout
    plus a grace for killing the worker and recording the outcome. A lease shorter
    than the work lets a second consumer start it while the first still runs."""
    if timeout_s <= 0:
        raise QueueError(f"timeout_s must be positive, not {timeout_s!r}")
    return float(timeout_s) + grace_s


@dataclass(frozen=True)
class ErrorInfo:
    """Why an item was nacked or dead-lettered."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def of(cls, error: BaseException | str | ErrorInfo | None) -> ErrorInfo:
        """From an exception (its type, text and traceback), a message, or ``None``."""
        if isinstance(error, ErrorInfo):
            return error
        if isinstance(error, BaseException):
            return cls(type(error).__name__, str(error),
                       "".join(tb.format_exception(error)) if error.__traceback__ else "")
        return cls("", "" if error is None else str(error))


@dataclass(frozen=True, slots=True)
class Claim:
    """One item leased to one consumer until ``claimed_until``. ``deliveries`` counts
    this claim (1 on the first delivery)."""

    id: int
    queue: str
    key: str | None
    payload: Payload
    deliveries: int
    claimed_until: float
    token: str
    priority: int = 0
    created_at: float = 0.0


@dataclass(frozen=True)
class DeadLetter:
    """An item that will not be delivered again until it is requeued."""

    id: int
    queue: str
    key: str | None
    payload: Payload
    deliveries: int
    error: ErrorInfo
    dead_at: float
    created_at: float
    priority: int = 0


@dataclass(frozen=True)
class QueueDepth:
    """How many items are claimable now (``ready``: waiting, or with an expired lease),
    ``delayed`` (put with a delay or nacked with one), ``claimed`` (leased) and
    ``dead``."""

    ready: int = 0
    delayed: int = 0
    claimed: int = 0
    dead: int = 0

    @property
    def waiting(self) -> int:
        """Items not yet done: ready, delayed or claimed (dead letters excluded)."""
        return self.ready + self.delayed + self.claimed


class QueueTransaction(ABC):
    """One unit of work over any queues of one store: everything done through it
    commits together, or nothing does (a :class:`StaleClaim` refuses the whole unit).

    ``connection`` is the SQLAlchemy connection it runs in, so a SQL sink can write its
    output in the same transaction as the ack.
    """

    connection: Any

    @abstractmethod
    def put(self, queue: str, payloads: Sequence[Payload], *,
            keys: Sequence[str | None] | None = None, delay_s: float = 0,
            priority: int = 0, dedupe: bool = False) -> list[int]:
        """Add ``payloads`` to ``queue``; see :meth:`Queue.put`."""

    @abstractmethod
    def put_claimed(self, queue: str, payloads: Sequence[Payload], *,
                    keys: Sequence[str | None] | None = None, consumer: str,
                    lease_s: float, priority: int = 0) -> list[Claim]:
        """Put ``payloads`` already leased to ``consumer`` for ``lease_s`` seconds, as
        a put and a claim would, in one write: for a consumer that hands work to
        itself (a pipeline's next stage in the same process) without claiming it
        back. Each is a first delivery; if the consumer dies the lease expires like
        any other. Returns the claims, in order, with the payloads as given."""

    @abstractmethod
    def release(self, claims: Sequence[Claim]) -> int:
        """Give back claims whose work never started: claimable at once, and this
        delivery not counted. Claims no longer held are skipped. Returns how many
        were released."""

    @abstractmethod
    def release_consumer(self, consumer: str, blamed: Sequence[int] = ()) -> int:
        """Give back every item ``consumer`` (a process known to be dead) still holds,
        claimable at once: its delivery not counted, except for the items ``blamed``
        (being worked when it died), whose delivery stands. Returns how many."""

    @abstractmethod
    def claim(self, queue: str, n: int, *, consumer: str, lease_s: float,
              raw: bool = False) -> list[Claim]:
        """Claim up to ``n`` items of ``queue``; see :meth:`Queue.claim`."""

    @abstractmethod
    def ack(self, claims: Sequence[Claim]) -> None:
        """Mark ``claims`` (of any queues) done; raises :class:`StaleClaim`."""

    @abstractmethod
    def nack(self, claim: Claim, delay_s: float = 0,
             error: BaseException | str | ErrorInfo | None = None) -> None:
        """Give ``claim`` back, claimable after ``delay_s``; raises :class:`StaleClaim`."""

    @abstractmethod
    def extend(self, claims: Sequence[Claim], lease_s: float) -> list[Claim]:
        """Renew ``claims``' leases to ``lease_s`` from now; raises :class:`StaleClaim`."""

    @abstractmethod
    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo, *,
                    per_key: bool = False) -> None:
        """Make ``claim``'s item a dead letter now; raises :class:`StaleClaim`. See
        :meth:`Queue.dead_letter` for ``per_key``."""

    def without_flush(self) -> None:
        """Let this unit's commit return before it reaches the disk (PostgreSQL's
        ``synchronous_commit`` off for it alone): for work that is redone if a
        *database* crash forgets it — a claim (a lease), or a hand-off whose output is
        only more work in the store. Any later durable commit flushes it first (the
        log is written in order); a killed worker loses nothing either way. A no-op
        where commits do not wait for the disk already (SQLite with
        ``synchronous=NORMAL``)."""
        return None


class Queue(ABC):
    """A named durable queue. Each method is its own transaction; use
    :meth:`transaction` to combine several (an ack with the next stage's puts)."""

    name: str
    max_deliveries: int

    @abstractmethod
    def put(self, payloads: Sequence[Payload], *, keys: Sequence[str | None] | None = None,
            delay_s: float = 0, priority: int = 0, dedupe: bool = False) -> list[int]:
        """Add ``payloads`` (JSON values) in one batch, claimable after ``delay_s``,
        higher ``priority`` first, then first in first out. ``keys`` (one per payload,
        optional) name the records; with ``dedupe`` a payload is skipped when an item
        put with ``dedupe`` and the same key is still in the queue (waiting, claimed
        or dead: not yet acked). Returns the ids of the items added, in order."""

    @abstractmethod
    def claim(self, n: int, *, consumer: str, lease_s: float,
              raw: bool = False) -> list[Claim]:
        """Lease up to ``n`` claimable items (waiting and due, or whose lease expired)
        to ``consumer`` for ``lease_s`` seconds (:func:`lease_for` of the work's
        timeout). An expired item already delivered ``max_deliveries`` times becomes a
        dead letter instead. Returns at once, possibly with nothing. With ``raw`` the
        payloads are left undecoded, as JSON text (see :class:`JsonText`) or
        :class:`PackedJson` bytes."""

    @abstractmethod
    def ack(self, claims: Sequence[Claim]) -> None:
        """The claims' work is done: remove their items. All or nothing: raises
        :class:`StaleClaim` (and acks none) if any lease has expired."""

    @abstractmethod
    def nack(self, claim: Claim, delay_s: float = 0,
             error: BaseException | str | ErrorInfo | None = None) -> None:
        """The work failed: make the item claimable again after ``delay_s``, or a dead
        letter if it has had ``max_deliveries`` deliveries."""

    @abstractmethod
    def extend(self, claims: Sequence[Claim], lease_s: float) -> list[Claim]:
        """Heartbeat: the leases now end ``lease_s`` from now. Returns the renewed
        claims (their ``claimed_until`` moved); raises :class:`StaleClaim`."""

    @abstractmethod
    def dead_letter(self, claim: Claim, error: BaseException | str | ErrorInfo, *,
                    per_key: bool = False) -> None:
        """The item cannot be processed (a bad record): keep it aside, with ``error``.
        With ``per_key``, one dead letter per key: when the queue already holds a dead
        letter with the claim's key (the same bad record, met again on a later pass),
        that one takes this item's payload, error, deliveries and time, and this item
        is removed."""

    @abstractmethod
    def dead_letters(self, limit: int = 100, *, keys: Sequence[str] | None = None,
                     ids: Sequence[int] | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first, optionally only those with the given keys/ids."""

    @abstractmethod
    def requeue(self, ids: Sequence[int] | None = None, *, keys: Sequence[str] | None = None,
                edited: Mapping[int, Payload] | None = None) -> int:
        """Replay dead letters: by ``ids``, by ``keys``, or every one when both are
        ``None``; ``edited`` replaces the payloads of the given ids (a fixed record).
        Their delivery count starts again. Returns how many were requeued."""

    @abstractmethod
    def depth(self) -> QueueDepth:
        """Counts of ready, delayed, claimed and dead items."""

    @abstractmethod
    def claimable(self) -> bool:
        """Whether a claim now would find an item: a read, taking no write lock, for a
        consumer that polls (it claims only when this says so)."""

    @abstractmethod
    def oldest_age(self) -> float | None:
        """Seconds since the oldest item not yet done (not acked, not dead) was put;
        ``None`` when there is none. A stage's lag."""

    @abstractmethod
    def transaction(self) -> Any:
        """A context manager yielding a :class:`QueueTransaction` over this queue's
        store."""
