"""Notifications as a simulated user's client gets them: the process's one ChangeStream fans
out through a Hub; each user's Inbox stamps every event with its arrival time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pgwatch_cli.stream.events import ChangeEvent
from pgwatch_cli.stream.hub import Hub, SubscriberLagged
from pgwatch_cli.stream.listener import ChangeStream

Key = tuple[int, int]  # (booking id, version written): names one save


class Clock:
    """Milliseconds since the clock was created: the timeline's time axis."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def now(self) -> float:
        return (time.perf_counter() - self._start) * 1000.0


@dataclass(frozen=True)
class Delivery:
    """One notification as it reached a user; ``event`` None means events were missed."""

    event: ChangeEvent | None
    at_ms: float


def save_key(event: ChangeEvent) -> Key | None:
    """The save an UPDATE event reports, if its diff says which version it wrote."""
    if event.action != "UPDATE" or event.diff is None or "version" not in event.diff:
        return None
    if not isinstance(event.id, int):
        return None
    return event.id, int(event.diff["version"][1])


class Inbox:
    """One user's notifications. A task of its own drains the subscription at once — like the
    browser receiving an SSE event while its user is busy typing — so ``at_ms`` is the moment
    of notification, not the moment the user looked."""

    def __init__(self, hub: Hub, clock: Clock) -> None:
        self._hub = hub
        self._clock = clock
        self._subscription = hub.subscribe()
        self._unread: asyncio.Queue[Delivery] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self.deliveries: list[Delivery] = []
        self.seen: set[Key] = set()

    async def pump(self) -> None:
        """Receive until closed; after being cut for lagging, say so and subscribe again."""
        while True:
            try:
                async for event in self._subscription:
                    self._deliver(event)
                return
            except SubscriberLagged:
                self._deliver(None)
                self._subscription = self._hub.subscribe()

    def _deliver(self, event: ChangeEvent | None) -> None:
        delivery = Delivery(event, self._clock.now())
        self.deliveries.append(delivery)
        if event is not None and (key := save_key(event)) is not None:
            self.seen.add(key)
        self._unread.put_nowait(delivery)
        self._arrived.set()

    async def next(self, timeout_s: float) -> Delivery | None:
        """The next unread notification, or None when none came within ``timeout_s``."""
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                return await self._unread.get()
        except TimeoutError:
            return None

    async def wait_for(self, keys: set[Key], timeout_s: float) -> bool:
        """Wait until the events of all these saves arrived; False if some did not in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not keys <= self.seen:
                    self._arrived.clear()
                    await self._arrived.wait()
        return keys <= self.seen

    def close(self) -> None:
        self._subscription.close()


async def arrivals(
    inbox: Inbox | None, clock: Clock, deadline_ms: float
) -> AsyncIterator[Delivery]:
    """Notifications reaching a user until ``deadline_ms`` on ``clock``; with no inbox (no
    realtime) this just waits out the time."""
    while (remaining_ms := deadline_ms - clock.now()) > 0:
        if inbox is None:
            await asyncio.sleep(remaining_ms / 1000)
            return
        delivery = await inbox.next(remaining_ms / 1000)
        if delivery is None:
            return
        yield delivery


class Commits:
    """When each save was committed (clock ms, taken just before COMMIT was sent)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.at_ms: dict[Key, float] = {}

    def mark(self, booking_id: int, version: int) -> None:
        self.at_ms[(booking_id, version)] = self.clock.now()

    def latency(self, delivery: Delivery) -> float | None:
        """Commit → notification in ms, for events of saves this run made."""
        if delivery.event is None or (key := save_key(delivery.event)) is None:
            return None
        committed = self.at_ms.get(key)
        return None if committed is None else delivery.at_ms - committed


@contextlib.asynccontextmanager
async def event_hub(dsn: str, channel: str, *, relay: bool = True) -> AsyncIterator[Hub]:
    """The process's one ChangeStream on the scratch channel, fanned out by a running Hub."""
    async with ChangeStream(dsn, channel=channel, relay=relay) as stream:
        hub = Hub(stream)
        task = asyncio.create_task(hub.run(), name="bookwatch simulate hub")
        try:
            yield hub
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
