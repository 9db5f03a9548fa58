"""The capture triggers against real PostgreSQL: every wire field, keys, sizes, commit order.

Most tests run in both ``log`` mode (on the shared server) and ``wal`` mode (on the logical
server of tests/fix_logical.py), read back through the reader of their mode.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgwatch_cli.stream.events import parse
from tests.capture_helpers import Listener, install, log_payloads, reader, slot_messages


@pytest.fixture
def db(target: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(target) as conn:
        yield conn


@pytest.fixture
def listener(target: str, mode: str) -> Iterator[Any]:
    listening = reader(target, mode)
    yield listening
    listening.close()


@pytest.fixture
def bookings(db: psycopg.Connection[Any], target: str, mode: str) -> psycopg.Connection[Any]:
    db.execute(
        "CREATE TABLE bookings (id integer PRIMARY KEY, gesamtpreis numeric(10,2),"
        " guest text, notes text, updated_at timestamptz DEFAULT now())"
    )
    db.execute("INSERT INTO bookings VALUES (123, 100, 'Ben', 'late arrival')")
    db.commit()
    install(target, "bookings", mode=mode, excluded={"bookings": ["notes"]})
    db.autocommit = True
    return db


def test_update_event_has_every_wire_field(bookings, listener):
    with bookings.transaction():
        bookings.execute("SELECT set_config('bookwatch.actor', 'Anna', true)")
        bookings.execute("UPDATE bookings SET gesamtpreis = 120 WHERE id = 123")
    [event] = listener.events(1)
    assert set(event) == {"v", "seq", "table", "schema", "action", "id", "pk", "actor",
                          "changed", "diff", "truncated", "txid", "timestamp"}
    assert event["v"] == 1
    assert isinstance(event["seq"], int) and event["seq"] >= 1
    assert (event["table"], event["schema"], event["action"]) == ("bookings", "public", "UPDATE")
    assert event["id"] == 123 and event["pk"] == {"id": 123}
    assert event["actor"] == "Anna"
    assert event["changed"] == ["gesamtpreis"]
    assert event["diff"] == {"gesamtpreis": [100.00, 120.00]}
    assert event["truncated"] is False
    assert isinstance(event["txid"], int)
    assert event["timestamp"].endswith("+00:00")


def test_insert_and_delete_have_no_changed_or_diff(bookings, listener):
    bookings.execute("INSERT INTO bookings (id, gesamtpreis, guest) VALUES (124, 80, 'Clara')")
    bookings.execute("DELETE FROM bookings WHERE id = 124")
    inserted, deleted = listener.events(2)
    assert inserted["action"] == "INSERT" and deleted["action"] == "DELETE"
    for event in (inserted, deleted):
        assert event["id"] == 124 and event["changed"] is None and event["diff"] is None
    assert deleted["seq"] > inserted["seq"]


def test_actor_falls_back_to_application_name_then_current_user(bookings, target, listener):
    with psycopg.connect(target, autocommit=True, application_name="frontdesk") as named:
        named.execute("UPDATE bookings SET guest = 'Ben B.' WHERE id = 123")
    with psycopg.connect(target, autocommit=True, application_name="") as anonymous:
        anonymous.execute("UPDATE bookings SET guest = 'Ben C.' WHERE id = 123")
        user = anonymous.execute("SELECT current_user").fetchone()[0]
    first, second = listener.events(2)
    assert first["actor"] == "frontdesk"
    assert second["actor"] == user


def test_excluded_column_is_named_but_its_values_never_sent(bookings, listener):
    bookings.execute("UPDATE bookings SET notes = 'VIP, card 4111', guest = 'B' WHERE id = 123")
    [event] = listener.events(1)
    assert sorted(event["changed"]) == ["guest", "notes"]
    assert event["diff"] == {"guest": ["Ben", "B"]}
    assert "4111" not in str(event)


def test_update_that_changes_nothing_sends_nothing(bookings, listener):
    bookings.execute("UPDATE bookings SET gesamtpreis = gesamtpreis WHERE id = 123")
    assert listener.nothing_within(0.5)
    assert log_payloads(bookings) == []


def test_rolled_back_work_sends_nothing(bookings, listener):
    with pytest.raises(RuntimeError), bookings.transaction():
        bookings.execute("UPDATE bookings SET gesamtpreis = 999 WHERE id = 123")
        raise RuntimeError("user pressed cancel")
    assert listener.nothing_within(0.5)
    assert log_payloads(bookings) == []


def test_a_20_kb_diff_is_whole_in_wal_mode_and_dropped_in_log_mode(bookings, mode, listener):
    bookings.execute("UPDATE bookings SET guest = repeat('x', 20000) WHERE id = 123")
    [event] = listener.events(1)
    assert event["changed"] == ["guest"]
    if mode == "wal":
        assert event["truncated"] is False
        assert event["diff"] == {"guest": ["Ben", "x" * 20000]}
    else:
        assert event["truncated"] is True and event["diff"] is None
        [payload] = bookings.execute("SELECT payload FROM bookwatch.change_log").fetchone()
        assert len(payload.encode()) < 8000
    assert bookings.execute("SELECT length(guest) FROM bookings").fetchone()[0] == 20000


def test_key_too_big_for_a_payload_still_never_fails_the_writer(db, target, mode, listener):
    db.execute("CREATE TABLE notes (title text PRIMARY KEY, body text)")
    db.commit()
    install(target, "notes", mode=mode)
    db.autocommit = True
    # btree keys must fit in a third of a page; md5 chains make a ~2.5 KB key without limits.
    big_key = "".join(f"{i:04d}" for i in range(650))
    db.execute("INSERT INTO notes VALUES (%s, 'x')", (big_key,))
    db.execute("UPDATE notes SET body = repeat('y', 9000)")
    inserted, updated = listener.events(2)
    assert inserted["pk"] == {"title": big_key} and inserted["truncated"] is False
    if mode == "wal":
        assert updated["truncated"] is False and updated["diff"]["body"][1] == "y" * 9000
    else:
        assert updated["truncated"] is True and updated["diff"] is None


def test_changed_list_too_big_sends_a_minimal_event(db, target, mode, listener):
    columns = [f"column_with_a_long_descriptive_name_number_{n:03d}" for n in range(200)]
    db.execute(
        "CREATE TABLE wide (id int PRIMARY KEY, " + ", ".join(f"{c} int" for c in columns) + ")"
    )
    db.execute("INSERT INTO wide (id) VALUES (1)")
    db.commit()
    install(target, "wide", mode=mode)
    db.execute("UPDATE wide SET " + ", ".join(f"{c} = 1" for c in columns))
    db.commit()
    [event] = listener.events(1)
    assert (event["table"], event["schema"], event["action"]) == ("wide", "public", "UPDATE")
    if mode == "wal":
        assert len(event["changed"]) == 200 and event["pk"] == {"id": 1}
    else:
        assert event["truncated"] and event["changed"] is None and event["pk"] is None


def test_uuid_key(db, target, mode, listener):
    db.execute("CREATE TABLE rooms (id uuid PRIMARY KEY, nummer text)")
    db.commit()
    install(target, "rooms", mode=mode)
    room = uuid.uuid4()
    db.execute("INSERT INTO rooms VALUES (%s, '101')", (room,))
    db.commit()
    [event] = listener.events(1)
    assert event["id"] == str(room) and event["pk"] == {"id": str(room)}


def test_composite_key_gives_null_id_and_the_whole_pk(db, target, mode, listener):
    db.execute(
        "CREATE TABLE nights (room text, night date, price int, PRIMARY KEY (room, night))"
    )
    db.commit()
    install(target, "nights", mode=mode)
    db.execute("INSERT INTO nights VALUES ('101', '2026-12-24', 90)")
    db.commit()
    [event] = listener.events(1)
    assert event["id"] is None
    assert event["pk"] == {"room": "101", "night": "2026-12-24"}


def test_quoted_table_and_schema_names(db, target, mode, listener):
    db.execute('CREATE SCHEMA "Hotel Süd"')
    db.execute('CREATE TABLE "Hotel Süd"."Buchungen 2026" ("Nr" int PRIMARY KEY, x int)')
    db.commit()
    install(target, '"Hotel Süd"."Buchungen 2026"', mode=mode)
    db.execute('INSERT INTO "Hotel Süd"."Buchungen 2026" VALUES (1, 1)')
    db.commit()
    [event] = listener.events(1)
    assert (event["schema"], event["table"], event["pk"]) == (
        "Hotel Süd", "Buchungen 2026", {"Nr": 1})


def test_notify_mode_sends_the_event_with_seq_null_and_logs_nothing(postgresql, dsn):
    postgresql.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
    postgresql.commit()
    install(dsn, "guests", mode="notify")
    listener = Listener(dsn)
    postgresql.execute("INSERT INTO guests VALUES (1, 'Anna')")
    postgresql.commit()
    [event] = listener.events(1)
    listener.close()
    assert event["seq"] is None and event["table"] == "guests" and event["pk"] == {"id": 1}
    assert log_payloads(postgresql) == []


def test_log_mode_notifies_only_the_seq(bookings, mode):
    if mode != "log":
        pytest.skip("log mode only")
    listening = Listener(str(bookings.info.dsn))
    bookings.execute("UPDATE bookings SET guest = 'Ben B.' WHERE id = 123")
    [payload] = listening.payloads(1)
    listening.close()
    [event] = log_payloads(bookings)
    assert payload == str(event["seq"])


def test_log_rows_match_the_notifications(bookings, mode, listener):
    if mode != "log":
        pytest.skip("log mode only")
    for price in (101, 102, 103):
        bookings.execute("UPDATE bookings SET gesamtpreis = %s WHERE id = 123", (price,))
    sent = listener.events(3)
    assert log_payloads(bookings) == sent


def test_seq_follows_commit_order_not_start_order(bookings, target, mode, listener):
    """A long transaction that began first but commits last gets the larger seq."""
    long_tx = psycopg.connect(target)
    long_tx.execute("UPDATE bookings SET guest = 'long' WHERE id = 123")  # row event queued
    with psycopg.connect(target, autocommit=True) as short:
        short.execute("INSERT INTO bookings (id, gesamtpreis) VALUES (500, 1)")
    [short_event] = listener.events(1)
    # A reader that saw the short commit takes its seq as cursor here ...
    cursor = short_event["seq"]
    long_tx.commit()
    long_tx.close()
    [long_event] = listener.events(1)
    assert long_event["seq"] > cursor
    if mode == "wal":
        return  # no log here: the relay (tests/test_relay.py) numbers in slot order
    # ... and "everything after the cursor" in the log contains the long transaction's event.
    after = bookings.execute(
        "SELECT payload FROM bookwatch.change_log WHERE seq > %s", (cursor,)
    ).fetchall()
    assert [parse(row[0]).action for row in after] == ["UPDATE"]


def test_concurrent_writers_commit_in_seq_order(bookings, target, mode, listener):
    """Commits racing from several connections: notification order equals seq order."""
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            with psycopg.connect(target, autocommit=True) as conn:
                for n in range(25):
                    conn.execute(
                        "INSERT INTO bookings (id, gesamtpreis) VALUES (%s, 1)",
                        (10_000 + worker * 100 + n,),
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    seqs = [event["seq"] for event in listener.events(100, timeout=20)]
    assert len(seqs) == 100 and seqs == sorted(seqs)


def test_writer_keeps_working_when_nobody_listens(bookings, mode):
    started = time.monotonic()
    for price in range(200, 260):
        bookings.execute("UPDATE bookings SET gesamtpreis = %s WHERE id = 123", (price,))
    assert time.monotonic() - started < 30
    if mode == "wal":
        assert len(slot_messages(bookings, consume=False)) == 60
    else:
        assert len(log_payloads(bookings)) == 60
