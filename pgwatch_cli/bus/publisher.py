"""The one process per database that copies the change log into the Redis Stream.

Every ``serve --bus redis://`` process runs a candidate; the one holding the lease (lease.py)
follows the log with a ChangeStream (which also relays the WAL in ``wal`` mode) and ``XADD``s
each batch it reads at once. On taking over it continues after the stream's last entry, so a
batch is published once; an empty stream (Redis restarted) starts at the log's newest seq and
the entries' ``prev`` tells replicas to read the gap from the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable
from time import monotonic

import psycopg
from redis.asyncio import Redis

from pgwatch_cli import db
from pgwatch_cli.bus import client, entries
from pgwatch_cli.bus.keys import Keys
from pgwatch_cli.bus.lease import RENEW_S, Lease
from pgwatch_cli.bus.lease import TTL_S as LEASE_TTL_S
from pgwatch_cli.stream.events import ChangeEvent, LogReplaced, StreamItem
from pgwatch_cli.stream.listener import ChangeStream

APPLICATION_NAME = "bookwatch bus publisher"
MAXLEN = 10_000  # entries kept per stream (about; trimmed by whole nodes)
BATCH_MAX = 500
RETRY_MAX_S = 5.0


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Publisher:
    """A candidate that publishes while it holds the lease, until cancelled."""

    def __init__(
        self, redis: Redis, keys: Keys, dsn: str, *, channel: str, relay: bool,
        notice: Callable[[str], None], maxlen: int = MAXLEN,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.dsn = dsn
        self.channel = channel
        self.relay = relay
        self.notice = notice
        self.maxlen = maxlen
        self.holder = f"{uuid.uuid4().hex[:12]}"
        self.stream_key = keys.stream(channel)
        self.leading = False
        self.batches = 0
        self.fenced = 0  # batches Redis refused: another publisher had written them
        self._failure_said = ""

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                if not await self._others_publish():
                    await self._try_to_lead()
                    delay = 0.5
                await asyncio.sleep(RENEW_S * random.uniform(0.7, 1.0))
            except Exception as exc:  # any failure: retry, the others are waiting for us
                self.leading = False
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError() from exc
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                # Redis down is said once, by the replica's BusStream, which also falls back.
                if reason != self._failure_said and not isinstance(exc, client.UNAVAILABLE):
                    self._failure_said = reason
                    self.notice(f"bus publisher: {reason}; retrying")
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RETRY_MAX_S)

    async def _others_publish(self) -> bool:
        """Another process renewed the head lately: no need to ask PostgreSQL (candidates
        hold no connection while a publisher is alive)."""
        head: dict[bytes, bytes] = await client.done(
            self.redis.hgetall(self.keys.head(self.channel))
        )
        holder, at = head.get(b"holder"), head.get(b"at")
        if holder is None or at is None or holder.decode() == self.holder:
            return False
        return time.time() - float(at) < LEASE_TTL_S

    async def _try_to_lead(self) -> None:
        """Take the lease if it is free and publish while it is ours."""
        conn = await db.connect_async(self.dsn, autocommit=True,
                                      application_name=APPLICATION_NAME)
        async with conn:
            lease = Lease(conn, f"{self.keys.prefix}:{self.channel}", self.channel, self.holder)
            await lease.prepare()
            newest = await lease.take()
            if newest is not None:
                await self._lead(lease, conn, newest)

    async def _lead(
        self, lease: Lease, conn: psycopg.AsyncConnection[tuple[object, ...]], newest: int
    ) -> None:
        log_id = await _log_id(conn)
        since = await self._resume_point(log_id)
        async with ChangeStream(self.dsn, channel=self.channel, since=since,
                                notice=self.notice, relay=self.relay) as stream:
            self.leading = True
            self._failure_said = ""
            prev = stream.last_seq or 0
            log_id = stream.log_id
            # Replicas waiting for events up to here will not find them in the stream.
            await self._write_start(log_id, prev)
            queue: asyncio.Queue[StreamItem | _Failed] = asyncio.Queue()
            pump = asyncio.create_task(_pump(stream, queue))
            try:
                await self._write_head(newest, prev)
                renew_at = monotonic() + RENEW_S
                while True:
                    wait = renew_at - monotonic()
                    if wait <= 0:
                        latest = await lease.take()
                        if latest is None:
                            self.notice("bus publisher: lost the lease; another process "
                                        "publishes now")
                            return
                        await self._write_head(latest, prev)
                        renew_at = monotonic() + RENEW_S
                        continue
                    try:
                        first = await asyncio.wait_for(queue.get(), wait)
                    except TimeoutError:
                        continue
                    batch = [first]
                    while len(batch) < BATCH_MAX and not queue.empty():
                        batch.append(queue.get_nowait())
                    prev, log_id = await self._publish(batch, prev, log_id)
            finally:
                self.leading = False
                pump.cancel()
                with contextlib.suppress(BaseException):
                    await pump

    async def _resume_point(self, log_id: str | None) -> int | None:
        """After the stream's last entry when it belongs to this log, else the log's newest."""
        top: client.Entries = await client.done(
            self.redis.xrevrange(self.stream_key, count=1)
        )
        if not top:
            return None
        entry, fields = top[0]
        try:
            batch = entries.decode(fields)
        except ValueError:
            batch = None
        if batch is not None and batch.log_id == (log_id or ""):
            return entries.seq_of(entry)
        await client.done(self.redis.delete(self.stream_key))  # entries of a log that is gone
        return None

    async def _publish(
        self, batch: list[StreamItem | _Failed], prev: int, log_id: str | None
    ) -> tuple[int, str | None]:
        events: list[ChangeEvent] = []
        for item in batch:
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, LogReplaced):
                prev = await self._xadd(log_id, prev, events)
                events = []
                # The new log's seqs start again: its entries cannot follow the old ones.
                await client.done(self.redis.delete(self.stream_key))
                log_id, prev = item.new_log_id, 0
                await self._write_start(log_id, prev)
            elif item.seq is not None:  # seq-less (notify mode) events cannot be resumed
                events.append(item)
        return await self._xadd(log_id, prev, events), log_id

    async def _xadd(self, log_id: str | None, prev: int, events: list[ChangeEvent]) -> int:
        if not events:
            return prev
        last = events[-1].seq
        assert last is not None
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.stream_key, entries.of_events(log_id, prev, events).fields(),
                  id=entries.entry_id(last), maxlen=self.maxlen, approximate=True)
        pipe.hset(self.keys.head(self.channel), mapping={"stream_newest": last})
        outcome = await pipe.execute(raise_on_error=False)
        if isinstance(outcome[0], client.ResponseError):
            if "equal or smaller" not in str(outcome[0]):
                raise outcome[0]
            self.fenced += 1
        else:
            self.batches += 1
        return last

    async def _write_start(self, log_id: str | None, start: int) -> None:
        await client.done(self.redis.hset(self.keys.head(self.channel), mapping={
            "log_id": log_id or "", "from": start,
        }))

    async def _write_head(self, log_newest: int, published: int) -> None:
        """``published``: the seq the stream is complete up to (its last batch, or where this
        publisher started)."""
        await client.done(self.redis.hset(self.keys.head(self.channel), mapping={
            "log_newest": log_newest, "stream_newest": published, "holder": self.holder,
            "at": f"{time.time():.3f}",
        }))


async def _pump(stream: ChangeStream, queue: asyncio.Queue[StreamItem | _Failed]) -> None:
    try:
        async for item in stream.items():
            queue.put_nowait(item)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        queue.put_nowait(_Failed(exc))


async def _log_id(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> str | None:
    try:
        cursor = await conn.execute("SELECT value FROM bookwatch.meta WHERE key = 'log_id'")
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None
    row = await cursor.fetchone()
    return str(row[0]) if row is not None and row[0] is not None else None
