"""Short-lived database work of ``serve``: resuming clients' log reads and the demo API.

A ``psycopg_pool`` pool: bounded, so a crowd of browsers reconnecting at once queues here
instead of exhausting the server's ``max_connections``; every connection is checked before it
is handed out, so one killed by ``pg_terminate_backend`` or ``idle_session_timeout`` is
replaced instead of failing the next request; a request waits at most ``wait_s`` for one
(then ``psycopg_pool.PoolTimeout``, an ``OperationalError``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from pgwatch_cli import db

AsyncConn = psycopg.AsyncConnection[TupleRow]
APPLICATION_NAME = "bookwatch serve"
# Enough that a few requests stuck on a row lock (bounded by the demo's lock_timeout) leave
# room for the others; few enough for many replicas under a default max_connections of 100.
MAX_SIZE = 10
WAIT_S = 5.0
# No request of serve needs longer; a runaway one must not hold a connection forever.
STATEMENT_TIMEOUT_MS = 15_000


def _connect_kwargs(dsn: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "connect_timeout": db.CONNECT_TIMEOUT_S,
        **db.KEEPALIVES,
    }
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(dsn):
        kwargs["application_name"] = APPLICATION_NAME
    return kwargs


async def _configure(conn: AsyncConn) -> None:
    await conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")


class Connections:
    """A pool opened on first use (a server nobody resumes from opens no connection)."""

    def __init__(self, dsn: str, *, limit: int = MAX_SIZE, wait_s: float = WAIT_S) -> None:
        self.pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            dsn,
            kwargs=_connect_kwargs(dsn),
            min_size=1,
            max_size=limit,
            timeout=wait_s,
            check=AsyncConnectionPool.check_connection,
            configure=_configure,
            open=False,
            name="bookwatch-serve",
        )

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """An autocommit connection (use ``conn.transaction()`` for a transaction)."""
        if self.pool.closed:
            await self.pool.open()  # safe when several first requests race to open it
        async with self.pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        await self.pool.close()
