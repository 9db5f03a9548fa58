"""install-triggers --tenant-column: events of the table carry the row's tenant (log and notify
modes), status shows the column, a bad column installs nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import triggers
from pgwatch_cli.capture.config import Mode, TriggerConfig
from pgwatch_cli.capture.tables import TableRef
from tests.capture_helpers import WalReader


@pytest.fixture
def hotel_bookings(postgresql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    postgresql.execute("CREATE TABLE bookings (id int PRIMARY KEY, hotel_id int, note text,"
                       " secret text)")
    postgresql.execute("CREATE TABLE rooms (id int PRIMARY KEY, hotel text)")
    postgresql.commit()
    return postgresql


def logged(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    conn.rollback()
    rows = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq").fetchall()
    return [json.loads(row[0]) for row in rows]


def test_log_mode_events_carry_the_new_rows_tenant_and_the_old_rows_on_delete(
    bookwatch: Any, dsn: str, hotel_bookings: psycopg.Connection[Any]
) -> None:
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "-t", "rooms",
                       "--mode", "log", "--tenant-column", "bookings.hotel_id",
                       "--tenant-column", "rooms.hotel", "--exclude-column", "bookings.secret")
    assert result.exit_code == 0, result.stderr
    conn = hotel_bookings
    with conn.transaction():
        conn.execute("INSERT INTO bookings VALUES (1, 7, 'a', 's'), (2, 8, 'b', 's')")
        conn.execute("INSERT INTO rooms VALUES (1, 'Berlin \"Mitte\"')")
    with conn.transaction():
        conn.execute("UPDATE bookings SET note = 'moved', hotel_id = 9 WHERE id = 1")
    with conn.transaction():
        conn.execute("DELETE FROM bookings WHERE id = 2")
    with conn.transaction():
        conn.execute("INSERT INTO bookings VALUES (3, NULL, 'c', 's')")
        # An event too big for NOTIFY loses its diff, never its tenant.
        conn.execute("UPDATE bookings SET note = repeat('x', 9000) WHERE id = 3")
    events = logged(conn)
    tenants = [(e["table"], e["action"], e["id"], e["tenant"]) for e in events]
    assert tenants == [
        ("bookings", "INSERT", 1, 7), ("bookings", "INSERT", 2, 8),
        ("rooms", "INSERT", 1, 'Berlin "Mitte"'),
        ("bookings", "UPDATE", 1, 9),  # the new row's tenant
        ("bookings", "DELETE", 2, 8),  # the old row's
        ("bookings", "INSERT", 3, None), ("bookings", "UPDATE", 3, None),
    ]
    assert events[-1]["truncated"] is True


def test_notify_mode_payload_carries_the_tenant(
    bookwatch: Any, dsn: str, hotel_bookings: psycopg.Connection[Any]
) -> None:
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "notify",
                     "--tenant-column", "bookings.hotel_id").exit_code == 0
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN booking_changes")
        with hotel_bookings.transaction():
            hotel_bookings.execute("INSERT INTO bookings VALUES (5, 7, 'a', 's')")
        payloads = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert payloads[0]["tenant"] == 7 and payloads[0]["seq"] is None


def test_status_shows_the_tenant_column(bookwatch: Any, dsn: str,
                                        hotel_bookings: psycopg.Connection[Any]) -> None:
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "-t", "rooms",
                     "--mode", "log", "--tenant-column", "bookings.hotel_id").exit_code == 0
    status = json.loads(bookwatch("status", "--dsn", dsn, "--json").stdout)
    columns = {t["table"]: t["tenant_column"] for t in status["tables"]}
    assert columns == {"bookings": "hotel_id", "rooms": None}
    text = bookwatch("status", "--dsn", dsn).stdout
    assert "tenant" in text and "hotel_id" in text


@pytest.mark.parametrize(("option", "code", "message"), [
    ("bookings.hotel", 1, "Error: Table public.bookings has no column hotel (--tenant-column)."),
    ("guests.hotel_id", 2, "--tenant-column names a table that is not being installed"),
    ("hotel_id", 2, "Error: --tenant-column wants TABLE.COLUMN, got 'hotel_id'."),
])
def test_a_bad_tenant_column_installs_nothing(
    bookwatch: Any, dsn: str, hotel_bookings: psycopg.Connection[Any],
    option: str, code: int, message: str,
) -> None:
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "log",
                       "--tenant-column", option)
    assert result.exit_code == code
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert message in line
    hotel_bookings.rollback()
    assert hotel_bookings.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bookwatch%'").fetchone() == (0,)


def test_an_excluded_column_cannot_be_the_tenant(
    bookwatch: Any, dsn: str, hotel_bookings: psycopg.Connection[Any]
) -> None:
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--tenant-column",
                       "bookings.secret", "--exclude-column", "bookings.secret")
    assert result.exit_code == 2
    assert "cannot be both --tenant-column and --exclude-column" in result.stderr


def test_two_tenant_columns_for_one_table_are_refused(
    bookwatch: Any, dsn: str, hotel_bookings: psycopg.Connection[Any]
) -> None:
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--tenant-column",
                       "bookings.hotel_id", "--tenant-column", "bookings.note")
    assert result.exit_code == 2 and "a table has one tenant" in result.stderr


def test_trigger_arguments_round_trip_with_and_without_a_tenant() -> None:
    base = TriggerConfig(channel="c", mode=Mode.LOG, primary_key=("id",), excluded=("s",),
                         excluded_attnums=(4,))
    tenant = TriggerConfig(channel="c", mode=Mode.LOG, primary_key=("id",), excluded=("s",),
                           excluded_attnums=(4,), tenant_column="hotel_id")
    assert TriggerConfig.from_arguments(base.arguments()) == base
    assert TriggerConfig.from_arguments(tenant.arguments()) == tenant
    assert tenant.arguments()[:-1] == base.arguments()  # older triggers parse as before


def test_wal_events_carry_the_tenant_from_the_relay(logical_db: str) -> None:
    """wal mode has no row trigger: the relay adds "tenant" from the decoded row (new row;
    old row for DELETE), as log mode's capture function does."""
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, hotel_id int, note text)")
        table = TableRef("public", "bookings")
        triggers.run(conn, lambda: triggers.plan_install(
            conn, [table], channel="booking_changes", mode="wal", excluded={},
            tenant_columns={table: "hotel_id"}))
        registered = conn.execute(
            "SELECT tenant_column FROM bookwatch.captured_table").fetchone()
        assert registered == ("hotel_id",)
    wal = WalReader(logical_db, "booking_changes")
    try:
        with psycopg.connect(logical_db, autocommit=True) as conn:
            conn.execute("INSERT INTO bookings VALUES (1, 7, 'a')")
            conn.execute("UPDATE bookings SET note = 'b' WHERE id = 1")
            conn.execute("DELETE FROM bookings WHERE id = 1")
        events = wal.events(3)
    finally:
        wal.close()
    assert [(e["action"], e["tenant"]) for e in events] == [
        ("INSERT", 7), ("UPDATE", 7), ("DELETE", 7)]
