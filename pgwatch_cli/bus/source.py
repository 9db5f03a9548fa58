"""What ``serve`` needs of its event source: a ChangeStream, or a BusStream reading Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pgwatch_cli.stream.events import StreamItem
from pgwatch_cli.stream.listener import StreamStats


class EventSource(Protocol):
    @property
    def channel(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def last_seq(self) -> int | None: ...

    @property
    def log_id(self) -> str | None:
        """The identity of the change log the events come from (it goes into event ids)."""

    @property
    def stats(self) -> StreamStats: ...

    def items(self) -> AsyncIterator[StreamItem]: ...
