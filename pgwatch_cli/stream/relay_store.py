"""The relay's side of the database (an ordinary connection): which slot, the secret that tells
real capture messages from forged ones, and the append of relayed events to the change log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

Conn = psycopg.Connection[TupleRow]

SLOT_PREFIX = "bookwatch_"
PUBLICATION = "bookwatch_messages"
MESSAGE_PREFIX = "bookwatch"
# pgoutput options for START_REPLICATION: protocol 1 carries logical decoding messages when
# asked; the publication has no tables, so rows of user tables are never decoded for us.
STREAM_OPTIONS = {
    "proto_version": "1",
    "publication_names": PUBLICATION,
    "messages": "true",
}


@dataclass(frozen=True)
class Relayed:
    """One event taken from the WAL: its channel and the event JSON after the seq value."""

    channel: str
    tail: str


@dataclass(frozen=True)
class CommittedBatch:
    """Events of one or more committed transactions, in commit order, ready to append."""

    events: Sequence[Relayed]
    last_commit_lsn: str  # pg_lsn text of the last transaction's commit record


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


def secrets(conn: Conn) -> frozenset[str]:
    """The secret(s) wal-mode capture puts before each message; readable by the owner only."""
    rows = conn.execute("SELECT secret FROM bookwatch.wal_secret").fetchall()
    return frozenset(str(row[0]) for row in rows)


def progress(conn: Conn, slot: str) -> str | None:
    """The commit LSN of the last transaction already appended by a relay of ``slot``."""
    row = conn.execute(
        "SELECT commit_lsn::text FROM bookwatch.relay_progress WHERE slot_name = %s", (slot,)
    ).fetchone()
    return None if row is None else str(row[0])


# One statement, so one transaction and one round trip on the autocommit connection: the
# commit-order lock, then numbers drawn under it (above every seq already committed; nobody else
# can commit one until this statement's transaction ends) handed out in ascending order to the
# events in commit order, the progress, and one wake-up per channel carrying its newest seq.
# nextval runs in the projection of a join with the lock's row, so never before the lock.
# The arrays go in binary (%b): as text, every quote of the event JSON would be escaped.
_APPEND = """
WITH locked AS (
    -- The lock log-mode capture takes before numbering (a row lock only the owner can take):
    -- holding it while appending keeps seq in commit order when both modes write one log.
    SELECT bookwatch.commit_order_lock()
), drawn AS (
    SELECT seq, row_number() OVER (ORDER BY seq) AS o
      FROM (SELECT nextval('bookwatch.change_seq') AS seq
              FROM locked, generate_series(1, %(n)s)) AS d
), appended AS (
    INSERT INTO bookwatch.change_log (seq, channel, payload)
    SELECT drawn.seq, e.channel, '{"v":1,"seq":' || drawn.seq || e.tail
      FROM unnest(%(channels)b::text[], %(tails)b::text[]) WITH ORDINALITY AS e(channel, tail, o)
      JOIN drawn USING (o)
    RETURNING seq, channel
), progress AS (
    INSERT INTO bookwatch.relay_progress AS p (slot_name, commit_lsn, relayed_at)
    VALUES (%(slot)s, %(lsn)s::pg_lsn, now())
    ON CONFLICT (slot_name) DO UPDATE SET commit_lsn = excluded.commit_lsn, relayed_at = now()
)
SELECT max(seq), pg_catalog.pg_notify(channel, max(seq)::text) FROM appended GROUP BY channel
"""
_PROGRESS = """
INSERT INTO bookwatch.relay_progress AS p (slot_name, commit_lsn, relayed_at)
VALUES (%(slot)s, %(lsn)s::pg_lsn, now())
ON CONFLICT (slot_name) DO UPDATE SET commit_lsn = excluded.commit_lsn, relayed_at = now()
"""


def append(conn: Conn, slot: str, batch: CommittedBatch) -> int | None:
    """Append ``batch`` to the change log, numbered in order, record the progress and wake the
    listeners of each channel once, in one statement (``conn`` is in autocommit mode, so that
    is one transaction); returns the newest seq (None when the batch had no events)."""
    assert conn.autocommit, "the append must be its own transaction"
    params = {"slot": slot, "lsn": batch.last_commit_lsn}
    if not batch.events:
        conn.execute(_PROGRESS, params)
        return None
    rows = conn.execute(_APPEND, {
        **params,
        "n": len(batch.events),
        "channels": [event.channel for event in batch.events],
        "tails": [event.tail for event in batch.events],
    }).fetchall()
    return max(int(row[0]) for row in rows)
