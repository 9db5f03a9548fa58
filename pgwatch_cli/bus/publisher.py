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
from typing import Any

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


class _LeaseLost:
    """Another process holds the lease now: stop publishing."""


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
        self.published = 0  # the seq the stream is complete up to (while leading)
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
            queue: asyncio.Queue[StreamItem | _Failed | _LeaseLost] = asyncio.Queue()
            pump = asyncio.create_task(_pump(stream, queue))
            self.published = prev
            await self._write_head(newest, published=prev)
            renewer = asyncio.create_task(self._keep_lease(lease, queue))
            try:
                while True:
                    batch = [await queue.get()]
                    while len(batch) < BATCH_MAX and not queue.empty():
                        batch.append(queue.get_nowait())
                    if any(isinstance(item, _LeaseLost) for item in batch):
                        self.notice("bus publisher: lost the lease; another process "
                                    "publishes now")
                        return
                    log_id = await self._publish(batch, log_id)
            finally:
                self.leading = False
                for task in (pump, renewer):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _keep_lease(
        self, lease: Lease, queue: asyncio.Queue[StreamItem | _Failed | _LeaseLost]
    ) -> None:
        """Renews the lease and the head every RENEW_S beside the publishing, which must not
        wait for PostgreSQL (a batch read during a renewal would be held up by it); its end
        (lease lost, or a failure) reaches the publishing loop through the queue."""
        try:
            while True:
                await asyncio.sleep(RENEW_S)
                latest = await lease.take()
                if latest is None:
                    queue.put_nowait(_LeaseLost())
                    return
                await self._write_head(latest)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait(_Failed(exc))

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
        self, batch: list[StreamItem | _Failed | _LeaseLost], log_id: str | None
    ) -> str | None:
        events: list[ChangeEvent] = []
        for item in batch:
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, LogReplaced):
                await self._xadd(log_id, events)
                events = []
                # The new log's seqs start again: its entries cannot follow the old ones.
                await client.done(self.redis.delete(self.stream_key))
                log_id, self.published = item.new_log_id, 0
                await self._write_start(log_id, 0)
            elif isinstance(item, ChangeEvent) and item.seq is not None:
                events.append(item)  # seq-less (notify mode) events cannot be resumed
        await self._xadd(log_id, events)
        return log_id

    async def _xadd(self, log_id: str | None, events: list[ChangeEvent]) -> None:
        if not events:
            return
        last = events[-1].seq
        assert last is not None
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(self.stream_key, entries.of_events(log_id, self.published, events).fields(),
                  id=entries.entry_id(last), maxlen=self.maxlen, approximate=True)
        pipe.hset(self.keys.head(self.channel), mapping={"stream_newest": last})
        outcome = await pipe.execute(raise_on_error=False)
        if isinstance(outcome[0], client.ResponseError):
            if "equal or smaller" not in str(outcome[0]):
                raise outcome[0]
            self.fenced += 1
        else:
            self.batches += 1
        self.published = last

    async def _write_start(self, log_id: str | None, start: int) -> None:
        await client.done(self.redis.hset(self.keys.head(self.channel), mapping={
            "log_id": log_id or "", "from": start,
        }))

    async def _write_head(self, log_newest: int, *, published: int | None = None) -> None:
        """``published``: the seq the stream is complete up to (where this publisher starts);
        afterwards only each batch's own write moves it, so it never goes back."""
        head: dict[Any, Any] = {"log_newest": log_newest, "holder": self.holder,
                                "at": f"{time.time():.3f}"}  # redis-py's types are invariant
        if published is not None:
            head["stream_newest"] = published
        await client.done(self.redis.hset(self.keys.head(self.channel), mapping=head))


async def _pump(
    stream: ChangeStream, queue: asyncio.Queue[StreamItem | _Failed | _LeaseLost]
) -> None:
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
