"""Schema upgrades: a first-release (2c02123) install upgrades in place with its events kept;
a schema newer than this bookwatch is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import migrations, sqlfiles
from tests.capture_helpers import log_payloads

V1_SCHEMA = Path(__file__).parent / "data" / "schema_v1_2c02123.sql"


@pytest.fixture
def v1_install(postgresql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A database as bookwatch 0.1 (commit 2c02123) left it: two tables, durable and volatile
    triggers, an exclusion, and three logged events."""
    conn = postgresql
    conn.autocommit = True
    conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, price int, notes text)")
    conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    conn.execute(V1_SCHEMA.read_text())
    conn.execute("CREATE CONSTRAINT TRIGGER bookwatch_capture AFTER INSERT OR UPDATE OR DELETE"
                 " ON bookings DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION"
                 " bookwatch.capture('booking_changes', 'durable', '1', 'id', 'notes')")
    conn.execute("CREATE TRIGGER bookwatch_capture AFTER INSERT OR UPDATE OR DELETE ON guests"
                 " FOR EACH ROW EXECUTE FUNCTION"
                 " bookwatch.capture('booking_changes', 'volatile', '1', 'id')")
    conn.execute("INSERT INTO bookings VALUES (1, 100, 'a'), (2, 200, 'b')")
    conn.execute("UPDATE bookings SET price = 101, notes = 'secret' WHERE id = 1")
    return conn


def test_the_v1_fixture_is_what_2c02123_shipped(v1_install):
    assert v1_install.execute(sqlfiles.query("schema_version")).fetchone()[0] == 1
    assert [e["seq"] for e in log_payloads(v1_install)] == [1, 2, 3]


def test_v1_install_upgrades_in_place_with_its_events(bookwatch, dsn, v1_install):
    before = log_payloads(v1_install)
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "guests", "--no-durable")
    assert result.exit_code == 0, result.stderr
    assert "migration 002_wal_relay_and_permissions.sql applied (events kept)" in result.stderr
    assert "public.bookings: upgraded (log mode kept)" in result.stderr
    assert log_payloads(v1_install) == before  # events and seqs kept
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert status["schema_version"] == 3 and status["warnings"] == []
    modes = {table["table"]: (table["mode"], table["excluded_columns"])
             for table in status["tables"]}
    assert modes == {"bookings": ("log", ["notes"]), "guests": ("notify", [])}
    assert status["change_log"]["log_id"] and status["change_log"]["retention"] == "7 days"
    # New events continue the old numbering, exclusions still apply.
    v1_install.execute("UPDATE bookings SET price = 102, notes = 'x' WHERE id = 1")
    v1_install.execute("INSERT INTO guests VALUES (1, 'Anna')")  # notify mode: not logged
    after = log_payloads(v1_install)
    assert [e["seq"] for e in after] == [1, 2, 3, 4]
    assert after[3]["diff"] == {"price": [101, 102]}
    again = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--exclude-column",
                      "bookings.notes")
    assert "migration" not in again.stderr and "already installed" in again.stderr


def test_status_warns_about_an_older_schema(bookwatch, dsn, v1_install):
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert status["schema_version"] == 1
    assert any("older than this bookwatch" in warning for warning in status["warnings"])
    assert {table["mode"] for table in status["tables"]} == {"log", "notify"}


def test_a_newer_schema_is_refused_and_nothing_changes(bookwatch, dsn, postgresql):
    postgresql.execute("CREATE TABLE bookings (id int PRIMARY KEY)")
    postgresql.commit()
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings").exit_code == 0
    postgresql.execute("UPDATE bookwatch.meta SET value = '99' WHERE key = 'schema_version'")
    postgresql.commit()
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "notify")
    assert result.exit_code == 1
    assert "Error: The bookwatch schema in this database is version 99" in result.stderr
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert status["tables"][0]["mode"] == "log"
    assert any("newer than this bookwatch" in warning for warning in status["warnings"])


def test_migrations_are_numbered_without_gaps_and_end_at_the_current_version():
    numbers = [number for number, _, _ in sqlfiles.migrations()]
    assert numbers == list(range(1, len(numbers) + 1))
    assert migrations.current_version() == numbers[-1] == 3


