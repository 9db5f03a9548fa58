"""A listener that started before the wal slot existed finds it (issue 16.4): switching a running
database from log to wal mode leaves it working, relaying when nobody else does."""

from __future__ import annotations

import asyncio

import psycopg

from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.listener import ChangeStream
from tests.capture_helpers import install
from tests.stream_helpers import run, write_items


def test_a_slot_created_after_the_listener_started_is_relayed(logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
    install(logical_db, "items", mode="log")

    async def listen() -> tuple[list[ChangeEvent], bool]:
        seen: list[ChangeEvent] = []
        async with ChangeStream(logical_db, check_interval=0.5) as stream:
            assert not stream.relaying  # log mode: no slot, nothing to relay
            events = aiter(stream)
            await asyncio.to_thread(write_items, logical_db, range(1, 3))
            seen += [await anext(events) for _ in range(2)]
            # The README's switch to wal mode, while this listener runs.
            await asyncio.to_thread(install, logical_db, "items", mode="wal")
            await asyncio.to_thread(write_items, logical_db, range(3, 6))
            seen += [await anext(events) for _ in range(3)]
            return seen, stream.relaying

    seen, relaying = run(listen(), timeout=90)
    assert [event.id for event in seen] == [1, 2, 3, 4, 5]
    assert [event.seq for event in seen] == [1, 2, 3, 4, 5]
    assert relaying
