"""install-triggers and status guard the user (issue 16.3/16.4, 17.17): bookwatch's own schema
and partitions refused clearly, over-long names not silently truncated, what log mode costs,
and the relay slot's limits (max_slot_wal_keep_size, retained WAL, no relay, lost, last GAP)."""

from __future__ import annotations

import json

import psycopg
import pytest

from pgwatch_cli.capture.status import RelayState, _slot_warnings, human_bytes
from tests.fix_cli import Invoke


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_bookwatchs_own_schema_is_refused(bookwatch: Invoke, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "guests").exit_code == 0
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookwatch.change_log")
    assert result.exit_code == 2
    assert "bookwatch's own tables" in one_line(result.stderr)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pg_trigger t JOIN pg_class c"
                            " ON c.oid = t.tgrelid WHERE c.relname = 'change_log'"
                            " AND NOT t.tgisinternal").fetchone() == (0,)


def test_a_name_longer_than_postgresql_allows_is_refused(bookwatch: Invoke, dsn: str) -> None:
    name = "b" * 63
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY)")
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", name + "_extra")  # 69 bytes
    assert result.exit_code == 2
    said = one_line(result.stderr)
    assert "is 69 bytes long; PostgreSQL names are at most 63" in said
    assert f"would read it as '{name}'" in said


def test_a_partition_names_its_root(bookwatch: Invoke, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE stays (id int, night date, PRIMARY KEY (id, night))"
                     " PARTITION BY RANGE (night)")
        conn.execute("CREATE TABLE stays_2027 PARTITION OF stays"
                     " FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')")
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "stays_2027")
    assert result.exit_code == 1
    said = one_line(result.stderr)
    assert "stays_2027 is a partition of stays" in said and "-t stays" in said
    assert "Traceback" not in result.stderr


def test_choosing_log_mode_says_what_it_costs(bookwatch: Invoke, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
        wal_level = conn.execute("SHOW wal_level").fetchone()
    if wal_level != ("replica",):
        pytest.skip("auto picks log mode only where wal is not possible")
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "guests")
    assert result.exit_code == 0, result.stderr
    assert 'see the README section "Capture modes"' in one_line(result.stderr)


def test_an_unlimited_slot_is_a_warning_with_the_fix(bookwatch: Invoke, logical_db: str) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
        assert conn.execute("SHOW max_slot_wal_keep_size").fetchone() == ("-1",)
    result = bookwatch("install-triggers", "--dsn", logical_db, "--mode", "wal", "-t", "guests")
    assert result.exit_code == 0, result.stderr
    fix = "ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'"
    assert fix in one_line(result.stderr)
    status = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
    assert any(fix in warning for warning in status["warnings"])


def test_status_warns_in_human_units_when_the_slot_retains_over_256_mb(
    bookwatch: Invoke, logical_db: str
) -> None:
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
        assert bookwatch("install-triggers", "--dsn", logical_db, "--mode", "wal",
                         "-t", "guests").exit_code == 0
        for _ in range(18):  # each switch moves the insert position to the next 16 MB segment
            conn.execute("SELECT pg_logical_emit_message(false, 'other', 'x')")
            conn.execute("SELECT pg_switch_wal()")
    result = bookwatch("status", "--dsn", logical_db)
    said = one_line(result.stderr)
    assert "MB of WAL (over 256.0 MB), which PostgreSQL cannot remove" in said
    assert "start bookwatch relay" in said
    assert "MB of WAL;" in one_line(result.stdout)  # the relay line too


def slot(**state: object) -> RelayState:
    base: dict[str, object] = {"slot": "bookwatch_1", "exists": True, "retained_wal_bytes": 0,
                               "max_slot_wal_keep_size": 1 << 30}
    return RelayState(**{**base, **state})  # type: ignore[arg-type]


def test_waiting_events_warn_only_after_five_minutes_without_a_relay() -> None:
    assert _slot_warnings(slot(events_waiting=3, last_relayed_s=30.0)) == []
    [warning] = _slot_warnings(slot(events_waiting=3, last_relayed_s=720.0))
    assert warning == ("3 events wait in slot bookwatch_1 and no relay runs for 12 min: "
                       "start bookwatch relay (or tail/serve)")
    assert _slot_warnings(slot(events_waiting=3, last_relayed_s=None))  # never relayed
    assert _slot_warnings(slot(events_waiting=3, active=True, last_relayed_s=720.0)) == []


def test_a_lost_slot_is_a_warning_naming_the_fix() -> None:
    [warning] = _slot_warnings(slot(wal_status="lost"))
    assert "was invalidated" in warning and "bookwatch relay" in warning


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (512, 2048, 300 << 20, 5 << 30)] == [
        "512 bytes", "2.0 kB", "300.0 MB", "5.0 GB"]


def test_status_shows_the_last_gap(bookwatch: Invoke, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY)")
        assert bookwatch("install-triggers", "--dsn", dsn, "-t", "guests").exit_code == 0
        conn.execute(
            "INSERT INTO bookwatch.change_log (seq, channel, payload)"
            " SELECT s, 'booking_changes', '{\"v\":1,\"seq\":' || s || ',\"action\":\"GAP\","
            "\"reason\":\"slot invalidated\",\"lost_from\":\"0/1000\",\"lost_to\":\"0/2000\"}'"
            " FROM nextval('bookwatch.change_seq') AS s")
        conn.execute("INSERT INTO guests VALUES (1)")
    result = bookwatch("status", "--json", "--dsn", dsn)
    status = json.loads(result.stdout)
    assert status["last_gap"]["seq"] == 1
    assert "changes were lost (0/1000 .. 0/2000): slot invalidated" in status["last_gap"][
        "description"]
    assert any("changes were lost" in warning and "bookwatch relay" in warning
               for warning in status["warnings"])
    text = bookwatch("status", "--dsn", dsn)
    assert "Last GAP: changes were lost" in one_line(text.stdout)