V2_SCHEMA = Path(__file__).parent / "data" / "schema_v2_006c9c5.sql"
V2_ARGS = "'booking_changes', 'wal', '', '1', 'id', '0'"


def test_v2_wal_install_upgrades_in_place_with_its_events(bookwatch, logical_db):
    """A v2 wal install (row triggers, the definer send triggers, a compiled function, the
    secret, a table-less publication) becomes v3 in place: events kept, rows then decoded."""
    from pgwatch_cli.stream.relay_leader import BackgroundRelay
    from tests.stream_helpers import wait_until

    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, price int)")
        conn.execute("CREATE TABLE rooms (id int PRIMARY KEY, name text)")
        conn.execute(V2_SCHEMA.read_text())
        conn.execute("CREATE PUBLICATION bookwatch_messages")
        conn.execute("SELECT pg_create_logical_replication_slot('bookwatch_' || oid, 'pgoutput')"
                     " FROM pg_database WHERE datname = current_database()")
        conn.execute("CREATE FUNCTION bookwatch.capture_wal_4242() RETURNS trigger"
                     " LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'")
        for table, function in (("bookings", "capture"), ("rooms", "capture_wal_4242")):
            conn.execute(f"CREATE TRIGGER bookwatch_capture AFTER INSERT OR UPDATE OR DELETE"
                         f" ON {table} FOR EACH ROW EXECUTE FUNCTION bookwatch.{function}"
                         f"({V2_ARGS})")
            conn.execute(f"CREATE TRIGGER bookwatch_truncate AFTER TRUNCATE ON {table}"
                         f" FOR EACH STATEMENT EXECUTE FUNCTION bookwatch.capture({V2_ARGS})")
            conn.execute(f"CREATE TRIGGER bookwatch_capture_send AFTER INSERT OR UPDATE OR"
                         f" DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION"
                         f" bookwatch.send_wal('booking_changes')")
        for seq in (1, 2):  # what a v2 relay appended
            conn.execute(
                "INSERT INTO bookwatch.change_log (seq, channel, payload) VALUES"
                " (nextval('bookwatch.change_seq'), 'booking_changes', %s)",
                (json.dumps({"v": 1, "seq": seq, "table": "bookings", "schema": "public",
                             "action": "INSERT", "id": seq, "pk": {"id": seq}}),))
        conn.execute("INSERT INTO bookwatch.relay_progress VALUES ('bookwatch_x', '0/1')")
        before = log_payloads(conn)

    result = bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings",
                       "--mode", "wal")
    assert result.exit_code == 0, result.stderr
    assert "migration 003_wal_rows_from_pgoutput.sql applied (events kept)" in result.stderr
    assert "public.rooms: upgraded (wal mode kept)" in result.stderr
    assert "public.bookings: REPLICA IDENTITY FULL (was default" in result.stderr
    with psycopg.connect(logical_db, autocommit=True) as conn:
        assert log_payloads(conn) == before
        leftovers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname IN ('bookwatch_capture_send',"
            " 'bookwatch_truncate') UNION ALL SELECT count(*) FROM pg_proc"
            " WHERE proname LIKE 'capture\\_wal\\_%%' OR proname = 'send_wal'"
            " UNION ALL SELECT count(*) FROM pg_class WHERE relname = 'wal_secret'"
        ).fetchall()
        assert leftovers == [(0,), (0,), (0,)]
        relay = BackgroundRelay(logical_db, lambda _: None, retry_s=0.2)
        relay.start()
        try:
            conn.execute("INSERT INTO bookings VALUES (3, 300)")
            conn.execute("UPDATE rooms SET name = 'x'")  # no rows: no event
            conn.execute("INSERT INTO rooms VALUES (7, 'Zimmer 7')")
            wait_until(lambda: len(log_payloads(conn)) == 4, 20, "the new events")
        finally:
            relay.stop()
        after = log_payloads(conn)
    assert [(e["seq"], e["table"], e["id"]) for e in after[2:]] == [
        (3, "bookings", 3), (4, "rooms", 7)]
    status = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
    assert status["schema_version"] == 3
    assert {t["table"]: t["mode"] for t in status["tables"]} == {"bookings": "wal",
                                                                 "rooms": "wal"}
