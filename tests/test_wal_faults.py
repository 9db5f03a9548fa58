"""wal v3 under attack and odd conditions: a LOGIN-only role holding the commit-order lock
while the slot changes hands, values past the event size limit, a LATIN1 database."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from pgwatch_cli.stream import relay_events
from pgwatch_cli.stream.relay_leader import BackgroundRelay
from tests.fix_cli import spawn_bookwatch
from tests.relay_helpers import emit, install_wal, logged, slot_active_pid
from tests.stream_helpers import wait_until

COMMIT_ORDER_LOCK = 7236284523806213748  # log mode's commit-order key (sql/capture.sql)


@contextlib.contextmanager
def relaying(dsn: str) -> Iterator[BackgroundRelay]:
    relay = BackgroundRelay(dsn, lambda _: None, retry_s=0.2)
    relay.start()
    try:
        wait_until(lambda: relay.leading, 10, "the relay to take the slot")
        yield relay
    finally:
        relay.stop()


def test_takeover_while_an_append_waits_on_a_held_lock_duplicates_nothing(
    logical_db: str,
) -> None:
    install_wal(logical_db)
    with relaying(logical_db), psycopg.connect(logical_db) as blocker:
        blocker.execute("SELECT pg_advisory_xact_lock(%s)", (COMMIT_ORDER_LOCK,))
        with psycopg.connect(logical_db) as writer:
            for item in range(1, 11):
                emit(writer, item)
            writer.commit()
        time.sleep(1.0)  # the first relay's append now waits on the lock
        with psycopg.connect(logical_db, autocommit=True) as admin:
            # What wal_sender_timeout does to a relay that cannot answer: its walsender ends.
            admin.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                          " WHERE active_pid IS NOT NULL")
        wait_until(lambda: slot_active_pid(logical_db) is None, 20, "the slot to be free")
        second = spawn_bookwatch("relay", "--dsn", logical_db)
        try:
            wait_until(lambda: slot_active_pid(logical_db) is not None, 20, "the takeover")
            time.sleep(1.5)  # the second relay reaches the same transaction and waits too
            blocker.rollback()  # the lock goes: both appends proceed, one after the other
            wait_until(lambda: len(logged(logical_db)) >= 10, 20, "the ten events")
            time.sleep(1.0)
        finally:
            second.send_signal(signal.SIGTERM)
            second.communicate(timeout=20)
    ids = [event["id"] for _, event in logged(logical_db)]
    assert sorted(ids) == list(range(1, 11))  # each once


def test_a_value_past_the_limit_becomes_an_error_event_and_the_relay_goes_on(
    logical_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_events, "MAX_EVENT_VALUE_BYTES", 1_000_000)
    install_wal(logical_db)
    with relaying(logical_db), psycopg.connect(logical_db) as conn:
        emit(conn, 1)
        conn.commit()
        for _ in range(3):  # three huge updates in one transaction
            conn.execute("UPDATE items SET note = repeat(md5(random()::text), 40000),"
                         " version = version + 1 WHERE id = 1")
        conn.commit()
        emit(conn, 2)
        conn.commit()
        wait_until(lambda: len(logged(logical_db)) >= 5, 30, "five events")
    events = [event for _, event in logged(logical_db)]
    assert [e["id"] for e in events] == [1, 1, 1, 1, 2]
    for huge in events[1:4]:
        assert huge["action"] == "UPDATE" and huge["changed"] == ["note", "version"]
        assert huge["diff"] is None and huge["truncated"] is True
        assert "exceed the relay's limit" in str(huge["error"])
    assert events[4]["truncated"] is False


def test_a_latin1_database_is_decoded_with_its_encoding(logical_server: str) -> None:
    name = f"bw_latin1_{int(time.time() * 1000) % 10**9}"
    with psycopg.connect(logical_server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'"
                             " TEMPLATE template0").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(logical_server, dbname=name)
    try:
        install_wal(dsn)
        with relaying(dsn), psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SET bookwatch.actor = 'Jürgen'")
            for item, note in enumerate(["Grüße", "façade", "½ Preis", "naïve", "Ærø"], 1):
                emit(conn, item, note=note)
            conn.execute("UPDATE items SET note = 'Müller' WHERE id = 1")
            wait_until(lambda: len(logged(dsn)) >= 6, 20, "six events")
        events = [event for _, event in logged(dsn)]
        assert len(events) == 6 and {e["actor"] for e in events} == {"Jürgen"}
        assert events[5]["diff"] == {"note": ["Grüße", "Müller"]}
    finally:
        from tests.fix_logical import drop_database

        drop_database(logical_server, name)
