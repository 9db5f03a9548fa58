"""Scenario ``storm``: many users editing a few bookings at once, with random think times.

Every user is an asyncio task with a connection of its own for reads and writes; their
notifications come from the process's one ChangeStream through the Hub, one subscription
each. The users' choices (booking, column, value, think time) come from the seed, so every
strategy faces the same work; only the timing of the database differs between runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgwatch_cli import db
from pgwatch_cli.commands.simulate import bookings
from pgwatch_cli.commands.simulate.bookings import Copy, Ledger, StaleCopy
from pgwatch_cli.commands.simulate.feed import Clock, Commits, Inbox, arrivals
from pgwatch_cli.commands.simulate.scratch import Scratch
from pgwatch_cli.commands.simulate.strategies import (
    Strategy,
    clashes,
    concerns,
    react,
    rebase,
)
from pgwatch_cli.errors import DatabaseUnreachable
from pgwatch_cli.stream.hub import Hub

FIRST_BOOKING = 123
# merge: how often a save rejected by the lock is rebased and sent again before it counts as
# rejected (each retry needs another user's save to win the race again).
MERGE_RETRIES = 3
# After the last save, how long every user's notifications may take to arrive before the
# missing ones are counted as not delivered.
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Turn:
    """One round of one user: open a booking, change one column, think, save."""

    booking_id: int
    column: str
    value: Any
    think_ms: float


@dataclass(frozen=True)
class Workload:
    users: int
    rounds: int
    bookings: tuple[int, ...]
    think_ms: float
    seed: int

    def names(self) -> list[str]:
        return [f"user{n:02d}" for n in range(1, self.users + 1)]

    def turns(self, user: int) -> list[Turn]:
        """The user's rounds, the same for every strategy and every run with this seed."""
        rng = random.Random(f"storm/{self.seed}/{user}")
        turns = []
        for _ in range(self.rounds):
            column = rng.choice(bookings.EDITABLE)
            turns.append(Turn(
                booking_id=rng.choice(self.bookings),
                column=column,
                value=bookings.random_value(rng, column),
                think_ms=rng.uniform(0.5, 1.5) * self.think_ms,
            ))
        return turns


def booking_ids(count: int) -> tuple[int, ...]:
    return tuple(range(FIRST_BOOKING, FIRST_BOOKING + count))


@dataclass
class Tally:
    """What one strategy's storm came to."""

    strategy: Strategy
    attempts: int = 0  # rounds played: every one ends in a save or a conflict
    saves: int = 0
    rejected: int = 0  # saves refused by the optimistic lock
    clashes: int = 0  # refresh/merge: another user changed the column being edited
    lost_updates: int = 0  # saves that silently replaced another user's newer value
    retries: int = 0  # merge: saves rebased on the current row after a 409 and sent again
    reloads: int = 0
    rebases: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    undelivered: int = 0  # notifications a user never got (within DRAIN_TIMEOUT_S)
    duration_ms: float = 0.0

    @property
    def conflicts(self) -> int:
        return self.rejected + self.clashes

    @property
    def conflict_rate(self) -> float:
        return self.conflicts / self.attempts if self.attempts else 0.0


async def play(area: Scratch, hub: Hub, strategy: Strategy, work: Workload) -> Tally:
    tally = Tally(strategy)
    names = work.names()
    async with contextlib.AsyncExitStack() as stack:
        connections = await _connect_all(stack, area, names)
        clock = Clock()
        commits = Commits(clock)
        ledger = Ledger()
        inboxes = [Inbox(hub, clock) if strategy.realtime else None for _ in names]
        try:
            async with asyncio.TaskGroup() as pumps:
                for inbox in inboxes:
                    if inbox is not None:
                        pumps.create_task(inbox.pump())
                async with asyncio.TaskGroup() as users:
                    for number, (name, conn, inbox) in enumerate(
                        zip(names, connections, inboxes, strict=True), start=1
                    ):
                        user = _User(name, conn, area, strategy, inbox, commits, ledger,
                                     tally)
                        users.create_task(user.play(work.turns(number)))
                tally.duration_ms = clock.now()
                await _drain(dict(zip(names, inboxes, strict=True)), commits, tally)
        finally:
            for inbox in inboxes:
                if inbox is not None:
                    inbox.close()
    return tally


