"""A few short-lived database connections for resuming clients and the demo API.

Bounded, so a crowd of browsers reconnecting at once queues here instead of exhausting the
server's ``max_connections``; idle connections are kept for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg import pq
from psycopg.rows import TupleRow

from pgwatch_cli import db

AsyncConn = psycopg.AsyncConnection[TupleRow]
APPLICATION_NAME = "bookwatch serve"


class Connections:
    def __init__(self, dsn: str, *, limit: int = 4) -> None:
        self._dsn = dsn
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[AsyncConn] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        """An autocommit connection (use ``conn.transaction()`` for a transaction)."""
        async with self._slots:
            conn = await self._take()
            try:
                yield conn
            finally:
                if not conn.closed and conn.info.transaction_status == pq.TransactionStatus.IDLE:
                    self._idle.append(conn)
                else:
                    await conn.close()

    async def _take(self) -> AsyncConn:
        while self._idle:
            conn = self._idle.pop()
            if not conn.broken and not conn.closed:
                return conn
            await conn.close()
        return await db.connect_async(
            self._dsn, autocommit=True, application_name=APPLICATION_NAME
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
