"""The relay's side of the database (an ordinary connection): which slot, how far the log
goes, and the append of relayed events (``bookwatch.relay_append`` in sql/capture.sql)."""

from __future__ import annotations

import json
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
    lost: bool = False  # invalidated: the WAL it needed is gone (max_slot_wal_keep_size)


def slot_state(conn: Conn, slot: str) -> SlotState:
    row = conn.execute(
        "SELECT active_pid, wal_status = 'lost' FROM pg_catalog.pg_replication_slots"
        " WHERE slot_name = %s", (slot,)
    ).fetchone()
    if row is None:
        return SlotState(False, None)
    return SlotState(True, row[0], bool(row[1]))


def replace_lost_slot(conn: Conn, slot: str, reason: str) -> None:
    """The slot was invalidated: append one GAP event per channel saying what range of changes
    is lost and why, then make a new slot (from now on nothing more is lost).

    The GAP goes first: a relay killed between the two finds the slot still lost and says so
    again rather than never."""
    row = conn.execute(
        "SELECT p.commit_lsn::text, p.relayed_at FROM bookwatch.relay_progress p"
        " WHERE p.slot_name = %s", (slot,)
    ).fetchone()
    lost_from = {"lsn": str(row[0]), "time": row[1].isoformat()} if row else None
    with conn.transaction():
        conn.execute("SELECT bookwatch.commit_order_lock()")
        conn.execute(
            """
            WITH channels AS (SELECT DISTINCT channel FROM bookwatch.captured_table),
            appended AS (
                INSERT INTO bookwatch.change_log (seq, channel, payload)
                SELECT s.seq, s.channel, json_build_object(
                           'v', 1, 'seq', s.seq, 'action', 'GAP', 'reason', %(reason)s::text,
                           'lost_from', %(lost_from)s::json,
                           'lost_to', json_build_object(
                               'lsn', pg_catalog.pg_current_wal_lsn()::text,
                               'time', pg_catalog.now()),
                           'timestamp', pg_catalog.now())::text
                  FROM (SELECT nextval('bookwatch.change_seq') AS seq, channel
                          FROM channels) AS s
                RETURNING seq, channel
            )
            SELECT pg_catalog.pg_notify(channel, seq::text) FROM appended
            """,
            {"reason": reason, "lost_from": None if lost_from is None else json.dumps(lost_from)},
        )
    conn.execute("SELECT pg_catalog.pg_drop_replication_slot(%s)", (slot,))
    conn.execute("SELECT pg_catalog.pg_create_logical_replication_slot(%s, 'pgoutput')",
                 (slot,))


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
