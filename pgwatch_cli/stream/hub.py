"""Hub: in-process fan-out of one event source to many subscribers, each with its own bounded
queue. A subscriber that falls behind is cut loose (and told so); the others never wait.

A source with ``items()`` (a ChangeStream) is pumped through it, so LogReplaced markers reach
every subscriber's ``items()``; plain iteration of a subscription yields only the events."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from typing import Protocol, runtime_checkable

from pgwatch_cli.stream.events import ChangeEvent, LogReplaced, StreamItem

DEFAULT_QUEUE_SIZE = 1000


@runtime_checkable
class ItemSource(Protocol):
    """A source of events and LogReplaced markers (ChangeStream.items)."""

    def items(self) -> AsyncIterator[StreamItem]: ...


class SubscriberLagged(Exception):
    """The subscriber fell too far behind and was cut loose; resync (e.g. from the log) and
    subscribe again."""


class SourceEnded(Exception):
    """The hub's event source failed; no more events will come."""


class Subscription:
    """One subscriber's view of the hub: an async iterator of events.

    When its queue overflows it is cut: ``lagged`` becomes true, queued events are dropped and
    iteration raises ``SubscriberLagged``. When the hub's source ends, iteration ends.
    """

    def __init__(self, hub: Hub, queue_size: int) -> None:
        self._hub = hub
        self._queue_size = queue_size
        self._queue: deque[StreamItem] = deque()
        self._ready = asyncio.Event()
        self._ended = False
        self._failure: BaseException | None = None
        self.lagged = False
        self.closed = False

    def __aiter__(self) -> AsyncIterator[ChangeEvent]:
        return self

    async def __anext__(self) -> ChangeEvent:
        """The next event; LogReplaced markers are skipped (``items()`` yields them)."""
        while True:
            item = await self._next_item()
            if isinstance(item, ChangeEvent):
                return item

    async def items(self) -> AsyncGenerator[StreamItem]:
        """Events and LogReplaced markers, in order; ends as plain iteration does."""
        while True:
            try:
                yield await self._next_item()
            except StopAsyncIteration:
                return

    async def _next_item(self) -> StreamItem:
        while not self._queue:
            if self.lagged:
                raise SubscriberLagged()
            if self._failure is not None:
                raise SourceEnded(f"the event source failed: {self._failure}")
            if self._ended or self.closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def close(self) -> None:
        """Unsubscribe; iteration ends after what is already queued."""
        self.closed = True
        self._hub._forget(self)
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def _offer(self, event: StreamItem) -> bool:
        """Queue ``event``; False when this overflowed the queue and the subscriber was cut."""
        if len(self._queue) >= self._queue_size:
            self.lagged = True
            self._queue.clear()
            self._ready.set()
            return False
        self._queue.append(event)
        self._ready.set()
        return True

    def _end(self, failure: BaseException | None) -> None:
        self._ended = True
        self._failure = failure
        self._ready.set()


class Hub:
    """Pumps one source (normally a ChangeStream) into every current subscriber."""

    def __init__(
        self,
        source: AsyncIterable[ChangeEvent] | ItemSource,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._source = source
        self._queue_size = queue_size
        # A dict keeps subscription order and makes unsubscribing O(1) with many thousand
        # clients (serve); values are unused.
        self._subscribers: dict[Subscription, None] = {}
        self.delivered = 0
        self.cut = 0
        self.replaced = 0
        self._ended = False
        self._failure: BaseException | None = None

    def subscribe(self, *, queue_size: int | None = None) -> Subscription:
        subscription = Subscription(self, queue_size or self._queue_size)
        if self._ended:
            # The source is done: a subscriber arriving now must learn that at once, not wait.
            subscription._end(self._failure)
        else:
            self._subscribers[subscription] = None
        return subscription

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def run(self) -> None:
        """Pump the source into the subscribers until it ends or this task is cancelled."""
        failure: BaseException | None = None
        source = self._source
        stream: AsyncIterable[StreamItem] = (
            source.items() if isinstance(source, ItemSource) else source
        )
        try:
            async for event in stream:
                if isinstance(event, LogReplaced):
                    self.replaced += 1
                else:
                    self.delivered += 1
                lagging = [sub for sub in self._subscribers if not sub._offer(event)]
                for sub in lagging:
                    self.cut += 1
                    self._forget(sub)
                # The source may hand over a whole page of the log at once: let subscribers
                # drain between events, or a burst larger than their queues cuts them all.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = exc
            raise
        finally:
            self._ended = True
            self._failure = failure
            for sub in self._subscribers:
                sub._end(failure)
            self._subscribers.clear()

    def _forget(self, subscription: Subscription) -> None:
        self._subscribers.pop(subscription, None)
