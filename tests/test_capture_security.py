"""Who may read, write and forge what: writers need no grants, LISTEN reveals no row data,
and nobody but the installer writes the log or the WAL messages the relay accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.capture_helpers import (
    Listener,
    install,
    log_payloads,
    reader,
)
from tests.fix_roles import connect_as


@pytest.fixture
def owner(target: str, mode: str) -> Iterator[psycopg.Connection[Any]]:
    """The installer's connection, on a database with a watched ``guests`` table."""
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, email text, telefon text)")
        conn.execute("INSERT INTO guests VALUES (1, 'anna@example.org', '+49 30 1234')")
        install(target, "guests", mode=mode)
        yield conn


def relayed(target: str, expected: int) -> list[dict[str, Any]]:
    """wal mode: what a relay appends to the log."""
    wal = reader(target, "wal")
    try:
        return list(wal.events(expected))  # type: ignore[union-attr]
    finally:
        wal.close()


def test_a_writer_without_any_grant_on_bookwatch_writes_and_is_the_actor(
    owner, target, mode, make_role
):
    writer = make_role("GRANT SELECT, INSERT, UPDATE ON guests TO {role}")
    with connect_as(target, writer) as conn:
        conn.execute("UPDATE guests SET email = 'a@example.org' WHERE id = 1")
        conn.execute("INSERT INTO guests VALUES (2, 'b@example.org', NULL)")
    events = relayed(target, 2) if mode == "wal" else log_payloads(owner)
    assert [event["actor"] for event in events] == [writer, writer]
    assert [event["action"] for event in events] == ["UPDATE", "INSERT"]


def test_a_role_that_can_only_listen_learns_nothing_of_the_rows(owner, target, mode, make_role):
    spy = make_role()
    listening = Listener(psycopg.conninfo.make_conninfo(target, user=spy))
    owner.execute("UPDATE guests SET email = 'new@example.org', telefon = '+49 89 9' WHERE id = 1")
    received = listening.payloads(1, timeout=2 if mode == "log" else 0.5)
    listening.close()
    if mode == "log":
        [payload] = received
        assert payload.isdigit()  # the seq, a wake-up
    else:
        assert received == []  # wal mode sends nothing; the relay wakes listeners
    with connect_as(target, spy) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT payload FROM bookwatch.change_log")


def test_bookwatch_reader_may_read_the_log_but_not_write_it(owner, target, mode, make_role):
    reader = make_role("GRANT bookwatch_reader TO {role}")
    owner.execute("UPDATE guests SET email = 'x@example.org' WHERE id = 1")
    with connect_as(target, reader) as conn:
        conn.execute("SELECT seq, payload FROM bookwatch.change_log").fetchall()
        conn.execute("SELECT key, value FROM bookwatch.meta").fetchall()
        conn.execute("SELECT * FROM bookwatch.relay_progress").fetchall()
        for statement in (
            "INSERT INTO bookwatch.change_log (seq, channel, payload) VALUES (9e9, 'c', '{}')",
            "DELETE FROM bookwatch.change_log",
            "UPDATE bookwatch.meta SET value = 'x'",
            "SELECT * FROM bookwatch.captured_table",
            "SELECT nextval('bookwatch.change_seq')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_nobody_else_can_forge_events(owner, target, mode, make_role):
    attacker = make_role(
        "GRANT SELECT, INSERT, UPDATE ON guests TO {role}", "GRANT bookwatch_reader TO {role}"
    )
    relid = owner.execute("SELECT 'guests'::regclass::oid").fetchone()[0]
    forged = ',"action":"DELETE","id":1,"pk":{"id":1},"actor":"Anna"}'
    with connect_as(target, attacker) as conn:
        # Direct calls: refused, whatever the arguments.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT bookwatch.append_log(%s, 'booking_changes', %s)",
                         (relid, forged))
        with pytest.raises(psycopg.Error):  # a trigger function: callable only as a trigger
            conn.execute("SELECT bookwatch.emit_actor()")
        for call in ("bookwatch.relay_append('s', '{}', '{}', '{}', '{}', '0/1', NULL)",
                     "bookwatch.wal_event('INSERT', '{}', NULL, '{id}', '{}', NULL)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT " + call)
        # Its own trigger (a temporary table needs no CREATE right) cannot attach bookwatch's
        # functions, nor reach append_log through a function of its own.
        conn.execute("CREATE TEMP TABLE decoy (id int PRIMARY KEY)")
        for function in ("capture('booking_changes', 'log', '', '1', 'id', '0')",
                         "emit_actor()"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE TRIGGER t AFTER INSERT ON decoy FOR EACH ROW"
                             " EXECUTE FUNCTION bookwatch." + function)
        conn.execute(
            "CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " PERFORM bookwatch.append_log(TG_RELID, 'booking_changes', ',\"action\":\"X\"}');"
            " RETURN NULL; END $$"
        )
        conn.execute("CREATE TRIGGER forge AFTER INSERT ON decoy FOR EACH ROW"
                     " EXECUTE FUNCTION pg_temp.forge()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO decoy VALUES (1)")
        for statement in ("UPDATE guests SET email = email WHERE id = 1",
                          "UPDATE guests SET email = 'real@example.org' WHERE id = 1"):
            conn.execute(statement)
        # The log itself is closed to writes, its sequence too.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO bookwatch.change_log (seq, channel, payload)"
                         " VALUES (9000000000, 'booking_changes', '{}')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT setval('bookwatch.change_seq', 9000000000)")
        # pg_logical_emit_message is open to everyone: rows come from the WAL, not messages.
        conn.execute("SELECT pg_logical_emit_message(true, 'bookwatch',"
                     " 'guess' || chr(10) || 'booking_changes' || chr(10) || %s)", (forged,))
    if mode == "log":
        assert [event["action"] for event in log_payloads(owner)] == ["UPDATE"]
        return
    events = relayed(target, 2)
    assert [event["action"] for event in events] == ["UPDATE"]
    assert events[0]["diff"]["email"][1] == "real@example.org"


def test_a_v1_style_grant_is_taken_back_on_upgrade(owner, target, mode, make_role):
    writer = make_role("GRANT INSERT, UPDATE ON bookwatch.change_log TO {role}",
                       "GRANT USAGE, UPDATE ON SEQUENCE bookwatch.change_seq TO {role}")
    owner.execute("DELETE FROM bookwatch.meta WHERE key = 'schema_version'")
    owner.execute("INSERT INTO bookwatch.meta VALUES ('schema_version', '1')")
    owner.execute("DROP TABLE bookwatch.relay_progress, bookwatch.captured_table,"
                  " bookwatch.replica_identity_before")
    install(target, "guests", mode=mode)
    with connect_as(target, writer) as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ):
        conn.execute("INSERT INTO bookwatch.change_log (seq, channel, payload)"
                     " VALUES (9000000000, 'booking_changes', '{}')")
