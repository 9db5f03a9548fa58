"""The relay's side of the database (an ordinary connection): which slot, how far the log
goes, and the append of relayed events (``bookwatch.relay_append`` in sql/capture.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from pgwatch_cli.stream import pgoutput
from pgwatch_cli.stream.relay_events import Built

Conn = psycopg.Connection[TupleRow]

SLOT_PREFIX = "bookwatch_"
PUBLICATION = "bookwatch_messages"
# pgoutput options for START_REPLICATION: protocol 1 sends whole transactions at commit; the
# writers' actor messages come with their rows.
STREAM_OPTIONS = {
    "proto_version": "1",
    "publication_names": PUBLICATION,
    "messages": "true",
}


@dataclass(frozen=True)
class Progress:
    """How far the log goes: the transaction at ``commit_lsn`` is in it up to ``position``
    changes (None: all of it), every earlier transaction wholly."""

    commit_lsn: int
    position: int | None

    def covers(self, commit_lsn: int, position: int) -> bool:
        if commit_lsn != self.commit_lsn:
            return commit_lsn < self.commit_lsn
        return self.position is None or position < self.position


def slot_name(conn: Conn) -> str:
    """``bookwatch_<oid of the current database>``: one slot per database, unique per server."""
    row = conn.execute(
        "SELECT oid::text FROM pg_catalog.pg_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return SLOT_PREFIX + str(row[0])


@dataclass(frozen=True)
class SlotState:
    exists: bool
    active_pid: int | None


def slot_state(conn: Conn, slot: str) -> SlotState:
    row = conn.execute(
        "SELECT active_pid FROM pg_catalog.pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    if row is None:
        return SlotState(False, None)
    return SlotState(True, row[0])


def progress(conn: Conn, slot: str) -> Progress:
    row = conn.execute(
        "SELECT commit_lsn::text, position FROM bookwatch.relay_progress WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return Progress(0, None)
    return Progress(pgoutput.parse_lsn(str(row[0])), None if row[1] is None else int(row[1]))


def append(conn: Conn, slot: str, events: Sequence[Built], reached: Progress) -> int | None:
    """Append ``events`` (in commit order) and record ``reached`` in one transaction, skipping
    whatever another relay appended meanwhile; returns the newest seq (None: none appended).
    """
    assert conn.autocommit, "the append must be its own transaction"
    # The event arrays go in binary (as text every quote of the JSON would be escaped); an
    # empty list has no element type to send in binary.
    arrays = "%b::pg_lsn[], %b::int8[], %b::text[], %b::text[]" if events else (
        "%s::pg_lsn[], %s::int8[], %s::text[], %s::text[]")
    row = conn.execute(
        f"SELECT bookwatch.relay_append(%s, {arrays}, %s::pg_lsn, %s::int8)",
        (
            slot,
            [pgoutput.format_lsn(e.commit_lsn) for e in events],
            [e.position for e in events],
            [e.channel for e in events],
            [e.tail for e in events],
            pgoutput.format_lsn(reached.commit_lsn),
            reached.position,
        ),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def server_encoding(conn: Conn) -> str:
    """Make ``conn`` speak the server's encoding (the WAL's text is in it) and return the
    Python codec for it; SQL_ASCII databases have no defined encoding and are refused."""
    row = conn.execute("SELECT current_setting('server_encoding')").fetchone()
    assert row is not None
    if str(row[0]).upper() == "SQL_ASCII":
        raise psycopg.NotSupportedError(
            "wal mode cannot decode a SQL_ASCII database (its text has no defined encoding); "
            "use --mode log")
    conn.execute("SELECT set_config('client_encoding', current_setting('server_encoding'),"
                 " false)")
    return conn.info.encoding
