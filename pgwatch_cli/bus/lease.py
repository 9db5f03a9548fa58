"""Who publishes: a lease row in ``bookwatch.bus_lease``, one per channel and bus prefix.

A lease, not an advisory lock: advisory lock keys are shared by every role of the database,
so any role could take ours and silence the bus; the lease table belongs to bookwatch. The
holder renews it every ``RENEW_S``; a holder that dies stops renewing and any candidate takes
it once it expired (``TTL_S``), so a successor publishes within ``TTL_S + RENEW_S`` (< 10 s).

Two publishers at once (a holder frozen past its expiry) cannot duplicate anything: a stream
entry's id is the batch's last seq and Redis refuses ids that do not grow.
"""

from __future__ import annotations

from typing import Any

import psycopg

TTL_S = 6.0
RENEW_S = 2.0

_CREATE = """
CREATE UNLOGGED TABLE IF NOT EXISTS bookwatch.bus_lease (
    name text PRIMARY KEY,
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
)
"""
# Takes or renews the lease; returns the log's newest seq when we hold it, no row otherwise.
_TAKE = """
WITH taken AS (
    INSERT INTO bookwatch.bus_lease AS l (name, holder, expires_at)
    VALUES (%(name)s, %(holder)s, clock_timestamp() + make_interval(secs => %(ttl)s))
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
     WHERE l.holder = excluded.holder OR l.expires_at < clock_timestamp()
    RETURNING holder
)
SELECT (SELECT coalesce(max(seq), 0) FROM bookwatch.change_log WHERE channel = %(channel)s)
  FROM taken
"""
_RELEASE = "DELETE FROM bookwatch.bus_lease WHERE name = %(name)s AND holder = %(holder)s"


class Lease:
    """The publisher lease of one (bus prefix, channel) on one connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], name: str, channel: str,
                 holder: str, ttl_s: float = TTL_S) -> None:
        self.conn = conn
        self.name = name
        self.channel = channel
        self.holder = holder
        self.ttl_s = ttl_s

    async def prepare(self) -> None:
        cursor = await self.conn.execute(
            "SELECT to_regclass('bookwatch.bus_lease') IS NOT NULL"
        )
        row = await cursor.fetchone()
        if not (row and row[0]):
            async with self.conn.transaction():
                await self.conn.execute(_CREATE)

    async def take(self) -> int | None:
        """Take or renew the lease: the log's newest seq when held, else None."""
        cursor = await self.conn.execute(_TAKE, {
            "name": self.name, "holder": self.holder, "ttl": self.ttl_s,
            "channel": self.channel,
        })
        row = await cursor.fetchone()
        return int(row[0]) if row is not None else None

    async def release(self) -> None:
        await self.conn.execute(_RELEASE, {"name": self.name, "holder": self.holder})
