"""How a simulated user reads and saves a booking: load a copy, edit, save with the optimistic
lock on ``version`` (bumping ``updated_at`` too), as the seed's application does."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from pgwatch_cli.capture.tables import TableRef
from pgwatch_cli.errors import BookwatchError

# The columns people edit in the seed's booking form; version/updated_at are the lock.
EDITABLE = ("gesamtpreis", "guest_id", "status", "anzahl_gaeste", "bemerkungen")
# What the columns mean, for text people read (the schema's German names only where the
# schema itself is shown).
COLUMN_NAMES = {"gesamtpreis": "price", "guest_id": "guest", "status": "status",
                "anzahl_gaeste": "number of guests", "bemerkungen": "notes"}
LOCK_COLUMNS = ("version", "updated_at")
GUEST_IDS = range(1, 121)  # demo.sample_rows() creates guests 1..120
_STATUSES = ("bestätigt", "angefragt", "eingecheckt")
_REMARKS = ("Spätanreise gegen 22 Uhr", "Allergie: Nüsse", "Kinderbett gewünscht",
            "Parkplatz reserviert", "Zimmer mit Seeblick", "Rechnung an Firma")


class StaleCopy(Exception):
    """The booking was modified by another user since it was loaded (optimistic lock)."""


class MissingBooking(BookwatchError):
    """A booking the simulation plays with does not exist (any more)."""


def column_name(column: str) -> str:
    return COLUMN_NAMES.get(column, column)


def same(a: Any, b: Any) -> bool:
    """Equal as values of a column: an event's JSON number 1581.84 (a float) is the
    numeric(10, 2) the database holds as Decimal("1581.84")."""
    numbers = (int, float, Decimal)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool | str):
        return Decimal(str(a)) == Decimal(str(b))
    return bool(a == b)


@dataclass
class Copy:
    """A user's copy of one booking (the open form) and the edit not yet saved.

    ``origin`` holds, per pending column, the value the user saw when they began the edit, and
    ``origin_version`` the booking's version then: what a later save may not silently replace.
    """

    id: int
    values: dict[str, Any]
    pending: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)
    origin_version: int = 0

    @property
    def version(self) -> int:
        return int(self.values["version"])

    def edit(self, column: str, value: Any) -> None:
        self.pending[column] = value
        self.origin[column] = self.values[column]
        self.origin_version = self.version

    def reloaded(self, fresh: Copy) -> Copy:
        """``fresh`` (the row as it is now) with this copy's edit still on top."""
        fresh.pending, fresh.origin = self.pending, self.origin
        fresh.origin_version = self.origin_version
        return fresh


@dataclass
class Ledger:
    """Who saved which column of which booking last: the referee for lost updates.

    A lost update is a save that silently replaced a value another user had saved since this
    user began the edit (their value differing both from what this user saw and from what
    this user writes). The check runs while the saving UPDATE holds the row lock, so no other
    save of that booking can come between.
    """

    writes: dict[tuple[int, str], tuple[int, Any, str]] = field(default_factory=dict)

    def overwritten(self, copy: Copy, actor: str) -> list[str]:
        lost = []
        for column, mine in copy.pending.items():
            last = self.writes.get((copy.id, column))
            if last is None:
                continue
            version, theirs, who = last
            if (who != actor and version > copy.origin_version
                    and not same(theirs, copy.origin.get(column)) and not same(theirs, mine)):
                lost.append(column)
        return lost

    def record(self, copy: Copy, version: int, actor: str) -> None:
        for column, value in copy.pending.items():
            self.writes[(copy.id, column)] = (version, value, actor)


def random_value(rng: random.Random, column: str) -> Any:
    """A plausible new value for an editable column, drawn from ``rng`` alone (reproducible)."""
    if column == "gesamtpreis":
        return Decimal(rng.randrange(8000, 250000)) / 100
    if column == "guest_id":
        return rng.choice(GUEST_IDS)
    if column == "status":
        return rng.choice(_STATUSES)
    if column == "anzahl_gaeste":
        return rng.randint(1, 4)
    if column == "bemerkungen":
        return rng.choice(_REMARKS)
    raise ValueError(f"not an editable column: {column}")


async def load(conn: psycopg.AsyncConnection[Any], table: TableRef, booking_id: int) -> Copy:
    query = sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in ("id", *LOCK_COLUMNS, *EDITABLE)),
        table.identifier(),
    )
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (booking_id,))
        row = await cursor.fetchone()
    if row is None:
        raise MissingBooking(
            f"Booking #{booking_id} does not exist in {table}.",
            hint="Something else changed the scratch schema during the run; run it again.",
        )
    return Copy(booking_id, dict(row))


async def guest_names(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[int, str]:
    """Every guest's full name by id: the story names people, not numbers."""
    query = sql.SQL("SELECT id, vorname || ' ' || nachname FROM {}").format(
        TableRef(schema, "guests").identifier()
    )
    async with conn.transaction():
        cursor = await conn.execute(query)
        return {int(row[0]): str(row[1]) for row in await cursor.fetchall()}


async def save(
    conn: psycopg.AsyncConnection[Any], table: TableRef, copy: Copy, actor: str,
    on_commit: Callable[[int], None] | None = None,
) -> int:
    """Write the pending edit if nobody saved since the copy was loaded; returns the new version.

    ``on_commit(version)`` runs just before COMMIT is sent: the moment the change becomes
    visible to others, which notification latency is measured from.
    """
    assignments = [
        sql.SQL("{} = %s").format(sql.Identifier(column)) for column in copy.pending
    ] + [sql.SQL("version = version + 1"), sql.SQL("updated_at = now()")]
    update = sql.SQL("UPDATE {} SET {} WHERE id = %s AND version = %s RETURNING version").format(
        table.identifier(), sql.SQL(", ").join(assignments)
    )
    async with conn.transaction():
        # SET LOCAL with a bound value: the capture trigger reads it as the event's actor.
        await conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (actor,))
        cursor = await conn.execute(update, [*copy.pending.values(), copy.id, copy.version])
        row = await cursor.fetchone()
        if row is None:
            raise StaleCopy(f"booking #{copy.id} was modified by another user")
        if on_commit is not None:
            on_commit(int(row[0]))
    return int(row[0])
