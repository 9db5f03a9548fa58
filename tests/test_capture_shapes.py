"""Table shapes and transaction kinds: partitions, renamed columns, key changes, TRUNCATE,
two-phase commit, and the deferred-FK case that deadlocks log mode."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgwatch_cli.capture import triggers
from tests.capture_helpers import install, reader


@pytest.fixture
def db(target: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(target, autocommit=True) as conn:
        yield conn


@pytest.fixture
def events(target: str, mode: str) -> Iterator[Any]:
    reading = reader(target, mode)
    yield reading
    reading.close()


def test_partitioned_table_events_name_the_parent_and_removal_works(db, target, mode, events):
    db.execute("CREATE TABLE stays (id int, night date, guest text, PRIMARY KEY (id, night))"
               " PARTITION BY RANGE (night)")
    db.execute("CREATE TABLE stays_2026 PARTITION OF stays"
               " FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    install(target, "stays", mode=mode, excluded={"stays": ["guest"]})
    # A partition made after the install is covered too.
    db.execute("CREATE TABLE stays_2027 PARTITION OF stays"
               " FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
    db.execute("INSERT INTO stays VALUES (1, '2026-12-24', 'Anna'), (2, '2027-01-02', 'Ben')")
    db.execute("UPDATE stays SET guest = 'Clara' WHERE id = 2")
    db.execute("TRUNCATE stays")
    found = events.events(4)
    assert [(e["schema"], e["table"], e["action"]) for e in found] == [
        ("public", "stays", "INSERT"), ("public", "stays", "INSERT"),
        ("public", "stays", "UPDATE"), ("public", "stays", "TRUNCATE")]
    assert found[2]["diff"] == {} and "Clara" not in str(found[2])
    [trigger] = triggers.installed_triggers(db)
    assert (trigger.table.name, trigger.config.partitioned) == ("stays", True)
    with db.transaction():
        triggers.take_install_lock(db)
        plan = triggers.plan_remove(db, None, drop_log=False)
        for statement in plan.statements:
            db.execute(statement)
    left = db.execute("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'bookwatch%'")
    assert left.fetchone()[0] == 0


def test_an_excluded_column_stays_excluded_after_a_rename(db, target, mode, events):
    db.execute("CREATE TABLE guests (id int PRIMARY KEY, name text, email text)")
    db.execute("INSERT INTO guests VALUES (1, 'Anna', 'anna@example.org')")
    install(target, "guests", mode=mode, excluded={"guests": ["email"]})
    db.execute("ALTER TABLE guests RENAME COLUMN email TO mail")
    db.execute("UPDATE guests SET mail = 'secret@example.org', name = 'Anna B.' WHERE id = 1")
    [event] = events.events(1)
    assert sorted(event["changed"]) == ["mail", "name"]
    assert event["diff"] == {"name": ["Anna", "Anna B."]}
    assert "example.org" not in str(event)


def test_an_update_that_changes_the_key_carries_old_pk(db, target, mode, events):
    db.execute("CREATE TABLE rooms (nummer text PRIMARY KEY, typ text)")
    db.execute("CREATE TABLE nights (room text, night date, price int,"
               " PRIMARY KEY (room, night))")
    db.execute("INSERT INTO rooms VALUES ('101', 'Suite')")
    db.execute("INSERT INTO nights VALUES ('101', '2026-12-24', 90)")
    install(target, "rooms", "nights", mode=mode)
    db.execute("UPDATE rooms SET nummer = '102' WHERE nummer = '101'")
    db.execute("UPDATE rooms SET typ = 'Einzel'")
    db.execute("UPDATE nights SET night = '2026-12-25'")
    renamed, plain, moved = events.events(3)
    assert renamed["pk"] == {"nummer": "102"} and renamed["old_pk"] == {"nummer": "101"}
    assert renamed["id"] == "102"
    assert "old_pk" not in plain
    assert moved["pk"] == {"room": "101", "night": "2026-12-25"}
    assert moved["old_pk"] == {"room": "101", "night": "2026-12-24"}


def test_a_user_trigger_between_capture_and_send_that_writes_a_watched_table_loses_nothing(
    db, target, mode, events
):
    db.execute("CREATE TABLE rooms (id int PRIMARY KEY, state text)")
    db.execute("CREATE TABLE audit (id serial PRIMARY KEY, note text)")
    db.execute("INSERT INTO rooms VALUES (1, 'free')")
    install(target, "rooms", mode=mode)
    install(target, "audit", mode=mode)
    # Its name sorts after bookwatch_capture and before bookwatch_capture_send.
    db.execute("CREATE FUNCTION write_audit() RETURNS trigger LANGUAGE plpgsql AS $$"
               " BEGIN INSERT INTO audit (note) VALUES ('room ' || NEW.id); RETURN NULL; END $$")
    db.execute("CREATE TRIGGER bookwatch_capture_audit AFTER UPDATE ON rooms FOR EACH ROW"
               " EXECUTE FUNCTION write_audit()")
    db.execute("UPDATE rooms SET state = 'taken' WHERE id = 1")
    found = events.events(2)
    assert sorted((e["table"], e["action"]) for e in found) == [
        ("audit", "INSERT"), ("rooms", "UPDATE")]
    assert next(e for e in found if e["table"] == "rooms")["diff"] == {"state": ["free", "taken"]}


def test_truncate_is_one_event_per_table(db, target, mode, events):
    db.execute("CREATE TABLE rooms (id int PRIMARY KEY)")
    db.execute("CREATE TABLE guests (id int PRIMARY KEY)")
    db.execute("INSERT INTO rooms SELECT generate_series(1, 50)")
    install(target, "rooms", "guests", mode=mode)
    db.execute("TRUNCATE rooms, guests")
    found = events.events(2)
    assert sorted(e["table"] for e in found) == ["guests", "rooms"]
    for event in found:
        assert (event["action"], event["id"], event["pk"]) == ("TRUNCATE", None, None)
        assert event["changed"] is None and event["diff"] is None
    assert events.nothing_within(0.3)


@pytest.mark.parametrize("capture_mode", ["log", "wal"])
def test_prepared_transaction_commits_in_wal_mode(logical_db, capture_mode):
    """2PC needs max_prepared_transactions > 0: only the logical test server has it."""
    db = psycopg.connect(logical_db, autocommit=True)
    db.execute("CREATE TABLE rooms (id int PRIMARY KEY, typ text)")
    install(logical_db, "rooms", mode=capture_mode)
    events = reader(logical_db, capture_mode)
    try:
        db.autocommit = False
        db.execute("INSERT INTO rooms VALUES (1, 'Suite')")
        if capture_mode == "log":
            # Documented: log mode's commit-time NOTIFY cannot be prepared.
            with pytest.raises(psycopg.errors.FeatureNotSupported):
                db.execute("PREPARE TRANSACTION 'bw_2pc'")
            db.rollback()
            return
        db.execute("PREPARE TRANSACTION 'bw_2pc'")
        db.commit()  # ends psycopg's transaction; the prepared one waits
        db.autocommit = True
        assert events.nothing_within(0.3)
        db.execute("COMMIT PREPARED 'bw_2pc'")
        [event] = events.events(1)
        assert (event["action"], event["id"]) == ("INSERT", 1)
    finally:
        events.close()
        db.close()


def test_the_deferred_fk_case_commits_in_wal_mode(logical_db):
    """Writer A updates a watched table and inserts a row whose deferred FK points at a row
    writer B holds FOR UPDATE; B then updates a watched table and commits. log mode's commit
    lock deadlocks this (README); wal mode shares no lock between writers."""
    with psycopg.connect(logical_db, autocommit=True) as setup:
        setup.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
        setup.execute("CREATE TABLE bookings (id int PRIMARY KEY, guest_id int REFERENCES guests"
                      " DEFERRABLE INITIALLY DEFERRED, price int)")
        setup.execute("INSERT INTO guests VALUES (1, 'Anna'), (2, 'Ben')")
        setup.execute("INSERT INTO bookings VALUES (10, 2, 100)")
    install(logical_db, "guests", "bookings", mode="wal")
    a = psycopg.connect(logical_db)
    b = psycopg.connect(logical_db)
    try:
        a.execute("UPDATE guests SET name = 'Anna B.' WHERE id = 1")
        a.execute("INSERT INTO bookings VALUES (11, 2, 80)")  # FK checked at commit
        b.execute("SELECT * FROM guests WHERE id = 2 FOR UPDATE")
        outcome: list[BaseException | None] = []

        def commit_a() -> None:
            try:
                a.commit()  # its FK check waits for B's row lock
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=commit_a)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # A waits for B, as it would without bookwatch
        b.execute("UPDATE bookings SET price = 101 WHERE id = 10")
        b.commit()
        thread.join(20)
        assert outcome == [None]
    finally:
        a.close()
        b.close()
    reading = reader(logical_db, "wal")
    found = reading.events(3)
    reading.close()
    assert sorted((e["table"], e["action"]) for e in found) == [
        ("bookings", "INSERT"), ("bookings", "UPDATE"), ("guests", "UPDATE")]
