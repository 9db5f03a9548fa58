"""BusStream: a replica's change events from the Redis Stream, with the log as the truth.

It offers what ``serve`` takes from a ChangeStream (``items()``, ``channel``, ``connected``,
``last_seq``, ``stats``), so the fan-out does not know which bus feeds it. Its one cursor is
the seq of the last event it passed on; since an entry's id is its last seq, that is also
where ``XREAD`` continues. Every event is checked against it (dedupe by seq), and an entry
whose ``prev`` is newer than the cursor (trimmed stream, Redis restarted, a publisher that
started later) sends the stream to the log first: no gap, no duplicate.

Redis down: the replica says so once and follows the log itself (LISTEN + reads, as without a
bus) until Redis answers again; then it joins the stream at its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

import psycopg

from pgwatch_cli import console, db
from pgwatch_cli.bus import client, entries
from pgwatch_cli.bus.keys import Keys
from pgwatch_cli.bus.publisher import Publisher
from pgwatch_cli.bus.url import RedisBus
from pgwatch_cli.errors import DatabaseUnreachable, NotInstalled
from pgwatch_cli.stream.events import (
    ChangeEvent,
    InvalidPayload,
    LogReplaced,
    StreamItem,
    parse,
)
from pgwatch_cli.stream.listener import DEFAULT_CHANNEL, ChangeStream, StreamStats

APPLICATION_NAME = "bookwatch bus replica"
BLOCK_MS = 2000
READ_COUNT = 200
CHECK_S = 2.0  # how often the head (publisher, lag) is looked at
PING_S = 2.0  # how often Redis is tried while falling back
PAGE = 1000
# A publisher that has not renewed its head for this long is reported as absent.
HEAD_STALE_S = 15.0

_READ_PAGE = """
SELECT NULL::bigint, value FROM bookwatch.meta WHERE key = 'log_id'
UNION ALL
(SELECT seq, payload FROM bookwatch.change_log
  WHERE channel = %(channel)s AND seq > %(after)s ORDER BY seq LIMIT %(page)s)
"""
_START = """
SELECT current_database(),
       (SELECT value FROM bookwatch.meta WHERE key = 'log_id'),
       (SELECT coalesce(max(seq), 0) FROM bookwatch.change_log WHERE channel = %(channel)s)
