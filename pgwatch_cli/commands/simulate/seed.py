"""Scenario ``seed``: the seed's story of booking #123, played once per strategy.

Anna and Ben both open the booking; Anna changes the price and saves; Ben, still editing the
guest, saves later. Without realtime Ben's save hits the optimistic lock; with it, Ben hears
of Anna's save first and his save goes through.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NoReturn

import psycopg
from psycopg import sql

from pgwatch_cli import db
from pgwatch_cli.commands.simulate import bookings
from pgwatch_cli.commands.simulate.bookings import Copy, Ledger, StaleCopy, column_name
from pgwatch_cli.commands.simulate.feed import Clock, Commits, Delivery, Inbox, arrivals
from pgwatch_cli.commands.simulate.scratch import Scratch
from pgwatch_cli.commands.simulate.strategies import (
    Strategy,
    clashes,
    concerns,
    react,
    rebase,
)
from pgwatch_cli.errors import BookwatchError
from pgwatch_cli.stream.hub import Hub, Subscription

BOOKING_ID = 123
ANNA, BEN = "Anna", "Ben"
SETUP_ACTOR = "bookwatch simulate"
# Ben takes longer over his edit than Anna: she saves at 300 ms, he at 900 ms. The 600 ms
# between are the window in which a notification can save him; it usually takes ~1 ms.
ANNA_SAVES_AT_MS = 300.0
BEN_SAVES_AT_MS = 900.0
BARRIER_TIMEOUT_S = 10.0
# The words the demo page (server/demo_api.py) shows on a 409: the seed's red error.
CONFLICT_MESSAGE = (
    "This booking was modified by another user. Reload it to see their changes, then save again."
)


@dataclass(frozen=True)
class Edits:
    """The two edits of the story; drawn from the seed, so a run is reproducible."""

    price: Decimal
    guest_id: int

    @classmethod
    def draw(cls, seed: int, original: Copy) -> Edits:
        rng = random.Random(f"seed-scenario/{seed}")
        old_price = Decimal(original.values["gesamtpreis"])
        price = (old_price * Decimal(rng.randint(105, 130)) / 100).quantize(Decimal("0.01"))
        guests = [g for g in bookings.GUEST_IDS if g != original.values["guest_id"]]
        return cls(price, rng.choice(guests))


@dataclass(frozen=True)
class Step:
    at_ms: float
    who: str
    what: str
    tone: str = ""  # "ok", "bad", "notice": how the timeline colours it


@dataclass
class SeedRun:
    """One strategy's play of the story."""

    strategy: Strategy
    steps: list[Step] = field(default_factory=list)
    saves: int = 0
    conflicts: int = 0
    lost_updates: int = 0
    ben_saved: bool = False
    notified_after_ms: float | None = None
    toast: str | None = None
    reaction: str | None = None
    both_kept: bool = False


def toast_text(actor: str, ago_ms: float) -> str:
    """The seed's toast: "Anna updated this booking (2 seconds ago)"."""
    if ago_ms < 1000:
        ago = f"{max(ago_ms, 0):.0f} ms ago"
    else:
        seconds = round(ago_ms / 1000)
        ago = f"{seconds} second{'s' if seconds != 1 else ''} ago"
    return f"{actor} updated this booking ({ago})"


def money(value: Any) -> str:
    return f"€{Decimal(str(value)):,.2f}"


def columns(names: tuple[str, ...] | list[str] | dict[str, Any]) -> str:
    """Columns as people say them: "the price and the guest"."""
    said = [f"the {column_name(name)}" for name in names]
    return " and ".join(said) if len(said) < 3 else ", ".join(said[:-1]) + " and " + said[-1]


async def original(area: Scratch) -> Copy:
    async with await _connect(area, SETUP_ACTOR) as conn:
        return await bookings.load(conn, area.bookings, BOOKING_ID)


async def play(area: Scratch, hub: Hub, strategy: Strategy, start: Copy, edits: Edits) -> SeedRun:
    """Reset the booking to ``start``, then play the story with ``strategy``."""
    run = SeedRun(strategy)
    async with (
        await _connect(area, ANNA) as anna_conn,
        await _connect(area, BEN) as ben_conn,
    ):
        await _reset(anna_conn, area, start, hub)
        guests = await bookings.guest_names(anna_conn, area.schema)
        clock = Clock()
        inbox = Inbox(hub, clock) if strategy.realtime else None
        story = _Story(area, run, clock, inbox, edits, guests)
        try:
            async with asyncio.TaskGroup() as group:
                if inbox is not None:
                    group.create_task(inbox.pump())
                await story.open(anna_conn, ben_conn)
                await asyncio.gather(story.anna(anna_conn), story.ben(ben_conn))
                await story.result(anna_conn)
                run.steps.sort(key=lambda step: step.at_ms)
                if inbox is not None:
                    inbox.close()  # ends its pump, and with it the task group
        finally:
            if inbox is not None:
                inbox.close()
    return run


