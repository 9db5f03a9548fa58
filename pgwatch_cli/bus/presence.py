"""Presence shared through Redis (``serve --bus redis://``), with PresenceSync's interface.

Each server keeps its whole part of the map in one field of a hash (its id → JSON pairs),
renews its expiry in a sorted set with every write and heartbeat, and publishes its id on a
pub/sub channel when its part changed. Servers read the map at most once per tick however
many wake-ups came, and on every heartbeat (a crashed server sends none): only parts of
servers whose expiry is ahead count, and expired ones are swept.

Redis down: the others' viewers are dropped (they cannot be vouched for), local presence
goes on, and the server uploads its part again when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from pgwatch_cli import db
from pgwatch_cli.bus import client
from pgwatch_cli.bus.keys import Keys
from pgwatch_cli.bus.url import RedisBus

TTL_S = 15.0
TICK_S = 0.25  # presence frames are coalesced to 4 a second anyway
RETRY_MAX_S = 5.0
STOP_TIMEOUT_S = 3.0

Key = tuple[str, str]  # (entity, viewer)


class LocalPresence(Protocol):
    """The per-process presence map (commands/serve/presence.Presence)."""

    shared: bool

    def local_pairs(self) -> list[Key]: ...

    def take_changes(self) -> dict[Key, bool]: ...

    def has_changes(self) -> bool: ...

    def replace_others(self, others: Mapping[str, Iterable[str]]) -> None: ...


class RedisPresenceSync:
    """Keeps ``presence`` in step with the map in Redis while ``run()`` runs."""

    def __init__(
        self, presence: LocalPresence, redis: Redis, keys: Keys, *, ttl_s: float = TTL_S,
        tick_s: float = TICK_S, notice: Callable[[str], None],
    ) -> None:
        self.presence = presence
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self.tick_s = tick_s
        self.heartbeat_s = ttl_s / 3
        self.server_id = uuid.uuid4().hex
        self.writes = 0
        self.reads = 0
        self._notice = notice
        self._stopping = False
        self._stop_requested = asyncio.Event()

    async def run(self) -> None:
        """Sync until ``stop()`` (then withdraw) or cancellation (then expire, as a crash)."""
        delay = 0.5
        while not self._stopping:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.presence_wake)
                await self._upload()
                self.presence.shared = True
                delay = 0.5
                await self._keep_in_step(pubsub)
                await self._withdraw()
                return
            except client.UNAVAILABLE:
                # Said once by the replica's BusStream; the others' viewers go meanwhile.
                self._lost()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_requested.wait(),
                                           delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RETRY_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py 5-8

    def stop(self) -> None:
        self._stopping = True
        self._stop_requested.set()

    def ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self._notice(f"Presence is shared only within this process: {task.exception()!r}")
        self._lost()

    async def _keep_in_step(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heartbeat = loop.time()
        mine = self.server_id.encode()
        while not self._stopping:
            woken = False
            deadline = loop.time() + self.tick_s
            while (wait := deadline - loop.time()) > 0:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is not None and message.get("data") != mine:
                    woken = True
            heartbeat = loop.time() - last_heartbeat >= self.heartbeat_s
            if heartbeat:
                last_heartbeat = loop.time()
            if self.presence.has_changes() or heartbeat:
                await self._upload(wake=self.presence.has_changes())
            if woken or heartbeat:
                await self._read(sweep=heartbeat)

    async def _upload(self, *, wake: bool = True) -> None:
        """This server's whole part, its expiry, and (when it changed) a wake-up."""
        self.presence.take_changes()
        pairs = sorted(self.presence.local_pairs())
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.presence, self.server_id, json.dumps(pairs))
        pipe.zadd(self.keys.presence_alive, {self.server_id: time.time() + self.ttl_s})
        if wake:
            pipe.publish(self.keys.presence_wake, self.server_id)
        await pipe.execute()
        self.writes += 1

    async def _read(self, *, sweep: bool) -> None:
        now = time.time()
        alive: list[bytes] = await client.done(
            self.redis.zrangebyscore(self.keys.presence_alive, now, "+inf")
        )
        others = [server for server in alive if server != self.server_id.encode()]
        parts: list[bytes | None] = (
            await client.done(self.redis.hmget(self.keys.presence, others)) if others else []
        )
        merged: dict[str, set[str]] = {}
        for part in parts:
            for entity, viewer in json.loads(part) if part else ():
                merged.setdefault(entity, set()).add(viewer)
        self.reads += 1
        self.presence.replace_others({entity: sorted(v) for entity, v in merged.items()})
        if sweep:
            expired: list[bytes] = await client.done(
                self.redis.zrangebyscore(self.keys.presence_alive, "-inf", now)
            )
            if expired:
                pipe = self.redis.pipeline(transaction=True)
                pipe.hdel(self.keys.presence, *expired)
                pipe.zrem(self.keys.presence_alive, *expired)
                await pipe.execute()

    async def _withdraw(self) -> None:
        with contextlib.suppress(*client.UNAVAILABLE, client.RedisError):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(self.keys.presence, self.server_id)
            pipe.zrem(self.keys.presence_alive, self.server_id)
            pipe.publish(self.keys.presence_wake, self.server_id)
            await pipe.execute()
        self._lost()

    def _lost(self) -> None:
        self.presence.shared = False
        self.presence.replace_others({})


async def database_name(dsn: str) -> str:
    async with await db.connect_async(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT current_database()")
        row = await cursor.fetchone()
    assert row is not None
    return str(row[0])


@contextlib.asynccontextmanager
async def shared(
    presence: LocalPresence, bus: RedisBus, dsn: str, *, notice: Callable[[str], None],
    **options: Any,
) -> AsyncIterator[RedisPresenceSync]:
    """Presence shared with every ``serve`` on this bus and database while the block runs."""
    redis = client.connect(bus, name="bookwatch-presence")
    sync = RedisPresenceSync(presence, redis, Keys(bus.prefix, await database_name(dsn)),
                             notice=notice, **options)
    task = asyncio.create_task(sync.run(), name="bookwatch-presence-redis")
    task.add_done_callback(sync.ended)
    try:
        yield sync
    finally:
        sync.stop()
        done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        if not done:
            task.cancel()
            await asyncio.wait([task])
        await redis.aclose()
