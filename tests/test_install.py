"""install-triggers / remove-triggers / status / init-demo through the CLI, errors included."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.fix_cli import embedded_env, run_bookwatch


def error_line(stderr: str) -> str:
    """The one ``Error:`` line (the server note may precede it)."""
    [line] = [line for line in stderr.splitlines() if line.startswith("Error:")]
    return line


def trigger_rows(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    conn.rollback()
    return conn.execute(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
        " WHERE tgname = 'bookwatch_capture' ORDER BY 1"
    ).fetchall()


def has_schema(conn: psycopg.Connection[Any], name: str = "bookwatch") -> bool:
    conn.rollback()
    return bool(
        conn.execute("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = %s)", (name,))
        .fetchone()[0]
    )


@pytest.fixture
def seed_tables(postgresql: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    for name in ("bookings", "guests", "rooms"):
        postgresql.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, x text)")
    postgresql.commit()
    return postgresql


def test_install_defaults_to_the_seed_tables_and_is_idempotent(bookwatch, dsn, seed_tables):
    first = bookwatch("install-triggers", "--dsn", dsn)
    assert first.exit_code == 0, first.stderr
    assert "public.bookings: installed" in first.stderr
    assert [name for name, _ in trigger_rows(seed_tables)] == ["bookings", "guests", "rooms"]
    second = bookwatch("install-triggers", "--dsn", dsn)
    assert second.exit_code == 0
    assert "public.bookings: already installed" in second.stderr
    assert len(trigger_rows(seed_tables)) == 3


def test_install_converges_to_new_options(bookwatch, dsn, seed_tables):
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings").exit_code == 0
    changed = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--no-durable",
                        "--channel", "other", "--exclude-column", "bookings.x")
    assert changed.exit_code == 0 and "updated" in changed.stderr
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    [table] = status["tables"]
    assert (table["mode"], table["channel"], table["excluded_columns"]) == (
        "notify", "other", ["x"])


def test_dry_run_prints_sql_and_changes_nothing(bookwatch, dsn, seed_tables):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--dry-run")
    assert result.exit_code == 0
    assert "CREATE CONSTRAINT TRIGGER" in result.stdout
    assert '"public"."bookings"' in result.stdout
    assert trigger_rows(seed_tables) == [] and not has_schema(seed_tables)
    bookwatch("install-triggers", "--dsn", dsn)
    removal = bookwatch("remove-triggers", "--dsn", dsn, "--drop-log", "--dry-run")
    assert "DROP SCHEMA bookwatch CASCADE" in removal.stdout
    assert len(trigger_rows(seed_tables)) == 3 and has_schema(seed_tables)


def test_dry_run_speaks_in_the_conditional_and_prints_only_changes(bookwatch, dsn, seed_tables):
    planned = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--dry-run")
    assert "public.bookings: would be installed" in planned.stderr
    assert "public.bookings: installed" not in planned.stderr
    bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings")
    again = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--dry-run")
    assert again.exit_code == 0, again.stderr
    assert "public.bookings: already installed" in again.stderr
    assert "nothing would change" in again.stderr and again.stdout == ""
    removal = bookwatch("remove-triggers", "--dsn", dsn, "--dry-run")
    assert "public.bookings: would be removed" in removal.stderr
    assert "DROP TRIGGER" in removal.stdout and len(trigger_rows(seed_tables)) == 1


def test_missing_table_installs_nothing(bookwatch, dsn, seed_tables):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "-t", "nope")
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith("Error: Table not found: public.nope")
    assert trigger_rows(seed_tables) == [] and not has_schema(seed_tables)


@pytest.mark.parametrize(
    "hostile",
    ["bookings; drop table guests", 'bookings"; drop table guests; --', "public.bookings'--"],
)
def test_hostile_table_names_are_only_ever_names(bookwatch, dsn, seed_tables, hostile):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", hostile)
    assert result.exit_code in (1, 2)
    assert error_line(result.stderr).startswith("Error:")
    assert "Traceback" not in result.stderr
    assert trigger_rows(seed_tables) == []
    seed_tables.rollback()
    assert seed_tables.execute("SELECT to_regclass('public.guests')").fetchone()[0] == "guests"


def test_table_without_primary_key_is_refused(bookwatch, dsn, postgresql):
    postgresql.execute("CREATE TABLE log_lines (line text)")
    postgresql.commit()
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "log_lines")
    assert result.exit_code == 1
    assert "has no primary key" in result.stderr
    assert not has_schema(postgresql)


def test_view_is_refused(bookwatch, dsn, seed_tables):
    seed_tables.execute("CREATE VIEW v AS SELECT * FROM bookings")
    seed_tables.commit()
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "v")
    assert result.exit_code == 1 and "is not a table" in result.stderr


def test_bad_options_are_usage_errors(bookwatch, dsn, seed_tables):
    cases = [
        ("--channel", ""),
        ("--channel", "x" * 64),
        ("--exclude-column", "nodot"),
        ("--exclude-column", "guests.x"),  # guests is not being installed
    ]
    for option, value in cases:
        result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", option, value)
        assert result.exit_code == 2, (option, value, result.stderr)
        assert error_line(result.stderr).startswith("Error:")
    unknown_column = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings",
                               "--exclude-column", "bookings.nope")
    assert unknown_column.exit_code == 1 and "no column nope" in unknown_column.stderr
    assert trigger_rows(seed_tables) == []


def test_remove_twice_and_keep_the_log(bookwatch, dsn, seed_tables):
    bookwatch("install-triggers", "--dsn", dsn)
    one = bookwatch("remove-triggers", "--dsn", dsn, "-t", "guests")
    assert one.exit_code == 0
    assert [name for name, _ in trigger_rows(seed_tables)] == ["bookings", "rooms"]
    everything = bookwatch("remove-triggers", "--dsn", dsn)
    assert everything.exit_code == 0 and trigger_rows(seed_tables) == []
    assert has_schema(seed_tables)  # the change log is kept
    again = bookwatch("remove-triggers", "--dsn", dsn)
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    dropped = bookwatch("remove-triggers", "--dsn", dsn, "--drop-log")
    assert dropped.exit_code == 0 and not has_schema(seed_tables)
    assert bookwatch("remove-triggers", "--dsn", dsn, "--drop-log").exit_code == 0


def test_drop_log_refuses_while_other_tables_use_it(bookwatch, dsn, seed_tables):
    bookwatch("install-triggers", "--dsn", dsn)
    result = bookwatch("remove-triggers", "--dsn", dsn, "-t", "guests", "--drop-log")
    assert result.exit_code == 2 and "still use" in result.stderr
    assert len(trigger_rows(seed_tables)) == 3


def test_status_json_reports_log_and_queue(bookwatch, dsn, seed_tables):
    empty = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert empty["tables"] == [] and empty["change_log"] is None
    bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings")
    seed_tables.execute("INSERT INTO bookings VALUES (1, 'a'), (2, 'b')")
    seed_tables.commit()
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert status["schema_version"] == status["known_schema_version"] == 3
    assert status["tables"][0]["mode"] == "log"  # 5432 runs with wal_level = replica
    assert status["change_log"]["rows"] == 2
    assert status["change_log"]["retention"] == "7 days"
    assert status["change_log"]["size_bytes"] > 0 and status["change_log"]["oldest_age_s"] >= 0
    assert status["relay"] is None and status["warnings"] == []
    assert status["change_log"]["max_seq"] - status["change_log"]["min_seq"] == 1
    assert 0.0 <= status["notification_queue_usage"] < 1.0
    text = bookwatch("status", "--dsn", dsn)
    assert "public.bookings" in text.stdout and "Change log: 2 rows" in text.stdout


def test_init_demo_creates_fills_and_resets(bookwatch, dsn, postgresql):
    created = bookwatch("init-demo", "--dsn", dsn)
    assert created.exit_code == 0, created.stderr
    postgresql.autocommit = True  # hold no locks between CLI calls
    count = postgresql.execute("SELECT count(*) FROM bookings WHERE id = 123").fetchone()[0]
    assert count == 1
    columns = {row[0] for row in postgresql.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'bookings'")}
    assert {"reservierungsnummer", "gesamtpreis", "guest_id", "room_id", "anreise", "abreise",
            "updated_at", "version"} <= columns
    postgresql.execute("UPDATE bookings SET gesamtpreis = 1 WHERE id = 123")
    postgresql.execute(
        "INSERT INTO bookings (reservierungsnummer, guest_id, room_id, anreise, abreise,"
        " gesamtpreis) VALUES ('R-NEW', 1, 1, '2027-01-01', '2027-01-02', 9)"
    )
    assert bookwatch("init-demo", "--dsn", dsn).exit_code == 0  # keeps data
    kept = postgresql.execute("SELECT gesamtpreis FROM bookings WHERE id = 123").fetchone()[0]
    assert kept == 1
    assert bookwatch("init-demo", "--dsn", dsn, "--reset").exit_code == 0
    reset = postgresql.execute("SELECT gesamtpreis FROM bookings WHERE id = 123").fetchone()[0]
    assert reset != 1
    assert len(trigger_rows(postgresql)) == 3


def test_unreachable_database_is_one_error_line_without_password(bookwatch):
    result = bookwatch("status", "--dsn", "postgresql://anna:s3cret-pw@127.0.0.1:1/db")
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith(
        "Error: Cannot connect to PostgreSQL at anna@127.0.0.1:1/db")
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_invalid_dsn_is_a_usage_error_without_echoing_it(bookwatch):
    result = bookwatch("status", "--dsn", "postgresql://u:pw-123@host/db?nonsense=1")
    assert result.exit_code == 2
    assert "pw-123" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    quiet = run_bookwatch("status", "--dsn", "postgresql://127.0.0.1:1/db")
    loud = run_bookwatch("--debug", "status", "--dsn", "postgresql://127.0.0.1:1/db")
    assert quiet.returncode == 1 and "Traceback" not in quiet.stderr
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_embedded_server_is_the_default(embedded_home):
    """No DSN anywhere: bookwatch starts its own server, says so, and stops it afterwards."""
    env = embedded_env(embedded_home)
    demo = run_bookwatch("init-demo", env=env)
    assert demo.returncode == 0, demo.stderr
    assert "using the embedded PostgreSQL" in demo.stderr
    assert "Warning" not in demo.stderr and "warn" not in demo.stderr.lower()
    status = run_bookwatch("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert len(json.loads(status.stdout)["tables"]) == 3
    postmaster = embedded_home / "pgdata" / "postmaster.pid"
    assert not postmaster.exists()  # the last process stopped the server


def test_auto_picks_log_on_a_replica_server_and_says_why(bookwatch, dsn, seed_tables):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings")
    assert result.exit_code == 0
    assert "capture mode: log (wal_level is replica, not logical" in result.stderr
    assert "ALTER SYSTEM SET wal_level = logical" in result.stderr


def test_mode_wal_on_a_replica_server_is_exit_1_with_the_fix(bookwatch, dsn, seed_tables):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "wal")
    assert result.exit_code == 1
    assert error_line(result.stderr) == (
        "Error: --mode wal is not possible here: wal_level is replica, not logical.")
    assert "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL" in result.stderr
    assert trigger_rows(seed_tables) == [] and not has_schema(seed_tables)


def test_mode_aliases_and_conflicts(bookwatch, dsn, seed_tables):
    conflict = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "log",
                         "--no-durable")
    assert conflict.exit_code == 2 and "--no-durable means --mode notify" in conflict.stderr
    bad = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--mode", "fast")
    assert bad.exit_code == 2
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--durable",
                     "--mode", "auto").exit_code == 0
    assert trigger_rows(seed_tables) == [("bookings", "bookwatch_capture")]


@pytest.mark.parametrize("value", ["0d", "7", "d", "-1h", "7 days; drop table x", "1y"])
def test_bad_retention_is_a_usage_error(bookwatch, dsn, seed_tables, value):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--retention", value)
    assert result.exit_code == 2 and error_line(result.stderr).startswith("Error: --retention")
    assert trigger_rows(seed_tables) == []


def test_retention_is_stored_and_kept_by_later_installs(bookwatch, dsn, seed_tables):
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings",
                     "--retention", "12h").exit_code == 0
    assert bookwatch("install-triggers", "--dsn", dsn, "-t", "guests").exit_code == 0
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert status["change_log"]["retention"] == "12 hours"


def test_channel_with_a_newline_is_refused(bookwatch, dsn, seed_tables):
    result = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings", "--channel", "a\nb")
    assert result.exit_code == 2 and "control characters" in result.stderr


def test_dry_run_of_wal_install_shows_slot_and_creates_nothing(bookwatch, logical_db):
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, x text)")
        result = bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings",
                           "--dry-run")
        assert result.exit_code == 0, result.stderr
        assert "pg_create_logical_replication_slot" in result.stdout
        assert "CREATE PUBLICATION" in result.stdout
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0
        assert not has_schema(conn)


def test_wal_install_creates_slot_and_removal_drops_it(bookwatch, logical_db):
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, x text)")
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, x text)")
        installed = bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings",
                              "-t", "guests")
        assert installed.exit_code == 0, installed.stderr
        assert "capture mode: wal (wal_level = logical" in installed.stderr
        assert "relay slot bookwatch_" in installed.stderr
        [(slot, plugin)] = conn.execute(
            "SELECT slot_name, plugin FROM pg_replication_slots").fetchall()
        expected = conn.execute(
            "SELECT 'bookwatch_' || oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]
        assert (slot, plugin) == (expected, "pgoutput")
        status = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
        assert status["relay"]["slot"] == slot and status["relay"]["active"] is False
        assert status["relay"]["events_waiting"] == 0
        conn.execute("INSERT INTO bookings VALUES (1, 'a')")
        status = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
        assert status["relay"]["events_waiting"] == 1
        assert any("no relay runs" in warning for warning in status["warnings"])
        text = bookwatch("status", "--dsn", logical_db)
        assert f"Relay slot {slot}: no relay running" in text.stdout
        assert "1 events waiting (counted)" in text.stdout
        assert "warning: 1 events wait in slot" in text.stderr
        dry = bookwatch("remove-triggers", "--dsn", logical_db, "--dry-run")
        assert f"pg_drop_replication_slot('{slot}')" in dry.stdout
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 1
        one = bookwatch("remove-triggers", "--dsn", logical_db, "-t", "guests")
        assert "relay slot" not in one.stderr
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 1
        refused = bookwatch("remove-triggers", "--dsn", logical_db)
        assert refused.exit_code == 2
        assert "still holds 1 event not yet relayed" in " ".join(refused.stderr.split())
        assert "--force" in refused.stderr
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'bookwatch_capture'"
                            ).fetchone()[0] == 1  # nothing changed
        last = bookwatch("remove-triggers", "--dsn", logical_db, "--force")
        assert last.exit_code == 0
        assert "no table is captured in wal mode any more" in last.stderr
        assert "1 events not yet relayed go with it" in last.stderr
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_publication").fetchone()[0] == 0


def test_failed_wal_install_leaves_no_slot(bookwatch, logical_db):
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, x text)")
        # Fails inside the DDL transaction (after the slot was made): the column is missing.
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, x text)")
        conn.execute("CREATE VIEW rooms AS SELECT 1 AS id")
        result = bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings",
                           "-t", "rooms")
        assert result.exit_code == 1
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        assert not has_schema(conn)


def test_drop_log_drops_the_slot_and_a_new_log_gets_a_new_log_id(bookwatch, logical_db):
    with psycopg.connect(logical_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE bookings (id int PRIMARY KEY, x text)")
        bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings")
        first = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
        dropped = bookwatch("remove-triggers", "--dsn", logical_db, "--drop-log")
        assert dropped.exit_code == 0 and "relay slot" in dropped.stderr
        assert conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()[0] == 0
        bookwatch("install-triggers", "--dsn", logical_db, "-t", "bookings")
        second = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
        assert first["change_log"]["log_id"] and second["change_log"]["log_id"]
        assert first["change_log"]["log_id"] != second["change_log"]["log_id"]


def test_init_demo_takes_a_mode(bookwatch, dsn, postgresql):
    result = bookwatch("init-demo", "--dsn", dsn, "--mode", "notify")
    assert result.exit_code == 0, result.stderr
    status = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert {table["mode"] for table in status["tables"]} == {"notify"}


def test_init_demo_in_wal_mode(bookwatch, logical_db):
    result = bookwatch("init-demo", "--dsn", logical_db)
    assert result.exit_code == 0, result.stderr
    status = json.loads(bookwatch("status", "--json", "--dsn", logical_db).stdout)
    assert {table["mode"] for table in status["tables"]} == {"wal"}
    assert status["relay"]["exists"] is True


def test_status_names_a_killed_runs_scratch_schema_apart_from_the_users_tables(
    bookwatch, dsn, seed_tables
):
    from pgwatch_cli.scratch import SIMULATE_PREFIX

    leftover = SIMULATE_PREFIX + "deadbeef"
    seed_tables.execute(f'CREATE SCHEMA "{leftover}"')
    seed_tables.execute(f'CREATE TABLE "{leftover}".bookings (id int PRIMARY KEY, x text)')
    seed_tables.commit()
    installed = bookwatch("install-triggers", "--dsn", dsn, "-t", "bookings",
                          "-t", f"{leftover}.bookings")
    assert installed.exit_code == 0, installed.stderr
    report = json.loads(bookwatch("status", "--json", "--dsn", dsn).stdout)
    assert [(t["schema"], t["table"]) for t in report["tables"]] == [("public", "bookings")]
    [orphan] = report["orphans"]
    assert (orphan["schema"], orphan["command"]) == (leftover, "simulate")
    assert orphan["triggers"] >= 1
    text = bookwatch("status", "--dsn", dsn)
    assert f'DROP SCHEMA "{leftover}" CASCADE' in text.stderr