async def _connect(area: Scratch, actor: str) -> psycopg.AsyncConnection[Any]:
    return await db.connect_async(area.dsn, application_name=f"bookwatch simulate {actor}")


async def _reset(
    conn: psycopg.AsyncConnection[Any], area: Scratch, start: Copy, hub: Hub
) -> None:
    """Put the booking back as it was before the first strategy ran, version included.

    When that changes something (a previous strategy edited it), its event is awaited: events
    come in seq order, so nothing older can reach a subscriber opened after it.
    """
    columns = [*bookings.EDITABLE, *bookings.LOCK_COLUMNS]
    update = sql.SQL(
        "UPDATE {table} SET ({cols}) = ROW({values}) WHERE id = {id}"
        " AND ({cols}) IS DISTINCT FROM ({values}) RETURNING version"
    ).format(
        table=area.bookings.identifier(),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        values=sql.SQL(", ").join(sql.Placeholder(c) for c in columns),
        id=sql.Placeholder("id"),
    )
    barrier = hub.subscribe()
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (SETUP_ACTOR,))
            cursor = await conn.execute(update, {**start.values, "id": start.id})
            changed = await cursor.fetchone() is not None
        if changed:
            await _until_event_of(barrier, SETUP_ACTOR)
    finally:
        barrier.close()


async def _until_event_of(subscription: Subscription, actor: str) -> None:
    try:
        async with asyncio.timeout(BARRIER_TIMEOUT_S):
            async for event in subscription:
                if event.actor == actor:
                    return
    except TimeoutError:
        pass
    raise BookwatchError(
        f"No change event arrived within {BARRIER_TIMEOUT_S:.0f} s of a write.",
        hint="Check that the server delivers notifications (LISTEN/NOTIFY) to this client.",
    )


class _Clash(Exception):
    """The other user changed a column Ben is editing: the merge strategy stops and asks."""