async def _connect_all(
    stack: contextlib.AsyncExitStack, area: Scratch, names: list[str]
) -> list[psycopg.AsyncConnection[Any]]:
    """A connection per user, opened side by side; if one fails, the others are closed."""
    opened = await asyncio.gather(
        *(db.connect_async(area.dsn, application_name=f"bookwatch simulate {name}")
          for name in names),
        return_exceptions=True,
    )
    connections = []
    for result in opened:
        if isinstance(result, psycopg.AsyncConnection):
            connections.append(await stack.enter_async_context(result))
    for result in opened:
        if isinstance(result, DatabaseUnreachable):
            raise DatabaseUnreachable(
                result.message,
                hint=f"The storm needs {len(names) + 1} connections (one per user, one to "
                "listen); try fewer --users.",
            ) from None
        if isinstance(result, BaseException):
            raise result
    return connections


async def _drain(inboxes: dict[str, Inbox | None], commits: Commits, tally: Tally) -> None:
    """Let the last notifications arrive, close the inboxes, collect commit→arrival times of
    every save at every other user's client."""
    saves = set(commits.at_ms)
    for name, inbox in inboxes.items():
        if inbox is None:
            continue
        await inbox.wait_for(saves, DRAIN_TIMEOUT_S)
        tally.undelivered += len(saves - inbox.seen)
        inbox.close()
        for delivery in inbox.deliveries:
            if delivery.event is None or delivery.event.actor == name:
                continue
            latency = commits.latency(delivery)
            if latency is not None:
                tally.latencies_ms.append(latency)


class _User:
    def __init__(
        self, name: str, conn: psycopg.AsyncConnection[Any], area: Scratch, strategy: Strategy,
        inbox: Inbox | None, commits: Commits, ledger: Ledger, tally: Tally,
    ) -> None:
        self.name = name
        self.conn = conn
        self.table = area.bookings
        self.strategy = strategy
        self.inbox = inbox
        self.commits = commits
        self.ledger = ledger
        self.tally = tally
        self.clock = commits.clock

    async def play(self, turns: list[Turn]) -> None:
        for turn in turns:
            await self.round(turn)

    async def round(self, turn: Turn) -> None:
        self.tally.attempts += 1
        copy = await bookings.load(self.conn, self.table, turn.booking_id)
        copy.edit(turn.column, turn.value)
        deadline = self.clock.now() + turn.think_ms
        copy_or_clash = await self.think(copy, deadline)
        if copy_or_clash is None:
            self.tally.clashes += 1
            return
        copy = copy_or_clash
        for _ in range(MERGE_RETRIES + 1):
            try:
                await self.save(copy, turn)
            except StaleCopy:
                # The 409 came before the event. merge does what the demo page does with a
                # 409's current row: rebase on it and, with no clash, save again.
                if self.strategy is not Strategy.MERGE:
                    break
                copy = await self.reload(copy)
                if clashes(copy, copy.values):
                    self.tally.clashes += 1
                    return
                self.tally.retries += 1
                continue
            self.tally.saves += 1
            return
        self.tally.rejected += 1

    async def save(self, copy: Copy, turn: Turn) -> None:
        def committed(version: int) -> None:
            # Still inside the saving transaction: no other save of this booking between.
            self.tally.lost_updates += bool(self.ledger.overwritten(copy, self.name))
            self.ledger.record(copy, version, self.name)
            self.commits.mark(turn.booking_id, version)

        await bookings.save(self.conn, self.table, copy, self.name, on_commit=committed)

    async def think(self, copy: Copy, deadline: float) -> Copy | None:
        """Edit until the deadline, reacting to notifications; None after a merge clash."""
        async for delivery in arrivals(self.inbox, self.clock, deadline):
            event = delivery.event
            # None: cut loose by the hub, events were missed; only a reload can tell.
            if event is not None:
                if not concerns(event, copy, self.name):
                    continue
                reaction = react(self.strategy, event, copy)
                if reaction.kind == "clash":
                    return None
                if reaction.kind == "rebase":
                    rebase(copy, event)
                    self.tally.rebases += 1
                    continue
            copy = await self.reload(copy)
            if clashes(copy, copy.values):
                return None
        return copy

    async def reload(self, copy: Copy) -> Copy:
        fresh = await bookings.load(self.conn, self.table, copy.id)
        self.tally.reloads += 1
        return copy.reloaded(fresh)

