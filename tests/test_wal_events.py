"""wal mode v3 builds its events from pgoutput rows: value for value the same as log mode's
for the same change, over a matrix of types, TOAST, keys, exclusions and partitions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgwatch_cli.stream.relay_leader import BackgroundRelay
from tests.capture_helpers import install
from tests.stream_helpers import wait_until

VOLATILE = ("seq", "txid", "timestamp", "table")

TYPES = """
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
"""
COLUMNS = """(
    id int PRIMARY KEY, n numeric, f float8, r real, b bigint, s smallint, ok boolean,
    t text, vc varchar(10), ch char(4), ts timestamp, tstz timestamptz, d date, tm time,
    iv interval, j json, jb jsonb, arr int[], tarr text[], nested int[], m mood, dom posint,
    by bytea, comp pair, u uuid, bits bit(3), addr inet, "Odd ""name"" x" text,
    g int GENERATED ALWAYS AS (s * 2) STORED, big text
)"""
ROW = """(%(id)s, 1.50, 0.1, 1.5e-7, 9007199254740993, 7, true, 'tab	"quote" ü €', 'vc', 'ab',
    '2026-11-28 06:41:00.123', '2026-11-28 06:41:00.1+02', '2026-11-28', '06:41:00.5',
    '1 day 02:03:04', '{"b": 2,  "a": [1, 1.0]}', '{"b": 2, "a": [1, 1.0, 1e3]}',
    '{1,NULL,3}', '{"a b", "c,d", NULL}', '{{1,2},{3,4}}', 'happy', 5, '\\x00ff10',
    ROW(1, 'x y'), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', B'101', '10.0.0.1/24',
    'odd', (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1300) AS i))"""
WRITES = [
    "INSERT INTO {t} (id, n, f, r, b, s, ok, t, vc, ch, ts, tstz, d, tm, iv, j, jb, arr, tarr,"
    ' nested, m, dom, by, comp, u, bits, addr, "Odd ""name"" x", big) VALUES ' + ROW,
    # Another column changes, the 40 KB TOASTed text does not: pgoutput sends it as unchanged.
    "UPDATE {t} SET n = 2.000, s = 8 WHERE id = %(id)s",
    "UPDATE {t} SET jb = '{\"x\": null}', arr = '{}', m = 'sad', tstz = NULL WHERE id = %(id)s",
    "UPDATE {t} SET t = t WHERE id = %(id)s",  # changes nothing: no event
    "UPDATE {t} SET big = big || 'x', comp = ROW(2, NULL) WHERE id = %(id)s",
    "UPDATE {t} SET id = %(id)s + 100 WHERE id = %(id)s",  # key change: old_pk
    "DELETE FROM {t} WHERE id = %(id)s + 100",
]


@contextlib.contextmanager
def relaying(dsn: str) -> Iterator[BackgroundRelay]:
    relay = BackgroundRelay(dsn, lambda _: None, retry_s=0.2)
    relay.start()
    try:
        wait_until(lambda: relay.leading, 10, "the relay to take the slot")
        yield relay
    finally:
        relay.stop()


def events_of(dsn: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT payload FROM bookwatch.change_log ORDER BY seq").fetchall()
    return [e for e in (json.loads(r[0]) for r in rows) if e.get("table") == table]


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in VOLATILE} for e in events]


def run_writes(dsn: str, table: str, writes: list[str], actor: str = "Anna") -> None:
    with psycopg.connect(dsn) as conn:
        for number, write in enumerate(writes):
            conn.execute("SELECT set_config('bookwatch.actor', %s, true)", (f"{actor}{number}",))
            conn.execute(write.replace("{t}", table), {"id": 1})
            conn.commit()


def test_type_matrix_matches_log_mode_value_for_value(logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute(TYPES)
        conn.execute("CREATE TABLE m_log " + COLUMNS)
        conn.execute("CREATE TABLE m_wal " + COLUMNS)
    install(logical_db, "m_log", mode="log")
    install(logical_db, "m_wal", mode="wal")
    with relaying(logical_db):
        run_writes(logical_db, "m_log", WRITES)
        run_writes(logical_db, "m_wal", WRITES)
        expected = comparable(events_of(logical_db, "m_log"))
        assert len(expected) == 6
        wait_until(lambda: len(events_of(logical_db, "m_wal")) >= 6, 20, "6 wal events")
    got = comparable(events_of(logical_db, "m_wal"))
    # log mode drops the diff of the 40 KB change for NOTIFY's limit; wal mode has none.
    assert expected[3]["truncated"] is True and got[3]["truncated"] is False
    expected[3] = {**expected[3], "diff": got[3]["diff"], "truncated": False}
    for want, have in zip(expected, got, strict=True):
        assert have == want
    with psycopg.connect(logical_db) as conn:
        raw = conn.execute("SELECT payload FROM bookwatch.change_log WHERE payload LIKE"
                           " '%%\"m_wal\"%%' ORDER BY seq OFFSET 1 LIMIT 1").fetchone()
    assert raw is not None and '"n": [1.50, 2.000]' in raw[0]  # numbers keep their digits
    # The unchanged TOASTed text is in the diff where it changed, taken from the old row.
    big_update = got[3]
    assert big_update["changed"] == ["big", "comp"]
    assert len(big_update["diff"]["big"][0]) == 41600
    assert big_update["diff"]["big"][1] == big_update["diff"]["big"][0] + "x"
    assert got[4]["old_pk"] == {"id": 1} and got[4]["pk"] == {"id": 101}


def test_truncate_and_composite_keys_match_log_mode(logical_db: str) -> None:
    table = "(a int, b text, v text, PRIMARY KEY (a, b))"
    writes = ["INSERT INTO {t} VALUES (1, 'x', 'v'), (2, 'y', 'w')",
              "UPDATE {t} SET b = 'z' WHERE a = 1",
              "TRUNCATE {t}"]
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE k_log " + table)
        conn.execute("CREATE TABLE k_wal " + table)
    install(logical_db, "k_log", mode="log")
    install(logical_db, "k_wal", mode="wal")
    with relaying(logical_db):
        run_writes(logical_db, "k_log", writes)
        run_writes(logical_db, "k_wal", writes)
        wait_until(lambda: len(events_of(logical_db, "k_wal")) >= 4, 20, "4 wal events")
    expected = comparable(events_of(logical_db, "k_log"))
    got = comparable(events_of(logical_db, "k_wal"))
    assert got == expected
    assert [e["action"] for e in got] == ["INSERT", "INSERT", "UPDATE", "TRUNCATE"]


def test_excluded_column_never_reaches_the_log_or_a_notify(logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text, secret text)")
    install(logical_db, "guests", mode="wal", excluded={"guests": ["secret"]})
    with psycopg.connect(logical_db, autocommit=True) as listener:
        listener.execute("LISTEN booking_changes")
        with relaying(logical_db):
            with psycopg.connect(logical_db) as conn:
                conn.execute("INSERT INTO guests VALUES (1, 'Anna', 'TOPSECRET-1')")
                conn.commit()
                conn.execute("UPDATE guests SET secret = 'TOPSECRET-2', name = 'Ben'")
                conn.commit()
                conn.execute("UPDATE guests SET secret = 'TOPSECRET-3'")
                conn.commit()
            wait_until(lambda: len(events_of(logical_db, "guests")) >= 3, 20, "3 events")
        payloads = [n.payload for n in listener.notifies(timeout=0.5)]
    with psycopg.connect(logical_db) as conn:
        everything = conn.execute("SELECT string_agg(payload, '') FROM bookwatch.change_log"
                                  ).fetchone()
    assert everything is not None and "TOPSECRET" not in everything[0]
    assert not any("TOPSECRET" in p for p in payloads)
    events = events_of(logical_db, "guests")
    assert events[1]["changed"] == ["name", "secret"]
    assert events[1]["diff"] == {"name": ["Anna", "Ben"]}
    assert events[2]["changed"] == ["secret"] and events[2]["diff"] == {}


def test_partitioned_table_is_captured_through_its_root(logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE stays (id int, year int, note text, PRIMARY KEY (id, year))"
                     " PARTITION BY LIST (year)")
        conn.execute("CREATE TABLE stays_2026 PARTITION OF stays FOR VALUES IN (2026)")
        conn.execute("CREATE TABLE stays_2027 PARTITION OF stays FOR VALUES IN (2027)")
    plan = install(logical_db, "stays", mode="wal")
    assert any("stays_2026: REPLICA IDENTITY FULL" in line for line in plan.actions)
    with relaying(logical_db), psycopg.connect(logical_db) as conn:
        conn.execute("SET application_name = 'partition-writer'")
        conn.execute("INSERT INTO stays VALUES (1, 2026, 'a'), (2, 2027, 'b')")
        conn.commit()
        conn.execute("UPDATE stays_2026 SET note = 'c'")  # straight into a partition
        conn.commit()
        wait_until(lambda: len(events_of(logical_db, "stays")) >= 3, 20, "3 events")
    events = events_of(logical_db, "stays")
    assert {e["schema"] for e in events} == {"public"}
    assert events[2]["diff"] == {"note": ["a", "c"]}
    assert all(e["actor"] == "partition-writer" for e in events)


@pytest.mark.parametrize("identity", ["DEFAULT", "NOTHING"])
def test_remove_triggers_restores_the_replica_identity(logical_db: str, identity: str) -> None:
    from pgwatch_cli.capture import triggers
    from pgwatch_cli.capture.tables import TableRef

    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE rooms (id int PRIMARY KEY, name text)")
        conn.execute(f"ALTER TABLE rooms REPLICA IDENTITY {identity}")
    install(logical_db, "rooms", mode="wal")
    with psycopg.connect(logical_db) as conn:
        assert conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'rooms'"
                            ).fetchone() == ("f",)
        plan = triggers.run(conn, lambda: triggers.plan_remove(
            conn, [TableRef("public", "rooms")], drop_log=False))
        assert any("REPLICA IDENTITY" in line and "restored" in line for line in plan.actions)
        assert conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'rooms'"
                            ).fetchone() == (identity[0].lower(),)
        assert conn.execute("SELECT count(*) FROM pg_publication_tables").fetchone() == (0,)


def test_install_says_it_sets_replica_identity_full_and_dry_run_only_shows_it(
    bookwatch, logical_db: str
) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE rooms (id int PRIMARY KEY, name text)")
    dry = bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode", "wal",
                    "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert 'ALTER TABLE "public"."rooms" REPLICA IDENTITY FULL' in dry.stdout
    assert "public.rooms: would be set to REPLICA IDENTITY FULL (was default" in dry.stderr
    with psycopg.connect(logical_db) as conn:
        assert conn.execute("SELECT relreplident FROM pg_class WHERE relname = 'rooms'"
                            ).fetchone() == ("d",)
    done = bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode", "wal")
    assert done.exit_code == 0, done.stderr
    assert "public.rooms: REPLICA IDENTITY FULL (was default" in done.stderr
    again = bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode", "wal")
    assert "public.rooms: already installed" in again.stderr
    assert "REPLICA IDENTITY" not in again.stderr


def test_bookwatch_own_tables_are_refused_as_capture_targets(bookwatch, logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE rooms (id int PRIMARY KEY)")
    assert bookwatch("install-triggers", "--dsn", logical_db, "-t", "rooms", "--mode",
                     "wal").exit_code == 0
    result = bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookwatch.change_log",
                       "--mode", "wal")
    assert result.exit_code != 0
    assert "Error:" in result.stderr and "own table" in result.stderr
