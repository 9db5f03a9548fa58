"""``GET /events``: one SSE client after another, on aiohttp, whose request exposes its transport.

A stream is registered with the fan-out (which writes live events straight to the transport),
replays the change log first when it resumes, joins presence, and then only waits: for the
client to go away (aiohttp cancels the handler), to be cut, or for the server to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from aiohttp import web

from pgwatch_cli.auth import Scope
from pgwatch_cli.bus.source import EventSource
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.commands.serve import scopes, sse
from pgwatch_cli.commands.serve.connections import AsyncConn, Connections
from pgwatch_cli.commands.serve.fanout import Client, Fanout, reset_frame
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.presence import Presence
from pgwatch_cli.errors import DatabaseUnreachable
from pgwatch_cli.stream.events import ChangeEvent, InvalidPayload, LogReplaced, parse
from pgwatch_cli.stream.filters import Filters

REPLAY_PAGE = 500
REPLAY_PAGE_BYTES = 1 << 20
# Replays reading and encoding a page at the same time (the others wait for a turn).
CONCURRENT_REPLAYS = 4
# Every 0.5 s the clients' unsent bytes are added up; past the process's budget the ones
# furthest behind are reset until it is respected.
BUDGET_CHECK_S = 0.5

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
    # The log the resume point belongs to (``TAG`` of ``TAG:SEQ``; None: a bare seq).
    resume_log: str | None = None
    viewer: str | None = None
    viewing: str | None = None
    scope: Scope | None = None  # a signed token's; None: the shared token, or none needed


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
        buffer_budget: int = 256 << 20,
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
        self.replays = asyncio.Semaphore(CONCURRENT_REPLAYS)
        self.buffer_budget = buffer_budget

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
        stream, fanout = self.stream, self.fanout
        log_id = stream.log_id
        fanout.use_log(log_id)
        async for item in stream.items():
            if isinstance(item, LogReplaced):
                log_id = stream.log_id
                fanout.log_replaced(item)  # every client refetches
                continue
            if stream.log_id is not log_id:  # first read of the log, or an upgrade in place
                log_id = stream.log_id
                fanout.use_log(log_id)
            deliver(item)
            burst += len(item.to_wire())
            if burst >= burst_limit:
                burst = 0
                await asyncio.sleep(0)

    async def keep_budget(self) -> None:
        """Hold the bytes all clients of this process have not taken yet under the budget."""
        while True:
            await asyncio.sleep(BUDGET_CHECK_S)
            self.fanout.keep_budget(self.buffer_budget)

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
        try:
            await response.prepare(request)
        except ConnectionResetError:  # the client left before its headers were written
            return response
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
        joined: str | None = None
        expiry = None
        if wanted.scope is not None:  # scopes hook: the stream ends when its token does
            expiry = loop.call_later(max(0.0, wanted.scope.expires_at - time.time()),
                                     self._expire, client)
        try:
            fanout.write(client, sse.retry_hint())
            if wanted.viewer is not None and wanted.viewing is not None:
                # scopes hook: a row the token may not read is not joined (None)
                joined = scopes.presence_key(wanted.scope, wanted.viewing)
                if joined is not None:
                    self.presence.join(joined, wanted.viewer, client)
            if wanted.resume_after is not None:
                try:
                    last = await Replay(self, client, response).run(
                        wanted.resume_after, wanted.resume_log)
                except LogUnavailable:
                    fanout.end(client, "change log unavailable")
                else:
                    fanout.live(client, last)
            await client.done()
        finally:
            if expiry is not None:
                expiry.cancel()
            fanout.end(client, "disconnected")
            if joined is not None:
                assert wanted.viewer is not None
                self.presence.leave(joined, wanted.viewer, client)
        return response

    def _expire(self, client: Client) -> None:
        """The token ran out: ``event: reset`` with reason token-expired, then the end."""
        self.counters.resets += 1
        self.fanout.write(client, scopes.expired_frame())
        self.fanout.end(client, scopes.EXPIRED_REASON)


class LogUnavailable(Exception):
    """The change log could not be read; the client retries with the same Last-Event-ID."""


class Replay:
    """Sends a resuming client the logged events after its ``Last-Event-ID``."""

    def __init__(self, relay: Relay, client: Client, response: web.StreamResponse) -> None:
        self.relay = relay
        self.client = client
        self.response = response

    async def run(self, after: int, log: str | None) -> int:
        """The seq live events must be newer than; LogUnavailable when it cannot be read.
        ``log``: the tag of the log ``after`` belongs to (None: trust the bare seq)."""
        relay, counters = self.relay, self.relay.counters
        counters.resumes += 1
        channel = relay.stream.channel
        try:
            async with relay.connections.connection() as conn:
                oldest, newest, log_id = await _log_bounds(conn, channel)
            tag = sse.log_tag(log_id)
            reason = None
            if log is not None and log != tag:
                reason = (f"event {log}:{after} belongs to a change log that was replaced; "
                          "refetch")
            elif newest is None or after > newest:
                reason = f"seq {after} is not in this server's change log"
            elif oldest is not None and oldest > after + 1:
                reason = f"the change log no longer reaches back to seq {after + 1}"
            if reason is not None:
                counters.resets += 1
                resume_at = newest if newest is not None else after
                await self._send(reset_frame(resume_at, reason, tag))
                return resume_at
            while self.client.ended is None:
                # Few replays read and encode at once: a crowd resuming together costs a few
                # pages of memory and CPU at a time, and live clients keep their latency.
                async with relay.replays:
                    chosen, count, after = await self._read_page(channel, after)
                if chosen:
                    await self._send(b"".join(chosen))
                    counters.events_relayed += len(chosen)
                del chosen  # a page's memory is not held while the next one is read
                counters.replayed += count
                if count < REPLAY_PAGE:
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

    async def _read_page(self, channel: str, after: int) -> tuple[list[bytes], int, int]:
        """The frames of a page of logged events after ``after`` that this client wants (at
        most REPLAY_PAGE events and about REPLAY_PAGE_BYTES), how many rows it had, and the
        seq it reached; the connection is given back before they are written (a slow client
        must not hold one of the few connections)."""
        fanout = self.relay.fanout
        matches = self.client.filters.matches
        async with self.relay.connections.connection() as conn:
            cursor = await conn.execute(sqlfiles.query("replay_page"), {
                "channel": channel, "after": after, "page": REPLAY_PAGE,
                "page_bytes": REPLAY_PAGE_BYTES, "max_event": fanout.max_event_bytes})
            rows = await cursor.fetchall()
        chosen: list[bytes] = []
        for seq, payload, size in rows:
            after = seq
            if payload is None:
                # Too large: the same reset for everyone, whatever their filters.
                chosen.append(fanout.oversized(seq, size))
                continue
            try:
                event = logged_event(seq, payload)
            except InvalidPayload:
                if is_gap(payload):
                    chosen.append(fanout.gap_frame(seq))
                continue  # skipped and counted by the live stream, never fatal
            if matches(event):
                chosen.append(fanout.encode(event))
        return chosen, len(rows), after


def logged_event(seq: int, payload: str) -> ChangeEvent:
    """The event of a change-log row, numbered by the row's seq column: the only seq to trust
    (a payload may carry a forged one)."""
    event = parse(payload)
    return event if event.seq == seq else event.model_copy(update={"seq": seq})


def is_gap(payload: str) -> bool:
    """A GAP marker (docs/reference.md: changes the wal relay lost), which is no change event."""
    if '"GAP"' not in payload:
        return False
    try:
        data = json.loads(payload)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("action") == "GAP"


async def _log_bounds(
    conn: AsyncConn, channel: str
) -> tuple[int | None, int | None, str | None]:
    """Oldest and newest logged seq of ``channel`` and the log's identity; (None, None, None)
    when there is no change log."""
    try:
        cursor = await conn.execute(sqlfiles.query("log_oldest_seq"), {"channel": channel})
        oldest_row = await cursor.fetchone()
        cursor = await conn.execute(sqlfiles.query("log_newest_seq"), {"channel": channel})
        newest_row = await cursor.fetchone()
        cursor = await conn.execute(sqlfiles.query("meta_value"), {"key": "log_id"})
        log_row = await cursor.fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return None, None, None
    oldest: Any = oldest_row[0] if oldest_row else None
    newest: Any = newest_row[0] if newest_row else None
    return oldest, newest, str(log_row[0]) if log_row and log_row[0] is not None else None


def bad_request(message: str, headers: Mapping[str, str]) -> web.Response:
    return web.Response(status=400, text=json.dumps({"error": message}),
                        content_type="application/json", headers=headers)
