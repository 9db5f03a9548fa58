"""The wal relay's logical replication slot and its publication (the wal-mode tables)."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from pgwatch_cli.capture import sqlfiles

PLUGIN = "pgoutput"


def slot_name(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(sqlfiles.query("relay_slot_name")).fetchone()
    assert row is not None  # current_database() always exists
    return str(row[0])


def publication_name(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(sqlfiles.query("relay_publication_name")).fetchone()
    assert row is not None
    return str(row[0])


def slot_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_replication_slots WHERE slot_name = %s)",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def publication_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_publication WHERE pubname = %s)", (name,)
    ).fetchone()
    return bool(row and row[0])


def waiting_events(conn: psycopg.Connection[Any], name: str, limit: int = 100_000) -> int | None:
    """Events in the slot not yet relayed (decoded without consuming), up to ``limit``; None
    when that cannot be known: a relay holds the slot, or the role may not decode."""
    try:
        with conn.transaction():
            row = conn.execute(
                sqlfiles.query("slot_waiting_events"), {"slot": name, "limit": limit}
            ).fetchone()
    except (psycopg.errors.ObjectInUse, psycopg.errors.InsufficientPrivilege):
        return None
    return int(row[0]) if row else 0


def create_slot_statement(name: str) -> sql.Composed:
    return sql.SQL("SELECT pg_catalog.pg_create_logical_replication_slot({}, {})").format(
        sql.Literal(name), sql.Literal(PLUGIN)
    )


def drop_slot_statement(name: str) -> sql.Composed:
    return sql.SQL("SELECT pg_catalog.pg_drop_replication_slot({})").format(sql.Literal(name))


def create_publication_statement(name: str) -> sql.Composed:
    # Tables join it at install; a partition's rows are published as its root's.
    return sql.SQL("CREATE PUBLICATION {} WITH (publish_via_partition_root = true)").format(
        sql.Identifier(name))


def drop_publication_statement(name: str) -> sql.Composed:
    return sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(name))


def create_slot(conn: psycopg.Connection[Any], name: str) -> tuple[bool, bool]:
    """Create the publication (when missing), then the slot, each committed on its own;
    returns which of the two were created.

    Order matters: pgoutput looks the publication up as of each decoded change, so one that
    commits after the slot's start point breaks decoding for good. And PostgreSQL creates a
    logical slot only in a transaction that has not written (it also waits for the
    transactions running right now to finish), so both come before the install's DDL.
    """
    with conn.transaction():
        publication = publication_name(conn)
        made_publication = not publication_exists(conn, publication)
        if made_publication:
            conn.execute(create_publication_statement(publication))
    with conn.transaction():
        made_slot = not slot_exists(conn, name)
        if made_slot:
            conn.execute(create_slot_statement(name))
    return made_publication, made_slot


def undo_create(conn: psycopg.Connection[Any], name: str, made: tuple[bool, bool]) -> None:
    """Drop what ``create_slot`` made, after the install it was for failed."""
    made_publication, made_slot = made
    if made_slot:
        drop_slot(conn, name)
    if made_publication:
        with conn.transaction():
            conn.execute(drop_publication_statement(publication_name(conn)))


def drop_slot(conn: psycopg.Connection[Any], name: str, *, wait_s: float = 10.0) -> None:
    """Drop the slot, ending the relay that holds it (a relay finds it gone and stops)."""
    deadline = time.monotonic() + wait_s
    while True:
        with conn.transaction():
            row = conn.execute(
                "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
                (name,),
            ).fetchone()
        if row is None:
            return
        if row[0] is None:
            try:
                with conn.transaction():
                    conn.execute(drop_slot_statement(name))
                return
            except psycopg.errors.ObjectInUse:
                pass  # a relay took it between the check and the drop
        else:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.pg_terminate_backend(%s)", (row[0],))
        if time.monotonic() > deadline:
            with conn.transaction():
                conn.execute(drop_slot_statement(name))  # raises: one clear database error
            return
        time.sleep(0.1)
