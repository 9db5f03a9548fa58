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

# The columns people edit in the seed's booking form; version/updated_at are the lock.
EDITABLE = ("gesamtpreis", "guest_id", "status", "anzahl_gaeste", "bemerkungen")
LOCK_COLUMNS = ("version", "updated_at")
GUEST_IDS = range(1, 121)  # demo.sample_rows() creates guests 1..120
_STATUSES = ("bestätigt", "angefragt", "eingecheckt")
_REMARKS = ("Spätanreise gegen 22 Uhr", "Allergie: Nüsse", "Kinderbett gewünscht",
            "Parkplatz reserviert", "Zimmer mit Seeblick", "Rechnung an Firma")


class StaleCopy(Exception):
    """The booking was modified by another user since it was loaded (optimistic lock)."""


@dataclass
class Copy:
    """A user's copy of one booking (the open form) and the edit not yet saved."""

    id: int
    values: dict[str, Any]
    pending: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return int(self.values["version"])


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
        raise LookupError(f"booking {booking_id} does not exist in {table}")
    return Copy(booking_id, dict(row))


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
