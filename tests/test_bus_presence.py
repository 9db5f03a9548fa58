"""Presence through Redis (``serve --bus redis://``): replicas see each other's viewers within
0.5 s, and a crashed replica's viewers are gone after its expiry. Real Redis, own key prefix."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

pytest.importorskip("redis", reason="redis-py is not installed (pip install 'bookwatch[redis]')")

from pgwatch_cli.bus import client as bus_client
from pgwatch_cli.bus import url as bus_url
from pgwatch_cli.bus.keys import Keys
from pgwatch_cli.bus.presence import RedisPresenceSync
from pgwatch_cli.commands.serve.presence import Presence
from tests.presence_helpers import Frames, eventually
from tests.serve_helpers import SseReader, running_server
from tests.test_bus import bus  # noqa: F401  (the fixture)

SEEN_WITHIN_S = 0.5  # issue 20: replicas see each other's viewers within 0.5 s


def presence_of(url: str) -> dict[str, list[str]]:
    result: dict[str, list[str]] = httpx.get(url + "/presence", timeout=10).json()
    return result


def test_a_viewer_on_one_replica_is_seen_on_the_other_within_half_a_second(
    demo_dsn: str, bus: bus_url.RedisBus  # noqa: F811
) -> None:
    with running_server(demo_dsn, bus=bus) as a, running_server(demo_dsn, bus=bus) as b, \
            SseReader(b.url, params={"viewer": "Ben", "viewing": "bookings:7"}) as ben:
        assert json.loads(ben.next("presence").data)["viewers"] == ["Ben"]
        eventually(lambda: presence_of(a.url), lambda seen: seen == {"bookings:7": ["Ben"]},
                   timeout=10)
        opened = time.monotonic()
        with SseReader(a.url, params={"viewer": "Anna", "viewing": "bookings:7"}) as anna:
            assert json.loads(anna.next("presence").data)["viewers"] == ["Anna", "Ben"]
            both = json.loads(ben.next("presence", timeout=5).data)
            seen_after = time.monotonic() - opened
            assert both == {"entity": "bookings:7", "viewers": ["Anna", "Ben"]}
        left = json.loads(ben.next("presence", timeout=5).data)
        assert left == {"entity": "bookings:7", "viewers": ["Ben"]}
    # The stream's own opening (HTTP, headers) is in this figure; the margin is the machine's.
    assert seen_after < SEEN_WITHIN_S + 0.5, seen_after


def test_a_crashed_replicas_viewers_are_gone_after_its_expiry(
    demo_dsn: str, bus: bus_url.RedisBus  # noqa: F811
) -> None:
    ttl_s = 1.5

    async def scenario() -> tuple[dict[str, list[str]], dict[str, list[str]], float]:
        keys = Keys(bus.prefix, "crash-test")
        crashing, staying = Presence(), Presence()
        redis_a = bus_client.connect(bus, name="test-a")
        redis_b = bus_client.connect(bus, name="test-b")
        a = RedisPresenceSync(crashing, redis_a, keys, ttl_s=ttl_s, notice=print)
        b = RedisPresenceSync(staying, redis_b, keys, ttl_s=ttl_s, notice=print)
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        try:
            crashing.join("bookings:9", "Cleo", Frames())
            staying.join("bookings:9", "Dan", Frames())
            seen = await _until(lambda: staying.snapshot(),
                                lambda s: s == {"bookings:9": ["Cleo", "Dan"]}, 5)
            tasks[0].cancel()  # a crash: no withdrawal, no more heartbeats
            await asyncio.gather(tasks[0], return_exceptions=True)
            crashed_at = time.monotonic()
            after = await _until(lambda: staying.snapshot(),
                                 lambda s: s == {"bookings:9": ["Dan"]}, ttl_s + 5)
            return seen, after, time.monotonic() - crashed_at
        finally:
            b.stop()
            await asyncio.gather(tasks[1], return_exceptions=True)
            await redis_a.aclose()
            await redis_b.aclose()

    seen, after, gone_after = asyncio.run(scenario())
    assert seen == {"bookings:9": ["Cleo", "Dan"]}
    assert after == {"bookings:9": ["Dan"]}
    # Gone after its expiry, not before it; and within one heartbeat after it.
    assert ttl_s * 0.5 <= gone_after <= ttl_s + 3, gone_after


async def _until(probe: Any, accept: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        await asyncio.sleep(0.05)
