"""The slot never takes the database down: an invalidated slot becomes one GAP event and a
new slot; an idle captured database lets its WAL go while another database writes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

import psycopg
from psycopg import sql

from pgwatch_cli.stream.relay_leader import BackgroundRelay
from tests.relay_helpers import install_wal, logged, write
from tests.stream_helpers import wait_until


@contextlib.contextmanager
def relaying(dsn: str) -> Iterator[BackgroundRelay]:
    relay = BackgroundRelay(dsn, lambda _: None, retry_s=0.2)
    relay.start()
    try:
        wait_until(lambda: relay.leading, 20, "the relay to take the slot")
        yield relay
    finally:
        relay.stop()


@contextlib.contextmanager
def server_setting(server: str, name: str, value: str) -> Iterator[None]:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name),
                                                                sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            conn.execute("SELECT pg_reload_conf()")


def wal_status(dsn: str) -> str | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT wal_status FROM pg_replication_slots s JOIN pg_database d"
                           " ON s.database = d.datname WHERE d.datname = current_database()"
                           ).fetchone()
    return None if row is None else str(row[0])


def test_an_invalidated_slot_becomes_one_gap_event_then_relaying_goes_on(
    logical_server: str, logical_db: str
) -> None:
    install_wal(logical_db)
    with relaying(logical_db):
        write(logical_db, [1])
        wait_until(lambda: len(logged(logical_db)) == 1, 20, "the first event")
    with server_setting(logical_server, "max_slot_wal_keep_size", "1MB"):
        write(logical_db, [2])  # lost with the slot
        with psycopg.connect(logical_server, autocommit=True) as conn:
            for _ in range(4):
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS filler (x text)")
                conn.execute("INSERT INTO filler SELECT repeat('x', 1000)"
                             " FROM generate_series(1, 2000)")
                conn.execute("SELECT pg_switch_wal()")
                conn.execute("CHECKPOINT")
                if wal_status(logical_db) == "lost":
                    break
        assert wal_status(logical_db) == "lost"
    with relaying(logical_db) as relay:
        write(logical_db, [3])
        wait_until(lambda: len(logged(logical_db)) >= 3, 30, "the gap and the next event")
        assert relay.relay is not None and relay.relay.stats.gaps == 1
    events = [event for _, event in logged(logical_db)]
    assert [e.get("id") for e in events] == [1, None, 3]
    gap = events[1]
    assert gap["action"] == "GAP" and "table" not in gap
    assert "max_slot_wal_keep_size" in gap["reason"]
    assert gap["lost_from"]["lsn"] and gap["lost_to"]["lsn"]
    assert wal_status(logical_db) in ("reserved", "extended")


def test_an_idle_captured_database_lets_its_wal_go_while_another_writes(
    logical_server: str, logical_db: str
) -> None:
    install_wal(logical_db)
    with relaying(logical_db), psycopg.connect(logical_server, autocommit=True) as busy:
        busy.execute("CREATE TABLE IF NOT EXISTS bw_busy (x text)")
        with psycopg.connect(logical_db) as conn:
            start = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        for _ in range(6):
            busy.execute("INSERT INTO bw_busy SELECT repeat('y', 500)"
                         " FROM generate_series(1, 4000)")
            time.sleep(0.5)

        def confirmed_past_start() -> bool:
            with psycopg.connect(logical_db) as conn:
                row = conn.execute(
                    "SELECT confirmed_flush_lsn > %s::pg_lsn FROM pg_replication_slots"
                    " WHERE database = current_database()", (start[0] if start else "0/0",)
                ).fetchone()
            return bool(row and row[0])

        wait_until(confirmed_past_start, 40, "the idle slot to confirm past the busy writes")
        busy.execute("DROP TABLE bw_busy")
    assert json.dumps(True)


def test_install_warns_when_nothing_bounds_the_wal_the_slot_keeps(bookwatch, logical_db):
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE rooms (id int PRIMARY KEY)")
    result = bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode", "wal")
    assert result.exit_code == 0, result.stderr
    assert "max_slot_wal_keep_size is unlimited" in result.stderr
    assert "ALTER SYSTEM SET max_slot_wal_keep_size" in result.stderr
    log = bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode", "log")
    assert "max_slot_wal_keep_size" not in log.stderr