class _Story:
    """The two users' parts of one play, writing the timeline as they go."""

    def __init__(
        self, area: Scratch, run: SeedRun, clock: Clock, inbox: Inbox | None, edits: Edits,
        guests: dict[int, str],
    ) -> None:
        self.table = area.bookings
        self.guests = guests
        self.ledger = Ledger()
        self.run = run
        self.clock = clock
        self.inbox = inbox
        self.edits = edits
        self.commits = Commits(clock)
        self.anna_copy = self.ben_copy = Copy(BOOKING_ID, {})

    def step(self, who: str, what: str, tone: str = "", at_ms: float | None = None) -> None:
        when = self.clock.now() if at_ms is None else at_ms
        self.run.steps.append(Step(when, who, what, tone))

    def saved(self, who: str, what: str, version: int) -> None:
        # Dated at COMMIT, not when the answer came back: the other client may hear of it
        # before the writer does, and the timeline should show cause before effect.
        committed = self.commits.at_ms[(BOOKING_ID, version)]
        self.step(who, f"{what}: saved as version {version}", "ok", at_ms=committed)

    async def open(
        self, anna_conn: psycopg.AsyncConnection[Any], ben_conn: psycopg.AsyncConnection[Any]
    ) -> None:
        self.anna_copy = await bookings.load(anna_conn, self.table, BOOKING_ID)
        self.step(ANNA, f"opens booking #{BOOKING_ID} (version {self.anna_copy.version}, "
                        f"price {money(self.anna_copy.values['gesamtpreis'])})")
        self.ben_copy = await bookings.load(ben_conn, self.table, BOOKING_ID)
        self.step(BEN, f"opens booking #{BOOKING_ID} (version {self.ben_copy.version}, "
                       f"guest {self.guest(self.ben_copy.values['guest_id'])})")

    def guest(self, guest_id: int) -> str:
        return self.guests.get(guest_id, f"guest #{guest_id}")

    async def anna(self, conn: psycopg.AsyncConnection[Any]) -> None:
        copy = self.anna_copy
        await asyncio.sleep(max(ANNA_SAVES_AT_MS - self.clock.now(), 0) / 1000)
        copy.edit("gesamtpreis", self.edits.price)
        version = await bookings.save(
            conn, self.table, copy, ANNA, on_commit=self._committer(copy, ANNA)
        )
        self.run.saves += 1
        self.saved(ANNA, f"saves the price {money(copy.values['gesamtpreis'])} → "
                         f"{money(self.edits.price)}", version)

    def _committer(self, copy: Copy, who: str) -> Callable[[int], None]:
        def committed(version: int) -> None:
            # Inside the saving transaction (row locked): the ledger sees saves in order.
            self.run.lost_updates += bool(self.ledger.overwritten(copy, who))
            self.ledger.record(copy, version, who)
            self.commits.mark(BOOKING_ID, version)

        return committed

    async def ben(self, conn: psycopg.AsyncConnection[Any]) -> None:
        copy = self.ben_copy
        old_guest = self.guest(copy.values["guest_id"])
        new_guest = self.guest(self.edits.guest_id)
        copy.edit("guest_id", self.edits.guest_id)
        self.step(BEN, f"changes the guest {old_guest} → {new_guest} (not saved yet)")
        try:
            async for delivery in arrivals(self.inbox, self.clock, BEN_SAVES_AT_MS):
                copy = await self._notified(conn, copy, delivery)
        except _Clash:
            self.run.conflicts += 1
            return
        what = f"saves the guest {old_guest} → {new_guest}"
        try:
            version = await bookings.save(
                conn, self.table, copy, BEN, on_commit=self._committer(copy, BEN)
            )
        except StaleCopy:
            self.run.conflicts += 1
            self.step(BEN, f"{what}: rejected by the optimistic lock (his copy is version "
                           f'{copy.version}): "{CONFLICT_MESSAGE}"', "bad")
            return
        self.run.saves += 1
        self.run.ben_saved = True
        self.saved(BEN, what, version)

    async def _notified(
        self, conn: psycopg.AsyncConnection[Any], copy: Copy, delivery: Delivery
    ) -> Copy:
        event = delivery.event
        if event is None:  # the hub cut us loose: we may have missed events, so reload
            return await self._reload(conn, copy, "missed events")
        if not concerns(event, copy, BEN):
            return copy
        latency = self.commits.latency(delivery)
        toast = toast_text(event.actor or "someone", latency or 0.0)
        if self.run.toast is None:
            self.run.toast, self.run.notified_after_ms = toast, latency
        reaction = react(self.run.strategy, event, copy)
        self.step(BEN, f'sees the toast "{toast}"', "notice")
        changed = columns(reaction.changed)
        if reaction.kind == "clash":
            self.clash(f"{event.actor} changed {changed}, which he is editing too")
        if reaction.kind == "rebase":
            rebase(copy, event)
            self.run.reaction = "rebased"
            self.step(BEN, f"merges: {event.actor} changed {changed}, he edits "
                           f"{columns(copy.pending)}: no overlap, so his edit is rebased onto "
                           f"version {copy.version} without a reload", "ok")
            return copy
        return await self._reload(conn, copy, f"{event.actor} changed {changed}")

    def clash(self, why: str) -> NoReturn:
        self.step(BEN, f"conflict: {why}; he chooses which value to keep", "bad")
        raise _Clash()

    async def _reload(self, conn: psycopg.AsyncConnection[Any], copy: Copy, why: str) -> Copy:
        fresh = copy.reloaded(await bookings.load(conn, self.table, copy.id))
        self.run.reaction = "reloaded"
        self.step(BEN, f"reloads ({why}): version {fresh.version}, price "
                       f"{money(fresh.values['gesamtpreis'])}; his guest change stays in the form")
        clashing = clashes(fresh, fresh.values)
        if clashing:
            self.clash(f"the reload shows a new value for {columns(clashing)}, which he is "
                       "editing too")
        return fresh

    async def result(self, conn: psycopg.AsyncConnection[Any]) -> None:
        final = await bookings.load(conn, self.table, BOOKING_ID)
        price, guest = final.values["gesamtpreis"], final.values["guest_id"]
        self.run.both_kept = price == self.edits.price and guest == self.edits.guest_id
        # The summary's "lost" counts saves that silently replaced a newer value: a save the
        # optimistic lock refused is not lost in that sense, it is refused and must be redone.
        if self.run.both_kept:
            outcome = "both changes kept"
        elif self.run.lost_updates:
            outcome = "a lost update: a save silently replaced the other user's change"
        else:
            outcome = ("Ben's save was refused (nothing silently lost): he must reload and "
                       "make his change again")
        self.step("", f"booking #{BOOKING_ID} now: version {final.version}, price "
                      f"{money(price)}, guest {self.guest(guest)}: {outcome}",
                  "ok" if self.run.both_kept else "bad")
