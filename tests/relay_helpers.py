"""A minimal schema v2 in wal mode, and writers that emit capture messages as wal-mode capture
does (the interface agreed with the capture branch). Kept in one place so it can be switched to
the real installer (``install-triggers --mode wal``) once both branches are merged."""

from __future__ import annotations

import json
import uuid

import psycopg
from psycopg import sql

CHANNEL = "booking_changes"

_SCHEMA = """
CREATE SCHEMA bookwatch;
CREATE TABLE bookwatch.meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE bookwatch.wal_secret (secret text NOT NULL);
CREATE SEQUENCE bookwatch.change_seq AS bigint;
CREATE TABLE bookwatch.change_log (
    seq bigint PRIMARY KEY, channel text NOT NULL, payload text NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE bookwatch.relay_progress (
    slot_name text PRIMARY KEY, commit_lsn pg_lsn NOT NULL,
    relayed_at timestamptz NOT NULL DEFAULT now()
);
-- As sql/capture.sql installs it: the relay takes it around every append.
CREATE FUNCTION bookwatch.commit_order_lock() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM bookwatch.meta WHERE key = 'log_id' FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'bookwatch: the change log has no identity row';
    END IF;
END
$$;
"""

# The event JSON after the seq value, as the capture function builds it.
TAIL_SQL = """
',"table":"items","schema":"public","action":"INSERT","id":' || %(id)s::text
|| ',"pk":{"id":' || %(id)s::text || '},"actor":"writer","changed":null,"diff":'
|| %(diff)s || ',"truncated":false,"txid":' || pg_current_xact_id()::text
|| ',"timestamp":"'
|| to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"') || '"}'
"""
EMIT_SQL = (
    "SELECT pg_logical_emit_message(true, 'bookwatch', "
    "(SELECT secret FROM bookwatch.wal_secret) || E'\\n' || %(channel)s || E'\\n' || "
    + TAIL_SQL + ")"
)


def install_wal(dsn: str) -> None:
    """Schema v2 with a new log_id, the publication and the database's slot."""
    create_log(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE PUBLICATION bookwatch_messages")
        conn.execute(
            "SELECT pg_create_logical_replication_slot('bookwatch_' || oid, 'pgoutput')"
            " FROM pg_database WHERE datname = current_database()"
        )


def create_log(dsn: str) -> str:
    """(Re)create schema bookwatch with an empty log; returns the new log_id."""
    log_id = str(uuid.uuid4())
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP SCHEMA IF EXISTS bookwatch CASCADE")
        conn.execute(_SCHEMA)
        conn.execute(
            "INSERT INTO bookwatch.meta VALUES ('schema_version', '2'), ('log_id', %s),"
            " ('retention', '7 days')", (log_id,),
        )
        conn.execute("INSERT INTO bookwatch.wal_secret VALUES (md5(random()::text))")
    return log_id


def emit(conn: psycopg.Connection, item: int, *, diff: object = None,
         channel: str = CHANNEL) -> None:
    """One event for row ``item``, in the connection's current transaction."""
    conn.execute(EMIT_SQL, {"id": item, "diff": json.dumps(diff), "channel": channel})


def write(dsn: str, items: range | list[int], *, per_transaction: int = 1) -> None:
    """Committed transactions emitting one event per item."""
    with psycopg.connect(dsn, autocommit=True) as conn:
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
