"""The fan-out: every event encoded once and written to the transport of each client that wants
it, in one pass, with no task, queue or await per client.

Clients are indexed by the most selective part of their filters (an id, else a table, else an
action, else "everything"), so an event only touches its audience. Each client's backpressure
is its transport's write buffer: past ``buffer_bytes`` the client gets ``event: reset`` and its
connection is closed (aborted with RST after ``FINAL_WRITE_S`` if it does not take even that).
Events that arrive when the loop is busy are gathered and each client gets one write for all
of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import struct
import time
import weakref
from collections.abc import Callable, Iterable
from datetime import datetime

from pgwatch_cli.commands.serve import scopes, sse
from pgwatch_cli.commands.serve.metrics import RelayCounters
from pgwatch_cli.commands.serve.scopes import ScopedFilters
from pgwatch_cli.stream.events import ChangeEvent, LogReplaced
from pgwatch_cli.stream.filters import Filters

# How long a cut client may take to read its goodbye before the connection is reset.
FINAL_WRITE_S = 1.0
# While the relay lags, clients are reset at most this often (and once more when it caught up).
LAG_RESET_INTERVAL_S = 1.0
_LINGER_RESET = struct.pack("ii", 1, 0)
GAP_REASON = "changes were lost before reaching the change log (GAP); refetch"

Bucket = dict["Client", None]


class Client:
    """One open ``/events`` stream, as the fan-out sees it."""

    __slots__ = ("__weakref__", "_buffered", "_done", "_fanout", "_transport", "_write",
                 "chunked", "ended", "exact", "filters", "keys", "pending", "pending_bytes")

    def __init__(self, fanout: Fanout, transport: asyncio.Transport, filters: Filters, *,
                 catching_up: bool, done: asyncio.Future[str], chunked: bool = True) -> None:
        self._fanout = fanout
        # HTTP/1.1 bodies without a length are chunked; an HTTP/1.0 client (nginx's default
        # towards upstreams) gets the bare frames, its body ending when the connection does.
        self.chunked = chunked
        self._transport = transport
        # Bound once: the fan-out calls these for every client and event.
        self._write = transport.write
        self._buffered = transport.get_write_buffer_size
        self._done = done
        self.filters = filters
        self.keys, self.exact = _index_keys(filters)
        # While the change log is replayed to this client, live frames wait here (seq, frame).
        self.pending: list[tuple[int | None, bytes]] | None = [] if catching_up else None
        self.pending_bytes = 0
        self.ended: str | None = None

    @property
    def transport(self) -> asyncio.Transport:
        return self._transport

    def done(self) -> asyncio.Future[str]:
        return self._done

    def push(self, frame: bytes) -> None:
        """Write an SSE frame from outside the fan-out (presence)."""
        self._fanout.write(self, frame)


@functools.lru_cache(maxsize=4096)
def _index_keys(filters: Filters) -> tuple[tuple[str, frozenset[str]], bool]:
    """Where the client is indexed, and whether that index alone decides what it gets."""
    if isinstance(filters, ScopedFilters):  # scopes hook: a token narrows what it gets
        return scopes.index_keys(filters, _filter_keys(filters))
    return _filter_keys(filters)


def _filter_keys(filters: Filters) -> tuple[tuple[str, frozenset[str]], bool]:
    others = (filters.tables, filters.actions, filters.ids, filters.actors)
    if filters.ids:
        exact = not (filters.tables or filters.actions or filters.actors)
        return ("id", filters.ids), exact
    if filters.tables:
        bare = frozenset(name.rsplit(".", 1)[-1] for name in filters.tables)
        exact = bare == filters.tables and not (filters.actions or filters.actors)
        return ("table", bare), exact
    if filters.actions:
        return ("action", filters.actions), not filters.actors
    return ("all", frozenset({""})), not any(others)


class Fanout:
    """All open streams of one process and the one pass that writes an event to them."""

    def __init__(
        self,
        counters: RelayCounters,
        *,
        buffer_bytes: int = 1 << 20,
        max_lag_s: float = 10.0,
        clock_offset_s: float = 0.0,
        on_count: Callable[[int], None] | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        self.counters = counters
        self.buffer_bytes = buffer_bytes
        # A bigger event is not sent, live or replayed: its audience gets a reset naming it.
        self.max_event_bytes = max_event_bytes or buffer_bytes // 2
        self.max_lag_s = max_lag_s
        # The database's clock minus ours: the lag is measured on the database's clock.
        self.clock_offset_s = clock_offset_s
        self.frames = sse.FrameCache()
        self.clients: dict[Client, None] = {}
        self._index: dict[str, dict[str, Bucket]] = {
            "all": {}, "id": {}, "table": {}, "action": {}, scopes.TENANT_INDEX: {}}
        self._batch: list[ChangeEvent] = []
        self._flush_scheduled = False
        # Resumed clients whose replay got ahead of the live stream: the seq they wait for.
        self._awaiting: weakref.WeakKeyDictionary[Client, int] = weakref.WeakKeyDictionary()
        self._on_count = on_count
        self.delivered = 0  # events fanned out
        self.lagging_since: float | None = None
        self._lag_reset_at = 0.0
        self._skipped_since_reset: int | None = None

    # -- clients -------------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients[client] = None
        kind, keys = client.keys
        index = self._index[kind]
        for key in keys:
            index.setdefault(key, {})[client] = None
        if self._on_count is not None:
            self._on_count(len(self.clients))

    def remove(self, client: Client) -> None:
        if self.clients.pop(client, 0) is None:
            kind, keys = client.keys
            index = self._index[kind]
            for key in keys:
                bucket = index.get(key)
                if bucket is not None:
                    bucket.pop(client, None)
                    if not bucket:
                        del index[key]
            if self._on_count is not None:
                self._on_count(len(self.clients))

    def live(self, client: Client, after: int | None) -> None:
        """The replay is done: write what arrived meanwhile (newer than ``after``), go live.

        The replay reads the change log itself and may get ahead of the live stream (or of the
        batch waiting to be flushed): until the stream has delivered ``after`` as well, the
        client keeps holding live frames, or it would get those events a second time."""
        self.flush()
        if after is not None and (self.last_seq_hint is None or self.last_seq_hint < after):
            self._awaiting[client] = after
            return
        self._go_live(client, after)

    def _release_caught_up(self) -> None:
        seen = self.last_seq_hint
        for client, after in list(self._awaiting.items()):
            if client.ended is not None:
                del self._awaiting[client]
            elif seen is not None and seen >= after:
                del self._awaiting[client]
                self._go_live(client, after)

    def _go_live(self, client: Client, after: int | None) -> None:
        pending, client.pending = client.pending or [], None
        client.pending_bytes = 0
        frames = [frame for seq, frame in pending if seq is None or after is None or seq > after]
        if frames and client.ended is None:
            self.counters.events_relayed += len(frames)
            self.write(client, b"".join(frames))

    def write(self, client: Client, frame: bytes) -> bool:
        """Write an SSE frame; False when that overflowed and cut the client."""
        if client.ended is not None:
            return False
        transport = client._transport
        if transport.is_closing():
            self.end(client, "disconnected")
            return False
        data = sse.chunk(frame) if client.chunked else frame
        if transport.get_write_buffer_size() + len(data) > self.buffer_bytes:
            self.cut(client)
            return False
        transport.write(data)
        return True

    def cut(self, client: Client) -> None:
        """The client fell behind: tell it to refetch, then close its connection."""
        if client.ended is not None:
            return
        self.counters.lagging_cut += 1
        self.counters.resets += 1
        goodbye = reset_frame(self.last_seq_hint, "this client fell too far behind",
                              self.frames.tag)
        client._transport.write(sse.chunk(goodbye) if client.chunked else goodbye)
        self.end(client, "lagging")

    def end(self, client: Client, why: str) -> None:
        """Stop writing to ``client``; its request handler finishes the response and the
        connection is closed, forcibly if the peer will not take the last bytes."""
        if client.ended is not None:
            return
        client.ended = why
        self.remove(client)
        if not client._done.done():
            client._done.set_result(why)
        transport = client._transport
        asyncio.get_running_loop().call_later(FINAL_WRITE_S, abort, transport)

    def stop(self) -> None:
        for client in list(self.clients):
            self.end(client, "stopping")

    # -- events --------------------------------------------------------------------------

    last_seq_hint: int | None = None

    def deliver(self, event: ChangeEvent) -> None:
        """Queue ``event`` for the next pass (right after the source yields to the loop)."""
        self.delivered += 1
        if event.seq is not None:
            self.last_seq_hint = event.seq
        if self.max_lag_s > 0 and self._too_old(event):
            return
        self._batch.append(event)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        batch, self._batch = self._batch, []
        if len(batch) == 1:
            self._pass_one(batch[0])
        elif batch:
            self._pass_many(batch)
        if self._awaiting:
            self._release_caught_up()

    def _audience(self, event: ChangeEvent) -> Iterable[Bucket]:
        index = self._index
        buckets = []
        everyone = index["all"].get("")
        if everyone:
            buckets.append(everyone)
        for kind, key in (("table", event.table), ("action", event.action)):
            bucket = index[kind].get(key)
            if bucket:
                buckets.append(bucket)
        if index["id"]:
            bucket = index["id"].get(event.id_text)
            if bucket:
                buckets.append(bucket)
        tenants = index[scopes.TENANT_INDEX]
        if tenants:  # scopes hook: the streams of the event's tenant
            tenant_key = scopes.tenant_index_key(event)
            bucket = tenants.get(tenant_key) if tenant_key is not None else None
            if bucket:
                buckets.append(bucket)
        return buckets

    def _pass_one(self, event: ChangeEvent) -> None:
        frame = self.encode(event)
        data = sse.chunk(frame)
        size = len(data)
        limit = self.buffer_bytes
        written = 0
        troubled: list[Client] = []
        for bucket in self._audience(event):
            for client in bucket:
                if not client.exact and not client.filters.matches(event):
                    continue
                if client.pending is not None:
                    self._hold(client, event.seq, frame)
                    continue
                # The hot loop: one buffer check and one write per client. A closed
                # connection is removed by its handler (aiohttp cancels it at once).
                if client._buffered() + size > limit:
                    troubled.append(client)
                    continue
                client._write(data if client.chunked else frame)
                written += 1
        self.counters.events_relayed += written
        self._settle(troubled)

    def _pass_many(self, batch: list[ChangeEvent]) -> None:
        frames: dict[int, bytes] = {}
        per_client: dict[Client, list[bytes]] = {}
        for event in batch:
            frame = frames[id(event)] = self.encode(event)
            for bucket in self._audience(event):
                for client in bucket:
                    if not client.exact and not client.filters.matches(event):
                        continue
                    if client.pending is not None:
                        self._hold(client, event.seq, frame)
                        continue
                    per_client.setdefault(client, []).append(frame)
        troubled: list[Client] = []
        limit = self.buffer_bytes
        written = 0
        # Clients wanting the same frames (the usual case: everything) share one chunk.
        shared: dict[tuple[bool, tuple[int, ...]], bytes] = {}
        for client, chosen in per_client.items():
            key = (client.chunked, tuple(map(id, chosen)))
            data = shared.get(key)
            if data is None:
                joined = b"".join(chosen)
                data = shared[key] = sse.chunk(joined) if client.chunked else joined
            if client._buffered() + len(data) > limit:
                troubled.append(client)
                continue
            client._write(data)
            written += len(chosen)
        self.counters.events_relayed += written
        self._settle(troubled)

    def encode(self, event: ChangeEvent) -> bytes:
        """The frame of ``event`` (kept for resuming clients), or the reset that replaces an
        event over ``max_event_bytes``: the same live and in replay."""
        frames = self.frames
        frame = frames(event)
        if len(frame) > self.max_event_bytes and event.seq is not None:
            frame = self.oversized(event.seq, len(frame))
            frames.replace(event.seq, frame)
        return frame

    def oversized(self, seq: int, size: int) -> bytes:
        self.counters.oversized += 1
        return reset_frame(
            seq, f"event {seq} is {size} bytes, over this server's limit of "
                 f"{self.max_event_bytes} bytes per event; refetch", self.frames.tag)

    def gap_frame(self, seq: int) -> bytes:
        return reset_frame(seq, GAP_REASON, self.frames.tag)

    def keep_budget(self, budget: int) -> None:
        """Reset the clients furthest behind until the bytes waiting for all of them fit."""
        sizes = [(client._buffered(), client) for client in self.clients]
        total = sum(size for size, _ in sizes)
        if total <= budget:
            return
        sizes.sort(key=lambda pair: pair[0], reverse=True)
        for size, client in sizes:
            if total <= budget * 3 // 4:
                break
            self.counters.budget_cut += 1
            self.cut(client)
            total -= size

    def _hold(self, client: Client, seq: int | None, frame: bytes) -> None:
        assert client.pending is not None
        client.pending.append((seq, frame))
        client.pending_bytes += len(frame)
        if client.pending_bytes > self.buffer_bytes:
            client.pending = None
            self.cut(client)

    def _settle(self, troubled: list[Client]) -> None:
        for client in troubled:
            if client._transport.is_closing():
                self.end(client, "disconnected")
            else:
                self.cut(client)

    def broadcast(self, frame: bytes) -> None:
        """Write one SSE frame (a heartbeat, a reset) to every client."""
        troubled = []
        limit = self.buffer_bytes
        chunked = sse.chunk(frame)
        for client in self.clients:
            data = chunked if client.chunked else frame
            if client._buffered() + len(data) > limit:
                troubled.append(client)
                continue
            client._write(data)
        self._settle(troubled)

    def reset_all(self, reason: str, resume_at: int | None) -> None:
        """Every client must refetch (the relay lagged, or the change log was replaced)."""
        self.counters.resets += len(self.clients)
        self.broadcast(reset_frame(resume_at, reason, self.frames.tag))

    def use_log(self, log_id: str | None) -> None:
        """The change log the events come from (its identity goes into every event id)."""
        tag = sse.log_tag(log_id)
        if tag != self.frames.tag:
            self.frames = sse.FrameCache(tag=tag)

    def log_replaced(self, replaced: LogReplaced) -> None:
        """The change log was recreated: seqs start over, so cached frames and every client's
        resume point are void. The same log announcing it (a GAP marker: the wal relay lost
        changes) keeps its seqs: clients refetch and go on from here."""
        self.flush()  # what came before the news goes out before it
        if replaced.new_log_id is not None and replaced.new_log_id == replaced.old_log_id:
            self.reset_all(GAP_REASON, self.last_seq_hint)
            return
        self.frames = sse.FrameCache(tag=sse.log_tag(replaced.new_log_id))
        self.last_seq_hint = None
        self._awaiting.clear()
        self.reset_all("the change log was replaced; refetch", None)

    # -- lag -----------------------------------------------------------------------------

    def _too_old(self, event: ChangeEvent) -> bool:
        """Skip events older than ``max_lag_s``; clients are reset instead (at the start of a
        lag, at most every second while it lasts, and once more when it is over)."""
        now = time.time() + self.clock_offset_s
        try:
            lag = now - datetime.fromisoformat(event.timestamp).timestamp()
        except ValueError:
            return False
        if lag <= self.max_lag_s:
            if self._skipped_since_reset:
                self._lag_reset(event.seq - 1 if event.seq is not None else None,
                                "the relay caught up; refetch to see what it skipped")
            self.lagging_since = None
            self._skipped_since_reset = None
            return False
        self.counters.lag_skipped += 1
        if self.lagging_since is None:
            self.lagging_since = now
        self._skipped_since_reset = (self._skipped_since_reset or 0) + 1
        if time.monotonic() - self._lag_reset_at >= LAG_RESET_INTERVAL_S:
            self._lag_reset(event.seq, f"the relay is {lag:.1f} s behind; refetch")
        return True

    def _lag_reset(self, resume_at: int | None, reason: str) -> None:
        self._lag_reset_at = time.monotonic()
        self._skipped_since_reset = 0
        self.counters.lag_resets += 1
        # Frames gathered for the next pass are older still: they go with the reset.
        self._batch.clear()
        self.reset_all(reason, resume_at)


def reset_frame(resume_at: int | None, reason: str, tag: str | None = None) -> bytes:
    body = json.dumps({"reason": reason, "last_seq": resume_at})
    return sse.frame(body, event="reset", event_id=sse.event_id(resume_at, tag))


def abort(transport: asyncio.Transport) -> None:
    """Close the connection now, with RST: the socket and its unsent bytes are freed at once
    (a plain close would leave them queued for a peer that does not read)."""
    if transport.is_closing() and transport.get_write_buffer_size() == 0:
        return  # closed cleanly: the descriptor may already belong to another connection
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
