"""The few calls ``serve`` makes to use the Redis bus (redis is imported only when used)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

from pgwatch_cli.bus.url import RedisBus
from pgwatch_cli.console import warn

Sample = tuple[str, str, str, float]  # name, kind, help, value (metrics.Sample's fields)


@runtime_checkable
class BusState(Protocol):
    def bus_health(self) -> dict[str, Any]: ...

    def bus_samples(self) -> list[Sample]: ...


def stream(bus: RedisBus, dsn: str, *, channel: str, relay: bool) -> Any:
    """A BusStream (use it as ``async with``, like a ChangeStream)."""
    from pgwatch_cli.bus.subscriber import BusStream

    return BusStream(bus, dsn, channel=channel, relay=relay)


def shared_presence(
    presence: Any, bus: RedisBus, dsn: str
) -> contextlib.AbstractAsyncContextManager[Any]:
    """Presence shared with every ``serve`` on the same bus while the block runs."""
    from pgwatch_cli.bus.presence import shared

    return shared(presence, bus, dsn, notice=warn)


def health(source: object) -> dict[str, Any]:
    """``/healthz`` fields naming the bus and whether it falls back."""
    if isinstance(source, BusState):
        return source.bus_health()
    return {"bus": "postgres"}


def samples(source: object) -> list[Sample]:
    if isinstance(source, BusState):
        return source.bus_samples()
    return []
