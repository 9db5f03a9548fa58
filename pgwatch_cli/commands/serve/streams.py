"""``GET /events``: one SSE client after another, on aiohttp, whose request exposes its transport.

A stream is registered with the fan-out (which writes live events straight to the transport),
replays the change log first when it resumes, joins presence, and then only waits: for the
client to go away (aiohttp cancels the handler), to be cut, or for the server to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web

from pgwatch_cli.bus.source import EventSource
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.commands.serve import sse
from pgwatch_cli.commands.serve.connections import AsyncConn, Connections
from pgwatch_cli.commands.serve.fanout import Client, Fanout, reset_frame
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.errors import DatabaseUnreachable
from pgwatch_cli.stream.events import ChangeEvent, InvalidPayload, LogReplaced
from pgwatch_cli.stream.filters import Filters
from pgwatch_cli.stream.listener import read_log

REPLAY_PAGE = 500

HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-store",
    # Reverse proxies (nginx) buffer responses unless told not to, which would hold events back.
    "X-Accel-Buffering": "no",
}


@dataclass(frozen=True)
class StreamRequest:
    """What one ``GET /events`` asked for."""

    filters: Filters
    resume_after: int | None = None
    viewer: str | None = None
    viewing: str | None = None


@dataclass(frozen=True)
class WorkerInfo:
    """Which of ``--workers`` processes this is, and every worker's open streams."""

    index: int = 0
    count: int = 1
    clients: Any = None  # a multiprocessing Array of counts, one per worker (None: one worker)

    def total_clients(self, own: int) -> int:
        if self.clients is None:
            return own
        return int(sum(self.clients))

    def record(self, count: int) -> None:
        if self.clients is not None:
            self.clients[self.index] = count


class Relay:
    """Everything the client streams of one server process share."""

    def __init__(
        self,
        *,
        stream: EventSource,  # a ChangeStream, or a BusStream with --bus redis://
        presence: Presence,
        connections: Connections,
        fanout: Fanout,
        heartbeat_s: float = 15.0,
        max_clients: int = 10000,
        worker: WorkerInfo | None = None,
    ) -> None:
        self.stream = stream
        self.presence = presence
        self.connections = connections
        self.fanout = fanout
        self.heartbeat_s = heartbeat_s
        self.max_clients = max_clients
        self.worker = worker or WorkerInfo()
        self.counters: RelayCounters = fanout.counters
        self.stopping = False

    @property
    def clients(self) -> Mapping[Client, None]:
        return self.fanout.clients

    async def pump(self) -> None:
        """Fan every event of the stream out until it ends or this task is cancelled."""
        deliver = self.fanout.deliver
        # The stream hands over a whole page of the log at once after a wake-up. Events that
        # arrive together go out in one pass, but a pass may not outgrow what a healthy client
        # takes in one go, or a burst of big events would cut every client: past a quarter of
        # the per-client buffer the loop gets a turn to flush and drain the sockets.
        burst_limit = self.fanout.buffer_bytes // 4
        burst = 0
        async for item in self.stream.items():
            if isinstance(item, LogReplaced):
                self.fanout.log_replaced()  # every client refetches: seqs start over
                continue
            deliver(item)
            burst += len(item.to_wire())
            if burst >= burst_limit:
                burst = 0
                await asyncio.sleep(0)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            self.fanout.broadcast(sse.HEARTBEAT)

    def stop(self) -> None:
        """End every stream (server shutdown): browsers reconnect to the next server."""
        self.stopping = True
        self.fanout.stop()

    async def open(
        self, request: web.BaseRequest, wanted: StreamRequest, headers: Mapping[str, str]
    ) -> web.StreamResponse:
        if self.stopping:
            return web.Response(status=503, headers={"Retry-After": "3", **headers})
        if len(self.fanout.clients) >= self.max_clients:
            self.counters.refused += 1
            # Spread the retries: a crowd refused together should not come back together.
            retry = str(2 + len(self.fanout.clients) % 8)
            return web.json_response(
                {"error": "too many clients; retry later"}, status=503,
                headers={"Retry-After": retry, **headers},
            )
        response = web.StreamResponse(status=200, headers={**HEADERS, **headers})
        # The stream ends when the connection does: the next request gets a fresh one.
        response.force_close()
        chunked = request.version >= (1, 1)
        if chunked:  # the fan-out frames each write as a chunk itself
            response.enable_chunked_encoding()
        await response.prepare(request)
        transport = request.transport
        if transport is None:  # gone while the headers were written
            return response
        loop = asyncio.get_running_loop()
        client = Client(self.fanout, transport, wanted.filters,
                        catching_up=wanted.resume_after is not None,
                        done=loop.create_future(), chunked=chunked)
        fanout = self.fanout
        fanout.add(client)
        self.counters.streams_opened += 1
        joined = False
        try:
            fanout.write(client, sse.retry_hint())
            if wanted.viewer is not None and wanted.viewing is not None:
                self.presence.join(wanted.viewing, wanted.viewer, client)
                joined = True
            if wanted.resume_after is not None:
                try:
                    last = await Replay(self, client, response).run(wanted.resume_after)
                except LogUnavailable:
                    fanout.end(client, "change log unavailable")
                else:
                    fanout.live(client, last)
            await client.done()
        finally:
            fanout.end(client, "disconnected")
            if joined:
                assert wanted.viewer is not None and wanted.viewing is not None
                self.presence.leave(wanted.viewing, wanted.viewer, client)
        return response


class LogUnavailable(Exception):
    """The change log could not be read; the client retries with the same Last-Event-ID."""


class Replay:
    """Sends a resuming client the logged events after its ``Last-Event-ID``."""

    def __init__(self, relay: Relay, client: Client, response: web.StreamResponse) -> None:
        self.relay = relay
        self.client = client
        self.response = response

    async def run(self, after: int) -> int:
        """The seq live events must be newer than; LogUnavailable when it cannot be read."""
        relay, counters = self.relay, self.relay.counters
        counters.resumes += 1
        channel = relay.stream.channel
        try:
            async with relay.connections.connection() as conn:
                oldest, newest = await _log_bounds(conn, channel)
            if newest is None or after > newest or (oldest is not None and oldest > after + 1):
                counters.resets += 1
                reason = (f"the change log no longer reaches back to seq {after + 1}"
                          if newest is not None and after <= newest
                          else f"seq {after} is not in this server's change log")
                resume_at = newest if newest is not None else after
                await self._send(reset_frame(resume_at, reason))
                return resume_at
            frames = relay.fanout.frames
            matches = self.client.filters.matches
            while self.client.ended is None:
                page, after = await self._read_page(channel, after)
                chosen = [frames(event) for event in page if matches(event)]
                if chosen:
                    await self._send(b"".join(chosen))
                    counters.events_relayed += len(chosen)
                counters.replayed += len(page)
                if len(page) < REPLAY_PAGE:
                    break
            return after
        except (psycopg.Error, DatabaseUnreachable):
            # The browser retries later with the same Last-Event-ID; nothing is skipped.
            with contextlib.suppress(ConnectionError):
                await self._send(sse.comment("change log unavailable; retry later"))
            raise LogUnavailable() from None

    async def _send(self, data: bytes) -> None:
        # Through aiohttp's writer, which waits while the client's buffer is full: a replay
        # may be long, and a slow reader should get it slowly, not be cut for it.
        if self.client.ended is None:
            await self.response.write(data)

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


def bad_request(message: str, headers: Mapping[str, str]) -> web.Response:
    return web.Response(status=400, text=json.dumps({"error": message}),
                        content_type="application/json", headers=headers)
