"""Helpers for the stream tests (listener, hub, relay): a watched ``items`` table, writers,
bounded waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg

from tests.capture_helpers import install

T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 60) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


def make_items(dsn: str, *, durable: bool = True) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    install(dsn, "items", mode="log" if durable else "notify")


def write_items(dsn: str, ids: range, pause: float = 0.0) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for item in ids:
            conn.execute("INSERT INTO items (id, note) VALUES (%s, 'x')", (item,))
            if pause:
                time.sleep(pause)


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
