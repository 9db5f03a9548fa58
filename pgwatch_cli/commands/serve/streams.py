"""One SSE client after another: resume from the change log, relay live events, heartbeats,
presence, and being cut loose when it falls behind or the server stops.

Every client is one hub subscription. Its task writes frames; a second, mostly idle task
waits for the disconnect (so presence updates at once) and sends heartbeats. A client that
cannot keep up is interrupted from outside, because it may be stuck in a write that only the
peer reading could finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import psycopg
from starlette.types import Message, Receive, Scope, Send

from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.commands.serve import sse
from pgwatch_cli.commands.serve.connections import AsyncConn, Connections
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.errors import DatabaseUnreachable
from pgwatch_cli.stream.events import ChangeEvent, InvalidPayload
from pgwatch_cli.stream.filters import Filters
from pgwatch_cli.stream.hub import Hub, SourceEnded, SubscriberLagged, Subscription
from pgwatch_cli.stream.listener import ChangeStream, read_log

REPLAY_PAGE = 500
# How long the goodbye (a reset, the end of the body) may take before the connection is simply
# dropped: a client that does not read would otherwise hold it forever.
FINAL_WRITE_S = 1.0
WATCHDOG_INTERVAL_S = 0.5

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    # Reverse proxies (nginx) buffer responses unless told not to, which would hold events back.
    (b"x-accel-buffering", b"no"),
]


class Ending(Enum):
    """Why a stream ended."""

    SOURCE_ENDED = "source ended"
    DISCONNECTED = "client disconnected"
    LAGGING = "client fell behind"
    STOPPING = "server stopping"
    LOG_UNAVAILABLE = "change log unavailable"


@dataclass(frozen=True)
class StreamRequest:
    """What one ``GET /events`` asked for."""

    filters: Filters
    resume_after: int | None = None
    viewer: str | None = None
    viewing: str | None = None


class Relay:
    """Everything the client streams of one server process share."""

    def __init__(
        self,
        *,
        stream: ChangeStream,
        hub: Hub,
        presence: Presence,
        connections: Connections,
        heartbeat_s: float = 15.0,
        client_buffer: int = 1000,
    ) -> None:
        self.stream = stream
        self.hub = hub
        self.presence = presence
        self.connections = connections
        self.heartbeat_s = heartbeat_s
        self.client_buffer = client_buffer
        self.counters = RelayCounters()
        self.frames = sse.FrameCache()
        self.clients: set[ClientStream] = set()
        self.stopping = False

    def open(self, request: StreamRequest) -> ClientStream:
        return ClientStream(self, request)

    def stop(self) -> None:
        """End every stream (server shutdown): browsers reconnect to the next server."""
        self.stopping = True
        for client in list(self.clients):
            client.interrupt(Ending.STOPPING)

    async def watchdog(self) -> None:
        """Cut clients the hub gave up on while they were stuck writing to a peer that does
        not read (a client waiting for its next event notices by itself)."""
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            for client in list(self.clients):
                if client.lagging:
                    client.interrupt(Ending.LAGGING)


class ClientStream:
    """The ASGI response of one ``GET /events``."""

    def __init__(self, relay: Relay, request: StreamRequest) -> None:
        self.relay = relay
        self.request = request
        self._send: Send | None = None
        self._subscription: Subscription | None = None
        self._write_lock = asyncio.Lock()
        self._ending: Ending | None = None
        self._interrupter: asyncio.Timeout | None = None
        self._finished = False
        self._side_writes: set[asyncio.Task[None]] = set()

    @property
    def lagging(self) -> bool:
        return self._subscription is not None and self._subscription.lagged

    def interrupt(self, why: Ending) -> None:
        """Stop relaying (from another task), even in the middle of a blocked write."""
        if self._ending is None:
            self._ending = why
        interrupter = self._interrupter
        if interrupter is not None and interrupter.when() is None:
            interrupter.reschedule(asyncio.get_running_loop().time())

    def push(self, frame: bytes) -> None:
        """Queue a frame from outside the relay (presence); writes keep their order."""
        task = asyncio.create_task(self._write(frame))
        self._side_writes.add(task)
        task.add_done_callback(self._side_writes.discard)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = self.relay
        # Subscribe before anything else: what commits from here on reaches this queue, what
        # committed before is in the log, so a resume has no gap.
        subscription = self._subscription = relay.hub.subscribe(queue_size=relay.client_buffer)
        self._send = send
        relay.clients.add(self)
        relay.counters.streams_opened += 1
        watcher: asyncio.Task[None] | None = None
        request = self.request
        joined = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await self._write(sse.retry_hint())
            if request.viewer is not None and request.viewing is not None:
                relay.presence.join(request.viewing, request.viewer, self)
                joined = True
            watcher = asyncio.create_task(self._watch(receive))
            ending = await self._relay(subscription)
            await self._finish(ending)
        finally:
            subscription.close()
            relay.clients.discard(self)
            if joined:
                assert request.viewer is not None and request.viewing is not None
                relay.presence.leave(request.viewing, request.viewer, self)
            for task in [watcher, *self._side_writes]:
                if task is not None:
                    task.cancel()

    # -- relaying ----------------------------------------------------------------------------

    async def _relay(self, subscription: Subscription) -> Ending:
        if self.relay.stopping:
            return Ending.STOPPING
        try:
            async with asyncio.timeout(None) as self._interrupter:
                if self._ending is not None:  # interrupted before it could be
                    return self._ending
                last = self.request.resume_after
                if last is not None:
                    last = await self._replay(last)
                    if last is None:
                        return Ending.LOG_UNAVAILABLE
                await self._live(subscription, last)
                return Ending.SOURCE_ENDED
        except SubscriberLagged:
            return Ending.LAGGING
        except SourceEnded:
            return Ending.SOURCE_ENDED
        except TimeoutError:
            return self._ending or Ending.STOPPING
        finally:
            self._interrupter = None

    async def _live(self, subscription: Subscription, last: int | None) -> None:
        """Relay live events; ``last``: replayed up to there, so skip what is not newer."""
        matches = self.request.filters.matches
        frames = self.relay.frames
        counters = self.relay.counters
        while True:
            try:
                event = await anext(subscription)
            except StopAsyncIteration:
                return
            chunks = []
            # Whatever queued up meanwhile goes out in one write: under load a client gets
            # fewer, larger writes instead of falling behind.
            while True:
                seq = event.seq
                if (seq is None or last is None or seq > last) and matches(event):
                    chunks.append(frames(event))
                if not subscription.pending:
                    break
                event = await anext(subscription)
            if chunks:
                await self._write(b"".join(chunks))
                counters.events_relayed += len(chunks)

    async def _replay(self, after: int) -> int | None:
        """Send the logged events after ``after`` (or a reset if the log does not reach back
        that far). Returns the seq live events must be newer than; None: log unavailable."""
        counters = self.relay.counters
        counters.resumes += 1
        channel = self.relay.stream.channel
        matches = self.request.filters.matches
        try:
            async with self.relay.connections.connection() as conn:
                oldest, newest = await _log_bounds(conn, channel)
            if newest is None or after > newest or (oldest is not None and oldest > after + 1):
                await self._reset(
                    newest, f"the change log no longer reaches back to seq {after + 1}"
                    if newest is not None and after <= newest
                    else f"seq {after} is not in this server's change log",
                )
                return newest if newest is not None else after
            while True:
                page, after = await self._read_page(channel, after)
                chunks = [sse.change_frame(event) for event in page if matches(event)]
                if chunks:
                    await self._write(b"".join(chunks))
                    counters.events_relayed += len(chunks)
                counters.replayed += len(page)
                if len(page) < REPLAY_PAGE:
                    return after
        except (psycopg.Error, DatabaseUnreachable):
            # The browser retries later with the same Last-Event-ID; nothing is skipped.
            await self._write(sse.comment("change log unavailable; retry later"))
            return None

    async def _read_page(self, channel: str, after: int) -> tuple[list[ChangeEvent], int]:
        """Up to a page of logged events after ``after``, with the connection given back
        before writing them (a slow client must not hold one of the few connections)."""
        page: list[ChangeEvent] = []
        skipped: list[int] = []

        def invalid(seq: int, _exc: InvalidPayload) -> None:
            skipped.append(seq)

        async with self.relay.connections.connection() as conn:
            async for event in read_log(conn, channel, after, REPLAY_PAGE, on_invalid=invalid):
                page.append(event)
                if len(page) >= REPLAY_PAGE:
                    break
        seqs = [event.seq for event in page if event.seq is not None] + skipped
        return page, max(seqs, default=after)

    async def _reset(self, resume_at: int | None, reason: str) -> None:
        """Tell the client to refetch its state; it resumes after ``resume_at`` if it comes back."""
        self.relay.counters.resets += 1
        body = json.dumps({"reason": reason, "last_seq": resume_at})
        await self._write(sse.frame(body, event="reset", event_id=resume_at))

    # -- the other task: disconnects and heartbeats --------------------------------------

    async def _watch(self, receive: Receive) -> None:
        while True:
            try:
                async with asyncio.timeout(self.relay.heartbeat_s):
                    message: Message = await receive()
            except TimeoutError:
                await self._write(sse.HEARTBEAT)
                continue
            if message["type"] == "http.disconnect":
                self.interrupt(Ending.DISCONNECTED)
                return

    # -- writing -------------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        assert self._send is not None
        async with self._write_lock:
            if not self._finished:
                await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def _finish(self, ending: Ending) -> None:
        if ending is Ending.DISCONNECTED:
            return
        counters = self.relay.counters
        goodbye: Callable[[], Awaitable[None]] | None = None
        if ending is Ending.LAGGING:
            counters.lagging_cut += 1

            async def goodbye() -> None:
                await self._reset(self.relay.stream.last_seq, "this client fell too far behind")

        # A peer that does not read cannot take even this: then the connection is dropped.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FINAL_WRITE_S):
                if goodbye is not None:
                    await goodbye()
                async with self._write_lock:
                    self._finished = True
                    assert self._send is not None
                    await self._send(
                        {"type": "http.response.body", "body": b"", "more_body": False}
                    )


async def _log_bounds(conn: AsyncConn, channel: str) -> tuple[int | None, int | None]:
    """Oldest and newest logged seq of ``channel``; (None, None) when there is no change log."""
    try:
        cursor = await conn.execute(sqlfiles.query("log_oldest_seq"), {"channel": channel})
        oldest_row = await cursor.fetchone()
        cursor = await conn.execute(sqlfiles.query("log_newest_seq"), {"channel": channel})
        newest_row = await cursor.fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None, None
    oldest: Any = oldest_row[0] if oldest_row else None
    newest: Any = newest_row[0] if newest_row else None
    return oldest, newest