"""
_NO_LOG = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)
_PG_LOST = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable, OSError)


@dataclass
class BusStats:
    entries: int = 0  # stream entries read
    catch_ups: int = 0  # times the log was read to cross a gap (log reads for live events)
    fallbacks: int = 0  # times Redis was lost and the log followed instead


@dataclass(frozen=True)
class Head:
    """What the publisher last wrote about itself."""

    log_newest: int | None = None
    stream_newest: int | None = None
    age_s: float | None = None  # since the publisher last renewed (None: no publisher seen)

    @property
    def lag(self) -> int | None:
        """Events in the log the stream does not have yet."""
        if self.log_newest is None or self.stream_newest is None:
            return None
        return max(0, self.log_newest - self.stream_newest)


class BusStream:
    """Every change event of one channel exactly once, in seq order, through Redis."""

    def __init__(
        self, bus: RedisBus, dsn: str, *, channel: str = DEFAULT_CHANNEL, relay: bool = True,
        publish: bool = True, notice: Callable[[str], None] = console.warn,
        block_ms: int = BLOCK_MS, publisher_grace_s: float = HEAD_STALE_S,
    ) -> None:
        self.bus = bus
        self.dsn = dsn
        self.channel = channel
        self.relay = relay
        self.publish = publish
        self.notice = notice
        self.block_ms = block_ms
        self.publisher_grace_s = publisher_grace_s
        self.last_seq: int | None = None
        self.log_id: str | None = None
        self.stats = StreamStats()
        self.bus_stats = BusStats()
        self.fallback = False  # following the log because Redis is down
        self.head = Head()
        self.keys: Keys | None = None
        self.publisher: Publisher | None = None
        self.redis = client.connect(bus, name="bookwatch-replica")
        self._on_bus = False
        self._started_at = monotonic()
        self._missing_said = False
        self._fallback_stream: ChangeStream | None = None
        self._publisher_task: asyncio.Task[None] | None = None
        self._items: AsyncGenerator[StreamItem] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> BusStream:
        async with await db.connect_async(
            self.dsn, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            try:
                cursor = await conn.execute(_START, {"channel": self.channel})
            except _NO_LOG:
                raise NotInstalled(
                    "--bus redis:// needs a change log (bookwatch.change_log is missing).",
                    hint="Install triggers in log or wal mode.", suggest="install-triggers",
                ) from None
            row = await cursor.fetchone()
        assert row is not None
        database, log_id, newest = row
        self.keys = Keys(self.bus.prefix, str(database))
        self.log_id = str(log_id) if log_id is not None else None
        self.last_seq = int(newest)
        if self.publish:
            self.publisher = Publisher(self.redis, self.keys, self.dsn, channel=self.channel,
                                       relay=self.relay, notice=self.notice)
            self._publisher_task = asyncio.create_task(self.publisher.run(),
                                                       name="bookwatch-bus-publisher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        items, self._items = self._items, None
        if items is not None:
            with contextlib.suppress(RuntimeError):
                await items.aclose()
        task, self._publisher_task = self._publisher_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.redis.aclose()

    def items(self) -> AsyncIterator[StreamItem]:
        if self.keys is None:
            raise RuntimeError("use 'async with BusStream(...)' before iterating")
        if self._items is None:
            self._items = self._run()
        return self._items

    @property
    def connected(self) -> bool:
        """Receiving: from Redis, or (falling back) from PostgreSQL."""
        if self.fallback:
            return self._fallback_stream is not None and self._fallback_stream.connected
        return self._on_bus

    @property
    def source(self) -> str:
        return "postgres (fallback)" if self.fallback else "redis"

    def bus_health(self) -> dict[str, Any]:
        """``/healthz``: which bus, where events come from now, the publisher and its lag."""
        publisher = self.publisher
        return {
            "bus": self.bus.shown,
            "bus_source": self.source,
            "bus_fallback": self.fallback,
            "bus_publishing_here": bool(publisher and publisher.leading),
            "bus_publisher_seen_s_ago": (round(self.head.age_s, 1)
                                         if self.head.age_s is not None else None),
            "bus_lag": self.head.lag,
        }

    def bus_samples(self) -> list[tuple[str, str, str, float]]:
        lag = self.head.lag
        return [
            ("bookwatch_bus_fallback", "gauge",
             "1 while Redis is down and events are read from PostgreSQL, else 0.",
             int(self.fallback)),
            ("bookwatch_bus_lag_events", "gauge",
             "Newest seq in the change log minus newest in the Redis Stream (-1: unknown).",
             -1 if lag is None else lag),
            ("bookwatch_bus_stream_entries_total", "counter", "Redis Stream entries read.",
             self.bus_stats.entries),
            ("bookwatch_bus_log_catch_ups_total", "counter",
             "Times the change log was read to cross a gap in the stream.",
             self.bus_stats.catch_ups),
            ("bookwatch_bus_fallbacks_total", "counter",
             "Times Redis was lost and the change log followed instead.",
             self.bus_stats.fallbacks),
            ("bookwatch_bus_publishing", "gauge",
             "1 while this process publishes the database's batches to Redis.",
             int(bool(self.publisher and self.publisher.leading))),
        ]

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> AsyncGenerator[StreamItem]:
        while True:
            _stop_if_cancelled()
            if not self.fallback:
                try:
                    async with contextlib.aclosing(self._from_stream()) as stream:
                        async for item in stream:
                            yield item
                except client.UNAVAILABLE as exc:
                    self._on_bus = False
                    self.fallback = True
                    self.bus_stats.fallbacks += 1
                    self.notice(f"Redis at {self.bus.shown} is unreachable ({_reason(exc)}); "
                                "reading events from PostgreSQL until it is back")
            else:
                async with contextlib.aclosing(self._from_log()) as log:
                    async for item in log:
                        yield item
                self.fallback = False
                self.notice(f"Redis at {self.bus.shown} is back; reading events from it again")

    async def _from_stream(self) -> AsyncGenerator[StreamItem]:
        assert self.keys is not None
        key = self.keys.stream(self.channel)
        cursor = entries.entry_id(self.last_seq or 0)
        await client.done(self.redis.ping())
        self._on_bus = True
        checked_at = monotonic()
        while True:
            _stop_if_cancelled()
            answer: list[tuple[bytes, client.Entries]] = (
                await client.done(
                    self.redis.xread({key: cursor}, count=READ_COUNT, block=self.block_ms)
                )
            )
            for _key, found in answer or ():
                for entry, fields in found:
                    self.bus_stats.entries += 1
                    try:
                        batch = entries.decode(fields)
                    except ValueError as exc:
                        self.stats.invalid += 1
                        self.notice(f"skipped stream entry {entry!r}: {exc}")
                        cursor = entry.decode()
                        continue
                    if batch.log_id != (self.log_id or "") or batch.prev > (self.last_seq or 0):
                        # A gap before this entry, or a log this replica does not know yet.
                        async with contextlib.aclosing(self._catch_up()) as log:
                            async for item in log:
                                yield item
                        if batch.log_id != (self.log_id or ""):
                            cursor = entry.decode()  # an entry of a log that is gone
                            continue
                    for item in self._events_of(batch):
                        yield item
                    cursor = entry.decode()
            # After the entries, not before: every entry carries its own gap check, and the
            # events that woke this replica must not wait for two more round trips.
            if monotonic() - checked_at >= CHECK_S or not answer:
                checked_at = monotonic()
                if await self._must_read_log(key):
                    async with contextlib.aclosing(self._catch_up()) as log:
                        async for item in log:
                            yield item
                    cursor = entries.entry_id(self.last_seq or 0)  # back too, for a new log
                    continue
            newest = entries.entry_id(self.last_seq or 0)
            if entries.seq_of(newest) > entries.seq_of(cursor):
                cursor = newest  # the log was read further than the stream: skip the overlap

    def _events_of(self, batch: entries.Batch) -> list[ChangeEvent]:
        fresh = []
        for wire in batch.wires:
            try:
                event = parse(wire)
            except InvalidPayload:
                self.stats.invalid += 1
                continue
            if self._fresh(event):
                fresh.append(event)
        return fresh

    def _fresh(self, event: ChangeEvent) -> bool:
        seq = event.seq
        if seq is None:
            return False
        if self.last_seq is not None and seq <= self.last_seq:
            self.stats.duplicates += 1
            return False
        self.last_seq = seq
        self.stats.delivered += 1
        return True

    async def _must_read_log(self, key: str) -> bool:
        """Reads the publisher's head; True when the log must be read: the stream belongs to
        another log, or its publisher started after this replica's cursor."""
        assert self.keys is not None
        head: dict[bytes, bytes] = await client.done(
            self.redis.hgetall(self.keys.head(self.channel))
        )
        self.head = _head(head)
        if self._publisher_missing():
            return True  # the log, every CHECK_S, until a publisher shows up
        head_log = head.get(b"log_id")
        if head_log is not None and head_log.decode() != (self.log_id or ""):
            return True  # the publisher follows a log this replica has not seen (recreated)
        start = head.get(b"from")
        if start is not None and int(start) > (self.last_seq or 0):
            return True
        top: client.Entries = await client.done(self.redis.xrevrange(key, count=1))
        if not top:
            return False
        try:
            batch = entries.decode(top[0][1])
        except ValueError:
            return False
        return batch.log_id != (self.log_id or "")

    def _publisher_missing(self) -> bool:
        age = self.head.age_s
        if age is None:
            age = monotonic() - self._started_at
        missing = age > self.publisher_grace_s
        if missing != self._missing_said:
            self._missing_said = missing
            self.notice("no bus publisher for this database; reading the change log every "
                        f"{CHECK_S:g} s until one publishes" if missing
                        else "a bus publisher is back")
        return missing

    # -- the log ---------------------------------------------------------------------------

    async def _catch_up(self) -> AsyncGenerator[StreamItem]:
        """The log after the cursor up to its newest (LogReplaced first if it is a new log),
        however long PostgreSQL takes to answer: events after the gap must wait for it."""
        self.bus_stats.catch_ups += 1
        delay = 0.5
        while True:
            try:
                async with contextlib.aclosing(self._read_log()) as log:
                    async for item in log:
                        yield item
                return
            except _PG_LOST as exc:
                self.notice(f"cannot read the change log ({_reason(exc)}); retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)

    async def _read_log(self) -> AsyncGenerator[StreamItem]:
        async with await db.connect_async(
            self.dsn, autocommit=True, application_name=APPLICATION_NAME
        ) as conn:
            while True:
                params = {"channel": self.channel, "after": self.last_seq or 0, "page": PAGE}
                try:
                    cursor = await conn.execute(_READ_PAGE, params)
                except _NO_LOG:
                    return
                rows = await cursor.fetchall()
                log_id = next((str(value) for seq, value in rows if seq is None), None)
                if log_id != self.log_id:
                    replaced = LogReplaced(self.log_id, log_id)
                    self.log_id, self.last_seq = log_id, 0
                    self.stats.replaced += 1
                    yield replaced
                    continue
                logged = [(seq, payload) for seq, payload in rows if seq is not None]
                for seq, payload in logged:
                    self.stats.replayed += 1
                    try:
                        event = parse(payload)
                    except InvalidPayload:
                        self.stats.invalid += 1
                        self.last_seq = max(self.last_seq or 0, seq)
                        continue
                    if self._fresh(event):
                        yield event
                if len(logged) < PAGE:
                    return

    async def _from_log(self) -> AsyncGenerator[StreamItem]:
        """LISTEN + log reads (a ChangeStream) until Redis answers again."""
        while True:
            try:
                stream = ChangeStream(self.dsn, channel=self.channel, since=self.last_seq,
                                      notice=self.notice, relay=self.relay)
                async with stream:
                    if stream.log_id != self.log_id and self.log_id is not None:
                        # Recreated while Redis was away: the ChangeStream cannot know.
                        async with contextlib.aclosing(self._catch_up()) as log:
                            async for item in log:
                                yield item
                        continue
                    self._fallback_stream = stream
                    try:
                        async with contextlib.aclosing(self._follow(stream)) as live:
                            async for item in live:
                                yield item
                    finally:
                        self._fallback_stream = None
                return
            except _PG_LOST:
                if await self._redis_answers():
                    return
                await asyncio.sleep(PING_S)

    async def _follow(self, stream: ChangeStream) -> AsyncGenerator[StreamItem]:
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()

        async def pump() -> None:
            async for item in stream.items():
                queue.put_nowait(item)

        task = asyncio.create_task(pump())
        ping_at = monotonic() + PING_S
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    item = await asyncio.wait_for(queue.get(), max(0.0, ping_at - monotonic()))
                    for ready in (item, *_drain(queue)):
                        if isinstance(ready, LogReplaced):
                            self.log_id, self.last_seq = ready.new_log_id, 0
                            yield ready
                        elif self._fresh(ready):
                            yield ready
                if task.done():
                    task.result()  # its failure, here
                    return
                if monotonic() >= ping_at:
                    ping_at = monotonic() + PING_S
                    if await self._redis_answers():
                        for ready in _drain(queue):
                            if isinstance(ready, ChangeEvent) and self._fresh(ready):
                                yield ready
                        return
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _redis_answers(self) -> bool:
        try:
            await client.done(self.redis.ping())
        except client.UNAVAILABLE:
            return False
        return True


def _stop_if_cancelled() -> None:
    """A cancellation a library swallowed (redis-py's and psycopg's waits may turn one into a
    timeout or a lost connection) must still end the loop: serve waits for it to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()


def _drain(queue: asyncio.Queue[StreamItem]) -> list[StreamItem]:
    ready = []
    while not queue.empty():
        ready.append(queue.get_nowait())
    return ready


def _head(fields: dict[Any, Any]) -> Head:
    def number(name: bytes) -> int | None:
        value = fields.get(name)
        return int(value) if value is not None else None

    at = fields.get(b"at")
    return Head(number(b"log_newest"), number(b"stream_newest"),
                time.time() - float(at) if at is not None else None)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
