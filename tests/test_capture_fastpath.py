"""wal mode's capture function compiled per table (pgwatch_cli/capture/fastpath.py): the same
event byte for byte as the generic function, a fallback after column changes, and a lifecycle
that leaves no function behind."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import fastpath, status, triggers
from pgwatch_cli.capture.tables import TableRef
from tests.capture_helpers import install, slot_messages

# Twelve columns (the generic function switches from its loop to a query above eight), names
# that need quoting or escaping, and values of many types.
TABLE_SQL = """
CREATE TABLE rooms (
    id int PRIMARY KEY, "Gäste Name" text, "it's" text, "quote""d" text, price numeric(8, 2),
    extras jsonb, booked timestamptz, paid bool, nights int[], note varchar(20), z text,
    "back\\slash" text
)"""
ROW = ("INSERT INTO rooms VALUES (1, 'Anna', 'x', 'y', 100.50, '{\"a\": [1, 2]}',"
       " '2026-11-28 10:00+00', false, '{1,2}', 'hi', NULL, NULL)")
UPDATES = [
    "UPDATE rooms SET price = 120 WHERE id = 1",
    "UPDATE rooms SET \"Gäste Name\" = 'Ben \"B\" \\ ß', \"it's\" = NULL WHERE id = 1",
    "UPDATE rooms SET extras = '{\"b\": {\"c\": null}}', paid = true, nights = '{}' WHERE id = 1",
    "UPDATE rooms SET price = price WHERE id = 1",  # changes nothing: no event
    "UPDATE rooms SET id = 2, z = 'moved' WHERE id = 1",  # key change: old_pk
    "UPDATE rooms SET \"quote\"\"d\" = E'tab\\there', booked = NULL, note = 'ok',"
    " \"back\\slash\" = 'v' WHERE id = 2",
]
_VOLATILE = re.compile(r',"txid":\d+,"timestamp":"[^"]*"')


@pytest.fixture
def db(logical_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        yield conn


def row_trigger_function(conn: psycopg.Connection[Any], table: str = "rooms") -> str:
    row = conn.execute(
        "SELECT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
        " WHERE t.tgrelid = %s::regclass AND t.tgname = 'bookwatch_capture'", (table,)
    ).fetchone()
    return str(row[0])


def compiled_functions(conn: psycopg.Connection[Any]) -> list[str]:
    rows = conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'capture\\_wal\\_%'"
                        " ORDER BY 1").fetchall()
    return [str(row[0]) for row in rows]


def events_of(conn: psycopg.Connection[Any]) -> list[str]:
    """The event text of each message in the slot, without txid and timestamp."""
    return [_VOLATILE.sub("", m.decode().split("\n", 2)[2]) for m in slot_messages(conn)]


def use_generic_function(conn: psycopg.Connection[Any]) -> None:
    [trigger] = triggers.installed_triggers(conn)
    for statement in triggers._create_triggers(TableRef("public", "rooms"), trigger.config)[:1]:
        conn.execute("DROP TRIGGER bookwatch_capture ON rooms")
        conn.execute(statement)


def test_the_compiled_function_sends_the_generic_event_byte_for_byte(db, logical_db):
    db.execute(TABLE_SQL)
    install(logical_db, "rooms", mode="wal")
    assert row_trigger_function(db).startswith(fastpath.NAME_PREFIX)
    produced = {}
    # The function's literals must not depend on the writer's setting (a name with a backslash).
    db.execute("SET standard_conforming_strings = off")
    db.execute("SET escape_string_warning = off")
    for function in ("compiled", "generic"):
        if function == "generic":
            use_generic_function(db)
            assert row_trigger_function(db) == "capture"
        db.execute("DELETE FROM rooms")
        db.execute(ROW)
        slot_messages(db)  # drop the setup's events
        for statement in UPDATES:
            db.execute(statement)
        produced[function] = events_of(db)
    assert len(produced["compiled"]) == len(UPDATES) - 1
    assert produced["compiled"] == produced["generic"]
    moved = json.loads('{"v":1' + produced["compiled"][3])
    assert (moved["id"], moved["old_pk"], moved["changed"]) == (2, {"id": 1}, ["z", "id"])
    # And the compiled pass did take its own path: it names the key from what it was compiled
    # with, where the generic body reads the trigger's arguments (here made to name no column).
    compiled = produced_by_compiled_path(db, logical_db)
    assert (compiled["id"], compiled["pk"]) == (2, {"id": 2})


def produced_by_compiled_path(db: psycopg.Connection[Any], logical_db: str) -> dict[str, Any]:
    install(logical_db, "rooms", mode="log")
    install(logical_db, "rooms", mode="wal")
    function = row_trigger_function(db)
    db.execute("DROP TRIGGER bookwatch_capture ON rooms")
    db.execute(f"CREATE TRIGGER bookwatch_capture AFTER UPDATE ON rooms FOR EACH ROW"
               f" EXECUTE FUNCTION bookwatch.{function}('booking_changes', 'wal', '', '1',"
               f" 'no_such_column', '0')")
    slot_messages(db)
    db.execute("UPDATE rooms SET note = 'again' WHERE id = 2")
    [event] = events_of(db)
    return dict(json.loads('{"v":1' + event))


def test_after_a_column_is_added_or_renamed_the_generic_body_takes_over(db, logical_db):
    db.execute("CREATE TABLE rooms (id int PRIMARY KEY, state text)")
    db.execute("INSERT INTO rooms VALUES (1, 'free')")
    install(logical_db, "rooms", mode="wal")
    slot_messages(db)
    db.execute("ALTER TABLE rooms ADD COLUMN guest text")
    db.execute("UPDATE rooms SET guest = 'Anna' WHERE id = 1")
    db.execute("ALTER TABLE rooms RENAME COLUMN state TO status")
    db.execute("UPDATE rooms SET status = 'taken' WHERE id = 1")
    found = [json.loads('{"v":1' + text) for text in events_of(db)]
    assert [event["diff"] for event in found] == [
        {"guest": [None, "Anna"]}, {"status": ["free", "taken"]}]
    [warning] = [w for w in status.status(db).warnings if "columns of" in w]
    assert "public.rooms" in warning and "install-triggers -t public.rooms" in warning
    # The next install compiles it again for today's columns.
    plan = install(logical_db, "rooms", mode="wal")
    assert any("rooms: updated" in line for line in plan.actions)
    [trigger] = triggers.installed_triggers(db)
    assert trigger.compiled_for == fastpath.jsonb_order(["id", "guest", "status"])
    assert any("already installed" in line for line in install(logical_db, "rooms",
                                                                 mode="wal").actions)
    assert not [w for w in status.status(db).warnings if "columns of" in w]


def test_no_compiled_function_outlives_its_trigger(db, logical_db):
    db.execute("CREATE TABLE rooms (id int PRIMARY KEY, state text)")
    db.execute("CREATE TABLE guests (id int PRIMARY KEY, email text)")
    install(logical_db, "rooms", "guests", mode="wal")
    assert len(compiled_functions(db)) == 2
    # Another mode, and a table dropped by hand: swept at the next install.
    install(logical_db, "rooms", mode="log")
    assert row_trigger_function(db) == "capture"
    db.execute("DROP TABLE guests")
    install(logical_db, "rooms", mode="wal")
    [left] = compiled_functions(db)
    assert left == row_trigger_function(db)
    with psycopg.connect(logical_db) as conn:
        triggers.run(conn, lambda: triggers.plan_remove(conn, None, drop_log=False))
    assert compiled_functions(db) == []


def test_tables_with_exclusions_a_composite_key_or_many_columns_keep_the_generic_one(
    db, logical_db
):
    db.execute("CREATE TABLE guests (id int PRIMARY KEY, email text)")
    db.execute("CREATE TABLE stays (id int, night date, PRIMARY KEY (id, night))")
    columns = ", ".join(f"c{n} int" for n in range(fastpath.MAX_COLUMNS))
    db.execute(f"CREATE TABLE wide (id int PRIMARY KEY, {columns})")
    install(logical_db, "guests", mode="wal", excluded={"guests": ["email"]})
    install(logical_db, "stays", "wide", mode="wal")
    for table in ("guests", "stays", "wide"):
        assert row_trigger_function(db, table) == "capture"
    assert compiled_functions(db) == []
