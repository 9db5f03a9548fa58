"""One presence map for every ``serve`` on the same database, through PostgreSQL only.

Each process writes its own viewers to an UNLOGGED table (``sql/presence.sql``), renews its
row in ``bookwatch.presence_server`` with every sync, and wakes the others with a NOTIFY
on ``bookwatch_presence`` whose payload is only its random server id (no entity, no name:
a role that can merely LISTEN learns nothing). A woken process reads the others' viewers.

Cost is bounded whatever the churn: one connection per process, at most one round trip in
flight, a sync at most every ``tick_s`` (all joins and leaves since the last one in one
statement) and at most one read per tick however many wake-ups arrived. The change events
never wait for any of it: they have their own connection, and joins and leaves only touch
dictionaries.

A process that dies without cleaning up stops renewing its row; once that expires (``ttl_s``
after its last sync), any live process deletes its viewers within one heartbeat.

When presence cannot be shared (no schema ``bookwatch``, or a role that may not create or
write the tables), serve warns once and keeps presence per process: the rest of serve works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import psycopg

from pgwatch_cli import console, db
from pgwatch_cli.capture import sqlfiles
from pgwatch_cli.commands.serve.presence import FRAMES_PER_SECOND, Key, Presence
from pgwatch_cli.errors import DatabaseUnreachable

CHANNEL = "bookwatch_presence"
APPLICATION_NAME = "bookwatch serve presence"
# A crashed server's viewers disappear within TTL_S + one heartbeat of a live server
# (docs/reference.md: 30 s).
TTL_S = 15.0
TICK_S = 1.0 / FRAMES_PER_SECOND
RETRY_MAX_S = 10.0
STOP_TIMEOUT_S = 3.0
LOCK_TIMEOUT_MS = 2000
STATEMENT_TIMEOUT_MS = 5000

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class PresenceUnavailable(Exception):
    """Presence cannot be shared through this database (the message says why and the fix)."""


def _queries() -> dict[str, str]:
    parts = _NAME_LINE.split(sqlfiles.script("presence"))
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


class PresenceSync:
    """Keeps ``presence`` in step with the shared map while ``run()`` runs."""

    def __init__(
        self,
        presence: Presence,
        dsn: str,
        *,
        ttl_s: float = TTL_S,
        tick_s: float = TICK_S,
        notice: Callable[[str], None] = console.warn,
    ) -> None:
        self.presence = presence
        self.dsn = dsn
        self.ttl_s = ttl_s
        self.tick_s = tick_s
        self.heartbeat_s = ttl_s / 3
        self.server_id = uuid.uuid4().hex
        self.label = f"{socket.gethostname()} pid {os.getpid()}"
        self.syncs = 0
        self.reads = 0
        self._notice = notice
        self._queries = _queries()
        self._started_at: datetime | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()

    @property
    def shared(self) -> bool:
        """True while this process is part of the shared map."""
        return self.presence.shared

    async def run(self) -> None:
        """Sync until ``stop()`` (then withdraw this server's viewers) or cancellation (then
        leave them to expire, as a crash would)."""
        delay = 0.5
        while not self._stopping:
            try:
                conn = await db.connect_async(
                    self.dsn, autocommit=True, application_name=APPLICATION_NAME
                )
                async with conn:
                    await self._join_shared_map(conn)
                    delay = 0.5
                    await self._keep_in_step(conn)
                    await self._withdraw(conn)
                return
            except PresenceUnavailable as exc:
                self._notice(f"Presence is shared only within this process: {exc}")
                self._lost()
                return
            except (psycopg.Error, DatabaseUnreachable) as exc:
                if self._stopping:
                    return
                if self.shared:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    self._notice(f"Presence lost its database connection, retrying: {reason}")
                self._lost()
                with contextlib.suppress(TimeoutError):  # a stop ends the wait at once
                    await asyncio.wait_for(
                        self._stop_requested.wait(), delay * random.uniform(0.5, 1.0)
                    )
                delay = min(delay * 2, RETRY_MAX_S)

    def ended(self, task: asyncio.Task[None]) -> None:
        """The sync task's end: a failure costs the shared map, never the server."""
        if task.cancelled() or task.exception() is None:
            return
        self._notice(f"Presence is shared only within this process: {task.exception()!r}")
        self._lost()

    def stop(self) -> None:
        """Withdraw this server's viewers and end ``run()`` (within one tick)."""
        self._stopping = True
        self._stop_requested.set()

    # -- steps -------------------------------------------------------------------------------

    async def _join_shared_map(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(self._queries["tables_exist"])
        found = await cursor.fetchone()
        assert found is not None
        schema_exists, tables_exist = found
        if not schema_exists:
            raise PresenceUnavailable(
                "schema bookwatch does not exist (bookwatch install-triggers creates it)"
            )
        # Presence waits for nobody: a statement stuck behind a lock fails and is retried.
        await conn.execute(
            f"SET lock_timeout = {LOCK_TIMEOUT_MS}; SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
        )
        try:
            if not tables_exist:
                async with conn.transaction():
                    await conn.execute(self._queries["create_tables"])
            await conn.execute(f"LISTEN {CHANNEL}")
            await self._upload_all(conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            raise PresenceUnavailable(
                f"{exc.diag.message_primary or exc} (serve creates bookwatch.presence and"
                " bookwatch.presence_server on first start: start it once as the role that"
                " ran install-triggers, or grant SELECT, INSERT, UPDATE, DELETE on them)"
            ) from None
        self.presence.shared = True
        await self._read(conn)

    async def _keep_in_step(self, conn: psycopg.AsyncConnection[Any]) -> None:
        loop = asyncio.get_running_loop()
        last_heartbeat = loop.time()
        woken = upload = False
        while not self._stopping:
            # Wake-ups that arrive during a tick are read once, at its end.
            async with contextlib.aclosing(conn.notifies(timeout=self.tick_s)) as notes:
                async for note in notes:
                    woken = woken or note.payload != self.server_id
            # Every sync renews this server; the heartbeat also sweeps expired servers and
            # reads the map even when nobody woke us (a crashed server sends no wake-up).
            heartbeat = loop.time() - last_heartbeat >= self.heartbeat_s
            if heartbeat:
                last_heartbeat = loop.time()
            try:
                if upload:
                    await self._upload_all(conn)
                    upload, woken = False, True
                elif (self.presence.has_changes() or heartbeat) and await self._sync(
                    conn, sweep=heartbeat
                ):
                    woken = True
                if woken or heartbeat:
                    woken = False
                    await self._read(conn)
            except psycopg.Error:
                if conn.broken or conn.closed:
                    raise
                # A statement failed on a working connection (a lock held too long, a
                # deadlock between two sweeps): the batch is lost, so upload everything on
                # the next tick, and keep what the others are known to show meanwhile.
                upload = True

    async def _sync(self, conn: psycopg.AsyncConnection[Any], *, sweep: bool) -> bool:
        """Write the joins and leaves since the last sync; True when others' rows changed."""
        changes = self.presence.take_changes()
        expected = self.presence.local_pair_count()
        row = await self._execute_sync(conn, changes, sweep=sweep, wake=False)
        started_at, mine, swept, _woke = row
        if started_at != self._started_at or (mine is not None and mine != expected):
            # Our rows were removed (this process was too slow and counted as dead, or the
            # tables were emptied): upload them all again.
            await self._upload_all(conn)
        return bool(swept)

    async def _upload_all(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.presence.take_changes()  # the full list below includes them
        joins = dict.fromkeys(self.presence.local_pairs(), True)
        async with conn.transaction():
            await conn.execute(self._queries["forget_server"], {"server": self.server_id})
            row = await self._execute_sync(conn, joins, sweep=True, wake=True)
        self._started_at = row[0]

    async def _execute_sync(
        self, conn: psycopg.AsyncConnection[Any], changes: dict[Key, bool], *,
        sweep: bool, wake: bool,
    ) -> tuple[Any, ...]:
        joins = [key for key, present in changes.items() if present]
        leaves = [key for key, present in changes.items() if not present]
        params = {
            "server": self.server_id, "label": self.label, "ttl_s": self.ttl_s,
            "channel": CHANNEL, "sweep": sweep, "wake": wake,
            "join_entities": [entity for entity, _ in joins],
            "join_viewers": [viewer for _, viewer in joins],
            "leave_entities": [entity for entity, _ in leaves],
            "leave_viewers": [viewer for _, viewer in leaves],
        }
        cursor = await conn.execute(self._queries["sync"], params)
        row = await cursor.fetchone()
        assert row is not None
        self.syncs += 1
        return tuple(row)

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cursor = await conn.execute(self._queries["read_others"], {"server": self.server_id})
        others = {entity: viewers for entity, viewers in await cursor.fetchall()}
        self.reads += 1
        self.presence.replace_others(others)

    async def _withdraw(self, conn: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(psycopg.Error):
            await conn.execute(
                self._queries["withdraw"], {"server": self.server_id, "channel": CHANNEL}
            )
        self._lost()

    def _lost(self) -> None:
        self.presence.shared = False
        self._started_at = None
        # Without the database, the others' viewers can no longer be vouched for.
        self.presence.replace_others({})


@contextlib.asynccontextmanager
async def shared(presence: Presence, dsn: str, **options: Any) -> AsyncIterator[PresenceSync]:
    """Presence shared with every ``serve`` on ``dsn`` while the block runs."""
    sync = PresenceSync(presence, dsn, **options)
    task = asyncio.create_task(sync.run(), name="bookwatch-presence")
    task.add_done_callback(sync.ended)
    try:
        yield sync
    finally:
        sync.stop()
        done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        if not done:
            task.cancel()
            await asyncio.wait([task])
