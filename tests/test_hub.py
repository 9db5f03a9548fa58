"""Hub fan-out: every subscriber gets every event; a lagging one is cut, the others never wait."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import psycopg
import pytest

from pgwatch_cli.stream.events import ChangeEvent, LogReplaced, StreamItem, parse
from pgwatch_cli.stream.hub import Hub, SourceEnded, SubscriberLagged, Subscription
from pgwatch_cli.stream.listener import ChangeStream
from tests.stream_helpers import make_items, run, write_items


def event(seq: int) -> ChangeEvent:
    return parse(json.dumps({
        "v": 1, "seq": seq, "table": "bookings", "schema": "public", "action": "UPDATE",
        "id": seq, "pk": {"id": seq}, "actor": "Anna", "changed": ["gesamtpreis"],
        "diff": {"gesamtpreis": [1, 2]}, "truncated": False, "txid": 7,
        "timestamp": "2026-11-28T06:41:00.123456+00:00",
    }))


class Source:
    """Events fed by the test, one by one, like a ChangeStream would yield them."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ChangeEvent | BaseException | None] = asyncio.Queue()

    async def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


async def take(subscription: Subscription, count: int) -> list[int | None]:
    return [(await anext(subscription)).seq for _ in range(count)]


def test_every_subscriber_gets_every_event_in_order() -> None:
    async def scenario() -> tuple[list[int | None], list[int | None]]:
        source = Source()
        hub = Hub(source)
        first, second = hub.subscribe(), hub.subscribe()
        pump = asyncio.create_task(hub.run())
        for seq in range(1, 51):
            source.queue.put_nowait(event(seq))
        got = await take(first, 50), await take(second, 50)
        source.queue.put_nowait(None)
        await pump
        return got

    first, second = run(scenario())
    assert first == second == list(range(1, 51))


def test_a_lagging_subscriber_is_cut_and_the_others_are_not_slowed() -> None:
    async def scenario() -> None:
        source = Source()
        hub = Hub(source, queue_size=100)
        fast = hub.subscribe()
        stalled = hub.subscribe(queue_size=5)
        pump = asyncio.create_task(hub.run())
        for seq in range(1, 101):
            source.queue.put_nowait(event(seq))
        assert await take(fast, 100) == list(range(1, 101))
        assert stalled.lagged and hub.cut == 1 and hub.subscribers == 1
        with pytest.raises(SubscriberLagged):
            await anext(stalled)
        source.queue.put_nowait(event(101))
        assert await take(fast, 1) == [101]  # the fast one carries on
        source.queue.put_nowait(None)
        await pump

    run(scenario())


def test_closing_a_subscription_unsubscribes_it() -> None:
    async def scenario() -> None:
        source = Source()
        hub = Hub(source, queue_size=2)
        leaving, staying = hub.subscribe(), hub.subscribe(queue_size=50)
        pump = asyncio.create_task(hub.run())
        leaving.close()
        for seq in range(1, 11):
            source.queue.put_nowait(event(seq))
        assert await take(staying, 10) == list(range(1, 11))
        assert not leaving.lagged and hub.cut == 0  # closed, not cut
        with pytest.raises(StopAsyncIteration):
            await anext(leaving)
        source.queue.put_nowait(None)
        await pump

    run(scenario())


def test_subscribers_learn_when_the_source_ends_or_fails() -> None:
    async def scenario(failure: BaseException | None) -> Subscription:
        source = Source()
        hub = Hub(source)
        subscription = hub.subscribe()
        pump = asyncio.create_task(hub.run())
        source.queue.put_nowait(event(1))
        source.queue.put_nowait(failure)
        if failure is None:
            await pump
        else:
            with pytest.raises(type(failure)):
                await pump
        assert await take(subscription, 1) == [1]  # what was queued is still delivered
        return subscription

    ended = run(scenario(None))
    with pytest.raises(StopAsyncIteration):
        run(anext(ended))
    failed = run(scenario(RuntimeError("boom")))
    with pytest.raises(SourceEnded, match="boom"):
        run(anext(failed))


def test_a_subscriber_arriving_after_the_source_failed_learns_it_at_once() -> None:
    async def scenario() -> None:
        source = Source()
        hub = Hub(source)
        pump = asyncio.create_task(hub.run())
        source.queue.put_nowait(RuntimeError("boom"))
        with pytest.raises(RuntimeError):
            await pump
        late = hub.subscribe()
        async with asyncio.timeout(5):  # it must not wait for events that never come
            with pytest.raises(SourceEnded, match="boom"):
                await anext(late)
        ended = Hub(Source())
        finished = asyncio.create_task(ended.run())
        await asyncio.sleep(0.01)  # running, waiting for its source
        finished.cancel()
        await asyncio.gather(finished, return_exceptions=True)
        async with asyncio.timeout(5):
            with pytest.raises(StopAsyncIteration):
                await anext(ended.subscribe())

    run(scenario())


class ItemsSource(Source):
    """A source with items(), as a ChangeStream: events and LogReplaced markers."""

    async def items(self) -> AsyncIterator[StreamItem]:
        while (item := await self.queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item


def test_log_replaced_reaches_every_subscriber_through_items() -> None:
    async def scenario() -> tuple[list[StreamItem], list[int | None]]:
        source = ItemsSource()
        hub = Hub(source)
        full, plain = hub.subscribe(), hub.subscribe()
        pump = asyncio.create_task(hub.run())
        for item in (event(1), LogReplaced("a", "b"), event(1)):
            source.queue.put_nowait(item)  # type: ignore[arg-type]
        source.queue.put_nowait(None)
        await pump
        return [item async for item in full.items()], [e.seq async for e in plain]

    items, events = run(scenario())
    assert items == [event(1), LogReplaced("a", "b"), event(1)]
    assert events == [1, 1]  # plain iteration: events only


def test_cancelling_the_hub_ends_its_subscribers() -> None:
    async def scenario() -> None:
        hub = Hub(Source())
        subscription = hub.subscribe()
        pump = asyncio.create_task(hub.run())
        waiting = asyncio.create_task(anext(subscription))
        await asyncio.sleep(0.05)
        pump.cancel()
        with pytest.raises(StopAsyncIteration):
            await waiting

    run(scenario())


def test_one_change_stream_feeds_many_subscribers(dsn: str) -> None:
    make_items(dsn)

    async def scenario() -> list[list[int | None]]:
        async with ChangeStream(dsn, notice=lambda _message: None) as stream:
            hub = Hub(stream)
            subscriptions = [hub.subscribe() for _ in range(3)]
            pump = asyncio.create_task(hub.run())
            await asyncio.to_thread(write_items, dsn, range(40))
            got = [[(await anext(sub)).id for _ in range(40)] for sub in subscriptions]
            pump.cancel()
            with pytest.raises(asyncio.CancelledError):
                await pump
        return got

    assert run(scenario()) == [list(range(40))] * 3
    with psycopg.connect(dsn) as conn:  # leaving the stream closed its one connection
        listeners = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bookwatch listener'"
            " AND datname = current_database()"
        ).fetchone()
    assert listeners == (0,)
