"""A database in wal mode (v3) with one captured table, ``items``, installed by the real
installer, and writers whose rows the relay decodes from the WAL."""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.tables import TableRef

CHANNEL = "booking_changes"
ITEMS = TableRef("public", "items")


def install_wal(dsn: str, channel: str = CHANNEL) -> None:
    """Table ``items`` captured in wal mode (schema, publication, slot by install-triggers)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, note text NOT NULL"
                     " DEFAULT '', version int NOT NULL DEFAULT 1)")
        triggers.run(conn, lambda: triggers.plan_install(
            conn, [ITEMS], channel=channel, excluded={}, mode="wal"))


def create_log(dsn: str) -> str:
    """(Re)create schema bookwatch with an empty log (the slot stays); returns the new log_id."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bookwatch CASCADE")
    install_wal(dsn)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT value FROM bookwatch.meta WHERE key = 'log_id'").fetchone()
    assert row is not None
    return str(row[0])


def emit(conn: psycopg.Connection, item: int, *, note: str = "") -> None:
    """One event for row ``item`` (INSERT, or UPDATE when it exists), in the connection's
    current transaction."""
    conn.execute(
        "INSERT INTO items (id, note) VALUES (%s, %s)"
        " ON CONFLICT (id) DO UPDATE SET note = excluded.note, version = items.version + 1",
        (item, note),
    )


def write(dsn: str, items: range | list[int], *, per_transaction: int = 1) -> None:
    """Committed transactions emitting one event per item, as actor ``writer``."""
    with psycopg.connect(dsn, autocommit=True, application_name="writer") as conn:
        batch: list[int] = []
        for item in items:
            batch.append(item)
            if len(batch) == per_transaction:
                with conn.transaction():
                    for one in batch:
                        emit(conn, one)
                batch = []
        if batch:
            with conn.transaction():
                for one in batch:
                    emit(conn, one)


def logged(dsn: str, channel: str = CHANNEL) -> list[tuple[int, dict[str, object]]]:
    """The change log of ``channel``: (seq, event) in seq order."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT seq, payload FROM bookwatch.change_log WHERE channel = %s ORDER BY seq",
            (channel,),
        ).fetchall()
    return [(seq, json.loads(payload)) for seq, payload in rows]


def slot_active_pid(dsn: str) -> int | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT active_pid FROM pg_replication_slots s JOIN pg_database d"
            " ON d.datname = current_database() WHERE s.slot_name = 'bookwatch_' || d.oid"
        ).fetchone()
    return None if row is None else row[0]


def forge_notify(dsn: str, payload: str, channel: str = CHANNEL) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SELECT pg_notify({}, %s)").format(sql.Literal(channel)), (payload,))
