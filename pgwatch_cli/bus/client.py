"""The redis-py asyncio client as the bus uses it (the only module that imports redis)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable
from typing import Any

from redis import exceptions
from redis.asyncio import Redis

from pgwatch_cli.bus.url import RedisBus

# Stream entries as XRANGE/XREAD give them (the client does not decode responses).
Entries = list[tuple[bytes, dict[bytes, bytes]]]
# Anything that means "Redis is not answering" (refused, reset, timed out, restarting).
UNAVAILABLE = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.BusyLoadingError,
               OSError)
ResponseError = exceptions.ResponseError
RedisError = exceptions.RedisError
# A blocked XREAD answers within its block time; a Redis that does not is frozen.
SOCKET_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 2.0


def connect(bus: RedisBus, *, name: str) -> Redis:
    """A client (connections are opened lazily, on first use, and again after a loss)."""
    return Redis.from_url(
        bus.url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True, client_name=name,
    )


async def done(result: Awaitable[Any] | Any) -> Any:
    """redis-py types its asyncio commands as ``X | Awaitable[X]`` (with X too wide to use):
    the value either way, typed by the caller."""
    if inspect.isawaitable(result):
        return await result
    return result
