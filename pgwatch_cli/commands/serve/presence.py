"""Presence, the seed's "active users map": who is viewing which row, in this server process."""

from __future__ import annotations

import json
from collections import Counter
from typing import Protocol

from pgwatch_cli.commands.serve import sse

MAX_NAME_LENGTH = 100


class Watcher(Protocol):
    """An open stream that is told about presence changes of the row it views."""

    def push(self, frame: bytes) -> None: ...


class InvalidPresence(ValueError):
    """A ``viewer``/``viewing`` pair that cannot be used."""


def check(viewer: str, viewing: str) -> None:
    if not viewer.strip() or len(viewer) > MAX_NAME_LENGTH:
        raise InvalidPresence(f"viewer must be 1 to {MAX_NAME_LENGTH} characters")
    table, _, row = viewing.partition(":")
    if not table or not row or len(viewing) > 2 * MAX_NAME_LENGTH:
        raise InvalidPresence("viewing must look like TABLE:ID, for example bookings:123")


class Presence:
    """Viewers per entity (``table:id``); every join or leave is pushed to that entity's streams.

    A name is counted per open stream, so a second tab of Anna's closing does not make her
    vanish while the first is still open.
    """

    def __init__(self) -> None:
        self._viewers: dict[str, Counter[str]] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    def join(self, entity: str, viewer: str, watcher: Watcher) -> None:
        self._viewers.setdefault(entity, Counter())[viewer] += 1
        self._watchers.setdefault(entity, set()).add(watcher)
        self._announce(entity)

    def leave(self, entity: str, viewer: str, watcher: Watcher) -> None:
        viewers = self._viewers.get(entity)
        if viewers is None:
            return
        viewers[viewer] -= 1
        if viewers[viewer] <= 0:
            del viewers[viewer]
        watchers = self._watchers.get(entity, set())
        watchers.discard(watcher)
        if not viewers:
            del self._viewers[entity]
            self._watchers.pop(entity, None)
            return
        self._announce(entity)

    def viewers(self, entity: str) -> list[str]:
        return sorted(self._viewers.get(entity, ()))

    def snapshot(self) -> dict[str, list[str]]:
        """The whole map, as ``GET /presence`` returns it."""
        return {entity: self.viewers(entity) for entity in sorted(self._viewers)}

    def viewer_count(self) -> int:
        return sum(sum(counts.values()) for counts in self._viewers.values())

    def _announce(self, entity: str) -> None:
        body = json.dumps({"entity": entity, "viewers": self.viewers(entity)})
        frame = sse.frame(body, event="presence")
        for watcher in list(self._watchers.get(entity, ())):
            watcher.push(frame)
