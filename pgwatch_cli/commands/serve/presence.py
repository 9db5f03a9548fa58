"""Presence, the seed's "active users map": who is viewing which row.

This module keeps the map of one server process and tells its streams about changes. The
viewers other processes report (workers, replicas) come from PostgreSQL through
``presence_sync``, which feeds them in with ``replace_others`` and takes this process's own
joins and leaves with ``take_changes``.
"""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from pgwatch_cli.commands.serve import scopes, sse
from pgwatch_cli.names import MAX_NAME_LENGTH, name_problem

MAX_ENTITY_LENGTH = 2 * MAX_NAME_LENGTH
# At most this many presence frames a second per row: a crowd joining at once costs a few
# frames, not one per person per viewer (which grows with the square of the crowd).
FRAMES_PER_SECOND = 4

Key = tuple[str, str]  # (entity, viewer)


class Watcher(Protocol):
    """An open stream that is told about presence changes of the row it views.

    A watcher that has not written its previous presence frame yet should keep only the
    newest one: each frame holds the whole list, so older ones say nothing more.
    """

    def push(self, frame: bytes) -> None: ...


class NewestFrameWriter:
    """A Watcher for a stream whose writes can block (a client that does not read): it holds
    at most one unwritten frame, the newest, and one task; older ones are dropped unsent.

    A stream passes the same instance to ``join`` and ``leave`` and calls ``close()`` at end.
    """

    def __init__(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        self._write = write
        self._frame: bytes | None = None
        self._writer: asyncio.Task[None] | None = None

    def push(self, frame: bytes) -> None:
        self._frame = frame
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._frame is not None:
                frame, self._frame = self._frame, None
                await self._write(frame)
        finally:
            self._writer = None

    def close(self) -> None:
        self._frame = None
        if self._writer is not None:
            self._writer.cancel()


class InvalidPresence(ValueError):
    """A ``viewer``/``viewing`` pair that cannot be used."""


def check(viewer: str, viewing: str) -> None:
    problem = name_problem(viewer, "viewer") or name_problem(viewing, "viewing", MAX_ENTITY_LENGTH)
    if problem:
        raise InvalidPresence(problem)
    table, _, row = viewing.partition(":")
    if not table or not row:
        raise InvalidPresence("viewing must look like TABLE:ID, for example bookings:123")


def _same_person(name: str) -> str:
    # "é" typed on one keyboard and on another may differ in code points, not for people.
    return unicodedata.normalize("NFC", name)


class Presence:
    """Viewers per entity (``table:id``), this process's and the others'.

    ``viewers`` lists each person once: a name is counted per open stream here (a second
    tab closing does not make Anna vanish while the first is open), and once per process in
    the shared map. Frames for one entity are coalesced to ``frames_per_second``; a stream
    that joins gets the current list at once.
    """

    def __init__(self, *, frames_per_second: float = FRAMES_PER_SECOND) -> None:
        self._interval = 1.0 / frames_per_second
        self._local: dict[str, Counter[str]] = {}
        self._others: dict[str, frozenset[str]] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        # Per entity: the list last sent and its frame, when it was sent, a pending send.
        self._sent: dict[str, tuple[list[str], bytes]] = {}
        self._sent_at: dict[str, float] = {}
        self._scheduled: dict[str, asyncio.TimerHandle] = {}
        # Streams that joined while a send was scheduled and have no list yet.
        self._waiting: dict[str, set[Watcher]] = {}
        # What this process's part of the shared map must become: (entity, viewer) -> present.
        self._changes: dict[Key, bool] = {}
        # True while the map is shared with the other processes (presence_sync sets it);
        # /healthz and /metrics can tell an operator that replicas do not see each other.
        self.shared = False

    # -- the streams' side -------------------------------------------------------------------

    def join(self, entity: str, viewer: str, watcher: Watcher) -> None:
        viewer = _same_person(viewer)
        counts = self._local.setdefault(entity, Counter())
        counts[viewer] += 1
        self._watchers.setdefault(entity, set()).add(watcher)
        announced = False
        if counts[viewer] == 1:
            self._changed((entity, viewer), True)
            announced = self._announce_soon(entity)
        if entity in self._scheduled:
            self._waiting.setdefault(entity, set()).add(watcher)  # the next send includes it
        elif not announced:
            watcher.push(self._frame(entity)[1])

    def leave(self, entity: str, viewer: str, watcher: Watcher) -> None:
        viewer = _same_person(viewer)
        counts = self._local.get(entity)
        if counts is None or counts[viewer] <= 0:
            return
        counts[viewer] -= 1
        self._waiting.get(entity, set()).discard(watcher)
        watchers = self._watchers.get(entity)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[entity]
        if counts[viewer] == 0:
            del counts[viewer]
            if not counts:
                del self._local[entity]
            self._changed((entity, viewer), False)
            self._announce_soon(entity)
        if entity not in self._watchers:
            self._forget_frames(entity)

    def viewers(self, entity: str) -> list[str]:
        names = set(self._local.get(entity, ())) | self._others.get(entity, frozenset())
        return sorted(names)

    def snapshot(self) -> dict[str, list[str]]:
        """The whole map, as ``GET /presence`` returns it."""
        return {entity: self.viewers(entity) for entity in sorted(self._local.keys()
                                                                  | self._others.keys())}

    def viewer_count(self) -> int:
        """Open streams of this process that announce a viewer."""
        return sum(sum(counts.values()) for counts in self._local.values())

    # -- the shared map's side (presence_sync) ----------------------------------------------

    def local_pairs(self) -> list[Key]:
        """Every (entity, viewer) of this process, for a full upload."""
        return [(entity, viewer) for entity, counts in self._local.items() for viewer in counts]

    def local_pair_count(self) -> int:
        return sum(len(counts) for counts in self._local.values())

    def take_changes(self) -> dict[Key, bool]:
        """The joins (True) and leaves (False) since the last call, each pair once."""
        changes, self._changes = self._changes, {}
        return changes

    def has_changes(self) -> bool:
        return bool(self._changes)

    def replace_others(self, others: Mapping[str, Iterable[str]]) -> None:
        """The viewers the other processes report now; announces the rows that changed."""
        fresh = {entity: frozenset(map(_same_person, names))
                 for entity, names in others.items() if names}
        changed = {entity for entity in fresh.keys() | self._others.keys()
                   if fresh.get(entity) != self._others.get(entity)}
        self._others = fresh
        for entity in changed:
            self._announce_soon(entity)

    # -- frames ------------------------------------------------------------------------------

    def _changed(self, key: Key, present: bool) -> None:
        # Only the last word per pair counts: a tab reloaded between two syncs costs nothing.
        self._changes[key] = present

    def _frame(self, entity: str) -> tuple[list[str], bytes]:
        viewers = self.viewers(entity)
        sent = self._sent.get(entity)
        if sent is not None and sent[0] == viewers:
            return sent
        # scopes hook: a tenant's presence key names the row the way the page does.
        body = json.dumps({"entity": scopes.shown_entity(entity), "viewers": viewers},
                          ensure_ascii=False)
        return viewers, sse.frame(body, event="presence")

    def _announce_soon(self, entity: str) -> bool:
        """Send the entity's list now, or once its interval is over; True if sent now."""
        if entity not in self._watchers or entity in self._scheduled:
            return False
        loop = asyncio.get_running_loop()
        wait = self._sent_at.get(entity, float("-inf")) + self._interval - loop.time()
        if wait > 0:
            self._scheduled[entity] = loop.call_later(wait, self._announce, entity)
            return False
        return self._announce(entity)

    def _announce(self, entity: str) -> bool:
        """Push the entity's list to its watchers unless they have it already."""
        self._scheduled.pop(entity, None)
        waiting = self._waiting.pop(entity, set())
        watchers = self._watchers.get(entity)
        if not watchers:
            return False
        sent = self._sent.get(entity)
        viewers, frame = self._frame(entity)
        if sent is not None and sent[0] == viewers:
            # E.g. someone joined and left again within the interval: nothing new, except
            # for the streams that have no list yet.
            for watcher in waiting:
                watcher.push(frame)
            return False
        self._sent_at[entity] = asyncio.get_running_loop().time()
        self._sent[entity] = (viewers, frame)
        for watcher in list(watchers):
            watcher.push(frame)
        return True

    def _forget_frames(self, entity: str) -> None:
        self._waiting.pop(entity, None)
        self._sent.pop(entity, None)
        self._sent_at.pop(entity, None)
        handle = self._scheduled.pop(entity, None)
        if handle is not None:
            handle.cancel()
